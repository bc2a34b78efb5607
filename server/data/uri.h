// Dataset and model URIs: file:// and plain absolute paths, confined to the
// configured data roots (realpath, so no ".." or symlink escapes); http(s)://
// fetched with libcurl, size-capped, with private/loopback/link-local targets
// refused unless allowed; s3://bucket/key read from object storage with the
// same size cap (s3_client.h; directories and outputs in s3_dirs.h).
//
// Errors: INVALID_ARGUMENT "<field>: <reason>" for anything wrong with the
// URI or what it names (not found, permission denied, outside the data
// roots, too large, unsupported scheme, refused address, HTTP 404);
// s3: "<field>: s3 <S3 error code> for bucket '...'" (a missing object is
// INVALID_ARGUMENT too);
// UNAVAILABLE / DEADLINE_EXCEEDED for network failures; FAILED_PRECONDITION
// when a configured data root itself cannot be resolved.
// http(s): each hop (at most 3 redirects, each re-checked) resolves the host
// once, refuses it if any address is non-public, and pins the connection to
// the checked addresses; proxies from the environment are not used.
// Thread safety: the functions are thread-safe (no shared mutable state).
#ifndef FREEZETUNE_SERVER_DATA_URI_H_
#define FREEZETUNE_SERVER_DATA_URI_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "server/data/s3_client.h"

namespace freezetune::data {

struct UriOptions {
  // Local files must resolve inside one of these (canonical) directories.
  // Empty allows any local path.
  std::vector<std::string> data_roots;
  // Cap on bytes read from one URI.
  int64_t max_bytes = int64_t{1} << 30;
  // http(s):// URIs at all; with allow_plain_http also unencrypted http://
  // (checked on every redirect hop too).
  bool allow_http = true;
  bool allow_plain_http = true;
  // Allow http(s) to loopback/private/link-local addresses (tests only).
  bool allow_private_http = false;
  int http_timeout_seconds = 60;
  // Object storage for s3:// URIs (endpoint, credentials, addressing).
  S3Options s3;
  // Where s3:// model directories are downloaded to (see s3_dirs.h); empty:
  // <system temp dir>/freezetune-s3-cache.
  std::string s3_cache_dir;
  // Cap on each file of an s3:// model directory.
  int64_t max_model_file_bytes = int64_t{16} << 30;
};

// True when canonical `path` equals canonical `root` or lies below it,
// compared by whole components ("/data2" is not under "/data").
bool PathIsUnder(std::string_view path, std::string_view root);

// True for file:// URIs and plain paths: what ResolveLocalPath handles (as
// opposed to http(s):// and unknown schemes).
bool IsLocalUri(std::string_view uri);

// Canonical local path of a file:// URI or absolute path, checked to exist
// and lie under a data root. `field` prefixes errors ("job.train.uri").
absl::StatusOr<std::string> ResolveLocalPath(std::string_view uri, const UriOptions& options,
                                             std::string_view field);

// Whole content of a local, http(s) or s3 URI, at most options.max_bytes.
absl::StatusOr<std::string> ReadUri(std::string_view uri, const UriOptions& options,
                                    std::string_view field);

// Where an output URI (file:// or absolute path) would be written, checked
// without creating anything: the deepest existing ancestor is confined to
// the data roots like an input (realpath: no symlink or ".." escapes), the
// part still to create holds no "." or "..", and a directory that already
// exists must be empty (INVALID_ARGUMENT "<field>: ... exists and is not
// empty"), so an output never replaces anything. Returns the canonical path.
absl::StatusOr<std::string> PlanOutputDir(std::string_view uri, const UriOptions& options,
                                          std::string_view field);

// Local directory for an output URI (file:// or absolute path), created if
// missing, confined to the data roots like inputs (each created component
// is re-checked). Unlike PlanOutputDir it accepts a non-empty directory: a
// job re-run after a restart writes into the directory it was given.
absl::StatusOr<std::string> ResolveOutputDir(std::string_view uri, const UriOptions& options,
                                             std::string_view field);

// Callback URLs (completion notifications) under the rules of http(s)
// reads: https, or http when options.allow_http and allow_plain_http; a host whose addresses are
// not all public is refused unless options.allow_private_http.
// CheckCallbackUrl parses and checks the scheme and a literal address
// without any network access (for submit-time validation);
// PostCallback also resolves the host, checks every address, pins the
// connection to them and POSTs `body` with `headers` ("Name: value"). It
// follows no redirects and returns the HTTP status (a 3xx is an answer,
// not followed). Network failures are UNAVAILABLE / DEADLINE_EXCEEDED.
absl::Status CheckCallbackUrl(std::string_view url, const UriOptions& options,
                              std::string_view field);
absl::StatusOr<int> PostCallback(std::string_view url, const std::string& body,
                                 const std::vector<std::string>& headers,
                                 const UriOptions& options, std::string_view field);

}  // namespace freezetune::data

#endif  // FREEZETUNE_SERVER_DATA_URI_H_
