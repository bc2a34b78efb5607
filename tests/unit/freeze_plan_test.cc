// FreezeSpec -> FreezePlan: each recipe, rules, layer-wise decay, the frozen
// prefix, the schedule, and every rejection with its field path.
#include "server/train/freeze_plan.h"

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"
#include "server/model/bert_config.h"

namespace freezetune::train {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr int kLayers = 2;

std::vector<model::ParameterShape> Shapes() {
  model::BertConfig c;
  c.vocab_size = 100;
  c.hidden_size = 8;
  c.num_hidden_layers = kLayers;
  c.num_attention_heads = 2;
  c.intermediate_size = 16;
  c.max_position_embeddings = 32;
  return model::BertParameterShapes(c, 3);
}

v1::FreezeSpec Spec(const std::string& text) {
  v1::FreezeSpec spec;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &spec)) << text;
  return spec;
}

absl::StatusOr<FreezePlan> Compile(const std::string& text) {
  return CompileFreezePlan(Spec(text), Shapes(), kLayers, "job.freeze");
}

const ParameterDecision& Find(const FreezePlan& plan, const std::string& name) {
  for (const auto& p : plan.parameters) {
    if (p.name == name) return p;
  }
  ADD_FAILURE() << "no parameter " << name;
  static ParameterDecision none;
  return none;
}

TEST(FreezePlanTest, DefaultTrainsEverything) {
  auto plan = Compile("");
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->parameters.size(), Shapes().size());
  for (const auto& p : plan->parameters) {
    EXPECT_TRUE(p.trainable) << p.name;
    EXPECT_EQ(p.decided_by, "default");
    EXPECT_FLOAT_EQ(p.lr_scale, 1.0f);
  }
  EXPECT_EQ(plan->frozen_prefix_layers, -1);
  EXPECT_FALSE(plan->frozen_eval_mode);
  EXPECT_EQ(plan->total_parameters(), plan->trainable_parameters());
  EXPECT_EQ(Find(*plan, "bert.embeddings.word_embeddings.weight").numel, 800);
  EXPECT_EQ(Find(*plan, "bert.encoder.layer.1.output.dense.weight").layer, 2);
}

TEST(FreezePlanTest, HeadOnlyFreezesAllButClassifier) {
  auto plan = Compile("head_only {}");
  ASSERT_TRUE(plan.ok()) << plan.status();
  int64_t trainable = 0;
  for (const auto& p : plan->parameters) {
    const bool head = p.name.rfind("classifier.", 0) == 0;
    EXPECT_EQ(p.trainable, head) << p.name;
    EXPECT_EQ(p.decided_by, head ? "default" : "head_only") << p.name;
    if (head) trainable += p.numel;
  }
  EXPECT_EQ(trainable, 8 * 3 + 3);
  EXPECT_EQ(plan->trainable_parameters(), trainable);
  // The pooler is frozen too, but it is not part of the "prefix" of layers.
  EXPECT_EQ(plan->frozen_prefix_layers, kLayers);
  EXPECT_TRUE(plan->frozen_eval_mode);
}

TEST(FreezePlanTest, HeadOnlyEvalModeCanBeTurnedOff) {
  auto plan = Compile("head_only {} frozen_eval_mode: false");
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_FALSE(plan->frozen_eval_mode);
}

TEST(FreezePlanTest, BiasOnlyTrainsEveryBiasAndTheHead) {
  auto plan = Compile("bias_only {}");
  ASSERT_TRUE(plan.ok()) << plan.status();
  int64_t trainable = 0, biases = 0;
  for (const auto& p : plan->parameters) {
    const bool head = p.name.rfind("classifier.", 0) == 0;
    const bool bias = p.name.size() > 5 && p.name.compare(p.name.size() - 5, 5, ".bias") == 0;
    EXPECT_EQ(p.trainable, head || bias) << p.name;
    EXPECT_EQ(p.decided_by, head || bias ? "default" : "bias_only") << p.name;
    if (p.trainable) trainable += p.numel;
    if (bias && !head) ++biases;
  }
  // Per layer: q, k, v, attention.output.dense, its LayerNorm, intermediate,
  // output.dense and its LayerNorm; plus the embeddings' LayerNorm and the pooler.
  EXPECT_EQ(biases, 8 * kLayers + 2);
  EXPECT_TRUE(Find(*plan, "bert.embeddings.LayerNorm.bias").trainable);
  EXPECT_FALSE(Find(*plan, "bert.embeddings.LayerNorm.weight").trainable);
  EXPECT_TRUE(Find(*plan, "bert.pooler.dense.bias").trainable);
  EXPECT_FALSE(Find(*plan, "bert.pooler.dense.weight").trainable);
  EXPECT_TRUE(Find(*plan, "classifier.weight").trainable);
  EXPECT_EQ(plan->trainable_parameters(), trainable);
  EXPECT_LT(trainable, plan->total_parameters() / 5);
  // Embedding biases train, so nothing is a frozen prefix; dropout stays on.
  EXPECT_EQ(plan->frozen_prefix_layers, -1);
  EXPECT_FALSE(plan->frozen_eval_mode);
}

TEST(FreezePlanTest, BiasOnlyThenRulesOverride) {
  auto plan = Compile(R"pb(bias_only {}
                          rules { pattern: "bert\\.encoder\\.layer\\.1\\..*" action: FREEZE_ACTION_TRAIN })pb");
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_TRUE(Find(*plan, "bert.encoder.layer.1.attention.self.query.weight").trainable);
  EXPECT_FALSE(Find(*plan, "bert.encoder.layer.0.attention.self.query.weight").trainable);
  EXPECT_EQ(Find(*plan, "bert.encoder.layer.0.attention.self.query.weight").decided_by,
            "bias_only");
}

TEST(FreezePlanTest, BottomFreezesEmbeddingsAndFirstLayers) {
  auto plan = Compile("bottom { num_layers: 1 }");
  ASSERT_TRUE(plan.ok()) << plan.status();
  for (const auto& p : plan->parameters) {
    const bool frozen = p.layer == 0 || p.layer == 1;
    EXPECT_EQ(p.trainable, !frozen) << p.name;
    EXPECT_EQ(p.decided_by, frozen ? "bottom(1)" : "default") << p.name;
  }
  EXPECT_EQ(plan->frozen_prefix_layers, 1);
  EXPECT_FALSE(plan->frozen_eval_mode);
  EXPECT_FALSE(Find(*plan, "bert.encoder.layer.0.attention.self.query.weight").trainable);
  EXPECT_TRUE(Find(*plan, "bert.encoder.layer.1.attention.self.query.weight").trainable);
  EXPECT_TRUE(Find(*plan, "bert.pooler.dense.weight").trainable);
}

TEST(FreezePlanTest, BottomZeroFreezesOnlyEmbeddings) {
  auto plan = Compile("bottom { num_layers: 0 }");
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->frozen_prefix_layers, 0);
  for (const auto& p : plan->parameters) EXPECT_EQ(p.trainable, p.layer != 0) << p.name;
}

TEST(FreezePlanTest, BottomAllLayersStillTrainsPoolerAndHead) {
  auto plan = Compile("bottom { num_layers: 2 }");
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->frozen_prefix_layers, 2);
  EXPECT_TRUE(Find(*plan, "bert.pooler.dense.bias").trainable);
}

TEST(FreezePlanTest, BottomOutOfRange) {
  for (const char* text : {"bottom { num_layers: 3 }", "bottom { num_layers: -1 }"}) {
    auto plan = Compile(text);
    ASSERT_FALSE(plan.ok()) << text;
    EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(plan.status().message()),
                StartsWith("job.freeze.bottom.num_layers: must be in [0, 2]"));
  }
}

TEST(FreezePlanTest, RegexRuleFreezesMatchesAndLaterRulesOverride) {
  auto plan = Compile(R"pb(
    rules { pattern: "bert\\.encoder\\.layer\\.[0-1]\\..*" action: FREEZE_ACTION_FREEZE }
    rules { pattern: "bert\\.encoder\\.layer\\.1\\.output\\..*" action: FREEZE_ACTION_TRAIN lr_scale: 2 }
  )pb");
  ASSERT_TRUE(plan.ok()) << plan.status();
  const auto& q0 = Find(*plan, "bert.encoder.layer.0.attention.self.query.weight");
  EXPECT_FALSE(q0.trainable);
  EXPECT_EQ(q0.decided_by, "rule[0]: bert\\.encoder\\.layer\\.[0-1]\\..*");
  const auto& out1 = Find(*plan, "bert.encoder.layer.1.output.dense.weight");
  EXPECT_TRUE(out1.trainable);
  EXPECT_THAT(out1.decided_by, StartsWith("rule[1]: "));
  EXPECT_FLOAT_EQ(out1.lr_scale, 2.0f);
  // Full match: "output" inside "attention.output" of layer 1 is not matched.
  EXPECT_FALSE(Find(*plan, "bert.encoder.layer.1.attention.output.dense.weight").trainable);
  EXPECT_TRUE(Find(*plan, "bert.embeddings.word_embeddings.weight").trainable);
  EXPECT_EQ(plan->frozen_prefix_layers, -1);  // embeddings train
}

TEST(FreezePlanTest, RuleIsFullMatchNotSearch) {
  auto plan = Compile(R"pb(rules { pattern: "pooler" action: FREEZE_ACTION_FREEZE })pb");
  ASSERT_FALSE(plan.ok());
  EXPECT_THAT(std::string(plan.status().message()),
              StartsWith("job.freeze.rules[0].pattern: matches no parameter"));
}

TEST(FreezePlanTest, RuleCanFreezeEmbeddingsForPrefix) {
  auto plan = Compile(R"pb(rules { pattern: "bert\\.embeddings\\..*" action: FREEZE_ACTION_FREEZE })pb");
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->frozen_prefix_layers, 0);
  auto plan2 = Compile(R"pb(
    rules { pattern: "bert\\.(embeddings|encoder\\.layer\\.0)\\..*" action: FREEZE_ACTION_FREEZE }
  )pb");
  ASSERT_TRUE(plan2.ok()) << plan2.status();
  EXPECT_EQ(plan2->frozen_prefix_layers, 1);
  // Unfreezing one embedding parameter after bottom() breaks the prefix.
  auto plan3 = Compile(R"pb(
    bottom { num_layers: 1 }
    rules { pattern: "bert\\.embeddings\\.LayerNorm\\.bias" action: FREEZE_ACTION_TRAIN }
  )pb");
  ASSERT_TRUE(plan3.ok()) << plan3.status();
  EXPECT_EQ(plan3->frozen_prefix_layers, -1);
}

TEST(FreezePlanTest, LayerwiseDecay) {
  auto plan = Compile(R"pb(
    layerwise_lr_decay: 0.5
    rules { pattern: "bert\\.encoder\\.layer\\.0\\.output\\.dense\\.bias" action: FREEZE_ACTION_TRAIN lr_scale: 3 }
  )pb");
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_FLOAT_EQ(Find(*plan, "bert.embeddings.word_embeddings.weight").lr_scale, 0.25f);
  EXPECT_FLOAT_EQ(Find(*plan, "bert.encoder.layer.0.output.dense.weight").lr_scale, 0.5f);
  EXPECT_FLOAT_EQ(Find(*plan, "bert.encoder.layer.0.output.dense.bias").lr_scale, 1.5f);
  EXPECT_FLOAT_EQ(Find(*plan, "bert.encoder.layer.1.output.dense.weight").lr_scale, 1.0f);
  EXPECT_FLOAT_EQ(Find(*plan, "bert.pooler.dense.weight").lr_scale, 1.0f);
  EXPECT_FLOAT_EQ(Find(*plan, "classifier.weight").lr_scale, 1.0f);
}

TEST(FreezePlanTest, BadDecay) {
  for (const char* text : {"layerwise_lr_decay: 0", "layerwise_lr_decay: 1.5",
                           "layerwise_lr_decay: -0.1", "layerwise_lr_decay: nan"}) {
    auto plan = Compile(text);
    ASSERT_FALSE(plan.ok()) << text;
    EXPECT_THAT(std::string(plan.status().message()),
                StartsWith("job.freeze.layerwise_lr_decay: must be in (0, 1]"));
  }
}

TEST(FreezePlanTest, InvalidRegex) {
  auto plan = Compile(R"pb(
    rules { pattern: "classifier\\..*" action: FREEZE_ACTION_TRAIN }
    rules { pattern: "bert\\.(embeddings" action: FREEZE_ACTION_FREEZE }
  )pb");
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(plan.status().message()),
              StartsWith("job.freeze.rules[1].pattern: invalid regex: "));
  EXPECT_THAT(std::string(plan.status().message()), HasSubstr("missing )"));
}

TEST(FreezePlanTest, RuleMatchingNothingListsClosestNames) {
  auto plan = Compile(R"pb(rules { pattern: "bert.pooler.dense.weigth" action: FREEZE_ACTION_FREEZE })pb");
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string msg(plan.status().message());
  EXPECT_THAT(msg, StartsWith("job.freeze.rules[0].pattern: matches no parameter"));
  EXPECT_THAT(msg, HasSubstr("closest names: bert.pooler.dense.weight, "));
  EXPECT_THAT(msg, HasSubstr("bert.pooler.dense.bias"));
}

TEST(FreezePlanTest, UnspecifiedActionRejected) {
  auto plan = Compile(R"pb(rules { pattern: "classifier\\..*" })pb");
  ASSERT_FALSE(plan.ok());
  EXPECT_THAT(std::string(plan.status().message()), StartsWith("job.freeze.rules[0].action: "));
}

TEST(FreezePlanTest, BadLrScaleRejected) {
  for (const char* scale : {"0", "-1", "inf", "nan"}) {
    auto plan = Compile(absl::StrCat(R"pb(rules { pattern: "classifier\\..*" action: FREEZE_ACTION_TRAIN lr_scale: )pb",
                                     scale, " }"));
    ASSERT_FALSE(plan.ok()) << scale;
    EXPECT_THAT(std::string(plan.status().message()),
                StartsWith("job.freeze.rules[0].lr_scale: must be > 0 and finite"));
  }
}

TEST(FreezePlanTest, FreezingEverythingRejected) {
  auto plan = Compile(R"pb(head_only {} rules { pattern: "classifier\\..*" action: FREEZE_ACTION_FREEZE })pb");
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(plan.status().message(), "job.freeze: freezes every parameter; nothing would train");
  auto plan2 = Compile(R"pb(rules { pattern: ".*" action: FREEZE_ACTION_FREEZE })pb");
  ASSERT_FALSE(plan2.ok());
  EXPECT_THAT(std::string(plan2.status().message()), HasSubstr("nothing would train"));
}

TEST(FreezePlanTest, ScheduleValidatedAndApplied) {
  const std::string base = R"pb(
    head_only {}
    schedule { at_epoch: 2 rules { pattern: "bert\\.encoder\\.layer\\.1\\..*" action: FREEZE_ACTION_TRAIN } }
    schedule { at_step: 10 rules { pattern: "bert\\.encoder\\.layer\\.0\\..*" action: FREEZE_ACTION_TRAIN lr_scale: 0.5 } }
  )pb";
  auto plan = Compile(base);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->frozen_prefix_layers, 2);
  const v1::FreezeSpec spec = Spec(base);
  auto s0 = ApplyUnfreezeStage(*plan, spec, 0, "job.freeze");
  ASSERT_TRUE(s0.ok()) << s0.status();
  EXPECT_EQ(s0->frozen_prefix_layers, 1);
  EXPECT_TRUE(Find(*s0, "bert.encoder.layer.1.output.dense.weight").trainable);
  EXPECT_EQ(Find(*s0, "bert.encoder.layer.1.output.dense.weight").decided_by,
            "schedule[0].rule[0]: bert\\.encoder\\.layer\\.1\\..*");
  EXPECT_FALSE(Find(*s0, "bert.encoder.layer.0.output.dense.weight").trainable);
  EXPECT_TRUE(s0->frozen_eval_mode);  // carried over from the base plan
  auto s1 = ApplyUnfreezeStage(*s0, spec, 1, "job.freeze");
  ASSERT_TRUE(s1.ok()) << s1.status();
  EXPECT_EQ(s1->frozen_prefix_layers, 0);
  EXPECT_FLOAT_EQ(Find(*s1, "bert.encoder.layer.0.output.dense.weight").lr_scale, 0.5f);
  EXPECT_GT(s1->trainable_parameters(), s0->trainable_parameters());
  EXPECT_FALSE(ApplyUnfreezeStage(*s1, spec, 2, "job.freeze").ok());
}

TEST(FreezePlanTest, ScheduleErrors) {
  struct Case {
    const char* text;
    const char* prefix;
  } cases[] = {
      {R"pb(schedule { rules { pattern: "classifier\\..*" action: FREEZE_ACTION_TRAIN } })pb",
       "job.freeze.schedule[0]: exactly one of at_epoch and at_step"},
      {R"pb(schedule { at_epoch: 1 at_step: 3 rules { pattern: "classifier\\..*" action: FREEZE_ACTION_TRAIN } })pb",
       "job.freeze.schedule[0]: exactly one of at_epoch and at_step"},
      {R"pb(schedule { at_epoch: -1 rules { pattern: "classifier\\..*" action: FREEZE_ACTION_TRAIN } })pb",
       "job.freeze.schedule[0].at_epoch: must be >= 0"},
      {R"pb(schedule { at_epoch: 2 })pb", "job.freeze.schedule[0].rules: must not be empty"},
      {R"pb(schedule { at_epoch: 2 rules { pattern: "nope" action: FREEZE_ACTION_TRAIN } })pb",
       "job.freeze.schedule[0].rules[0].pattern: matches no parameter"},
      {R"pb(schedule { at_epoch: 2 rules { pattern: "(" action: FREEZE_ACTION_TRAIN } })pb",
       "job.freeze.schedule[0].rules[0].pattern: invalid regex"},
      {R"pb(schedule { at_step: 5 rules { pattern: ".*" action: FREEZE_ACTION_FREEZE } })pb",
       "job.freeze.schedule[0]: freezes every parameter"},
  };
  for (const auto& c : cases) {
    auto plan = Compile(c.text);
    ASSERT_FALSE(plan.ok()) << c.text;
    EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(plan.status().message()), StartsWith(c.prefix)) << c.text;
  }
}

TEST(FreezePlanTest, ToProtoAndJsonAgree) {
  auto plan = Compile("bottom { num_layers: 1 }");
  ASSERT_TRUE(plan.ok()) << plan.status();
  const v1::PlanFreezeResponse proto = plan->ToProto();
  const nlohmann::json json = plan->ToJson();
  ASSERT_EQ(proto.parameters_size(), static_cast<int>(plan->parameters.size()));
  EXPECT_EQ(proto.total_parameters(), plan->total_parameters());
  EXPECT_EQ(proto.trainable_parameters(), plan->trainable_parameters());
  EXPECT_EQ(proto.frozen_parameters(), plan->total_parameters() - plan->trainable_parameters());
  EXPECT_EQ(proto.num_layers(), kLayers);
  EXPECT_EQ(proto.frozen_prefix_layers(), 1);
  EXPECT_FALSE(proto.frozen_eval_mode());
  EXPECT_EQ(proto.parameters(0).name(), "bert.embeddings.word_embeddings.weight");
  EXPECT_EQ(proto.parameters(0).shape_size(), 2);
  EXPECT_EQ(proto.parameters(0).shape(0), 100);
  EXPECT_FALSE(proto.parameters(0).trainable());
  EXPECT_EQ(proto.parameters(0).decided_by(), "bottom(1)");
  EXPECT_EQ(json["parameters"].size(), plan->parameters.size());
  EXPECT_EQ(json["parameters"][0]["decided_by"], "bottom(1)");
  EXPECT_EQ(json["parameters"][0]["shape"], nlohmann::json::array({100, 8}));
  EXPECT_EQ(json["trainable_parameters"].get<int64_t>(), plan->trainable_parameters());
  EXPECT_EQ(json["frozen_prefix_layers"], 1);
}

// ---------------------------------------------------------------------------
// LoRA in the freeze spec.
namespace lora {

constexpr char kQueryValue[] =
    R"pb(lora { rank: 2 alpha: 4 target_modules: "bert\\.encoder\\.layer\\.\\d+\\.attention\\.self\\.(query|value)" })pb";

TEST(FreezePlanLoraTest, AddsAdaptersAfterTheirModulesAndFreezesTheBase) {
  auto plan = Compile(kQueryValue);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_TRUE(plan->lora.has_value());
  EXPECT_EQ(plan->lora->rank, 2);
  EXPECT_DOUBLE_EQ(plan->lora->alpha, 4.0);
  EXPECT_DOUBLE_EQ(plan->lora->scaling(), 2.0);
  EXPECT_EQ(plan->lora->targets,
            (std::vector<std::string>{"bert.encoder.layer.0.attention.self.query",
                                      "bert.encoder.layer.0.attention.self.value",
                                      "bert.encoder.layer.1.attention.self.query",
                                      "bert.encoder.layer.1.attention.self.value"}));
  EXPECT_EQ(plan->lora->modules_to_save, std::vector<std::string>{"classifier"});
  // Base + 2 adapters per target; the adapters follow the module's bias.
  ASSERT_EQ(plan->parameters.size(), Shapes().size() + 8);
  std::vector<std::string> names;
  for (const auto& p : plan->parameters) names.push_back(p.name);
  auto at = [&](const std::string& n) {
    return std::find(names.begin(), names.end(), n) - names.begin();
  };
  const std::string q = "bert.encoder.layer.0.attention.self.query";
  EXPECT_EQ(at(q + ".bias") + 1, at(q + ".lora_A.weight"));
  EXPECT_EQ(at(q + ".lora_A.weight") + 1, at(q + ".lora_B.weight"));
  EXPECT_EQ(at(q + ".lora_B.weight") + 1, at("bert.encoder.layer.0.attention.self.key.weight"));

  const auto& a = Find(*plan, q + ".lora_A.weight");
  const auto& b = Find(*plan, q + ".lora_B.weight");
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 8}));
  EXPECT_EQ(b.shape, (std::vector<int64_t>{8, 2}));
  EXPECT_TRUE(a.trainable && a.adapter && b.trainable && b.adapter);
  EXPECT_THAT(a.decided_by, StartsWith("lora.target_modules: bert\\.encoder"));
  EXPECT_EQ(a.layer, 1);

  int64_t trainable = 0, adapters = 0;
  for (const auto& p : plan->parameters) {
    if (p.adapter) {
      adapters += p.numel;
    } else if (p.name.rfind("classifier.", 0) == 0) {
      EXPECT_TRUE(p.trainable) << p.name;
      EXPECT_EQ(p.decided_by, "lora.modules_to_save (default): classifier");
    } else {
      EXPECT_FALSE(p.trainable) << p.name;
      EXPECT_EQ(p.decided_by, "lora") << p.name;
    }
    if (p.trainable) trainable += p.numel;
  }
  EXPECT_EQ(adapters, 4 * (2 * 8 + 8 * 2));
  EXPECT_EQ(plan->adapter_parameters(), adapters);
  EXPECT_EQ(plan->trainable_parameters(), trainable);
  EXPECT_EQ(trainable, adapters + 8 * 3 + 3);
  EXPECT_TRUE(Find(*plan, q + ".weight").locked);
  EXPECT_FALSE(Find(*plan, q + ".bias").locked);
  // Layer 0 has trainable adapters, so no encoder layer is a frozen prefix.
  EXPECT_EQ(plan->frozen_prefix_layers, 0);
  EXPECT_FALSE(plan->frozen_eval_mode);

  const v1::PlanFreezeResponse proto = plan->ToProto();
  EXPECT_EQ(proto.adapter_parameters(), adapters);
  EXPECT_EQ(proto.total_parameters(), plan->total_parameters());
  int adapter_rows = 0;
  for (const auto& p : proto.parameters()) adapter_rows += p.adapter();
  EXPECT_EQ(adapter_rows, 8);
  const nlohmann::json json = plan->ToJson();
  EXPECT_EQ(json["lora"]["rank"], 2);
  EXPECT_EQ(json["lora"]["targets"].size(), 4u);
}

TEST(FreezePlanLoraTest, TopLayerOnlyKeepsAFrozenPrefix) {
  auto plan = Compile(R"pb(lora { rank: 1 target_modules: "bert\\.encoder\\.layer\\.1\\..*dense" })pb");
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->lora->targets.size(), 3u);  // attention.output, intermediate, output
  EXPECT_DOUBLE_EQ(plan->lora->alpha, 1.0);   // default: rank
  EXPECT_EQ(plan->frozen_prefix_layers, 1);
}

TEST(FreezePlanLoraTest, RulesComposeButNeverTrainAnAdaptedWeight) {
  // BitFit on top of LoRA (PEFT's bias="all"), LoRA+ style faster B, and
  // "unfreeze layer 1", which trains layer 1 except the adapted weights.
  auto plan = Compile(std::string(kQueryValue) + R"pb(
      rules { pattern: ".*\\.bias" action: FREEZE_ACTION_TRAIN }
      rules { pattern: ".*\\.lora_B\\.weight" action: FREEZE_ACTION_TRAIN lr_scale: 16 }
      rules { pattern: "bert\\.encoder\\.layer\\.1\\..*" action: FREEZE_ACTION_TRAIN })pb");
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_TRUE(Find(*plan, "bert.encoder.layer.0.attention.self.query.bias").trainable);
  EXPECT_FLOAT_EQ(Find(*plan, "bert.encoder.layer.0.attention.self.query.lora_B.weight").lr_scale, 16);
  EXPECT_TRUE(Find(*plan, "bert.encoder.layer.1.attention.self.key.weight").trainable);
  const auto& w = Find(*plan, "bert.encoder.layer.1.attention.self.query.weight");
  EXPECT_FALSE(w.trainable);
  EXPECT_EQ(w.decided_by, "lora");

  auto only_locked = Compile(std::string(kQueryValue) + R"pb(
      rules { pattern: ".*\\.query\\.weight" action: FREEZE_ACTION_TRAIN })pb");
  ASSERT_FALSE(only_locked.ok());
  EXPECT_THAT(std::string(only_locked.status().message()),
              StartsWith("job.freeze.rules[0].pattern: matches only weights of LoRA-adapted layers"));
}

TEST(FreezePlanLoraTest, DecayAndScheduleReachAdapters) {
  auto plan = Compile(std::string(kQueryValue) + R"pb(
      layerwise_lr_decay: 0.5
      rules { pattern: "bert\\.encoder\\.layer\\.0\\..*lora_.*" action: FREEZE_ACTION_FREEZE }
      schedule { at_epoch: 2 rules { pattern: ".*lora_.*" action: FREEZE_ACTION_TRAIN } })pb");
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_FLOAT_EQ(Find(*plan, "bert.encoder.layer.1.attention.self.value.lora_A.weight").lr_scale, 1.0f);
  EXPECT_FALSE(Find(*plan, "bert.encoder.layer.0.attention.self.value.lora_A.weight").trainable);
  EXPECT_EQ(plan->frozen_prefix_layers, 1);
  auto staged = ApplyUnfreezeStage(*plan, Spec(std::string(kQueryValue) + R"pb(
      layerwise_lr_decay: 0.5
      schedule { at_epoch: 2 rules { pattern: ".*lora_.*" action: FREEZE_ACTION_TRAIN } })pb"),
                                   0, "job.freeze");
  ASSERT_TRUE(staged.ok()) << staged.status();
  const auto& a0 = Find(*staged, "bert.encoder.layer.0.attention.self.value.lora_A.weight");
  EXPECT_TRUE(a0.trainable);
  EXPECT_FLOAT_EQ(a0.lr_scale, 0.5f);  // layer 1 of 2: 0.5^(2-1)
  EXPECT_FALSE(Find(*staged, "bert.encoder.layer.0.attention.self.value.weight").trainable);
}

TEST(FreezePlanLoraTest, ModulesToSavePatterns) {
  auto plan = Compile(R"pb(lora { rank: 2 target_modules: ".*\\.query"
                                  modules_to_save: "classifier" modules_to_save: "bert\\.pooler" })pb");
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->lora->modules_to_save, (std::vector<std::string>{"classifier", "bert.pooler"}));
  EXPECT_TRUE(Find(*plan, "bert.pooler.dense.weight").trainable);
  EXPECT_EQ(Find(*plan, "bert.pooler.dense.weight").decided_by,
            "lora.modules_to_save[1]: bert\\.pooler");
}

struct BadLora {
  const char* spec;
  const char* message;
};

class FreezePlanLoraErrorTest : public ::testing::TestWithParam<BadLora> {};

TEST_P(FreezePlanLoraErrorTest, RejectedNamingTheField) {
  auto plan = Compile(GetParam().spec);
  ASSERT_FALSE(plan.ok()) << GetParam().spec;
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(plan.status().message()), StartsWith(GetParam().message));
}

INSTANTIATE_TEST_SUITE_P(
    Bad, FreezePlanLoraErrorTest,
    ::testing::Values(
        BadLora{R"pb(lora { rank: 0 target_modules: ".*query" })pb",
                "job.freeze.lora.rank: must be >= 1 (got 0)"},
        BadLora{R"pb(lora { rank: 9 target_modules: ".*query" })pb",
                "job.freeze.lora.rank: 9 exceeds min(in_features, out_features) = 8 of "
                "bert.encoder.layer.0.attention.self.query"},
        BadLora{R"pb(lora { rank: 2 alpha: 0 target_modules: ".*query" })pb",
                "job.freeze.lora.alpha: must be > 0 (got 0)"},
        BadLora{R"pb(lora { rank: 2 alpha: -1 target_modules: ".*query" })pb",
                "job.freeze.lora.alpha: must be > 0 (got -1)"},
        BadLora{R"pb(lora { rank: 2 dropout: 1 target_modules: ".*query" })pb",
                "job.freeze.lora.dropout: must be in [0, 1)"},
        BadLora{R"pb(lora { rank: 2 })pb", "job.freeze.lora.target_modules: required"},
        BadLora{R"pb(lora { rank: 2 target_modules: "(" })pb",
                "job.freeze.lora.target_modules: invalid regex"},
        BadLora{R"pb(lora { rank: 2 target_modules: "bert\\.encoder\\.layer\\.7\\.attention\\.self\\.query" })pb",
                "job.freeze.lora.target_modules: matches no module (full match against module names "
                "such as bert.encoder.layer.0.attention.self.query); closest names: "
                "bert.encoder.layer.0.attention.self.query"},
        BadLora{R"pb(lora { rank: 2 target_modules: ".*query\\.weight" })pb",
                "job.freeze.lora.target_modules: matches no module"},
        BadLora{R"pb(lora { rank: 2 target_modules: ".*LayerNorm" })pb",
                "job.freeze.lora.target_modules: matches bert.embeddings.LayerNorm (LayerNorm), not "
                "a Linear layer"},
        BadLora{R"pb(lora { rank: 2 target_modules: "bert\\.encoder\\.layer\\.0\\.attention\\.self" })pb",
                "job.freeze.lora.target_modules: matches bert.encoder.layer.0.attention.self "
                "(container), not a Linear layer"},
        BadLora{R"pb(lora { rank: 2 target_modules: "bert\\.embeddings\\.word_embeddings" })pb",
                "job.freeze.lora.target_modules: matches bert.embeddings.word_embeddings (Embedding)"},
        BadLora{R"pb(lora { rank: 2 target_modules: "classifier" })pb",
                "job.freeze.lora.modules_to_save: the default (classifier) overlaps the LoRA "
                "target classifier"},
        BadLora{R"pb(lora { rank: 2 target_modules: ".*query" modules_to_save: "bert\\.encoder\\.layer\\.0" })pb",
                "job.freeze.lora.modules_to_save[0]: matches bert.encoder.layer.0, which overlaps the LoRA "
                "target bert.encoder.layer.0.attention.self.query"},
        BadLora{R"pb(lora { rank: 2 target_modules: ".*query" modules_to_save: "nope" })pb",
                "job.freeze.lora.modules_to_save[0]: matches no module"},
        BadLora{R"pb(head_only {} lora { rank: 2 target_modules: ".*query" })pb",
                "job.freeze.lora: cannot be combined with a recipe"}));

}  // namespace lora

}  // namespace
}  // namespace freezetune::train
