// Test helper for process_tuning_test: runs base::TuneProcess for real (its
// re-executions included) and prints what the final process image sees, one
// "key=value" per line. Torch-free; the BLAS comes from libblas.so.3.
//
//   process_tuning_probe [--assume-default-core=NAME] [--fail-self-check]
//                        [--no-select]
//
// PROBE_EXECS counts the images this run went through (1 = no re-exec).
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/base/blas_core.h"
#include "server/base/process_tuning.h"

int main(int argc, char** argv) {
  const char* execs = std::getenv("PROBE_EXECS");
  const int images = (execs != nullptr ? std::atoi(execs) : 0) + 1;
  setenv("PROBE_EXECS", absl::StrCat(images).c_str(), 1);

  freezetune::base::ProcessTuningOptions options;
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
  return 0;
}
