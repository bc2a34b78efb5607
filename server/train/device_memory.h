// Device memory of a CUDA device as LibTorch's caching allocator sees it,
// and the out-of-memory handling around a training run. On a LibTorch built
// without CUDA (Debian's), every query returns zeros and nothing is freed.
//
// Thread safety: the functions may be called from any thread; the peak is
// per device, so jobs sharing a device share its peak.
#ifndef FREEZETUNE_SERVER_TRAIN_DEVICE_MEMORY_H_
#define FREEZETUNE_SERVER_TRAIN_DEVICE_MEMORY_H_

#include <cstdint>
#include <exception>
#include <string>

#include <torch/types.h>

namespace freezetune::train {

struct DeviceMemory {
  int64_t allocated_bytes = 0;  // held by tensors now
  int64_t reserved_bytes = 0;   // held by the caching allocator now
  int64_t peak_bytes = 0;       // most held by tensors since ResetPeak
};

// Zeros for a CPU device or without CUDA support.
DeviceMemory QueryDeviceMemory(const torch::Device& device);
// Starts a new peak (at a job's start).
void ResetPeakDeviceMemory(const torch::Device& device);
// Returns the allocator's cached blocks to the driver, so that the next job
// on the device starts from free memory (after an out-of-memory failure).
void ReleaseCachedDeviceMemory(const torch::Device& device);
// Whether `e` (a c10::Error or std::exception) reports that an allocation
// failed: c10::OutOfMemoryError, or LibTorch's CPU/CUDA allocator messages.
bool IsOutOfMemory(const std::exception& e);

}  // namespace freezetune::train

#endif  // FREEZETUNE_SERVER_TRAIN_DEVICE_MEMORY_H_
