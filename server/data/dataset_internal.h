// Pieces of dataset.cc exposed for unit tests only; not part of the data
// layer's contract. Pure functions, thread-safe.
#ifndef FREEZETUNE_SERVER_DATA_DATASET_INTERNAL_H_
#define FREEZETUNE_SERVER_DATA_DATASET_INTERNAL_H_

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "freezetune/v1/freezetune.pb.h"

namespace freezetune::data::internal {

// Every byte >= 0x80 becomes its two-byte UTF-8 form (latin-1 decoding).
std::string Latin1ToUtf8(std::string_view bytes);

// RFC 4180 records: ',' separated, '"' quoting with "" escapes, quoted
// fields may hold commas and line breaks, records end with LF or CRLF.
// Entirely empty records (blank lines) are skipped. `fn` gets the 1-based
// line where each record starts; its first error stops the walk. Malformed
// quoting is an error "<field>: line N: <reason>".
absl::Status ForEachCsvRecord(
    std::string_view content, std::string_view field,
    const std::function<absl::Status(int64_t line, std::vector<std::string> fields)>& fn);

// spec.format, else from the URI's extension; error "<field>.format: ...".
absl::StatusOr<v1::DatasetFormat> ResolveFormat(const v1::DatasetSpec& spec,
                                                std::string_view field);

}  // namespace freezetune::data::internal

#endif  // FREEZETUNE_SERVER_DATA_DATASET_INTERNAL_H_
