// LoRA targets, modules_to_save and adapter parameters (see
// freeze_plan_lora.h).
#include "server/train/freeze_plan_lora.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "re2/re2.h"
#include "server/common/status_macros.h"
#include "server/model/module_tree.h"
#include "server/train/freeze_plan_names.h"

namespace freezetune::train {
namespace {

absl::string_view AV(std::string_view s) { return absl::string_view(s.data(), s.size()); }

absl::Status FieldError(const std::string& field, const std::string& reason) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", reason));
}

// Compiles `pattern` (RE2, full match) and returns the modules it matches;
// errors name `field`.
absl::StatusOr<std::vector<const model::ModuleInfo*>> MatchModules(
    const std::string& pattern, const std::vector<model::ModuleInfo>& modules,
    const std::vector<std::string>& module_names, const std::string& field) {
  if (pattern.empty()) return FieldError(field, "required (an RE2 pattern over module names)");
  RE2::Options options;
  options.set_log_errors(false);
  RE2 re(pattern, options);
  if (!re.ok()) return FieldError(field, absl::StrCat("invalid regex: ", re.error()));
  std::vector<const model::ModuleInfo*> out;
  for (const model::ModuleInfo& m : modules) {
    if (RE2::FullMatch(m.name, re)) out.push_back(&m);
  }
  if (out.empty()) {
    return FieldError(field, absl::StrCat("matches no module (full match against module names such "
                                          "as bert.encoder.layer.0.attention.self.query); closest "
                                          "names: ",
                                          absl::StrJoin(ClosestNames(pattern, module_names), ", ")));
  }
  return out;
}

}  // namespace

absl::Status ApplyLora(const v1::FreezeSpec& spec, std::string_view field_view,
                       const std::function<float(int layer)>& layer_lr_scale, FreezePlan& plan) {
  const v1::LoraSpec& lora = spec.lora();
  const std::string field = absl::StrCat(AV(field_view), ".lora");
  if (spec.recipe_case() != v1::FreezeSpec::RECIPE_NOT_SET) {
    return FieldError(field,
                      "cannot be combined with a recipe (head_only, bottom, bias_only): with LoRA "
                      "every base parameter starts frozen; use rules to train more");
  }
  if (lora.rank() < 1) {
    return FieldError(field + ".rank", absl::StrCat("must be >= 1 (got ", lora.rank(), ")"));
  }
  if (lora.has_alpha() && !(lora.alpha() > 0.0f && std::isfinite(lora.alpha()))) {
    return FieldError(field + ".alpha", absl::StrCat("must be > 0 (got ", lora.alpha(), ")"));
  }
  if (!(lora.dropout() >= 0.0f && lora.dropout() < 1.0f)) {
    return FieldError(field + ".dropout", absl::StrCat("must be in [0, 1) (got ", lora.dropout(), ")"));
  }

  std::vector<model::ParameterShape> shapes;
  shapes.reserve(plan.parameters.size());
  for (const ParameterDecision& p : plan.parameters) shapes.push_back({p.name, p.shape});
  const std::vector<model::ModuleInfo> modules = model::ListModules(shapes);
  std::vector<std::string> module_names;
  for (const model::ModuleInfo& m : modules) module_names.push_back(m.name);

  LoraPlan out;
  out.rank = lora.rank();
  out.alpha = lora.has_alpha() ? lora.alpha() : static_cast<double>(lora.rank());
  out.dropout = lora.dropout();
  out.target_pattern = lora.target_modules();
  FT_ASSIGN_OR_RETURN(const auto targets, MatchModules(lora.target_modules(), modules, module_names,
                                                       field + ".target_modules"));
  for (const model::ModuleInfo* m : targets) {
    if (m->kind != model::ModuleKind::kLinear) {
      return FieldError(field + ".target_modules",
                        absl::StrCat("matches ", m->name, " (", model::ModuleKindName(m->kind),
                                     "), not a Linear layer; LoRA adapts Linear layers only"));
    }
    if (lora.rank() > std::min(m->in_features, m->out_features)) {
      return FieldError(field + ".rank",
                        absl::StrCat(lora.rank(), " exceeds min(in_features, out_features) = ",
                                     std::min(m->in_features, m->out_features), " of ", m->name));
    }
    out.targets.push_back(m->name);
  }

  // Which modules_to_save pattern claims each module; the first wins.
  std::vector<std::string> save_patterns(lora.modules_to_save().begin(), lora.modules_to_save().end());
  const bool default_save = save_patterns.empty();
  if (default_save) save_patterns.push_back(kDefaultModulesToSave);
  std::vector<std::pair<std::string, std::string>> saved;  // (module, label)
  for (size_t i = 0; i < save_patterns.size(); ++i) {
    const std::string f = default_save ? absl::StrCat(field, ".modules_to_save")
                                       : absl::StrCat(field, ".modules_to_save[", i, "]");
    auto matched = MatchModules(save_patterns[i], modules, module_names, f);
    if (!matched.ok()) {
      // The default names the classification head; a model without one
      // (e.g. a masked-LM job) simply has nothing to save.
      if (default_save) break;
      return matched.status();
    }
    for (const model::ModuleInfo* m : *matched) {
      for (const std::string& t : out.targets) {
        if (t == m->name || model::InModule(t, m->name) || model::InModule(m->name, t)) {
          const std::string what = default_save ? absl::StrCat("the default (", m->name, ")")
                                                : absl::StrCat("matches ", m->name, ", which");
          return FieldError(f, absl::StrCat(what, " overlaps the LoRA target ", t,
                                            "; a module is either adapted or saved in full"));
        }
      }
      const std::string label = default_save
                                    ? absl::StrCat("lora.modules_to_save (default): ", save_patterns[i])
                                    : absl::StrCat("lora.modules_to_save[", i, "]: ", save_patterns[i]);
      saved.emplace_back(m->name, label);
      out.modules_to_save.push_back(m->name);
    }
  }

  const std::string created_by = absl::StrCat("lora.target_modules: ", lora.target_modules());
  std::vector<ParameterDecision> params;
  params.reserve(plan.parameters.size() + 2 * targets.size());
  for (size_t i = 0; i < plan.parameters.size(); ++i) {
    ParameterDecision p = std::move(plan.parameters[i]);
    p.trainable = false;
    p.decided_by = "lora";
    for (const auto& [module, label] : saved) {
      if (model::InModule(p.name, module)) {
        p.trainable = true;
        p.decided_by = label;
        break;
      }
    }
    const std::string_view owner = model::OwningModule(p.name);
    const model::ModuleInfo* target = nullptr;
    for (const model::ModuleInfo* m : targets) {
      if (m->name == owner) target = m;
    }
    if (target != nullptr && p.name == target->name + ".weight") p.locked = true;
    const int layer = p.layer;
    params.push_back(std::move(p));
    // The adapters come after the module's own parameters (weight, then
    // bias), as torch registers them.
    if (target == nullptr || (i + 1 < plan.parameters.size() &&
                              model::OwningModule(plan.parameters[i + 1].name) == target->name)) {
      continue;
    }
    const std::vector<int64_t> a_shape{out.rank, target->in_features};
    const std::vector<int64_t> b_shape{target->out_features, out.rank};
    for (const auto& [suffix, shape] : {std::make_pair(".lora_A.weight", a_shape),
                                        std::make_pair(".lora_B.weight", b_shape)}) {
      ParameterDecision a;
      a.name = target->name + suffix;
      a.shape = shape;
      a.numel = shape[0] * shape[1];
      a.layer = layer;
      a.trainable = true;
      a.adapter = true;
      a.decided_by = created_by;
      a.lr_scale = layer_lr_scale(layer);
      params.push_back(std::move(a));
    }
  }
  plan.parameters = std::move(params);
  plan.lora = std::move(out);
  return absl::OkStatus();
}

}  // namespace freezetune::train
