// "Did you mean": the names closest to a pattern that matched nothing, for
// INVALID_ARGUMENT messages about freeze rules and LoRA targets. Torch-free.
//
// Thread safety: pure functions.
#ifndef FREEZETUNE_SERVER_TRAIN_FREEZE_PLAN_NAMES_H_
#define FREEZETUNE_SERVER_TRAIN_FREEZE_PLAN_NAMES_H_

#include <string>
#include <string_view>
#include <vector>

namespace freezetune::train {

// The (up to) `k` names closest to `pattern` read as literal text (escapes
// dropped, a trailing ".*"/".+" removed), by edit distance to the closest
// prefix of each name; ties keep the order of `names`. Error path only:
// quadratic in the lengths.
std::vector<std::string> ClosestNames(std::string_view pattern, const std::vector<std::string>& names,
                                      size_t k = 3);

}  // namespace freezetune::train

#endif  // FREEZETUNE_SERVER_TRAIN_FREEZE_PLAN_NAMES_H_
