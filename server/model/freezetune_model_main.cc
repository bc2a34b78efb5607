// freezetune-model: offline tool over Hugging Face BERT directories.
//
//   freezetune-model init --out DIR --vocab FILE [--layers N --hidden H
//       --heads A --intermediate I --max-position P --num-labels K --seed S
//       --cased]
//     Writes a randomly initialised (HF init) BertForSequenceClassification
//     directory. Defaults: 2 layers, hidden 128, 2 heads, intermediate 512,
//     max-position 512, 2 labels, seed 42, lowercasing tokenizer.
//   freezetune-model inspect --model DIR [--freeze-spec FILE.json] [--json]
//     One line per parameter (name, shape, stored dtype, trainable) and
//     totals, read from the config and the safetensors header only. The spec
//     is a freezetune.v1.FreezeSpec in protobuf JSON mapping.
//   freezetune-model tokenize --model DIR [--max-length N]
//     stdin: JSONL {"text": ..., "text_pair": ...}; stdout per line:
//     {"ids": [...], "type_ids": [...], "tokens": [...]}. N = 0 (default)
//     means no truncation. Blank lines are skipped.
//   freezetune-model predict --model DIR --input FILE.jsonl [--batch-size B
//       --max-length N]
//     Eval mode; stdout per input line: {"logits": [...], "label": "..."}
//     with the config's id2label of the argmax, in input order. Default max
//     length is the model's max_position_embeddings, batch size 32.
//     --adapter ADAPTER_DIR runs DIR with that PEFT LoRA adapter attached
//     (unmerged), labels from the adapter's task.json when it has one.
//     On a BertForMaskedLM directory (config architectures), one line per
//     input instead: {"masked": [{"position", "argmax", "token",
//     "max_logit", "logsumexp"}, ...]} for each [MASK] in the text.
//   freezetune-model merge-adapter --model DIR --adapter ADAPTER_DIR --out OUT
//     Base + PEFT LoRA adapter -> a full model directory with every adapter
//     folded into its layer (W + lora_alpha / r * B A), as PEFT's
//     merge_and_unload.
//   freezetune-model apply-delta --delta DIR --base BASE_DIR --out OUT
//     A delta output (job output_format DELTA) applied to its base -> the
//     full model directory the job would have written; refused when the
//     base's SHA-256 is not the one the delta records.
//   freezetune-model system [--json]
//     The CPU, the BLAS and OpenBLAS core this machine trains with, and why
//     (the server's start-up tuning, base/process_tuning.h), as "key: value"
//     lines or one JSON object.
//
// predict and system tune the process as freezetune-server does (OpenMP
// wait policy, OpenBLAS core, malloc thresholds; re-executing once when the
// environment has to change); --no-blas-core-selection keeps OpenBLAS's own
// core.
//
// Exit status: 0 on success, 2 for usage errors, 1 for any other error; every
// error is one line on stderr.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/utils.h>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "freezetune/version.h"
#include "nlohmann/json.hpp"
#include "server/base/process_tuning.h"
#include "server/common/status_macros.h"
#include "server/model/atomic_file.h"
#include "server/model/bert.h"
#include "server/model/bert_config.h"
#include "server/model/delta_checkpoint.h"
#include "server/model/hf_checkpoint.h"
#include "server/model/peft_adapter.h"
#include "server/model/safetensors_format.h"
#include "server/model/tokenizer.h"

#ifdef FREEZETUNE_MODEL_HAVE_FREEZE_PLAN
#include <google/protobuf/util/json_util.h>

#include "server/train/freeze_plan.h"
#endif

namespace freezetune::model {
namespace {

constexpr const char* kUsage =
    "usage: freezetune-model COMMAND [flags]   (freezetune-model --help for commands and flags)";

// --help: every command with its flags and defaults.
constexpr const char* kHelp = R"(usage: freezetune-model COMMAND [flags]

Offline tool over Hugging Face BERT directories (config.json,
model.safetensors, vocab.txt).

commands:
  init      write a randomly initialised BertForSequenceClassification directory
    --out DIR                output directory (required)
    --vocab FILE             WordPiece vocab.txt (required)
    --layers N               encoder layers (default 2)
    --hidden H               hidden size (default 128)
    --heads A                attention heads (default 2)
    --intermediate I         feed-forward size (default 512)
    --max-position P         max_position_embeddings (default 512)
    --num-labels K           classifier outputs (default 2)
    --seed S                 initialisation seed (default 42)
    --cased                  keep case (default: lowercase, like bert-base-uncased)
  inspect   list parameters (name, shape, dtype, trainable) and totals
    --model DIR              model directory (required)
    --freeze-spec FILE.json  a freezetune.v1.FreezeSpec (protobuf JSON) to apply
    --json                   one JSON object instead of a table
  tokenize  tokenize JSONL {"text", "text_pair"} lines from stdin
    --model DIR              model directory (required)
    --max-length N           truncate to N tokens (default 0: no truncation)
  predict   classify JSONL lines in eval mode; prints logits and label (a masked-LM
            model: its prediction at each [MASK])
    --model DIR              model directory (required)
    --input FILE.jsonl       input lines {"text", "text_pair"} (required)
    --batch-size B           examples per batch (default 32)
    --max-length N           token limit (default: the model's max_position_embeddings)
    --adapter DIR            run with this PEFT LoRA adapter attached (unmerged)
    --no-blas-core-selection keep OpenBLAS's own core
  merge-adapter  fold a PEFT LoRA adapter into its base: a full model directory
    --model DIR              the base model directory (required)
    --adapter DIR            the PEFT adapter directory (required)
    --out DIR                output directory (required)
  apply-delta  a delta output applied to its base: the full model directory
    --delta DIR              the delta output (delta.json, delta.safetensors) (required)
    --base DIR               the base model it was made from (required; SHA-256 checked)
    --out DIR                output directory (required)
  system    the CPU, BLAS and OpenBLAS core this machine trains with, and why
    --json                   one JSON object instead of "key: value" lines
    --no-blas-core-selection keep OpenBLAS's own core

flags for any command:
  --help                     this help
  --version                  print the version

examples:
  freezetune-model init --out var/model --vocab tests/fixtures/data/bert-base-uncased-vocab.txt --layers 2
  freezetune-model inspect --model var/model --freeze-spec client/examples/head_only.json

Exit status: 0 on success, 2 for usage errors, 1 for any other error.
)";

// The start-up tuning of predict and system.
base::ProcessTuning& Tuning() {
  static base::ProcessTuning* tuning = new base::ProcessTuning();
  return *tuning;
}

// --name value / --name=value flags after the subcommand; bare --name for
// booleans listed in `switches`.
class Flags {
 public:
  static absl::StatusOr<Flags> Parse(int argc, char** argv, const std::vector<std::string>& known,
                                     const std::vector<std::string>& switches) {
    Flags f;
    for (int i = 2; i < argc; ++i) {
      std::string arg = argv[i];
      if (arg.rfind("--", 0) != 0) {
        return absl::InvalidArgumentError(absl::StrCat("unexpected argument \"", arg, "\""));
      }
      arg = arg.substr(2);
      std::optional<std::string> value;
      if (size_t eq = arg.find('='); eq != std::string::npos) {
        value = arg.substr(eq + 1);
        arg = arg.substr(0, eq);
      }
      const bool is_switch = std::find(switches.begin(), switches.end(), arg) != switches.end();
      const bool is_known = std::find(known.begin(), known.end(), arg) != known.end();
      if (!is_switch && !is_known) {
        return absl::InvalidArgumentError(absl::StrCat("unknown flag --", arg));
      }
      if (is_switch) {
        if (value) return absl::InvalidArgumentError(absl::StrCat("--", arg, " takes no value"));
        f.values_[arg] = "true";
        continue;
      }
      if (!value) {
        if (i + 1 >= argc) return absl::InvalidArgumentError(absl::StrCat("--", arg, ": missing value"));
        value = argv[++i];
      }
      f.values_[arg] = *value;
    }
    return f;
  }

  bool Has(const std::string& name) const { return values_.count(name) > 0; }

  absl::StatusOr<std::string> Required(const std::string& name) const {
    auto it = values_.find(name);
    if (it == values_.end() || it->second.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("--", name, ": required"));
    }
    return it->second;
  }

  absl::StatusOr<int64_t> Int(const std::string& name, int64_t default_value, int64_t min_value,
                              int64_t max_value) const {
    auto it = values_.find(name);
    if (it == values_.end()) return default_value;
    int64_t v = 0;
    if (!absl::SimpleAtoi(it->second, &v)) {
      return absl::InvalidArgumentError(absl::StrCat("--", name, ": not an integer: \"",
                                                     it->second, "\""));
    }
    if (v < min_value || v > max_value) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", name, ": must be in [", min_value, ", ", max_value, "] (got ", v, ")"));
    }
    return v;
  }

 private:
  std::map<std::string, std::string> values_;
};

int64_t NumLabelsOf(const BertConfig& c) {
  if (auto it = c.raw.find("id2label"); it != c.raw.end() && it->is_object() && !it->empty()) {
    return static_cast<int64_t>(it->size());
  }
  if (auto it = c.raw.find("num_labels"); it != c.raw.end() && it->is_number_integer() &&
                                          it->get<int64_t>() > 0) {
    return it->get<int64_t>();
  }
  return 2;
}

std::vector<std::string> LabelNamesOf(const BertConfig& c, int64_t num_labels) {
  std::vector<std::string> names;
  auto it = c.raw.find("id2label");
  for (int64_t i = 0; i < num_labels; ++i) {
    std::string name = absl::StrCat("LABEL_", i);
    if (it != c.raw.end() && it->is_object()) {
      auto label = it->find(std::to_string(i));
      if (label != it->end() && label->is_string()) name = label->get<std::string>();
    }
    names.push_back(name);
  }
  return names;
}

absl::Status Init(const Flags& flags) {
  FT_ASSIGN_OR_RETURN(std::string out, flags.Required("out"));
  FT_ASSIGN_OR_RETURN(std::string vocab, flags.Required("vocab"));
  FT_ASSIGN_OR_RETURN(int64_t layers, flags.Int("layers", 2, 1, 48));
  FT_ASSIGN_OR_RETURN(int64_t hidden, flags.Int("hidden", 128, 1, 8192));
  FT_ASSIGN_OR_RETURN(int64_t heads, flags.Int("heads", 2, 1, 256));
  FT_ASSIGN_OR_RETURN(int64_t intermediate, flags.Int("intermediate", 512, 1, 65536));
  FT_ASSIGN_OR_RETURN(int64_t max_position, flags.Int("max-position", 512, 1, 8192));
  FT_ASSIGN_OR_RETURN(int64_t num_labels, flags.Int("num-labels", 2, 1, 100000));
  FT_ASSIGN_OR_RETURN(int64_t seed, flags.Int("seed", 42, 0, INT64_MAX));
  FT_ASSIGN_OR_RETURN(WordPieceTokenizer tokenizer,
                      WordPieceTokenizer::FromVocabFile(vocab, !flags.Has("cased")));
  nlohmann::json raw = {
      {"architectures", {"BertForSequenceClassification"}},
      {"model_type", "bert"},
      {"vocab_size", tokenizer.vocab_size()},
      {"hidden_size", hidden},
      {"num_hidden_layers", layers},
      {"num_attention_heads", heads},
      {"intermediate_size", intermediate},
      {"hidden_act", "gelu"},
      {"hidden_dropout_prob", 0.1},
      {"attention_probs_dropout_prob", 0.1},
      {"max_position_embeddings", max_position},
      {"type_vocab_size", 2},
      {"layer_norm_eps", 1e-12},
      {"initializer_range", 0.02},
      {"pad_token_id", tokenizer.pad_id()},
      {"position_embedding_type", "absolute"},
      {"classifier_dropout", nullptr},
  };
  auto config = ParseBertConfig(raw.dump());
  if (!config.ok()) {
    // Flag values, not a file: report the flag rather than config.json.
    return absl::InvalidArgumentError(absl::StrCat("flags: ", config.status().message()));
  }
  at::manual_seed(static_cast<uint64_t>(seed));
  BertForSequenceClassification model(*config, num_labels);
  SaveOptions options;
  FT_RETURN_IF_ERROR(SaveModelDir(out, model, tokenizer, options));
  int64_t params = 0;
  for (const auto& p : model->parameters()) params += p.numel();
  std::cout << "wrote " << out << " (" << layers << " layers, hidden " << hidden << ", "
            << params << " parameters, vocab " << tokenizer.vocab_size() << ")\n";
  return absl::OkStatus();
}

absl::Status Inspect(const Flags& flags) {
  FT_ASSIGN_OR_RETURN(std::string dir, flags.Required("model"));
  FT_ASSIGN_OR_RETURN(ModelDirInfo info, InspectModelDir(dir));
  FT_ASSIGN_OR_RETURN(SafetensorsHeader header,
                      ReadSafetensorsHeader(dir + "/model.safetensors"));
  std::map<std::string, std::string> stored;  // canonical name -> dtype
  for (const auto& t : header.tensors) {
    std::string name = t.name;
    if (name.rfind("bert.", 0) != 0 && name.rfind("classifier.", 0) != 0) name = "bert." + name;
    stored[name] = t.dtype;
  }
  const int64_t num_labels = NumLabelsOf(info.config);
  std::vector<ParameterShape> shapes = BertParameterShapes(info.config, num_labels);
  std::vector<bool> trainable(shapes.size(), true);
  std::vector<std::string> decided_by(shapes.size(), "default");
  if (flags.Has("freeze-spec")) {
#ifdef FREEZETUNE_MODEL_HAVE_FREEZE_PLAN
    FT_ASSIGN_OR_RETURN(std::string spec_path, flags.Required("freeze-spec"));
    FT_ASSIGN_OR_RETURN(std::string text, ReadFileToString(spec_path));
    v1::FreezeSpec spec;
    auto parsed = google::protobuf::util::JsonStringToMessage(text, &spec);
    if (!parsed.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(spec_path, ": not a FreezeSpec in JSON: ", std::string(parsed.message())));
    }
    FT_ASSIGN_OR_RETURN(train::FreezePlan plan,
                        train::CompileFreezePlan(spec, shapes,
                                                 static_cast<int>(info.config.num_hidden_layers),
                                                 "freeze_spec"));
    std::map<std::string, const train::ParameterDecision*> by_name;
    for (const auto& d : plan.parameters) by_name[d.name] = &d;
    for (size_t i = 0; i < shapes.size(); ++i) {
      auto it = by_name.find(shapes[i].name);
      if (it == by_name.end()) continue;
      trainable[i] = it->second->trainable;
      decided_by[i] = it->second->decided_by;
    }
#else
    return absl::UnimplementedError("--freeze-spec: this build has no freeze-plan compiler");
#endif
  }
  int64_t total = 0, total_trainable = 0;
  nlohmann::json params = nlohmann::json::array();
  for (size_t i = 0; i < shapes.size(); ++i) {
    int64_t numel = 1;
    for (int64_t d : shapes[i].shape) numel *= d;
    total += numel;
    if (trainable[i]) total_trainable += numel;
    auto it = stored.find(shapes[i].name);
    // Parameters absent from the checkpoint are freshly initialised on load.
    const std::string dtype = it == stored.end() ? "new" : it->second;
    params.push_back({{"name", shapes[i].name},
                      {"shape", shapes[i].shape},
                      {"numel", numel},
                      {"dtype", dtype},
                      {"trainable", static_cast<bool>(trainable[i])},
                      {"decided_by", decided_by[i]}});
  }
  if (flags.Has("json")) {
    nlohmann::json out = {{"model", dir},
                          {"num_layers", info.config.num_hidden_layers},
                          {"num_labels", num_labels},
                          {"source_dtype", info.source_dtype},
                          {"parameters", params},
                          {"total_parameters", total},
                          {"trainable_parameters", total_trainable}};
    std::cout << out.dump() << "\n";
    return absl::OkStatus();
  }
  for (const auto& p : params) {
    std::string shape = absl::StrCat("[", absl::StrJoin(p["shape"].get<std::vector<int64_t>>(), ", "), "]");
    std::printf("%-58s %-14s %-5s %-9s %s\n", p["name"].get<std::string>().c_str(), shape.c_str(),
                p["dtype"].get<std::string>().c_str(),
                p["trainable"].get<bool>() ? "trainable" : "frozen",
                p["decided_by"].get<std::string>().c_str());
  }
  std::printf("total %lld parameters, %lld trainable (%.2f%%), %lld frozen\n",
              static_cast<long long>(total), static_cast<long long>(total_trainable),
              total > 0 ? 100.0 * static_cast<double>(total_trainable) / static_cast<double>(total) : 0.0,
              static_cast<long long>(total - total_trainable));
  return absl::OkStatus();
}

// Reads one JSONL example; `where` is "stdin:3" or "FILE:3".
absl::Status ParseExample(const std::string& line, const std::string& where, std::string* text,
                          std::optional<std::string>* pair) {
  auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": not a JSON object"));
  }
  auto t = j.find("text");
  if (t == j.end() || !t->is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": text: missing or not a string"));
  }
  *text = t->get<std::string>();
  pair->reset();
  if (auto p = j.find("text_pair"); p != j.end() && !p->is_null()) {
    if (!p->is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": text_pair: not a string"));
    }
    *pair = p->get<std::string>();
  }
  return absl::OkStatus();
}

bool IsBlank(const std::string& line) {
  return line.find_first_not_of(" \t\r\n") == std::string::npos;
}

absl::Status Tokenize(const Flags& flags) {
  FT_ASSIGN_OR_RETURN(std::string dir, flags.Required("model"));
  FT_ASSIGN_OR_RETURN(int64_t max_length, flags.Int("max-length", 0, 0, 1 << 20));
  FT_ASSIGN_OR_RETURN(ModelDirInfo info, InspectModelDir(dir));
  FT_ASSIGN_OR_RETURN(WordPieceTokenizer tokenizer,
                      WordPieceTokenizer::FromVocabFile(dir + "/vocab.txt", info.do_lower_case));
  std::string line;
  int64_t line_no = 0;
  while (std::getline(std::cin, line)) {
    ++line_no;
    if (IsBlank(line)) continue;
    std::string text;
    std::optional<std::string> pair;
    FT_RETURN_IF_ERROR(ParseExample(line, absl::StrCat("stdin:", line_no), &text, &pair));
    Encoding e = pair ? tokenizer.Encode(text, std::string_view(*pair), static_cast<int>(max_length))
                      : tokenizer.Encode(text, std::nullopt, static_cast<int>(max_length));
    nlohmann::ordered_json out = {{"ids", e.ids}, {"type_ids", e.type_ids}, {"tokens", e.tokens}};
    std::cout << out.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) << "\n";
  }
  return absl::OkStatus();
}

// The label names a PEFT adapter directory records in task.json (written
// by freezetune's SavePeftAdapter); empty when it has none.
absl::StatusOr<std::vector<std::string>> AdapterLabels(const std::string& adapter) {
  const std::string path = adapter + "/task.json";
  std::ifstream probe(path);
  if (!probe) return std::vector<std::string>{};
  FT_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("id2label") || !j["id2label"].is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": no id2label object"));
  }
  std::vector<std::string> labels(j["id2label"].size());
  for (const auto& [key, value] : j["id2label"].items()) {
    size_t i = 0;
    if (!absl::SimpleAtoi(key, &i) || i >= labels.size() || !value.is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": bad id2label entry \"", key, "\""));
    }
    labels[i] = value.get<std::string>();
  }
  return labels;
}

// The model at --model, with the PEFT adapter at --adapter (if given)
// attached; `labels` receives the label names (the adapter's, else the
// model's).
absl::StatusOr<LoadedModel> LoadWithAdapter(const Flags& flags, const ModelDirInfo& info,
                                            const std::string& dir,
                                            std::vector<std::string>* labels) {
  std::vector<std::string> adapter_labels;
  const std::string adapter = flags.Has("adapter") ? *flags.Required("adapter") : "";
  if (!adapter.empty()) {
    FT_ASSIGN_OR_RETURN(adapter_labels, AdapterLabels(adapter));
  }
  const int64_t num_labels =
      adapter_labels.empty() ? NumLabelsOf(info.config) : static_cast<int64_t>(adapter_labels.size());
  FT_ASSIGN_OR_RETURN(LoadedModel loaded, LoadModelDir(dir, num_labels));
  if (!adapter.empty()) FT_RETURN_IF_ERROR(LoadPeftAdapter(adapter, loaded.model));
  if (!loaded.newly_initialized.empty() && adapter.empty()) {
    std::cerr << "warning: " << dir << ": not in the checkpoint, randomly initialised: "
              << absl::StrJoin(loaded.newly_initialized, ", ") << "\n";
  }
  *labels = adapter_labels.empty() ? LabelNamesOf(loaded.config, num_labels) : adapter_labels;
  return loaded;
}

// merge-adapter: base + PEFT adapter -> a full model directory with the
// adapters folded into their layers (PEFT's merge_and_unload).
absl::Status MergeAdapter(const Flags& flags) {
  FT_ASSIGN_OR_RETURN(std::string dir, flags.Required("model"));
  FT_RETURN_IF_ERROR(flags.Required("adapter").status());
  FT_ASSIGN_OR_RETURN(std::string out, flags.Required("out"));
  FT_ASSIGN_OR_RETURN(ModelDirInfo info, InspectModelDir(dir));
  std::vector<std::string> labels;
  FT_ASSIGN_OR_RETURN(LoadedModel loaded, LoadWithAdapter(flags, info, dir, &labels));
  loaded.model->MergeLora();
  SaveOptions save;
  save.label_names = labels;
  return SaveModelDir(out, loaded.model, *loaded.tokenizer, save);
}

// Each non-blank line of `input` (opened as `in`), parsed and encoded,
// handed to `use` in order; stops at the first error (named by
// "input:line"), and a read failure is DATA_LOSS.
absl::Status ForEachEncodedLine(std::istream& in, const std::string& input,
                                const WordPieceTokenizer& tokenizer, int64_t max_length,
                                const std::function<absl::Status(const Encoding&)>& use) {
  std::string line;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (IsBlank(line)) continue;
    std::string text;
    std::optional<std::string> pair;
    FT_RETURN_IF_ERROR(ParseExample(line, absl::StrCat(input, ":", line_no), &text, &pair));
    FT_RETURN_IF_ERROR(use(pair ? tokenizer.Encode(text, std::string_view(*pair),
                                                   static_cast<int>(max_length))
                                : tokenizer.Encode(text, std::nullopt, static_cast<int>(max_length))));
  }
  if (in.bad()) return absl::DataLossError(absl::StrCat(input, ": read failed"));
  return absl::OkStatus();
}

bool IsMaskedLmConfig(const BertConfig& c) {
  auto it = c.raw.find("architectures");
  if (it == c.raw.end() || !it->is_array()) return false;
  for (const auto& a : *it) {
    if (a.is_string() && a.get<std::string>() == "BertForMaskedLM") return true;
  }
  return false;
}

// predict on a BertForMaskedLM directory: for every [MASK] in each input
// line, the MLM head's prediction (one example at a time, no padding).
absl::Status PredictMasked(const std::string& dir, const std::string& input, int64_t max_length) {
  std::ifstream in(input);
  if (!in) return absl::NotFoundError(absl::StrCat(input, ": cannot open"));
  FT_ASSIGN_OR_RETURN(LoadedModel loaded, LoadModelDir(dir, 0, BertHead::kMaskedLm));
  loaded.model->eval();
  torch::NoGradGuard no_grad;
  const auto& tokens = loaded.tokenizer->tokens();
  const auto mask_it = std::find(tokens.begin(), tokens.end(), "[MASK]");
  if (mask_it == tokens.end()) return absl::FailedPreconditionError(absl::StrCat(dir, ": no [MASK] token"));
  const int64_t mask_id = mask_it - tokens.begin();
  return ForEachEncodedLine(in, input, *loaded.tokenizer, max_length, [&](const Encoding& e) {
    const int64_t t = static_cast<int64_t>(e.ids.size());
    at::Tensor ids = at::empty({1, t}, at::kLong);
    at::Tensor types = at::empty({1, t}, at::kLong);
    for (int64_t j = 0; j < t; ++j) {
      ids[0][j] = e.ids[static_cast<size_t>(j)];
      types[0][j] = e.type_ids[static_cast<size_t>(j)];
    }
    at::Tensor hidden = loaded.model->RunLayers(loaded.model->Embed(ids, types), at::ones({1, t}, at::kLong),
                                                0, loaded.model->num_layers());
    nlohmann::ordered_json masked = nlohmann::ordered_json::array();
    for (int64_t j = 0; j < t; ++j) {
      if (e.ids[static_cast<size_t>(j)] != mask_id) continue;
      at::Tensor logits = loaded.model->MaskedLmLogits(hidden[0][j]).to(at::kDouble);
      const int64_t best = logits.argmax().item<int64_t>();
      masked.push_back({{"position", j},
                        {"argmax", best},
                        {"token", tokens[static_cast<size_t>(best)]},
                        {"max_logit", logits[best].item<double>()},
                        {"logsumexp", at::logsumexp(logits, 0).item<double>()}});
    }
    nlohmann::ordered_json out = {{"masked", masked}};
    std::cout << out.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) << "\n";
    return absl::OkStatus();
  });
}

// apply-delta: base + delta -> the full model directory.
absl::Status ApplyDelta(const Flags& flags) {
  FT_ASSIGN_OR_RETURN(std::string delta, flags.Required("delta"));
  FT_ASSIGN_OR_RETURN(std::string base, flags.Required("base"));
  FT_ASSIGN_OR_RETURN(std::string out, flags.Required("out"));
  FT_ASSIGN_OR_RETURN(ModelDirInfo info, InspectDeltaDir(delta, base, "--base"));
  const bool mlm = IsMaskedLmConfig(info.config);
  const int64_t num_labels = mlm ? 0 : NumLabelsOf(info.config);
  FT_ASSIGN_OR_RETURN(LoadedModel loaded,
                      LoadDeltaModelDir(delta, base, num_labels,
                                        mlm ? BertHead::kMaskedLm : BertHead::kSequenceClassification,
                                        "--base"));
  SaveOptions save;
  // A delta job writes in its base's dtype (job.output_dtype may not differ),
  // so this is the dtype the job's full output would have had.
  // (F32 for a base of mixed dtypes, as a full output writes.)
  if (loaded.source_dtype == "F16" || loaded.source_dtype == "BF16") save.dtype = loaded.source_dtype;
  if (!mlm) save.label_names = LabelNamesOf(loaded.config, num_labels);
  return SaveModelDir(out, loaded.model, *loaded.tokenizer, save);
}

absl::Status Predict(const Flags& flags) {
  FT_ASSIGN_OR_RETURN(std::string dir, flags.Required("model"));
  FT_ASSIGN_OR_RETURN(std::string input, flags.Required("input"));
  FT_ASSIGN_OR_RETURN(int64_t batch_size, flags.Int("batch-size", 32, 1, 65536));
  FT_ASSIGN_OR_RETURN(ModelDirInfo info, InspectModelDir(dir));
  if (IsMaskedLmConfig(info.config)) {
    if (flags.Has("adapter")) return absl::InvalidArgumentError("--adapter: not for a masked-LM model");
    FT_ASSIGN_OR_RETURN(int64_t max_length,
                        flags.Int("max-length", info.config.max_position_embeddings, 2,
                                  info.config.max_position_embeddings));
    return PredictMasked(dir, input, max_length);
  }
  const int64_t max_positions = info.config.max_position_embeddings;
  FT_ASSIGN_OR_RETURN(int64_t max_length, flags.Int("max-length", max_positions, 2, max_positions));
  std::ifstream in(input);
  if (!in) return absl::NotFoundError(absl::StrCat(input, ": cannot open"));

  std::vector<std::string> labels;
  FT_ASSIGN_OR_RETURN(LoadedModel loaded, LoadWithAdapter(flags, info, dir, &labels));
  const int64_t num_labels = static_cast<int64_t>(labels.size());
  loaded.model->eval();
  torch::NoGradGuard no_grad;

  // Examples are read in windows of 16 batches; within a window they run
  // in length order, so batches hold similar lengths and little padding,
  // and results are printed in input order when the window completes.
  const size_t window_size = static_cast<size_t>(batch_size) * 16;
  std::vector<Encoding> window;
  auto run_window = [&]() {
    std::vector<size_t> order(window.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&window](size_t a, size_t b) {
      return window[a].ids.size() < window[b].ids.size();
    });
    std::vector<std::vector<float>> results(window.size());
    for (size_t start = 0; start < order.size(); start += static_cast<size_t>(batch_size)) {
      const size_t stop = std::min(order.size(), start + static_cast<size_t>(batch_size));
      const int64_t b = static_cast<int64_t>(stop - start);
      int64_t t = 0;
      for (size_t i = start; i < stop; ++i) {
        t = std::max<int64_t>(t, static_cast<int64_t>(window[order[i]].ids.size()));
      }
      at::Tensor ids = at::full({b, t}, loaded.tokenizer->pad_id(), at::kLong);
      at::Tensor types = at::zeros({b, t}, at::kLong);
      at::Tensor mask = at::zeros({b, t}, at::kLong);
      auto ids_a = ids.accessor<int64_t, 2>();
      auto types_a = types.accessor<int64_t, 2>();
      auto mask_a = mask.accessor<int64_t, 2>();
      for (int64_t i = 0; i < b; ++i) {
        const Encoding& e = window[order[start + static_cast<size_t>(i)]];
        for (size_t j = 0; j < e.ids.size(); ++j) {
          ids_a[i][j] = e.ids[j];
          types_a[i][j] = e.type_ids[j];
          mask_a[i][j] = 1;
        }
      }
      at::Tensor logits = loaded.model->forward(ids, types, mask).contiguous();
      auto la = logits.accessor<float, 2>();
      for (int64_t i = 0; i < b; ++i) {
        auto& row = results[order[start + static_cast<size_t>(i)]];
        for (int64_t k = 0; k < num_labels; ++k) row.push_back(la[i][k]);
      }
    }
    for (const auto& row : results) {
      const int64_t best = std::max_element(row.begin(), row.end()) - row.begin();
      nlohmann::ordered_json out = {{"logits", std::vector<double>(row.begin(), row.end())},
                                    {"label", labels[best]}};
      std::cout << out.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace)
                << "\n";
    }
    window.clear();
  };

  FT_RETURN_IF_ERROR(
      ForEachEncodedLine(in, input, *loaded.tokenizer, max_length, [&](const Encoding& e) {
        window.push_back(e);
        if (window.size() == window_size) run_window();
        return absl::OkStatus();
      }));
  run_window();
  return absl::OkStatus();
}

std::string OneLine(std::string s) {
  for (char& c : s) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return s;
}

absl::Status System(const Flags& flags) {
  const auto fields = Tuning().LogFields();
  if (flags.Has("json")) {
    nlohmann::json j = nlohmann::json::object();
    for (const auto& [key, value] : fields) j[key] = value;
    std::cout << j.dump() << "\n";
  } else {
    for (const auto& [key, value] : fields) std::cout << key << ": " << value << "\n";
  }
  return absl::OkStatus();
}

int Run(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << kUsage << "\n";
    return 2;
  }
  const std::string command = argv[1];
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h" || arg == "help") {
      std::cout << kHelp;
      return 0;
    }
    if (arg == "--version") {
      std::cout << "freezetune-model " << FREEZETUNE_VERSION << "\n";
      return 0;
    }
  }
  absl::StatusOr<Flags> flags = absl::InvalidArgumentError("");
  absl::Status (*handler)(const Flags&) = nullptr;
  if (command == "init") {
    flags = Flags::Parse(argc, argv,
                         {"out", "vocab", "layers", "hidden", "heads", "intermediate",
                          "max-position", "num-labels", "seed"},
                         {"cased"});
    handler = Init;
  } else if (command == "inspect") {
    flags = Flags::Parse(argc, argv, {"model", "freeze-spec"}, {"json"});
    handler = Inspect;
  } else if (command == "tokenize") {
    flags = Flags::Parse(argc, argv, {"model", "max-length"}, {});
    handler = Tokenize;
  } else if (command == "predict") {
    flags = Flags::Parse(argc, argv, {"model", "adapter", "input", "batch-size", "max-length"},
                         {"no-blas-core-selection"});
    handler = Predict;
  } else if (command == "merge-adapter") {
    flags = Flags::Parse(argc, argv, {"model", "adapter", "out"}, {});
    handler = MergeAdapter;
  } else if (command == "apply-delta") {
    flags = Flags::Parse(argc, argv, {"delta", "base", "out"}, {});
    handler = ApplyDelta;
  } else if (command == "system") {
    flags = Flags::Parse(argc, argv, {}, {"json", "no-blas-core-selection"});
    handler = System;
  } else {
    std::cerr << "freezetune-model: unknown command \"" << command << "\"; " << kUsage << "\n";
    return 2;
  }
  if (!flags.ok()) {
    std::cerr << "freezetune-model " << command << ": " << OneLine(std::string(flags.status().message()))
              << "\n";
    return 2;
  }
  if (command == "predict" || command == "system") {
    base::ProcessTuningOptions tuning_options;
    tuning_options.blas_core_selection = !flags->Has("no-blas-core-selection");
    Tuning() = base::TuneProcess(argv, tuning_options);
    if (Tuning().blas_core.warning) {
      std::cerr << "freezetune-model: warning: BLAS core: " << Tuning().blas_core.reason << "\n";
    }
  }
  absl::Status status;
  try {
    status = handler(*flags);
  } catch (const c10::Error& e) {
    status = absl::InternalError(e.what_without_backtrace());
  } catch (const std::exception& e) {
    status = absl::InternalError(e.what());
  }
  if (!status.ok()) {
    std::cerr << "freezetune-model " << command << ": " << OneLine(std::string(status.message()))
              << "\n";
    // Flag-level problems (a required flag, a bad number) are usage errors.
    return std::string(status.message()).rfind("--", 0) == 0 ? 2 : 1;
  }
  std::cout.flush();
  return std::cout.good() ? 0 : 1;
}

}  // namespace
}  // namespace freezetune::model

int main(int argc, char** argv) { return freezetune::model::Run(argc, argv); }
