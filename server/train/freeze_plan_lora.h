// The lora block of a FreezeSpec compiled into a FreezePlan: which Linear
// layers get adapters, which modules train in full (modules_to_save), the
// adapter parameters themselves, and every rejection with its field path.
// Torch-free: module names and kinds come from the parameter names
// (model/module_tree.h). Used by CompileFreezePlan; see LoraSpec in
// freezetune.proto for the semantics.
//
// Thread safety: pure functions.
#ifndef FREEZETUNE_SERVER_TRAIN_FREEZE_PLAN_LORA_H_
#define FREEZETUNE_SERVER_TRAIN_FREEZE_PLAN_LORA_H_

#include <functional>
#include <string_view>

#include "absl/status/status.h"
#include "freezetune/v1/freezetune.pb.h"
#include "server/train/freeze_plan.h"

namespace freezetune::train {

// The default modules_to_save: the classification head.
inline constexpr const char* kDefaultModulesToSave = "classifier";

// Applies `spec.lora` to `plan`, whose `parameters` hold the base model's
// parameters (no adapters yet) with their default decisions. Freezes every
// base parameter (decided_by "lora") except those of modules_to_save, marks
// each target's weight `locked`, inserts "<target>.lora_A.weight" [rank, in]
// and "<target>.lora_B.weight" [out, rank] after the target's own
// parameters (trainable, adapter, decided_by "lora.target_modules:
// <pattern>", lr_scale from `layer_lr_scale(layer)`), and fills plan.lora.
// INVALID_ARGUMENT, prefixed by `field` + ".lora" (e.g.
// "job.freeze.lora.rank: must be >= 1 (got 0)"), for: rank < 1 or above a
// target's min(in, out); alpha <= 0 or not finite; dropout outside [0, 1);
// an empty, invalid or unmatched target_modules (listing the closest module
// names); a match that is not a Linear layer; a modules_to_save pattern that
// is invalid, matches nothing or matches a target; and a recipe in the same
// spec.
absl::Status ApplyLora(const v1::FreezeSpec& spec, std::string_view field,
                       const std::function<float(int layer)>& layer_lr_scale, FreezePlan& plan);

}  // namespace freezetune::train

#endif  // FREEZETUNE_SERVER_TRAIN_FREEZE_PLAN_LORA_H_
