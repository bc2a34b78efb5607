// Checkpoint files on their own: round trip, newest-wins, pruning to
// keep_last, partial directories ignored, and a damaged state refused.
#include "server/train/checkpoint.h"

#include <ATen/ATen.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"

namespace freezetune::train {
namespace {

namespace fs = std::filesystem;

class TrainCheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/freezetune_ckpt_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  static CheckpointState State(int64_t step) {
    CheckpointState s;
    s.step = step;
    s.epoch = 1;
    s.next_micro = 3;
    s.stages_applied = {true, false};
    s.evals_without_improvement = 2;
    s.last_eval_step = step - 1;
    s.has_best = true;
    s.best_eval.set_accuracy(0.75f);
    s.best_eval.set_step(step - 1);
    s.final_eval.set_loss(0.5f);
    s.history = {s.best_eval, s.final_eval};
    s.rng_state = std::string("\x00\x01\xff rng", 7);
    s.parameter_names = {"a.weight", "b.bias"};
    s.weights = {{"a.weight", at::arange(6, at::kFloat).reshape({2, 3}) * step}};
    s.best_weights = {{"a.weight", at::ones({2, 3})}};
    s.optimizer["a.weight"] = AdamMoments{step, at::full({2, 3}, 0.5), at::full({2, 3}, 0.25)};
    return s;
  }

  std::string dir_;
};

TEST_F(TrainCheckpointTest, RoundTrip) {
  auto written = WriteCheckpoint(dir_, State(7));
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_EQ(*written, dir_ + "/step-000000000007");
  auto read = ReadLatestCheckpoint(dir_);
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_TRUE(read->has_value());
  const CheckpointState& s = **read;
  EXPECT_EQ(s.step, 7);
  EXPECT_EQ(s.epoch, 1);
  EXPECT_EQ(s.next_micro, 3);
  EXPECT_EQ(s.stages_applied, (std::vector<bool>{true, false}));
  EXPECT_EQ(s.evals_without_improvement, 2);
  EXPECT_EQ(s.last_eval_step, 6);
  EXPECT_TRUE(s.has_best);
  EXPECT_FLOAT_EQ(s.best_eval.accuracy(), 0.75f);
  EXPECT_FLOAT_EQ(s.final_eval.loss(), 0.5f);
  ASSERT_EQ(s.history.size(), 2u);
  EXPECT_EQ(s.rng_state, std::string("\x00\x01\xff rng", 7));
  EXPECT_EQ(s.parameter_names, (std::vector<std::string>{"a.weight", "b.bias"}));
  ASSERT_EQ(s.weights.size(), 1u);
  EXPECT_TRUE(at::equal(s.weights[0].second, at::arange(6, at::kFloat).reshape({2, 3}) * 7));
  ASSERT_EQ(s.best_weights.size(), 1u);
  ASSERT_EQ(s.optimizer.count("a.weight"), 1u);
  EXPECT_EQ(s.optimizer.at("a.weight").step, 7);
  EXPECT_TRUE(at::equal(s.optimizer.at("a.weight").exp_avg_sq, at::full({2, 3}, 0.25)));
}

TEST_F(TrainCheckpointTest, NewestWinsAndOldOnesArePruned) {
  for (int64_t step : {2, 4, 6}) ASSERT_TRUE(WriteCheckpoint(dir_, State(step), 2).ok());
  EXPECT_FALSE(fs::exists(dir_ + "/step-000000000002"));
  EXPECT_TRUE(fs::exists(dir_ + "/step-000000000004"));
  EXPECT_TRUE(fs::exists(dir_ + "/step-000000000006"));
  // A crash mid-write leaves only a .partial directory: ignored on read,
  // removed by the next write.
  fs::create_directories(dir_ + "/step-000000000008.partial");
  auto read = ReadLatestCheckpoint(dir_);
  ASSERT_TRUE(read.ok() && read->has_value());
  EXPECT_EQ((*read)->step, 6);
  ASSERT_TRUE(WriteCheckpoint(dir_, State(9), 2).ok());
  EXPECT_FALSE(fs::exists(dir_ + "/step-000000000008.partial"));
  EXPECT_EQ((*ReadLatestCheckpoint(dir_))->step, 9);
}

TEST_F(TrainCheckpointTest, NoneAndDamaged) {
  auto none = ReadLatestCheckpoint(dir_ + "/missing");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  ASSERT_TRUE(WriteCheckpoint(dir_, State(3)).ok());
  std::ofstream(dir_ + "/step-000000000003/state.json") << "{\"version\": 1}";
  auto damaged = ReadLatestCheckpoint(dir_);
  EXPECT_EQ(damaged.status().code(), absl::StatusCode::kDataLoss) << damaged.status();
  std::ofstream(dir_ + "/step-000000000003/state.json") << "not json";
  EXPECT_EQ(ReadLatestCheckpoint(dir_).status().code(), absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace freezetune::train
