// Crash-safe file writing: content goes to "<path>.tmp", is fsync'ed, then
// renamed over <path> (and the directory fsync'ed), so readers see either the
// old file or the complete new one, never a prefix.
//
// Thread safety: an AtomicFileWriter is used by one thread; two writers for
// the same path at once race on the .tmp name (callers must not do that).
#ifndef FREEZETUNE_SERVER_MODEL_ATOMIC_FILE_H_
#define FREEZETUNE_SERVER_MODEL_ATOMIC_FILE_H_

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace freezetune::model {

class AtomicFileWriter {
 public:
  // Creates/truncates "<path>.tmp".
  static absl::StatusOr<AtomicFileWriter> Open(const std::string& path);

  absl::Status Append(const void* data, size_t size);
  absl::Status Append(std::string_view data) { return Append(data.data(), data.size()); }
  // fsync, close, rename to `path`, fsync the directory. The writer is
  // finished afterwards whatever the result.
  absl::Status Commit();

  // Removes the temporary file unless Commit() succeeded.
  ~AtomicFileWriter();
  AtomicFileWriter(AtomicFileWriter&& other) noexcept;
  AtomicFileWriter& operator=(AtomicFileWriter&&) = delete;

 private:
  AtomicFileWriter(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  std::string path_;
  int fd_ = -1;
};

// Writes `contents` to `path` atomically.
absl::Status WriteFileAtomically(const std::string& path, std::string_view contents);

// Reads a whole (small) file; NOT_FOUND names the path.
absl::StatusOr<std::string> ReadFileToString(const std::string& path);

}  // namespace freezetune::model

#endif  // FREEZETUNE_SERVER_MODEL_ATOMIC_FILE_H_
