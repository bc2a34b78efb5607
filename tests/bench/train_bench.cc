// Training-loop measurement on an SST-2 slice (the first 1000 train
// sentences, 872 dev sentences) with a small BERT (hidden 128, 4 layers,
// 4 heads, the real vocab, max_seq_length 64): seconds per epoch and
// training examples/s (evaluations included in the time) for each freeze recipe, and what the frozen-prefix
// NoGradGuard and output cache buy. A plain program, not a CTest:
//   build-x/tests/freezetune_train_bench [epochs]
// Numbers depend on the machine and its load; compare rows of one run.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include <torch/utils.h>

#include "google/protobuf/text_format.h"

#include "server/model/bert.h"
#include "server/model/hf_checkpoint.h"
#include "server/model/tokenizer.h"
#include "server/train/trainer.h"
#include "tests/bench/bench_tuning.h"

namespace ft = freezetune;

namespace {

constexpr const char* kConfigJson = R"({
  "model_type": "bert", "vocab_size": 30522, "hidden_size": 128, "num_hidden_layers": 4,
  "num_attention_heads": 4, "intermediate_size": 512, "max_position_embeddings": 128
})";

struct Row {
  const char* name;
  const char* freeze_text;  // FreezeSpec in text format
  int64_t cache_bytes;
};

}  // namespace

int main(int argc, char** argv) {
  ft::bench::TuneBenchmark(&argc, argv);
  const int epochs = argc > 1 ? std::atoi(argv[1]) : 2;
  const std::string shared = std::string(FREEZETUNE_SOURCE_DIR) + "/../shared/data";
  const std::string dir =
      (std::filesystem::temp_directory_path() / "freezetune_train_bench_model").string();
  auto config = ft::model::ParseBertConfig(kConfigJson);
  auto tokenizer =
      ft::model::WordPieceTokenizer::FromVocabFile(shared + "/bert-base-uncased-vocab.txt", true);
  if (!config.ok() || !tokenizer.ok()) {
    std::fprintf(stderr, "setup failed\n");
    return 1;
  }
  torch::manual_seed(0);
  ft::model::BertForSequenceClassification m(*config, 2);
  m->InitWeights();
  ft::model::SaveOptions save;
  save.label_names = {"0", "1"};
  if (auto s = ft::model::SaveModelDir(dir, m, *tokenizer, save); !s.ok()) {
    std::fprintf(stderr, "%s\n", std::string(s.message()).c_str());
    return 1;
  }

  const Row rows[] = {
      {"full", "", 0},
      {"bottom(2)", "bottom { num_layers: 2 }", 0},
      {"bottom(2)+eval_mode+cache", "bottom { num_layers: 2 } frozen_eval_mode: true",
       int64_t{512} << 20},
      {"head_only, no cache", "head_only {}", 0},
      {"head_only + cache", "head_only {}", int64_t{512} << 20},
  };
  // The model is randomly initialised, so accuracy says nothing here; this
  // measures time only.
  std::printf("%-28s %10s %12s %10s %10s\n", "recipe", "trainable", "seconds", "ex/s",
              "cache_hit");
  for (const Row& row : rows) {
    ft::v1::FineTuneJob job;
    job.set_model_uri(dir);
    job.mutable_train()->set_uri(shared + "/sst2/train_first1000.tsv");
    job.mutable_validation()->set_uri(shared + "/sst2/dev.tsv");
    auto* h = job.mutable_hyperparameters();
    h->set_epochs(epochs);
    h->set_batch_size(32);
    h->set_learning_rate(1e-3f);
    h->set_max_seq_length(64);
    h->set_log_every_steps(1000);
    if (!google::protobuf::TextFormat::ParseFromString(row.freeze_text, job.mutable_freeze())) {
      return 1;
    }
    ft::train::RunContext context;
    auto prepared = ft::train::PrepareJob(job, context);
    if (!prepared.ok()) {
      std::fprintf(stderr, "%s\n", std::string(prepared.status().message()).c_str());
      return 1;
    }
    ft::train::TrainerOptions options;
    options.hp = prepared->hp;
    options.freeze_spec = job.freeze();
    options.prefix_cache_max_bytes = row.cache_bytes;
    auto trainer = ft::train::Trainer::Create(
        prepared->loaded.model, prepared->plan, prepared->labels, std::move(prepared->train),
        std::move(prepared->validation), prepared->loaded.tokenizer->pad_id(), options);
    if (!trainer.ok()) return 1;
    const auto start = std::chrono::steady_clock::now();
    if (auto s = (*trainer)->Train(); !s.ok()) {
      std::fprintf(stderr, "%s\n", std::string(s.message()).c_str());
      return 1;
    }
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const auto& summary = (*trainer)->summary();
    std::printf("%-28s %10lld %12.2f %10.1f %10lld\n", row.name,
                static_cast<long long>((*trainer)->plan().trainable_parameters()), secs,
                1000.0 * epochs / secs, static_cast<long long>(summary.prefix_cache_hits));
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return 0;
}
