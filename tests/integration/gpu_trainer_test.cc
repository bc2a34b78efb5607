// Training on a CUDA device (label gpu; run by scripts/gpu/check.sh): fp32,
// bf16 and fp16 (loss scaler) on a small BERT, device memory in the events
// and the result, the TF32 switch, and an out-of-memory failure that names
// the batch shape and frees the device for the next job. Without a GPU every
// test skips, unless FREEZETUNE_REQUIRE_GPU=1 (check.sh sets it) makes that a
// failure.
#include <torch/cuda.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/model/bert.h"
#include "server/model/hf_checkpoint.h"
#include "server/model/tokenizer.h"
#include "server/train/device_memory.h"
#include "server/train/fine_tune.h"

#ifdef FREEZETUNE_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace freezetune::train {
namespace {

using ::testing::HasSubstr;

#define FT_REQUIRE_GPU()                                                          \
  do {                                                                            \
    if (!torch::cuda::is_available()) {                                           \
      const char* require = std::getenv("FREEZETUNE_REQUIRE_GPU");                \
      if (require != nullptr && std::string(require) == "1") {                    \
        FAIL() << "FREEZETUNE_REQUIRE_GPU=1 but LibTorch sees no CUDA device";   \
      }                                                                           \
      GTEST_SKIP() << "no CUDA device";                                           \
    }                                                                             \
  } while (0)

class GpuTrainerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/freezetune_gpu_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    const std::string data = std::string(FREEZETUNE_SOURCE_DIR) + "/tests/fixtures/data";
    auto config = model::ParseBertConfig(R"({
      "model_type": "bert", "vocab_size": 30522, "hidden_size": 256, "num_hidden_layers": 4,
      "num_attention_heads": 4, "intermediate_size": 1024, "max_position_embeddings": 512})");
    ASSERT_TRUE(config.ok());
    auto tokenizer =
        model::WordPieceTokenizer::FromVocabFile(data + "/bert-base-uncased-vocab.txt", true);
    ASSERT_TRUE(tokenizer.ok());
    torch::manual_seed(11);
    model::BertForSequenceClassification m(*config, 2);
    m->InitWeights();
    model::SaveOptions save;
    save.label_names = {"0", "1"};
    ASSERT_TRUE(model::SaveModelDir(root_ + "/model", m, *tokenizer, save).ok());
    std::ifstream in(data + "/sst2/train_first10000.tsv");
    std::ofstream out(root_ + "/train.tsv");
    std::string line;
    for (int i = 0; i <= 2000 && std::getline(in, line); ++i) out << line << "\n";
    std::ofstream longer(root_ + "/long.jsonl");
    for (int i = 0; i < 4096; ++i) {
      std::string text;
      for (int w = 0; w < 500; ++w) text += (w + i) % 2 ? "good " : "film ";
      longer << R"({"text": ")" << text << R"(", "label": )" << i % 2 << "}\n";
    }
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    std::filesystem::remove_all(root_, ec);
  }

  static v1::FineTuneJob Job(v1::Precision precision, const std::string& train = "/train.tsv") {
    v1::FineTuneJob job;
    job.set_model_uri("file://" + root_ + "/model");
    job.mutable_train()->set_uri(root_ + train);
    job.set_device("cuda");
    job.mutable_freeze()->mutable_bottom()->set_num_layers(1);
    v1::Hyperparameters* hp = job.mutable_hyperparameters();
    hp->set_epochs(2);
    hp->set_batch_size(32);
    hp->set_learning_rate(5e-4f);
    hp->set_max_seq_length(64);
    hp->set_log_every_steps(10);
    hp->set_precision(precision);
    return job;
  }

  static RunContext Context(const std::string& out, std::vector<v1::JobEvent>* events) {
    RunContext c;
    c.device = "cuda:0";
    c.output_dir = root_ + "/" + out;
    c.emit = [events](v1::JobEvent e) { events->push_back(std::move(e)); };
    return c;
  }

  static std::string root_;
};
std::string GpuTrainerTest::root_;

TEST_F(GpuTrainerTest, EveryPrecisionTrainsWithDeviceMemoryReported) {
  FT_REQUIRE_GPU();
  for (v1::Precision p : {v1::PRECISION_FP32, v1::PRECISION_BF16, v1::PRECISION_FP16}) {
    SCOPED_TRACE(v1::Precision_Name(p));
    std::vector<v1::JobEvent> events;
    absl::StatusOr<v1::JobResult> r = RunFineTune(Job(p), Context(v1::Precision_Name(p), &events));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_TRUE(r->frozen_weights_verified());
    EXPECT_EQ(r->precision(), p);
    EXPECT_GT(r->peak_device_memory_bytes(), 0);
    int train_events = 0;
    for (const v1::JobEvent& e : events) {
      if (!e.has_train()) continue;
      ++train_events;
      EXPECT_GT(e.train().device_memory_allocated_bytes(), 0);
      EXPECT_GE(e.train().device_memory_reserved_bytes(), e.train().device_memory_allocated_bytes());
      EXPECT_GE(e.train().device_memory_peak_bytes(), e.train().device_memory_allocated_bytes());
    }
    EXPECT_GT(train_events, 0);
    // bf16 needs no scaling; fp16 may skip a few steps while the scale
    // settles from 65536, but not most of them.
    if (p != v1::PRECISION_FP16) {
      EXPECT_EQ(r->skipped_steps(), 0);
    } else {
      EXPECT_LT(r->skipped_steps(), r->steps() / 2);
    }
    ASSERT_TRUE(r->has_final_eval());  // validation_split holds out 10%
    EXPECT_GT(r->final_eval().accuracy(), 0.5f);
  }
}

TEST_F(GpuTrainerTest, Tf32SwitchIsApplied) {
  FT_REQUIRE_GPU();
  for (bool allow : {false, true}) {
    v1::FineTuneJob job = Job(v1::PRECISION_FP32);
    job.mutable_hyperparameters()->set_allow_tf32(allow);
    job.mutable_hyperparameters()->set_epochs(1);
    std::vector<v1::JobEvent> events;
    ASSERT_TRUE(RunFineTune(job, Context(allow ? "tf32" : "no_tf32", &events)).ok());
    EXPECT_EQ(at::globalContext().allowTF32CuBLAS(), allow);
  }
}

TEST_F(GpuTrainerTest, OutOfMemoryNamesTheBatchShapeAndFreesTheDevice) {
  FT_REQUIRE_GPU();
#ifndef FREEZETUNE_WITH_CUDA
  FAIL() << "LibTorch has CUDA but the build did not define FREEZETUNE_WITH_CUDA";
#else
  // A budget of 2% of the device (2.8 GiB on an H200): attention scores of
  // batch 4096 x 4 heads x 512 x 512 alone need 16 GiB per layer.
  c10::cuda::CUDACachingAllocator::setMemoryFraction(0.02, 0);
  v1::FineTuneJob big = Job(v1::PRECISION_FP32, "/long.jsonl");
  big.mutable_hyperparameters()->set_batch_size(4096);
  big.mutable_hyperparameters()->set_max_seq_length(512);
  big.mutable_hyperparameters()->set_validation_split(0.0f);
  std::vector<v1::JobEvent> events;
  absl::StatusOr<v1::JobResult> r = RunFineTune(big, Context("oom", &events));
  c10::cuda::CUDACachingAllocator::setMemoryFraction(1.0, 0);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(absl::IsResourceExhausted(r.status())) << r.status();
  EXPECT_THAT(std::string(r.status().message()),
              HasSubstr("out of device memory with batch_size 4096 and max_seq_length 512"));
  // Released: nothing of the failed run is still held or cached.
  const DeviceMemory after = QueryDeviceMemory(torch::Device("cuda:0"));
  EXPECT_LT(after.reserved_bytes, int64_t{256} << 20);
  std::vector<v1::JobEvent> next_events;
  v1::FineTuneJob next = Job(v1::PRECISION_BF16);
  next.mutable_hyperparameters()->set_epochs(1);
  absl::StatusOr<v1::JobResult> ok = RunFineTune(next, Context("after_oom", &next_events));
  EXPECT_TRUE(ok.ok()) << ok.status();
#endif
}

}  // namespace
}  // namespace freezetune::train
