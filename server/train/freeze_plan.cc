// FreezeSpec -> FreezePlan compilation (see freeze_plan.h and the FreezeSpec
// comments in freezetune.proto for the evaluation order).
#include "server/train/freeze_plan.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "re2/re2.h"
#include "server/common/status_macros.h"
#include "server/train/freeze_plan_lora.h"
#include "server/train/freeze_plan_names.h"

namespace freezetune::train {
namespace {

// Debian's Abseil is built without std::string_view aliasing, so
// absl::StrCat does not take std::string_view; convert at the edges.
absl::string_view AV(std::string_view s) { return absl::string_view(s.data(), s.size()); }

absl::Status FieldError(std::string_view field, std::string_view reason) {
  return absl::InvalidArgumentError(absl::StrCat(AV(field), ": ", AV(reason)));
}

// The task head: what head_only and bias_only always train (the classifier,
// or a masked-LM model's cls.predictions).
bool IsHeadParameter(std::string_view name) {
  return absl::StartsWith(AV(name), "classifier.") || absl::StartsWith(AV(name), "cls.");
}

// Layer-wise decay multiplier for a parameter of `layer` (ParameterLayer).
float DecayFor(int layer, int num_layers, double decay) {
  if (layer < 0 || decay == 1.0) return 1.0f;
  return static_cast<float>(std::pow(decay, num_layers - layer));
}

absl::StatusOr<double> ResolveDecay(const v1::FreezeSpec& spec, std::string_view field) {
  if (!spec.has_layerwise_lr_decay()) return 1.0;
  const double d = spec.layerwise_lr_decay();
  if (!(d > 0.0 && d <= 1.0)) {
    return FieldError(absl::StrCat(AV(field), ".layerwise_lr_decay"),
                      absl::StrCat("must be in (0, 1] (got ", d, ")"));
  }
  return d;
}

// Applies `rules` in order to `params`. `rules_field` is e.g.
// "job.freeze.rules"; decided_by names use `label_prefix` ("rule" for the
// base spec, "schedule[s].rule" for stages).
absl::Status ApplyRules(const google::protobuf::RepeatedPtrField<v1::FreezeRule>& rules,
                        std::string_view rules_field, std::string_view label_prefix,
                        int num_layers, double decay, std::vector<ParameterDecision>& params) {
  for (int i = 0; i < rules.size(); ++i) {
    const v1::FreezeRule& rule = rules[i];
    const std::string field = absl::StrCat(AV(rules_field), "[", i, "]");
    if (rule.action() != v1::FREEZE_ACTION_FREEZE && rule.action() != v1::FREEZE_ACTION_TRAIN) {
      return FieldError(absl::StrCat(AV(field), ".action"),
                        "must be FREEZE_ACTION_FREEZE or FREEZE_ACTION_TRAIN");
    }
    float scale = 1.0f;
    if (rule.has_lr_scale()) {
      scale = rule.lr_scale();
      if (!(scale > 0.0f) || !std::isfinite(scale)) {
        return FieldError(absl::StrCat(AV(field), ".lr_scale"),
                          absl::StrCat("must be > 0 and finite (got ", scale, ")"));
      }
    }
    RE2::Options options;
    options.set_log_errors(false);
    RE2 re(rule.pattern(), options);
    if (!re.ok()) {
      return FieldError(absl::StrCat(AV(field), ".pattern"), absl::StrCat("invalid regex: ", re.error()));
    }
    const bool trainable = rule.action() == v1::FREEZE_ACTION_TRAIN;
    const std::string label = absl::StrCat(AV(label_prefix), "[", i, "]: ", rule.pattern());
    int matched = 0, changed = 0;
    for (ParameterDecision& p : params) {
      if (!RE2::FullMatch(p.name, re)) continue;
      ++matched;
      // The W of a LoRA-adapted layer stays frozen whatever the rules say.
      if (p.locked) continue;
      ++changed;
      p.trainable = trainable;
      p.decided_by = label;
      p.lr_scale = scale * DecayFor(p.layer, num_layers, decay);
    }
    if (matched == 0) {
      std::vector<std::string> names;
      for (const ParameterDecision& p : params) names.push_back(p.name);
      return FieldError(absl::StrCat(AV(field), ".pattern"),
                        absl::StrCat("matches no parameter (full match); closest names: ",
                                     absl::StrJoin(ClosestNames(rule.pattern(), names), ", ")));
    }
    if (changed == 0 && trainable) {
      return FieldError(absl::StrCat(AV(field), ".pattern"),
                        "matches only weights of LoRA-adapted layers (lora.target_modules), "
                        "which stay frozen");
    }
  }
  return absl::OkStatus();
}

// Fills frozen_prefix_layers from the decisions and checks something trains.
absl::Status Finish(FreezePlan& plan, std::string_view field) {
  bool any_trainable = false;
  bool embeddings_frozen = true;
  // first_trainable_layer: smallest encoder layer (1-based) with a trainable param.
  int first_trainable_layer = plan.num_layers + 1;
  for (const ParameterDecision& p : plan.parameters) {
    if (!p.trainable) continue;
    any_trainable = true;
    if (p.layer == 0) embeddings_frozen = false;
    if (p.layer >= 1) first_trainable_layer = std::min(first_trainable_layer, p.layer);
  }
  if (!any_trainable) return FieldError(field, "freezes every parameter; nothing would train");
  plan.frozen_prefix_layers =
      embeddings_frozen ? std::min(first_trainable_layer - 1, plan.num_layers) : -1;
  return absl::OkStatus();
}

}  // namespace

int64_t FreezePlan::total_parameters() const {
  int64_t n = 0;
  for (const auto& p : parameters) n += p.numel;
  return n;
}

int64_t FreezePlan::trainable_parameters() const {
  int64_t n = 0;
  for (const auto& p : parameters) n += p.trainable ? p.numel : 0;
  return n;
}

int64_t FreezePlan::adapter_parameters() const {
  int64_t n = 0;
  for (const auto& p : parameters) n += p.adapter ? p.numel : 0;
  return n;
}

v1::PlanFreezeResponse FreezePlan::ToProto() const {
  v1::PlanFreezeResponse out;
  for (const auto& p : parameters) {
    v1::ParameterPlan* pp = out.add_parameters();
    pp->set_name(p.name);
    for (int64_t d : p.shape) pp->add_shape(d);
    pp->set_numel(p.numel);
    pp->set_trainable(p.trainable);
    pp->set_decided_by(p.decided_by);
    pp->set_lr_scale(p.lr_scale);
    pp->set_adapter(p.adapter);
  }
  const int64_t total = total_parameters();
  const int64_t trainable = trainable_parameters();
  out.set_total_parameters(total);
  out.set_trainable_parameters(trainable);
  out.set_frozen_parameters(total - trainable);
  out.set_num_layers(num_layers);
  out.set_frozen_prefix_layers(frozen_prefix_layers);
  out.set_frozen_eval_mode(frozen_eval_mode);
  out.set_adapter_parameters(adapter_parameters());
  // Data-parallel ranks all-reduce the float32 gradients of exactly the
  // trainable parameters (server/train/data_parallel.h).
  out.set_allreduce_bytes_per_step(trainable * static_cast<int64_t>(sizeof(float)));
  return out;
}

nlohmann::json FreezePlan::ToJson() const {
  nlohmann::json params = nlohmann::json::array();
  for (const auto& p : parameters) {
    params.push_back({{"name", p.name},
                      {"shape", p.shape},
                      {"numel", p.numel},
                      {"trainable", p.trainable},
                      {"decided_by", p.decided_by},
                      {"lr_scale", p.lr_scale},
                      {"layer", p.layer},
                      {"adapter", p.adapter}});
  }
  const int64_t total = total_parameters();
  const int64_t trainable = trainable_parameters();
  nlohmann::json out{{"parameters", std::move(params)},
                     {"total_parameters", total},
                     {"trainable_parameters", trainable},
                     {"frozen_parameters", total - trainable},
                     {"adapter_parameters", adapter_parameters()},
                     {"num_layers", num_layers},
                     {"frozen_prefix_layers", frozen_prefix_layers},
                     {"frozen_eval_mode", frozen_eval_mode}};
  if (lora) {
    out["lora"] = {{"rank", lora->rank},
                   {"alpha", lora->alpha},
                   {"dropout", lora->dropout},
                   {"target_modules", lora->target_pattern},
                   {"targets", lora->targets},
                   {"modules_to_save", lora->modules_to_save}};
  }
  return out;
}

absl::StatusOr<FreezePlan> CompileFreezePlan(const v1::FreezeSpec& spec,
                                             const std::vector<model::ParameterShape>& params,
                                             int num_layers, std::string_view field) {
  FT_ASSIGN_OR_RETURN(const double decay, ResolveDecay(spec, field));
  FreezePlan plan;
  plan.num_layers = num_layers;
  plan.parameters.reserve(params.size());
  for (const model::ParameterShape& s : params) {
    ParameterDecision d;
    d.name = s.name;
    d.shape = s.shape;
    d.numel = 1;
    for (int64_t dim : s.shape) d.numel *= dim;
    d.layer = model::ParameterLayer(s.name);
    d.trainable = true;
    d.decided_by = "default";
    d.lr_scale = DecayFor(d.layer, num_layers, decay);
    plan.parameters.push_back(std::move(d));
  }

  switch (spec.recipe_case()) {
    case v1::FreezeSpec::kHeadOnly:
      for (ParameterDecision& p : plan.parameters) {
        if (IsHeadParameter(p.name)) continue;
        p.trainable = false;
        p.decided_by = "head_only";
      }
      break;
    case v1::FreezeSpec::kBiasOnly:
      // BitFit: every bias (attention, feed-forward, LayerNorm, pooler) and
      // the head train.
      for (ParameterDecision& p : plan.parameters) {
        if (IsHeadParameter(p.name) || absl::EndsWith(p.name, ".bias")) continue;
        p.trainable = false;
        p.decided_by = "bias_only";
      }
      break;
    case v1::FreezeSpec::kBottom: {
      const int n = spec.bottom().num_layers();
      if (n < 0 || n > num_layers) {
        return FieldError(absl::StrCat(AV(field), ".bottom.num_layers"),
                          absl::StrCat("must be in [0, ", num_layers, "] (got ", n, ")"));
      }
      const std::string label = absl::StrCat("bottom(", n, ")");
      // Layer 0 is the embeddings; encoder layer i is layer i+1.
      for (ParameterDecision& p : plan.parameters) {
        if (p.layer < 0 || p.layer > n) continue;
        p.trainable = false;
        p.decided_by = label;
      }
      break;
    }
    case v1::FreezeSpec::RECIPE_NOT_SET:
      break;
  }
  if (spec.has_lora()) {
    FT_RETURN_IF_ERROR(ApplyLora(
        spec, field, [&](int layer) { return DecayFor(layer, num_layers, decay); }, plan));
  }

  FT_RETURN_IF_ERROR(ApplyRules(spec.rules(), absl::StrCat(AV(field), ".rules"), "rule", num_layers,
                                decay, plan.parameters));
  plan.frozen_eval_mode =
      spec.has_frozen_eval_mode() ? spec.frozen_eval_mode() : spec.has_head_only();
  FT_RETURN_IF_ERROR(Finish(plan, field));

  // Validate the schedule now, so a bad stage fails at submit, not mid-run.
  FreezePlan staged = plan;
  for (int s = 0; s < spec.schedule_size(); ++s) {
    FT_ASSIGN_OR_RETURN(staged, ApplyUnfreezeStage(staged, spec, s, field));
  }
  return plan;
}

absl::StatusOr<FreezePlan> ApplyUnfreezeStage(const FreezePlan& plan, const v1::FreezeSpec& spec,
                                              int stage_index, std::string_view field) {
  if (stage_index < 0 || stage_index >= spec.schedule_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(AV(field), ".schedule: no stage ", stage_index, " (", spec.schedule_size(),
                     " stages)"));
  }
  const v1::UnfreezeStage& stage = spec.schedule(stage_index);
  const std::string stage_field = absl::StrCat(AV(field), ".schedule[", stage_index, "]");
  if (stage.at_epoch() < 0) {
    return FieldError(absl::StrCat(stage_field, ".at_epoch"),
                      absl::StrCat("must be >= 0 (got ", stage.at_epoch(), ")"));
  }
  if (stage.at_step() < 0) {
    return FieldError(absl::StrCat(stage_field, ".at_step"),
                      absl::StrCat("must be >= 0 (got ", stage.at_step(), ")"));
  }
  if ((stage.at_epoch() > 0) == (stage.at_step() > 0)) {
    return FieldError(stage_field, "exactly one of at_epoch and at_step must be set (> 0)");
  }
  if (stage.rules().empty()) return FieldError(absl::StrCat(stage_field, ".rules"), "must not be empty");
  FT_ASSIGN_OR_RETURN(const double decay, ResolveDecay(spec, field));
  FreezePlan out = plan;
  FT_RETURN_IF_ERROR(ApplyRules(stage.rules(), absl::StrCat(stage_field, ".rules"),
                                absl::StrCat("schedule[", stage_index, "].rule"), out.num_layers,
                                decay, out.parameters));
  FT_RETURN_IF_ERROR(Finish(out, stage_field));
  return out;
}

}  // namespace freezetune::train
