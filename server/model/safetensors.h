// Reading and writing safetensors files as LibTorch tensors. Weights stored
// as F32, F16 or BF16 load as contiguous F32 CPU tensors; writing stores F32,
// F16 or BF16. The header is validated by safetensors_format.h first.
//
// Thread safety: free functions with no shared state.
#ifndef FREEZETUNE_SERVER_MODEL_SAFETENSORS_H_
#define FREEZETUNE_SERVER_MODEL_SAFETENSORS_H_

#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <torch/types.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/model/safetensors_format.h"

namespace freezetune::model {

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

struct SafetensorsReadOptions {
  // Tensors for which this returns true are validated in the header but
  // neither dtype-checked nor loaded (e.g. int64 position_ids buffers).
  std::function<bool(const std::string& name)> skip;
};

struct SafetensorsContents {
  NamedTensors tensors;               // F32, contiguous, CPU, in file order
  std::vector<std::string> skipped;   // names `skip` accepted
  std::vector<std::pair<std::string, std::string>> metadata;
  // The stored dtype of the loaded tensors: "F32", "F16" or "BF16"; "mixed"
  // if they differ; "" when nothing was loaded.
  std::string source_dtype;
};

// Called once per loaded tensor in file order with a CPU tensor in the stored
// dtype (F32, F16 or BF16) that views the file's bytes where alignment allows
// (else an aligned copy). The view is valid only during the call: copy_()
// from it (copy_ also converts the dtype). A non-OK return stops the visit
// and is returned as is.
using SafetensorsVisitor = std::function<absl::Status(
    const std::string& name, const std::string& stored_dtype, const torch::Tensor& view)>;

// Maps the file (one mmap), validates the header, and calls `visit` for each
// tensor not skipped: a caller that copy_()s into its own tensors reads every
// byte once with no intermediate buffer. A tensor stored in a dtype other
// than F32/F16/BF16 is INVALID_ARGUMENT "<path>: tensor "x": unsupported
// dtype I64"; other errors are prefixed by the path too. Returns the header.
absl::StatusOr<SafetensorsHeader> VisitSafetensors(const std::string& path,
                                                   const SafetensorsReadOptions& options,
                                                   const SafetensorsVisitor& visit);
// Same over bytes in memory (`what` prefixes errors).
absl::StatusOr<SafetensorsHeader> VisitSafetensorsBytes(std::string_view file,
                                                        const std::string& what,
                                                        const SafetensorsReadOptions& options,
                                                        const SafetensorsVisitor& visit);

// Maps the file (one mmap) and copies/converts each tensor once into its own
// F32 storage. A loaded tensor in a dtype other than F32/F16/BF16 is
// INVALID_ARGUMENT "<path>: tensor "x": unsupported dtype I64". Every error
// is prefixed by the path.
absl::StatusOr<SafetensorsContents> ReadSafetensors(const std::string& path,
                                                    const SafetensorsReadOptions& options = {});

// Same from bytes already in memory (`what` prefixes errors).
absl::StatusOr<SafetensorsContents> ParseSafetensorsTensors(
    std::string_view file, const std::string& what, const SafetensorsReadOptions& options = {});

// Writes `tensors` (any floating dtype, any device) converted to `dtype`
// ("F32", "F16" or "BF16") in the given order, atomically (tmp + fsync +
// rename).
absl::Status WriteSafetensors(const std::string& path, const NamedTensors& tensors,
                              std::string_view dtype = "F32",
                              const std::vector<std::pair<std::string, std::string>>& metadata = {});

}  // namespace freezetune::model

#endif  // FREEZETUNE_SERVER_MODEL_SAFETENSORS_H_
