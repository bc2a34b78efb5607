// FreezeSpec -> FreezePlan: the per-parameter decision (trainable or frozen,
// which rule decided, LR multiplier), compiled against the model's parameter
// names. Patterns are RE2, full match. Torch-free, so PlanFreeze and submit
// validation run without loading weights.
#ifndef FREEZETUNE_SERVER_TRAIN_FREEZE_PLAN_H_
#define FREEZETUNE_SERVER_TRAIN_FREEZE_PLAN_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "freezetune/v1/freezetune.pb.h"
#include "nlohmann/json.hpp"
#include "server/model/bert_config.h"

namespace freezetune::train {

struct ParameterDecision {
  std::string name;
  std::vector<int64_t> shape;
  int64_t numel = 0;
  bool trainable = true;
  std::string decided_by;  // "default", "head_only", "bottom(N)", "bias_only", "rule[i]: <pattern>"
  float lr_scale = 1.0f;   // rule lr_scale times layer-wise decay
  int layer = -1;          // model::ParameterLayer(name)
  bool adapter = false;    // a LoRA parameter (lora_A / lora_B), not in the base model
  // The W of a LoRA-adapted layer: frozen whatever the rules say.
  bool locked = false;
};

// The LoRA part of a plan (FreezeSpec.lora, validated).
struct LoraPlan {
  int rank = 0;
  double alpha = 0.0;
  double dropout = 0.0;
  std::string target_pattern;              // FreezeSpec.lora.target_modules
  std::vector<std::string> targets;        // adapted Linear modules, model order
  std::vector<std::string> modules_to_save;  // matched module names, model order
  double scaling() const { return alpha / static_cast<double>(rank); }
};

struct FreezePlan {
  std::vector<ParameterDecision> parameters;
  int num_layers = 0;
  // Embeddings plus this many bottom layers are entirely frozen; -1 when any
  // embedding parameter trains.
  int frozen_prefix_layers = -1;
  bool frozen_eval_mode = false;
  // Set when the spec has a lora block; `parameters` then lists the adapter
  // parameters after their module's own.
  std::optional<LoraPlan> lora;
  int64_t total_parameters() const;
  int64_t trainable_parameters() const;
  int64_t adapter_parameters() const;

  v1::PlanFreezeResponse ToProto() const;
  nlohmann::json ToJson() const;  // freeze_plan.json
};

// Compiles the base spec (recipe or lora + rules, not the schedule) against
// the base model's parameters (without adapters: a lora block adds them to
// the plan). Errors are INVALID_ARGUMENT prefixed by `field`
// ("job.freeze.rules[2].pattern: ..."): a pattern that does not compile, a
// rule that matches nothing (listing the closest parameter names), a train
// rule that matches only LoRA-adapted weights, num_layers out of range, an
// unspecified action, a bad lr_scale or decay, a bad lora block (see
// freeze_plan_lora.h), and a plan that leaves nothing trainable.
absl::StatusOr<FreezePlan> CompileFreezePlan(const v1::FreezeSpec& spec,
                                             const std::vector<model::ParameterShape>& params,
                                             int num_layers, std::string_view field);

// Plan after applying schedule stage `stage_index` of `spec` on top of `plan`.
absl::StatusOr<FreezePlan> ApplyUnfreezeStage(const FreezePlan& plan, const v1::FreezeSpec& spec,
                                              int stage_index, std::string_view field);

}  // namespace freezetune::train

#endif  // FREEZETUNE_SERVER_TRAIN_FREEZE_PLAN_H_
