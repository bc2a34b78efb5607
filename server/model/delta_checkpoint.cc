// Delta checkpoints (see delta_checkpoint.h).
#include "server/model/delta_checkpoint.h"

#include <sys/stat.h>

#include <algorithm>
#include <utility>

#include <c10/util/Exception.h>
#include <torch/utils.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/common/status_macros.h"
#include "server/model/atomic_file.h"
#include "server/model/file_digest.h"
#include "server/model/safetensors.h"

namespace freezetune::model {
namespace {

constexpr char kFormat[] = "freezetune-delta";

std::string Join(const std::string& dir, const std::string& name) {
  if (!dir.empty() && dir.back() == '/') return dir + name;
  return dir + "/" + name;
}

absl::string_view AV(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// The delta's config.json may differ from its base's only in the head's
// labels: anything that shapes or computes the encoder must be the base's.
absl::Status CheckSameEncoder(const BertConfig& delta, const BertConfig& base,
                              const std::string& path) {
  auto differs = [&path](const char* field) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", field, " differs from the base's config.json"));
  };
  if (delta.vocab_size != base.vocab_size) return differs("vocab_size");
  if (delta.hidden_size != base.hidden_size) return differs("hidden_size");
  if (delta.num_hidden_layers != base.num_hidden_layers) return differs("num_hidden_layers");
  if (delta.num_attention_heads != base.num_attention_heads) return differs("num_attention_heads");
  if (delta.intermediate_size != base.intermediate_size) return differs("intermediate_size");
  if (delta.hidden_act != base.hidden_act) return differs("hidden_act");
  if (delta.max_position_embeddings != base.max_position_embeddings) {
    return differs("max_position_embeddings");
  }
  if (delta.type_vocab_size != base.type_vocab_size) return differs("type_vocab_size");
  if (delta.layer_norm_eps != base.layer_norm_eps) return differs("layer_norm_eps");
  if (delta.pad_token_id != base.pad_token_id) return differs("pad_token_id");
  return absl::OkStatus();
}

}  // namespace

bool IsDeltaDir(const std::string& dir) {
  struct stat st;
  return ::stat(Join(dir, "delta.json").c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

absl::StatusOr<DeltaManifest> ReadDeltaManifest(const std::string& dir) {
  const std::string path = Join(dir, "delta.json");
  FT_ASSIGN_OR_RETURN(const std::string text, ReadFileToString(path));
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  auto bad = [&path](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
  };
  if (!j.is_object() || j.value("format", std::string()) != kFormat) {
    return bad(absl::StrCat("not a ", kFormat, " manifest"));
  }
  if (!j.contains("version") || j["version"] != 1) return bad("unsupported version");
  DeltaManifest m;
  if (!j.contains("base") || !j["base"].is_object() || !j["base"].contains("sha256") ||
      !j["base"]["sha256"].is_object()) {
    return bad("base.sha256: missing");
  }
  m.base_name = j["base"].value("name", std::string());
  for (const std::string& file : DeltaBaseFiles()) {
    const auto& digests = j["base"]["sha256"];
    if (!digests.contains(file) || !digests[file].is_string() || digests[file].get<std::string>().size() != 64) {
      return bad(absl::StrCat("base.sha256.", file, ": missing or not a SHA-256 hex digest"));
    }
    m.sha256[file] = digests[file].get<std::string>();
  }
  if (!j.contains("tensors") || !j["tensors"].is_array()) return bad("tensors: missing");
  for (const auto& t : j["tensors"]) {
    if (!t.is_string()) return bad("tensors: entries must be names");
    m.tensors.push_back(t.get<std::string>());
  }
  return m;
}

absl::Status VerifyDeltaBase(const DeltaManifest& manifest, const std::string& base_dir,
                             std::string_view field) {
  for (const std::string& file : DeltaBaseFiles()) {
    const std::string path = Join(base_dir, file);
    absl::StatusOr<std::string> digest = Sha256File(path);
    if (!digest.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(AV(field), ": ", path, " is not readable, so the delta's base (",
                       manifest.base_name, ") cannot be checked: ", digest.status().message()));
    }
    const std::string& want = manifest.sha256.at(file);
    if (*digest != want) {
      return absl::InvalidArgumentError(absl::StrCat(
          AV(field), ": not the base this delta was made from: ", path, " has SHA-256 ", *digest,
          ", the delta needs ", want, " (recorded base: ", manifest.base_name, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status SaveDeltaDir(const std::string& dir, BertForSequenceClassification& model,
                          const WordPieceTokenizer& tokenizer, const SaveOptions& options,
                          const std::set<std::string>& changed, const std::string& base_dir,
                          const std::string& base_name) {
  std::set<std::string> names;
  for (const auto& p : model->named_parameters()) names.insert(p.key());
  for (const std::string& n : changed) {
    if (names.count(n) == 0) {
      return absl::InvalidArgumentError(absl::StrCat("delta tensor ", n, " is not a model parameter"));
    }
  }
  nlohmann::json digests = nlohmann::json::object();
  for (const std::string& file : DeltaBaseFiles()) {
    FT_ASSIGN_OR_RETURN(digests[file], Sha256File(Join(base_dir, file)));
  }
  SaveOptions delta = options;
  delta.weights_file = "delta.safetensors";
  delta.only_parameters = changed;
  FT_RETURN_IF_ERROR(SaveModelDir(dir, model, tokenizer, delta));
  std::vector<std::string> tensors;
  for (const auto& p : model->named_parameters()) {
    if (changed.count(p.key())) tensors.push_back(p.key());
  }
  const nlohmann::json manifest = {{"format", kFormat},
                                   {"version", 1},
                                   {"base", {{"name", base_name}, {"sha256", digests}}},
                                   {"tensors", tensors}};
  // Written last: a directory with delta.json is complete.
  return WriteFileAtomically(Join(dir, "delta.json"), manifest.dump(2) + "\n");
}

absl::StatusOr<ModelDirInfo> InspectDeltaDir(const std::string& dir, const std::string& base_dir,
                                             std::string_view field) {
  FT_ASSIGN_OR_RETURN(const DeltaManifest manifest, ReadDeltaManifest(dir));
  ModelDirInfo info;
  if (!base_dir.empty()) {
    FT_RETURN_IF_ERROR(VerifyDeltaBase(manifest, base_dir, field));
    FT_ASSIGN_OR_RETURN(info, InspectModelDir(base_dir));
  } else {
    info.source_dtype = "F32";
    const std::string tok_path = Join(dir, "tokenizer_config.json");
    struct stat st;
    if (::stat(tok_path.c_str(), &st) == 0) {
      FT_ASSIGN_OR_RETURN(const std::string tok, ReadFileToString(tok_path));
      const nlohmann::json j = nlohmann::json::parse(tok, nullptr, /*allow_exceptions=*/false);
      if (j.is_object() && j.contains("do_lower_case") && j["do_lower_case"].is_boolean()) {
        info.do_lower_case = j["do_lower_case"].get<bool>();
      }
    }
  }
  const std::string config_path = Join(dir, "config.json");
  FT_ASSIGN_OR_RETURN(const std::string text, ReadFileToString(config_path));
  FT_ASSIGN_OR_RETURN(BertConfig config, ParseBertConfig(text));
  if (!base_dir.empty()) FT_RETURN_IF_ERROR(CheckSameEncoder(config, info.config, config_path));
  info.config = std::move(config);
  return info;
}

absl::StatusOr<LoadedModel> LoadDeltaModelDir(const std::string& dir, const std::string& base_dir,
                                              int64_t num_labels, BertHead head,
                                              std::string_view field) {
  FT_ASSIGN_OR_RETURN(const DeltaManifest manifest, ReadDeltaManifest(dir));
  FT_RETURN_IF_ERROR(VerifyDeltaBase(manifest, base_dir, field));
  FT_ASSIGN_OR_RETURN(LoadedModel loaded, LoadModelDir(base_dir, num_labels, head));
  std::map<std::string, torch::Tensor> params;
  for (const auto& p : loaded.model->named_parameters()) params.emplace(p.key(), p.value());
  const std::string path = Join(dir, "delta.safetensors");
  const std::set<std::string> listed(manifest.tensors.begin(), manifest.tensors.end());
  std::set<std::string> seen, applied;
  torch::NoGradGuard no_grad;
  auto visit = [&](const std::string& name, const std::string&, const torch::Tensor& stored) -> absl::Status {
    if (listed.count(name) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor ", name, " is not listed in delta.json"));
    }
    seen.insert(name);
    auto it = params.find(name);
    if (it == params.end()) {
      loaded.unused.push_back(name);  // e.g. an MLM head when loading for classification
      return absl::OkStatus();
    }
    if (!stored.sizes().equals(it->second.sizes())) {
      if (absl::StartsWith(name, "classifier.")) return absl::OkStatus();  // another label set
      return absl::InvalidArgumentError(absl::StrCat(path, ": ", name, ": shape does not fit the base"));
    }
    it->second.copy_(stored);
    applied.insert(name);
    return absl::OkStatus();
  };
  try {
    FT_RETURN_IF_ERROR(VisitSafetensors(path, SafetensorsReadOptions{}, visit).status());
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat(path, ": ", e.what_without_backtrace()));
  }
  for (const std::string& name : listed) {
    if (seen.count(name) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor ", name, " is listed in delta.json but not stored"));
    }
  }
  auto& fresh = loaded.newly_initialized;
  fresh.erase(std::remove_if(fresh.begin(), fresh.end(),
                             [&](const std::string& n) { return applied.count(n) > 0; }),
              fresh.end());
  // The delta's own config (its labels) describes the result.
  const std::string config_path = Join(dir, "config.json");
  FT_ASSIGN_OR_RETURN(const std::string text, ReadFileToString(config_path));
  FT_ASSIGN_OR_RETURN(BertConfig config, ParseBertConfig(text));
  FT_RETURN_IF_ERROR(CheckSameEncoder(config, loaded.config, config_path));
  loaded.config = std::move(config);
  return loaded;
}

}  // namespace freezetune::model
