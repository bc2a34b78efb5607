// Signatures of completion callbacks (see Notify in freezetune.proto):
// X-Freezetune-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>,
// with the timestamp in X-Freezetune-Timestamp, so a receiver can reject a
// replayed request by its age. Pure functions over OpenSSL's HMAC;
// thread-safe.
#ifndef FREEZETUNE_SERVER_NOTIFY_SIGNATURE_H_
#define FREEZETUNE_SERVER_NOTIFY_SIGNATURE_H_

#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"

namespace freezetune::notify {

// Lower-case hex of HMAC-SHA256(key, data).
std::string HmacSha256Hex(absl::string_view key, absl::string_view data);

// The X-Freezetune-Signature value: "sha256=" + HmacSha256Hex(secret,
// "<timestamp>.<body>").
std::string SignatureHeader(absl::string_view secret, int64_t timestamp, absl::string_view body);

// What a receiver does: recomputes the signature and compares it in
// constant time, and accepts only timestamps within `max_age_seconds` of
// `now` (either side).
bool VerifySignature(absl::string_view secret, absl::string_view header, int64_t timestamp,
                     absl::string_view body, int64_t now, int64_t max_age_seconds = 300);

}  // namespace freezetune::notify

#endif  // FREEZETUNE_SERVER_NOTIFY_SIGNATURE_H_
