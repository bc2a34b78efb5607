// Opaque page tokens for the newest-first listings (ListJobs, ListSweeps).
//
// A token names the last item of the page it ends: its create time in
// microseconds and its id, the listing's sort key. The next page starts
// strictly after that key, so items created meanwhile never shift a page.
// On the wire it is web-safe base64 of "<kind>:<micros>:<id>"; `kind` tells
// the listings apart ("v1" for jobs, as before this file existed, so old job
// tokens stay valid), so a token from one list is rejected by the other.
#ifndef FREEZETUNE_SERVER_BASE_PAGE_TOKEN_H_
#define FREEZETUNE_SERVER_BASE_PAGE_TOKEN_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace freezetune::base {

std::string EncodePageToken(absl::string_view kind, int64_t create_time_micros,
                            absl::string_view id);

// INVALID_ARGUMENT "page_token: malformed" for anything EncodePageToken(kind,
// ...) did not produce.
absl::Status DecodePageToken(absl::string_view kind, const std::string& token,
                             int64_t* create_time_micros, std::string* id);

}  // namespace freezetune::base

#endif  // FREEZETUNE_SERVER_BASE_PAGE_TOKEN_H_
