#include "server/base/page_token.h"

#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace freezetune::base {

std::string EncodePageToken(absl::string_view kind, int64_t create_time_micros,
                            absl::string_view id) {
  return absl::WebSafeBase64Escape(absl::StrCat(kind, ":", create_time_micros, ":", id));
}

absl::Status DecodePageToken(absl::string_view kind, const std::string& token,
                             int64_t* create_time_micros, std::string* id) {
  std::string raw;
  if (!absl::WebSafeBase64Unescape(token, &raw)) {
    return absl::InvalidArgumentError("page_token: malformed");
  }
  std::vector<std::string> parts = absl::StrSplit(raw, absl::MaxSplits(':', 2));
  if (parts.size() != 3 || parts[0] != kind || !absl::SimpleAtoi(parts[1], create_time_micros) ||
      parts[2].empty()) {
    return absl::InvalidArgumentError("page_token: malformed");
  }
  *id = parts[2];
  return absl::OkStatus();
}

}  // namespace freezetune::base
