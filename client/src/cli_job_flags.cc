#include "client/src/cli_job_flags.h"

#include <google/protobuf/util/json_util.h>

#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace freezetune::cli {
namespace {

absl::Status FlagError(absl::string_view flag, absl::string_view what,
                       absl::string_view value) {
  return absl::InvalidArgumentError(
      absl::StrCat("--", flag, ": expected ", what, ", got '", value, "'"));
}

// Each helper sets its field only when the flag was given.
template <typename Setter>
absl::Status IntFlag(const ParsedArgs& args, absl::string_view flag,
                     Setter set) {
  std::optional<std::string> v = args.Get(flag);
  if (!v) return absl::OkStatus();
  int64_t n;
  if (!absl::SimpleAtoi(*v, &n)) return FlagError(flag, "an integer", *v);
  set(n);
  return absl::OkStatus();
}

template <typename Setter>
absl::Status FloatFlag(const ParsedArgs& args, absl::string_view flag,
                       Setter set) {
  std::optional<std::string> v = args.Get(flag);
  if (!v) return absl::OkStatus();
  float x;
  if (!absl::SimpleAtof(*v, &x)) return FlagError(flag, "a number", *v);
  set(x);
  return absl::OkStatus();
}

template <typename Setter>
void StringFlag(const ParsedArgs& args, absl::string_view flag, Setter set) {
  std::optional<std::string> v = args.Get(flag);
  if (v) set(*v);
}

absl::StatusOr<v1::Precision> ParsePrecision(absl::string_view text) {
  std::string l = absl::AsciiStrToLower(text);
  if (l == "fp32") return v1::PRECISION_FP32;
  if (l == "bf16") return v1::PRECISION_BF16;
  if (l == "fp16") return v1::PRECISION_FP16;
  return FlagError("precision", "fp32, bf16 or fp16", text);
}

absl::StatusOr<v1::WeightDtype> ParseWeightDtype(absl::string_view text) {
  std::string l = absl::AsciiStrToLower(text);
  if (l == "f32" || l == "fp32") return v1::WEIGHT_DTYPE_F32;
  if (l == "f16" || l == "fp16") return v1::WEIGHT_DTYPE_F16;
  if (l == "bf16") return v1::WEIGHT_DTYPE_BF16;
  return FlagError("output-dtype", "f32, f16 or bf16", text);
}

absl::StatusOr<v1::LrSchedule> ParseSchedule(absl::string_view text) {
  std::string l = absl::AsciiStrToLower(text);
  if (l == "linear") return v1::LR_SCHEDULE_LINEAR;
  if (l == "cosine") return v1::LR_SCHEDULE_COSINE;
  if (l == "constant") return v1::LR_SCHEDULE_CONSTANT;
  return FlagError("lr-schedule", "linear, cosine or constant", text);
}

// --lora-*: the LoRA block of the freeze spec. --lora-targets creates it
// (rank 8 unless --lora-rank); the other flags adjust a block that exists
// (from -f or --lora-targets).
absl::Status ApplyLoraFlags(const ParsedArgs& args, v1::FreezeSpec* freeze) {
  if (std::optional<std::string> t = args.Get("lora-targets")) {
    if (!freeze->has_lora()) freeze->mutable_lora()->set_rank(8);
    freeze->mutable_lora()->set_target_modules(*t);
  }
  const bool any = args.Get("lora-rank") || args.Get("lora-alpha") ||
                   args.Get("lora-dropout") || !args.GetAll("lora-save").empty();
  if (!any) return absl::OkStatus();
  if (!freeze->has_lora()) {
    return absl::InvalidArgumentError(
        "--lora-rank/--lora-alpha/--lora-dropout/--lora-save need --lora-targets "
        "(or a file with freeze.lora)");
  }
  v1::LoraSpec* lora = freeze->mutable_lora();
  for (absl::Status st : {
           IntFlag(args, "lora-rank", [&](int64_t n) { lora->set_rank(static_cast<int32_t>(n)); }),
           FloatFlag(args, "lora-alpha", [&](float x) { lora->set_alpha(x); }),
           FloatFlag(args, "lora-dropout", [&](float x) { lora->set_dropout(x); }),
       }) {
    if (!st.ok()) return st;
  }
  std::vector<std::string> save = args.GetAll("lora-save");
  if (!save.empty()) {
    lora->clear_modules_to_save();
    for (const std::string& m : save) lora->add_modules_to_save(m);
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::OutputFormat> ParseOutputFormat(absl::string_view text) {
  std::string l = absl::AsciiStrToLower(text);
  if (l == "full" || l == "merged") return v1::OUTPUT_FORMAT_FULL;
  if (l == "delta") return v1::OUTPUT_FORMAT_DELTA;
  if (l == "peft-adapter" || l == "peft_adapter" || l == "adapter") {
    return v1::OUTPUT_FORMAT_PEFT_ADAPTER;
  }
  return FlagError("output-format", "full, peft-adapter or delta", text);
}

absl::StatusOr<v1::TaskType> ParseTask(absl::string_view text) {
  std::string l = absl::AsciiStrToLower(text);
  if (l == "classification" || l == "sequence-classification") {
    return v1::TASK_TYPE_SEQUENCE_CLASSIFICATION;
  }
  if (l == "mlm" || l == "masked-lm" || l == "masked_lm") return v1::TASK_TYPE_MASKED_LM;
  return FlagError("task", "classification or mlm", text);
}

// --task, --mask-prob, --whole-word-masking.
absl::Status ApplyTaskFlags(const ParsedArgs& args, v1::TaskSpec* task) {
  if (std::optional<std::string> t = args.Get("task")) {
    absl::StatusOr<v1::TaskType> type = ParseTask(*t);
    if (!type.ok()) return type.status();
    task->set_type(*type);
  }
  absl::Status s = FloatFlag(args, "mask-prob", [&](float x) {
    task->mutable_masked_lm()->set_mask_probability(x);
  });
  if (!s.ok()) return s;
  if (args.Has("whole-word-masking")) task->mutable_masked_lm()->set_whole_word_masking(true);
  return absl::OkStatus();
}

// Flags shared by submit and plan: model, task and the freeze spec.
absl::Status ApplyFreezeAndTask(const ParsedArgs& args, std::string* model_uri,
                                v1::TaskSpec* task, v1::FreezeSpec* freeze) {
  StringFlag(args, "model", [&](const std::string& v) { *model_uri = v; });
  if (std::optional<std::string> labels = args.Get("labels")) {
    task->clear_label_names();
    for (absl::string_view l : absl::StrSplit(*labels, ',', absl::SkipEmpty())) {
      task->add_label_names(std::string(absl::StripAsciiWhitespace(l)));
    }
  }
  absl::Status s = IntFlag(args, "num-labels", [&](int64_t n) {
    task->set_num_labels(static_cast<int32_t>(n));
  });
  if (!s.ok()) return s;
  s = ApplyTaskFlags(args, task);
  if (!s.ok()) return s;
  if (std::optional<std::string> f = args.Get("freeze")) {
    s = ApplyFreezeRecipe(*f, freeze);
    if (!s.ok()) return s;
  }
  std::vector<std::string> rules = args.GetAll("rule");
  if (!rules.empty()) {
    freeze->clear_rules();
    for (const std::string& r : rules) {
      absl::StatusOr<v1::FreezeRule> rule = ParseRule(r);
      if (!rule.ok()) return rule.status();
      *freeze->add_rules() = *std::move(rule);
    }
  }
  if (std::optional<std::string> v = args.Get("frozen-eval-mode")) {
    std::string l = absl::AsciiStrToLower(*v);
    if (l == "true" || l == "1" || l == "yes") {
      freeze->set_frozen_eval_mode(true);
    } else if (l == "false" || l == "0" || l == "no") {
      freeze->set_frozen_eval_mode(false);
    } else {
      return FlagError("frozen-eval-mode", "true or false", *v);
    }
  }
  s = FloatFlag(args, "layerwise-lr-decay",
                [&](float x) { freeze->set_layerwise_lr_decay(x); });
  if (!s.ok()) return s;
  return ApplyLoraFlags(args, freeze);
}

}  // namespace

absl::StatusOr<v1::FreezeRule> ParseRule(absl::string_view text) {
  v1::FreezeRule rule;
  absl::string_view rest = text;
  if (absl::ConsumePrefix(&rest, "freeze:")) {
    rule.set_action(v1::FREEZE_ACTION_FREEZE);
  } else if (absl::ConsumePrefix(&rest, "train:")) {
    rule.set_action(v1::FREEZE_ACTION_TRAIN);
  } else {
    return FlagError("rule", "freeze:REGEX or train:REGEX[@LR_SCALE]", text);
  }
  size_t at = rest.rfind('@');
  if (at != absl::string_view::npos) {
    float scale;
    if (absl::SimpleAtof(rest.substr(at + 1), &scale)) {
      if (rule.action() != v1::FREEZE_ACTION_TRAIN) {
        return FlagError("rule", "@LR_SCALE only on train: rules", text);
      }
      rule.set_lr_scale(scale);
      rest = rest.substr(0, at);
    }
  }
  if (rest.empty()) return FlagError("rule", "a non-empty pattern", text);
  rule.set_pattern(std::string(rest));
  return rule;
}

absl::Status ApplyFreezeRecipe(absl::string_view text, v1::FreezeSpec* spec) {
  std::string l = absl::AsciiStrToLower(text);
  absl::string_view rest = l;
  if (l == "head-only" || l == "head_only") {
    spec->mutable_head_only();
    return absl::OkStatus();
  }
  if (l == "bias-only" || l == "bias_only" || l == "bitfit") {
    spec->mutable_bias_only();
    return absl::OkStatus();
  }
  if (l == "none") {
    spec->clear_recipe();
    return absl::OkStatus();
  }
  if (absl::ConsumePrefix(&rest, "bottom:") ||
      absl::ConsumePrefix(&rest, "bottom-")) {
    int n;
    if (absl::SimpleAtoi(rest, &n) && n >= 0) {
      spec->mutable_bottom()->set_num_layers(n);
      return absl::OkStatus();
    }
  }
  return FlagError("freeze", "head-only, bottom:N, bias-only or none", text);
}

absl::StatusOr<std::vector<v1::JobState>> ParseStates(absl::string_view text) {
  std::vector<v1::JobState> out;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    std::string name = absl::AsciiStrToUpper(absl::StripAsciiWhitespace(part));
    if (!absl::StartsWith(name, "JOB_STATE_")) name = "JOB_STATE_" + name;
    v1::JobState state;
    if (!v1::JobState_Parse(name, &state) ||
        state == v1::JOB_STATE_UNSPECIFIED) {
      return FlagError("state",
                       "queued, running, succeeded, failed or cancelled", part);
    }
    out.push_back(state);
  }
  return out;
}

absl::StatusOr<std::vector<v1::SweepState>> ParseSweepStates(absl::string_view text) {
  std::vector<v1::SweepState> out;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    std::string name = absl::AsciiStrToUpper(absl::StripAsciiWhitespace(part));
    if (!absl::StartsWith(name, "SWEEP_STATE_")) name = "SWEEP_STATE_" + name;
    v1::SweepState state;
    if (!v1::SweepState_Parse(name, &state) || state == v1::SWEEP_STATE_UNSPECIFIED) {
      return FlagError("state", "running, succeeded, failed or cancelled", part);
    }
    out.push_back(state);
  }
  return out;
}

absl::StatusOr<v1::DatasetFormat> ParseFormat(absl::string_view text) {
  std::string l = absl::AsciiStrToLower(text);
  if (l == "jsonl" || l == "json") return v1::DATASET_FORMAT_JSONL;
  if (l == "csv") return v1::DATASET_FORMAT_CSV;
  if (l == "tsv") return v1::DATASET_FORMAT_TSV;
  if (l == "trec") return v1::DATASET_FORMAT_TREC;
  if (l == "text" || l == "txt") return v1::DATASET_FORMAT_TEXT;
  return FlagError("format", "jsonl, csv, tsv, trec or text", text);
}

absl::Status ReadJsonFile(const std::string& path,
                          google::protobuf::Message* msg) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read '", path, "'"));
  std::stringstream ss;
  ss << in.rdbuf();
  auto s = google::protobuf::util::JsonStringToMessage(ss.str(), msg);
  if (!s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": not a ", msg->GetDescriptor()->name(), ": ", s.ToString()));
  }
  return absl::OkStatus();
}

absl::Status ApplyJobFlags(const ParsedArgs& args, v1::FineTuneJob* job) {
  absl::Status s = ApplyFreezeAndTask(args, job->mutable_model_uri(),
                                      job->mutable_task(), job->mutable_freeze());
  if (!s.ok()) return s;

  StringFlag(args, "base-model",
             [&](const std::string& v) { job->set_base_model_uri(v); });
  StringFlag(args, "train",
             [&](const std::string& v) { job->mutable_train()->set_uri(v); });
  StringFlag(args, "validation", [&](const std::string& v) {
    job->mutable_validation()->set_uri(v);
  });
  // Dataset options apply to train and, when there is one, validation.
  std::vector<v1::DatasetSpec*> datasets = {job->mutable_train()};
  if (job->has_validation() && !job->validation().uri().empty()) {
    datasets.push_back(job->mutable_validation());
  }
  if (std::optional<std::string> f = args.Get("format")) {
    absl::StatusOr<v1::DatasetFormat> fmt = ParseFormat(*f);
    if (!fmt.ok()) return fmt.status();
    for (v1::DatasetSpec* d : datasets) d->set_format(*fmt);
  }
  for (v1::DatasetSpec* d : datasets) {
    StringFlag(args, "text-field",
               [&](const std::string& v) { d->set_text_field(v); });
    StringFlag(args, "text-pair-field",
               [&](const std::string& v) { d->set_text_pair_field(v); });
    StringFlag(args, "label-field",
               [&](const std::string& v) { d->set_label_field(v); });
  }

  v1::Hyperparameters* hp = job->mutable_hyperparameters();
  auto i32 = [](int64_t n) { return static_cast<int32_t>(n); };
  for (absl::Status st : {
           IntFlag(args, "epochs", [&](int64_t n) { hp->set_epochs(i32(n)); }),
           IntFlag(args, "batch-size",
                   [&](int64_t n) { hp->set_batch_size(i32(n)); }),
           FloatFlag(args, "lr", [&](float x) { hp->set_learning_rate(x); }),
           FloatFlag(args, "weight-decay",
                     [&](float x) { hp->set_weight_decay(x); }),
           FloatFlag(args, "warmup-ratio",
                     [&](float x) { hp->set_warmup_ratio(x); }),
           IntFlag(args, "max-seq-length",
                   [&](int64_t n) { hp->set_max_seq_length(i32(n)); }),
           IntFlag(args, "seed", [&](int64_t n) { hp->set_seed(n); }),
           IntFlag(args, "log-every",
                   [&](int64_t n) { hp->set_log_every_steps(i32(n)); }),
           IntFlag(args, "eval-every",
                   [&](int64_t n) { hp->set_eval_every_steps(i32(n)); }),
           IntFlag(args, "grad-accum",
                   [&](int64_t n) { hp->set_gradient_accumulation_steps(i32(n)); }),
           FloatFlag(args, "max-grad-norm",
                     [&](float x) { hp->set_max_grad_norm(x); }),
           IntFlag(args, "checkpoint-every",
                   [&](int64_t n) { hp->set_checkpoint_every_steps(i32(n)); }),
           IntFlag(args, "early-stopping",
                   [&](int64_t n) { hp->set_early_stopping_patience(i32(n)); }),
           FloatFlag(args, "validation-split",
                     [&](float x) { hp->set_validation_split(x); }),
           IntFlag(args, "priority",
                   [&](int64_t n) { job->set_priority(i32(n)); }),
           IntFlag(args, "data-parallel",
                   [&](int64_t n) { job->mutable_resources()->set_data_parallel(i32(n)); }),
       }) {
    if (!st.ok()) return st;
  }
  if (std::optional<std::string> v = args.Get("lr-schedule")) {
    absl::StatusOr<v1::LrSchedule> sched = ParseSchedule(*v);
    if (!sched.ok()) return sched.status();
    hp->set_lr_schedule(*sched);
  }
  if (std::optional<std::string> v = args.Get("precision")) {
    absl::StatusOr<v1::Precision> p = ParsePrecision(*v);
    if (!p.ok()) return p.status();
    hp->set_precision(*p);
  }
  if (std::optional<std::string> v = args.Get("tf32")) {
    std::string l = absl::AsciiStrToLower(*v);
    if (l != "true" && l != "false") return FlagError("tf32", "true or false", *v);
    hp->set_allow_tf32(l == "true");
  }
  if (std::optional<std::string> v = args.Get("output-dtype")) {
    absl::StatusOr<v1::WeightDtype> d = ParseWeightDtype(*v);
    if (!d.ok()) return d.status();
    job->set_output_dtype(*d);
  }
  StringFlag(args, "selection-metric",
             [&](const std::string& v) { hp->set_selection_metric(v); });
  StringFlag(args, "output",
             [&](const std::string& v) { job->set_output_uri(v); });
  if (std::optional<std::string> v = args.Get("output-format")) {
    absl::StatusOr<v1::OutputFormat> format = ParseOutputFormat(*v);
    if (!format.ok()) return format.status();
    job->set_output_format(*format);
  }
  StringFlag(args, "device", [&](const std::string& v) { job->set_device(v); });
  StringFlag(args, "request-id",
             [&](const std::string& v) { job->set_client_request_id(v); });
  StringFlag(args, "name",
             [&](const std::string& v) { job->set_display_name(v); });
  StringFlag(args, "notify-url",
             [&](const std::string& v) { job->mutable_notify()->set_url(v); });
  return absl::OkStatus();
}

absl::StatusOr<v1::FineTuneJob> BuildJob(const ParsedArgs& args) {
  v1::FineTuneJob job;
  if (std::optional<std::string> file = args.Get("file")) {
    absl::Status s = ReadJsonFile(*file, &job);
    if (!s.ok()) return s;
  }
  absl::Status s = ApplyJobFlags(args, &job);
  if (!s.ok()) return s;
  return job;
}

std::string FlagForField(absl::string_view path) {
  // Kept next to ApplyJobFlags, which sets these fields from these flags.
  static const auto* kFields = new std::vector<std::pair<std::string, std::string>>{
      {"model_uri", "model"},
      {"base_model_uri", "base-model"},
      {"output_format", "output-format"},
      {"train", "train"},
      {"train.uri", "train"},
      {"validation", "validation"},
      {"validation.uri", "validation"},
      {"train.format", "format"},
      {"train.text_field", "text-field"},
      {"train.text_pair_field", "text-pair-field"},
      {"train.label_field", "label-field"},
      {"task.label_names", "labels"},
      {"task.num_labels", "num-labels"},
      {"task", "task"},
      {"task.type", "task"},
      {"task.masked_lm.mask_probability", "mask-prob"},
      {"task.masked_lm", "task"},
      {"freeze", "freeze"},
      {"freeze.bottom.num_layers", "freeze"},
      {"freeze.rules", "rule"},
      {"freeze.rules.pattern", "rule"},
      {"freeze.rules.lr_scale", "rule"},
      {"freeze.frozen_eval_mode", "frozen-eval-mode"},
      {"freeze.layerwise_lr_decay", "layerwise-lr-decay"},
      {"hyperparameters.epochs", "epochs"},
      {"hyperparameters.batch_size", "batch-size"},
      {"hyperparameters.learning_rate", "lr"},
      {"hyperparameters.weight_decay", "weight-decay"},
      {"hyperparameters.warmup_ratio", "warmup-ratio"},
      {"hyperparameters.max_seq_length", "max-seq-length"},
      {"hyperparameters.seed", "seed"},
      {"hyperparameters.log_every_steps", "log-every"},
      {"hyperparameters.eval_every_steps", "eval-every"},
      {"hyperparameters.lr_schedule", "lr-schedule"},
      {"hyperparameters.max_grad_norm", "max-grad-norm"},
      {"hyperparameters.gradient_accumulation_steps", "grad-accum"},
      {"hyperparameters.checkpoint_every_steps", "checkpoint-every"},
      {"hyperparameters.early_stopping_patience", "early-stopping"},
      {"hyperparameters.selection_metric", "selection-metric"},
      {"hyperparameters.validation_split", "validation-split"},
      {"output_uri", "output"},
      {"device", "device"},
      {"client_request_id", "request-id"},
      {"display_name", "name"},
      {"priority", "priority"},
      {"notify", "notify-url"},
      {"notify.url", "notify-url"},
      {"freeze_depths", "depths"},
      {"learning_rates", "lrs"},
      {"lora_ranks", "lora-ranks"},
      {"include_head_only", "depths"},
      {"selection_metric", "sweep-metric"},
      {"successive_halving", "rungs"},
      {"successive_halving.rung_steps", "rungs"},
      {"successive_halving.reduction_factor", "reduction-factor"},
  };
  std::string p;
  // Drop indexes: rules[2] -> rules.
  for (size_t i = 0; i < path.size(); ++i) {
    if (path[i] == '[') {
      while (i < path.size() && path[i] != ']') ++i;
      continue;
    }
    p.push_back(path[i]);
  }
  absl::string_view v = p;
  if (!absl::ConsumePrefix(&v, "sweep.job.") && !absl::ConsumePrefix(&v, "job.")) {
    absl::ConsumePrefix(&v, "sweep.");
  }
  // The validation set's fields are set by the same flags as train's.
  std::string key(v);
  if (absl::StartsWith(key, "validation.") && key != "validation.uri") {
    key = "train." + key.substr(strlen("validation."));
  }
  for (const auto& [field, flag] : *kFields) {
    if (key == field) return flag;
  }
  return "";
}

absl::StatusOr<v1::PlanFreezeRequest> BuildPlanRequest(const ParsedArgs& args) {
  v1::PlanFreezeRequest req;
  if (std::optional<std::string> file = args.Get("file")) {
    // Tried in this order because JSON parsing rejects unknown fields: a
    // job file with hyperparameters is not a PlanFreezeRequest.
    if (!ReadJsonFile(*file, &req).ok()) {
      req.Clear();
      v1::FineTuneJob job;
      v1::FreezeSpec spec;
      if (ReadJsonFile(*file, &job).ok()) {
        req.set_model_uri(job.model_uri());
        *req.mutable_freeze() = job.freeze();
        *req.mutable_task() = job.task();
      } else if (ReadJsonFile(*file, &spec).ok()) {
        *req.mutable_freeze() = spec;
      } else {
        return ReadJsonFile(*file, &job);  // the job's error is the clearest
      }
    }
  }
  absl::Status s = ApplyFreezeAndTask(args, req.mutable_model_uri(),
                                      req.mutable_task(), req.mutable_freeze());
  if (!s.ok()) return s;
  if (req.model_uri().empty()) {
    return absl::InvalidArgumentError("plan: --model (or a file with model_uri) is required");
  }
  return req;
}

}  // namespace freezetune::cli
