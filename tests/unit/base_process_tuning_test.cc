// base::TuneProcess for real: process_tuning_probe re-executes itself as the
// server does, and reports what its final image sees (the core OpenBLAS
// really runs, the environment, how many images it took). The selection is
// exercised on any machine by pretending OpenBLAS chose "Prescott" (the
// fallback of issue 17); the plain run checks that this machine's own
// outcome is consistent. The probe also frees memory as a job does and
// releases it, under glibc and under a preloaded jemalloc and tcmalloc.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>

#include "absl/strings/str_split.h"
#include "server/base/blas_core.h"
#include "server/base/cpu_info.h"

namespace freezetune::base {
namespace {

using Result = std::map<std::string, std::string>;

// Runs the probe with a clean tuning environment plus `env` ("A=b C=d").
Result RunProbe(const std::string& env, const std::string& args) {
  const std::string cmd = std::string("env -u OPENBLAS_CORETYPE -u ") + kBlasMarkerEnv +
                          " -u PROBE_EXECS -u OMP_WAIT_POLICY -u GLIBC_TUNABLES " + env + " " +
                          PROCESS_TUNING_PROBE + " " + args + " 2>&1";
  Result out;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) return out;
  char line[4096];
  while (std::fgets(line, sizeof(line), pipe) != nullptr) {
    std::pair<std::string, std::string> kv = absl::StrSplit(line, absl::MaxSplits('=', 1));
    if (!kv.second.empty() && kv.second.back() == '\n') kv.second.pop_back();
    out[kv.first] = kv.second;
  }
  out["exit"] = std::to_string(pclose(pipe));
  return out;
}

class ProcessTuningTest : public ::testing::Test {
 protected:
  void SetUp() override {
    best_ = BestCoreFor(ReadCpuInfo());
    default_ = RunProbe("OMP_WAIT_POLICY=PASSIVE", "--no-select")["openblas_core"];
    ASSERT_FALSE(default_.empty()) << "libblas.so.3 is not OpenBLAS";
  }
  std::string best_;      // what the selection would pick on this CPU
  std::string default_;   // OpenBLAS's own choice here
};

TEST_F(ProcessTuningTest, ThisMachineRunsACoreMatchingItsFeatures) {
  Result r = RunProbe("", "");
  ASSERT_EQ(r["exit"], "0") << r["outcome"];
  EXPECT_EQ(r["omp_wait_policy"], "PASSIVE");
  EXPECT_EQ(r["reexec_error"], "");
  EXPECT_EQ(r["core"], r["openblas_core"]);
  if (r["outcome"] == "selected") {
    // A machine OpenBLAS does not know (issue 17's Xeon): the best core runs.
    EXPECT_EQ(r["openblas_core"], best_);
    EXPECT_EQ(r["env_coretype"], best_);
    EXPECT_EQ(r["changed"], "1");
    EXPECT_EQ(r["images"], "2");
  } else {
    EXPECT_EQ(r["outcome"], "kept");
    EXPECT_EQ(r["openblas_core"], default_);
    EXPECT_EQ(r["env_coretype"], "<unset>");
    EXPECT_EQ(r["changed"], "0");
    EXPECT_EQ(r["images"], "2");  // the OMP_WAIT_POLICY re-exec only
  }
}

TEST_F(ProcessTuningTest, FallbackCoreIsReplacedAndVerified) {
  if (best_.empty()) GTEST_SKIP() << "no AVX on this CPU: nothing to select";
  Result r = RunProbe("", "--assume-default-core=Prescott");
  ASSERT_EQ(r["exit"], "0");
  EXPECT_EQ(r["outcome"], "selected");
  EXPECT_EQ(r["openblas_core"], best_) << "OpenBLAS does not run the selected core";
  EXPECT_EQ(r["core"], best_);
  EXPECT_EQ(r["default_core"], "Prescott");
  EXPECT_EQ(r["changed"], "1");
  EXPECT_EQ(r["env_coretype"], best_);
  EXPECT_EQ(r["images"], "2");  // OMP_WAIT_POLICY and the core in one re-exec
  EXPECT_EQ(r["warning"], "0");
}

TEST_F(ProcessTuningTest, FailedSelfCheckGoesBackToTheDefault) {
  if (best_.empty()) GTEST_SKIP() << "no AVX on this CPU: nothing to select";
  Result r = RunProbe("", "--assume-default-core=Prescott --fail-self-check");
  ASSERT_EQ(r["exit"], "0");
  EXPECT_EQ(r["outcome"], "self_check_failed");
  EXPECT_EQ(r["warning"], "1");
  EXPECT_EQ(r["env_coretype"], "<unset>");
  EXPECT_EQ(r["openblas_core"], default_);
  EXPECT_EQ(r["changed"], "0");
  EXPECT_EQ(r["images"], "3");  // select, then fall back, then stop
}

TEST_F(ProcessTuningTest, OperatorsCoretypeIsKept) {
  // Haswell is a valid choice on every AVX2 machine; on older ones, Prescott.
  const std::string chosen = ReadCpuInfo().features.avx2_fma() ? "Haswell" : "Prescott";
  Result r = RunProbe("OPENBLAS_CORETYPE=" + chosen, "--assume-default-core=Prescott");
  ASSERT_EQ(r["exit"], "0");
  EXPECT_EQ(r["outcome"], "operator");
  EXPECT_EQ(r["openblas_core"], chosen);
  EXPECT_EQ(r["env_coretype"], chosen);
  EXPECT_EQ(r["images"], "2");
}

TEST_F(ProcessTuningTest, SelectionCanBeTurnedOff) {
  Result r = RunProbe("OMP_WAIT_POLICY=ACTIVE", "--assume-default-core=Prescott --no-select");
  ASSERT_EQ(r["exit"], "0");
  EXPECT_EQ(r["outcome"], "disabled");
  EXPECT_EQ(r["openblas_core"], default_);
  EXPECT_EQ(r["env_coretype"], "<unset>");
  EXPECT_EQ(r["omp_wait_policy"], "ACTIVE");  // the operator's policy stands
  EXPECT_EQ(r["images"], "1");                // nothing to change: no re-exec
}

// A job's freed memory goes back to the kernel when it ends, whichever
// allocator serves the server: glibc with the thresholds TuneProcess set
// (which keep the freed blocks until then), or jemalloc or tcmalloc
// preloaded (left untuned, released through their own calls).
TEST(MallocReleaseTest, FreedMemoryGoesBackToTheKernelUnderEachAllocator) {
  const std::string libdir = "/usr/lib/x86_64-linux-gnu/";
  const struct {
    const char* preload;  // "" for glibc
    const char* malloc;   // the probe's malloc= line starts with this
  } allocators[] = {{"", "glibc, mmap_threshold=268435456"},
                    {"libjemalloc.so.2", "jemalloc"},
                    {"libtcmalloc_minimal.so.4", "tcmalloc"}};
  int tested = 0;
  for (const auto& a : allocators) {
    const std::string preload = a.preload[0] == '\0' ? "" : libdir + a.preload;
    if (!preload.empty() && !std::filesystem::exists(preload)) continue;  // not installed
    ++tested;
    Result r = RunProbe(preload.empty() ? "" : "LD_PRELOAD=" + preload, "--no-select --release");
    ASSERT_EQ(r["exit"], "0") << a.malloc;
    EXPECT_EQ(r["malloc"].rfind(a.malloc, 0), 0u) << r["malloc"];
    const long start = std::atol(r["rss_start"].c_str());
    const long peak = std::atol(r["rss_peak"].c_str());
    const long released = std::atol(r["rss_released"].c_str());
    EXPECT_GE(peak, start + 256) << a.malloc;
    // Back to where it started, give or take the allocator's bookkeeping
    // (glibc, jemalloc and tcmalloc kept 256, 41 and 256 MiB of the 256
    // once freed, 0-1 after the release, when this was written).
    EXPECT_LE(released, start + 24) << a.malloc << ": " << start << " MiB at the start, " << peak
                                    << " at the peak, " << r["rss_freed"] << " once freed, "
                                    << released << " after the release";
  }
  EXPECT_GE(tested, 1);
}

}  // namespace
}  // namespace freezetune::base
