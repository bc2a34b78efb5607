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

// A tensor over the stored bytes: a view when they are aligned for the
// element type, else an aligned copy (a header whose length is not a multiple
// of the element size misaligns everything after it).
torch::Tensor StoredTensor(const char* src, const SafetensorsTensorInfo& info,
                           at::ScalarType stored) {
  const auto shape = at::IntArrayRef(info.shape);
  const auto options = at::TensorOptions().dtype(stored);
  if (reinterpret_cast<uintptr_t>(src) % at::elementSize(stored) == 0) {
    return at::from_blob(const_cast<char*>(src), shape, options);
  }
  at::Tensor staged = at::empty(shape, options);
  std::memcpy(staged.data_ptr(), src, info.end - info.begin);
  return staged;
}

// Unmaps on scope exit.
struct Mapping {
  void* addr = MAP_FAILED;
  size_t size = 0;
  ~Mapping() {
    if (addr != MAP_FAILED) ::munmap(addr, size);
  }
};

}  // namespace

absl::StatusOr<SafetensorsHeader> VisitSafetensorsBytes(std::string_view file,
                                                        const std::string& what,
                                                        const SafetensorsReadOptions& options,
                                                        const SafetensorsVisitor& visit) {
  auto header = ParseSafetensors(file);
  if (!header.ok()) return Prefixed(what, header.status());
  const char* data = file.data() + header->data_start();
  try {
    for (const SafetensorsTensorInfo& t : header->tensors) {
      if (options.skip && options.skip(t.name)) continue;
      auto stored = WeightScalarType(t.dtype);
      if (!stored.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat(what, ": tensor \"", t.name, "\": ", stored.status().message()));
      }
      FT_RETURN_IF_ERROR(visit(t.name, t.dtype, StoredTensor(data + t.begin, t, *stored)));
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what_without_backtrace()));
  }
  return header;
}

absl::StatusOr<SafetensorsHeader> VisitSafetensors(const std::string& path,
                                                   const SafetensorsReadOptions& options,
                                                   const SafetensorsVisitor& visit) {
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
  Mapping map;
  map.size = static_cast<size_t>(st.st_size);
  if (map.size == 0) {
    ::close(fd);
    return VisitSafetensorsBytes(std::string_view(), path, options, visit);
  }
  map.addr = ::mmap(nullptr, map.size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_err = errno;
  ::close(fd);
  if (map.addr == MAP_FAILED) {
    return absl::InternalError(absl::StrCat(path, ": mmap failed: ", std::strerror(map_err)));
  }
  ::madvise(map.addr, map.size, MADV_SEQUENTIAL);
  return VisitSafetensorsBytes(std::string_view(static_cast<const char*>(map.addr), map.size),
                               path, options, visit);
}

namespace {

// Collects every tensor as its own contiguous F32 tensor (one copy or
// conversion from the stored bytes).
absl::StatusOr<SafetensorsContents> Collect(
    const std::function<absl::StatusOr<SafetensorsHeader>(const SafetensorsReadOptions&,
                                                          const SafetensorsVisitor&)>& run,
    const SafetensorsReadOptions& options) {
  SafetensorsContents out;
  SafetensorsReadOptions recording;
  recording.skip = [&](const std::string& name) {
    if (!options.skip || !options.skip(name)) return false;
    out.skipped.push_back(name);
    return true;
  };
  auto header = run(recording, [&out](const std::string& name, const std::string& dtype,
                                      const torch::Tensor& view) {
    if (out.source_dtype.empty()) {
      out.source_dtype = dtype;
    } else if (out.source_dtype != dtype) {
      out.source_dtype = "mixed";
    }
    out.tensors.emplace_back(
        name, view.to(at::kFloat, /*non_blocking=*/false, /*copy=*/true).contiguous());
    return absl::OkStatus();
  });
  if (!header.ok()) return header.status();
  out.metadata = header->metadata;
  return out;
}

}  // namespace

absl::StatusOr<SafetensorsContents> ParseSafetensorsTensors(
    std::string_view file, const std::string& what, const SafetensorsReadOptions& options) {
  return Collect(
      [&](const SafetensorsReadOptions& o, const SafetensorsVisitor& v) {
        return VisitSafetensorsBytes(file, what, o, v);
      },
      options);
}

absl::StatusOr<SafetensorsContents> ReadSafetensors(const std::string& path,
                                                    const SafetensorsReadOptions& options) {
  return Collect(
      [&](const SafetensorsReadOptions& o, const SafetensorsVisitor& v) {
        return VisitSafetensors(path, o, v);
      },
      options);
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
