// See process_tuning.h.
#include "server/base/process_tuning.h"

#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "server/base/malloc_tuning.h"

namespace freezetune::base {
namespace {

std::optional<std::string> Env(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr) return std::nullopt;
  return std::string(v);
}

void SetOrUnset(const char* name, const std::optional<std::string>& value) {
  if (value) {
    setenv(name, value->c_str(), 1);
  } else {
    unsetenv(name);
  }
}

}  // namespace

ProcessTuning TuneProcess(char** argv, const ProcessTuningOptions& options) {
  ProcessTuning out;
  out.cpu = ReadCpuInfo();
  out.blas = FindLoadedBlas();

  // The environment before any change, to restore if execv fails.
  const std::optional<std::string> old_omp = Env("OMP_WAIT_POLICY");
  const std::optional<std::string> old_coretype = Env("OPENBLAS_CORETYPE");
  const std::optional<std::string> old_marker = Env(kBlasMarkerEnv);
  bool reexec = false;

  if (options.passive_omp_wait && !old_omp) {
    setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
    reexec = true;
  }

  BlasSelectionInput input;
  input.cpu = out.cpu;
  input.blas = out.blas;
  if (options.assume_default_core && !old_marker) input.blas.core = *options.assume_default_core;
  input.enabled = options.blas_core_selection;
  input.env_coretype = old_coretype;
  input.env_marker = old_marker;
  const SgemmFn sgemm = out.blas.sgemm;
  auto check = options.self_check;
  BlasDecision decision = DecideBlasCore(input, [&check, sgemm] {
    return check ? check(sgemm) : SgemmSelfCheck(sgemm);
  });
  if (decision.action == BlasDecision::Action::kReexec) {
    SetOrUnset("OPENBLAS_CORETYPE", decision.set_coretype);
    SetOrUnset(kBlasMarkerEnv, decision.set_marker);
    reexec = true;
  }

  if (reexec) {
    execv("/proc/self/exe", argv);
    // Still here: run untuned, with the environment telling the truth.
    out.reexec_error = absl::StrCat("re-exec failed: ", std::strerror(errno));
    SetOrUnset("OMP_WAIT_POLICY", old_omp);
    SetOrUnset("OPENBLAS_CORETYPE", old_coretype);
    SetOrUnset(kBlasMarkerEnv, old_marker);
    if (decision.action == BlasDecision::Action::kReexec) {
      decision.action = BlasDecision::Action::kKeep;
      decision.core = out.blas.core;
      decision.changed = false;
      decision.outcome = "reexec_failed";
      decision.reason = absl::StrCat(decision.reason, " (", out.reexec_error, ")");
      decision.warning = true;
    }
  }
  if (decision.outcome == "not_accepted") {
    // OpenBLAS ignored the name: what runs is its own choice; leave no
    // variable behind for child processes.
    unsetenv("OPENBLAS_CORETYPE");
    unsetenv(kBlasMarkerEnv);
    decision.core = out.blas.core;
  }
  out.blas_core = std::move(decision);
  out.omp_wait_policy = Env("OMP_WAIT_POLICY").value_or("");
  out.malloc = options.malloc_tuning ? TuneMalloc() : std::string("default (tuning off)");
  return out;
}

std::vector<std::pair<std::string, std::string>> ProcessTuning::LogFields() const {
  return {{"cpu", cpu.Describe()},
          {"cpu_features", cpu.features.ToString()},
          {"blas", blas.Name() + (blas.library.empty() ? "" : " (" + blas.library + ")")},
          {"blas_core", blas_core.core.empty() ? std::string("n/a") : blas_core.core},
          {"blas_core_changed", blas_core.changed
                                    ? absl::StrCat("yes, from ", blas_core.default_core)
                                    : std::string("no")},
          {"blas_core_decision", absl::StrCat(blas_core.outcome, ": ", blas_core.reason)},
          {"omp_wait_policy", omp_wait_policy},
          {"malloc", malloc}};
}

std::vector<std::pair<std::string, std::string>> ProcessTuning::MetricLabels() const {
  return {{"cpu", cpu.Describe()},
          {"cpu_features", cpu.features.ToString()},
          {"blas", blas.Name()},
          {"blas_core", blas_core.core},
          {"blas_default_core", blas_core.default_core},
          {"blas_core_selection", blas_core.outcome}};
}

std::string ProcessTuning::Summary() const {
  return absl::StrCat(cpu.Describe(), "; ", blas.Name(), " core ",
                      blas_core.core.empty() ? "n/a" : blas_core.core, " (", blas_core.outcome,
                      blas_core.changed ? absl::StrCat(", from ", blas_core.default_core) : "",
                      ")");
}

}  // namespace freezetune::base
