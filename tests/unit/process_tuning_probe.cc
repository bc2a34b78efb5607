// Test helper for process_tuning_test: runs base::TuneProcess for real (its
// re-executions included) and prints what the final process image sees, one
// "key=value" per line. Torch-free; the BLAS comes from libblas.so.3.
//
//   process_tuning_probe [--assume-default-core=NAME] [--fail-self-check]
//                        [--no-select] [--release]
//
// --release: then, as a job does, allocates and frees 256 MiB in 4 MiB
// blocks and calls base::ReleaseFreeMemory, printing the resident set
// (rss_start, rss_peak, rss_freed, rss_released, in MiB) at each point.
//
// PROBE_EXECS counts the images this run went through (1 = no re-exec).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/base/blas_core.h"
#include "server/base/malloc_tuning.h"
#include "server/base/process_tuning.h"

namespace {

long RssMib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6) / 1024;
  }
  return -1;
}

// A job's temporaries: touched, then freed; the allocator may keep them.
void AllocateFreeAndRelease() {
  constexpr size_t kBlock = size_t{4} << 20;
  std::printf("rss_start=%ld\n", RssMib());
  std::vector<char*> blocks;
  for (int i = 0; i < 64; ++i) {
    char* p = static_cast<char*>(std::malloc(kBlock));
    if (p == nullptr) std::abort();
    std::memset(p, i + 1, kBlock);
    blocks.push_back(p);
  }
  std::printf("rss_peak=%ld\n", RssMib());
  for (char* p : blocks) std::free(p);
  std::printf("rss_freed=%ld\n", RssMib());
  freezetune::base::ReleaseFreeMemory();
  std::printf("rss_released=%ld\n", RssMib());
}

}  // namespace

int main(int argc, char** argv) {
  const char* execs = std::getenv("PROBE_EXECS");
  const int images = (execs != nullptr ? std::atoi(execs) : 0) + 1;
  setenv("PROBE_EXECS", absl::StrCat(images).c_str(), 1);

  freezetune::base::ProcessTuningOptions options;
  bool release = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--assume-default-core=", 0) == 0) {
      options.assume_default_core = arg.substr(arg.find('=') + 1);
    } else if (arg == "--fail-self-check") {
      options.self_check = [](freezetune::base::SgemmFn) {
        return absl::InternalError("injected failure");
      };
    } else if (arg == "--no-select") {
      options.blas_core_selection = false;
    } else if (arg == "--release") {
      release = true;
    } else {
      std::fprintf(stderr, "unknown argument %s\n", arg.c_str());
      return 2;
    }
  }
  const freezetune::base::ProcessTuning t = freezetune::base::TuneProcess(argv, options);
  // What OpenBLAS reports now, independently of the decision's bookkeeping.
  const freezetune::base::LoadedBlas now = freezetune::base::FindLoadedBlas();
  const char* coretype = std::getenv("OPENBLAS_CORETYPE");
  std::printf("images=%d\n", images);
  std::printf("outcome=%s\n", t.blas_core.outcome.c_str());
  std::printf("core=%s\n", t.blas_core.core.c_str());
  std::printf("default_core=%s\n", t.blas_core.default_core.c_str());
  std::printf("changed=%d\n", t.blas_core.changed ? 1 : 0);
  std::printf("warning=%d\n", t.blas_core.warning ? 1 : 0);
  std::printf("openblas_core=%s\n", now.core.c_str());
  std::printf("env_coretype=%s\n", coretype != nullptr ? coretype : "<unset>");
  std::printf("omp_wait_policy=%s\n", t.omp_wait_policy.c_str());
  std::printf("malloc=%s\n", t.malloc.c_str());
  std::printf("reexec_error=%s\n", t.reexec_error.c_str());
  if (release) AllocateFreeAndRelease();
  return 0;
}
