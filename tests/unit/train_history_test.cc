// trainer_state.json (Hugging Face Trainer layout) and history.csv from a
// run's TrainMetrics/EvalMetrics events, written to a real directory.
#include "server/train/train_history.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace freezetune::train {
namespace {

v1::JobEvent Train(int64_t step, float epoch, float loss, float lr) {
  v1::JobEvent e;
  e.mutable_train()->set_step(step);
  e.mutable_train()->set_epoch(epoch);
  e.mutable_train()->set_loss(loss);
  e.mutable_train()->set_learning_rate(lr);
  return e;
}

v1::JobEvent Eval(int64_t step, float epoch, float loss, float acc) {
  v1::JobEvent e;
  e.mutable_eval()->set_step(step);
  e.mutable_eval()->set_epoch(epoch);
  e.mutable_eval()->set_loss(loss);
  e.mutable_eval()->set_accuracy(acc);
  e.mutable_eval()->set_macro_f1(acc - 0.01f);
  return e;
}

TrainerStateInfo Info(const std::string& dir) {
  TrainerStateInfo info;
  info.output_dir = dir;
  info.selection_metric = "accuracy";
  info.global_step = 20;
  info.max_steps = 20;
  info.epochs = 2;
  info.batch_size = 8;
  info.logging_steps = 10;
  info.train_seconds = 3.5;
  info.has_best = true;
  info.best_eval.set_accuracy(0.75f);
  return info;
}

class TrainHistoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    h_.Record(Train(10, 0.5f, 0.69f, 1e-3f));
    h_.Record(Eval(10, 0.5f, 0.65f, 0.6f));
    v1::JobEvent other;
    other.mutable_notice()->set_message("ignored");
    h_.Record(other);
    h_.Record(Train(20, 1.0f, 0.5f, 5e-4f));
    h_.Record(Eval(20, 1.0f, 0.55f, 0.75f));
  }
  TrainHistory h_;
};

TEST_F(TrainHistoryTest, TrainerStateHasTheHuggingFaceLayout) {
  nlohmann::json s = h_.TrainerState(Info("/out/job-1"));
  EXPECT_EQ(s["global_step"], 20);
  EXPECT_EQ(s["max_steps"], 20);
  EXPECT_EQ(s["best_model_checkpoint"], "/out/job-1");
  EXPECT_NEAR(s["best_metric"].get<double>(), 0.75, 1e-6);
  EXPECT_EQ(s["num_train_epochs"], 2);
  EXPECT_EQ(s["train_batch_size"], 8);
  const nlohmann::json& log = s["log_history"];
  ASSERT_EQ(log.size(), 5u);  // 2 train, 2 eval, the closing entry
  EXPECT_EQ(log[0]["step"], 10);
  EXPECT_NEAR(log[0]["loss"].get<double>(), 0.69, 1e-6);
  EXPECT_NEAR(log[0]["learning_rate"].get<double>(), 1e-3, 1e-9);
  EXPECT_NEAR(log[0]["epoch"].get<double>(), 0.5, 1e-9);
  EXPECT_NEAR(log[1]["eval_accuracy"].get<double>(), 0.6, 1e-6);
  EXPECT_NEAR(log[1]["eval_loss"].get<double>(), 0.65, 1e-6);
  EXPECT_TRUE(log[1].contains("eval_macro_f1"));
  EXPECT_FALSE(log[1].contains("loss"));
  EXPECT_EQ(log[3]["step"], 20);
  EXPECT_NEAR(log[4]["train_loss"].get<double>(), (0.69 + 0.5) / 2, 1e-6);
  EXPECT_NEAR(log[4]["train_runtime"].get<double>(), 3.5, 1e-9);
}

TEST_F(TrainHistoryTest, CsvHasOneRowPerEntryAndFilesAreWritten) {
  const std::string csv = h_.Csv(Info("/out"));
  std::istringstream in(csv);
  std::string header, first, second;
  std::getline(in, header);
  std::getline(in, first);
  std::getline(in, second);
  EXPECT_EQ(header,
            "step,epoch,loss,learning_rate,samples_per_second,eval_loss,eval_accuracy,"
            "eval_macro_f1,eval_mcc");
  EXPECT_EQ(first, "10,0.5,0.69,0.001,0,,,,");
  EXPECT_EQ(second.substr(0, 10), "10,0.5,,,,");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 5);

  const std::string dir = ::testing::TempDir() + "/train_history_test";
  std::filesystem::create_directories(dir);
  ASSERT_TRUE(h_.WriteFiles(Info(dir)).ok());
  std::ifstream state(dir + "/trainer_state.json");
  nlohmann::json parsed = nlohmann::json::parse(state);
  EXPECT_EQ(parsed["log_history"].size(), 5u);
  EXPECT_TRUE(std::filesystem::exists(dir + "/history.csv"));
  std::filesystem::remove_all(dir);
}

TEST(TrainHistoryRegressionTest, RegressionReportsCorrelations) {
  TrainHistory h;
  v1::JobEvent e;
  e.mutable_eval()->set_step(5);
  e.mutable_eval()->set_pearson(0.9f);
  h.Record(e);
  TrainerStateInfo info;
  info.regression = true;
  nlohmann::json s = h.TrainerState(info);
  EXPECT_NEAR(s["log_history"][0]["eval_pearson"].get<double>(), 0.9, 1e-6);
  EXPECT_FALSE(s["log_history"][0].contains("eval_accuracy"));
  EXPECT_TRUE(s["best_metric"].is_null());
}

}  // namespace
}  // namespace freezetune::train
