// Real-data acceptance runs (issue 4 section 7) through the product's own
// entry point, train::RunFineTune: reads a FineTuneJob in protobuf JSON
// mapping, runs it on this process's CPU, prints each evaluation as it
// happens (stderr) and one JSON summary line (stdout).
//
//   freezetune_acceptance JOB.json [--data DIR] [--model DIR] [--threads N]
//       [--name NAME] [--seed N]
//
// In the job file, "@DATA@" is replaced by --data (default
// FREEZETUNE_SOURCE_DIR/../shared/data) and "@MODEL@" by --model, so the
// committed jobs under tests/bench/jobs/ need no absolute paths. --seed
// replaces hyperparameters.seed (one job file, several seeds). The output
// model goes to a temporary directory that is removed afterwards.
//
// Summary fields: wall_seconds covers everything RunFineTune does (load,
// tokenize, train, evaluate, save); train_seconds is the training loop only
// (evaluations included). best_* is the evaluation that selected the output
// weights; final_* is the last evaluation (with TREC_10 as the validation
// set, best_* selected on the test set, so final_* is the honest number);
// eval_accuracies lists every evaluation in order.
// Exit status 0 on success, 1 on any error. Not a CTest.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>
#include <unistd.h>

#include <ATen/Parallel.h>

#include "google/protobuf/util/json_util.h"
#include "nlohmann/json.hpp"
#include "server/train/fine_tune.h"
#include "tests/bench/bench_tuning.h"

namespace ft = freezetune;

namespace {

std::string ReplaceAll(std::string s, const std::string& from, const std::string& to) {
  for (size_t pos = 0; (pos = s.find(from, pos)) != std::string::npos; pos += to.size()) {
    s.replace(pos, from.size(), to);
  }
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  const ft::base::ProcessTuning tuning = ft::bench::TuneBenchmark(&argc, argv);
  if (argc < 2) {
    std::fprintf(stderr,
                 "usage: freezetune_acceptance JOB.json [--data DIR] [--model DIR] "
                 "[--threads N] [--name NAME] [--seed N] [--no-blas-core-selection] "
                 "[--no-malloc-tuning]\n");
    return 1;
  }
  std::string data = std::string(FREEZETUNE_SOURCE_DIR) + "/../shared/data";
  if (const char* env = std::getenv("FREEZETUNE_DATA_DIR")) data = env;
  std::string model, name = std::filesystem::path(argv[1]).stem().string();
  int threads = 2;
  std::optional<int64_t> seed;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--data") {
      data = value;
    } else if (flag == "--model") {
      model = value;
    } else if (flag == "--threads") {
      threads = std::atoi(value.c_str());
    } else if (flag == "--name") {
      name = value;
    } else if (flag == "--seed") {
      seed = std::atoll(value.c_str());
    } else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return 1;
    }
  }
  at::set_num_threads(threads);

  std::ifstream in(argv[1]);
  std::stringstream text;
  text << in.rdbuf();
  if (!in) {
    std::fprintf(stderr, "cannot read %s\n", argv[1]);
    return 1;
  }
  const std::string json = ReplaceAll(ReplaceAll(text.str(), "@DATA@", data), "@MODEL@", model);
  ft::v1::FineTuneJob job;
  if (auto s = google::protobuf::util::JsonStringToMessage(json, &job); !s.ok()) {
    std::fprintf(stderr, "%s: %s\n", argv[1], s.ToString().c_str());
    return 1;
  }
  if (seed) job.mutable_hyperparameters()->set_seed(*seed);

  const std::filesystem::path out =
      std::filesystem::temp_directory_path() /
      ("freezetune_acceptance_" + std::to_string(::getpid()));
  ft::train::RunContext context;
  context.job_id = name;
  context.output_dir = out.string();
  const auto start = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  std::vector<float> eval_accuracies;
  context.emit = [&](ft::v1::JobEvent e) {
    if (e.has_eval()) {
      eval_accuracies.push_back(e.eval().accuracy());
      std::fprintf(stderr, "[%s %7.1fs] eval step %lld epoch %.2f accuracy %.4f loss %.4f\n",
                   name.c_str(), elapsed(), static_cast<long long>(e.eval().step()),
                   e.eval().epoch(), e.eval().accuracy(), e.eval().loss());
    } else if (e.has_train()) {
      std::fprintf(stderr, "[%s %7.1fs] step %lld/%lld loss %.4f lr %.2e %.0f ex/s\n",
                   name.c_str(), elapsed(), static_cast<long long>(e.train().step()),
                   static_cast<long long>(e.train().total_steps()), e.train().loss(),
                   e.train().learning_rate(), e.train().samples_per_second());
    } else if (e.has_notice()) {
      std::fprintf(stderr, "[%s] %s\n", name.c_str(), e.notice().message().c_str());
    }
  };
  auto result = ft::train::RunFineTune(job, context);
  const double wall = elapsed();
  std::error_code ec;
  std::filesystem::remove_all(out, ec);
  if (!result.ok()) {
    std::fprintf(stderr, "%s: %s\n", name.c_str(), result.status().ToString().c_str());
    return 1;
  }
  const auto& h = job.hyperparameters();
  nlohmann::json summary{
      {"name", name},
      {"threads", threads},
      {"wall_seconds", wall},
      {"train_seconds", result->train_seconds()},
      {"steps", result->steps()},
      {"trainable_parameters", result->trainable_parameters()},
      {"total_parameters", result->total_parameters()},
      {"best_step", result->best_eval().step()},
      {"best_accuracy", result->best_eval().accuracy()},
      {"final_accuracy", result->final_eval().accuracy()},
      {"final_macro_f1", result->final_eval().macro_f1()},
      {"frozen_weights_verified", result->frozen_weights_verified()},
      {"epochs", h.epochs()},
      {"batch_size", h.batch_size()},
      {"learning_rate", h.learning_rate()},
      {"warmup_ratio", h.warmup_ratio()},
      {"max_seq_length", h.max_seq_length()},
      {"seed", h.has_seed() ? h.seed() : 42},
      {"length_bucketing", !h.has_length_bucketing() || h.length_bucketing()},
      {"eval_accuracies", eval_accuracies},
  };
  summary.update(ft::bench::TuningJson(tuning));
  std::printf("%s\n", summary.dump().c_str());
  return 0;
}
