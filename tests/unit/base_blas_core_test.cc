// The BLAS core decision (server/base/blas_core.h) on injected CPUs and
// OpenBLAS choices, so that both outcomes (keep, select) and every guard are
// covered on any machine; and the sgemm self-check against the real BLAS and
// a broken one.
#include "server/base/blas_core.h"

#include <gtest/gtest.h>

#include <string>

#include "server/base/cpu_info.h"

namespace freezetune::base {
namespace {

CpuFeatures Avx2Features() {
  CpuFeatures f;
  f.sse3 = f.ssse3 = f.sse4_2 = f.avx = f.f16c = f.fma = f.avx2 = true;
  return f;
}

CpuFeatures Avx512Features() {
  CpuFeatures f = Avx2Features();
  f.avx512f = f.avx512cd = f.avx512bw = f.avx512dq = f.avx512vl = true;
  f.avx512_vnni = f.avx512_bf16 = true;
  return f;
}

// The machine of issue 17: Intel family 6 model 207, AVX-512 incl. BF16/FP16.
CpuInfo IntelAvx512(int model = 207) {
  CpuInfo cpu;
  cpu.vendor = "GenuineIntel";
  cpu.brand = "Intel(R) Xeon(R) Platinum";
  cpu.family = 6;
  cpu.model = model;
  cpu.features = Avx512Features();
  cpu.features.avx512_fp16 = true;
  return cpu;
}

// A Zen 4 EPYC (family 25 model 17).
CpuInfo AmdZen4() {
  CpuInfo cpu;
  cpu.vendor = "AuthenticAMD";
  cpu.brand = "AMD EPYC";
  cpu.family = 25;
  cpu.model = 17;
  cpu.features = Avx512Features();
  return cpu;
}

LoadedBlas OpenBlas(const std::string& core) {
  LoadedBlas blas;
  blas.library = "/usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3";
  blas.openblas = true;
  blas.core = core;
  blas.config = "OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH NO_AFFINITY USE_OPENMP " + core;
  blas.dynamic_arch = true;
  return blas;
}

BlasSelectionInput Input(CpuInfo cpu, const std::string& core) {
  BlasSelectionInput in;
  in.cpu = std::move(cpu);
  in.blas = OpenBlas(core);
  return in;
}

// A self-check that must not run (the first image never checks).
absl::Status MustNotRun() {
  ADD_FAILURE() << "self-check called";
  return absl::OkStatus();
}

TEST(CoreLevelTest, OrdersInstructionSets) {
  EXPECT_EQ(CoreLevel("Prescott"), 0);
  EXPECT_EQ(CoreLevel("Nehalem"), 0);
  EXPECT_EQ(CoreLevel("Sandybridge"), 1);
  EXPECT_EQ(CoreLevel("Haswell"), 2);
  EXPECT_EQ(CoreLevel("Zen"), 2);
  EXPECT_EQ(CoreLevel("SkylakeX"), 3);
  EXPECT_EQ(CoreLevel("Cooperlake"), 3);
  EXPECT_EQ(CoreLevel("skylakex"), 3);  // OpenBLAS compares names case-insensitively
  EXPECT_EQ(CoreLevel("POWER9"), -1);
  EXPECT_EQ(CoreLevel(""), -1);
}

TEST(BestCoreForTest, FollowsFeaturesNotModels) {
  EXPECT_EQ(BestCoreFor(IntelAvx512(207)), "SkylakeX");
  EXPECT_EQ(BestCoreFor(IntelAvx512(85)), "SkylakeX");
  EXPECT_EQ(BestCoreFor(AmdZen4()), "SkylakeX");
  CpuInfo intel_avx2 = IntelAvx512();
  intel_avx2.features = Avx2Features();
  EXPECT_EQ(BestCoreFor(intel_avx2), "Haswell");
  CpuInfo amd_avx2 = AmdZen4();
  amd_avx2.features = Avx2Features();
  EXPECT_EQ(BestCoreFor(amd_avx2), "Zen");
  CpuInfo avx_only = intel_avx2;
  avx_only.features.avx2 = avx_only.features.fma = false;
  EXPECT_EQ(BestCoreFor(avx_only), "Sandybridge");
  CpuInfo sse = intel_avx2;
  sse.features = CpuFeatures{};
  EXPECT_EQ(BestCoreFor(sse), "");
  // AVX-512 without BW/VL/DQ (e.g. Knights Landing) is not SkylakeX's ISA.
  CpuInfo knl = IntelAvx512();
  knl.features.avx512bw = knl.features.avx512vl = knl.features.avx512dq = false;
  EXPECT_EQ(BestCoreFor(knl), "Haswell");
}

TEST(DecideBlasCoreTest, FallbackCoreOnAvx512CpuIsReplacedBySkylakeX) {
  BlasDecision d = DecideBlasCore(Input(IntelAvx512(), "Prescott"), MustNotRun);
  EXPECT_EQ(d.action, BlasDecision::Action::kReexec);
  ASSERT_TRUE(d.set_coretype.has_value());
  EXPECT_EQ(*d.set_coretype, "SkylakeX");
  EXPECT_EQ(d.set_marker, "select:SkylakeX:Prescott");
  EXPECT_EQ(d.core, "SkylakeX");
  EXPECT_EQ(d.default_core, "Prescott");
  EXPECT_EQ(d.outcome, "selected");
}

TEST(DecideBlasCoreTest, SameFeaturesSameDecisionWhateverTheModel) {
  for (int model : {85, 106, 143, 207, 250}) {
    BlasDecision d = DecideBlasCore(Input(IntelAvx512(model), "Prescott"), MustNotRun);
    ASSERT_TRUE(d.set_coretype.has_value()) << model;
    EXPECT_EQ(*d.set_coretype, "SkylakeX") << model;
  }
}

TEST(DecideBlasCoreTest, OlderCoresAreReplacedByTheBestForTheFeatures) {
  CpuInfo amd_avx2 = AmdZen4();
  amd_avx2.features = Avx2Features();
  BlasDecision d = DecideBlasCore(Input(amd_avx2, "Barcelona"), MustNotRun);
  ASSERT_EQ(d.action, BlasDecision::Action::kReexec);
  EXPECT_EQ(*d.set_coretype, "Zen");
  // An AVX core on an AVX-512 CPU is a fallback too.
  d = DecideBlasCore(Input(IntelAvx512(), "Sandybridge"), MustNotRun);
  ASSERT_EQ(d.action, BlasDecision::Action::kReexec);
  EXPECT_EQ(*d.set_coretype, "SkylakeX");
}

TEST(DecideBlasCoreTest, MatchingCoreIsKept) {
  // What OpenBLAS 0.3.21 picks on a Zen 4 EPYC: an AVX-512 core.
  BlasDecision d = DecideBlasCore(Input(AmdZen4(), "Cooperlake"), MustNotRun);
  EXPECT_EQ(d.action, BlasDecision::Action::kKeep);
  EXPECT_EQ(d.outcome, "kept");
  EXPECT_EQ(d.core, "Cooperlake");
  EXPECT_FALSE(d.changed);
  EXPECT_FALSE(d.warning);
  // Haswell on an AVX2 CPU, SkylakeX on an AVX-512 one: kept.
  CpuInfo intel_avx2 = IntelAvx512();
  intel_avx2.features = Avx2Features();
  EXPECT_EQ(DecideBlasCore(Input(intel_avx2, "Haswell"), MustNotRun).outcome, "kept");
  EXPECT_EQ(DecideBlasCore(Input(IntelAvx512(), "SkylakeX"), MustNotRun).outcome, "kept");
  // A core above the CPU's level (possible only if OpenBLAS knows better) too.
  EXPECT_EQ(DecideBlasCore(Input(intel_avx2, "SkylakeX"), MustNotRun).outcome, "kept");
  // No AVX at all: nothing better to offer.
  CpuInfo sse = intel_avx2;
  sse.features = CpuFeatures{};
  EXPECT_EQ(DecideBlasCore(Input(sse, "Prescott"), MustNotRun).outcome, "kept");
}

TEST(DecideBlasCoreTest, OperatorCoretypeIsNeverOverridden) {
  BlasSelectionInput in = Input(IntelAvx512(), "Prescott");
  in.env_coretype = "Prescott";
  BlasDecision d = DecideBlasCore(in, MustNotRun);
  EXPECT_EQ(d.action, BlasDecision::Action::kKeep);
  EXPECT_EQ(d.outcome, "operator");
  EXPECT_EQ(d.core, "Prescott");
  EXPECT_FALSE(d.changed);
  // Even with a leftover marker of ours naming another core.
  in.env_marker = "select:SkylakeX:Prescott";
  EXPECT_EQ(DecideBlasCore(in, MustNotRun).outcome, "operator");
}

TEST(DecideBlasCoreTest, GuardsKeepTheDefault) {
  BlasSelectionInput in = Input(IntelAvx512(), "Prescott");
  in.enabled = false;
  EXPECT_EQ(DecideBlasCore(in, MustNotRun).outcome, "disabled");

  in = Input(IntelAvx512(), "Prescott");
  in.blas.openblas = false;
  in.blas.library = "/usr/lib/x86_64-linux-gnu/blas/libblas.so.3";
  BlasDecision d = DecideBlasCore(in, MustNotRun);
  EXPECT_EQ(d.outcome, "not_openblas");
  EXPECT_NE(d.reason.find("reference"), std::string::npos) << d.reason;

  in = Input(IntelAvx512(), "Prescott");
  in.blas.dynamic_arch = false;
  EXPECT_EQ(DecideBlasCore(in, MustNotRun).outcome, "single_arch");

  in = Input(IntelAvx512(), "FutureLake");
  EXPECT_EQ(DecideBlasCore(in, MustNotRun).outcome, "unknown_core");
}

TEST(DecideBlasCoreTest, SelectedCoreIsTrustedAfterTheSelfCheck) {
  BlasSelectionInput in = Input(IntelAvx512(), "SkylakeX");  // the re-executed image
  in.env_coretype = "SkylakeX";
  in.env_marker = "select:SkylakeX:Prescott";
  int checks = 0;
  BlasDecision d = DecideBlasCore(in, [&checks] {
    ++checks;
    return absl::OkStatus();
  });
  EXPECT_EQ(checks, 1);
  EXPECT_EQ(d.action, BlasDecision::Action::kKeep);
  EXPECT_EQ(d.outcome, "selected");
  EXPECT_EQ(d.core, "SkylakeX");
  EXPECT_EQ(d.default_core, "Prescott");
  EXPECT_TRUE(d.changed);
  EXPECT_FALSE(d.warning);
}

TEST(DecideBlasCoreTest, FailedSelfCheckFallsBackWithAWarning) {
  BlasSelectionInput in = Input(IntelAvx512(), "SkylakeX");
  in.env_coretype = "SkylakeX";
  in.env_marker = "select:SkylakeX:Prescott";
  BlasDecision d =
      DecideBlasCore(in, [] { return absl::InternalError("sgemm NN m=33: C[0,0] = nan"); });
  EXPECT_EQ(d.action, BlasDecision::Action::kReexec);
  EXPECT_FALSE(d.set_coretype.has_value());  // unset: OpenBLAS's own choice again
  EXPECT_EQ(d.set_marker, "fallback:SkylakeX:Prescott");
  EXPECT_TRUE(d.warning);
  EXPECT_NE(d.reason.find("C[0,0] = nan"), std::string::npos) << d.reason;

  // The image after that runs the default and says why, without retrying.
  BlasSelectionInput after = Input(IntelAvx512(), "Prescott");
  after.env_marker = "fallback:SkylakeX:Prescott";
  BlasDecision final_d = DecideBlasCore(after, MustNotRun);
  EXPECT_EQ(final_d.action, BlasDecision::Action::kKeep);
  EXPECT_EQ(final_d.outcome, "self_check_failed");
  EXPECT_EQ(final_d.core, "Prescott");
  EXPECT_FALSE(final_d.changed);
  EXPECT_TRUE(final_d.warning);
}

TEST(DecideBlasCoreTest, CoreNameOpenBlasIgnoredIsReported) {
  BlasSelectionInput in = Input(IntelAvx512(), "Prescott");
  in.env_coretype = "SkylakeX";
  in.env_marker = "select:SkylakeX:Prescott";
  BlasDecision d = DecideBlasCore(in, MustNotRun);
  EXPECT_EQ(d.action, BlasDecision::Action::kKeep);
  EXPECT_EQ(d.outcome, "not_accepted");
  EXPECT_TRUE(d.warning);
}

TEST(CpuInfoTest, ThisMachineIsConsistent) {
  CpuInfo cpu = ReadCpuInfo();
#if defined(__x86_64__)
  EXPECT_FALSE(cpu.vendor.empty());
  EXPECT_GT(cpu.family, 0);
  EXPECT_TRUE(cpu.features.sse3);  // every x86-64 CPU of this century
#endif
  const CpuFeatures& f = cpu.features;
  EXPECT_TRUE(!f.avx2 || f.avx);
  EXPECT_TRUE(!f.fma || f.avx);
  EXPECT_TRUE(!(f.avx512bw || f.avx512vl || f.avx512dq || f.avx512_bf16) || f.avx512f);
  EXPECT_FALSE(cpu.Describe().empty());
  EXPECT_FALSE(f.ToString().empty());
}

TEST(SgemmSelfCheckTest, RealBlasPasses) {
  LoadedBlas blas = FindLoadedBlas();
  ASSERT_NE(blas.sgemm, nullptr) << "no libblas.so.3";
  EXPECT_TRUE(SgemmSelfCheck(blas.sgemm).ok()) << SgemmSelfCheck(blas.sgemm);
}

// The real sgemm, then one wrong element: what a miscompiled kernel's edge
// handling looks like.
SgemmFn g_real = nullptr;
void OffByOneElement(const char* ta, const char* tb, const int* m, const int* n, const int* k,
                     const float* alpha, const float* a, const int* lda, const float* b,
                     const int* ldb, const float* beta, float* c, const int* ldc) {
  g_real(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  if (*m == 33) c[*m - 1] += 0.01f;
}

void Zeros(const char*, const char*, const int* m, const int* n, const int*, const float*,
           const float*, const int*, const float*, const int*, const float*, float* c,
           const int* ldc) {
  for (int j = 0; j < *n; ++j) {
    for (int i = 0; i < *m; ++i) c[j * *ldc + i] = 0.0f;
  }
}

TEST(SgemmSelfCheckTest, WrongResultsFail) {
  g_real = FindLoadedBlas().sgemm;
  ASSERT_NE(g_real, nullptr);
  absl::Status s = SgemmSelfCheck(&OffByOneElement);
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_NE(s.message().find("m=33"), std::string::npos) << s;
  EXPECT_FALSE(SgemmSelfCheck(&Zeros).ok());
  EXPECT_FALSE(SgemmSelfCheck(nullptr).ok());
}

}  // namespace
}  // namespace freezetune::base
