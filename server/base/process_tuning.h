// Start-up tuning of a training process, shared by freezetune-server,
// freezetune-model and the benchmark programs so that benchmarks measure
// what users get:
//   - OMP_WAIT_POLICY=PASSIVE unless set: libgomp's default spinning made
//     steps 7-10x slower on shared cores;
//   - the OpenBLAS kernel the CPU deserves (blas_core.h);
//   - malloc thresholds that keep per-step temporaries off fresh mappings.
// The first two are read by libgomp and OpenBLAS when they load, before
// main(), so they can only take effect by re-executing the process with the
// changed environment: TuneProcess does that at most once per change
// (the environment it sets is how the new image knows it already ran), so
// call it first thing in main(), before any thread starts.
//
// Torch-free. Thread safety: call once, from main, single-threaded.
#ifndef FREEZETUNE_SERVER_BASE_PROCESS_TUNING_H_
#define FREEZETUNE_SERVER_BASE_PROCESS_TUNING_H_

#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "server/base/blas_core.h"
#include "server/base/cpu_info.h"

namespace freezetune::base {

struct ProcessTuningOptions {
  bool passive_omp_wait = true;     // set OMP_WAIT_POLICY=PASSIVE when unset
  bool blas_core_selection = true;  // false: keep OpenBLAS's own core
  bool malloc_tuning = true;        // see malloc_tuning.h
  // Test seams, so the whole path (re-exec included) runs on any machine:
  // pretend OpenBLAS picked this core by itself, and replace the self-check.
  std::optional<std::string> assume_default_core;
  std::function<absl::Status(SgemmFn)> self_check;  // default: SgemmSelfCheck
};

struct ProcessTuning {
  CpuInfo cpu;
  LoadedBlas blas;        // the BLAS as loaded in this (final) process
  BlasDecision blas_core; // action is always kKeep here
  std::string omp_wait_policy;  // the value in effect ("" if unset)
  std::string malloc;           // what the allocator tuning did, for logs
  std::string reexec_error;     // why a needed re-exec failed ("" if none was needed or it worked)

  // "cpu", "blas", "blas_core", "blas_core_changed", "blas_core_decision", ...
  // for start-up banners.
  std::vector<std::pair<std::string, std::string>> LogFields() const;
  // Labels of the freezetune_blas_info series: cpu, cpu_features, blas,
  // blas_core, blas_default_core, blas_core_selection (the outcome).
  std::vector<std::pair<std::string, std::string>> MetricLabels() const;
  // One line: "AMD EPYC (...); OpenBLAS core Cooperlake (kept: ...)".
  std::string Summary() const;
};

// Applies the tuning. Returns only in the final process image: when the
// environment has to change it calls execv("/proc/self/exe", argv) and the
// new image calls TuneProcess again. If execv fails the process goes on
// untuned (reexec_error says why). The warning in blas_core.reason (when
// blas_core.warning) is the caller's to log.
ProcessTuning TuneProcess(char** argv, const ProcessTuningOptions& options = {});

}  // namespace freezetune::base

#endif  // FREEZETUNE_SERVER_BASE_PROCESS_TUNING_H_
