// BertForSequenceClassification: Hugging Face names/shapes, forward shapes,
// padding invariance, determinism in eval mode, the Embed/RunLayers/Head split.
#include "server/model/bert.h"

#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/utils.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace freezetune::model {
namespace {

BertConfig SmallConfig(const std::string& act = "gelu") {
  auto c = ParseBertConfig(nlohmann::json({{"vocab_size", 50},
                                           {"hidden_size", 32},
                                           {"num_hidden_layers", 2},
                                           {"num_attention_heads", 4},
                                           {"intermediate_size", 64},
                                           {"max_position_embeddings", 24},
                                           {"hidden_act", act}})
                               .dump());
  EXPECT_TRUE(c.ok()) << c.status();
  return *c;
}

TEST(BertTest, NamedParametersMatchHuggingFace) {
  BertConfig c = SmallConfig();
  BertForSequenceClassification model(c, 3);
  auto expected = BertParameterShapes(c, 3);
  auto params = model->named_parameters();
  ASSERT_EQ(params.size(), expected.size());
  size_t i = 0;
  for (const auto& p : params) {
    EXPECT_EQ(p.key(), expected[i].name);
    EXPECT_EQ(p.value().sizes().vec(), expected[i].shape) << p.key();
    ++i;
  }
}

TEST(BertTest, InitWeightsFollowsHuggingFace) {
  BertConfig c = SmallConfig();
  at::manual_seed(0);
  BertForSequenceClassification model(c, 2);
  auto params = model->named_parameters();
  EXPECT_TRUE(at::all(params["bert.embeddings.LayerNorm.weight"] == 1).item<bool>());
  EXPECT_TRUE(at::all(params["bert.embeddings.LayerNorm.bias"] == 0).item<bool>());
  EXPECT_TRUE(at::all(params["classifier.bias"] == 0).item<bool>());
  // Padding row (pad_token_id 0) is zero, others are N(0, 0.02).
  auto word = params["bert.embeddings.word_embeddings.weight"];
  EXPECT_TRUE(at::all(word[0] == 0).item<bool>());
  double std = word.slice(0, 1).std().item<double>();
  EXPECT_NEAR(std, 0.02, 0.003);
  // Seeded init is reproducible.
  at::manual_seed(0);
  BertForSequenceClassification again(c, 2);
  EXPECT_TRUE(at::equal(again->named_parameters()["bert.encoder.layer.1.output.dense.weight"],
                        params["bert.encoder.layer.1.output.dense.weight"]));
}

struct Batch {
  at::Tensor ids, types, mask;
};

Batch MakeBatch(int64_t b, int64_t t, int64_t real, int64_t seed) {
  at::manual_seed(seed);
  Batch batch;
  batch.ids = at::randint(1, 50, {b, t}, at::kLong);
  batch.types = at::zeros({b, t}, at::kLong);
  batch.types.slice(1, real / 2, real).fill_(1);
  batch.mask = at::zeros({b, t}, at::kLong);
  batch.mask.slice(1, 0, real).fill_(1);
  batch.ids.slice(1, real).fill_(0);  // [PAD]
  batch.types.slice(1, real).fill_(0);
  return batch;
}

TEST(BertTest, ForwardShape) {
  BertForSequenceClassification model(SmallConfig(), 3);
  model->eval();
  Batch b = MakeBatch(5, 7, 7, 1);
  auto logits = model->forward(b.ids, b.types, b.mask);
  EXPECT_EQ(logits.sizes().vec(), (std::vector<int64_t>{5, 3}));
  EXPECT_EQ(logits.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::isfinite(logits).all().item<bool>());
}

TEST(BertTest, PaddingDoesNotChangeLogitsInEval) {
  for (const char* act : {"gelu", "gelu_new", "relu", "silu", "tanh"}) {
    at::manual_seed(3);
    BertForSequenceClassification model(SmallConfig(act), 2);
    model->eval();
    torch::NoGradGuard no_grad;
    Batch short_batch = MakeBatch(2, 6, 6, 7);
    Batch long_batch = MakeBatch(2, 15, 6, 7);
    long_batch.ids.slice(1, 0, 6).copy_(short_batch.ids);
    long_batch.types.slice(1, 0, 6).copy_(short_batch.types);
    long_batch.ids.slice(1, 6).fill_(0);
    auto a = model->forward(short_batch.ids, short_batch.types, short_batch.mask);
    auto b = model->forward(long_batch.ids, long_batch.types, long_batch.mask);
    EXPECT_TRUE(at::allclose(a, b, /*rtol=*/1e-5, /*atol=*/1e-6)) << act << "\n" << a << b;
    // Without the mask the padding is attended to and logits change.
    auto unmasked = model->forward(long_batch.ids, long_batch.types, at::Tensor());
    EXPECT_FALSE(at::allclose(a, unmasked, 1e-5, 1e-6)) << act;
  }
}

TEST(BertTest, EvalIsDeterministicTrainIsNot) {
  BertForSequenceClassification model(SmallConfig(), 2);
  Batch b = MakeBatch(4, 9, 9, 2);
  model->eval();
  auto a = model->forward(b.ids, b.types, b.mask);
  auto a2 = model->forward(b.ids, b.types, b.mask);
  EXPECT_TRUE(at::equal(a, a2));
  model->train();
  auto t1 = model->forward(b.ids, b.types, b.mask);
  auto t2 = model->forward(b.ids, b.types, b.mask);
  EXPECT_FALSE(at::equal(t1, t2));  // dropout 0.1 is active
}

TEST(BertTest, SplitForwardEqualsForward) {
  BertForSequenceClassification model(SmallConfig(), 2);
  model->eval();
  Batch b = MakeBatch(3, 8, 5, 4);
  auto full = model->forward(b.ids, b.types, b.mask);
  auto h = model->Embed(b.ids, b.types);
  EXPECT_EQ(h.sizes().vec(), (std::vector<int64_t>{3, 8, 32}));
  h = model->RunLayers(h, b.mask, 0, 1);
  h = model->RunLayers(h, b.mask, 1, 1);
  h = model->RunLayers(h, b.mask, 1, 2);
  EXPECT_TRUE(at::equal(model->Head(h), full));
  EXPECT_THROW(model->RunLayers(h, b.mask, 1, 3), c10::Error);
}

TEST(BertTest, PerModuleEvalTurnsOffOnlyThatDropout) {
  BertForSequenceClassification model(SmallConfig(), 2);
  model->train();
  model->embeddings_module().eval();
  model->layer_module(0).eval();
  EXPECT_FALSE(model->embeddings_module().is_training());
  EXPECT_FALSE(model->layer_module(0).is_training());
  EXPECT_TRUE(model->layer_module(1).is_training());
  // Embeddings in eval mode: Embed is deterministic though the model trains.
  Batch b = MakeBatch(2, 5, 5, 6);
  EXPECT_TRUE(at::equal(model->Embed(b.ids, b.types), model->Embed(b.ids, b.types)));
  EXPECT_THROW(model->layer_module(2), c10::Error);
  EXPECT_EQ(model->classifier_module().named_parameters().size(), 2u);
  EXPECT_EQ(model->pooler_module().named_parameters(true).size(), 2u);
}

TEST(BertTest, RejectsTooLongSequence) {
  BertForSequenceClassification model(SmallConfig(), 2);
  Batch b = MakeBatch(1, 25, 25, 1);
  EXPECT_THROW(model->forward(b.ids, b.types, b.mask), c10::Error);
}

TEST(BertTest, GradientsReachEveryParameter) {
  BertForSequenceClassification model(SmallConfig(), 2);
  model->train();
  Batch b = MakeBatch(2, 6, 6, 8);
  b.ids.select(1, 3).fill_(0);  // use the padding id once: its row must get no gradient
  model->forward(b.ids, b.types, b.mask).sum().backward();
  for (const auto& p : model->named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
  }
  auto word_grad = model->named_parameters()["bert.embeddings.word_embeddings.weight"].grad();
  EXPECT_TRUE(at::all(word_grad[0] == 0).item<bool>());
}

}  // namespace
}  // namespace freezetune::model
