// Hyperparameter defaults, range checks with field paths, step counting and
// the LR schedules.
#include "server/train/hyperparameters.h"

#include <cmath>

#include "gmock/gmock.h"
#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"
#include "server/train/lr_schedule.h"

namespace freezetune::train {
namespace {

using ::testing::StartsWith;

v1::Hyperparameters H(const std::string& text) {
  v1::Hyperparameters h;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &h)) << text;
  return h;
}

absl::Status Validate(const std::string& text, bool regression = false) {
  return ValidateHyperparameters(H(text), regression, /*model_max_positions=*/256, JobLimits{},
                                 "job.hyperparameters");
}

TEST(TrainHyperparametersTest, Defaults) {
  ResolvedHyperparameters r = WithDefaults(v1::Hyperparameters(), false);
  EXPECT_EQ(r.epochs, 3);
  EXPECT_EQ(r.batch_size, 32);
  EXPECT_DOUBLE_EQ(r.learning_rate, 5e-5);
  EXPECT_DOUBLE_EQ(r.weight_decay, 0.01);
  EXPECT_EQ(r.max_seq_length, 128);
  EXPECT_EQ(r.seed, 42);
  EXPECT_EQ(r.log_every_steps, 10);
  EXPECT_DOUBLE_EQ(r.max_grad_norm, 1.0);
  EXPECT_EQ(r.gradient_accumulation_steps, 1);
  EXPECT_NEAR(r.validation_split, 0.1, 1e-7);
  EXPECT_EQ(r.lr_schedule, v1::LR_SCHEDULE_LINEAR);
  EXPECT_EQ(r.selection_metric, "accuracy");
  EXPECT_TRUE(r.length_bucketing);
  EXPECT_EQ(WithDefaults(v1::Hyperparameters(), true).selection_metric, "loss");
  EXPECT_TRUE(Validate("").ok());
}

TEST(TrainHyperparametersTest, ExplicitValuesAndOptionalZeros) {
  ResolvedHyperparameters r = WithDefaults(
      H("epochs: 5 batch_size: 8 weight_decay: 0 max_grad_norm: 0 seed: 0 validation_split: 0 "
        "selection_metric: 'mcc' lr_schedule: LR_SCHEDULE_COSINE"),
      false);
  EXPECT_EQ(r.epochs, 5);
  EXPECT_EQ(r.batch_size, 8);
  EXPECT_EQ(r.weight_decay, 0.0);
  EXPECT_EQ(r.max_grad_norm, 0.0);
  EXPECT_EQ(r.seed, 0);
  EXPECT_EQ(r.validation_split, 0.0);
  EXPECT_EQ(r.selection_metric, "mcc");
  EXPECT_EQ(r.lr_schedule, v1::LR_SCHEDULE_COSINE);
}

// length_bucketing is optional: unset keeps bucketing on, an explicit false
// turns it off, an explicit true keeps it.
TEST(TrainHyperparametersTest, LengthBucketingSwitch) {
  EXPECT_TRUE(WithDefaults(H(""), false).length_bucketing);
  EXPECT_FALSE(WithDefaults(H("length_bucketing: false"), false).length_bucketing);
  EXPECT_TRUE(WithDefaults(H("length_bucketing: true"), false).length_bucketing);
  EXPECT_TRUE(Validate("length_bucketing: false").ok());
}

TEST(TrainHyperparametersTest, RangeErrorsNameTheField) {
  struct Case {
    const char* text;
    const char* prefix;
  } cases[] = {
      {"epochs: 0", "job.hyperparameters.epochs: must be in [1, 100] (got 0)"},
      {"epochs: -1", "job.hyperparameters.epochs: must be in [1, 100] (got -1)"},
      {"epochs: 101", "job.hyperparameters.epochs: must be in [1, 100] (got 101)"},
      {"batch_size: 2000", "job.hyperparameters.batch_size: must be in [1, 1024]"},
      {"learning_rate: -0.001", "job.hyperparameters.learning_rate: must be > 0 and finite"},
      {"learning_rate: inf", "job.hyperparameters.learning_rate: must be > 0 and finite"},
      {"learning_rate: nan", "job.hyperparameters.learning_rate: must be > 0 and finite"},
      {"warmup_ratio: 1", "job.hyperparameters.warmup_ratio: must be in [0, 1)"},
      {"max_seq_length: 300", "job.hyperparameters.max_seq_length: must be in [3, 256]"},
      {"max_seq_length: 2", "job.hyperparameters.max_seq_length: must be >= 3"},
      {"validation_split: 0.6", "job.hyperparameters.validation_split: must be in [0, 0.5]"},
      {"selection_metric: 'pearson'", "job.hyperparameters.selection_metric: unknown metric"},
      {"weight_decay: -1", "job.hyperparameters.weight_decay: must be >= 0"},
      {"max_grad_norm: -1", "job.hyperparameters.max_grad_norm: must be >= 0"},
      {"gradient_accumulation_steps: -2", "job.hyperparameters.gradient_accumulation_steps:"},
      {"log_every_steps: -1", "job.hyperparameters.log_every_steps:"},
      {"early_stopping_patience: -1", "job.hyperparameters.early_stopping_patience:"},
  };
  for (const auto& c : cases) {
    absl::Status s = Validate(c.text);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.text;
    EXPECT_THAT(std::string(s.message()), StartsWith(c.prefix)) << c.text;
  }
  EXPECT_TRUE(Validate("selection_metric: 'pearson'", /*regression=*/true).ok());
  EXPECT_FALSE(Validate("selection_metric: 'accuracy'", /*regression=*/true).ok());
  // A model whose positions cannot hold the default 128 is fine without a
  // value: the default shrinks to fit (DefaultMaxSeqLength).
  EXPECT_TRUE(ValidateHyperparameters(v1::Hyperparameters(), false, 64, JobLimits{},
                                      "job.hyperparameters")
                  .ok());
}

TEST(TrainHyperparametersTest, DefaultMaxSeqLengthTakesTheSmallest) {
  JobLimits limits;
  EXPECT_EQ(DefaultMaxSeqLength(512, limits), 128);
  EXPECT_EQ(DefaultMaxSeqLength(64, limits), 64);
  limits.max_seq_length = 32;
  EXPECT_EQ(DefaultMaxSeqLength(512, limits), 32);
}

TEST(TrainHyperparametersTest, StepCounting) {
  ResolvedHyperparameters r;
  r.batch_size = 4;
  r.epochs = 3;
  EXPECT_EQ(StepsPerEpoch(10, r), 3);
  EXPECT_EQ(TotalSteps(10, r), 9);
  r.gradient_accumulation_steps = 2;
  EXPECT_EQ(StepsPerEpoch(10, r), 2);  // 3 micro-batches -> 2 steps
  EXPECT_EQ(StepsPerEpoch(0, r), 0);
  r.warmup_ratio = 0.1f;  // float rounding must not add a step
  EXPECT_EQ(WarmupSteps(10, r), 1);
  EXPECT_EQ(WarmupSteps(11, r), 2);
  r.warmup_ratio = 0;
  EXPECT_EQ(WarmupSteps(10, r), 0);
}

TEST(TrainLrScheduleTest, LinearWithWarmup) {
  // transformers.get_linear_schedule_with_warmup(warmup=2, total=10)
  EXPECT_DOUBLE_EQ(LrFactor(v1::LR_SCHEDULE_LINEAR, 0, 10, 2), 0.0);
  EXPECT_DOUBLE_EQ(LrFactor(v1::LR_SCHEDULE_LINEAR, 1, 10, 2), 0.5);
  EXPECT_DOUBLE_EQ(LrFactor(v1::LR_SCHEDULE_LINEAR, 2, 10, 2), 1.0);
  EXPECT_DOUBLE_EQ(LrFactor(v1::LR_SCHEDULE_LINEAR, 6, 10, 2), 0.5);
  EXPECT_DOUBLE_EQ(LrFactor(v1::LR_SCHEDULE_LINEAR, 10, 10, 2), 0.0);
  EXPECT_DOUBLE_EQ(LrFactor(v1::LR_SCHEDULE_UNSPECIFIED, 0, 4, 0), 1.0);
  EXPECT_DOUBLE_EQ(LrFactor(v1::LR_SCHEDULE_UNSPECIFIED, 3, 4, 0), 0.25);
}

TEST(TrainLrScheduleTest, CosineAndConstant) {
  EXPECT_DOUBLE_EQ(LrFactor(v1::LR_SCHEDULE_COSINE, 0, 10, 0), 1.0);
  EXPECT_NEAR(LrFactor(v1::LR_SCHEDULE_COSINE, 5, 10, 0), 0.5, 1e-12);
  EXPECT_NEAR(LrFactor(v1::LR_SCHEDULE_COSINE, 10, 10, 0), 0.0, 1e-12);
  EXPECT_DOUBLE_EQ(LrFactor(v1::LR_SCHEDULE_CONSTANT, 1, 10, 4), 0.25);
  EXPECT_DOUBLE_EQ(LrFactor(v1::LR_SCHEDULE_CONSTANT, 9, 10, 4), 1.0);
}

}  // namespace
}  // namespace freezetune::train
