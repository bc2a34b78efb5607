// Choosing OpenBLAS's kernel ("core") for this CPU, safely.
//
// Debian's OpenBLAS 0.3.21 is built with DYNAMIC_ARCH: at load time it picks
// a kernel set by the CPU's family and model. On CPUs newer than its tables
// (e.g. Intel family 6 model 207) it falls back to "Prescott" (SSE3), which
// made BERT training steps 3.3-3.9x slower than with "SkylakeX" on such a
// machine (tests/bench/README.md). OPENBLAS_CORETYPE, read when the library
// loads, overrides the choice, so the only way to change it is to set the
// variable and re-execute the process (process_tuning.h does that).
//
// The decision is a pure function of the CPU's features, the core OpenBLAS
// chose, and the environment, so that both outcomes are testable on any
// machine. It is feature-based, never model-based:
//   - a core is only replaced when it is a fallback: its kernels use an
//     older instruction set (SSE < AVX < AVX2 < AVX-512) than the CPU
//     supports; a core that matches the CPU's level (e.g. "Cooperlake" or
//     "Zen" on the CPUs they were written for) is kept;
//   - the replacement is the best core this OpenBLAS accepts by name for
//     those features ("SkylakeX" for AVX-512; "Haswell", or "Zen" on AMD, for
//     AVX2 with FMA; "Sandybridge" for AVX). 0.3.21 does not accept
//     "Cooperlake" or "SapphireRapids" in OPENBLAS_CORETYPE, so they are
//     never chosen;
//   - an OPENBLAS_CORETYPE set by the operator is never overridden (some
//     platforms set it on purpose, because some OpenBLAS builds compute wrong
//     results on some processors), and the selection can be turned off;
//   - a selected core is trusted only after a numerical self-check (sgemm on
//     the shapes BERT uses, against a double-precision reference); on
//     failure the process goes back to OpenBLAS's own choice with a warning.
//
// Thread safety: everything here is either pure or reads process-global,
// read-only state (the loaded BLAS); call it from one thread at start-up.
#ifndef FREEZETUNE_SERVER_BASE_BLAS_CORE_H_
#define FREEZETUNE_SERVER_BASE_BLAS_CORE_H_

#include <functional>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "server/base/cpu_info.h"

namespace freezetune::base {

// Fortran sgemm_ as every reference-BLAS-compatible library exports it.
using SgemmFn = void (*)(const char* transa, const char* transb, const int* m, const int* n,
                         const int* k, const float* alpha, const float* a, const int* lda,
                         const float* b, const int* ldb, const float* beta, float* c,
                         const int* ldc);

// The BLAS loaded in this process, as seen through dlsym (libblas.so.3 is a
// Debian alternative, so which library it is is only known at run time).
struct LoadedBlas {
  std::string library;  // path of the mapped library providing sgemm_ ("" if unknown)
  bool openblas = false;  // exports openblas_get_corename
  std::string core;       // openblas_get_corename(), e.g. "Cooperlake", "Prescott"
  std::string config;     // openblas_get_config()
  bool dynamic_arch = false;  // config mentions DYNAMIC_ARCH: OPENBLAS_CORETYPE is honoured
  SgemmFn sgemm = nullptr;
  // "openblas", "mkl", "blis", "reference" or "unknown".
  std::string Name() const;
};

// Looks up the BLAS already loaded in the process (LibTorch links
// libblas.so.3); when none is, loads libblas.so.3 (torch-free programs).
LoadedBlas FindLoadedBlas();

// Instruction-set level of an OpenBLAS x86-64 core name: 0 SSE-only cores
// (Prescott, Nehalem, Core2, Opteron, ...), 1 AVX (Sandybridge, Bulldozer,
// Piledriver, Steamroller), 2 AVX2 (Haswell, Zen, Excavator), 3 AVX-512
// (SkylakeX, Cooperlake, SapphireRapids); -1 for names it does not know.
int CoreLevel(absl::string_view core);

// The best core this OpenBLAS accepts in OPENBLAS_CORETYPE for `cpu`'s
// features, or "" when there is nothing better than SSE.
std::string BestCoreFor(const CpuInfo& cpu);

// Marker variable the selection keeps in the environment across its
// re-executions: "select:<core>:<default>" while OPENBLAS_CORETYPE=<core> is
// ours and not yet verified, "fallback:<core>:<default>" after <core> failed
// the self-check.
inline constexpr char kBlasMarkerEnv[] = "FREEZETUNE_BLAS_CORE_SELECTION";

struct BlasSelectionInput {
  CpuInfo cpu;
  LoadedBlas blas;
  bool enabled = true;  // false: the operator turned the selection off
  std::optional<std::string> env_coretype;  // OPENBLAS_CORETYPE
  std::optional<std::string> env_marker;    // kBlasMarkerEnv
};

struct BlasDecision {
  enum class Action {
    kKeep,    // run with what is loaded; the report fields below are final
    kReexec,  // set the environment below and re-execute
  };
  Action action = Action::kKeep;
  // For kReexec: OPENBLAS_CORETYPE to set (nullopt: unset it) and the marker.
  std::optional<std::string> set_coretype;
  std::optional<std::string> set_marker;

  // The report (for kKeep; for kReexec what is about to be tried).
  std::string core;          // the core in use
  std::string default_core;  // the core OpenBLAS picked by itself
  bool changed = false;      // core != default_core because of the selection
  // Short, stable: "kept", "selected", "operator", "disabled", "not_openblas",
  // "single_arch", "unknown_core", "not_accepted", "self_check_failed".
  std::string outcome;
  std::string reason;        // one human-readable line
  bool warning = false;      // the reason deserves a warning in the log
};

// The pure decision. `self_check` runs the numerical check on the loaded
// BLAS; it is only called in the process that runs with a core selected here
// (the re-executed one), before that core is trusted.
BlasDecision DecideBlasCore(const BlasSelectionInput& input,
                            const std::function<absl::Status()>& self_check);

// Single-precision GEMM self-check: the shapes and transpositions a BERT
// layer multiplies (projections, attention scores and context, FFN, their
// gradients) plus odd edge sizes, each against a double-precision reference,
// within a relative tolerance of 1e-4 of the row's magnitude. Takes about
// 20 ms. INTERNAL naming the first failing case.
absl::Status SgemmSelfCheck(SgemmFn sgemm);

}  // namespace freezetune::base

#endif  // FREEZETUNE_SERVER_BASE_BLAS_CORE_H_
