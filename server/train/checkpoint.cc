// Resumable checkpoints (see checkpoint.h).
#include "server/train/checkpoint.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "server/common/status_macros.h"
#include "server/model/atomic_file.h"

namespace freezetune::train {
namespace {

namespace fs = std::filesystem;

constexpr int kFormatVersion = 1;
constexpr const char* kPrefix = "step-";
constexpr const char* kPartialSuffix = ".partial";

std::string ProtoToBase64(const google::protobuf::MessageLite& m) {
  return absl::Base64Escape(m.SerializeAsString());
}

bool ProtoFromBase64(const nlohmann::json& j, google::protobuf::MessageLite* m) {
  if (!j.is_string()) return false;
  std::string bytes;
  return absl::Base64Unescape(j.get<std::string>(), &bytes) && m->ParseFromString(bytes);
}

// Step number of a complete checkpoint directory name, or -1.
int64_t StepOf(const std::string& name) {
  if (name.rfind(kPrefix, 0) != 0) return -1;
  int64_t step = -1;
  if (!absl::SimpleAtoi(name.substr(5), &step)) return -1;
  return step;
}

absl::Status DataLoss(const std::string& dir, std::string_view reason) {
  return absl::DataLossError(
      absl::StrCat("checkpoint ", dir, ": ", absl::string_view(reason.data(), reason.size())));
}

}  // namespace

absl::StatusOr<std::string> WriteCheckpoint(const std::string& checkpoint_dir,
                                            const CheckpointState& state, int keep_last) {
  const std::string name = absl::StrFormat("%s%012d", kPrefix, state.step);
  const fs::path final_dir = fs::path(checkpoint_dir) / name;
  const fs::path partial = fs::path(checkpoint_dir) / (name + kPartialSuffix);
  std::error_code ec;
  fs::remove_all(partial, ec);
  fs::create_directories(partial, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot create checkpoint directory ", partial.string(), ": ", ec.message()));
  }

  model::NamedTensors moments;
  nlohmann::json optimizer_steps = nlohmann::json::object();
  for (const auto& [param, m] : state.optimizer) {
    moments.emplace_back("exp_avg/" + param, m.exp_avg);
    moments.emplace_back("exp_avg_sq/" + param, m.exp_avg_sq);
    optimizer_steps[param] = m.step;
  }
  FT_RETURN_IF_ERROR(model::WriteSafetensors((partial / "weights.safetensors").string(), state.weights));
  if (!moments.empty()) {
    FT_RETURN_IF_ERROR(model::WriteSafetensors((partial / "optimizer.safetensors").string(), moments));
  }
  if (state.has_best && !state.best_weights.empty()) {
    FT_RETURN_IF_ERROR(
        model::WriteSafetensors((partial / "best.safetensors").string(), state.best_weights));
  }
  nlohmann::json history = nlohmann::json::array();
  for (const auto& m : state.history) history.push_back(ProtoToBase64(m));
  nlohmann::json j{{"version", kFormatVersion},
                   {"step", state.step},
                   {"epoch", state.epoch},
                   {"next_micro", state.next_micro},
                   {"stages_applied", state.stages_applied},
                   {"evals_without_improvement", state.evals_without_improvement},
                   {"last_eval_step", state.last_eval_step},
                   {"has_best", state.has_best},
                   {"best_eval", ProtoToBase64(state.best_eval)},
                   {"final_eval", ProtoToBase64(state.final_eval)},
                   {"history", std::move(history)},
                   {"rng_state", absl::Base64Escape(state.rng_state)},
                   {"parameter_names", state.parameter_names},
                   {"optimizer_steps", std::move(optimizer_steps)},
                   {"has_optimizer", !moments.empty()},
                   {"has_best_weights", state.has_best && !state.best_weights.empty()}};
  FT_RETURN_IF_ERROR(model::WriteFileAtomically((partial / "state.json").string(), j.dump()));

  fs::remove_all(final_dir, ec);
  fs::rename(partial, final_dir, ec);
  if (ec) {
    return absl::InternalError(absl::StrCat("cannot publish checkpoint ", final_dir.string(), ": ",
                                            ec.message()));
  }

  // Prune: keep the newest `keep_last` complete checkpoints; drop partials.
  std::vector<std::pair<int64_t, fs::path>> complete;
  for (const auto& entry : fs::directory_iterator(checkpoint_dir, ec)) {
    const std::string n = entry.path().filename().string();
    if (n.size() > 8 && n.compare(n.size() - 8, 8, kPartialSuffix) == 0 &&
        entry.path() != partial) {
      std::error_code ignored;
      fs::remove_all(entry.path(), ignored);
      continue;
    }
    const int64_t s = StepOf(n);
    if (s >= 0) complete.emplace_back(s, entry.path());
  }
  std::sort(complete.begin(), complete.end());
  for (size_t i = 0; i + static_cast<size_t>(std::max(keep_last, 1)) < complete.size(); ++i) {
    std::error_code ignored;
    fs::remove_all(complete[i].second, ignored);
  }
  return final_dir.string();
}

absl::StatusOr<std::optional<CheckpointState>> ReadLatestCheckpoint(
    const std::string& checkpoint_dir) {
  std::error_code ec;
  if (checkpoint_dir.empty() || !fs::is_directory(checkpoint_dir, ec)) return std::nullopt;
  int64_t best_step = -1;
  fs::path dir;
  for (const auto& entry : fs::directory_iterator(checkpoint_dir, ec)) {
    const int64_t s = StepOf(entry.path().filename().string());
    if (s > best_step && fs::exists(entry.path() / "state.json")) {
      best_step = s;
      dir = entry.path();
    }
  }
  if (best_step < 0) return std::nullopt;
  const std::string d = dir.string();

  FT_ASSIGN_OR_RETURN(const std::string text, model::ReadFileToString((dir / "state.json").string()));
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || j.value("version", 0) != kFormatVersion) {
    return DataLoss(d, "state.json is not a version 1 checkpoint state");
  }
  CheckpointState s;
  try {
    s.step = j.at("step").get<int64_t>();
    s.epoch = j.at("epoch").get<int>();
    s.next_micro = j.at("next_micro").get<int64_t>();
    s.stages_applied = j.at("stages_applied").get<std::vector<bool>>();
    s.evals_without_improvement = j.at("evals_without_improvement").get<int>();
    s.last_eval_step = j.at("last_eval_step").get<int64_t>();
    s.has_best = j.at("has_best").get<bool>();
    s.parameter_names = j.at("parameter_names").get<std::vector<std::string>>();
    if (!ProtoFromBase64(j.at("best_eval"), &s.best_eval) ||
        !ProtoFromBase64(j.at("final_eval"), &s.final_eval)) {
      return DataLoss(d, "bad evaluation record");
    }
    for (const auto& h : j.at("history")) {
      v1::EvalMetrics m;
      if (!ProtoFromBase64(h, &m)) return DataLoss(d, "bad evaluation history");
      s.history.push_back(std::move(m));
    }
    if (!absl::Base64Unescape(j.at("rng_state").get<std::string>(), &s.rng_state)) {
      return DataLoss(d, "bad rng_state");
    }
    FT_ASSIGN_OR_RETURN(model::SafetensorsContents weights,
                        model::ReadSafetensors((dir / "weights.safetensors").string()));
    s.weights = std::move(weights.tensors);
    if (j.at("has_best_weights").get<bool>()) {
      FT_ASSIGN_OR_RETURN(model::SafetensorsContents best,
                          model::ReadSafetensors((dir / "best.safetensors").string()));
      s.best_weights = std::move(best.tensors);
    }
    if (j.at("has_optimizer").get<bool>()) {
      FT_ASSIGN_OR_RETURN(model::SafetensorsContents moments,
                          model::ReadSafetensors((dir / "optimizer.safetensors").string()));
      for (auto& [name, tensor] : moments.tensors) {
        if (name.rfind("exp_avg_sq/", 0) == 0) {
          s.optimizer[name.substr(11)].exp_avg_sq = std::move(tensor);
        } else if (name.rfind("exp_avg/", 0) == 0) {
          s.optimizer[name.substr(8)].exp_avg = std::move(tensor);
        } else {
          return DataLoss(d, "unexpected tensor in optimizer.safetensors");
        }
      }
      for (auto& [name, m] : s.optimizer) {
        auto it = j.at("optimizer_steps").find(name);
        if (it == j.at("optimizer_steps").end() || !m.exp_avg.defined() ||
            !m.exp_avg_sq.defined()) {
          return DataLoss(d, absl::StrCat("incomplete optimizer state for ", name));
        }
        m.step = it->get<int64_t>();
      }
    }
  } catch (const nlohmann::json::exception& e) {
    return DataLoss(d, absl::StrCat("state.json: ", e.what()));
  }
  return s;
}

}  // namespace freezetune::train
