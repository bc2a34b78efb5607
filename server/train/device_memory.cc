// Device memory queries (see device_memory.h). FREEZETUNE_WITH_CUDA is set by
// server/train/CMakeLists.txt when LibTorch has CUDA (the c10_cuda target).
#include "server/train/device_memory.h"

#include <c10/util/Exception.h>

#include <cstring>
#include <new>

#ifdef FREEZETUNE_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace freezetune::train {

#ifdef FREEZETUNE_WITH_CUDA
namespace {
c10::DeviceIndex Index(const torch::Device& device) {
  return device.has_index() ? device.index() : c10::cuda::current_device();
}
}  // namespace

DeviceMemory QueryDeviceMemory(const torch::Device& device) {
  DeviceMemory m;
  if (!device.is_cuda()) return m;
  // Index 0 of each StatArray is StatType::AGGREGATE (all pools); the type
  // moved namespaces across LibTorch versions, the layout did not.
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(Index(device));
  m.allocated_bytes = stats.allocated_bytes[0].current;
  m.reserved_bytes = stats.reserved_bytes[0].current;
  m.peak_bytes = stats.allocated_bytes[0].peak;
  return m;
}

void ResetPeakDeviceMemory(const torch::Device& device) {
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(Index(device));
}

void ReleaseCachedDeviceMemory(const torch::Device& device) {
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::emptyCache();
}
#else
DeviceMemory QueryDeviceMemory(const torch::Device&) { return {}; }
void ResetPeakDeviceMemory(const torch::Device&) {}
void ReleaseCachedDeviceMemory(const torch::Device&) {}
#endif

bool IsOutOfMemory(const std::exception& e) {
  if (dynamic_cast<const c10::OutOfMemoryError*>(&e) != nullptr) return true;
  if (dynamic_cast<const std::bad_alloc*>(&e) != nullptr) return true;
  const char* what = e.what();
  // CUDA: "CUDA out of memory. Tried to allocate ..."; CPU (1.13):
  // "DefaultCPUAllocator: can't allocate memory: you tried to allocate ..."
  // (or "not enough memory" from other versions).
  return std::strstr(what, "out of memory") != nullptr ||
         std::strstr(what, "not enough memory") != nullptr ||
         std::strstr(what, "can't allocate memory") != nullptr;
}

}  // namespace freezetune::train
