// Evaluation metrics and best-model selection, against values computed by
// hand (reference values computed independently in Python).
#include "server/train/metrics.h"

#include <cmath>

#include "gtest/gtest.h"

namespace freezetune::train {
namespace {

TEST(TrainMetricsTest, BinaryClassification) {
  // labels:      1 1 1 0 0 0 0 1
  // predictions: 1 0 1 0 1 0 0 1   -> tp=3 fn=1 fp=1 tn=3
  const std::vector<int64_t> labels = {1, 1, 1, 0, 0, 0, 0, 1};
  const std::vector<int64_t> preds = {1, 0, 1, 0, 1, 0, 0, 1};
  v1::EvalMetrics m = ClassificationMetrics(preds, labels, {"neg", "pos"});
  EXPECT_EQ(m.examples(), 8);
  EXPECT_FLOAT_EQ(m.accuracy(), 0.75f);
  EXPECT_FLOAT_EQ(m.macro_f1(), 0.75f);
  EXPECT_FLOAT_EQ(m.mcc(), 0.5f);  // (9 - 1) / sqrt(4*4*4*4)
  ASSERT_EQ(m.per_class_size(), 2);
  EXPECT_EQ(m.per_class(1).label(), "pos");
  EXPECT_FLOAT_EQ(m.per_class(1).precision(), 0.75f);
  EXPECT_FLOAT_EQ(m.per_class(1).recall(), 0.75f);
  EXPECT_EQ(m.per_class(1).support(), 4);
}

TEST(TrainMetricsTest, MulticlassAndAbsentClass) {
  // Class 3 ("d") never occurs nor is predicted: excluded from macro-F1
  // (scikit-learn's default label set) but still reported per class.
  const std::vector<int64_t> labels = {0, 0, 1, 1, 2, 2};
  const std::vector<int64_t> preds = {0, 1, 1, 1, 2, 0};
  v1::EvalMetrics m = ClassificationMetrics(preds, labels, {"a", "b", "c", "d"});
  EXPECT_NEAR(m.accuracy(), 4.0 / 6.0, 1e-6);
  // a: p=1/2 r=1/2 f=1/2; b: p=2/3 r=1 f=0.8; c: p=1 r=1/2 f=2/3
  EXPECT_NEAR(m.macro_f1(), (0.5 + 0.8 + 2.0 / 3.0) / 3.0, 1e-6);
  EXPECT_EQ(m.mcc(), 0.0f);  // binary only
  ASSERT_EQ(m.per_class_size(), 4);
  EXPECT_EQ(m.per_class(3).support(), 0);
  EXPECT_EQ(m.per_class(3).f1(), 0.0f);
}

TEST(TrainMetricsTest, DegenerateBinaryMccIsZero) {
  v1::EvalMetrics m = ClassificationMetrics({1, 1, 1}, {1, 1, 0}, {"0", "1"});
  EXPECT_FALSE(std::isnan(m.mcc()));
  EXPECT_EQ(m.mcc(), 0.0f);
  v1::EvalMetrics empty = ClassificationMetrics({}, {}, {"0", "1"});
  EXPECT_EQ(empty.examples(), 0);
  EXPECT_EQ(empty.accuracy(), 0.0f);
}

TEST(TrainMetricsTest, Regression) {
  v1::EvalMetrics m = RegressionMetrics({1, 2, 3, 4}, {2, 4, 6, 9});
  EXPECT_FLOAT_EQ(m.mse(), (1 + 4 + 9 + 25) / 4.0f);
  EXPECT_NEAR(m.pearson(), 0.9943767126843689, 1e-6);  // scipy.stats.pearsonr
  EXPECT_FLOAT_EQ(m.spearman(), 1.0f);
  EXPECT_EQ(m.examples(), 4);
}

TEST(TrainMetricsTest, SpearmanAverageRanksForTies) {
  // scipy.stats.spearmanr([1,2,2,3],[1,3,2,4]) = 0.9486832980505138
  EXPECT_NEAR(Spearman({1, 2, 2, 3}, {1, 3, 2, 4}), 0.9486832980505138, 1e-9);
  EXPECT_NEAR(Pearson({1, 2, 3}, {3, 2, 1}), -1.0, 1e-12);
  EXPECT_EQ(Pearson({1, 1, 1}, {1, 2, 3}), 0.0);  // zero variance
}

TEST(TrainMetricsTest, SelectionDirectionAndTies) {
  v1::EvalMetrics a, b;
  a.set_accuracy(0.8f);
  a.set_loss(0.5f);
  b.set_accuracy(0.8f);
  b.set_loss(0.4f);
  EXPECT_FALSE(IsImprovement("accuracy", b, a));  // tie keeps the earlier
  EXPECT_TRUE(IsImprovement("loss", b, a));
  EXPECT_FALSE(IsImprovement("loss", a, b));
  b.set_accuracy(0.9f);
  EXPECT_TRUE(IsImprovement("accuracy", b, a));
  EXPECT_TRUE(LowerIsBetter("mse"));
  EXPECT_FALSE(LowerIsBetter("spearman"));
  v1::EvalMetrics nan;
  nan.set_loss(std::nanf(""));
  EXPECT_FALSE(IsImprovement("loss", nan, a));
  EXPECT_DOUBLE_EQ(MetricValue(b, "accuracy"), 0.9f);
}

TEST(TrainMetricsTest, Json) {
  v1::EvalMetrics m = ClassificationMetrics({0, 1}, {0, 0}, {"x", "y"});
  m.set_step(7);
  nlohmann::json j = EvalMetricsToJson(m);
  EXPECT_EQ(j["step"], 7);
  EXPECT_FLOAT_EQ(j["accuracy"].get<float>(), 0.5f);
  ASSERT_EQ(j["per_class"].size(), 2u);
  EXPECT_EQ(j["per_class"][0]["label"], "x");
  EXPECT_EQ(j["per_class"][0]["support"], 2);
}

}  // namespace
}  // namespace freezetune::train
