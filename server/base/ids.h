// Server-assigned resource ids: "<prefix>-" and 12 random lowercase hex
// digits (48 bits), e.g. NewId("job") == "job-0f3a9c2e71b4". Jobs and sweeps
// both take theirs from here.
//
// Thread safety: may be called from any thread.
#ifndef FREEZETUNE_SERVER_BASE_IDS_H_
#define FREEZETUNE_SERVER_BASE_IDS_H_

#include <string>

#include "absl/strings/string_view.h"

namespace freezetune::base {

std::string NewId(absl::string_view prefix);

}  // namespace freezetune::base

#endif  // FREEZETUNE_SERVER_BASE_IDS_H_
