// One HTTP exchange over libcurl: the single HTTP client of the data layer.
// Used by http(s) URI reads (uri.cc, which adds the address checks and
// redirect handling) and by the S3 client (s3_client.cc, which adds SigV4).
//
// What it enforces for every caller: a response body cap (announced
// Content-Length and the stream itself), timeouts, no proxies from the
// environment, no redirects followed, and only http/https. A body shorter
// than its Content-Length (connection closed early) is an error, never a
// short result.
//
// Errors carry `field` first: INVALID_ARGUMENT "<field>: response exceeds the
// limit of N bytes"; DEADLINE_EXCEEDED on timeout; UNAVAILABLE for transport
// failures (including truncated bodies). An HTTP error status is NOT an
// error here: the caller reads HttpResponse.status.
//
// Thread safety: PerformHttp is thread-safe; one request/sink per call.
#ifndef FREEZETUNE_SERVER_DATA_HTTP_TRANSFER_H_
#define FREEZETUNE_SERVER_DATA_HTTP_TRANSFER_H_

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace freezetune::data::internal {

// AWS Signature V4 as libcurl computes it (CURLOPT_AWS_SIGV4, curl >= 7.75).
// libcurl signs the host header, the headers in HttpRequest.headers and the
// payload hash taken from an "x-amz-content-sha256" header; it takes the
// signing time from an "X-Amz-Date" header when the request has one (tests
// use that for fixed dates) and uses the query string as given (callers
// pass it already in canonical order).
struct SigV4 {
  std::string region;
  std::string service;  // "s3"
  std::string access_key;
  std::string secret_key;
};

struct HttpRequest {
  std::string method = "GET";  // GET, HEAD, PUT, POST, DELETE
  std::string url;
  std::vector<std::string> headers;  // "Name: value"
  // CURLOPT_RESOLVE entries ("host:port:addr,addr") pinning the connection.
  std::vector<std::string> resolve;
  // Request body: `body` (not owned, must outlive the call), or the byte
  // range [body_offset, body_offset + body_length) of the open file
  // `body_fd` (not owned). Only for PUT/POST.
  const std::string* body = nullptr;
  int body_fd = -1;
  int64_t body_offset = 0;
  int64_t body_length = 0;
  const SigV4* sigv4 = nullptr;  // not owned; null: unsigned
  int64_t max_response_bytes = int64_t{1} << 30;
  int timeout_seconds = 60;
};

// Where a response body goes: appended to `body`, or written to the open
// file `fd` (not owned). Exactly one of them. `bytes` counts what arrived.
struct HttpSink {
  std::string* body = nullptr;
  int fd = -1;
  int64_t bytes = 0;
  // When set, the body of a non-2xx response goes here instead (at most
  // 64 KiB), so an error document never lands in the caller's file.
  std::string* error_body = nullptr;
};

struct HttpResponse {
  long status = 0;
  std::map<std::string, std::string> headers;  // names lower-cased, last value wins
  std::string redirect_url;                    // Location of a 3xx, resolved
};

absl::StatusOr<HttpResponse> PerformHttp(const HttpRequest& request, HttpSink& sink,
                                         std::string_view field);

}  // namespace freezetune::data::internal

#endif  // FREEZETUNE_SERVER_DATA_HTTP_TRANSFER_H_
