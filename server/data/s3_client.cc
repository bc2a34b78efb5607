// S3 client over http_transfer (see s3_client.h).
#include "server/data/s3_client.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "re2/re2.h"
#include "server/common/status_macros.h"
#include "server/data/http_transfer.h"

namespace freezetune::data {

struct S3Client::Request {
  std::string method = "GET";
  S3Location at;
  std::string query;  // canonical (CanonicalQuery)
  std::vector<std::string> headers;
  const std::string* body = nullptr;
  int body_fd = -1;
  int64_t body_offset = 0;
  int64_t body_length = 0;
  std::string* out_body = nullptr;  // 2xx body; null: discarded (capped small)
  int out_fd = -1;
  int64_t max_bytes = int64_t{1} << 20;
};

struct S3Client::Response {
  long status = 0;
  std::map<std::string, std::string> headers;
  int64_t bytes = 0;
};

namespace {

absl::string_view AV(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// SHA-256 of the empty payload, the x-amz-content-sha256 of bodiless requests.
constexpr char kEmptySha256[] = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? std::string() : std::string(v);
}

std::string XmlUnescape(absl::string_view s) {
  return absl::StrReplaceAll(s, {{"&lt;", "<"},
                                 {"&gt;", ">"},
                                 {"&quot;", "\""},
                                 {"&apos;", "'"},
                                 {"&#34;", "\""},
                                 {"&#39;", "'"},
                                 {"&amp;", "&"}});
}

// Inner texts of every <tag>...</tag> in `xml`, unescaped. S3's answers are
// flat enough that this needs no parser.
std::vector<std::string> XmlAll(absl::string_view xml, absl::string_view tag,
                                bool unescape = true) {
  std::vector<std::string> out;
  const std::string open = absl::StrCat("<", tag, ">");
  const std::string close = absl::StrCat("</", tag, ">");
  size_t pos = 0;
  for (;;) {
    const size_t a = xml.find(open, pos);
    if (a == absl::string_view::npos) break;
    const size_t b = xml.find(close, a + open.size());
    if (b == absl::string_view::npos) break;
    const absl::string_view inner = xml.substr(a + open.size(), b - a - open.size());
    out.push_back(unescape ? XmlUnescape(inner) : std::string(inner));
    pos = b + close.size();
  }
  return out;
}

std::string XmlFirst(absl::string_view xml, absl::string_view tag) {
  std::vector<std::string> all = XmlAll(xml, tag);
  return all.empty() ? std::string() : all.front();
}

std::string Unquote(std::string s) {
  if (s.size() >= 2 && s.front() == '"' && s.back() == '"') return s.substr(1, s.size() - 2);
  return s;
}

absl::Status S3ErrorStatus(std::string_view field, const S3Location& at, long status,
                           const std::string& body, std::string_view method) {
  std::string code = XmlFirst(body, "Code");
  const std::string message = XmlFirst(body, "Message");
  if (code.empty()) {
    // HEAD answers carry no body.
    code = status == 404   ? (at.key.empty() ? "NoSuchBucket" : "NotFound")
           : status == 403 ? "AccessDenied"
           : status == 400 ? "BadRequest"
                           : absl::StrCat("HTTP", status);
  }
  std::string text = absl::StrCat(AV(field), ": s3 ", code, " for bucket '", at.bucket, "'");
  if (!at.key.empty()) absl::StrAppend(&text, ", key '", at.key, "'");
  absl::StrAppend(&text, " (HTTP ", status, " on ", AV(method), ")");
  if (!message.empty()) absl::StrAppend(&text, ": ", message);
  if (status == 404 || code == "NoSuchKey" || code == "NoSuchBucket" || code == "NoSuchUpload") {
    return absl::NotFoundError(text);
  }
  if (status >= 500 || code == "SlowDown") return absl::UnavailableError(text);
  return absl::InvalidArgumentError(text);
}

bool Retryable(const absl::Status& s) {
  return s.code() == absl::StatusCode::kUnavailable ||
         s.code() == absl::StatusCode::kDeadlineExceeded;
}

struct Endpoint {
  std::string scheme;
  std::string host;  // host[:port]
};

Endpoint ParseEndpoint(const S3Options& o) {
  std::string url = o.endpoint_url.empty()
                        ? absl::StrCat("https://s3.", o.region, ".amazonaws.com")
                        : o.endpoint_url;
  Endpoint e;
  const size_t sep = url.find("://");
  if (sep == std::string::npos) {
    e.scheme = "https";
  } else {
    e.scheme = absl::AsciiStrToLower(url.substr(0, sep));
    url = url.substr(sep + 3);
  }
  e.host = url.substr(0, url.find('/'));
  return e;
}

}  // namespace

S3Options S3OptionsFromEnv(bool path_style) {
  S3Options o;
  o.access_key_id = Env("AWS_ACCESS_KEY_ID");
  o.secret_access_key = Env("AWS_SECRET_ACCESS_KEY");
  o.session_token = Env("AWS_SESSION_TOKEN");
  std::string region = Env("AWS_REGION");
  if (region.empty()) region = Env("AWS_DEFAULT_REGION");
  if (!region.empty()) o.region = region;
  o.endpoint_url = Env("AWS_ENDPOINT_URL");
  o.path_style = path_style;
  return o;
}

bool IsS3Uri(std::string_view uri) { return absl::StartsWithIgnoreCase(AV(uri), "s3://"); }

absl::StatusOr<S3Location> ParseS3Uri(std::string_view uri, std::string_view field) {
  auto bad = [field](std::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(AV(field), ": ", AV(why)));
  };
  if (!IsS3Uri(uri)) return bad("not an s3:// URI");
  std::string_view rest = uri.substr(5);
  const size_t slash = rest.find('/');
  S3Location at;
  at.bucket = std::string(rest.substr(0, slash));
  static const RE2 kBucket("[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]");
  if (!RE2::FullMatch(at.bucket, kBucket) || absl::StrContains(at.bucket, "..")) {
    return bad(absl::StrCat("invalid S3 bucket name '", at.bucket,
                            "' (3-63 characters of a-z, 0-9, '.', '-')"));
  }
  if (slash == std::string_view::npos || slash + 1 >= rest.size()) {
    return bad("s3 URI needs a key: s3://bucket/key");
  }
  at.key = std::string(rest.substr(slash + 1));
  while (!at.key.empty() && at.key.back() == '/') at.key.pop_back();
  if (at.key.empty()) return bad("s3 URI needs a key: s3://bucket/key");
  if (at.key.size() > 1024) return bad("s3 key is longer than 1024 bytes");
  if (at.key.find('\0') != std::string::npos) return bad("s3 key contains a NUL byte");
  for (absl::string_view part : absl::StrSplit(at.key, '/')) {
    if (part.empty() || part == "." || part == "..") {
      return bad("s3 key must not contain empty, \".\" or \"..\" segments");
    }
  }
  return at;
}

std::string S3Uri(const S3Location& location) {
  return absl::StrCat("s3://", location.bucket, "/", location.key);
}

std::string AwsUriEncode(std::string_view in, bool keep_slash) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(in.size());
  for (const char ch : in) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (absl::ascii_isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~' ||
        (keep_slash && c == '/')) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

std::string CanonicalQuery(std::vector<std::pair<std::string, std::string>> params) {
  for (auto& [k, v] : params) {
    k = AwsUriEncode(k, false);
    v = AwsUriEncode(v, false);
  }
  std::sort(params.begin(), params.end());
  std::vector<std::string> parts;
  parts.reserve(params.size());
  for (const auto& [k, v] : params) parts.push_back(absl::StrCat(k, "=", v));
  return absl::StrJoin(parts, "&");
}

S3Client::S3Client(S3Options options) : options_(std::move(options)) {}

absl::StatusOr<S3Client::Response> S3Client::Send(const Request& r,
                                                  std::string_view field) const {
  const Endpoint endpoint = ParseEndpoint(options_);
  internal::HttpRequest http;
  http.method = r.method;
  const std::string path = AwsUriEncode(r.at.key, /*keep_slash=*/true);
  if (options_.path_style) {
    http.url = absl::StrCat(endpoint.scheme, "://", endpoint.host, "/", r.at.bucket,
                            r.at.key.empty() ? "" : "/", path);
  } else {
    http.url = absl::StrCat(endpoint.scheme, "://", r.at.bucket, ".", endpoint.host, "/", path);
  }
  if (!r.query.empty()) absl::StrAppend(&http.url, "?", r.query);
  const bool has_body = r.body != nullptr || r.body_fd >= 0;
  http.headers = r.headers;
  // libcurl 7.88 does not add this header itself; S3 requires it, and
  // libcurl signs the payload hash it names.
  http.headers.push_back(
      absl::StrCat("x-amz-content-sha256: ", has_body ? "UNSIGNED-PAYLOAD" : kEmptySha256));
  if (!options_.session_token.empty()) {
    http.headers.push_back(absl::StrCat("x-amz-security-token: ", options_.session_token));
  }
  if (!options_.fixed_amz_date.empty()) {
    http.headers.push_back(absl::StrCat("X-Amz-Date: ", options_.fixed_amz_date));
  }
  http.body = r.body;
  http.body_fd = r.body_fd;
  http.body_offset = r.body_offset;
  http.body_length = r.body_length;
  internal::SigV4 sigv4{options_.region, "s3", options_.access_key_id,
                        options_.secret_access_key};
  http.sigv4 = &sigv4;
  http.max_response_bytes = r.max_bytes;
  http.timeout_seconds = options_.timeout_seconds;

  absl::Status last;
  for (int attempt = 0; attempt < std::max(1, options_.attempts); ++attempt) {
    if (attempt > 0) std::this_thread::sleep_for(std::chrono::milliseconds(200 << attempt));
    std::string discard;
    std::string error_body;
    internal::HttpSink sink;
    sink.error_body = &error_body;
    if (r.out_fd >= 0) {
      if (::ftruncate(r.out_fd, 0) != 0 || ::lseek(r.out_fd, 0, SEEK_SET) != 0) {
        return absl::InternalError(
            absl::StrCat(AV(field), ": cannot reset the download file: ", std::strerror(errno)));
      }
      sink.fd = r.out_fd;
    } else if (r.out_body != nullptr) {
      r.out_body->clear();
      sink.body = r.out_body;
    } else {
      sink.body = &discard;
    }
    absl::StatusOr<internal::HttpResponse> got = internal::PerformHttp(http, sink, field);
    if (!got.ok()) {
      last = got.status();
      if (Retryable(last)) continue;
      return last;
    }
    if (got->status >= 200 && got->status < 300) {
      Response out;
      out.status = got->status;
      out.headers = std::move(got->headers);
      out.bytes = sink.bytes;
      return out;
    }
    last = S3ErrorStatus(field, r.at, got->status, error_body, r.method);
    if (!Retryable(last)) return last;
  }
  return last;
}

absl::StatusOr<S3Object> S3Client::Head(const S3Location& at, std::string_view field) const {
  Request r;
  r.method = "HEAD";
  r.at = at;
  FT_ASSIGN_OR_RETURN(const Response response, Send(r, field));
  S3Object out;
  out.key = at.key;
  auto it = response.headers.find("content-length");
  if (it == response.headers.end() || !absl::SimpleAtoi(it->second, &out.size)) out.size = -1;
  it = response.headers.find("etag");
  if (it != response.headers.end()) out.etag = Unquote(it->second);
  return out;
}

absl::StatusOr<std::string> S3Client::Get(const S3Location& at, int64_t max_bytes,
                                          std::string_view field) const {
  Request r;
  r.at = at;
  std::string body;
  r.out_body = &body;
  r.max_bytes = max_bytes;
  FT_RETURN_IF_ERROR(Send(r, field).status());
  return body;
}

absl::StatusOr<S3Object> S3Client::GetToFile(const S3Location& at, const std::string& path,
                                             int64_t max_bytes, std::string_view field) const {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::InternalError(
        absl::StrCat(AV(field), ": cannot create ", path, ": ", std::strerror(errno)));
  }
  Request r;
  r.at = at;
  r.out_fd = fd;
  r.max_bytes = max_bytes;
  absl::StatusOr<Response> response = Send(r, field);
  const bool synced = ::fsync(fd) == 0;
  ::close(fd);
  FT_RETURN_IF_ERROR(response.status());
  if (!synced) {
    return absl::InternalError(
        absl::StrCat(AV(field), ": cannot write ", path, ": ", std::strerror(errno)));
  }
  S3Object out;
  out.key = at.key;
  out.size = response->bytes;
  auto it = response->headers.find("etag");
  if (it != response->headers.end()) out.etag = Unquote(it->second);
  return out;
}

absl::Status S3Client::Put(const S3Location& at, const std::string& body,
                           std::string_view field) const {
  Request r;
  r.method = "PUT";
  r.at = at;
  r.body = &body;
  return Send(r, field).status();
}

absl::StatusOr<int> S3Client::PutFile(const S3Location& at, const std::string& path,
                               std::string_view field) const {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::InternalError(
        absl::StrCat(AV(field), ": cannot open ", path, ": ", std::strerror(errno)));
  }
  struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
  } closer{fd};
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    return absl::InternalError(
        absl::StrCat(AV(field), ": cannot stat ", path, ": ", std::strerror(errno)));
  }
  const int64_t size = static_cast<int64_t>(st.st_size);
  if (size >= options_.multipart_threshold && size > options_.part_size) {
    return PutMultipart(at, fd, size, field);
  }
  Request r;
  r.method = "PUT";
  r.at = at;
  r.body_fd = fd;
  r.body_length = size;
  FT_RETURN_IF_ERROR(Send(r, field).status());
  return 1;
}

absl::StatusOr<int> S3Client::PutMultipart(const S3Location& at, int fd, int64_t size,
                                    std::string_view field) const {
  Request create;
  create.method = "POST";
  create.at = at;
  create.query = CanonicalQuery({{"uploads", ""}});
  static const std::string kEmpty;
  create.body = &kEmpty;
  std::string created;
  create.out_body = &created;
  FT_RETURN_IF_ERROR(Send(create, field).status());
  const std::string upload_id = XmlFirst(created, "UploadId");
  if (upload_id.empty()) {
    return absl::UnavailableError(
        absl::StrCat(AV(field), ": s3 CreateMultipartUpload returned no UploadId for bucket '",
                     at.bucket, "', key '", at.key, "'"));
  }
  auto abort = [&](absl::Status cause) {
    Request del;
    del.method = "DELETE";
    del.at = at;
    del.query = CanonicalQuery({{"uploadId", upload_id}});
    (void)Send(del, field);  // best effort: the cause is what the caller needs
    return cause;
  };
  std::string complete = "<CompleteMultipartUpload>";
  const int64_t part_size = std::max<int64_t>(options_.part_size, 1);
  int part = 1;
  for (int64_t offset = 0; offset < size; offset += part_size, ++part) {
    Request put;
    put.method = "PUT";
    put.at = at;
    put.query = CanonicalQuery({{"partNumber", absl::StrCat(part)}, {"uploadId", upload_id}});
    put.body_fd = fd;
    put.body_offset = offset;
    put.body_length = std::min(part_size, size - offset);
    absl::StatusOr<Response> done = Send(put, field);
    if (!done.ok()) return abort(done.status());
    auto it = done->headers.find("etag");
    if (it == done->headers.end()) {
      return abort(absl::UnavailableError(absl::StrCat(
          AV(field), ": s3 UploadPart returned no ETag for part ", part, " of key '", at.key,
          "'")));
    }
    absl::StrAppend(&complete, "<Part><PartNumber>", part, "</PartNumber><ETag>\"",
                    Unquote(it->second), "\"</ETag></Part>");
  }
  absl::StrAppend(&complete, "</CompleteMultipartUpload>");
  Request finish;
  finish.method = "POST";
  finish.at = at;
  finish.query = CanonicalQuery({{"uploadId", upload_id}});
  finish.headers.push_back("Content-Type: application/xml");
  finish.body = &complete;
  std::string finished;
  finish.out_body = &finished;
  absl::StatusOr<Response> done = Send(finish, field);
  if (!done.ok()) return abort(done.status());
  // CompleteMultipartUpload can fail with 200 and an Error document.
  if (absl::StrContains(finished, "<Error>")) {
    return abort(S3ErrorStatus(field, at, 200, finished, "POST"));
  }
  return part - 1;
}

absl::Status S3Client::Copy(const S3Location& from, const S3Location& to,
                            std::string_view field) const {
  Request r;
  r.method = "PUT";
  r.at = to;
  r.headers.push_back(absl::StrCat("x-amz-copy-source: /", from.bucket, "/",
                                    AwsUriEncode(from.key, /*keep_slash=*/true)));
  static const std::string kEmpty;
  r.body = &kEmpty;
  std::string body;
  r.out_body = &body;
  FT_RETURN_IF_ERROR(Send(r, field).status());
  // CopyObject can fail with 200 and an Error document.
  if (absl::StrContains(body, "<Error>")) return S3ErrorStatus(field, to, 200, body, "PUT");
  return absl::OkStatus();
}

absl::Status S3Client::Delete(const S3Location& at, std::string_view field) const {
  Request r;
  r.method = "DELETE";
  r.at = at;
  absl::Status s = Send(r, field).status();
  if (s.code() == absl::StatusCode::kNotFound) return absl::OkStatus();
  return s;
}

absl::StatusOr<std::vector<S3Object>> S3Client::List(const std::string& bucket,
                                                     const std::string& prefix,
                                                     std::string_view field,
                                                     int max_keys) const {
  std::vector<S3Object> out;
  std::string token;
  for (;;) {
    Request r;
    r.at.bucket = bucket;
    std::vector<std::pair<std::string, std::string>> params = {{"list-type", "2"},
                                                               {"prefix", prefix}};
    // No max-keys parameter: s3rver 3.7.1 answers 500 to it when the
    // listing is truncated; the first page (up to 1000) is cheap.
    if (!token.empty()) params.emplace_back("continuation-token", token);
    r.query = CanonicalQuery(std::move(params));
    std::string body;
    r.out_body = &body;
    r.max_bytes = int64_t{16} << 20;
    FT_RETURN_IF_ERROR(Send(r, field).status());
    for (const std::string& contents : XmlAll(body, "Contents", /*unescape=*/false)) {
      S3Object o;
      o.key = XmlFirst(contents, "Key");
      if (!absl::SimpleAtoi(XmlFirst(contents, "Size"), &o.size)) o.size = -1;
      o.etag = Unquote(XmlFirst(contents, "ETag"));
      out.push_back(std::move(o));
      if (max_keys > 0 && static_cast<int>(out.size()) >= max_keys) return out;
    }
    token = XmlFirst(body, "NextContinuationToken");
    if (XmlFirst(body, "IsTruncated") != "true" || token.empty()) break;
  }
  return out;
}

}  // namespace freezetune::data
