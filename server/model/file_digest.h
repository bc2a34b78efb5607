// SHA-256 of a file's bytes (OpenSSL's libcrypto), as lowercase hex: how a
// delta output pins the base checkpoint it applies to.
//
// Thread safety: no shared state.
#ifndef FREEZETUNE_SERVER_MODEL_FILE_DIGEST_H_
#define FREEZETUNE_SERVER_MODEL_FILE_DIGEST_H_

#include <string>

#include "absl/status/statusor.h"

namespace freezetune::model {

// Streams the file (1 MiB reads). NOT_FOUND when it cannot be opened,
// DATA_LOSS on a read error.
absl::StatusOr<std::string> Sha256File(const std::string& path);

}  // namespace freezetune::model

#endif  // FREEZETUNE_SERVER_MODEL_FILE_DIGEST_H_
