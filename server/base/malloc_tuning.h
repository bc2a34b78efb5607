// glibc malloc thresholds for training processes.
//
// A training step allocates and frees the same large temporaries every
// step (activations, gradients, optimizer temporaries of the word
// embedding: 15 MiB each for 30,522 x 128 floats). With glibc's defaults
// each one larger than the (dynamic, at most 32 MiB) mmap threshold is a
// fresh mapping, and the top of the heap is trimmed back to the kernel as
// soon as 2x that threshold is free, so the next step faults every page in
// again: 38 s of a 188 s SST-2 epoch was kernel time (tests/bench/README.md).
// TuneMalloc raises both thresholds in-process so freed temporaries are
// reused; ReleaseFreeMemory hands the cached free memory back when a job
// ends.
//
// Torch-free. Thread safety: TuneMalloc once at start-up, before other
// threads allocate; ReleaseFreeMemory from any thread.
#ifndef FREEZETUNE_SERVER_BASE_MALLOC_TUNING_H_
#define FREEZETUNE_SERVER_BASE_MALLOC_TUNING_H_

#include <cstdint>
#include <string>

namespace freezetune::base {

// Sets M_MMAP_THRESHOLD and M_TRIM_THRESHOLD unless the operator already
// chose malloc settings (GLIBC_TUNABLES naming glibc.malloc, or MALLOC_*_
// variables) or another allocator (jemalloc, tcmalloc) is in the process.
// Returns what it did, for logs.
std::string TuneMalloc();

// Returns the allocator's cached free memory to the kernel: glibc's
// malloc_trim, or jemalloc's or tcmalloc's own release when one of them
// serves the process; call when a job ends. Returns the bytes glibc's heap
// shrank by (0 under the others).
int64_t ReleaseFreeMemory();

}  // namespace freezetune::base

#endif  // FREEZETUNE_SERVER_BASE_MALLOC_TUNING_H_
