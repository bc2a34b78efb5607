// Hugging Face BERT directories <-> BertForSequenceClassification.
#include "server/model/hf_checkpoint.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>
#include <system_error>
#include <utility>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/utils.h>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/status_macros.h"
#include "server/model/atomic_file.h"
#include "server/model/safetensors.h"
#include "server/model/safetensors_format.h"

namespace freezetune::model {
namespace {

std::string Join(const std::string& dir, const char* name) {
  if (!dir.empty() && dir.back() == '/') return dir + name;
  return dir + "/" + name;
}

bool FileExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// Buffers transformers never stores as parameters (older checkpoints carry
// them, int64, newer ones do not), and the MLM decoder, which is tied to the
// word embeddings and cls.predictions.bias.
bool IsIgnoredBuffer(const std::string& name) {
  return name == "bert.embeddings.position_ids" || name == "embeddings.position_ids" ||
         name == "cls.predictions.decoder.weight" || name == "cls.predictions.decoder.bias";
}

std::string ShapeString(at::IntArrayRef shape) {
  return absl::StrCat("[", absl::StrJoin(shape.vec(), ", "), "]");
}

// The model parameter a checkpoint tensor name refers to: as is (BertFor*),
// with "bert." added (BertModel checkpoints), and with TF-era LayerNorm
// gamma/beta renamed, as transformers does.
std::string CanonicalName(std::string name, const std::set<std::string>& model_names) {
  if (absl::EndsWith(name, ".gamma")) {
    name = name.substr(0, name.size() - 6) + ".weight";
  } else if (absl::EndsWith(name, ".beta")) {
    name = name.substr(0, name.size() - 5) + ".bias";
  }
  if (model_names.count(name)) return name;
  if (!absl::StartsWith(name, "bert.") && model_names.count("bert." + name)) {
    return "bert." + name;
  }
  return name;
}

absl::StatusOr<std::string> TorchDtypeName(const std::string& dtype) {
  if (dtype == "F32") return std::string("float32");
  if (dtype == "F16") return std::string("float16");
  if (dtype == "BF16") return std::string("bfloat16");
  return absl::InvalidArgumentError(
      absl::StrCat("dtype: must be F32, F16 or BF16 (got \"", dtype, "\")"));
}

// The dtype of the weights in a header: the common dtype of its float
// tensors, "mixed" if they differ.
std::string HeaderDtype(const SafetensorsHeader& header) {
  std::string dtype;
  for (const auto& t : header.tensors) {
    if (IsIgnoredBuffer(t.name) || !IsFloatWeightDtype(t.dtype)) continue;
    if (dtype.empty()) {
      dtype = t.dtype;
    } else if (dtype != t.dtype) {
      return "mixed";
    }
  }
  return dtype;
}

// Every stored tensor that names an encoder parameter must have the shape
// config.json implies (the head's depends on the label count and is
// re-initialised on a mismatch, so it is not checked), so that a checkpoint
// that disagrees with its config is refused before any job is queued.
absl::Status CheckShapesAgainstConfig(const SafetensorsHeader& header, const BertConfig& config,
                                      const std::string& weights_path) {
  std::map<std::string, std::vector<int64_t>> expected;
  std::set<std::string> names;
  for (const ParameterShape& p : BertParameterShapes(config, /*num_labels=*/1)) {
    if (absl::StartsWith(p.name, "classifier.")) continue;
    expected.emplace(p.name, p.shape);
    names.insert(p.name);
  }
  for (const auto& t : header.tensors) {
    if (IsIgnoredBuffer(t.name)) continue;
    auto it = expected.find(CanonicalName(t.name, names));
    if (it == expected.end() || t.shape == it->second) continue;
    return absl::InvalidArgumentError(absl::StrCat(
        weights_path, ": ", t.name, ": shape [", absl::StrJoin(t.shape, ", "),
        "] in the checkpoint, but config.json implies [", absl::StrJoin(it->second, ", "), "]"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ModelDirInfo> InspectModelDir(const std::string& dir) {
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::NotFoundError(absl::StrCat(dir, ": not a directory"));
  }
  ModelDirInfo info;
  const std::string config_path = Join(dir, "config.json");
  if (!FileExists(config_path)) {
    return absl::NotFoundError(absl::StrCat(config_path, ": file not found"));
  }
  FT_ASSIGN_OR_RETURN(std::string config_text, ReadFileToString(config_path));
  auto config = ParseBertConfig(config_text);
  if (!config.ok()) {
    // ParseBertConfig's messages start with "config.json: "; give the full path.
    return absl::Status(config.status().code(),
                        absl::StrCat(Join(dir, ""), config.status().message()));
  }
  info.config = std::move(*config);

  const std::string tok_path = Join(dir, "tokenizer_config.json");
  if (FileExists(tok_path)) {
    FT_ASSIGN_OR_RETURN(std::string text, ReadFileToString(tok_path));
    auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(tok_path, ": not a JSON object"));
    }
    if (auto it = j.find("do_lower_case"); it != j.end() && !it->is_null()) {
      if (!it->is_boolean()) {
        return absl::InvalidArgumentError(absl::StrCat(tok_path, ": do_lower_case: must be a boolean"));
      }
      info.do_lower_case = it->get<bool>();
    }
  }
  const std::string vocab_path = Join(dir, "vocab.txt");
  if (!FileExists(vocab_path)) {
    return absl::NotFoundError(absl::StrCat(vocab_path, ": file not found"));
  }
  const std::string weights_path = Join(dir, "model.safetensors");
  if (!FileExists(weights_path)) {
    std::string hint;
    if (FileExists(Join(dir, "pytorch_model.bin"))) {
      hint = " (pytorch_model.bin is pickle-based and never loaded; convert it to safetensors)";
    }
    return absl::NotFoundError(absl::StrCat(weights_path, ": file not found", hint));
  }
  FT_ASSIGN_OR_RETURN(SafetensorsHeader header, ReadSafetensorsHeader(weights_path));
  info.source_dtype = HeaderDtype(header);
  FT_RETURN_IF_ERROR(CheckShapesAgainstConfig(header, info.config, weights_path));
  return info;
}

absl::StatusOr<LoadedModel> LoadModelDir(const std::string& dir, int64_t num_labels,
                                         BertHead head) {
  if (head == BertHead::kMaskedLm) num_labels = 0;
  if (head == BertHead::kSequenceClassification && num_labels < 1) {
    return absl::InvalidArgumentError(absl::StrCat("num_labels: must be >= 1 (got ", num_labels, ")"));
  }
  FT_ASSIGN_OR_RETURN(ModelDirInfo info, InspectModelDir(dir));
  const std::string vocab_path = Join(dir, "vocab.txt");
  FT_ASSIGN_OR_RETURN(WordPieceTokenizer tokenizer,
                      WordPieceTokenizer::FromVocabFile(vocab_path, info.do_lower_case));
  if (tokenizer.vocab_size() > info.config.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(vocab_path, ": ", tokenizer.vocab_size(),
                                                   " tokens exceed config vocab_size ",
                                                   info.config.vocab_size));
  }
  const std::string weights_path = Join(dir, "model.safetensors");

  LoadedModel out;
  try {
    out.config = info.config;
    out.model = BertForSequenceClassification(info.config, num_labels, head);
    std::map<std::string, torch::Tensor> params;
    for (const auto& p : out.model->named_parameters()) params.emplace(p.key(), p.value());
    std::set<std::string> model_names;
    for (const auto& [name, value] : params) model_names.insert(name);

    // Copy each stored tensor straight from the mapped file into its
    // parameter (converting F16/BF16 on the way): no intermediate copy.
    std::set<std::string> loaded, mismatched_head;
    int64_t loaded_encoder = 0;
    torch::NoGradGuard no_grad;
    auto visit = [&](const std::string& name, const std::string& dtype,
                     const torch::Tensor& stored) -> absl::Status {
      if (out.source_dtype.empty()) {
        out.source_dtype = dtype;
      } else if (out.source_dtype != dtype) {
        out.source_dtype = "mixed";
      }
      std::string canonical = CanonicalName(name, model_names);
      auto it = params.find(canonical);
      if (it == params.end() || loaded.count(canonical) || mismatched_head.count(canonical)) {
        out.unused.push_back(name);  // e.g. cls.predictions.* of BertForPreTraining
        return absl::OkStatus();
      }
      torch::Tensor& param = it->second;
      if (!stored.sizes().equals(param.sizes())) {
        if (absl::StartsWith(canonical, "classifier.")) {
          // A head trained for another label set: start it afresh, as
          // transformers does with ignore_mismatched_sizes.
          mismatched_head.insert(canonical);
          return absl::OkStatus();
        }
        return absl::InvalidArgumentError(absl::StrCat(
            weights_path, ": ", canonical, ": shape ", ShapeString(stored.sizes()),
            " in checkpoint, model expects ", ShapeString(param.sizes())));
      }
      param.copy_(stored);
      loaded.insert(canonical);
      if (absl::StartsWith(canonical, "bert.")) ++loaded_encoder;
      return absl::OkStatus();
    };
    SafetensorsReadOptions read_options;
    read_options.skip = IsIgnoredBuffer;
    auto header = VisitSafetensors(weights_path, read_options, visit);
    if (!header.ok()) return header.status();
    if (loaded_encoder == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(weights_path, ": no BERT parameters found (", header->tensors.size(),
                       " tensors, none named like bert.embeddings.* or encoder.layer.*)"));
    }
    bool head_missing = false;
    for (const auto& p : out.model->named_parameters()) {
      if (loaded.count(p.key())) continue;
      if (absl::StartsWith(p.key(), "classifier.")) {
        head_missing = true;
      } else {
        out.newly_initialized.push_back(p.key());
      }
    }
    // The constructor initialised everything; re-draw the whole head if any
    // part of it was not loaded, so it is never half old, half new.
    if (head_missing) {
      out.model->InitClassifier();
      out.newly_initialized.push_back("classifier.weight");
      out.newly_initialized.push_back("classifier.bias");
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat(dir, ": ", e.what_without_backtrace()));
  }
  out.tokenizer = std::make_unique<WordPieceTokenizer>(std::move(tokenizer));
  return out;
}

absl::StatusOr<LabelMaps> MakeLabelMaps(const std::vector<std::string>& label_names,
                                        int64_t num_labels) {
  std::vector<std::string> labels = label_names;
  if (labels.empty()) {
    for (int64_t i = 0; i < num_labels; ++i) labels.push_back(absl::StrCat("LABEL_", i));
  }
  if (static_cast<int64_t>(labels.size()) != num_labels) {
    return absl::InvalidArgumentError(absl::StrCat("label_names: ", labels.size(),
                                                   " names for ", num_labels, " labels"));
  }
  LabelMaps maps{nlohmann::json::object(), nlohmann::json::object()};
  for (size_t i = 0; i < labels.size(); ++i) {
    if (maps.label2id.contains(labels[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("label_names[", i, "]: duplicate label \"", labels[i], "\""));
    }
    maps.id2label[std::to_string(i)] = labels[i];
    maps.label2id[labels[i]] = i;
  }
  return maps;
}

absl::Status CreateOutputDir(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat(dir, ": cannot create: ", ec.message()));
  return absl::OkStatus();
}

absl::Status SaveTokenizerFiles(const std::string& dir, const WordPieceTokenizer& tokenizer,
                                int64_t model_max_length) {
  std::string vocab;
  for (const std::string& token : tokenizer.tokens()) absl::StrAppend(&vocab, token, "\n");
  FT_RETURN_IF_ERROR(WriteFileAtomically(Join(dir, "vocab.txt"), vocab));
  nlohmann::json tok_config = {{"do_lower_case", tokenizer.do_lower_case()},
                               {"tokenizer_class", "BertTokenizer"},
                               {"model_max_length", model_max_length}};
  return WriteFileAtomically(Join(dir, "tokenizer_config.json"), tok_config.dump(2) + "\n");
}

absl::Status SaveJsonFiles(const std::string& dir, const nlohmann::json& freeze_plan,
                           const nlohmann::json& metrics) {
  if (!freeze_plan.is_null()) {
    FT_RETURN_IF_ERROR(
        WriteFileAtomically(Join(dir, "freeze_plan.json"), freeze_plan.dump(2) + "\n"));
  }
  if (!metrics.is_null()) {
    FT_RETURN_IF_ERROR(WriteFileAtomically(Join(dir, "metrics.json"), metrics.dump(2) + "\n"));
  }
  return absl::OkStatus();
}

absl::Status SaveModelDir(const std::string& dir, BertForSequenceClassification& model,
                          const WordPieceTokenizer& tokenizer, const SaveOptions& options) {
  FT_ASSIGN_OR_RETURN(std::string torch_dtype, TorchDtypeName(options.dtype));
  if (!model->LoraLayers().empty()) {
    return absl::FailedPreconditionError(
        "model carries LoRA adapters: merge them (MergeLora) or save them as a PEFT adapter");
  }
  FT_ASSIGN_OR_RETURN(LabelMaps labels, MakeLabelMaps(options.label_names, model->num_labels()));
  FT_RETURN_IF_ERROR(CreateOutputDir(dir));

  const BertConfig& c = model->config();
  nlohmann::json config = c.raw.is_object() ? c.raw : nlohmann::json::object();
  // The struct is what the model was built from; make the file agree with it.
  config["vocab_size"] = c.vocab_size;
  config["hidden_size"] = c.hidden_size;
  config["num_hidden_layers"] = c.num_hidden_layers;
  config["num_attention_heads"] = c.num_attention_heads;
  config["intermediate_size"] = c.intermediate_size;
  config["hidden_act"] = c.hidden_act;
  config["hidden_dropout_prob"] = c.hidden_dropout_prob;
  config["attention_probs_dropout_prob"] = c.attention_probs_dropout_prob;
  config["max_position_embeddings"] = c.max_position_embeddings;
  config["type_vocab_size"] = c.type_vocab_size;
  config["layer_norm_eps"] = c.layer_norm_eps;
  config["initializer_range"] = c.initializer_range;
  config["pad_token_id"] = c.pad_token_id;
  config["model_type"] = "bert";
  // transformers derives num_labels from id2label; a stale num_labels would
  // only conflict with it.
  config.erase("num_labels");
  if (model->head() == BertHead::kMaskedLm) {
    // Labels of an earlier classification base mean nothing here.
    config["architectures"] = {"BertForMaskedLM"};
    config.erase("id2label");
    config.erase("label2id");
  } else {
    config["architectures"] = {"BertForSequenceClassification"};
    config["id2label"] = labels.id2label;
    config["label2id"] = labels.label2id;
  }
  config["torch_dtype"] = torch_dtype;

  try {
    NamedTensors tensors;
    for (const auto& p : model->named_parameters()) {
      if (!options.only_parameters.empty() && options.only_parameters.count(p.key()) == 0) continue;
      tensors.emplace_back(p.key(), p.value());
    }
    // transformers refuses safetensors files without format metadata.
    FT_RETURN_IF_ERROR(WriteSafetensors(Join(dir, options.weights_file.c_str()), tensors,
                                        options.dtype, {{"format", "pt"}}));
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat(dir, ": ", e.what_without_backtrace()));
  }
  FT_RETURN_IF_ERROR(WriteFileAtomically(Join(dir, "config.json"), config.dump(2) + "\n"));
  FT_RETURN_IF_ERROR(SaveTokenizerFiles(dir, tokenizer, c.max_position_embeddings));
  FT_RETURN_IF_ERROR(SaveJsonFiles(dir, options.freeze_plan, options.metrics));
  return absl::OkStatus();
}

}  // namespace freezetune::model
