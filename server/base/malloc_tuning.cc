// See malloc_tuning.h.
#include "server/base/malloc_tuning.h"

#include <dlfcn.h>
#include <malloc.h>

#include <cstdlib>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace freezetune::base {
namespace {

// Chosen by measurement (tests/bench/README.md, "Allocator"): 256 MiB keeps
// every per-step temporary of BERT-base at batch 8 x 128 (the largest, the
// attention scores of one layer, are 6 MiB; a 30,522 x 768 embedding
// gradient is 90 MiB) in the heap; 1 GiB of free heap top is kept before it
// is trimmed, so a step's peak is reused by the next one.
constexpr size_t kMmapThreshold = size_t{256} << 20;
constexpr size_t kTrimThreshold = size_t{1} << 30;

bool OperatorChoseMalloc() {
  if (const char* t = std::getenv("GLIBC_TUNABLES"); t != nullptr && absl::StrContains(t, "glibc.malloc.")) {
    return true;
  }
  for (const char* name : {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                           "MALLOC_MMAP_MAX_", "MALLOC_ARENA_MAX"}) {
    if (std::getenv(name) != nullptr) return true;
  }
  return false;
}

}  // namespace

std::string TuneMalloc() {
  // jemalloc and tcmalloc (linked or LD_PRELOADed) export their own entry
  // points; mallopt would then set glibc's unused allocator.
  if (dlsym(RTLD_DEFAULT, "mallctl") != nullptr) return "jemalloc (not tuned)";
  if (dlsym(RTLD_DEFAULT, "MallocExtension_GetNumericProperty") != nullptr) {
    return "tcmalloc (not tuned)";
  }
  if (OperatorChoseMalloc()) return "glibc, settings from the environment (not tuned)";
  const bool mmap_ok = mallopt(M_MMAP_THRESHOLD, static_cast<int>(kMmapThreshold)) == 1;
  const bool trim_ok = mallopt(M_TRIM_THRESHOLD, static_cast<int>(kTrimThreshold)) == 1;
  return absl::StrCat("glibc, mmap_threshold=", mmap_ok ? absl::StrCat(kMmapThreshold) : "default",
                      " trim_threshold=", trim_ok ? absl::StrCat(kTrimThreshold) : "default");
}

int64_t ReleaseFreeMemory() {
  // The allocator that serves this process: jemalloc's purge of every arena
  // (MALLCTL_ARENAS_ALL is 4096), tcmalloc's release of its free pages, or
  // glibc's trim. Looked up at run time: neither is linked in.
  using Mallctl = int (*)(const char*, void*, size_t*, void*, size_t);
  if (auto* mallctl = reinterpret_cast<Mallctl>(dlsym(RTLD_DEFAULT, "mallctl"))) {
    mallctl("arena.4096.purge", nullptr, nullptr, nullptr, 0);
    return 0;
  }
  using Release = void (*)();
  if (auto* release =
          reinterpret_cast<Release>(dlsym(RTLD_DEFAULT, "MallocExtension_ReleaseFreeMemory"))) {
    release();
    return 0;
  }
  const struct mallinfo2 before = mallinfo2();
  malloc_trim(0);
  const struct mallinfo2 after = mallinfo2();
  return static_cast<int64_t>(before.arena) - static_cast<int64_t>(after.arena);
}

}  // namespace freezetune::base
