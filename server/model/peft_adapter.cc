// PEFT LoRA adapter directories (see peft_adapter.h).
#include "server/model/peft_adapter.h"

#include <utility>

#include <c10/util/Exception.h>
#include <torch/utils.h>

#include <cstring>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "re2/re2.h"
#include "server/common/status_macros.h"
#include "server/model/atomic_file.h"
#include "server/model/hf_checkpoint.h"
#include "server/model/module_tree.h"
#include "server/model/safetensors.h"

namespace freezetune::model {
namespace {

constexpr char kPrefix[] = "base_model.model.";

std::string Join(const std::string& dir, const char* name) {
  if (!dir.empty() && dir.back() == '/') return dir + name;
  return dir + "/" + name;
}

}  // namespace

std::string PeftKey(const std::string& name, const std::set<std::string>& adapted) {
  const std::string owner(OwningModule(name));
  if (adapted.count(owner) > 0) {
    return absl::StrCat(kPrefix, owner, ".base_layer", name.substr(owner.size()));
  }
  return absl::StrCat(kPrefix, name);
}

absl::Status SavePeftAdapter(const std::string& dir, BertForSequenceClassification& model,
                             const WordPieceTokenizer& tokenizer, const PeftAdapterOptions& options) {
  const auto layers = model->LoraLayers();
  if (layers.empty()) return absl::InvalidArgumentError("model carries no LoRA adapters");
  const int64_t rank = layers.front().second->rank();
  std::set<std::string> adapted;
  for (const auto& [name, layer] : layers) {
    if (layer->rank() != rank) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": rank ", layer->rank(), ", others ", rank));
    }
    adapted.insert(name);
  }
  FT_ASSIGN_OR_RETURN(LabelMaps labels, MakeLabelMaps(options.label_names, model->num_labels()));
  FT_RETURN_IF_ERROR(CreateOutputDir(dir));

  // Adapters, then the other saved parameters, in model order.
  NamedTensors tensors;
  std::set<std::string> found;
  bool saves_bias = false;
  for (const auto& p : model->named_parameters()) {
    const std::string& name = p.key();
    const std::string owner(OwningModule(name));
    const bool adapter = adapted.count(std::string(OwningModule(owner))) > 0 &&
                         (absl::EndsWith(owner, ".lora_A") || absl::EndsWith(owner, ".lora_B"));
    if (adapter) {
      tensors.emplace_back(absl::StrCat(kPrefix, name), p.value());
      continue;
    }
    if (options.saved_parameters.count(name) == 0) continue;
    found.insert(name);
    tensors.emplace_back(PeftKey(name, adapted), p.value());
    bool in_module_to_save = false;
    for (const std::string& m : options.modules_to_save) {
      if (InModule(name, m)) in_module_to_save = true;
    }
    if (!in_module_to_save && absl::EndsWith(name, ".bias")) saves_bias = true;
  }
  for (const std::string& name : options.saved_parameters) {
    if (found.count(name) == 0) {
      return absl::InvalidArgumentError(absl::StrCat("saved parameter ", name, " is not in the model"));
    }
  }
  try {
    FT_RETURN_IF_ERROR(WriteSafetensors(Join(dir, "adapter_model.safetensors"), tensors, "F32",
                                        {{"format", "pt"}}));
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat(dir, ": ", e.what_without_backtrace()));
  }

  // LoraConfig as PEFT serialises it; a string target_modules is matched
  // with re.fullmatch against module names, as RE2 full match here.
  nlohmann::json config = {
      {"peft_type", "LORA"},
      {"task_type", options.task_type},
      {"base_model_name_or_path", options.base_model_name_or_path},
      {"r", rank},
      {"lora_alpha", options.alpha},
      {"lora_dropout", options.dropout},
      {"target_modules", options.target_modules},
      {"modules_to_save", options.modules_to_save},
      // "all": biases outside modules_to_save were trained and are in the file.
      {"bias", saves_bias ? "all" : "none"},
      {"fan_in_fan_out", false},
      {"inference_mode", true},
      {"init_lora_weights", true},
      {"use_rslora", false},
      {"use_dora", false},
      {"layers_to_transform", nullptr},
      {"layers_pattern", nullptr},
      {"rank_pattern", nlohmann::json::object()},
      {"alpha_pattern", nlohmann::json::object()},
      {"revision", nullptr},
  };
  FT_RETURN_IF_ERROR(WriteFileAtomically(Join(dir, "adapter_config.json"), config.dump(2) + "\n"));
  nlohmann::json task = {{"id2label", labels.id2label},
                         {"label2id", labels.label2id},
                         {"num_labels", model->num_labels()},
                         {"base_model_name_or_path", options.base_model_name_or_path}};
  FT_RETURN_IF_ERROR(WriteFileAtomically(Join(dir, "task.json"), task.dump(2) + "\n"));
  FT_RETURN_IF_ERROR(SaveTokenizerFiles(dir, tokenizer, model->config().max_position_embeddings));
  return SaveJsonFiles(dir, options.freeze_plan, options.metrics);
}

absl::Status LoadPeftAdapter(const std::string& dir, BertForSequenceClassification& model) {
  const std::string config_path = Join(dir, "adapter_config.json");
  FT_ASSIGN_OR_RETURN(const std::string text, ReadFileToString(config_path));
  const nlohmann::json config = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  auto bad = [&config_path](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(config_path, ": ", what));
  };
  if (!config.is_object()) return bad("not a JSON object");
  if (config.value("peft_type", std::string()) != "LORA") return bad("peft_type: only LORA is supported");
  for (const char* flag : {"use_dora", "use_rslora", "fan_in_fan_out"}) {
    if (config.contains(flag) && config[flag].is_boolean() && config[flag].get<bool>()) {
      return bad(absl::StrCat(flag, ": not supported"));
    }
  }
  for (const char* pattern : {"rank_pattern", "alpha_pattern"}) {
    if (config.contains(pattern) && config[pattern].is_object() && !config[pattern].empty()) {
      return bad(absl::StrCat(pattern, ": per-module ranks are not supported"));
    }
  }
  if (!config.contains("r") || !config["r"].is_number_integer() || config["r"].get<int64_t>() < 1) {
    return bad("r: must be an integer >= 1");
  }
  const int64_t rank = config["r"].get<int64_t>();
  const double alpha = config.contains("lora_alpha") && config["lora_alpha"].is_number()
                           ? config["lora_alpha"].get<double>()
                           : 8.0;  // PEFT's default
  const double dropout = config.contains("lora_dropout") && config["lora_dropout"].is_number()
                             ? config["lora_dropout"].get<double>()
                             : 0.0;
  if (!(alpha > 0.0)) return bad("lora_alpha: must be > 0");
  if (!(dropout >= 0.0 && dropout < 1.0)) return bad("lora_dropout: must be in [0, 1)");

  // Which modules: PEFT's rules for a string (re.fullmatch) or a list
  // (exact name or "." + suffix).
  std::vector<std::string> module_names;
  for (const auto& item : model->named_modules("", /*include_self=*/false)) {
    module_names.push_back(item.key());
  }
  std::vector<std::string> targets;
  const nlohmann::json& tm = config.contains("target_modules") ? config["target_modules"] : nlohmann::json();
  if (tm.is_string()) {
    RE2::Options options;
    options.set_log_errors(false);
    RE2 re(tm.get<std::string>(), options);
    if (!re.ok()) return bad(absl::StrCat("target_modules: invalid regex: ", re.error()));
    for (const std::string& m : module_names) {
      if (RE2::FullMatch(m, re)) targets.push_back(m);
    }
  } else if (tm.is_array()) {
    for (const std::string& m : module_names) {
      for (const auto& entry : tm) {
        if (!entry.is_string()) return bad("target_modules: entries must be strings");
        const std::string t = entry.get<std::string>();
        if (m == t || absl::EndsWith(m, "." + t)) {
          targets.push_back(m);
          break;
        }
      }
    }
  } else {
    return bad("target_modules: must be a string or a list of strings");
  }
  if (targets.empty()) return bad("target_modules: matches no module of the model");
  try {
    model->AttachLora(targets, rank, alpha, dropout);
  } catch (const c10::Error& e) {
    return bad(absl::StrCat("target_modules: ", e.what_without_backtrace()));
  }

  std::map<std::string, torch::Tensor> params;
  for (const auto& p : model->named_parameters()) params.emplace(p.key(), p.value());
  const std::string weights_path = Join(dir, "adapter_model.safetensors");
  std::set<std::string> loaded;
  torch::NoGradGuard no_grad;
  auto visit = [&](const std::string& key, const std::string&, const torch::Tensor& stored) -> absl::Status {
    std::string name = key;
    if (absl::StartsWith(name, kPrefix)) name = name.substr(sizeof(kPrefix) - 1);
    const size_t base_layer = name.find(".base_layer.");
    if (base_layer != std::string::npos) name.erase(base_layer, std::strlen(".base_layer"));
    auto it = params.find(name);
    if (it == params.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat(weights_path, ": ", key, " names no parameter of the model"));
    }
    if (!stored.sizes().equals(it->second.sizes())) {
      return absl::InvalidArgumentError(absl::StrCat(weights_path, ": ", key, ": shape mismatch"));
    }
    it->second.copy_(stored);
    loaded.insert(name);
    return absl::OkStatus();
  };
  try {
    FT_RETURN_IF_ERROR(VisitSafetensors(weights_path, SafetensorsReadOptions{}, visit).status());
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat(weights_path, ": ", e.what_without_backtrace()));
  }
  for (const std::string& t : targets) {
    for (const char* suffix : {".lora_A.weight", ".lora_B.weight"}) {
      if (loaded.count(t + suffix) == 0) {
        return absl::InvalidArgumentError(
            absl::StrCat(weights_path, ": no ", kPrefix, t, suffix));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace freezetune::model
