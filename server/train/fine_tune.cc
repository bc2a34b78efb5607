// Job validation, the PlanFreeze dry run, job preparation and RunFineTune
// (see fine_tune.h and trainer.h).
#include "server/train/fine_tune.h"

#include <c10/util/Exception.h>
#include <torch/cuda.h>
#include <torch/utils.h>

#include <algorithm>
#include <exception>
#include <random>
#include <tuple>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "re2/re2.h"
#include "server/common/status_macros.h"
#include "server/data/dataset.h"
#include "server/data/s3_client.h"
#include "server/data/s3_dirs.h"
#include "server/model/bert_config.h"
#include "server/model/delta_checkpoint.h"
#include "server/model/hf_checkpoint.h"
#include "server/train/encode_cache.h"
#include "server/train/freeze_plan.h"
#include "server/train/data_parallel.h"
#include "server/train/data_parallel_launcher.h"
#include "server/train/device_memory.h"
#include "server/train/train_history.h"
#include "server/train/hyperparameters.h"
#include "server/train/job_output.h"
#include "server/train/task.h"
#include "server/train/precision.h"
#include "server/train/trainer.h"

namespace freezetune::train {
namespace {

absl::Status FieldError(const std::string& field, const std::string& reason) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", reason));
}

// Prefixes a lower layer's error with `field` unless it already names one.
absl::Status WithField(const absl::Status& s, const std::string& field) {
  if (s.ok() || absl::StartsWith(s.message(), field)) return s;
  return absl::Status(s.code(), absl::StrCat(field, ": ", s.message()));
}

absl::Status ValidateDevice(const std::string& device) {
  static const RE2 kDevice("cpu|cuda|cuda:[0-9]{1,3}");
  if (device.empty() || RE2::FullMatch(device, kDevice)) return absl::OkStatus();
  return FieldError("job.device", "must be \"cpu\", \"cuda\" or \"cuda:N\"");
}

absl::StatusOr<std::string> ResolveModelDir(const std::string& uri, const data::UriOptions& uris,
                                            const std::string& field) {
  if (uri.empty()) return FieldError(field, "required");
  // An s3:// directory is downloaded into the cache (by ETag) and read there.
  if (data::IsS3Uri(uri)) return data::StageS3ModelDir(uri, uris, field);
  if (!data::IsLocalUri(uri)) {
    return FieldError(field,
                      "a model is a Hugging Face directory: file:///abs/dir, an absolute path "
                      "under a data root, or s3://bucket/prefix; http(s):// URIs are for "
                      "datasets only");
  }
  return data::ResolveLocalPath(uri, uris, field);
}

// The model a job names: a Hugging Face directory, or a delta output
// (model/delta_checkpoint.h) together with the full directory it applies to.
struct ModelSource {
  std::string dir;       // model_uri resolved
  std::string base_dir;  // base_model_uri resolved, verified against the delta; else empty
};

// Resolves model_uri and, when it is a delta, base_model_uri (required then,
// and refused otherwise), checking the base's SHA-256 against the delta.
absl::StatusOr<ModelSource> ResolveModelSource(const std::string& uri, const std::string& base_uri,
                                               const data::UriOptions& uris,
                                               const std::string& field,
                                               const std::string& base_field) {
  ModelSource source;
  FT_ASSIGN_OR_RETURN(source.dir, ResolveModelDir(uri, uris, field));
  if (!model::IsDeltaDir(source.dir)) {
    if (!base_uri.empty()) {
      return FieldError(base_field, absl::StrCat("only for a delta output; ", field,
                                                 " is a full model directory"));
    }
    return source;
  }
  absl::StatusOr<model::DeltaManifest> manifest = model::ReadDeltaManifest(source.dir);
  if (!manifest.ok()) return FieldError(field, std::string(manifest.status().message()));
  if (base_uri.empty()) {
    return FieldError(base_field, absl::StrCat("required: ", field,
                                               " is a delta output (made from ",
                                               manifest->base_name, ")"));
  }
  FT_ASSIGN_OR_RETURN(source.base_dir, ResolveModelDir(base_uri, uris, base_field));
  FT_RETURN_IF_ERROR(model::VerifyDeltaBase(*manifest, source.base_dir, base_field));
  return source;
}

// What is wrong with a model directory the caller named (a file missing,
// config.json disagreeing with the weights) is the request's fault:
// INVALID_ARGUMENT naming the field, as the API promises, not NOT_FOUND.
// A delta directory gives its own config (and, with a base, the base's
// tokenizer settings).
absl::StatusOr<model::ModelDirInfo> InspectModel(const ModelSource& source,
                                                 const std::string& field) {
  const std::string& dir = source.dir;
  absl::StatusOr<model::ModelDirInfo> info =
      model::IsDeltaDir(dir) ? model::InspectDeltaDir(dir, source.base_dir, field)
                             : model::InspectModelDir(dir);
  if (!info.ok()) {
    absl::Status s = WithField(info.status(), field);
    if (s.code() == absl::StatusCode::kNotFound) {
      s = absl::InvalidArgumentError(s.message());
    }
    return s;
  }
  return info;
}

bool HasDataset(const v1::DatasetSpec& spec) { return !spec.uri().empty(); }

// Splits `train` into (train, holdout): a seeded, platform-independent
// choice of floor(n * fraction) examples (at least one example stays in
// train). Both keep file order.
std::pair<std::vector<data::RawExample>, std::vector<data::RawExample>> HoldOut(
    std::vector<data::RawExample> train, double fraction, int64_t seed) {
  const size_t n = train.size();
  size_t k = static_cast<size_t>(static_cast<double>(n) * fraction + 1e-9);
  if (k >= n) k = n > 0 ? n - 1 : 0;
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  // Fisher-Yates with our own index draw: std::shuffle and the standard
  // distributions differ between standard libraries.
  std::mt19937_64 rng(static_cast<uint64_t>(seed) ^ 0x5eed5eedULL);
  for (size_t i = n; i > 1; --i) std::swap(order[i - 1], order[rng() % i]);
  std::vector<bool> held(n, false);
  for (size_t i = 0; i < k; ++i) held[order[i]] = true;
  std::vector<data::RawExample> rest, holdout;
  for (size_t i = 0; i < n; ++i) (held[i] ? holdout : rest).push_back(std::move(train[i]));
  return {std::move(rest), std::move(holdout)};
}

}  // namespace

namespace {
absl::Status ValidateJobImpl(const v1::FineTuneJob& job, const data::UriOptions& uris,
                             const JobLimits& limits) {
  if (job.client_request_id().size() > 128) {
    return FieldError("job.client_request_id", "at most 128 characters");
  }
  if (job.display_name().size() > 256) {
    return FieldError("job.display_name", "at most 256 characters");
  }
  FT_RETURN_IF_ERROR(ValidateDevice(job.device()));
  FT_RETURN_IF_ERROR(ValidateOutputFormat(job));
  FT_RETURN_IF_ERROR(ValidateTask(job.task(), job.hyperparameters().selection_metric(), "job.task"));
  const bool labelled = !IsMaskedLm(job.task());
  if (data::IsS3Uri(job.output_uri())) {
    FT_RETURN_IF_ERROR(data::CheckS3OutputFree(job.output_uri(), uris, "job.output_uri"));
  }
  FT_ASSIGN_OR_RETURN(const ModelSource model,
                      ResolveModelSource(job.model_uri(), job.base_model_uri(), uris,
                                         "job.model_uri", "job.base_model_uri"));
  FT_ASSIGN_OR_RETURN(const model::ModelDirInfo info, InspectModel(model, "job.model_uri"));

  if (!HasDataset(job.train())) return FieldError("job.train.uri", "required");
  FT_ASSIGN_OR_RETURN(const std::vector<data::RawExample> train,
                      data::LoadDataset(job.train(), uris, "job.train", labelled));
  if (train.empty()) return FieldError("job.train", "no examples");
  if (static_cast<int64_t>(train.size()) > limits.max_examples) {
    return FieldError("job.train", absl::StrCat(train.size(), " examples exceed the limit of ",
                                                limits.max_examples));
  }
  FT_ASSIGN_OR_RETURN(const data::LabelSpace labels,
                      ResolveTaskLabels(job.task(), train, "job.train"));
  if (HasDataset(job.validation())) {
    FT_ASSIGN_OR_RETURN(const std::vector<data::RawExample> validation,
                        data::LoadDataset(job.validation(), uris, "job.validation", labelled));
    if (static_cast<int64_t>(validation.size()) > limits.max_examples) {
      return FieldError("job.validation", absl::StrCat(validation.size(),
                                                       " examples exceed the limit of ",
                                                       limits.max_examples));
    }
    FT_RETURN_IF_ERROR(data::MapLabels(validation, labels, "job.validation").status());
  }

  FT_RETURN_IF_ERROR(ValidateHyperparameters(job.hyperparameters(), labels.regression,
                                             info.config.max_position_embeddings, limits,
                                             "job.hyperparameters"));
  const ResolvedHyperparameters hp = WithDefaults(job.hyperparameters(), labels.regression);
  FT_RETURN_IF_ERROR(
      ValidatePrecision(job.hyperparameters().precision(), job.device(), "job.hyperparameters"));
  if (job.resources().data_parallel() < 0 ||
      job.resources().data_parallel() > kMaxDataParallel) {
    return FieldError("job.resources.data_parallel",
                      absl::StrCat("must be in [1, ", kMaxDataParallel, "] (got ",
                                   job.resources().data_parallel(), ")"));
  }
  if (!v1::WeightDtype_IsValid(job.output_dtype())) {
    return FieldError("job.output_dtype", absl::StrCat("unknown value ", job.output_dtype()));
  }
  FT_RETURN_IF_ERROR(ValidateDeltaOutputDtype(job, info.source_dtype));

  const auto shapes =
      model::BertParameterShapes(info.config, labels.num_labels(), HeadFor(job.task()));
  int64_t total = 0;
  for (const auto& s : shapes) {
    int64_t n = 1;
    for (int64_t d : s.shape) n *= d;
    total += n;
  }
  if (total > limits.max_model_parameters) {
    return FieldError("job.model_uri", absl::StrCat("model has ", total,
                                                    " parameters, over the limit of ",
                                                    limits.max_model_parameters));
  }
  FT_RETURN_IF_ERROR(CompileFreezePlan(job.freeze(), shapes,
                                       static_cast<int>(info.config.num_hidden_layers),
                                       "job.freeze")
                         .status());
  for (int s = 0; s < job.freeze().schedule_size(); ++s) {
    const int at_epoch = job.freeze().schedule(s).at_epoch();
    if (at_epoch > hp.epochs) {
      return FieldError(absl::StrCat("job.freeze.schedule[", s, "].at_epoch"),
                        absl::StrCat("epoch ", at_epoch, " is after the last epoch (", hp.epochs,
                                     ")"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::PlanFreezeResponse> PlanFreezeImpl(const v1::PlanFreezeRequest& request,
                                                      const data::UriOptions& uris) {
  // A delta's own config.json gives the shapes: no base needed to plan.
  ModelSource model;
  FT_ASSIGN_OR_RETURN(model.dir, ResolveModelDir(request.model_uri(), uris, "model_uri"));
  FT_ASSIGN_OR_RETURN(const model::ModelDirInfo info, InspectModel(model, "model_uri"));
  FT_RETURN_IF_ERROR(ValidateTask(request.task(), "", "task"));
  int64_t num_labels = 2;
  if (request.task().num_labels() < 0) return FieldError("task.num_labels", "must be >= 0");
  if (request.task().num_labels() > 0) {
    num_labels = request.task().num_labels();
  } else if (request.task().label_names_size() > 0) {
    num_labels = request.task().label_names_size();
  }
  FT_ASSIGN_OR_RETURN(FreezePlan plan,
                      CompileFreezePlan(request.freeze(),
                                        model::BertParameterShapes(info.config, num_labels,
                                                                   HeadFor(request.task())),
                                        static_cast<int>(info.config.num_hidden_layers),
                                        "freeze"));
  return plan.ToProto();
}
}  // namespace

// Validation and planning touch no tensors, but guard the boundary anyway
// (JSON and filesystem libraries throw too).
absl::Status ValidateJob(const v1::FineTuneJob& job, const data::UriOptions& uris,
                         const JobLimits& limits) {
  try {
    return ValidateJobImpl(job, uris, limits);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("validating the job: ", e.what()));
  }
}

absl::StatusOr<v1::PlanFreezeResponse> PlanFreeze(const v1::PlanFreezeRequest& request,
                                                  const data::UriOptions& uris) {
  try {
    return PlanFreezeImpl(request, uris);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("planning the freeze: ", e.what()));
  }
}

absl::StatusOr<PreparedJob> PrepareJob(const v1::FineTuneJob& job, const RunContext& context) {
  FT_RETURN_IF_ERROR(ValidateDevice(job.device()));
  FT_RETURN_IF_ERROR(ValidateOutputFormat(job));
  FT_RETURN_IF_ERROR(ValidateTask(job.task(), job.hyperparameters().selection_metric(), "job.task"));
  const bool mlm = IsMaskedLm(job.task());
  FT_ASSIGN_OR_RETURN(const ModelSource model,
                      ResolveModelSource(job.model_uri(), job.base_model_uri(), context.uris,
                                         "job.model_uri", "job.base_model_uri"));
  const std::string& model_dir = model.dir;
  if (!HasDataset(job.train())) return FieldError("job.train.uri", "required");
  FT_ASSIGN_OR_RETURN(std::vector<data::RawExample> train_raw,
                      data::LoadDataset(job.train(), context.uris, "job.train", !mlm));
  if (train_raw.empty()) return FieldError("job.train", "no examples");
  PreparedJob out;
  FT_ASSIGN_OR_RETURN(out.labels, ResolveTaskLabels(job.task(), train_raw, "job.train"));
  out.hp = WithDefaults(job.hyperparameters(), out.labels.regression);
  // A masked-LM job selects its best evaluation by the masked-token loss.
  if (mlm && job.hyperparameters().selection_metric().empty()) out.hp.selection_metric = "loss";

  std::vector<data::RawExample> validation_raw;
  if (HasDataset(job.validation())) {
    FT_ASSIGN_OR_RETURN(validation_raw,
                        data::LoadDataset(job.validation(), context.uris, "job.validation", !mlm));
  } else if (out.hp.validation_split > 0) {
    std::tie(train_raw, validation_raw) =
        HoldOut(std::move(train_raw), out.hp.validation_split, out.hp.seed);
  }

  {
    // A fresh classifier's and LoRA adapters' initialisation draws from
    // torch's global generator: seed it, load and attach under one lock, so
    // that jobs starting side by side (a sweep's trials) each get what they
    // would get alone. Dropout in training draws from the run's own
    // generator (trainer.h).
    static absl::Mutex global_rng_mu(absl::kConstInit);
    absl::MutexLock lock(&global_rng_mu);
    torch::manual_seed(static_cast<uint64_t>(out.hp.seed));
    if (model.base_dir.empty()) {
      FT_ASSIGN_OR_RETURN(out.loaded, model::LoadModelDir(model_dir, out.labels.num_labels(),
                                                          HeadFor(job.task())));
    } else {
      FT_ASSIGN_OR_RETURN(out.loaded, model::LoadDeltaModelDir(
                                          model_dir, model.base_dir, out.labels.num_labels(),
                                          HeadFor(job.task()), "job.base_model_uri"));
    }
    out.model_dir = model_dir;
    out.delta_base_dir = model.base_dir;
    FT_RETURN_IF_ERROR(ValidateDeltaOutputDtype(job, out.loaded.source_dtype));
    // Compile against the loaded model's own parameters, so the plan names
    // exactly what the trainer will see, then add the adapters it asks for.
    std::vector<model::ParameterShape> shapes;
    for (const auto& item : out.loaded.model->named_parameters(/*recurse=*/true)) {
      shapes.push_back({item.key(), item.value().sizes().vec()});
    }
    FT_ASSIGN_OR_RETURN(out.plan,
                        CompileFreezePlan(job.freeze(), shapes,
                                          static_cast<int>(out.loaded.config.num_hidden_layers),
                                          "job.freeze"));
    if (out.plan.lora) {
      const LoraPlan& lora = *out.plan.lora;
      out.loaded.model->AttachLora(lora.targets, lora.rank, lora.alpha, lora.dropout);
    }
  }
  FT_RETURN_IF_ERROR(ValidateHyperparameters(job.hyperparameters(), out.labels.regression,
                                             out.loaded.config.max_position_embeddings,
                                             context.limits, "job.hyperparameters"));
  if (mlm) {
    const auto& tokens = out.loaded.tokenizer->tokens();
    if (std::find(tokens.begin(), tokens.end(), "[MASK]") == tokens.end()) {
      return absl::FailedPreconditionError(
          "job.model_uri: vocab.txt has no [MASK] token, which a masked-LM task needs");
    }
  }
  if (job.hyperparameters().max_seq_length() == 0) {
    out.hp.max_seq_length =
        DefaultMaxSeqLength(out.loaded.config.max_position_embeddings, context.limits);
  }

  // Tokenization is the slow part of preparing a large dataset; jobs over
  // the same content (sweep trials, retries) share it through the cache.
  EncodeCache& cache = context.encode_cache ? *context.encode_cache : EncodeCache::Global();
  FT_ASSIGN_OR_RETURN(out.train, cache.GetOrEncode(train_raw, out.labels, *out.loaded.tokenizer,
                                                   out.hp.max_seq_length, "job.train"));
  FT_ASSIGN_OR_RETURN(out.validation,
                      cache.GetOrEncode(validation_raw, out.labels, *out.loaded.tokenizer,
                                        out.hp.max_seq_length, "job.validation"));
  return out;
}

namespace {

absl::StatusOr<v1::JobResult> RunFineTuneImpl(const v1::FineTuneJob& job,
                                              const RunContext& context) {
  if (context.output_dir.empty()) return absl::InternalError("run context has no output_dir");
  FT_ASSIGN_OR_RETURN(PreparedJob prepared, PrepareJob(job, context));
  auto notice = [&context](std::string message) {
    if (!context.emit) return;
    v1::JobEvent event;
    event.mutable_notice()->set_message(std::move(message));
    context.emit(std::move(event));
  };
  if (!prepared.loaded.newly_initialized.empty()) {
    notice(absl::StrCat("newly initialized (not in the checkpoint): ",
                        absl::StrJoin(prepared.loaded.newly_initialized, ", ")));
  }
  if (!prepared.loaded.unused.empty()) {
    notice(absl::StrCat("unused checkpoint tensors: ",
                        absl::StrJoin(prepared.loaded.unused, ", ")));
  }
  if (prepared.validation.size() == 0) {
    notice("no validation set (validation_split 0 and no job.validation): no evaluations; "
           "the final weights are the output");
  }

  TrainerOptions options;
  options.hp = prepared.hp;
  options.freeze_spec = job.freeze();
  const std::string device = context.device.empty() ? std::string("cpu") : context.device;
  if (device != "cpu" && !torch::cuda::is_available()) {
    return absl::FailedPreconditionError(
        absl::StrCat("device ", device, ": CUDA is not available on this server"));
  }
  options.device = torch::Device(device);
  // The history also goes to trainer_state.json and history.csv.
  TrainHistory history;
  options.emit = [&history, &context](v1::JobEvent event) {
    history.Record(event);
    if (context.emit) context.emit(std::move(event));
  };
  options.should_stop = context.should_stop;
  options.intra_op_threads = context.intra_op_threads;
  options.on_step = context.on_step;
  options.checkpoint_dir = context.checkpoint_dir;
  options.prefix_store = context.prefix_store;
  options.prefix_cache_shared = context.prefix_cache_shared || job.share_frozen_prefix();
  if (IsMaskedLm(job.task())) {
    options.masker =
        std::make_shared<MlmMasker>(*prepared.loaded.tokenizer, MaskingOptions(job.task()));
  }
  options.sync = context.sync;
  const int64_t pad_id = prepared.loaded.tokenizer->pad_id();
  FT_ASSIGN_OR_RETURN(std::unique_ptr<Trainer> trainer,
                      Trainer::Create(prepared.loaded.model, prepared.plan, prepared.labels,
                                      std::move(prepared.train), std::move(prepared.validation),
                                      pad_id, std::move(options)));
  if (absl::Status trained = trainer->Train(); !trained.ok()) {
    // Drop every tensor of the run before returning the allocator's cache,
    // so that after an out-of-memory failure the next job starts from free
    // device memory.
    trainer.reset();
    prepared.loaded.model = nullptr;
    ReleaseCachedDeviceMemory(torch::Device(device));
    return trained;
  }

  const TrainerSummary& summary = trainer->summary();
  v1::JobResult result;
  if (context.sync) {
    result.set_data_parallel(context.sync->world_size());
    result.set_allreduce_bytes_per_step(summary.allreduce_bytes_per_step);
    // Every rank holds the same weights; rank 0 writes them.
    if (context.sync->rank() != 0) return result;
  }

  // Where a PEFT adapter records its base: the job's URI for object
  // storage, else the local directory it was loaded from.
  const std::string base_name = data::IsS3Uri(job.model_uri()) ? job.model_uri() : prepared.model_dir;
  FT_RETURN_IF_ERROR(WriteJobOutput(job, *trainer, prepared, base_name, context.output_dir));

  TrainerStateInfo state;
  state.output_dir = context.output_dir;
  state.selection_metric = prepared.hp.selection_metric;
  state.regression = prepared.labels.regression;
  state.global_step = summary.steps;
  state.max_steps = summary.total_steps;
  state.epochs = prepared.hp.epochs;
  state.batch_size = prepared.hp.batch_size;
  state.logging_steps = prepared.hp.log_every_steps;
  state.eval_steps = prepared.hp.eval_every_steps;
  state.train_seconds = summary.train_seconds;
  state.has_best = summary.has_best;
  state.best_eval = summary.best_eval;
  FT_RETURN_IF_ERROR(history.WriteFiles(state));
  result.set_output_uri(absl::StrCat("file://", context.output_dir));
  result.set_steps(summary.steps);
  if (summary.has_best) {
    *result.mutable_best_eval() = summary.best_eval;
    *result.mutable_final_eval() = summary.final_eval;
  }
  result.set_selection_metric(prepared.hp.selection_metric);
  result.set_early_stopped(summary.early_stopped);
  result.set_total_parameters(trainer->plan().total_parameters());
  result.set_trainable_parameters(trainer->plan().trainable_parameters());
  result.set_frozen_weights_verified(summary.frozen_weights_verified);
  result.set_train_seconds(summary.train_seconds);
  result.set_precision(prepared.hp.precision);
  result.set_skipped_steps(summary.skipped_steps);
  result.set_peak_device_memory_bytes(summary.peak_device_memory_bytes);
  return result;
}

}  // namespace

absl::StatusOr<v1::JobResult> RunFineTune(const v1::FineTuneJob& job, const RunContext& context) {
  // Several ranks: this process supervises worker processes instead.
  if (job.resources().data_parallel() > 1 && !context.sync) return RunDataParallel(job, context);
  try {
    return RunFineTuneImpl(job, context);
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("training failed: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("training failed: ", e.what()));
  }
}

}  // namespace freezetune::train
