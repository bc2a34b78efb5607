// The safetensors container format without any tensor library: validating a
// header against the file it came from, and building a header for writing.
// Torch-free, so the fuzz target and header-only inspection link just this.
//
// Layout: 8-byte little-endian header length N, N bytes of JSON, then the
// data. Validation rejects (with the offending field or tensor named):
// N > 100 MB or past the end of the file; JSON that is invalid (including
// invalid UTF-8) or not an object; a key appearing twice in any object;
// "__metadata__" that is not a string->string object; an entry without a
// known dtype, a shape of non-negative integers, or data_offsets [begin, end];
// shape product * dtype size != end - begin (overflow checked); offsets that
// are not contiguous from 0 (gaps or overlaps); and a file whose length is not
// exactly 8 + N + the end of the last tensor.
//
// Thread safety: free functions with no shared state.
#ifndef FREEZETUNE_SERVER_MODEL_SAFETENSORS_FORMAT_H_
#define FREEZETUNE_SERVER_MODEL_SAFETENSORS_FORMAT_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace freezetune::model {

inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

// Element size in bytes of a safetensors dtype name ("F32", "I64", ...), or 0
// when the name is not a safetensors dtype at all.
size_t SafetensorsDtypeSize(std::string_view dtype);
// The dtypes model weights may be stored in: F32, F16 and BF16.
bool IsFloatWeightDtype(std::string_view dtype);

struct SafetensorsTensorInfo {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  // Byte range relative to the start of the data section (8 + N).
  uint64_t begin = 0;
  uint64_t end = 0;
};

struct SafetensorsHeader {
  uint64_t header_bytes = 0;  // N
  // Sorted by data offset (the on-disk order).
  std::vector<SafetensorsTensorInfo> tensors;
  std::vector<std::pair<std::string, std::string>> metadata;
  uint64_t data_start() const { return 8 + header_bytes; }
};

// Validates a complete file held in memory. Errors are INVALID_ARGUMENT with
// a message that names the rule broken; callers prefix the file name. The
// message never quotes header bytes except tensor names and dtype strings.
absl::StatusOr<SafetensorsHeader> ParseSafetensors(std::string_view file);

// Validates header JSON (the N bytes after the length prefix) against the
// size of the whole file, for readers that load only the header.
absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(std::string_view header_json,
                                                         uint64_t file_size);

// Reads and validates just the header of the file at `path` (errors are
// prefixed with the path).
absl::StatusOr<SafetensorsHeader> ReadSafetensorsHeader(const std::string& path);

// Returns the 8-byte length prefix plus header JSON (space-padded so data
// starts 8-byte aligned) for `tensors` stored back to back in the given order,
// and sets each tensor's begin/end. Names must be unique and not
// "__metadata__"; dtype must be known (INVALID_ARGUMENT otherwise).
absl::StatusOr<std::string> BuildSafetensorsHeader(
    std::vector<SafetensorsTensorInfo>& tensors,
    const std::vector<std::pair<std::string, std::string>>& metadata);

}  // namespace freezetune::model

#endif  // FREEZETUNE_SERVER_MODEL_SAFETENSORS_FORMAT_H_
