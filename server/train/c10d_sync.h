// GradientSync over PyTorch's c10d: a ProcessGroupGloo whose ranks meet
// through a TCPStore (hosted by the launcher, see data_parallel_launcher.h).
// Gloo all-reduces CPU tensors and, on a CUDA LibTorch, CUDA tensors (staged
// through host memory); NCCL is not used (see tests/bench/GPU.md).
//
// Every collective is bounded by `timeout`: a rank that died or hangs makes
// the others' next collective throw (c10::Error) within it, which the
// trainer turns into a failed run.
//
// Thread safety: as GradientSync; one training thread.
#ifndef FREEZETUNE_SERVER_TRAIN_C10D_SYNC_H_
#define FREEZETUNE_SERVER_TRAIN_C10D_SYNC_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/train/data_parallel.h"

namespace freezetune::train {

struct C10dSyncOptions {
  std::string store_host = "127.0.0.1";
  int store_port = 0;
  // This rank runs the TCPStore server on store_port (multi-node: rank 0;
  // on one machine the launcher hosts it instead).
  bool host_store = false;
  // Address Gloo binds and announces for this rank's connections: loopback
  // on one machine, the pod's IP across nodes.
  std::string gloo_hostname = "127.0.0.1";
  int rank = 0;
  int world_size = 1;
  // Rendezvous and every collective.
  std::chrono::milliseconds timeout{std::chrono::seconds(300)};
  // Gradients are flattened into buckets of at most this many bytes, each
  // one all-reduce (PyTorch DDP's default bucket is 25 MiB).
  int64_t bucket_bytes = int64_t{25} << 20;
};

// Connects to the store and forms the process group (blocks until all
// world_size ranks joined, or UNAVAILABLE after the timeout).
absl::StatusOr<std::unique_ptr<GradientSync>> ConnectC10dSync(const C10dSyncOptions& options);

}  // namespace freezetune::train

#endif  // FREEZETUNE_SERVER_TRAIN_C10D_SYNC_H_
