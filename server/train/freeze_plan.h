// FreezeSpec -> FreezePlan: the per-parameter decision (trainable or frozen,
// which rule decided, LR multiplier), compiled against the model's parameter
// names. Patterns are RE2, full match. Torch-free, so PlanFreeze and submit
// validation run without loading weights.
#ifndef FREEZETUNE_SERVER_TRAIN_FREEZE_PLAN_H_
#define FREEZETUNE_SERVER_TRAIN_FREEZE_PLAN_H_

#include <cstdint>
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
  std::string decided_by;  // "default", "head_only", "bottom(N)", "rule[i]: <pattern>"
  float lr_scale = 1.0f;   // rule lr_scale times layer-wise decay
  int layer = -1;          // model::ParameterLayer(name)
};

struct FreezePlan {
  std::vector<ParameterDecision> parameters;
  int num_layers = 0;
  // Embeddings plus this many bottom layers are entirely frozen; -1 when any
  // embedding parameter trains.
  int frozen_prefix_layers = -1;
  bool frozen_eval_mode = false;
  int64_t total_parameters() const;
  int64_t trainable_parameters() const;

  v1::PlanFreezeResponse ToProto() const;
  nlohmann::json ToJson() const;  // freeze_plan.json
};

// Compiles the base spec (recipe + rules, not the schedule). Errors are
// INVALID_ARGUMENT prefixed by `field` ("job.freeze.rules[2].pattern: ..."):
// a pattern that does not compile, a rule that matches nothing (listing the
// closest parameter names), num_layers out of range, an unspecified action,
// a bad lr_scale or decay, and a plan that leaves nothing trainable.
absl::StatusOr<FreezePlan> CompileFreezePlan(const v1::FreezeSpec& spec,
                                             const std::vector<model::ParameterShape>& params,
                                             int num_layers, std::string_view field);

// Plan after applying schedule stage `stage_index` of `spec` on top of `plan`.
absl::StatusOr<FreezePlan> ApplyUnfreezeStage(const FreezePlan& plan, const v1::FreezeSpec& spec,
                                              int stage_index, std::string_view field);

}  // namespace freezetune::train

#endif  // FREEZETUNE_SERVER_TRAIN_FREEZE_PLAN_H_
