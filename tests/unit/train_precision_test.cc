// Mixed precision (server/train/precision.h) on the CPU: the loss scaler's
// arithmetic, the autocast scope, submit-time validation, and bf16 training
// through the real trainer on a small BERT and real SST-2 sentences: frozen
// weights bit-identical (in memory and in a BF16 output file), float32
// master weights and optimizer state, the prefix cache holding bfloat16; a
// delta output of a BF16 base in BF16, base + delta equal to the full output
// byte for byte.
#include "server/train/precision.h"

#include <ATen/ATen.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/model/bert.h"
#include "server/model/delta_checkpoint.h"
#include "server/model/hf_checkpoint.h"
#include "server/model/safetensors.h"
#include "server/model/tokenizer.h"
#include "server/train/fine_tune.h"
#include "server/train/trainer.h"

namespace freezetune::train {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::StartsWith;

TEST(LossScalerTest, DisabledIsTheIdentityAndNeverSkips) {
  LossScaler scaler(false);
  torch::Tensor loss = torch::tensor(2.5);
  EXPECT_TRUE(torch::equal(scaler.Scale(loss), loss));
  torch::Tensor p = torch::ones({3}, torch::requires_grad());
  p.mutable_grad() = torch::tensor({1.0f, 2.0f, 3.0f});
  EXPECT_TRUE(scaler.UnscaleAndCheck({p}));
  EXPECT_TRUE(torch::equal(p.grad(), torch::tensor({1.0f, 2.0f, 3.0f})));
  scaler.Update(true);
  EXPECT_EQ(scaler.scale(), 1.0);
  EXPECT_EQ(scaler.skipped_steps(), 0);
}

TEST(LossScalerTest, UnscalesDetectsOverflowBacksOffAndGrows) {
  LossScaler::Options options;
  options.init_scale = 1024;
  options.growth_interval = 3;
  LossScaler scaler(true, options);
  EXPECT_DOUBLE_EQ(scaler.Scale(torch::tensor(0.5)).item<double>(), 512.0);

  torch::Tensor a = torch::ones({2}, torch::requires_grad());
  torch::Tensor b = torch::ones({2}, torch::requires_grad());
  torch::Tensor frozen = torch::ones({2});  // no gradient: ignored
  a.mutable_grad() = torch::tensor({1024.0f, 2048.0f});
  b.mutable_grad() = torch::tensor({-512.0f, 0.0f});
  EXPECT_TRUE(scaler.UnscaleAndCheck({a, b, frozen}));
  EXPECT_TRUE(torch::equal(a.grad(), torch::tensor({1.0f, 2.0f})));
  EXPECT_TRUE(torch::equal(b.grad(), torch::tensor({-0.5f, 0.0f})));

  // One overflowing element anywhere makes the step non-finite.
  b.mutable_grad() = torch::tensor({std::numeric_limits<float>::infinity(), 0.0f});
  EXPECT_FALSE(scaler.UnscaleAndCheck({a, b}));
  scaler.Update(false);
  EXPECT_EQ(scaler.skipped_steps(), 1);
  EXPECT_DOUBLE_EQ(scaler.scale(), 512.0);
  b.mutable_grad() = torch::tensor({std::nanf(""), 0.0f});
  EXPECT_FALSE(scaler.UnscaleAndCheck({a, b}));
  scaler.Update(false);
  EXPECT_EQ(scaler.skipped_steps(), 2);
  EXPECT_DOUBLE_EQ(scaler.scale(), 256.0);

  // growth_interval finite steps in a row double the scale.
  scaler.Update(true);
  scaler.Update(true);
  EXPECT_DOUBLE_EQ(scaler.scale(), 256.0);
  scaler.Update(true);
  EXPECT_DOUBLE_EQ(scaler.scale(), 512.0);
  EXPECT_EQ(scaler.skipped_steps(), 2);
}

TEST(AutocastScopeTest, Bf16OnTheCpuCastsMatmulsAndRestores) {
  const torch::Tensor a = torch::randn({4, 8});
  const torch::Tensor b = torch::randn({8, 3});
  {
    AutocastScope outer(torch::kCPU, torch::kBFloat16);
    EXPECT_EQ(at::matmul(a, b).scalar_type(), torch::kBFloat16);
    {
      AutocastScope inner(torch::kCPU, torch::kBFloat16);
      EXPECT_EQ(at::linear(a, b.t()).scalar_type(), torch::kBFloat16);
    }
    // The inner scope ending leaves the outer one in force.
    EXPECT_EQ(at::matmul(a, b).scalar_type(), torch::kBFloat16);
  }
  EXPECT_EQ(at::matmul(a, b).scalar_type(), torch::kFloat);
  {
    AutocastScope fp32(torch::kCPU, torch::kFloat);  // a no-op
    EXPECT_EQ(at::matmul(a, b).scalar_type(), torch::kFloat);
  }
}

TEST(PrecisionTest, ValidationAndNames) {
  EXPECT_TRUE(ValidatePrecision(v1::PRECISION_BF16, "", "job.hyperparameters").ok());
  EXPECT_TRUE(ValidatePrecision(v1::PRECISION_BF16, "cpu", "job.hyperparameters").ok());
  EXPECT_TRUE(ValidatePrecision(v1::PRECISION_FP16, "cuda", "job.hyperparameters").ok());
  EXPECT_TRUE(ValidatePrecision(v1::PRECISION_FP16, "cuda:1", "job.hyperparameters").ok());
  for (const char* device : {"", "cpu"}) {
    absl::Status s = ValidatePrecision(v1::PRECISION_FP16, device, "job.hyperparameters");
    EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
    EXPECT_THAT(std::string(s.message()), StartsWith("job.hyperparameters.precision: fp16"));
  }
  absl::Status bad = ValidatePrecision(static_cast<v1::Precision>(9), "", "job.hyperparameters");
  EXPECT_THAT(std::string(bad.message()), StartsWith("job.hyperparameters.precision: unknown"));
  EXPECT_EQ(PrecisionName(v1::PRECISION_UNSPECIFIED), "fp32");
  EXPECT_EQ(PrecisionName(v1::PRECISION_BF16), "bf16");
  EXPECT_EQ(ComputeDtype(v1::PRECISION_FP16), torch::kHalf);
  EXPECT_EQ(OutputDtype(v1::WEIGHT_DTYPE_UNSPECIFIED, "BF16"), "BF16");
  EXPECT_EQ(OutputDtype(v1::WEIGHT_DTYPE_UNSPECIFIED, "F16"), "F16");
  EXPECT_EQ(OutputDtype(v1::WEIGHT_DTYPE_UNSPECIFIED, "mixed"), "F32");
  EXPECT_EQ(OutputDtype(v1::WEIGHT_DTYPE_F32, "BF16"), "F32");
  EXPECT_EQ(OutputDtype(v1::WEIGHT_DTYPE_BF16, "F32"), "BF16");
}

// A 2-layer, hidden-64 BERT saved in BF16, and 400/100 SST-2 sentences.
class Bf16TrainingTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/freezetune_precision_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    const std::string data = std::string(FREEZETUNE_SOURCE_DIR) + "/tests/fixtures/data";
    auto config = model::ParseBertConfig(R"({
      "model_type": "bert", "vocab_size": 30522, "hidden_size": 64, "num_hidden_layers": 2,
      "num_attention_heads": 2, "intermediate_size": 128, "max_position_embeddings": 64})");
    ASSERT_TRUE(config.ok()) << config.status();
    auto tokenizer =
        model::WordPieceTokenizer::FromVocabFile(data + "/bert-base-uncased-vocab.txt", true);
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    torch::manual_seed(3);
    model::BertForSequenceClassification m(*config, 2);
    m->InitWeights();
    model::SaveOptions save;
    save.label_names = {"0", "1"};
    save.dtype = "BF16";
    ASSERT_TRUE(model::SaveModelDir(root_ + "/model", m, *tokenizer, save).ok());
    // The SST-2 fixture's header plus its first lines.
    auto head = [](const std::string& from, const std::string& to, int lines) {
      std::ifstream in(from);
      std::ofstream out(to);
      std::string line;
      for (int i = 0; i <= lines && std::getline(in, line); ++i) out << line << "\n";
    };
    head(data + "/sst2/train_first10000.tsv", root_ + "/train.tsv", 400);
    head(data + "/sst2/dev.tsv", root_ + "/dev.tsv", 100);
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }

  static v1::FineTuneJob Job(v1::Precision precision) {
    v1::FineTuneJob job;
    job.set_model_uri("file://" + root_ + "/model");
    job.mutable_train()->set_uri(root_ + "/train.tsv");
    job.mutable_validation()->set_uri(root_ + "/dev.tsv");
    job.mutable_freeze()->mutable_bottom()->set_num_layers(1);
    job.mutable_freeze()->set_frozen_eval_mode(true);  // the prefix is cached
    v1::Hyperparameters* hp = job.mutable_hyperparameters();
    hp->set_epochs(2);
    hp->set_batch_size(16);
    hp->set_learning_rate(1e-3f);
    hp->set_max_seq_length(32);
    hp->set_precision(precision);
    return job;
  }

  static std::unique_ptr<Trainer> Train(v1::Precision precision,
                                        std::shared_ptr<PrefixStore> store) {
    RunContext context;
    context.device = "cpu";
    auto prepared = PrepareJob(Job(precision), context);
    EXPECT_TRUE(prepared.ok()) << prepared.status();
    if (!prepared.ok()) return nullptr;
    TrainerOptions options;
    options.hp = prepared->hp;
    options.freeze_spec = Job(precision).freeze();
    options.prefix_store = std::move(store);
    auto trainer = Trainer::Create(prepared->loaded.model, prepared->plan, prepared->labels,
                                   std::move(prepared->train), std::move(prepared->validation),
                                   prepared->loaded.tokenizer->pad_id(), std::move(options));
    EXPECT_TRUE(trainer.ok()) << trainer.status();
    if (!trainer.ok()) return nullptr;
    absl::Status trained = (*trainer)->Train();
    EXPECT_TRUE(trained.ok()) << trained;
    return std::move(*trainer);
  }

  static std::string root_;
};
std::string Bf16TrainingTest::root_;

TEST_F(Bf16TrainingTest, MasterWeightsFloat32FrozenVerifiedPrefixCacheInBf16) {
  auto fp32_store = std::make_shared<PrefixStore>(int64_t{64} << 20);
  auto bf16_store = std::make_shared<PrefixStore>(int64_t{64} << 20);
  std::unique_ptr<Trainer> fp32 = Train(v1::PRECISION_FP32, fp32_store);
  std::unique_ptr<Trainer> bf16 = Train(v1::PRECISION_BF16, bf16_store);
  ASSERT_NE(fp32, nullptr);
  ASSERT_NE(bf16, nullptr);
  EXPECT_TRUE(bf16->summary().frozen_weights_verified);
  EXPECT_EQ(bf16->summary().steps, 50);  // 400 / 16, 2 epochs
  EXPECT_EQ(bf16->summary().skipped_steps, 0);
  EXPECT_GT(bf16->summary().prefix_cache_hits, 0);
  for (const auto& item : bf16->model()->named_parameters()) {
    EXPECT_EQ(item.value().scalar_type(), torch::kFloat) << item.key();
  }
  for (const auto& [key, state] : bf16->optimizer().state()) {
    const auto& adam = static_cast<const torch::optim::AdamWParamState&>(*state);
    EXPECT_EQ(adam.exp_avg().scalar_type(), torch::kFloat);
    EXPECT_EQ(adam.exp_avg_sq().scalar_type(), torch::kFloat);
  }
  // The same examples' prefix outputs, in bfloat16: half the bytes.
  ASSERT_GT(fp32_store->bytes(), 0);
  EXPECT_EQ(bf16_store->bytes() * 2, fp32_store->bytes());
  // bf16 trained: its trainable weights moved, and differ from fp32's (the
  // arithmetic really was bfloat16).
  const auto fp32_params = fp32->model()->named_parameters();
  const auto bf16_params = bf16->model()->named_parameters();
  const torch::Tensor& w = bf16_params["classifier.weight"];
  EXPECT_FALSE(torch::equal(w, fp32_params["classifier.weight"]));
  EXPECT_TRUE(torch::allclose(w, fp32_params["classifier.weight"], 0.1, 0.05));
}

TEST_F(Bf16TrainingTest, Bf16CheckpointInBf16OutFrozenTensorsBitIdentical) {
  RunContext context;
  context.device = "cpu";
  context.output_dir = root_ + "/out";
  absl::StatusOr<v1::JobResult> result = RunFineTune(Job(v1::PRECISION_BF16), context);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->frozen_weights_verified());
  EXPECT_EQ(result->precision(), v1::PRECISION_BF16);
  EXPECT_EQ(result->peak_device_memory_bytes(), 0);  // CPU

  // Input and output, tensor by tensor, as stored (no conversion).
  auto read = [](const std::string& path) {
    std::map<std::string, std::pair<std::string, torch::Tensor>> out;
    auto header = model::VisitSafetensors(
        path, {}, [&](const std::string& name, const std::string& dtype, const torch::Tensor& v) {
          out[name] = {dtype, v.clone()};
          return absl::OkStatus();
        });
    EXPECT_TRUE(header.ok()) << header.status();
    return out;
  };
  auto in = read(root_ + "/model/model.safetensors");
  auto out = read(root_ + "/out/model.safetensors");
  int frozen = 0, moved = 0;
  for (const auto& [name, stored] : out) {
    EXPECT_EQ(stored.first, "BF16") << name;
    std::string key = name;
    if (in.count(key) == 0) key = name.substr(name.find('.') + 1);  // "bert." prefix
    if (in.count(key) == 0) continue;  // the classifier: not in the input
    const bool same = torch::equal(stored.second, in.at(key).second);
    const bool frozen_name = name.find("embeddings.") != std::string::npos ||
                             name.find("encoder.layer.0.") != std::string::npos;
    if (frozen_name) {
      EXPECT_TRUE(same) << name << " frozen but its stored bytes changed";
      ++frozen;
    } else if (!same) {
      ++moved;
    }
  }
  EXPECT_EQ(frozen, 5 + 16);  // embeddings + layer 0
  EXPECT_GT(moved, 10);
}

// A delta output keeps the base's dtype, so that the base with the delta
// applied (what `freezetune-model apply-delta` does: LoadDeltaModelDir, then
// SaveModelDir in the base's dtype) is the same job's full output, byte for
// byte; asking a delta for another dtype is refused at submit.
TEST_F(Bf16TrainingTest, Bf16DeltaAppliedToItsBaseIsTheFullOutputByteForByte) {
  RunContext full_context;
  full_context.device = "cpu";
  full_context.output_dir = root_ + "/delta_full";
  ASSERT_TRUE(RunFineTune(Job(v1::PRECISION_BF16), full_context).ok());
  v1::FineTuneJob job = Job(v1::PRECISION_BF16);
  job.set_output_format(v1::OUTPUT_FORMAT_DELTA);
  RunContext delta_context = full_context;
  delta_context.output_dir = root_ + "/delta";
  absl::StatusOr<v1::JobResult> result = RunFineTune(job, delta_context);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->frozen_weights_verified());

  int stored = 0;
  auto header = model::VisitSafetensors(
      root_ + "/delta/delta.safetensors", {},
      [&](const std::string& name, const std::string& dtype, const torch::Tensor&) {
        EXPECT_EQ(dtype, "BF16") << name;
        EXPECT_EQ(name.find("encoder.layer.0."), std::string::npos) << name << " was frozen";
        EXPECT_EQ(name.find("embeddings."), std::string::npos) << name << " was frozen";
        ++stored;
        return absl::OkStatus();
      });
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(stored, 16 + 2 + 2);  // layer 1, pooler, classifier

  absl::StatusOr<model::LoadedModel> applied = model::LoadDeltaModelDir(
      root_ + "/delta", root_ + "/model", 2, model::BertHead::kSequenceClassification, "--base");
  ASSERT_TRUE(applied.ok()) << applied.status();
  EXPECT_EQ(applied->source_dtype, "BF16");
  model::SaveOptions save;
  save.dtype = applied->source_dtype;
  save.label_names = {"0", "1"};
  ASSERT_TRUE(
      model::SaveModelDir(root_ + "/applied", applied->model, *applied->tokenizer, save).ok());
  auto bytes = [](const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  };
  const std::string full = bytes(root_ + "/delta_full/model.safetensors");
  ASSERT_FALSE(full.empty());
  EXPECT_TRUE(bytes(root_ + "/applied/model.safetensors") == full);

  job.set_output_dtype(v1::WEIGHT_DTYPE_F32);
  absl::Status s = ValidateJob(job, data::UriOptions(), JobLimits());
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_THAT(std::string(s.message()),
              StartsWith("job.output_dtype: a delta output keeps its base's dtype (BF16)"));
}

TEST_F(Bf16TrainingTest, Fp16OnTheCpuIsRejectedAtSubmit) {
  v1::FineTuneJob job = Job(v1::PRECISION_FP16);
  data::UriOptions uris;
  absl::Status s = ValidateJob(job, uris, JobLimits());
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("job.hyperparameters.precision: fp16"));
}

}  // namespace
}  // namespace freezetune::train
