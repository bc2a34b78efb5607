// safetensors <-> torch::Tensor.
#include "server/model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"
#include "server/model/atomic_file.h"
#include "server/model/safetensors_format.h"

namespace freezetune::model {
namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors data is little-endian; this reader copies bytes as-is");

absl::StatusOr<at::ScalarType> WeightScalarType(std::string_view dtype) {
  if (dtype == "F32") return at::kFloat;
  if (dtype == "F16") return at::kHalf;
  if (dtype == "BF16") return at::kBFloat16;
  return absl::InvalidArgumentError(absl::StrCat(
      "unsupported dtype ", std::string(dtype), " (expected F32, F16 or BF16)"));
}

absl::Status Prefixed(const std::string& what, const absl::Status& s) {
  return absl::Status(s.code(), absl::StrCat(what, ": ", s.message()));
}

// Copies (F32) or converts (F16/BF16) one tensor's bytes into new F32 storage:
// the only copy between the mapped file and the returned tensor.
torch::Tensor ToFloatTensor(const char* src, const SafetensorsTensorInfo& info,
                            at::ScalarType stored) {
  const auto shape = at::IntArrayRef(info.shape);
  const size_t elem = at::elementSize(stored);
  if (reinterpret_cast<uintptr_t>(src) % elem == 0) {
    // Aligned: view the bytes in place, then copy/convert once.
    at::Tensor view = at::from_blob(const_cast<char*>(src), shape,
                                    at::TensorOptions().dtype(stored));
    return stored == at::kFloat ? view.clone(at::MemoryFormat::Contiguous)
                                : view.to(at::kFloat, /*non_blocking=*/false, /*copy=*/true);
  }
  // Unaligned data (a header length that is not a multiple of the element
  // size): memcpy into aligned storage first.
  at::Tensor staged = at::empty(shape, at::TensorOptions().dtype(stored));
  std::memcpy(staged.data_ptr(), src, info.end - info.begin);
  return stored == at::kFloat ? staged : staged.to(at::kFloat);
}

}  // namespace

absl::StatusOr<SafetensorsContents> ParseSafetensorsTensors(
    std::string_view file, const std::string& what, const SafetensorsReadOptions& options) {
  auto header = ParseSafetensors(file);
  if (!header.ok()) return Prefixed(what, header.status());
  SafetensorsContents out;
  out.metadata = header->metadata;
  const char* data = file.data() + header->data_start();
  try {
    for (const SafetensorsTensorInfo& t : header->tensors) {
      if (options.skip && options.skip(t.name)) {
        out.skipped.push_back(t.name);
        continue;
      }
      auto stored = WeightScalarType(t.dtype);
      if (!stored.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat(what, ": tensor \"", t.name, "\": ", stored.status().message()));
      }
      if (out.source_dtype.empty()) {
        out.source_dtype = t.dtype;
      } else if (out.source_dtype != t.dtype) {
        out.source_dtype = "mixed";
      }
      out.tensors.emplace_back(t.name, ToFloatTensor(data + t.begin, t, *stored));
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what_without_backtrace()));
  }
  return out;
}

absl::StatusOr<SafetensorsContents> ReadSafetensors(const std::string& path,
                                                    const SafetensorsReadOptions& options) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    return absl::Status(
        err == ENOENT ? absl::StatusCode::kNotFound : absl::StatusCode::kFailedPrecondition,
        absl::StrCat(path, ": cannot open: ", std::strerror(err)));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  const size_t size = static_cast<size_t>(st.st_size);
  if (size == 0) {
    ::close(fd);
    return ParseSafetensorsTensors(std::string_view(), path, options);
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_err = errno;
  ::close(fd);
  if (map == MAP_FAILED) {
    return absl::InternalError(absl::StrCat(path, ": mmap failed: ", std::strerror(map_err)));
  }
  ::madvise(map, size, MADV_SEQUENTIAL);
  auto result =
      ParseSafetensorsTensors(std::string_view(static_cast<const char*>(map), size), path, options);
  ::munmap(map, size);
  return result;
}

absl::Status WriteSafetensors(const std::string& path, const NamedTensors& tensors,
                              std::string_view dtype,
                              const std::vector<std::pair<std::string, std::string>>& metadata) {
  auto target = WeightScalarType(dtype);
  if (!target.ok()) return Prefixed(path, target.status());
  try {
    std::vector<torch::Tensor> converted;
    std::vector<SafetensorsTensorInfo> infos;
    converted.reserve(tensors.size());
    for (const auto& [name, tensor] : tensors) {
      if (!tensor.defined() || !tensor.is_floating_point()) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": tensor \"", name, "\": must be a defined floating tensor"));
      }
      converted.push_back(tensor.detach().to(at::kCPU).to(*target).contiguous());
      SafetensorsTensorInfo info;
      info.name = name;
      info.dtype = std::string(dtype);
      info.shape = converted.back().sizes().vec();
      infos.push_back(std::move(info));
    }
    auto header = BuildSafetensorsHeader(infos, metadata);
    if (!header.ok()) return Prefixed(path, header.status());
    FT_ASSIGN_OR_RETURN(AtomicFileWriter writer, AtomicFileWriter::Open(path));
    FT_RETURN_IF_ERROR(writer.Append(*header));
    for (const torch::Tensor& t : converted) {
      FT_RETURN_IF_ERROR(writer.Append(t.data_ptr(), t.nbytes()));
    }
    return writer.Commit();
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat(path, ": ", e.what_without_backtrace()));
  }
}

}  // namespace freezetune::model
