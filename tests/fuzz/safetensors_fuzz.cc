// libFuzzer target for the torch-free safetensors header parser: arbitrary
// bytes must never crash, hang or trip ASan, and anything accepted must obey
// the documented invariants (checked here, abort on violation).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "server/model/safetensors_format.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using freezetune::model::ParseSafetensors;
  using freezetune::model::SafetensorsDtypeSize;
  const std::string_view file(reinterpret_cast<const char*>(data), size);
  auto header = ParseSafetensors(file);
  if (!header.ok()) {
    if (header.status().message().empty()) std::abort();  // errors must say why
    return 0;
  }
  // Accepted: tensors are contiguous from 0, sized by shape * dtype, and the
  // file ends exactly at the last tensor.
  uint64_t expected = 0;
  for (const auto& t : header->tensors) {
    if (t.begin != expected || t.end < t.begin) std::abort();
    uint64_t bytes = SafetensorsDtypeSize(t.dtype);
    if (bytes == 0) std::abort();
    for (int64_t d : t.shape) {
      if (d < 0) std::abort();
      bytes *= static_cast<uint64_t>(d);
    }
    if (bytes != t.end - t.begin) std::abort();
    expected = t.end;
  }
  if (header->data_start() + expected != size) std::abort();

  // Re-encoding what was accepted must give a file that parses the same way.
  auto tensors = header->tensors;
  auto rebuilt = freezetune::model::BuildSafetensorsHeader(tensors, header->metadata);
  if (!rebuilt.ok()) std::abort();
  std::string copy = *rebuilt;
  copy.append(file.substr(header->data_start()));
  auto again = ParseSafetensors(copy);
  if (!again.ok() || again->tensors.size() != header->tensors.size()) std::abort();
  return 0;
}
