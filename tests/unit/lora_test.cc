// LoRA on the BERT model: adapters named as PEFT names them, PEFT's
// initialisation (step 0 equals the base model), the forward update
// (alpha / rank) B A x, merging (merged logits equal base + adapter within
// float32 noise), and the PEFT adapter directory's files and key names.
#include "server/model/lora.h"

#include <ATen/ATen.h>
#include <torch/utils.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/model/bert.h"
#include "server/model/peft_adapter.h"
#include "server/model/safetensors.h"
#include "server/model/tokenizer.h"

namespace freezetune::model {
namespace {

using ::testing::HasSubstr;

BertConfig SmallConfig() {
  auto c = ParseBertConfig(nlohmann::json({{"vocab_size", 50},
                                           {"hidden_size", 32},
                                           {"num_hidden_layers", 2},
                                           {"num_attention_heads", 4},
                                           {"intermediate_size", 64},
                                           {"max_position_embeddings", 24}})
                               .dump());
  EXPECT_TRUE(c.ok()) << c.status();
  return *c;
}

const std::vector<std::string> kTargets = {"bert.encoder.layer.0.attention.self.query",
                                           "bert.encoder.layer.1.attention.self.value",
                                           "bert.encoder.layer.1.output.dense"};

torch::Tensor Logits(BertForSequenceClassification& m) {
  torch::NoGradGuard no_grad;
  m->eval();
  at::manual_seed(7);
  torch::Tensor ids = at::randint(1, 50, {3, 9}, at::kLong);
  torch::Tensor types = at::zeros({3, 9}, at::kLong);
  torch::Tensor mask = at::ones({3, 9}, at::kLong);
  mask[2].slice(0, 5).zero_();
  return m->forward(ids, types, mask);
}

TEST(LoraTest, AdaptersAreNamedAndInitialisedAsPeft) {
  at::manual_seed(0);
  BertForSequenceClassification m(SmallConfig(), 2);
  const torch::Tensor base = Logits(m);
  const size_t base_params = m->named_parameters().size();
  m->AttachLora(kTargets, /*rank=*/4, /*alpha=*/8, /*dropout=*/0.0);
  auto params = m->named_parameters();
  EXPECT_EQ(params.size(), base_params + 2 * kTargets.size());
  std::vector<std::string> names;
  for (const auto& p : params) names.push_back(p.key());
  const std::string q = kTargets[0];
  auto at = [&](const std::string& n) { return std::find(names.begin(), names.end(), n) - names.begin(); };
  EXPECT_EQ(at(q + ".bias") + 1, at(q + ".lora_A.weight"));
  EXPECT_EQ(at(q + ".lora_A.weight") + 1, at(q + ".lora_B.weight"));

  const torch::Tensor a = params[q + ".lora_A.weight"];
  const torch::Tensor b = params["bert.encoder.layer.1.output.dense.lora_B.weight"];
  EXPECT_EQ(a.sizes().vec(), (std::vector<int64_t>{4, 32}));
  EXPECT_EQ(params["bert.encoder.layer.1.output.dense.lora_A.weight"].sizes().vec(),
            (std::vector<int64_t>{4, 64}));
  EXPECT_EQ(b.sizes().vec(), (std::vector<int64_t>{32, 4}));
  // kaiming_uniform(a=sqrt(5)) on [r, in]: U(-1/sqrt(in), 1/sqrt(in)).
  const double bound = 1.0 / std::sqrt(32.0);
  EXPECT_LE(a.abs().max().item<double>(), bound);
  EXPECT_GT(a.abs().max().item<double>(), 0.8 * bound);
  EXPECT_NEAR(a.std().item<double>(), bound / std::sqrt(3.0), 0.25 * bound);
  EXPECT_TRUE(at::all(b == 0).item<bool>());
  // B = 0: step 0 is the base model exactly.
  EXPECT_TRUE(at::equal(Logits(m), base));
  EXPECT_EQ(m->LoraLayers().size(), kTargets.size());
  EXPECT_DOUBLE_EQ(m->LoraLayers()[0].second->scaling(), 2.0);
}

TEST(LoraTest, ForwardAddsScaledLowRankUpdate) {
  at::manual_seed(0);
  auto layer = std::make_shared<LoraLinearImpl>(torch::nn::LinearOptions(6, 5));
  layer->AttachLora(2, 3.0, 0.0, nullptr);
  torch::NoGradGuard no_grad;
  layer->lora_B()->weight.normal_();
  torch::Tensor x = at::randn({4, 6});
  torch::Tensor expected = at::linear(x, layer->weight, layer->bias) +
                           at::matmul(at::matmul(x, layer->lora_A()->weight.t()),
                                      layer->lora_B()->weight.t()) *
                               1.5;
  EXPECT_TRUE(at::allclose(layer->forward(x), expected, 1e-5, 1e-6));
  EXPECT_TRUE(at::allclose(layer->DeltaWeight().to(at::kFloat),
                           1.5 * at::matmul(layer->lora_B()->weight, layer->lora_A()->weight)));
}

TEST(LoraTest, MergedLogitsEqualBasePlusAdapter) {
  at::manual_seed(0);
  BertForSequenceClassification m(SmallConfig(), 2);
  m->AttachLora(kTargets, 4, 16, 0.0);
  {
    torch::NoGradGuard no_grad;
    for (auto& [name, layer] : m->LoraLayers()) layer->lora_B()->weight.normal_(0.0, 0.5);
  }
  const torch::Tensor adapted = Logits(m);
  m->MergeLora();
  EXPECT_TRUE(m->LoraLayers().empty());
  for (const auto& p : m->named_parameters()) {
    EXPECT_EQ(p.key().find("lora_"), std::string::npos) << p.key();
  }
  const torch::Tensor merged = Logits(m);
  EXPECT_LT((merged - adapted).abs().max().item<double>(), 1e-5);
  // And the adapters mattered: without them the logits differ.
  at::manual_seed(0);
  BertForSequenceClassification base(SmallConfig(), 2);
  EXPECT_GT((Logits(base) - adapted).abs().max().item<double>(), 1e-3);
}

TEST(LoraTest, UnknownTargetThrowsAndChangesNothing) {
  BertForSequenceClassification m(SmallConfig(), 2);
  const size_t n = m->named_parameters().size();
  EXPECT_THROW(m->AttachLora({kTargets[0], "bert.encoder.layer.0.attention.self"}, 2, 2, 0.0),
               c10::Error);
  EXPECT_EQ(m->named_parameters().size(), n);
  EXPECT_THROW(m->AttachLora({"bert.embeddings.LayerNorm"}, 2, 2, 0.0), c10::Error);
}

TEST(LoraTest, PeftKeys) {
  const std::set<std::string> adapted = {kTargets[0]};
  EXPECT_EQ(PeftKey(kTargets[0] + ".bias", adapted),
            "base_model.model.bert.encoder.layer.0.attention.self.query.base_layer.bias");
  EXPECT_EQ(PeftKey("classifier.weight", adapted), "base_model.model.classifier.weight");
  EXPECT_EQ(PeftKey("bert.encoder.layer.0.attention.self.key.bias", adapted),
            "base_model.model.bert.encoder.layer.0.attention.self.key.bias");
}

TEST(LoraTest, SavePeftAdapterWritesPeftLayout) {
  at::manual_seed(0);
  BertForSequenceClassification m(SmallConfig(), 2);
  m->AttachLora(kTargets, 4, 8, 0.1);
  std::vector<std::string> vocab = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"};
  auto tokenizer = WordPieceTokenizer::FromTokens(vocab, true);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  char tmpl[] = "/tmp/freezetune_lora_test_XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = std::string(tmpl) + "/adapter";
  PeftAdapterOptions options;
  options.base_model_name_or_path = "/models/base";
  options.alpha = 8;
  options.dropout = 0.1;
  options.target_modules = "bert\\.encoder\\.layer\\.0\\.attention\\.self\\.query|.*\\.1\\..*(value|output\\.dense)";
  options.modules_to_save = {"classifier"};
  options.saved_parameters = {"classifier.weight", "classifier.bias", kTargets[0] + ".bias"};
  options.label_names = {"neg", "pos"};
  ASSERT_TRUE(SavePeftAdapter(dir, m, *tokenizer, options).ok());

  auto contents = ReadSafetensors(dir + "/adapter_model.safetensors");
  ASSERT_TRUE(contents.ok()) << contents.status();
  std::set<std::string> keys;
  for (const auto& [name, t] : contents->tensors) keys.insert(name);
  std::set<std::string> expected = {"base_model.model.classifier.weight",
                                    "base_model.model.classifier.bias",
                                    "base_model.model." + kTargets[0] + ".base_layer.bias"};
  for (const std::string& t : kTargets) {
    expected.insert("base_model.model." + t + ".lora_A.weight");
    expected.insert("base_model.model." + t + ".lora_B.weight");
  }
  EXPECT_EQ(keys, expected);

  nlohmann::json config;
  std::ifstream(dir + "/adapter_config.json") >> config;
  EXPECT_EQ(config["peft_type"], "LORA");
  EXPECT_EQ(config["task_type"], "SEQ_CLS");
  EXPECT_EQ(config["r"], 4);
  EXPECT_EQ(config["lora_alpha"], 8.0);
  EXPECT_EQ(config["target_modules"], options.target_modules);
  EXPECT_EQ(config["modules_to_save"], nlohmann::json({"classifier"}));
  EXPECT_EQ(config["bias"], "all");  // a bias outside modules_to_save is saved
  EXPECT_EQ(config["base_model_name_or_path"], "/models/base");
  nlohmann::json task;
  std::ifstream(dir + "/task.json") >> task;
  EXPECT_EQ(task["id2label"]["1"], "pos");
  EXPECT_TRUE(std::filesystem::exists(dir + "/vocab.txt"));
  EXPECT_FALSE(std::filesystem::exists(dir + "/config.json"));

  options.saved_parameters.insert("bert.nope.weight");
  EXPECT_THAT(std::string(SavePeftAdapter(dir, m, *tokenizer, options).message()),
              HasSubstr("bert.nope.weight"));
  std::filesystem::remove_all(tmpl);
}

}  // namespace
}  // namespace freezetune::model
