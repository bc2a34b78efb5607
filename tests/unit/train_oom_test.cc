// Out of memory during training (issue 13), on the CPU where a real
// allocation failure can be provoked: in a child process whose address
// space is capped (RLIMIT_AS), a job whose batches need gigabytes of
// attention scores fails with RESOURCE_EXHAUSTED naming the step, the batch
// size and the sequence length; then a small job in the same process trains,
// so the failed run's memory was released. (On CUDA the same path runs in
// tests/integration/gpu_trainer_test.cc, label gpu.)
#include <sys/resource.h>

#include <torch/torch.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "server/model/bert.h"
#include "server/model/hf_checkpoint.h"
#include "server/model/tokenizer.h"
#include "server/train/fine_tune.h"

namespace freezetune::train {
namespace {

// Virtual memory of this process now (VmSize), in bytes.
int64_t VmSize() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (absl::StartsWith(line, "VmSize:")) return std::atoll(line.c_str() + 7) * 1024;
  }
  return -1;
}

class OutOfMemoryTest : public ::testing::Test {
 public:
  void SetUp() override {
    char tmpl[] = "/tmp/freezetune_oom_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    const std::string data = std::string(FREEZETUNE_SOURCE_DIR) + "/tests/fixtures/data";
    auto config = model::ParseBertConfig(R"({
      "model_type": "bert", "vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2,
      "num_attention_heads": 4, "intermediate_size": 64, "max_position_embeddings": 512})");
    ASSERT_TRUE(config.ok());
    auto tokenizer =
        model::WordPieceTokenizer::FromVocabFile(data + "/bert-base-uncased-vocab.txt", true);
    ASSERT_TRUE(tokenizer.ok());
    torch::manual_seed(5);
    model::BertForSequenceClassification m(*config, 2);
    m->InitWeights();
    model::SaveOptions save;
    save.label_names = {"0", "1"};
    ASSERT_TRUE(model::SaveModelDir(root_ + "/model", m, *tokenizer, save).ok());
    // 512 examples of 500 words: every batch pads to 502 tokens ([CLS] + 500 + [SEP]).
    std::ofstream out(root_ + "/long.jsonl");
    for (int i = 0; i < 512; ++i) {
      std::string text;
      for (int w = 0; w < 500; ++w) text += (w + i) % 2 ? "good " : "film ";
      out << R"({"text": ")" << text << R"(", "label": )" << i % 2 << "}\n";
    }
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(root_, ec);
  }

  const std::string& root() const { return root_; }
  v1::FineTuneJob Job(int batch_size, int max_seq_length) const {
    v1::FineTuneJob job;
    job.set_model_uri("file://" + root_ + "/model");
    job.mutable_train()->set_uri(root_ + "/long.jsonl");
    v1::Hyperparameters* hp = job.mutable_hyperparameters();
    hp->set_epochs(1);
    hp->set_batch_size(batch_size);
    hp->set_max_seq_length(max_seq_length);
    hp->set_validation_split(0.0f);
    return job;
  }

  std::string root_;
};

void RunOutOfMemoryChild(const OutOfMemoryTest& t);

// Exit codes of the child, so a failure says which check failed.
enum : int { kOk = 0, kNoLimit = 10, kTrainedAnyway = 11, kWrongError = 12, kSmallJobFailed = 13 };

// The child's part: cap the address space, run the big job (must fail
// naming the batch shape), then a small one (must succeed). Exits with one
// of the codes above.
void RunOutOfMemoryChild(const OutOfMemoryTest& t) {
  at::set_num_threads(1);
  // Room for the model, the data and a small job, not for 512 x 512
  // attention scores of 4 heads (4 GiB per layer at batch 1024).
  const int64_t cap = VmSize() + (int64_t{1} << 30);
  struct rlimit limit = {static_cast<rlim_t>(cap), static_cast<rlim_t>(cap)};
  if (VmSize() <= 0 || setrlimit(RLIMIT_AS, &limit) != 0) std::exit(kNoLimit);
  RunContext context;
  context.device = "cpu";
  context.output_dir = t.root() + "/out_big";
  absl::StatusOr<v1::JobResult> big = RunFineTune(t.Job(1024, 512), context);
  if (big.ok()) std::exit(kTrainedAnyway);
  const std::string message(big.status().message());
  std::fprintf(stderr, "big job: %s\n", big.status().ToString().c_str());
  if (!absl::IsResourceExhausted(big.status()) ||
      !absl::StartsWith(message, "step 1: out of host memory with batch_size 1024 and "
                                 "max_seq_length 512 (this batch padded to 502 tokens)")) {
    std::exit(kWrongError);
  }
  context.output_dir = t.root() + "/out_small";
  absl::StatusOr<v1::JobResult> small = RunFineTune(t.Job(8, 32), context);
  if (!small.ok()) {
    std::fprintf(stderr, "small job: %s\n", small.status().ToString().c_str());
    std::exit(kSmallJobFailed);
  }
  std::exit(kOk);
}

TEST_F(OutOfMemoryTest, FailsNamingTheBatchShapeThenTheNextJobRuns) {
  EXPECT_EXIT(RunOutOfMemoryChild(*this), ::testing::ExitedWithCode(kOk),
              "big job: RESOURCE_EXHAUSTED: step 1: out of host memory");
}

}  // namespace
}  // namespace freezetune::train
