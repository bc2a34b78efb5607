// Start-up tuning for the benchmark programs: the same base::TuneProcess as
// freezetune-server (OpenMP wait policy, OpenBLAS core, malloc thresholds),
// so that benchmarks measure what users get, and the fields every result
// line carries to say what it ran on.
//
// Switches (removed from argv before the program parses it):
//   --no-blas-core-selection   keep OpenBLAS's own core
//   --no-malloc-tuning         glibc's default malloc thresholds
#ifndef FREEZETUNE_TESTS_BENCH_BENCH_TUNING_H_
#define FREEZETUNE_TESTS_BENCH_BENCH_TUNING_H_

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "server/base/process_tuning.h"

namespace freezetune::bench {

// Call first in main. Re-executes the program when the environment has to
// change (argv, switches included, is passed on unchanged); strips the
// switches from argc/argv afterwards.
inline base::ProcessTuning TuneBenchmark(int* argc, char** argv) {
  base::ProcessTuningOptions options;
  for (int i = 1; i < *argc; ++i) {
    if (std::strcmp(argv[i], "--no-blas-core-selection") == 0) options.blas_core_selection = false;
    if (std::strcmp(argv[i], "--no-malloc-tuning") == 0) options.malloc_tuning = false;
  }
  base::ProcessTuning tuning = base::TuneProcess(argv, options);
  int out = 1;
  for (int i = 1; i < *argc; ++i) {
    if (std::strcmp(argv[i], "--no-blas-core-selection") == 0 ||
        std::strcmp(argv[i], "--no-malloc-tuning") == 0) {
      continue;
    }
    argv[out++] = argv[i];
  }
  *argc = out;
  argv[out] = nullptr;
  std::fprintf(stderr, "%s; malloc %s\n", tuning.Summary().c_str(), tuning.malloc.c_str());
  if (tuning.blas_core.warning) {
    std::fprintf(stderr, "warning: BLAS core: %s\n", tuning.blas_core.reason.c_str());
  }
  return tuning;
}

// "cpu", "blas_core", "blas_default_core", "blas_core_selection", "malloc",
// "omp_wait_policy" for a result line.
inline nlohmann::json TuningJson(const base::ProcessTuning& tuning) {
  nlohmann::json j;
  for (const auto& [key, value] : tuning.MetricLabels()) j[key] = value;
  j["malloc"] = tuning.malloc;
  j["omp_wait_policy"] = tuning.omp_wait_policy;
  return j;
}

}  // namespace freezetune::bench

#endif  // FREEZETUNE_TESTS_BENCH_BENCH_TUNING_H_
