// Hugging Face directories: save -> load round trips, BertModel (no prefix)
// checkpoints, fresh heads, shape errors, output config contents.
#include "server/model/hf_checkpoint.h"

#include <dirent.h>
#include <stdlib.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include <ATen/ATen.h>
#include <torch/utils.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/model/safetensors.h"
#include "server/model/safetensors_format.h"

namespace freezetune::model {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;

std::string TempDir() {
  std::string tmpl = ::testing::TempDir() + "hfckpt_XXXXXX";
  EXPECT_NE(::mkdtemp(tmpl.data()), nullptr);
  return tmpl;
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> Tokens() {
  return {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "movie", "was", "great",
          "bad",   "!",     "##s",   "a",     "film",   "not", "good"};
}

BertConfig SmallConfig() {
  auto c = ParseBertConfig(nlohmann::json({{"model_type", "bert"},
                                           {"vocab_size", 16},
                                           {"hidden_size", 32},
                                           {"num_hidden_layers", 2},
                                           {"num_attention_heads", 2},
                                           {"intermediate_size", 64},
                                           {"max_position_embeddings", 16},
                                           {"num_labels", 7},
                                           {"my_field", "kept"}})
                               .dump());
  EXPECT_TRUE(c.ok()) << c.status();
  return *c;
}

at::Tensor Logits(BertForSequenceClassification& model) {
  model->eval();
  torch::NoGradGuard no_grad;
  auto ids = at::tensor({2, 5, 6, 7, 8, 3, 0, 0, 2, 6, 11, 3, 0, 0, 0, 0}, at::kLong).view({2, 8});
  auto mask = (ids != 0).to(at::kLong);
  return model->forward(ids, at::zeros_like(ids), mask);
}

// Saves a fresh 2-label model into a new directory.
std::string SaveFresh(BertForSequenceClassification* out_model, const std::string& dtype = "F32") {
  at::manual_seed(11);
  BertForSequenceClassification model(SmallConfig(), 2);
  auto tok = WordPieceTokenizer::FromTokens(Tokens(), true);
  EXPECT_TRUE(tok.ok()) << tok.status();
  const std::string dir = TempDir() + "/out";
  SaveOptions opts;
  opts.label_names = {"negative", "positive"};
  opts.freeze_plan = {{"recipe", "head_only"}};
  opts.metrics = {{"accuracy", 0.5}};
  opts.dtype = dtype;
  absl::Status s = SaveModelDir(dir, model, *tok, opts);
  EXPECT_TRUE(s.ok()) << s;
  if (out_model) *out_model = model;
  return dir;
}

TEST(HfCheckpointTest, SaveLoadRoundTripIsExact) {
  BertForSequenceClassification saved{nullptr};
  const std::string dir = SaveFresh(&saved);
  auto loaded = LoadModelDir(dir, 2);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE(loaded->newly_initialized.empty());
  EXPECT_TRUE(loaded->unused.empty());
  EXPECT_EQ(loaded->source_dtype, "F32");
  auto a = saved->named_parameters();
  auto b = loaded->model->named_parameters();
  ASSERT_EQ(a.size(), b.size());
  for (const auto& p : a) EXPECT_TRUE(at::equal(p.value(), b[p.key()])) << p.key();
  EXPECT_TRUE(at::equal(Logits(saved), Logits(loaded->model)));
  EXPECT_EQ(loaded->tokenizer->tokens(), Tokens());
  EXPECT_TRUE(loaded->tokenizer->do_lower_case());
  EXPECT_EQ(loaded->config.raw["my_field"], "kept");
}

TEST(HfCheckpointTest, WritesTransformersCompatibleFiles) {
  const std::string dir = SaveFresh(nullptr);
  auto config = nlohmann::json::parse(Slurp(dir + "/config.json"));
  EXPECT_EQ(config["architectures"], nlohmann::json({"BertForSequenceClassification"}));
  EXPECT_EQ(config["model_type"], "bert");
  EXPECT_EQ(config["id2label"], nlohmann::json({{"0", "negative"}, {"1", "positive"}}));
  EXPECT_EQ(config["label2id"], nlohmann::json({{"negative", 0}, {"positive", 1}}));
  EXPECT_EQ(config["torch_dtype"], "float32");
  EXPECT_FALSE(config.contains("num_labels"));  // stale 7 dropped; id2label implies 2
  EXPECT_EQ(config["my_field"], "kept");
  EXPECT_EQ(config["hidden_size"], 32);
  auto tok = nlohmann::json::parse(Slurp(dir + "/tokenizer_config.json"));
  EXPECT_EQ(tok["do_lower_case"], true);
  EXPECT_EQ(tok["tokenizer_class"], "BertTokenizer");
  EXPECT_EQ(tok["model_max_length"], 16);
  EXPECT_EQ(Slurp(dir + "/vocab.txt").substr(0, 20), "[PAD]\n[UNK]\n[CLS]\n[S");
  EXPECT_EQ(nlohmann::json::parse(Slurp(dir + "/freeze_plan.json"))["recipe"], "head_only");
  EXPECT_EQ(nlohmann::json::parse(Slurp(dir + "/metrics.json"))["accuracy"], 0.5);
  auto header = ReadSafetensorsHeader(dir + "/model.safetensors");
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(header->tensors.front().name, "bert.embeddings.word_embeddings.weight");
  EXPECT_EQ(header->tensors.back().name, "classifier.bias");
  EXPECT_THAT(header->metadata, ElementsAre(std::pair<std::string, std::string>("format", "pt")));
  // No temporary files remain.
  DIR* d = ::opendir(dir.c_str());
  ASSERT_NE(d, nullptr);
  while (dirent* e = ::readdir(d)) EXPECT_THAT(std::string(e->d_name), ::testing::Not(HasSubstr(".tmp")));
  ::closedir(d);
}

TEST(HfCheckpointTest, HalfPrecisionSave) {
  BertForSequenceClassification saved{nullptr};
  const std::string dir = SaveFresh(&saved, "BF16");
  auto info = InspectModelDir(dir);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->source_dtype, "BF16");
  auto loaded = LoadModelDir(dir, 2);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->source_dtype, "BF16");
  auto w = saved->named_parameters()["bert.encoder.layer.1.output.dense.weight"];
  EXPECT_TRUE(at::equal(loaded->model->named_parameters()["bert.encoder.layer.1.output.dense.weight"],
                        w.to(at::kBFloat16).to(at::kFloat)));
  EXPECT_EQ(nlohmann::json::parse(Slurp(dir + "/config.json"))["torch_dtype"], "bfloat16");
}

// Rewrites model.safetensors as a BertModel/BertForPreTraining checkpoint
// would store it: no "bert." prefix, no classifier, an int64 position_ids
// buffer, a pretraining head, and one TF-era LayerNorm gamma name.
void WriteBaseModelCheckpoint(const std::string& dir, BertForSequenceClassification& model) {
  NamedTensors tensors;
  for (const auto& p : model->named_parameters()) {
    std::string name = p.key();
    if (name.rfind("classifier.", 0) == 0) continue;
    name = name.substr(5);
    if (name == "embeddings.LayerNorm.weight") name = "embeddings.LayerNorm.gamma";
    tensors.emplace_back(name, p.value().detach().contiguous());
  }
  tensors.emplace_back("cls.predictions.bias", at::zeros({16}));
  std::vector<SafetensorsTensorInfo> infos;
  for (const auto& [name, t] : tensors) infos.push_back({name, "F32", t.sizes().vec(), 0, 0});
  infos.push_back({"embeddings.position_ids", "I64", {1, 16}, 0, 0});
  auto header = BuildSafetensorsHeader(infos, {{"format", "pt"}});
  ASSERT_TRUE(header.ok());
  std::ofstream out(dir + "/model.safetensors", std::ios::binary | std::ios::trunc);
  out << *header;
  for (const auto& [name, t] : tensors) {
    out.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.nbytes()));
  }
  auto pos = at::arange(16, at::kLong);
  out.write(static_cast<const char*>(pos.data_ptr()), static_cast<std::streamsize>(pos.nbytes()));
}

TEST(HfCheckpointTest, LoadsCheckpointWithoutPrefixAndReportsLikeTransformers) {
  BertForSequenceClassification saved{nullptr};
  const std::string dir = SaveFresh(&saved);
  WriteBaseModelCheckpoint(dir, saved);
  auto loaded = LoadModelDir(dir, 3);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_THAT(loaded->newly_initialized, ElementsAre("classifier.weight", "classifier.bias"));
  EXPECT_THAT(loaded->unused, ElementsAre("cls.predictions.bias"));
  auto a = saved->named_parameters();
  auto b = loaded->model->named_parameters();
  for (const auto& p : a) {
    if (p.key().rfind("classifier.", 0) == 0) continue;
    EXPECT_TRUE(at::equal(p.value(), b[p.key()])) << p.key();
  }
  EXPECT_EQ(b["classifier.weight"].size(0), 3);
  EXPECT_TRUE(at::all(b["classifier.bias"] == 0).item<bool>());
  EXPECT_GT(b["classifier.weight"].abs().sum().item<float>(), 0.0f);
}

TEST(HfCheckpointTest, HeadWithOtherLabelCountIsReinitialised) {
  const std::string dir = SaveFresh(nullptr);
  auto loaded = LoadModelDir(dir, 5);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_THAT(loaded->newly_initialized, UnorderedElementsAre("classifier.weight", "classifier.bias"));
  EXPECT_TRUE(loaded->unused.empty());
}

TEST(HfCheckpointTest, EncoderShapeMismatchIsAnError) {
  const std::string dir = SaveFresh(nullptr);
  // Claim a bigger intermediate size than the weights have.
  auto config = nlohmann::json::parse(Slurp(dir + "/config.json"));
  config["intermediate_size"] = 48;
  std::ofstream(dir + "/config.json") << config.dump();
  auto loaded = LoadModelDir(dir, 2);
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(loaded.status().message()),
              HasSubstr("bert.encoder.layer.0.intermediate.dense.weight: shape [64, 32] in "
                        "the checkpoint, but config.json implies [48, 32]"));
  // Found without touching the weights (what submit-time validation calls).
  auto inspected = InspectModelDir(dir);
  ASSERT_FALSE(inspected.ok());
  EXPECT_EQ(inspected.status().message(), loaded.status().message());
}

TEST(HfCheckpointTest, ErrorsNameFiles) {
  const std::string dir = SaveFresh(nullptr);
  auto config = nlohmann::json::parse(Slurp(dir + "/config.json"));
  config["num_attention_heads"] = 3;
  std::ofstream(dir + "/config.json") << config.dump();
  auto loaded = LoadModelDir(dir, 2);
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().message(),
            dir + "/config.json: num_attention_heads: must divide hidden_size (32 % 3 != 0)");

  const std::string dir2 = SaveFresh(nullptr);
  ASSERT_EQ(::unlink((dir2 + "/model.safetensors").c_str()), 0);
  loaded = LoadModelDir(dir2, 2);
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(loaded.status().message()),
              HasSubstr(dir2 + "/model.safetensors: file not found"));

  auto missing = LoadModelDir("/nonexistent/model", 2);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
}

TEST(HfCheckpointTest, TokenizerConfigControlsLowerCase) {
  const std::string dir = SaveFresh(nullptr);
  std::ofstream(dir + "/tokenizer_config.json") << R"({"do_lower_case": false})";
  auto info = InspectModelDir(dir);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_FALSE(info->do_lower_case);
  ASSERT_EQ(::unlink((dir + "/tokenizer_config.json").c_str()), 0);
  info = InspectModelDir(dir);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_TRUE(info->do_lower_case);
}

TEST(HfCheckpointTest, SaveRejectsBadOptions) {
  BertForSequenceClassification model(SmallConfig(), 2);
  auto tok = WordPieceTokenizer::FromTokens(Tokens(), true);
  ASSERT_TRUE(tok.ok());
  SaveOptions opts;
  opts.label_names = {"a", "b", "c"};
  EXPECT_THAT(std::string(SaveModelDir(TempDir(), model, *tok, opts).message()),
              HasSubstr("label_names: 3 names for 2 labels"));
  opts.label_names = {"a", "a"};
  EXPECT_THAT(std::string(SaveModelDir(TempDir(), model, *tok, opts).message()),
              HasSubstr("label_names[1]: duplicate label"));
  opts.label_names = {};
  opts.dtype = "F64";
  EXPECT_FALSE(SaveModelDir(TempDir(), model, *tok, opts).ok());
}

}  // namespace
}  // namespace freezetune::model
