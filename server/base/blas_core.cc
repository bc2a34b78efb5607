// See blas_core.h.
#include "server/base/blas_core.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <cmath>
#include <cstdint>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace freezetune::base {
namespace {

using CoreNameFn = char* (*)();

// From dlsym on the process's global scope, else on `handle`.
void* Symbol(void* handle, const char* name) {
  void* sym = dlsym(RTLD_DEFAULT, name);
  if (sym == nullptr && handle != nullptr) sym = dlsym(handle, name);
  return sym;
}

}  // namespace

std::string LoadedBlas::Name() const {
  if (openblas) return "openblas";
  if (absl::StrContains(library, "openblas")) return "openblas";
  if (absl::StrContains(library, "mkl")) return "mkl";
  if (absl::StrContains(library, "blis")) return "blis";
  if (absl::StrContains(library, "/blas/")) return "reference";
  return "unknown";
}

LoadedBlas FindLoadedBlas() {
  LoadedBlas blas;
  void* handle = nullptr;
  if (dlsym(RTLD_DEFAULT, "sgemm_") == nullptr) {
    // Nothing in the process links a BLAS yet (a torch-free program): load
    // the one the system's alternative points at. Never closed: the BLAS
    // stays loaded for the life of the process.
    handle = dlopen("libblas.so.3", RTLD_NOW | RTLD_GLOBAL);
  }
  blas.sgemm = reinterpret_cast<SgemmFn>(Symbol(handle, "sgemm_"));
  if (blas.sgemm != nullptr) {
    Dl_info info{};
    if (dladdr(reinterpret_cast<void*>(blas.sgemm), &info) != 0 && info.dli_fname != nullptr) {
      // libblas.so.3 is a symlink chain through /etc/alternatives: name
      // the real file, which says which implementation it is.
      char* real = realpath(info.dli_fname, nullptr);
      blas.library = real != nullptr ? real : info.dli_fname;
      free(real);
    }
  }
  auto corename = reinterpret_cast<CoreNameFn>(Symbol(handle, "openblas_get_corename"));
  auto config = reinterpret_cast<CoreNameFn>(Symbol(handle, "openblas_get_config"));
  if (corename != nullptr) {
    blas.openblas = true;
    const char* name = corename();
    blas.core = name != nullptr ? name : "";
    if (config != nullptr && config() != nullptr) blas.config = config();
    blas.dynamic_arch = absl::StrContains(blas.config, "DYNAMIC_ARCH");
  }
  return blas;
}

int CoreLevel(absl::string_view core) {
  static const std::pair<const char*, int> kLevels[] = {
      // SSE-only kernels (generic x86-64 and pre-AVX CPUs).
      {"Katmai", 0}, {"Coppermine", 0}, {"Northwood", 0}, {"Prescott", 0}, {"Banias", 0},
      {"Atom", 0}, {"Core2", 0}, {"Penryn", 0}, {"Dunnington", 0}, {"Nehalem", 0},
      {"Athlon", 0}, {"Opteron", 0}, {"Opteron_SSE3", 0}, {"Barcelona", 0}, {"Nano", 0},
      {"Bobcat", 0},
      // AVX.
      {"Sandybridge", 1}, {"Bulldozer", 1}, {"Piledriver", 1}, {"Steamroller", 1},
      // AVX2 + FMA.
      {"Haswell", 2}, {"Zen", 2}, {"Excavator", 2},
      // AVX-512.
      {"SkylakeX", 3}, {"Cooperlake", 3}, {"SapphireRapids", 3}};
  for (const auto& [name, level] : kLevels) {
    if (absl::EqualsIgnoreCase(core, name)) return level;
  }
  return -1;
}

std::string BestCoreFor(const CpuInfo& cpu) {
  const CpuFeatures& f = cpu.features;
  if (f.avx512_skylake() && f.fma) return "SkylakeX";
  // OpenBLAS's Zen core is its Haswell kernels with AMD's cache blocking.
  if (f.avx2_fma()) return cpu.is_amd() ? "Zen" : "Haswell";
  if (f.avx) return "Sandybridge";
  return "";
}

BlasDecision DecideBlasCore(const BlasSelectionInput& in,
                            const std::function<absl::Status()>& self_check) {
  BlasDecision d;
  d.core = in.blas.core;
  d.default_core = in.blas.core;
  auto keep = [&d](std::string outcome, std::string reason, bool warning = false) {
    d.action = BlasDecision::Action::kKeep;
    d.outcome = std::move(outcome);
    d.reason = std::move(reason);
    d.warning = warning;
    return d;
  };

  // Our own marker from an earlier exec of this process.
  std::vector<std::string> marker;
  if (in.env_marker) marker = absl::StrSplit(*in.env_marker, ':');
  const bool marker_ok = marker.size() == 3 && (marker[0] == "select" || marker[0] == "fallback");
  if (marker_ok && marker[0] == "fallback" && !in.env_coretype) {
    d.default_core = marker[2];
    return keep("self_check_failed",
                absl::StrCat("OpenBLAS core ", marker[1],
                             " failed the numerical self-check; using OpenBLAS's own choice ",
                             in.blas.core),
                /*warning=*/true);
  }
  if (marker_ok && marker[0] == "select" && in.env_coretype && *in.env_coretype == marker[1]) {
    // We set OPENBLAS_CORETYPE and re-executed: verify before trusting it.
    d.default_core = marker[2];
    if (!absl::EqualsIgnoreCase(in.blas.core, marker[1])) {
      d.action = BlasDecision::Action::kKeep;
      d.outcome = "not_accepted";
      d.reason = absl::StrCat("OpenBLAS did not accept OPENBLAS_CORETYPE=", marker[1], " (core is ",
                              in.blas.core, ")");
      d.warning = true;
      return d;
    }
    absl::Status check = self_check ? self_check() : absl::OkStatus();
    if (check.ok()) {
      d.changed = !absl::EqualsIgnoreCase(d.core, d.default_core);
      return keep("selected", absl::StrCat("OpenBLAS chose ", d.default_core, " for this CPU (",
                                           in.cpu.features.ToString(), "); selected ", d.core,
                                           ", which passed the numerical self-check"));
    }
    // Back to OpenBLAS's own choice: unset the variable and re-execute.
    d.action = BlasDecision::Action::kReexec;
    d.set_coretype = std::nullopt;
    d.set_marker = absl::StrCat("fallback:", marker[1], ":", marker[2]);
    d.outcome = "self_check_failed";
    d.reason = absl::StrCat("OpenBLAS core ", marker[1], " failed the numerical self-check (",
                            check.message(), "); falling back to ", marker[2]);
    d.warning = true;
    return d;
  }
  if (in.env_coretype) {
    return keep("operator", absl::StrCat("OPENBLAS_CORETYPE=", *in.env_coretype,
                                         " set in the environment; not changed"));
  }
  if (!in.enabled) return keep("disabled", "BLAS core selection turned off");
  if (!in.blas.openblas) {
    return keep("not_openblas", absl::StrCat("the BLAS is ", in.blas.Name(), ", not OpenBLAS"));
  }
  if (!in.blas.dynamic_arch) {
    return keep("single_arch", "OpenBLAS built for one core (no DYNAMIC_ARCH)");
  }
  const int current = CoreLevel(in.blas.core);
  if (current < 0) {
    return keep("unknown_core", absl::StrCat("OpenBLAS core ", in.blas.core, " not known here; kept"));
  }
  const std::string best = BestCoreFor(in.cpu);
  if (best.empty() || current >= CoreLevel(best)) {
    return keep("kept", absl::StrCat("OpenBLAS's own choice ", in.blas.core, " matches the CPU (",
                                     in.cpu.features.ToString(), ")"));
  }
  d.action = BlasDecision::Action::kReexec;
  d.set_coretype = best;
  d.set_marker = absl::StrCat("select:", best, ":", in.blas.core);
  d.core = best;
  d.changed = true;
  d.outcome = "selected";
  d.reason = absl::StrCat("OpenBLAS chose ", in.blas.core, " on a CPU with ",
                          in.cpu.features.ToString(), "; re-executing with OPENBLAS_CORETYPE=", best);
  return d;
}

namespace {

// Deterministic values in [-1, 1).
class Lcg {
 public:
  explicit Lcg(uint64_t seed) : s_(seed) {}
  float Next() {
    s_ = s_ * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<float>(static_cast<int64_t>(s_ >> 40) - (1 << 23)) / float(1 << 23);
  }

 private:
  uint64_t s_;
};

struct GemmCase {
  int m, n, k;
  char ta, tb;
  float alpha, beta;
};

}  // namespace

absl::Status SgemmSelfCheck(SgemmFn sgemm) {
  if (sgemm == nullptr) return absl::InternalError("no sgemm_ in the loaded BLAS");
  // Column-major (Fortran) sizes. Hidden 128/768, FFN 512, 64-token
  // batches, one attention head of 64; the odd sizes hit the kernels' edge
  // handling, where wrong code shows first.
  static const GemmCase kCases[] = {
      {128, 64, 128, 'T', 'N', 1.0f, 0.0f},   // linear forward (W^T x)
      {512, 64, 128, 'T', 'N', 1.0f, 0.0f},   // FFN up
      {128, 64, 512, 'N', 'N', 1.0f, 1.0f},   // FFN down, beta (bias folded in)
      {128, 512, 64, 'N', 'T', 1.0f, 0.0f},   // weight gradient
      {64, 64, 64, 'T', 'N', 0.125f, 0.0f},   // attention scores, scaled
      {64, 64, 64, 'N', 'N', 1.0f, 0.0f},     // attention context
      {768, 16, 768, 'T', 'N', 1.0f, 0.0f},   // BERT-base projection
      {33, 17, 65, 'T', 'T', -0.5f, 2.0f},    // edges, both transposed
      {1, 97, 31, 'N', 'N', 1.0f, 0.0f},      // a single row
      {257, 3, 129, 'N', 'T', 1.0f, 0.5f},
  };
  Lcg rng(0x5eed);
  for (const GemmCase& c : kCases) {
    const int a_rows = c.ta == 'N' ? c.m : c.k, a_cols = c.ta == 'N' ? c.k : c.m;
    const int b_rows = c.tb == 'N' ? c.k : c.n, b_cols = c.tb == 'N' ? c.n : c.k;
    std::vector<float> a(static_cast<size_t>(a_rows) * a_cols);
    std::vector<float> b(static_cast<size_t>(b_rows) * b_cols);
    std::vector<float> out(static_cast<size_t>(c.m) * c.n);
    for (float& x : a) x = rng.Next();
    for (float& x : b) x = rng.Next();
    for (float& x : out) x = rng.Next();
    const std::vector<float> c0 = out;
    const int lda = a_rows, ldb = b_rows, ldc = c.m;
    sgemm(&c.ta, &c.tb, &c.m, &c.n, &c.k, &c.alpha, a.data(), &lda, b.data(), &ldb, &c.beta,
          out.data(), &ldc);
    auto at = [&](int i, int l) {  // op(A)[i, l]
      return c.ta == 'N' ? a[static_cast<size_t>(l) * lda + i] : a[static_cast<size_t>(i) * lda + l];
    };
    auto bt = [&](int l, int j) {  // op(B)[l, j]
      return c.tb == 'N' ? b[static_cast<size_t>(j) * ldb + l] : b[static_cast<size_t>(l) * ldb + j];
    };
    for (int j = 0; j < c.n; ++j) {
      for (int i = 0; i < c.m; ++i) {
        double sum = 0.0, magnitude = 0.0;
        for (int l = 0; l < c.k; ++l) {
          const double p = static_cast<double>(at(i, l)) * bt(l, j);
          sum += p;
          magnitude += std::fabs(p);
        }
        const size_t idx = static_cast<size_t>(j) * ldc + i;
        const double expect = c.alpha * sum + (c.beta != 0.0f ? c.beta * double(c0[idx]) : 0.0);
        const double scale = std::fabs(c.alpha) * magnitude + std::fabs(c.beta * double(c0[idx]));
        const double err = std::fabs(static_cast<double>(out[idx]) - expect);
        if (!(err <= 1e-4 * scale + 1e-6)) {  // also catches NaN
          return absl::InternalError(absl::StrCat(
              "sgemm ", std::string(1, c.ta), std::string(1, c.tb), " m=", c.m, " n=", c.n,
              " k=", c.k, ": C[", i, ",", j, "] = ", out[idx], ", expected ", expect));
        }
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace freezetune::base
