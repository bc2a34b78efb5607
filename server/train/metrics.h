// Evaluation metrics (classification: accuracy, macro-F1, MCC, per-class
// precision/recall/F1; regression: MSE, Pearson, Spearman) and the
// best-model selection rule. Torch-free, so it is unit-tested on plain
// vectors. Degenerate cases (no predictions for a class, zero variance)
// yield 0 rather than NaN, so selection and JSON output stay well defined.
#ifndef FREEZETUNE_SERVER_TRAIN_METRICS_H_
#define FREEZETUNE_SERVER_TRAIN_METRICS_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "freezetune/v1/freezetune.pb.h"
#include "nlohmann/json.hpp"

namespace freezetune::train {

// Fills accuracy, macro_f1 (mean F1 over the classes that occur in labels
// or predictions, as scikit-learn), mcc (binary tasks only, else 0),
// per_class (every class of `label_names`, in id order) and examples.
// predictions and labels are class ids in [0, label_names.size()) and have
// equal length. Leaves step, epoch and loss to the caller.
v1::EvalMetrics ClassificationMetrics(const std::vector<int64_t>& predictions,
                                      const std::vector<int64_t>& labels,
                                      const std::vector<std::string>& label_names);

// Fills mse, pearson, spearman (Pearson of average ranks) and examples.
v1::EvalMetrics RegressionMetrics(const std::vector<float>& predictions,
                                  const std::vector<float>& targets);

double Pearson(const std::vector<double>& x, const std::vector<double>& y);
double Spearman(const std::vector<double>& x, const std::vector<double>& y);

// The value of `metric` ("accuracy", "macro_f1", "mcc", "loss", "mse",
// "pearson", "spearman") in `m`; 0 for an unknown name.
double MetricValue(const v1::EvalMetrics& m, std::string_view metric);
// "loss" and "mse" are minimised; the others maximised.
bool LowerIsBetter(std::string_view metric);
// True when `candidate` is strictly better than `best` (ties keep the
// earlier evaluation). A NaN candidate is never better.
bool IsImprovement(std::string_view metric, const v1::EvalMetrics& candidate,
                   const v1::EvalMetrics& best);

// metrics.json form of one evaluation.
nlohmann::json EvalMetricsToJson(const v1::EvalMetrics& m);

}  // namespace freezetune::train

#endif  // FREEZETUNE_SERVER_TRAIN_METRICS_H_
