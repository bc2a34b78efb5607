// Tests for config.json parsing/validation and the implied parameter list.
#include "server/model/bert_config.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace freezetune::model {
namespace {

using ::testing::HasSubstr;

constexpr const char* kSmall = R"({
  "model_type": "bert", "vocab_size": 100, "hidden_size": 64, "num_hidden_layers": 2,
  "num_attention_heads": 4, "intermediate_size": 128, "hidden_act": "gelu",
  "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.0,
  "max_position_embeddings": 32, "type_vocab_size": 2, "layer_norm_eps": 1e-12,
  "initializer_range": 0.02, "pad_token_id": 0, "custom_field": [1, 2]
})";

std::string With(const std::string& key, const std::string& value) {
  nlohmann::json j = nlohmann::json::parse(kSmall);
  j[key] = nlohmann::json::parse(value);
  return j.dump();
}

TEST(BertConfigTest, ParsesFieldsAndKeepsRaw) {
  auto c = ParseBertConfig(kSmall);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->vocab_size, 100);
  EXPECT_EQ(c->hidden_size, 64);
  EXPECT_EQ(c->num_hidden_layers, 2);
  EXPECT_EQ(c->num_attention_heads, 4);
  EXPECT_EQ(c->intermediate_size, 128);
  EXPECT_EQ(c->max_position_embeddings, 32);
  EXPECT_DOUBLE_EQ(c->hidden_dropout_prob, 0.1);
  EXPECT_DOUBLE_EQ(c->attention_probs_dropout_prob, 0.0);
  EXPECT_DOUBLE_EQ(c->layer_norm_eps, 1e-12);
  EXPECT_FALSE(c->classifier_dropout.has_value());
  EXPECT_EQ(c->raw["custom_field"], nlohmann::json::parse("[1,2]"));
}

TEST(BertConfigTest, DefaultsForMissingFields) {
  auto c = ParseBertConfig("{}");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->hidden_size, 768);
  EXPECT_EQ(c->num_hidden_layers, 12);
  EXPECT_EQ(c->hidden_act, "gelu");
}

TEST(BertConfigTest, ClassifierDropout) {
  auto c = ParseBertConfig(With("classifier_dropout", "0.3"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_DOUBLE_EQ(c->classifier_dropout.value(), 0.3);
  c = ParseBertConfig(With("classifier_dropout", "null"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->classifier_dropout.has_value());
}

TEST(BertConfigTest, HeadsMustDivideHidden) {
  auto c = ParseBertConfig(With("num_attention_heads", "3"));
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c.status().message(),
            "config.json: num_attention_heads: must divide hidden_size (64 % 3 != 0)");
}

TEST(BertConfigTest, RejectsBadFields) {
  struct Case {
    std::string key, value, expect;
  } cases[] = {
      {"model_type", "\"roberta\"", "config.json: model_type: must be \"bert\""},
      {"hidden_size", "0", "config.json: hidden_size: must be >= 1"},
      {"hidden_size", "64.5", "config.json: hidden_size: must be an integer"},
      {"vocab_size", "\"big\"", "config.json: vocab_size: must be an integer"},
      {"num_hidden_layers", "-1", "config.json: num_hidden_layers: must be >= 1"},
      {"hidden_dropout_prob", "1.0", "config.json: hidden_dropout_prob: must be in [0, 1)"},
      {"layer_norm_eps", "0", "config.json: layer_norm_eps: must be > 0"},
      {"hidden_act", "\"mish\"", "config.json: hidden_act: unsupported activation \"mish\""},
      {"pad_token_id", "100", "config.json: pad_token_id: must be < vocab_size"},
      {"position_embedding_type", "\"relative_key\"",
       "config.json: position_embedding_type: only \"absolute\""},
      {"intermediate_size", "100000000000", "config.json: intermediate_size: too large"},
  };
  for (const auto& tc : cases) {
    auto c = ParseBertConfig(With(tc.key, tc.value));
    ASSERT_FALSE(c.ok()) << tc.key << "=" << tc.value;
    EXPECT_THAT(std::string(c.status().message()), HasSubstr(tc.expect)) << tc.key;
  }
}

TEST(BertConfigTest, RejectsNonJsonAndNonObject) {
  EXPECT_THAT(std::string(ParseBertConfig("{\"a\":").status().message()),
              HasSubstr("config.json: not valid JSON"));
  EXPECT_THAT(std::string(ParseBertConfig("[1]").status().message()),
              HasSubstr("must be a JSON object"));
}

TEST(BertConfigTest, AcceptsKnownActivations) {
  for (const char* act : {"gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu", "tanh"}) {
    auto c = ParseBertConfig(With("hidden_act", std::string("\"") + act + "\""));
    ASSERT_TRUE(c.ok()) << act << ": " << c.status();
    EXPECT_EQ(c->hidden_act, act);
  }
}

TEST(BertConfigTest, LoadMissingFileNamesPath) {
  auto c = LoadBertConfig("/nonexistent/config.json");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("/nonexistent/config.json"));
}

TEST(BertConfigTest, ParameterShapesInHfOrder) {
  auto c = ParseBertConfig(kSmall);
  ASSERT_TRUE(c.ok());
  auto shapes = BertParameterShapes(*c, 3);
  // 5 embedding tensors + 16 per layer + 2 pooler + 2 classifier.
  ASSERT_EQ(shapes.size(), 5u + 16u * 2 + 2 + 2);
  EXPECT_EQ(shapes[0].name, "bert.embeddings.word_embeddings.weight");
  EXPECT_EQ(shapes[0].shape, (std::vector<int64_t>{100, 64}));
  EXPECT_EQ(shapes[1].name, "bert.embeddings.position_embeddings.weight");
  EXPECT_EQ(shapes[1].shape, (std::vector<int64_t>{32, 64}));
  EXPECT_EQ(shapes[2].name, "bert.embeddings.token_type_embeddings.weight");
  EXPECT_EQ(shapes[4].name, "bert.embeddings.LayerNorm.bias");
  EXPECT_EQ(shapes[5].name, "bert.encoder.layer.0.attention.self.query.weight");
  EXPECT_EQ(shapes[11].name, "bert.encoder.layer.0.attention.output.dense.weight");
  EXPECT_EQ(shapes[13].name, "bert.encoder.layer.0.attention.output.LayerNorm.weight");
  EXPECT_EQ(shapes[15].name, "bert.encoder.layer.0.intermediate.dense.weight");
  EXPECT_EQ(shapes[15].shape, (std::vector<int64_t>{128, 64}));
  EXPECT_EQ(shapes[17].name, "bert.encoder.layer.0.output.dense.weight");
  EXPECT_EQ(shapes[17].shape, (std::vector<int64_t>{64, 128}));
  EXPECT_EQ(shapes[20].name, "bert.encoder.layer.0.output.LayerNorm.bias");
  EXPECT_EQ(shapes[21].name, "bert.encoder.layer.1.attention.self.query.weight");
  EXPECT_EQ(shapes[37].name, "bert.pooler.dense.weight");
  EXPECT_EQ(shapes[39].name, "classifier.weight");
  EXPECT_EQ(shapes[39].shape, (std::vector<int64_t>{3, 64}));
  EXPECT_EQ(shapes[40].name, "classifier.bias");
  EXPECT_EQ(shapes[40].shape, (std::vector<int64_t>{3}));
}

TEST(BertConfigTest, ParameterLayer) {
  EXPECT_EQ(ParameterLayer("bert.embeddings.word_embeddings.weight"), 0);
  EXPECT_EQ(ParameterLayer("embeddings.LayerNorm.bias"), 0);
  EXPECT_EQ(ParameterLayer("bert.encoder.layer.0.output.dense.weight"), 1);
  EXPECT_EQ(ParameterLayer("bert.encoder.layer.11.attention.self.key.bias"), 12);
  EXPECT_EQ(ParameterLayer("encoder.layer.3.output.dense.weight"), 4);
  EXPECT_EQ(ParameterLayer("bert.pooler.dense.weight"), -1);
  EXPECT_EQ(ParameterLayer("classifier.weight"), -1);
  EXPECT_EQ(ParameterLayer("bert.encoder.layer.x.output"), -1);
}

}  // namespace
}  // namespace freezetune::model
