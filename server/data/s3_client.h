// S3 object storage over the data layer's one HTTP client (http_transfer.h),
// signed with libcurl's built-in AWS Signature V4. Works with AWS S3 and
// S3-compatible servers (MinIO, Ceph RGW, Cloudflare R2, GCS interop).
//
// Settings come from the standard environment variables (S3OptionsFromEnv):
// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION
// (or AWS_DEFAULT_REGION; default us-east-1) and AWS_ENDPOINT_URL (default
// https://s3.<region>.amazonaws.com). Path-style addressing
// (<endpoint>/<bucket>/<key>) is a flag; the default is virtual-hosted
// (<bucket>.<endpoint host>/<key>). The endpoint is operator configuration,
// so the address checks of http(s) URIs do not apply to it; bucket names
// are validated, so a job cannot steer requests to another host.
//
// Errors name `field` first and the S3 error code:
//   "job.train.uri: s3 AccessDenied for bucket 'x', key 'k' (HTTP 403): ..."
// NOT_FOUND for a missing object or bucket (NoSuchKey, NoSuchBucket, 404);
// INVALID_ARGUMENT for other 4xx answers and bad URIs; UNAVAILABLE for 5xx
// and transport failures (retried first); INVALID_ARGUMENT when a body is
// over its cap. Callers at the URI boundary turn NOT_FOUND into
// INVALID_ARGUMENT (uri.h).
//
// Thread safety: an S3Client is immutable after construction; its methods
// may be called from any thread.
#ifndef FREEZETUNE_SERVER_DATA_S3_CLIENT_H_
#define FREEZETUNE_SERVER_DATA_S3_CLIENT_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace freezetune::data {

struct S3Options {
  std::string endpoint_url;  // scheme://host[:port]; empty: AWS for `region`
  std::string region = "us-east-1";
  std::string access_key_id;
  std::string secret_access_key;
  std::string session_token;  // sent as x-amz-security-token when set
  bool path_style = false;
  // Files at least this large are uploaded in parts of part_size bytes
  // (S3's minimum part size is 5 MiB).
  int64_t multipart_threshold = int64_t{64} << 20;
  int64_t part_size = int64_t{16} << 20;
  int timeout_seconds = 600;
  int attempts = 3;  // tries of a request that failed with 5xx or in transport
  // Signing time "YYYYMMDDTHHMMSSZ" sent as X-Amz-Date; empty: now (tests).
  std::string fixed_amz_date;
};

// The environment's settings; `path_style` from the caller (a flag).
S3Options S3OptionsFromEnv(bool path_style);

struct S3Location {
  std::string bucket;
  std::string key;  // without a leading '/'; may be empty for a prefix
};

bool IsS3Uri(std::string_view uri);

// Parses "s3://bucket/key". The bucket must be a DNS-style S3 bucket name
// (3-63 of [a-z0-9.-]); the key must be non-empty, at most 1024 bytes,
// without NUL, "//", or "." and ".." segments. A trailing '/' is dropped.
absl::StatusOr<S3Location> ParseS3Uri(std::string_view uri, std::string_view field);

std::string S3Uri(const S3Location& location);

// AWS's URI encoding: every byte but A-Z a-z 0-9 - . _ ~ as %XX (upper
// case); '/' too unless `keep_slash`.
std::string AwsUriEncode(std::string_view in, bool keep_slash);

// "k=v&k=v" sorted by key then value, keys and values AWS-encoded: the
// canonical query SigV4 needs. libcurl 7.88 signs the query string as it is
// sent, so requests carry it in this order.
std::string CanonicalQuery(std::vector<std::pair<std::string, std::string>> params);

struct S3Object {
  std::string key;
  int64_t size = 0;
  std::string etag;  // without quotes
};

class S3Client {
 public:
  explicit S3Client(S3Options options);

  const S3Options& options() const { return options_; }

  // Size and ETag of one object. NOT_FOUND when it does not exist.
  absl::StatusOr<S3Object> Head(const S3Location& at, std::string_view field) const;
  // Whole object, at most `max_bytes` (INVALID_ARGUMENT beyond, the
  // download aborted as soon as that is known).
  absl::StatusOr<std::string> Get(const S3Location& at, int64_t max_bytes,
                                  std::string_view field) const;
  // Streams the object into `path` (created or truncated), at most
  // `max_bytes`. On error `path` may hold a partial download: callers write
  // to a temporary name and rename.
  absl::StatusOr<S3Object> GetToFile(const S3Location& at, const std::string& path,
                                     int64_t max_bytes, std::string_view field) const;
  absl::Status Put(const S3Location& at, const std::string& body, std::string_view field) const;
  // Uploads a local file; multipart at or above options().multipart_threshold.
  // Returns the number of parts sent (1: a single PUT).
  absl::StatusOr<int> PutFile(const S3Location& at, const std::string& path,
                       std::string_view field) const;
  // Server-side copy within the endpoint.
  absl::Status Copy(const S3Location& from, const S3Location& to, std::string_view field) const;
  // Deleting what does not exist succeeds.
  absl::Status Delete(const S3Location& at, std::string_view field) const;
  // Every object whose key starts with `prefix` (all pages; at most
  // `max_keys` objects when > 0), in key order.
  absl::StatusOr<std::vector<S3Object>> List(const std::string& bucket, const std::string& prefix,
                                             std::string_view field, int max_keys = 0) const;

  struct Request;   // defined in s3_client.cc
  struct Response;  // defined in s3_client.cc

 private:
  absl::StatusOr<Response> Send(const Request& request, std::string_view field) const;
  absl::StatusOr<int> PutMultipart(const S3Location& at, int fd, int64_t size,
                            std::string_view field) const;

  S3Options options_;
};

}  // namespace freezetune::data

#endif  // FREEZETUNE_SERVER_DATA_S3_CLIENT_H_
