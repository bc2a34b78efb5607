// Closest names to a pattern (see freeze_plan_names.h).
#include "server/train/freeze_plan_names.h"

#include <algorithm>
#include <utility>

namespace freezetune::train {
namespace {

// Edit distance from `pattern` to the closest prefix of `name` (Levenshtein
// with free deletion of the name's tail): patterns usually name a prefix
// ("bert\\.encoder\\.layer\\.7\\..*"), so the tail must not dominate.
size_t PrefixEditDistance(std::string_view pattern, std::string_view name) {
  std::vector<size_t> prev(name.size() + 1), cur(name.size() + 1);
  for (size_t j = 0; j <= name.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= pattern.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= name.size(); ++j) {
      size_t sub = prev[j - 1] + (pattern[i - 1] == name[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
    }
    std::swap(prev, cur);
  }
  return *std::min_element(prev.begin(), prev.end());
}

// The pattern as literal text for comparison with names: escapes dropped
// and a trailing ".*" / ".+" removed.
std::string Literalize(std::string_view pattern) {
  std::string out;
  for (size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] == '\\' && i + 1 < pattern.size()) ++i;
    out.push_back(pattern[i]);
  }
  while (out.size() >= 2 && out[out.size() - 2] == '.' &&
         (out.back() == '*' || out.back() == '+')) {
    out.resize(out.size() - 2);
  }
  return out;
}

}  // namespace

std::vector<std::string> ClosestNames(std::string_view pattern, const std::vector<std::string>& names,
                                      size_t k) {
  const std::string literal = Literalize(pattern);
  std::vector<std::pair<size_t, size_t>> scored;  // (distance, index)
  scored.reserve(names.size());
  for (size_t i = 0; i < names.size(); ++i) {
    scored.emplace_back(PrefixEditDistance(literal, names[i]), i);
  }
  std::stable_sort(scored.begin(), scored.end(),
                   [](const auto& x, const auto& y) { return x.first < y.first; });
  std::vector<std::string> out;
  for (size_t i = 0; i < scored.size() && i < k; ++i) out.push_back(names[scored[i].second]);
  return out;
}

}  // namespace freezetune::train
