// The trainer end to end on a tiny BERT (hidden 32, 2 layers, the real
// bert-base-uncased vocab) and tiny JSONL datasets written here: for each
// freeze recipe, frozen parameters are bit-identical afterwards (in memory
// and in the saved output), hold no gradient and are not in the optimizer,
// while trainable ones move; plus cancellation, divergence, early stopping,
// events, gradual unfreezing and submit-time validation errors.
#include "server/train/trainer.h"

#include <ATen/ATen.h>
#include <torch/cuda.h>
#include <torch/utils.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"
#include "server/model/bert.h"
#include "server/model/delta_checkpoint.h"
#include "server/model/file_digest.h"
#include "server/model/hf_checkpoint.h"
#include "server/model/peft_adapter.h"
#include "server/model/safetensors.h"
#include "server/model/tokenizer.h"
#include "server/train/encode_cache.h"
#include "server/train/fine_tune.h"

namespace freezetune::train {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using ::testing::StartsWith;

std::string SharedDir() { return std::string(FREEZETUNE_SOURCE_DIR) + "/../shared"; }

constexpr const char* kConfigJson = R"({
  "model_type": "bert", "vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2,
  "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64,
  "type_vocab_size": 2, "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1
})";

// Sentences whose label is the sentiment word they carry.
std::string Jsonl(int n, int offset) {
  const char* pos[] = {"good", "great", "wonderful", "lovely", "excellent"};
  const char* neg[] = {"bad", "awful", "terrible", "horrible", "poor"};
  const char* filler[] = {"the movie was", "i found it", "honestly a", "what a", "such a"};
  std::string out;
  for (int i = 0; i < n; ++i) {
    const int k = i + offset;
    const bool label = k % 2 == 0;
    out += absl::StrCat(R"({"text": ")", filler[k % 5], " ", label ? pos[k % 5] : neg[k % 5],
                        " film", R"(", "label": )", label ? 1 : 0, "}\n");
  }
  return out;
}

void WriteFile(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary);
  out << content;
  ASSERT_TRUE(out.good()) << path;
}

// One temp directory with the input model and datasets, shared by the suite
// (building and saving the model once keeps the binary fast).
class TrainerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/freezetune_trainer_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    model_dir_ = root_ + "/model";
    auto config = model::ParseBertConfig(kConfigJson);
    ASSERT_TRUE(config.ok()) << config.status();
    auto tokenizer = model::WordPieceTokenizer::FromVocabFile(
        SharedDir() + "/data/bert-base-uncased-vocab.txt", true);
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    torch::manual_seed(1);
    model::BertForSequenceClassification m(*config, 2);
    m->InitWeights();
    model::SaveOptions save;
    save.label_names = {"0", "1"};
    ASSERT_TRUE(model::SaveModelDir(model_dir_, m, *tokenizer, save).ok());
    WriteFile(root_ + "/train.jsonl", Jsonl(40, 0));
    WriteFile(root_ + "/dev.jsonl", Jsonl(10, 40));
    WriteFile(root_ + "/bad_label.jsonl", Jsonl(5, 0) + "{\"text\": \"x\", \"label\": 5}\n");
    WriteFile(root_ + "/data.xyz", Jsonl(5, 0));
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }

  // A job over the fixture; `freeze` and `extra` are text-format snippets.
  static v1::FineTuneJob Job(const std::string& freeze, const std::string& hyper = "") {
    v1::FineTuneJob job;
    job.set_model_uri("file://" + model_dir_);
    job.mutable_train()->set_uri(root_ + "/train.jsonl");
    job.mutable_validation()->set_uri(root_ + "/dev.jsonl");
    EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(freeze, job.mutable_freeze()));
    EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(
        "epochs: 2 batch_size: 8 learning_rate: 0.001 max_seq_length: 16 log_every_steps: 2",
        job.mutable_hyperparameters()));
    v1::Hyperparameters overrides;
    EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(hyper, &overrides)) << hyper;
    job.mutable_hyperparameters()->MergeFrom(overrides);
    return job;
  }

  static RunContext Context(const std::string& out) {
    RunContext c;
    c.job_id = "job-test";
    c.output_dir = root_ + "/" + out;
    c.device = "cpu";
    return c;
  }

  // Prepares `job` and returns a trainer plus a copy of every initial parameter.
  static std::unique_ptr<Trainer> MakeTrainer(const v1::FineTuneJob& job,
                                              std::map<std::string, torch::Tensor>* initial,
                                              TrainerOptions options = {}) {
    auto prepared = PrepareJob(job, Context("unused"));
    EXPECT_TRUE(prepared.ok()) << prepared.status();
    if (!prepared.ok()) return nullptr;
    for (const auto& item : prepared->loaded.model->named_parameters()) {
      (*initial)[item.key()] = item.value().detach().clone();
    }
    options.hp = prepared->hp;
    options.freeze_spec = job.freeze();
    auto trainer = Trainer::Create(prepared->loaded.model, prepared->plan, prepared->labels,
                                   std::move(prepared->train), std::move(prepared->validation),
                                   prepared->loaded.tokenizer->pad_id(), std::move(options));
    EXPECT_TRUE(trainer.ok()) << trainer.status();
    return trainer.ok() ? std::move(*trainer) : nullptr;
  }

  static std::string root_;
  static std::string model_dir_;
};

std::string TrainerTest::root_;
std::string TrainerTest::model_dir_;

std::set<const void*> Impls(const std::vector<torch::Tensor>& tensors) {
  std::set<const void*> out;
  for (const auto& t : tensors) out.insert(t.unsafeGetTensorImpl());
  return out;
}

struct Recipe {
  const char* name;
  const char* freeze;
  int64_t frozen_count;  // parameters frozen
};

class TrainerRecipeTest : public TrainerTest, public ::testing::WithParamInterface<Recipe> {};

// Parameters per encoder layer: 16 (q,k,v,attn out, 2 LN, inter, out, 2 LN x w+b).
// Embeddings: 5. Pooler 2, classifier 2. Total 5 + 32 + 4 = 41.
INSTANTIATE_TEST_SUITE_P(
    Recipes, TrainerRecipeTest,
    ::testing::Values(Recipe{"full", "", 0}, Recipe{"bottom1", "bottom { num_layers: 1 }", 5 + 16},
                      Recipe{"head_only", "head_only {}", 39},
                      // BitFit: 1 embedding LN bias + 8 per layer + pooler + classifier train.
                      Recipe{"bias_only", "bias_only {}", 41 - (1 + 16 + 1 + 2)},
                      Recipe{"regex",
                             R"pb(rules { pattern: "bert\\.encoder\\.layer\\.[01]\\.attention\\..*"
                                          action: FREEZE_ACTION_FREEZE })pb",
                             2 * 10}),
    [](const auto& info) { return std::string(info.param.name); });

TEST_P(TrainerRecipeTest, FrozenUntouchedTrainableMovedOptimizerExact) {
  const v1::FineTuneJob job = Job(GetParam().freeze);
  std::map<std::string, torch::Tensor> initial;
  std::unique_ptr<Trainer> trainer = MakeTrainer(job, &initial);
  ASSERT_NE(trainer, nullptr);
  ASSERT_TRUE(trainer->Train().ok());
  EXPECT_TRUE(trainer->summary().frozen_weights_verified);
  EXPECT_EQ(trainer->summary().steps, 10);  // 40 examples / 8, 2 epochs

  int64_t frozen = 0;
  std::vector<torch::Tensor> trainable;
  for (const auto& item : trainer->model()->named_parameters()) {
    const torch::Tensor& p = item.value();
    const bool was_equal = torch::equal(p, initial.at(item.key()));
    if (p.requires_grad()) {
      trainable.push_back(p);
      EXPECT_FALSE(was_equal) << item.key() << " trainable but unchanged";
    } else {
      ++frozen;
      EXPECT_TRUE(was_equal) << item.key() << " frozen but changed";
      EXPECT_FALSE(p.grad().defined()) << item.key() << " frozen but has a gradient";
    }
  }
  EXPECT_EQ(frozen, GetParam().frozen_count);

  // The optimizer holds exactly the trainable set, and weight decay only
  // where it belongs.
  std::vector<torch::Tensor> in_optimizer;
  for (const auto& group : trainer->optimizer().param_groups()) {
    const auto& opts = static_cast<const torch::optim::AdamWOptions&>(group.options());
    for (const auto& p : group.params()) in_optimizer.push_back(p);
    bool any_decay_exempt = false;
    for (const auto& item : trainer->model()->named_parameters()) {
      for (const auto& p : group.params()) {
        if (p.unsafeGetTensorImpl() != item.value().unsafeGetTensorImpl()) continue;
        const std::string& n = item.key();
        any_decay_exempt = n.size() >= 5 && (n.substr(n.size() - 5) == ".bias" ||
                                             n.find("LayerNorm.") != std::string::npos);
        EXPECT_EQ(opts.weight_decay() == 0.0, any_decay_exempt) << n;
      }
    }
  }
  EXPECT_EQ(in_optimizer.size(), trainable.size());
  EXPECT_EQ(Impls(in_optimizer), Impls(trainable));
  EXPECT_EQ(Impls(trainer->TrainableParameters()), Impls(trainable));
}

TEST_P(TrainerRecipeTest, RunFineTuneSavesVerifiedOutput) {
  const v1::FineTuneJob job = Job(GetParam().freeze);
  const RunContext context = Context(std::string("out_") + GetParam().name);
  std::vector<v1::JobEvent> events;
  RunContext c = context;
  c.emit = [&events](v1::JobEvent e) { events.push_back(std::move(e)); };
  auto result = RunFineTune(job, c);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->frozen_weights_verified());
  EXPECT_EQ(result->steps(), 10);
  EXPECT_EQ(result->output_uri(), "file://" + context.output_dir);
  EXPECT_EQ(result->selection_metric(), "accuracy");
  EXPECT_EQ(result->best_eval().examples(), 10);
  EXPECT_EQ(result->total_parameters() == result->trainable_parameters(),
            GetParam().frozen_count == 0);
  EXPECT_TRUE(fs::exists(context.output_dir + "/freeze_plan.json"));
  EXPECT_TRUE(fs::exists(context.output_dir + "/metrics.json"));

  auto input = model::LoadModelDir(model_dir_, 2);
  auto output = model::LoadModelDir(context.output_dir, 2);
  ASSERT_TRUE(input.ok()) << input.status();
  ASSERT_TRUE(output.ok()) << output.status();
  std::map<std::string, torch::Tensor> in_params;
  for (const auto& item : input->model->named_parameters()) in_params[item.key()] = item.value();
  nlohmann::json plan;
  std::ifstream(context.output_dir + "/freeze_plan.json") >> plan;
  std::map<std::string, bool> trainable;
  for (const auto& p : plan["parameters"]) trainable[p["name"]] = p["trainable"];
  int64_t frozen = 0;
  for (const auto& item : output->model->named_parameters()) {
    const bool same = torch::equal(item.value(), in_params.at(item.key()));
    ASSERT_TRUE(trainable.count(item.key())) << item.key();
    if (trainable[item.key()]) {
      EXPECT_FALSE(same) << item.key();
    } else {
      ++frozen;
      EXPECT_TRUE(same) << item.key();
    }
  }
  EXPECT_EQ(frozen, GetParam().frozen_count);

  // 10 steps, log every 2: five TrainMetrics; an evaluation per epoch.
  int train_events = 0, eval_events = 0;
  for (const auto& e : events) {
    if (e.has_train()) {
      ++train_events;
      EXPECT_EQ(e.train().total_steps(), 10);
      EXPECT_GT(e.train().loss(), 0.0f);
      EXPECT_GT(e.train().samples_per_second(), 0.0f);
    }
    if (e.has_eval()) ++eval_events;
  }
  EXPECT_EQ(train_events, 5);
  EXPECT_EQ(eval_events, 2);
}

TEST_F(TrainerTest, LearnsASeparableTask) {
  // The sentiment word decides the label; a few epochs of full fine-tuning
  // must fit it and generalise to the held-out sentences' words.
  // A randomly initialised BERT (unlike a pretrained one) needs many small
  // steps at a high rate before attention carries the word to [CLS].
  auto result = RunFineTune(
      Job("", "epochs: 10 learning_rate: 0.01 selection_metric: 'loss' batch_size: 4"),
      Context("out_learn"));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_GE(result->best_eval().accuracy(), 0.9f);
  EXPECT_LT(result->best_eval().loss(), 0.2f);
}

TEST_F(TrainerTest, HeadOnlyRunsFrozenModulesInEvalMode) {
  std::map<std::string, torch::Tensor> initial;
  auto trainer = MakeTrainer(Job("head_only {}"), &initial);
  ASSERT_NE(trainer, nullptr);
  ASSERT_TRUE(trainer->Train().ok());
  EXPECT_FALSE(trainer->model()->embeddings_module().is_training());
  EXPECT_FALSE(trainer->model()->layer_module(1).is_training());
  EXPECT_FALSE(trainer->model()->pooler_module().is_training());
  EXPECT_TRUE(trainer->model()->classifier_module().is_training());

  auto full = MakeTrainer(Job(""), &initial);
  ASSERT_NE(full, nullptr);
  ASSERT_TRUE(full->Train().ok());
  EXPECT_TRUE(full->model()->embeddings_module().is_training());
}

// Three head_only trainers: no cache, a cache for everything, a cache too
// small for the whole training set.
TEST_F(TrainerTest, FusedAdamWTrainsLikeTorchAdamW) {
  v1::FineTuneJob job = Job("", "validation_split: 0");
  job.clear_validation();
  std::map<std::string, torch::Tensor> initial;
  TrainerOptions torch_options;
  torch_options.fused_adamw = false;
  auto fused = MakeTrainer(job, &initial);
  auto reference = MakeTrainer(job, &initial, torch_options);
  ASSERT_TRUE(fused && reference);
  for (Trainer* trainer : {fused.get(), reference.get()}) {
    torch::manual_seed(7);
    ASSERT_TRUE(trainer->Train().ok());
  }
  auto want = reference->model()->named_parameters();
  for (const auto& item : fused->model()->named_parameters()) {
    EXPECT_TRUE(torch::allclose(item.value(), want[item.key()], 1e-5, 1e-7))
        << item.key() << " max diff " << (item.value() - want[item.key()]).abs().max().item<float>();
  }
}

TEST_F(TrainerTest, SparseEmbeddingUpdatesLeaveUnseenRowsAlone) {
  v1::FineTuneJob job = Job("", "validation_split: 0 sparse_embedding_updates: true");
  job.clear_validation();
  std::map<std::string, torch::Tensor> initial;
  auto sparse = MakeTrainer(job, &initial);
  job.mutable_hyperparameters()->set_sparse_embedding_updates(false);
  auto dense = MakeTrainer(job, &initial);
  ASSERT_TRUE(sparse && dense);
  ASSERT_TRUE(sparse->Train().ok());
  ASSERT_TRUE(dense->Train().ok());
  const std::string name = "bert.embeddings.word_embeddings.weight";
  const torch::Tensor before = initial.at(name);
  const torch::Tensor s = sparse->model()->named_parameters()[name].detach();
  const torch::Tensor d = dense->model()->named_parameters()[name].detach();
  // Rows of tokens in the data moved; every other row is untouched with
  // sparse updates and decayed with dense AdamW.
  const torch::Tensor moved = (s != before).any(1);
  const int64_t rows_moved = moved.sum().item<int64_t>();
  EXPECT_GT(rows_moved, 5);
  EXPECT_LT(rows_moved, 1000);  // the fixture uses a few dozen distinct tokens
  // (The padding row is zero, and decays to zero.)
  EXPECT_GE((d != before).any(1).sum().item<int64_t>(), before.size(0) - 1);
  EXPECT_TRUE(sparse->summary().frozen_weights_verified);
}

struct CacheTrio {
  std::unique_ptr<Trainer> uncached, cached, partial;
};

TEST_F(TrainerTest, FrozenPrefixCacheReusesOutputsAndMatchesUncached) {
  // Without validation the final weights are the output, so they can be
  // compared directly (with evaluations, a near-tie could select another
  // epoch's weights).
  v1::FineTuneJob job = Job("head_only {}", "validation_split: 0");
  job.clear_validation();
  std::map<std::string, torch::Tensor> initial;
  TrainerOptions uncached_options;
  uncached_options.prefix_cache_max_bytes = 0;
  TrainerOptions small_options;
  small_options.prefix_cache_max_bytes = 20 * 32 * 4 * 10;  // about 20 examples of ~10 tokens
  CacheTrio t{MakeTrainer(job, &initial, uncached_options), MakeTrainer(job, &initial),
              MakeTrainer(job, &initial, small_options)};
  ASSERT_TRUE(t.uncached && t.cached && t.partial);
  // Same dropout masks for each (the classifier's dropout draws from the
  // global generator).
  for (Trainer* trainer : {t.uncached.get(), t.cached.get(), t.partial.get()}) {
    torch::manual_seed(7);
    ASSERT_TRUE(trainer->Train().ok());
  }
  EXPECT_EQ(t.uncached->summary().prefix_cache_hits, 0);
  // Epoch 1 computes all 40 examples, epoch 2 reuses them.
  EXPECT_EQ(t.cached->summary().prefix_cache_misses, 40);
  EXPECT_EQ(t.cached->summary().prefix_cache_hits, 40);
  EXPECT_LT(t.partial->summary().prefix_cache_hits, 40);
  EXPECT_GT(t.partial->summary().prefix_cache_misses, 40);
  auto reference = t.uncached->model()->named_parameters();
  for (Trainer* trainer : {t.cached.get(), t.partial.get()}) {
    EXPECT_TRUE(trainer->summary().frozen_weights_verified);
    for (const auto& item : trainer->model()->named_parameters()) {
      EXPECT_TRUE(torch::allclose(item.value(), reference[item.key()], 1e-4, 1e-5))
          << item.key() << " max diff "
          << (item.value() - reference[item.key()]).abs().max().item<float>();
    }
  }
}

TEST_F(TrainerTest, FrozenPrefixCacheServesEvaluations) {
  const v1::FineTuneJob job = Job("head_only {}");
  std::map<std::string, torch::Tensor> initial;
  TrainerOptions uncached_options;
  uncached_options.prefix_cache_max_bytes = 0;
  auto uncached = MakeTrainer(job, &initial, uncached_options);
  auto cached = MakeTrainer(job, &initial);
  ASSERT_TRUE(uncached && cached);
  torch::manual_seed(7);
  ASSERT_TRUE(uncached->Train().ok());
  torch::manual_seed(7);
  ASSERT_TRUE(cached->Train().ok());
  // Train 40 + eval 10 computed in epoch 1, reused in epoch 2.
  EXPECT_EQ(cached->summary().prefix_cache_misses, 50);
  EXPECT_EQ(cached->summary().prefix_cache_hits, 50);
  ASSERT_EQ(cached->summary().history.size(), uncached->summary().history.size());
  for (size_t i = 0; i < cached->summary().history.size(); ++i) {
    EXPECT_NEAR(cached->summary().history[i].loss(), uncached->summary().history[i].loss(), 1e-4);
  }
}

TEST_F(TrainerTest, OneEpochJobStoresNoPrefixRowsItCannotReadAgain) {
  // One epoch, one evaluation at its end: no row is read twice, so the
  // head-only job stores nothing (no copies, no memory), as with the cache
  // off.
  auto store = std::make_shared<PrefixStore>(int64_t{512} << 20);
  TrainerOptions options;
  options.prefix_store = store;
  std::map<std::string, torch::Tensor> initial;
  auto one_epoch = MakeTrainer(Job("head_only {}", "epochs: 1"), &initial, options);
  ASSERT_TRUE(one_epoch);
  ASSERT_TRUE(one_epoch->Train().ok());
  EXPECT_EQ(store->stored_bytes_total(), 0);
  EXPECT_EQ(one_epoch->summary().prefix_cache_hits, 0);
  EXPECT_EQ(one_epoch->summary().prefix_cache_misses, 50);  // computed, not stored
  EXPECT_TRUE(one_epoch->summary().frozen_weights_verified);

  // Several evaluations in that epoch: the validation rows are stored (and
  // hit), the training rows still are not.
  auto evals = MakeTrainer(Job("head_only {}", "epochs: 1 eval_every_steps: 2"), &initial, options);
  ASSERT_TRUE(evals);
  ASSERT_TRUE(evals->Train().ok());
  const int64_t stored = store->stored_bytes_total();
  EXPECT_GT(stored, 0);
  EXPECT_EQ(evals->summary().prefix_cache_hits, 10 * 2);  // evaluations 2 and 3 of 3
  evals.reset();
  EXPECT_EQ(store->bytes(), 0) << "a job that shares nothing leaves nothing behind";

  // Two epochs: training rows are stored and hit in epoch 2, then dropped.
  auto two = MakeTrainer(Job("head_only {}", "epochs: 2"), &initial, options);
  ASSERT_TRUE(two);
  ASSERT_TRUE(two->Train().ok());
  EXPECT_EQ(two->summary().prefix_cache_hits, 50);
  EXPECT_GT(store->bytes(), 0);
  two.reset();
  EXPECT_EQ(store->bytes(), 0);
}

TEST_F(TrainerTest, SharedOneEpochJobLeavesItsPrefixRowsForTheNext) {
  auto store = std::make_shared<PrefixStore>(int64_t{512} << 20);
  TrainerOptions shared;
  shared.prefix_store = store;
  shared.prefix_cache_shared = true;
  std::map<std::string, torch::Tensor> initial;
  auto first = MakeTrainer(Job("head_only {}", "epochs: 1"), &initial, shared);
  ASSERT_TRUE(first && first->Train().ok());
  EXPECT_EQ(first->summary().prefix_cache_hits, 0);
  first.reset();
  EXPECT_GT(store->bytes(), 0);
  // A later job that does not share still reads what was shared with it,
  // and does not drop it.
  TrainerOptions reader;
  reader.prefix_store = store;
  auto second = MakeTrainer(Job("head_only {}", "epochs: 1"), &initial, reader);
  ASSERT_TRUE(second && second->Train().ok());
  EXPECT_EQ(second->summary().prefix_cache_hits, 50);
  const int64_t kept = store->bytes();
  second.reset();
  EXPECT_EQ(store->bytes(), kept);
}

TEST_F(TrainerTest, SharedPrefixStoreLetsADeeperFreezeStartFromAShallowerOne) {
  // Two trials of a sweep on one store: bottom(1) stores its depth-1
  // outputs; head-only (depth 2) then runs only layer 1 on top of them, and
  // trains as it would alone.
  auto store = std::make_shared<PrefixStore>(int64_t{64} << 20);
  TrainerOptions shared;
  shared.prefix_store = store;
  shared.prefix_cache_shared = true;  // as for a sweep's trials
  std::map<std::string, torch::Tensor> initial;
  auto shallow = MakeTrainer(Job("bottom { num_layers: 1 } frozen_eval_mode: true"), &initial, shared);
  auto deep = MakeTrainer(Job("head_only {}"), &initial, shared);
  auto alone = MakeTrainer(Job("head_only {}"), &initial);
  ASSERT_TRUE(shallow && deep && alone);
  ASSERT_TRUE(shallow->Train().ok());
  EXPECT_EQ(shallow->summary().prefix_rows_from_shallower, 0);
  EXPECT_GT(store->bytes(), 0);
  torch::manual_seed(7);
  ASSERT_TRUE(deep->Train().ok());
  torch::manual_seed(7);
  ASSERT_TRUE(alone->Train().ok());
  // Epoch 1: all 40 train and 10 eval rows start from depth 1; epoch 2 hits.
  EXPECT_EQ(deep->summary().prefix_rows_from_shallower, 50);
  EXPECT_EQ(deep->summary().prefix_cache_hits, 50);
  EXPECT_EQ(alone->summary().prefix_rows_from_shallower, 0);
  ASSERT_EQ(deep->summary().history.size(), alone->summary().history.size());
  for (size_t i = 0; i < deep->summary().history.size(); ++i) {
    EXPECT_NEAR(deep->summary().history[i].loss(), alone->summary().history[i].loss(), 1e-4);
  }
}

TEST_F(TrainerTest, SharedPrefixStoreKeysOnTheFrozenWeights) {
  // Same shapes and data, other embedding weights: nothing stored for one
  // model may serve the other.
  const std::string other_dir = root_ + "/model_other_embeddings";
  {
    auto loaded = model::LoadModelDir(model_dir_, 2);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    torch::NoGradGuard no_grad;
    loaded->model->named_parameters()["bert.embeddings.word_embeddings.weight"].mul_(2);
    model::SaveOptions save;
    save.label_names = {"0", "1"};
    ASSERT_TRUE(model::SaveModelDir(other_dir, loaded->model, *loaded->tokenizer, save).ok());
  }
  auto store = std::make_shared<PrefixStore>(int64_t{64} << 20);
  TrainerOptions shared;
  shared.prefix_store = store;
  shared.prefix_cache_shared = true;  // as for a sweep's trials
  std::map<std::string, torch::Tensor> initial;
  v1::FineTuneJob other_job = Job("head_only {}", "epochs: 1");
  other_job.set_model_uri("file://" + other_dir);
  auto first = MakeTrainer(Job("head_only {}", "epochs: 1"), &initial, shared);
  auto second = MakeTrainer(other_job, &initial, shared);
  auto same = MakeTrainer(Job("head_only {}", "epochs: 1"), &initial, shared);
  ASSERT_TRUE(first && second && same);
  ASSERT_TRUE(first->Train().ok());
  EXPECT_EQ(first->summary().prefix_cache_hits, 0);
  ASSERT_TRUE(second->Train().ok());
  EXPECT_EQ(second->summary().prefix_cache_hits, 0);
  // The control: the same model does hit what `first` stored.
  ASSERT_TRUE(same->Train().ok());
  EXPECT_EQ(same->summary().prefix_cache_hits, 50);
}

TEST_F(TrainerTest, IntraOpThreadsFollowTheOfferedShare) {
  const int before = at::get_num_threads();
  const int offered = before == 1 ? 2 : 1;
  std::atomic<int> polls{0};
  TrainerOptions options;
  options.intra_op_threads = [&] {
    ++polls;
    return offered;
  };
  std::map<std::string, torch::Tensor> initial;
  auto trainer = MakeTrainer(Job("head_only {}", "epochs: 1"), &initial, options);
  ASSERT_NE(trainer, nullptr);
  ASSERT_TRUE(trainer->Train().ok());
  const int during = at::get_num_threads();  // Train() ran on this thread
  at::set_num_threads(before);
  EXPECT_EQ(during, offered);
  EXPECT_GE(polls.load(), 5);  // 5 training batches, plus evaluation batches
}

TEST_F(TrainerTest, RunsTrainingSideBySideOnTheCpuStayReproducible) {
  // Each run draws dropout masks from its own generator; from the global
  // one, two concurrent runs would interleave their draws and both differ
  // from a run alone.
  std::map<std::string, torch::Tensor> initial;
  auto alone = MakeTrainer(Job(""), &initial);
  auto first = MakeTrainer(Job(""), &initial);
  auto second = MakeTrainer(Job(""), &initial);
  ASSERT_TRUE(alone && first && second);
  ASSERT_TRUE(alone->Train().ok());
  std::thread other([&] { EXPECT_TRUE(second->Train().ok()); });
  ASSERT_TRUE(first->Train().ok());
  other.join();
  auto reference = alone->model()->named_parameters();
  for (Trainer* trainer : {first.get(), second.get()}) {
    for (const auto& item : trainer->model()->named_parameters()) {
      EXPECT_TRUE(torch::allclose(item.value(), reference[item.key()], 1e-5, 1e-6))
          << item.key() << " max diff "
          << (item.value() - reference[item.key()]).abs().max().item<float>();
    }
  }
}

TEST_F(TrainerTest, PrefixCacheNotUsedWhenFrozenLayersKeepDropout) {
  // bottom(1) keeps dropout in the frozen prefix (frozen_eval_mode off), so
  // training cannot reuse its outputs; evaluation (eval mode) still can.
  std::map<std::string, torch::Tensor> initial;
  auto trainer = MakeTrainer(Job("bottom { num_layers: 1 }"), &initial);
  ASSERT_NE(trainer, nullptr);
  ASSERT_TRUE(trainer->Train().ok());
  EXPECT_EQ(trainer->summary().prefix_cache_hits, 10);    // second evaluation
  EXPECT_EQ(trainer->summary().prefix_cache_misses, 10);  // first evaluation
}

TEST_F(TrainerTest, VerificationCatchesAChangedFrozenParameter) {
  std::map<std::string, torch::Tensor> initial;
  auto trainer = MakeTrainer(Job("bottom { num_layers: 1 }"), &initial);
  ASSERT_NE(trainer, nullptr);
  {
    // Something other than the optimizer moves a frozen weight.
    torch::NoGradGuard no_grad;
    trainer->model()->named_parameters()["bert.encoder.layer.0.output.dense.bias"].add_(1e-3);
  }
  absl::Status s = trainer->Train();
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(s.message(),
            "frozen parameter bert.encoder.layer.0.output.dense.bias changed during training");
  EXPECT_FALSE(trainer->summary().frozen_weights_verified);
}

TEST_F(TrainerTest, LayerwiseDecayAndScheduleSetGroupRates) {
  std::map<std::string, torch::Tensor> initial;
  auto trainer = MakeTrainer(Job("layerwise_lr_decay: 0.5"), &initial);
  ASSERT_NE(trainer, nullptr);
  // Groups: {decay, no decay} x {0.25 (embeddings), 0.5 (layer 0), 1 (layer 1, head)}.
  EXPECT_EQ(trainer->optimizer().param_groups().size(), 6u);
  ASSERT_TRUE(trainer->Train().ok());
  // After the last of 10 steps the linear schedule's factor is 1 - 9/10.
  std::multiset<double> rates;
  for (const auto& group : trainer->optimizer().param_groups()) {
    rates.insert(static_cast<const torch::optim::AdamWOptions&>(group.options()).lr());
  }
  const std::vector<double> expected = {0.25e-4, 0.25e-4, 0.5e-4, 0.5e-4, 1e-4, 1e-4};
  ASSERT_EQ(rates.size(), expected.size());
  size_t i = 0;
  for (double r : rates) EXPECT_NEAR(r, expected[i++], 1e-9);
}

TEST_F(TrainerTest, GradientAccumulationCountsOptimizerSteps) {
  std::vector<int64_t> logged;
  RunContext c = Context("out_accum");
  c.emit = [&logged](v1::JobEvent e) {
    if (e.has_train()) logged.push_back(e.train().total_steps());
  };
  // 5 micro-batches per epoch in groups of 2: 3 steps per epoch.
  auto result = RunFineTune(Job("", "gradient_accumulation_steps: 2"), c);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->steps(), 6);
  ASSERT_FALSE(logged.empty());
  EXPECT_EQ(logged[0], 6);
}

TEST_F(TrainerTest, RegressionTask) {
  v1::FineTuneJob job = Job("bottom { num_layers: 1 }", "epochs: 3 learning_rate: 0.005");
  job.mutable_task()->set_num_labels(1);
  auto result = RunFineTune(job, Context("out_regression"));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->selection_metric(), "loss");
  EXPECT_EQ(result->best_eval().examples(), 10);
  EXPECT_GT(result->best_eval().mse(), 0.0f);
  EXPECT_NEAR(result->best_eval().mse(), result->best_eval().loss(), 1e-5);
  EXPECT_EQ(result->best_eval().per_class_size(), 0);
  EXPECT_TRUE(result->frozen_weights_verified());
  auto saved = model::LoadModelDir(root_ + "/out_regression", 1);
  ASSERT_TRUE(saved.ok()) << saved.status();
  EXPECT_EQ(saved->model->num_labels(), 1);
}

TEST_F(TrainerTest, ShouldStopCancels) {
  std::atomic<int> polls{0};
  RunContext c = Context("out_cancel");
  c.should_stop = [&polls] { return ++polls > 3; };
  auto result = RunFineTune(Job(""), c);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(result.status().message(), "cancelled at step 3");
  EXPECT_FALSE(fs::exists(c.output_dir + "/model.safetensors"));
}

TEST_F(TrainerTest, CudaWithoutCudaIsFailedPrecondition) {
  if (torch::cuda::is_available()) GTEST_SKIP() << "CUDA present";
  RunContext c = Context("out_cuda");
  c.device = "cuda:0";
  auto result = RunFineTune(Job(""), c);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kFailedPrecondition) << result.status();
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("CUDA is not available"));
}

TEST_F(TrainerTest, ShouldStopDuringEvaluationCancels) {
  // Polls: 5 training micro-batches, then the first evaluation's batches.
  std::atomic<int> polls{0};
  RunContext c = Context("out_cancel_eval");
  c.should_stop = [&polls] { return ++polls > 6; };
  auto result = RunFineTune(Job(""), c);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(result.status().message(), "cancelled at step 5");
  // With a checkpoint directory the finished steps are saved, and the rerun
  // repeats the interrupted evaluation and goes on.
  c.checkpoint_dir = root_ + "/ckpt_eval";
  polls = 0;
  ASSERT_EQ(RunFineTune(Job(""), c).status().code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(fs::exists(c.checkpoint_dir + "/step-000000000005/state.json"));
  c.should_stop = nullptr;
  int evals = 0;
  c.emit = [&evals](v1::JobEvent e) { evals += e.has_eval() ? 1 : 0; };
  auto resumed = RunFineTune(Job(""), c);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(evals, 2);
  EXPECT_EQ(resumed->steps(), 10);
}

TEST_F(TrainerTest, DivergenceFailsWithStep) {
  auto result =
      RunFineTune(Job("", "learning_rate: 1e36 max_grad_norm: 0 weight_decay: 0"), Context("out_nan"));
  ASSERT_FALSE(result.ok());
  EXPECT_THAT(std::string(result.status().message()),
              MatchesRegex("step [0-9]+: non-finite (loss|gradient norm)"));
}

TEST_F(TrainerTest, EarlyStoppingOnNoImprovement) {
  // A learning rate this small cannot change predictions, so evaluations
  // tie and the earlier (first) one stays best.
  std::vector<v1::JobEvent> events;
  RunContext c = Context("out_early");
  c.emit = [&events](v1::JobEvent e) { events.push_back(std::move(e)); };
  auto result = RunFineTune(
      Job("", "learning_rate: 1e-20 eval_every_steps: 1 early_stopping_patience: 2 "
              "lr_schedule: LR_SCHEDULE_CONSTANT"),
      c);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->early_stopped());
  EXPECT_EQ(result->steps(), 3);
  EXPECT_EQ(result->best_eval().step(), 1);
  EXPECT_EQ(result->final_eval().step(), 3);
}

TEST_F(TrainerTest, GradualUnfreezingKeepsOptimizerState) {
  const v1::FineTuneJob job = Job(R"pb(
    head_only {}
    schedule { at_epoch: 2 rules { pattern: "bert\\.encoder\\.layer\\.1\\..*" action: FREEZE_ACTION_TRAIN } }
  )pb");
  std::map<std::string, torch::Tensor> initial;
  std::vector<v1::JobEvent> events;
  TrainerOptions options;
  options.emit = [&events](v1::JobEvent e) { events.push_back(std::move(e)); };
  auto trainer = MakeTrainer(job, &initial, options);
  ASSERT_NE(trainer, nullptr);
  ASSERT_TRUE(trainer->Train().ok());
  EXPECT_TRUE(trainer->summary().frozen_weights_verified);
  for (const auto& item : trainer->model()->named_parameters()) {
    const bool same = torch::equal(item.value(), initial.at(item.key()));
    const bool layer1 = item.key().rfind("bert.encoder.layer.1.", 0) == 0;
    const bool head = item.key().rfind("classifier.", 0) == 0;
    EXPECT_EQ(same, !(layer1 || head)) << item.key();
  }
  // The classifier kept its Adam state across the rebuild: 10 steps in all;
  // layer 1 joined for the second epoch's 5.
  for (const auto& group : trainer->optimizer().param_groups()) {
    for (const auto& p : group.params()) {
      auto it = trainer->optimizer().state().find(
          c10::guts::to_string(p.unsafeGetTensorImpl()));
      ASSERT_NE(it, trainer->optimizer().state().end());
      const auto& st = static_cast<const torch::optim::AdamWParamState&>(*it->second);
      EXPECT_TRUE(st.step() == 10 || st.step() == 5) << st.step();
    }
  }
  EXPECT_EQ(trainer->plan().frozen_prefix_layers, 1);
  bool noticed = false;
  for (const auto& e : events) noticed = noticed || e.has_notice();
  EXPECT_TRUE(noticed);
}

TEST_F(TrainerTest, ResumeFromCheckpointMatchesUninterruptedRun) {
  const v1::FineTuneJob job = Job("bottom { num_layers: 1 }", "checkpoint_every_steps: 3");
  std::vector<int64_t> saved_steps;
  RunContext a = Context("out_resume_a");
  a.checkpoint_dir = root_ + "/ckpt_a";
  a.emit = [&saved_steps](v1::JobEvent e) {
    if (e.has_checkpoint()) saved_steps.push_back(e.checkpoint().step());
  };
  auto straight = RunFineTune(job, a);
  ASSERT_TRUE(straight.ok()) << straight.status();
  // Every 3 steps, plus the end of epoch 1 (step 5); not after the last epoch.
  EXPECT_EQ(saved_steps, (std::vector<int64_t>{3, 5, 6, 9}));
  std::vector<std::string> kept;
  for (const auto& e : fs::directory_iterator(a.checkpoint_dir)) {
    kept.push_back(e.path().filename().string());
  }
  std::sort(kept.begin(), kept.end());
  EXPECT_EQ(kept, (std::vector<std::string>{"step-000000000006", "step-000000000009"}));

  // Stop after 7 steps (mid-epoch 2), then run the same job again. Polls:
  // 5 micro-batches, 2 evaluation batches, then 2 more micro-batches.
  RunContext b = Context("out_resume_b");
  b.checkpoint_dir = root_ + "/ckpt_b";
  std::atomic<int> polls{0};
  b.should_stop = [&polls] { return ++polls > 9; };
  auto stopped = RunFineTune(job, b);
  ASSERT_EQ(stopped.status().code(), absl::StatusCode::kCancelled) << stopped.status();
  EXPECT_EQ(stopped.status().message(), "cancelled at step 7");
  b.should_stop = nullptr;
  std::vector<std::string> notices;
  int64_t first_train_step = -1;
  b.emit = [&](v1::JobEvent e) {
    if (e.has_notice()) notices.push_back(e.notice().message());
    if (e.has_train() && first_train_step < 0) first_train_step = e.train().step();
  };
  // on_step (what freezetune_train_steps_total counts) sees only the steps
  // this run takes: 8, 9 and 10, not the 7 its checkpoint holds.
  std::vector<double> step_seconds;
  int64_t step_samples = 0;
  b.on_step = [&](double seconds, int64_t samples) {
    step_seconds.push_back(seconds);
    step_samples += samples;
  };
  auto resumed = RunFineTune(job, b);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(resumed->steps(), 10);
  EXPECT_EQ(first_train_step, 8);
  EXPECT_EQ(step_seconds.size(), 3u);
  for (double s : step_seconds) EXPECT_GT(s, 0.0);
  EXPECT_GT(step_samples, 0);
  EXPECT_THAT(notices, ::testing::Contains(StartsWith("resumed from checkpoint at step 7")));
  EXPECT_TRUE(resumed->frozen_weights_verified());
  EXPECT_EQ(resumed->best_eval().SerializeAsString(), straight->best_eval().SerializeAsString());

  // Same data order, dropout masks and optimizer state: bit-identical weights.
  auto wa = model::LoadModelDir(a.output_dir, 2);
  auto wb = model::LoadModelDir(b.output_dir, 2);
  ASSERT_TRUE(wa.ok() && wb.ok());
  auto pb = wb->model->named_parameters();
  for (const auto& item : wa->model->named_parameters()) {
    EXPECT_TRUE(torch::equal(item.value(), pb[item.key()])) << item.key();
  }
}

TEST_F(TrainerTest, WithoutValidationTheFinalWeightsAreTheOutput) {
  v1::FineTuneJob job = Job("head_only {}", "validation_split: 0");
  job.clear_validation();
  std::vector<std::string> notices;
  RunContext c = Context("out_noval");
  c.emit = [&notices](v1::JobEvent e) {
    if (e.has_notice()) notices.push_back(e.notice().message());
  };
  auto result = RunFineTune(job, c);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_FALSE(result->has_best_eval());
  EXPECT_EQ(result->steps(), 10);
  EXPECT_TRUE(result->frozen_weights_verified());
  EXPECT_THAT(notices, ::testing::Contains(StartsWith("no validation set")));
}

TEST_F(TrainerTest, ValidationSplitHoldsOutSeededFraction) {
  v1::FineTuneJob job = Job("");
  job.clear_validation();
  job.mutable_hyperparameters()->set_validation_split(0.25f);
  auto a = PrepareJob(job, Context("unused"));
  auto b = PrepareJob(job, Context("unused"));
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(a->train.size(), 30);
  EXPECT_EQ(a->validation.size(), 10);
  EXPECT_EQ(a->validation.ids, b->validation.ids);
}

// ---- tokenization cache ------------------------------------------------------

TEST_F(TrainerTest, PreparingTheSameJobTwiceTokenizesOnce) {
  EncodeCache cache(kDefaultEncodeCacheBytes);
  RunContext c = Context("unused");
  c.encode_cache = &cache;
  auto a = PrepareJob(Job(""), c);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(cache.stats().misses, 2);  // train and validation
  EXPECT_EQ(cache.stats().hits, 0);
  // A different freeze spec and learning rate do not change the encoding.
  auto b = PrepareJob(Job("head_only {}", "learning_rate: 0.01"), c);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(cache.stats().misses, 2);
  EXPECT_EQ(cache.stats().hits, 2);
  EXPECT_EQ(a->train.ids, b->train.ids);
  EXPECT_EQ(a->train.label_ids, b->train.label_ids);
  EXPECT_EQ(a->validation.ids, b->validation.ids);
  // max_seq_length is part of the key.
  auto shorter = PrepareJob(Job("", "max_seq_length: 8"), c);
  ASSERT_TRUE(shorter.ok()) << shorter.status();
  EXPECT_EQ(cache.stats().misses, 4);
  for (const auto& ids : shorter->train.ids) EXPECT_LE(ids.size(), 8u);

  // Without an explicit cache, the process-wide one serves repeats.
  const int64_t global_hits = EncodeCache::Global().stats().hits;
  ASSERT_TRUE(PrepareJob(Job("", "max_seq_length: 13"), Context("unused")).ok());
  ASSERT_TRUE(PrepareJob(Job("", "max_seq_length: 13"), Context("unused")).ok());
  EXPECT_GE(EncodeCache::Global().stats().hits, global_hits + 2);
}

TEST_F(TrainerTest, PrepareJobLabelErrorIsUnchangedAndNotCached) {
  v1::FineTuneJob job = Job("");
  job.mutable_validation()->set_uri(root_ + "/bad_label.jsonl");
  // The error EncodeDataset itself gives for that file under the job's labels.
  v1::DatasetSpec train_spec, bad_spec;
  train_spec.set_uri(root_ + "/train.jsonl");
  bad_spec.set_uri(root_ + "/bad_label.jsonl");
  auto train_raw = data::LoadDataset(train_spec, data::UriOptions{}, "job.train");
  auto bad_raw = data::LoadDataset(bad_spec, data::UriOptions{}, "job.validation");
  ASSERT_TRUE(train_raw.ok() && bad_raw.ok());
  auto labels = data::ResolveLabelSpace(job.task(), *train_raw, "job.train");
  ASSERT_TRUE(labels.ok());
  auto tokenizer = model::WordPieceTokenizer::FromVocabFile(model_dir_ + "/vocab.txt", true);
  ASSERT_TRUE(tokenizer.ok());
  const absl::Status expected =
      data::EncodeDataset(*bad_raw, *labels, *tokenizer, 16, "job.validation").status();
  ASSERT_EQ(expected.message(), "job.validation: line 6: label 5 out of range [0, 2)");

  EncodeCache cache(kDefaultEncodeCacheBytes);
  RunContext c = Context("unused");
  c.encode_cache = &cache;
  for (int round = 0; round < 2; ++round) {
    auto prepared = PrepareJob(job, c);
    ASSERT_FALSE(prepared.ok());
    EXPECT_EQ(prepared.status(), expected);
  }
  EXPECT_EQ(cache.stats().entries, 1);  // train only
  EXPECT_EQ(cache.stats().hits, 1);     // train, the second time
  EXPECT_EQ(cache.stats().misses, 3);   // train once, the bad validation twice
}

// ---- training batch plan: length bucketing on and off ------------------------

// 400 examples whose lengths (3..66 tokens) are spread at random over the
// file, so that only a plan that groups by length gets narrow batches.
data::EncodedDataset MixedLengths() {
  data::EncodedDataset d;
  std::mt19937 rng(7);
  for (int i = 0; i < 400; ++i) {
    const size_t len = 3 + rng() % 64;
    d.ids.emplace_back(len, 1000);
    d.type_ids.emplace_back(len, 0);
    d.label_ids.push_back(i % 2);
  }
  return d;
}

// Mean over batches of (longest - shortest) example length.
double MeanLengthSpread(const data::EncodedDataset& d,
                        const std::vector<std::vector<int64_t>>& plan) {
  double total = 0;
  for (const auto& batch : plan) {
    size_t lo = SIZE_MAX, hi = 0;
    for (int64_t i : batch) {
      lo = std::min(lo, d.ids[static_cast<size_t>(i)].size());
      hi = std::max(hi, d.ids[static_cast<size_t>(i)].size());
    }
    total += static_cast<double>(hi - lo);
  }
  return total / static_cast<double>(plan.size());
}

std::vector<int64_t> SortedIndices(const std::vector<std::vector<int64_t>>& plan) {
  std::vector<int64_t> all;
  for (const auto& batch : plan) all.insert(all.end(), batch.begin(), batch.end());
  std::sort(all.begin(), all.end());
  return all;
}

TEST(TrainingBatchesTest, BucketingGroupsByLengthAndOffDoesNot) {
  const data::EncodedDataset d = MixedLengths();
  std::vector<int64_t> every(400);
  std::iota(every.begin(), every.end(), int64_t{0});
  ResolvedHyperparameters hp;
  hp.batch_size = 8;
  hp.seed = 3;

  ASSERT_TRUE(hp.length_bucketing);  // the default
  const auto bucketed = TrainingBatches(d, hp, 0);
  hp.length_bucketing = false;
  const auto plain = TrainingBatches(d, hp, 0);

  for (const auto* plan : {&bucketed, &plain}) {
    ASSERT_EQ(plan->size(), 50u);
    EXPECT_EQ(SortedIndices(*plan), every);  // each example once, none dropped
  }
  // Lengths are uniform over 64 values: a random batch of 8 spans ~50 of
  // them; the 400 examples fit one bucketing chunk, so grouped batches span
  // ~1.
  EXPECT_LT(MeanLengthSpread(d, bucketed), 3.0);
  EXPECT_GT(MeanLengthSpread(d, plain), 30.0);
  EXPECT_LT(data::PaddedTokens(d, bucketed) * 10, data::PaddedTokens(d, plain) * 7);

  // Off is still a seeded shuffle: deterministic, new each epoch, and not
  // file order.
  EXPECT_EQ(TrainingBatches(d, hp, 0), plain);
  EXPECT_NE(TrainingBatches(d, hp, 1), plain);
  EXPECT_NE(plain.front(), std::vector<int64_t>(every.begin(), every.begin() + 8));
}

TEST_F(TrainerTest, LengthBucketingFalseReachesTheTrainer) {
  auto prepared = PrepareJob(Job("", "length_bucketing: false"), Context("unused"));
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  EXPECT_FALSE(prepared->hp.length_bucketing);
  auto defaulted = PrepareJob(Job(""), Context("unused"));
  ASSERT_TRUE(defaulted.ok()) << defaulted.status();
  EXPECT_TRUE(defaulted->hp.length_bucketing);

  // Same job, same seed: only the batch plan differs, so the weights after
  // one epoch differ when (and only when) the switch changes the plan.
  auto trained = [](const std::string& hyper) {
    std::map<std::string, torch::Tensor> initial;
    auto trainer = MakeTrainer(Job("", "epochs: 1 " + hyper), &initial);
    EXPECT_NE(trainer, nullptr);
    if (trainer == nullptr) return torch::Tensor();
    EXPECT_TRUE(trainer->Train().ok());
    return trainer->model()->named_parameters()["classifier.weight"].detach().clone();
  };
  const torch::Tensor on = trained("");
  const torch::Tensor on_again = trained("length_bucketing: true");
  const torch::Tensor off = trained("length_bucketing: false");
  ASSERT_TRUE(on.defined() && on_again.defined() && off.defined());
  EXPECT_TRUE(torch::equal(on, on_again));
  EXPECT_FALSE(torch::equal(on, off));
}

// ---- submit-time validation -------------------------------------------------

class ValidateJobTest : public TrainerTest {
 protected:
  static absl::Status Validate(const v1::FineTuneJob& job) {
    return ValidateJob(job, data::UriOptions{}, JobLimits{});
  }
};

TEST_F(ValidateJobTest, GoodJobPasses) {
  EXPECT_TRUE(Validate(Job("bottom { num_layers: 1 }")).ok()) << Validate(Job(""));
}

TEST_F(ValidateJobTest, EpochsOutOfRange) {
  // Unset means the default (3); an explicit 0 or a negative count is rejected.
  v1::FineTuneJob job = Job("");
  job.mutable_hyperparameters()->clear_epochs();
  EXPECT_TRUE(Validate(job).ok());
  job.mutable_hyperparameters()->set_epochs(0);
  absl::Status s = Validate(job);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), StartsWith("job.hyperparameters.epochs: must be in [1, "));
  job.mutable_hyperparameters()->set_epochs(-1);
  s = Validate(job);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), StartsWith("job.hyperparameters.epochs: must be in [1, "));
  job.mutable_hyperparameters()->set_epochs(1000);
  EXPECT_THAT(std::string(Validate(job).message()), StartsWith("job.hyperparameters.epochs:"));
}

TEST_F(ValidateJobTest, BadRegex) {
  absl::Status s = Validate(Job(R"pb(rules { pattern: "bert\\.(" action: FREEZE_ACTION_FREEZE })pb"));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), StartsWith("job.freeze.rules[0].pattern: invalid regex:"));
}

TEST_F(ValidateJobTest, RuleMatchingNothing) {
  absl::Status s = Validate(Job(R"pb(rules { pattern: "bert\\.encoder\\.layer\\.7\\..*" action: FREEZE_ACTION_FREEZE })pb"));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              StartsWith("job.freeze.rules[0].pattern: matches no parameter"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("closest names: bert.encoder.layer."));
}

TEST_F(ValidateJobTest, FreezingEverything) {
  absl::Status s = Validate(Job(R"pb(rules { pattern: ".*" action: FREEZE_ACTION_FREEZE })pb"));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "job.freeze: freezes every parameter; nothing would train");
}

TEST_F(ValidateJobTest, BottomBeyondModel) {
  absl::Status s = Validate(Job("bottom { num_layers: 3 }"));
  EXPECT_THAT(std::string(s.message()), StartsWith("job.freeze.bottom.num_layers: must be in [0, 2]"));
}

TEST_F(ValidateJobTest, LabelOutOfRange) {
  v1::FineTuneJob job = Job("");
  job.mutable_train()->set_uri(root_ + "/bad_label.jsonl");
  job.mutable_task()->set_num_labels(2);
  absl::Status s = Validate(job);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), StartsWith("job.train"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("6"));  // the line number
  // The same label in the validation set is caught too.
  v1::FineTuneJob job2 = Job("");
  job2.mutable_validation()->set_uri(root_ + "/bad_label.jsonl");
  absl::Status s2 = Validate(job2);
  EXPECT_EQ(s2.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s2.message()), StartsWith("job.validation"));
}

TEST_F(ValidateJobTest, UnknownFormat) {
  v1::FineTuneJob job = Job("");
  job.mutable_train()->set_uri(root_ + "/data.xyz");
  absl::Status s = Validate(job);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), StartsWith("job.train"));
}

TEST_F(ValidateJobTest, MissingFiles) {
  v1::FineTuneJob job = Job("");
  job.mutable_train()->set_uri(root_ + "/nope.jsonl");
  absl::Status s = Validate(job);
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), StartsWith("job.train.uri: "));
  v1::FineTuneJob job2 = Job("");
  job2.set_model_uri(root_ + "/no_model");
  absl::Status s2 = Validate(job2);
  EXPECT_FALSE(s2.ok());
  EXPECT_THAT(std::string(s2.message()), StartsWith("job.model_uri: "));
  v1::FineTuneJob job3 = Job("");
  job3.mutable_train()->clear_uri();
  EXPECT_EQ(Validate(job3).message(), "job.train.uri: required");
}

// Issue 14 item 6: a model directory missing a file, or whose config.json
// disagrees with its weights, is INVALID_ARGUMENT naming the field at
// submit (it used to be NOT_FOUND, and a shape mismatch passed submit and
// failed the job at run time).
TEST_F(ValidateJobTest, BrokenModelDirsAreInvalidArgumentNamingTheField) {
  auto copy_model = [&](const std::string& name) {
    const std::string dir = root_ + "/" + name;
    fs::remove_all(dir);
    fs::copy(model_dir_, dir, fs::copy_options::recursive);
    return dir;
  };
  for (const char* file : {"config.json", "vocab.txt", "model.safetensors"}) {
    SCOPED_TRACE(file);
    const std::string dir = copy_model(std::string("missing_") + file);
    fs::remove(dir + "/" + file);
    v1::FineTuneJob job = Job("");
    job.set_model_uri("file://" + dir);
    absl::Status s = Validate(job);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_THAT(std::string(s.message()), StartsWith("job.model_uri: "));
    EXPECT_THAT(std::string(s.message()), HasSubstr(dir + "/" + file + ": file not found"));
    v1::PlanFreezeRequest plan;
    plan.set_model_uri(dir);
    plan.mutable_freeze()->mutable_head_only();
    absl::Status p = PlanFreeze(plan, data::UriOptions{}).status();
    EXPECT_EQ(p.code(), absl::StatusCode::kInvalidArgument) << p;
    EXPECT_THAT(std::string(p.message()), StartsWith("model_uri: "));
  }
  const std::string dir = copy_model("config_disagrees");
  std::ifstream config_in(dir + "/config.json");
  auto config = nlohmann::json::parse(config_in);
  config_in.close();
  config["intermediate_size"] = 48;  // the weights have 64
  std::ofstream(dir + "/config.json") << config.dump();
  v1::FineTuneJob job = Job("");
  job.set_model_uri(dir);
  absl::Status s = Validate(job);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), StartsWith("job.model_uri: " + dir + "/model.safetensors: "));
  EXPECT_THAT(std::string(s.message()),
              HasSubstr(": shape [64, 32] in the checkpoint, but config.json implies [48, 32]"));
  // A remote model is refused saying what is supported (the message used to
  // list http:// among the schemes it accepts).
  job.set_model_uri("https://huggingface.co/bert-base-uncased/resolve/main");
  s = Validate(job);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(),
            "job.model_uri: a model is a Hugging Face directory: file:///abs/dir, an absolute "
            "path under a data root, or s3://bucket/prefix; http(s):// URIs are for datasets "
            "only");
  // The intact copy passes: the checks look at what differs, nothing else.
  job.set_model_uri(copy_model("intact"));
  EXPECT_TRUE(Validate(job).ok()) << Validate(job);
}

TEST_F(ValidateJobTest, HyperparametersAndDevice) {
  v1::FineTuneJob job = Job("");
  job.mutable_hyperparameters()->set_max_seq_length(65);  // model has 64 positions
  EXPECT_THAT(std::string(Validate(job).message()),
              StartsWith("job.hyperparameters.max_seq_length: must be in [3, 64]"));
  job = Job("");
  job.set_device("tpu");
  EXPECT_THAT(std::string(Validate(job).message()), StartsWith("job.device: "));
  job.set_device("cuda:1");
  EXPECT_TRUE(Validate(job).ok());
  job = Job(R"pb(head_only {} schedule { at_epoch: 3 rules { pattern: "classifier\\..*" action: FREEZE_ACTION_TRAIN } })pb");
  EXPECT_THAT(std::string(Validate(job).message()), StartsWith("job.freeze.schedule[0].at_epoch: "));
}

TEST_F(ValidateJobTest, PlanFreezeDryRun) {
  v1::PlanFreezeRequest request;
  request.set_model_uri(model_dir_);
  request.mutable_freeze()->mutable_bottom()->set_num_layers(1);
  auto plan = PlanFreeze(request, data::UriOptions{});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->num_layers(), 2);
  EXPECT_EQ(plan->frozen_prefix_layers(), 1);
  EXPECT_EQ(plan->parameters_size(), 41);
  EXPECT_EQ(plan->parameters(40).name(), "classifier.bias");
  EXPECT_EQ(plan->parameters(40).shape(0), 2);
  request.mutable_freeze()->mutable_bottom()->set_num_layers(5);
  EXPECT_THAT(std::string(PlanFreeze(request, data::UriOptions{}).status().message()),
              StartsWith("freeze.bottom.num_layers: "));
}

// ---- LoRA -------------------------------------------------------------------

constexpr const char* kLoraSpec =
    R"pb(lora { rank: 4 alpha: 8 target_modules: "bert\\.encoder\\.layer\\.\\d+\\.attention\\.self\\.(query|value)" })pb";

TEST_F(TrainerTest, LoraTrainsOnlyAdaptersAndHeadAndMergesExactly) {
  std::map<std::string, torch::Tensor> initial;
  auto trainer = MakeTrainer(Job(kLoraSpec), &initial);
  ASSERT_NE(trainer, nullptr);
  // Step 0 equals the base model: every lora_B starts at zero.
  for (const auto& [name, t] : initial) {
    if (name.find("lora_B") != std::string::npos) {
      EXPECT_TRUE(at::all(t == 0).item<bool>()) << name;
    }
  }
  ASSERT_TRUE(trainer->Train().ok());
  EXPECT_TRUE(trainer->summary().frozen_weights_verified);
  std::set<std::string> trained;
  for (const auto& item : trainer->model()->named_parameters()) {
    const bool moved = !torch::equal(item.value(), initial.at(item.key()));
    const bool adapter = item.key().find(".lora_") != std::string::npos;
    const bool head = item.key().rfind("classifier.", 0) == 0;
    EXPECT_EQ(item.value().requires_grad(), adapter || head) << item.key();
    EXPECT_EQ(moved, adapter || head) << item.key();
    if (moved) trained.insert(item.key());
  }
  EXPECT_EQ(trained.size(), 4u * 2 + 2);
  EXPECT_EQ(Impls(trainer->TrainableParameters()).size(), trained.size());
  size_t in_optimizer = 0;
  for (const auto& group : trainer->optimizer().param_groups()) in_optimizer += group.params().size();
  EXPECT_EQ(in_optimizer, trained.size());

  // The merged model computes what base + adapter computes.
  auto& m = trainer->model();
  m->eval();
  torch::NoGradGuard no_grad;
  torch::Tensor ids = at::randint(1000, 2000, {4, 12}, at::kLong);
  torch::Tensor types = at::zeros_like(ids);
  torch::Tensor mask = at::ones_like(ids);
  torch::Tensor adapted = m->forward(ids, types, mask);
  m->MergeLora();
  torch::Tensor merged = m->forward(ids, types, mask);
  EXPECT_LT((merged - adapted).abs().max().item<double>(), 1e-5);
}

TEST_F(TrainerTest, LoraFullOutputIsAMergedHuggingFaceModel) {
  v1::FineTuneJob job = Job(kLoraSpec);
  auto result = RunFineTune(job, Context("out_lora_full"));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->frozen_weights_verified());
  const std::string out = root_ + "/out_lora_full";
  auto input = model::LoadModelDir(model_dir_, 2);
  auto output = model::LoadModelDir(out, 2);
  ASSERT_TRUE(input.ok() && output.ok());
  EXPECT_TRUE(output->unused.empty());  // no lora tensors in model.safetensors
  std::map<std::string, torch::Tensor> in;
  for (const auto& item : input->model->named_parameters()) in[item.key()] = item.value();
  for (const auto& item : output->model->named_parameters()) {
    const std::string& n = item.key();
    const bool adapted = n.find("attention.self.query.weight") != std::string::npos ||
                         n.find("attention.self.value.weight") != std::string::npos;
    const bool head = n.rfind("classifier.", 0) == 0;
    EXPECT_EQ(!torch::equal(item.value(), in.at(n)), adapted || head) << n;
  }
  nlohmann::json plan;
  std::ifstream(out + "/freeze_plan.json") >> plan;
  EXPECT_EQ(plan["lora"]["targets"].size(), 4u);
  EXPECT_EQ(plan["adapter_parameters"], 4 * (4 * 32 + 32 * 4));
  EXPECT_EQ(result->trainable_parameters(), 4 * (4 * 32 + 32 * 4) + 32 * 2 + 2);
}

TEST_F(TrainerTest, LoraPeftAdapterOutput) {
  v1::FineTuneJob job = Job(kLoraSpec);
  job.set_output_format(v1::OUTPUT_FORMAT_PEFT_ADAPTER);
  auto result = RunFineTune(job, Context("out_lora_peft"));
  ASSERT_TRUE(result.ok()) << result.status();
  const std::string out = root_ + "/out_lora_peft";
  EXPECT_TRUE(fs::exists(out + "/adapter_config.json"));
  EXPECT_FALSE(fs::exists(out + "/model.safetensors"));
  auto tensors = model::ReadSafetensors(out + "/adapter_model.safetensors");
  ASSERT_TRUE(tensors.ok()) << tensors.status();
  std::set<std::string> keys;
  for (const auto& [name, t] : tensors->tensors) keys.insert(name);
  EXPECT_EQ(keys.size(), 4u * 2 + 2);
  EXPECT_TRUE(keys.count("base_model.model.classifier.weight"));
  EXPECT_TRUE(keys.count("base_model.model.bert.encoder.layer.1.attention.self.value.lora_B.weight"));
  nlohmann::json config;
  std::ifstream(out + "/adapter_config.json") >> config;
  EXPECT_EQ(config["bias"], "none");
  EXPECT_EQ(config["base_model_name_or_path"], model_dir_);
}

TEST_F(ValidateJobTest, LoraAndOutputFormatErrors) {
  EXPECT_TRUE(Validate(Job(kLoraSpec)).ok()) << Validate(Job(kLoraSpec));
  EXPECT_THAT(std::string(Validate(Job(R"pb(lora { rank: 0 target_modules: ".*query" })pb")).message()),
              StartsWith("job.freeze.lora.rank: must be >= 1"));
  EXPECT_THAT(std::string(Validate(Job(R"pb(lora { rank: 2 target_modules: ".*LayerNorm" })pb")).message()),
              StartsWith("job.freeze.lora.target_modules: matches bert.embeddings.LayerNorm"));
  v1::FineTuneJob job = Job("head_only {}");
  job.set_output_format(v1::OUTPUT_FORMAT_PEFT_ADAPTER);
  EXPECT_THAT(std::string(Validate(job).message()), StartsWith("job.output_format: "));
  v1::PlanFreezeRequest request;
  request.set_model_uri(model_dir_);
  ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(kLoraSpec, request.mutable_freeze()));
  auto plan = PlanFreeze(request, data::UriOptions{});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->adapter_parameters(), 4 * (4 * 32 + 32 * 4));
}

// ---- masked-LM continued pretraining --------------------------------------

class MaskedLmTest : public TrainerTest {
 protected:
  static void SetUpTestSuite() {
    TrainerTest::SetUpTestSuite();
    std::string text;
    const char* subjects[] = {"the cat", "a dog", "the bird", "my friend"};
    const char* verbs[] = {"sat on", "looked at", "walked past", "jumped over"};
    const char* objects[] = {"the mat", "a tree", "the river", "an old house"};
    for (int i = 0; i < 64; ++i) {
      text += absl::StrCat(subjects[i % 4], " ", verbs[(i / 4) % 4], " ", objects[(i / 16) % 4],
                           "\n\n");  // blank lines are skipped
    }
    WriteFile(root_ + "/corpus.txt", text);
  }
  static v1::FineTuneJob MlmJob(const std::string& freeze = "") {
    v1::FineTuneJob job = Job(freeze, "epochs: 8 learning_rate: 0.005 validation_split: 0.25");
    job.mutable_train()->set_uri(root_ + "/corpus.txt");
    job.clear_validation();
    job.mutable_task()->set_type(v1::TASK_TYPE_MASKED_LM);
    return job;
  }
};

TEST_F(MaskedLmTest, LearnsAndWritesABertForMaskedLM) {
  std::vector<v1::JobEvent> events;
  RunContext c = Context("out_mlm");
  c.emit = [&events](v1::JobEvent e) { events.push_back(std::move(e)); };
  auto result = RunFineTune(MlmJob(), c);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->frozen_weights_verified());
  EXPECT_EQ(result->selection_metric(), "loss");
  std::vector<v1::EvalMetrics> evals;
  for (const auto& e : events) {
    if (e.has_eval()) evals.push_back(e.eval());
  }
  ASSERT_EQ(evals.size(), 8u);
  for (const auto& m : evals) {
    EXPECT_GT(m.masked_tokens(), 0);
    EXPECT_EQ(m.masked_tokens(), evals[0].masked_tokens());  // the same masks every time
    EXPECT_EQ(m.examples(), 16);
    EXPECT_GE(m.accuracy(), 0.0f);
    EXPECT_LE(m.accuracy(), 1.0f);
  }
  // From ~9.3 after one epoch (ln 30522 = 10.3 at random init) the
  // repetitive corpus is learnt: 3.9 after eight.
  EXPECT_LT(evals.back().loss(), evals.front().loss());
  // (About 20 masked tokens: the accuracy is coarse.)
  EXPECT_LT(result->best_eval().loss(), 5.0f);
  EXPECT_GT(result->best_eval().accuracy(), 0.0f);

  const std::string out = c.output_dir;
  nlohmann::json config;
  std::ifstream(out + "/config.json") >> config;
  EXPECT_EQ(config["architectures"], nlohmann::json({"BertForMaskedLM"}));
  EXPECT_FALSE(config.contains("id2label"));
  auto tensors = model::ReadSafetensors(out + "/model.safetensors");
  ASSERT_TRUE(tensors.ok()) << tensors.status();
  std::set<std::string> keys;
  for (const auto& [name, t] : tensors->tensors) keys.insert(name);
  EXPECT_TRUE(keys.count("cls.predictions.bias"));
  EXPECT_TRUE(keys.count("cls.predictions.transform.dense.weight"));
  EXPECT_TRUE(keys.count("cls.predictions.transform.LayerNorm.bias"));
  for (const std::string& k : keys) {
    EXPECT_FALSE(absl::StartsWith(k, "classifier.") || absl::StartsWith(k, "bert.pooler.") ||
                 absl::StartsWith(k, "cls.predictions.decoder"))
        << k;
  }

  // The output is the base of a later classification job: the encoder comes
  // from it, the pooler and classifier start fresh.
  v1::FineTuneJob job = Job("bottom { num_layers: 1 }");
  job.set_model_uri("file://" + out);
  std::vector<std::string> notices;
  RunContext cc = Context("out_mlm_then_classify");
  cc.emit = [&notices](v1::JobEvent e) {
    if (e.has_notice()) notices.push_back(e.notice().message());
  };
  auto second = RunFineTune(job, cc);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_TRUE(second->frozen_weights_verified());
  bool fresh_pooler = false, unused_head = false;
  for (const auto& n : notices) {
    fresh_pooler |= absl::StrContains(n, "bert.pooler.dense.weight");
    unused_head |= absl::StrContains(n, "unused checkpoint tensors: cls.predictions.bias");
  }
  EXPECT_TRUE(fresh_pooler);
  EXPECT_TRUE(unused_head);
  auto mlm_out = model::LoadModelDir(out, 0, model::BertHead::kMaskedLm);
  auto cls_out = model::LoadModelDir(cc.output_dir, 2);
  ASSERT_TRUE(mlm_out.ok() && cls_out.ok());
  EXPECT_TRUE(mlm_out->newly_initialized.empty());
  const std::string w = "bert.encoder.layer.0.attention.self.query.weight";  // frozen by bottom(1)
  EXPECT_TRUE(torch::equal(mlm_out->model->named_parameters()[w], cls_out->model->named_parameters()[w]));

  // A PEFT adapter on that base carries the fresh pooler too (frozen, but
  // not in the base, so PeftModel.from_pretrained could not rebuild it).
  v1::FineTuneJob lora = Job(kLoraSpec);
  lora.set_model_uri("file://" + out);
  lora.set_output_format(v1::OUTPUT_FORMAT_PEFT_ADAPTER);
  RunContext lc = Context("out_mlm_then_lora");
  ASSERT_TRUE(RunFineTune(lora, lc).ok());
  auto adapter = model::ReadSafetensors(lc.output_dir + "/adapter_model.safetensors");
  ASSERT_TRUE(adapter.ok()) << adapter.status();
  std::map<std::string, torch::Tensor> saved(adapter->tensors.begin(), adapter->tensors.end());
  EXPECT_TRUE(saved.count("base_model.model.bert.pooler.dense.weight"));
  EXPECT_TRUE(saved.count("base_model.model.bert.pooler.dense.bias"));
  EXPECT_TRUE(saved.count("base_model.model.classifier.weight"));
  // The base plus the adapter is the trained model, pooler included.
  auto base = model::LoadModelDir(out, 2);
  ASSERT_TRUE(base.ok()) << base.status();
  ASSERT_TRUE(model::LoadPeftAdapter(lc.output_dir, base->model).ok());
  const std::string pooler = "bert.pooler.dense.weight";
  EXPECT_TRUE(torch::equal(base->model->named_parameters()[pooler],
                           saved.at("base_model.model." + pooler)));
}

TEST_F(MaskedLmTest, FreezeSpecsApplyAndTheTiedDecoderFollowsTheEmbeddings) {
  std::map<std::string, torch::Tensor> initial;
  v1::FineTuneJob job = MlmJob("bottom { num_layers: 1 }");
  job.mutable_task()->mutable_masked_lm()->set_whole_word_masking(true);
  job.mutable_hyperparameters()->set_epochs(1);
  auto prepared = PrepareJob(job, Context("unused"));
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  EXPECT_EQ(prepared->loaded.model->head(), model::BertHead::kMaskedLm);
  for (const auto& d : prepared->plan.parameters) {
    EXPECT_NE(d.name.rfind("classifier.", 0), 0u) << d.name;
    EXPECT_NE(d.name.rfind("bert.pooler.", 0), 0u) << d.name;
  }
  auto result = RunFineTune(job, Context("out_mlm_bottom1"));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->frozen_weights_verified());
  auto in = model::LoadModelDir(model_dir_, 2);
  auto out = model::LoadModelDir(root_ + "/out_mlm_bottom1", 0, model::BertHead::kMaskedLm);
  ASSERT_TRUE(in.ok() && out.ok());
  const std::string emb = "bert.embeddings.word_embeddings.weight";
  EXPECT_TRUE(torch::equal(in->model->named_parameters()[emb], out->model->named_parameters()[emb]));
  const std::string top = "bert.encoder.layer.1.output.dense.weight";
  EXPECT_FALSE(torch::equal(in->model->named_parameters()[top], out->model->named_parameters()[top]));
}

TEST_F(ValidateJobTest, MaskedLmErrors) {
  v1::FineTuneJob job = Job("");
  job.mutable_task()->set_type(v1::TASK_TYPE_MASKED_LM);
  EXPECT_TRUE(Validate(job).ok()) << Validate(job);  // labels in the file are ignored
  job.mutable_task()->set_num_labels(2);
  EXPECT_THAT(std::string(Validate(job).message()), StartsWith("job.task: a masked-LM task has no labels"));
  job.mutable_task()->set_num_labels(0);
  job.mutable_task()->mutable_masked_lm()->set_mask_probability(1.5f);
  EXPECT_THAT(std::string(Validate(job).message()),
              StartsWith("job.task.masked_lm.mask_probability: must be in (0, 1)"));
  job.mutable_task()->clear_masked_lm();
  job.mutable_hyperparameters()->set_selection_metric("macro_f1");
  EXPECT_THAT(std::string(Validate(job).message()),
              StartsWith("job.hyperparameters.selection_metric: a masked-LM job selects by"));
  v1::FineTuneJob text = Job("");
  WriteFile(root_ + "/plain.txt", "just some text\nmore text\n");
  text.mutable_train()->set_uri(root_ + "/plain.txt");
  EXPECT_THAT(std::string(Validate(text).message()), StartsWith("job.train.format: plain text"));
  v1::FineTuneJob peft = Job(R"pb(lora { rank: 2 target_modules: ".*query" })pb");
  peft.mutable_task()->set_type(v1::TASK_TYPE_MASKED_LM);
  peft.set_output_format(v1::OUTPUT_FORMAT_PEFT_ADAPTER);
  EXPECT_THAT(std::string(Validate(peft).message()), StartsWith("job.output_format: "));

  v1::PlanFreezeRequest request;
  request.set_model_uri(model_dir_);
  request.mutable_task()->set_type(v1::TASK_TYPE_MASKED_LM);
  request.mutable_freeze()->mutable_head_only();
  auto plan = PlanFreeze(request, data::UriOptions{});
  ASSERT_TRUE(plan.ok()) << plan.status();
  int64_t trainable = 0;
  for (const auto& p : plan->parameters()) {
    if (p.trainable()) {
      EXPECT_EQ(p.name().rfind("cls.predictions.", 0), 0u) << p.name();
      trainable += p.numel();
    }
  }
  EXPECT_EQ(trainable, 30522 + 32 * 32 + 32 + 2 * 32);
}

// ---- delta outputs -------------------------------------------------------

std::set<std::string> TensorNames(const std::string& path) {
  std::set<std::string> out;
  auto tensors = model::ReadSafetensors(path);
  EXPECT_TRUE(tensors.ok()) << tensors.status();
  if (tensors.ok()) {
    for (const auto& [name, t] : tensors->tensors) out.insert(name);
  }
  return out;
}

TEST(FileDigestTest, Sha256OfAFile) {
  const std::string path = ::testing::TempDir() + "/digest_abc";
  WriteFile(path, "abc");  // FIPS 180-2's first example
  EXPECT_EQ(*model::Sha256File(path),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(model::Sha256File(path + ".missing").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ValidateJobTest, DeltaOutputsHoldOnlyChangedTensorsAndNeedTheirBase) {
  // Head-only: the classifier alone, pinned to the base by SHA-256.
  v1::FineTuneJob job = Job("head_only {}", "epochs: 1");
  job.set_output_format(v1::OUTPUT_FORMAT_DELTA);
  RunContext c = Context("out_delta_head");
  auto result = RunFineTune(job, c);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->frozen_weights_verified());
  const std::string out = c.output_dir;
  EXPECT_FALSE(fs::exists(out + "/model.safetensors"));
  EXPECT_EQ(TensorNames(out + "/delta.safetensors"),
            (std::set<std::string>{"classifier.bias", "classifier.weight"}));
  auto manifest = model::ReadDeltaManifest(out);
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  EXPECT_EQ(manifest->base_name, model_dir_);
  EXPECT_EQ(manifest->sha256.at("model.safetensors"),
            *model::Sha256File(model_dir_ + "/model.safetensors"));
  EXPECT_LT(fs::file_size(out + "/delta.safetensors") * 1000,
            fs::file_size(model_dir_ + "/model.safetensors"));
  // Base + delta: the encoder is the base's, the classifier the delta's.
  auto applied = model::LoadDeltaModelDir(out, model_dir_, 2, model::BertHead::kSequenceClassification,
                                          "f");
  ASSERT_TRUE(applied.ok()) << applied.status();
  EXPECT_TRUE(applied->newly_initialized.empty());
  auto base = model::LoadModelDir(model_dir_, 2);
  ASSERT_TRUE(base.ok());
  auto delta = model::ReadSafetensors(out + "/delta.safetensors");
  ASSERT_TRUE(delta.ok());
  const std::map<std::string, torch::Tensor> delta_tensors(delta->tensors.begin(),
                                                           delta->tensors.end());
  for (const auto& p : applied->model->named_parameters()) {
    const torch::Tensor expected = absl::StartsWith(p.key(), "classifier.")
                                       ? delta_tensors.at(p.key())
                                       : base->model->named_parameters()[p.key()];
    EXPECT_TRUE(torch::equal(p.value(), expected)) << p.key();
  }

  // A delta is a model_uri together with its base; a later delta output keeps
  // both deltas' tensors and pins the original base.
  v1::FineTuneJob next = Job("bottom { num_layers: 1 }", "epochs: 1");
  next.set_model_uri("file://" + out);
  next.set_output_format(v1::OUTPUT_FORMAT_DELTA);
  EXPECT_THAT(std::string(Validate(next).message()),
              StartsWith("job.base_model_uri: required: job.model_uri is a delta output"));
  next.set_base_model_uri("file://" + model_dir_);
  EXPECT_TRUE(Validate(next).ok()) << Validate(next);
  RunContext c2 = Context("out_delta_chain");
  auto chained = RunFineTune(next, c2);
  ASSERT_TRUE(chained.ok()) << chained.status();
  const std::set<std::string> names = TensorNames(c2.output_dir + "/delta.safetensors");
  EXPECT_TRUE(names.count("classifier.weight"));
  EXPECT_TRUE(names.count("bert.encoder.layer.1.output.dense.weight"));
  EXPECT_TRUE(names.count("bert.pooler.dense.weight"));
  EXPECT_FALSE(names.count("bert.encoder.layer.0.output.dense.weight"));  // frozen
  EXPECT_FALSE(names.count("bert.embeddings.word_embeddings.weight"));
  auto chained_manifest = model::ReadDeltaManifest(c2.output_dir);
  ASSERT_TRUE(chained_manifest.ok());
  EXPECT_EQ(chained_manifest->sha256, manifest->sha256);

  // A base whose bytes differ is refused, naming the field and both digests.
  const std::string other = root_ + "/other_base";
  fs::create_directories(other);
  for (const char* f : {"model.safetensors", "vocab.txt", "tokenizer_config.json"}) {
    fs::copy_file(model_dir_ + "/" + f, other + "/" + f, fs::copy_options::overwrite_existing);
  }
  std::string config;
  {
    std::ifstream in(model_dir_ + "/config.json");
    config.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  WriteFile(other + "/config.json", config + "\n");
  next.set_base_model_uri("file://" + other);
  absl::Status s = Validate(next);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              StartsWith("job.base_model_uri: not the base this delta was made from: "));
  EXPECT_THAT(std::string(s.message()), HasSubstr(manifest->sha256.at("config.json")));
  EXPECT_FALSE(RunFineTune(next, Context("out_delta_wrong_base")).ok());
  // The delta itself is untrusted input: its tensors must be those delta.json
  // lists, and its config may not describe another encoder than its base's.
  const std::string tampered = root_ + "/tampered_delta";
  fs::copy(out, tampered, fs::copy_options::recursive);
  {
    std::ifstream in(out + "/delta.json");
    nlohmann::json m = nlohmann::json::parse(in);
    m["tensors"].push_back("bert.pooler.dense.weight");
    WriteFile(tampered + "/delta.json", m.dump());
  }
  auto listed = model::LoadDeltaModelDir(tampered, model_dir_, 2,
                                         model::BertHead::kSequenceClassification, "f");
  EXPECT_EQ(listed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(listed.status().message()),
              HasSubstr("bert.pooler.dense.weight is listed in delta.json but not stored"));
  fs::copy_file(out + "/delta.json", tampered + "/delta.json", fs::copy_options::overwrite_existing);
  {
    std::ifstream in(out + "/config.json");
    nlohmann::json c = nlohmann::json::parse(in);
    c["hidden_act"] = "relu";
    WriteFile(tampered + "/config.json", c.dump());
  }
  next.set_model_uri("file://" + tampered);
  next.set_base_model_uri("file://" + model_dir_);
  EXPECT_THAT(std::string(Validate(next).message()),
              StartsWith("job.model_uri: " + tampered + "/config.json: hidden_act differs"));
  // base_model_uri is only for a delta.
  v1::FineTuneJob full = Job("");
  full.set_base_model_uri("file://" + model_dir_);
  EXPECT_THAT(std::string(Validate(full).message()), StartsWith("job.base_model_uri: only for a delta"));
  // PlanFreeze needs only the delta's config.
  v1::PlanFreezeRequest plan_request;
  plan_request.set_model_uri(out);
  plan_request.mutable_freeze()->mutable_head_only();
  auto plan = PlanFreeze(plan_request, data::UriOptions{});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->trainable_parameters(), 2 * 32 + 2);
}

}  // namespace
}  // namespace freezetune::train
