// Evaluation metrics (see metrics.h).
#include "server/train/metrics.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace freezetune::train {
namespace {

double SafeDiv(double a, double b) { return b == 0.0 ? 0.0 : a / b; }

// Average ranks (1-based), ties sharing the mean of their positions.
std::vector<double> Ranks(const std::vector<double>& v) {
  std::vector<size_t> order(v.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&v](size_t a, size_t b) { return v[a] < v[b]; });
  std::vector<double> ranks(v.size());
  size_t i = 0;
  while (i < order.size()) {
    size_t j = i;
    while (j + 1 < order.size() && v[order[j + 1]] == v[order[i]]) ++j;
    const double r = (static_cast<double>(i) + static_cast<double>(j)) / 2.0 + 1.0;
    for (size_t k = i; k <= j; ++k) ranks[order[k]] = r;
    i = j + 1;
  }
  return ranks;
}

}  // namespace

v1::EvalMetrics ClassificationMetrics(const std::vector<int64_t>& predictions,
                                      const std::vector<int64_t>& labels,
                                      const std::vector<std::string>& label_names) {
  const size_t k = label_names.size();
  const size_t n = std::min(predictions.size(), labels.size());
  // confusion[true][pred]
  std::vector<std::vector<int64_t>> confusion(k, std::vector<int64_t>(k, 0));
  int64_t correct = 0;
  for (size_t i = 0; i < n; ++i) {
    const int64_t t = labels[i], p = predictions[i];
    if (t < 0 || p < 0 || static_cast<size_t>(t) >= k || static_cast<size_t>(p) >= k) continue;
    ++confusion[t][p];
    if (t == p) ++correct;
  }
  v1::EvalMetrics m;
  m.set_examples(static_cast<int64_t>(n));
  m.set_accuracy(static_cast<float>(SafeDiv(static_cast<double>(correct), static_cast<double>(n))));
  double f1_sum = 0.0;
  int present = 0;
  for (size_t c = 0; c < k; ++c) {
    int64_t tp = confusion[c][c], support = 0, predicted = 0;
    for (size_t o = 0; o < k; ++o) {
      support += confusion[c][o];
      predicted += confusion[o][c];
    }
    const double precision = SafeDiv(static_cast<double>(tp), static_cast<double>(predicted));
    const double recall = SafeDiv(static_cast<double>(tp), static_cast<double>(support));
    const double f1 = SafeDiv(2.0 * precision * recall, precision + recall);
    v1::ClassMetrics* pc = m.add_per_class();
    pc->set_label(label_names[c]);
    pc->set_precision(static_cast<float>(precision));
    pc->set_recall(static_cast<float>(recall));
    pc->set_f1(static_cast<float>(f1));
    pc->set_support(support);
    if (support > 0 || predicted > 0) {
      f1_sum += f1;
      ++present;
    }
  }
  m.set_macro_f1(static_cast<float>(SafeDiv(f1_sum, present)));
  if (k == 2) {
    const double tp = static_cast<double>(confusion[1][1]), tn = static_cast<double>(confusion[0][0]);
    const double fp = static_cast<double>(confusion[0][1]), fn = static_cast<double>(confusion[1][0]);
    const double denom = std::sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn));
    m.set_mcc(static_cast<float>(SafeDiv(tp * tn - fp * fn, denom)));
  }
  return m;
}

double Pearson(const std::vector<double>& x, const std::vector<double>& y) {
  const size_t n = std::min(x.size(), y.size());
  if (n == 0) return 0.0;
  double mx = 0, my = 0;
  for (size_t i = 0; i < n; ++i) {
    mx += x[i];
    my += y[i];
  }
  mx /= static_cast<double>(n);
  my /= static_cast<double>(n);
  double sxy = 0, sxx = 0, syy = 0;
  for (size_t i = 0; i < n; ++i) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) * (x[i] - mx);
    syy += (y[i] - my) * (y[i] - my);
  }
  return SafeDiv(sxy, std::sqrt(sxx * syy));
}

double Spearman(const std::vector<double>& x, const std::vector<double>& y) {
  return Pearson(Ranks(x), Ranks(y));
}

v1::EvalMetrics RegressionMetrics(const std::vector<float>& predictions,
                                  const std::vector<float>& targets) {
  const size_t n = std::min(predictions.size(), targets.size());
  std::vector<double> p(predictions.begin(), predictions.begin() + static_cast<std::ptrdiff_t>(n));
  std::vector<double> t(targets.begin(), targets.begin() + static_cast<std::ptrdiff_t>(n));
  double se = 0;
  for (size_t i = 0; i < n; ++i) se += (p[i] - t[i]) * (p[i] - t[i]);
  v1::EvalMetrics m;
  m.set_examples(static_cast<int64_t>(n));
  m.set_mse(static_cast<float>(SafeDiv(se, static_cast<double>(n))));
  m.set_pearson(static_cast<float>(Pearson(p, t)));
  m.set_spearman(static_cast<float>(Spearman(p, t)));
  return m;
}

double MetricValue(const v1::EvalMetrics& m, std::string_view metric) {
  if (metric == "accuracy") return m.accuracy();
  if (metric == "macro_f1") return m.macro_f1();
  if (metric == "mcc") return m.mcc();
  if (metric == "loss") return m.loss();
  if (metric == "mse") return m.mse();
  if (metric == "pearson") return m.pearson();
  if (metric == "spearman") return m.spearman();
  return 0.0;
}

bool LowerIsBetter(std::string_view metric) { return metric == "loss" || metric == "mse"; }

bool IsImprovement(std::string_view metric, const v1::EvalMetrics& candidate,
                   const v1::EvalMetrics& best) {
  const double c = MetricValue(candidate, metric);
  const double b = MetricValue(best, metric);
  if (std::isnan(c)) return false;
  if (std::isnan(b)) return true;
  return LowerIsBetter(metric) ? c < b : c > b;
}

nlohmann::json EvalMetricsToJson(const v1::EvalMetrics& m) {
  nlohmann::json j{{"step", m.step()},         {"epoch", m.epoch()},
                   {"loss", m.loss()},         {"examples", m.examples()},
                   {"accuracy", m.accuracy()}, {"macro_f1", m.macro_f1()},
                   {"mcc", m.mcc()},           {"mse", m.mse()},
                   {"pearson", m.pearson()},   {"spearman", m.spearman()}};
  if (m.masked_tokens() > 0) j["masked_tokens"] = m.masked_tokens();
  nlohmann::json per_class = nlohmann::json::array();
  for (const auto& c : m.per_class()) {
    per_class.push_back({{"label", c.label()},
                         {"precision", c.precision()},
                         {"recall", c.recall()},
                         {"f1", c.f1()},
                         {"support", c.support()}});
  }
  j["per_class"] = std::move(per_class);
  return j;
}

}  // namespace freezetune::train
