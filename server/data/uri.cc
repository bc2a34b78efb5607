// URI resolution and reading: local files confined to the data roots, and
// http(s) fetched with libcurl, size-capped and pinned to checked addresses.
#include "server/data/uri.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "server/common/status_macros.h"
#include "server/data/http_transfer.h"
#include "server/data/uri_internal.h"

namespace freezetune::data {
namespace {

constexpr int kMaxRedirects = 3;

// Debian's Abseil is built with its own string_view, distinct from
// std::string_view used in our contracts.
absl::string_view AV(std::string_view s) { return absl::string_view(s.data(), s.size()); }

absl::Status BadUri(std::string_view field, std::string_view reason) {
  return absl::InvalidArgumentError(absl::StrCat(AV(field), ": ", AV(reason)));
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

absl::StatusOr<std::string> PercentDecode(std::string_view in, std::string_view field) {
  std::string out;
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out.push_back(in[i]);
      continue;
    }
    if (i + 2 >= in.size()) {
      return BadUri(field, "invalid percent-escape in file URI");
    }
    const int hi = HexValue(in[i + 1]);
    const int lo = HexValue(in[i + 2]);
    if (hi < 0 || lo < 0) return BadUri(field, "invalid percent-escape in file URI");
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return out;
}

// Lower-cased scheme of "scheme://...", or "" when `uri` has none.
std::string SchemeOf(std::string_view uri) {
  const size_t pos = uri.find("://");
  if (pos == std::string_view::npos || pos == 0) return "";
  for (size_t i = 0; i < pos; ++i) {
    const char c = uri[i];
    const bool ok = absl::ascii_isalpha(static_cast<unsigned char>(c)) ||
                    (i > 0 && (absl::ascii_isdigit(static_cast<unsigned char>(c)) || c == '+' ||
                               c == '-' || c == '.'));
    if (!ok) return "";
  }
  return absl::AsciiStrToLower(AV(uri.substr(0, pos)));
}

// The absolute local path a file:// URI or plain path names (not yet
// canonical).
absl::StatusOr<std::string> LocalPathOf(std::string_view uri, std::string_view field) {
  if (uri.empty()) return BadUri(field, "must not be empty");
  std::string path;
  const std::string scheme = SchemeOf(uri);
  if (scheme == "file") {
    std::string_view rest = uri.substr(7);
    // file:///p has an empty host; file://localhost/p is the same thing.
    if (absl::StartsWithIgnoreCase(AV(rest), "localhost/")) rest.remove_prefix(9);
    if (rest.empty() || rest[0] != '/') {
      return BadUri(field, "file URI must have an empty host (file:///abs/path)");
    }
    if (rest.find_first_of("?#") != std::string_view::npos) {
      return BadUri(field, "file URI must not have a query or fragment");
    }
    FT_ASSIGN_OR_RETURN(path, PercentDecode(rest, field));
  } else if (!scheme.empty()) {
    return BadUri(field, absl::StrCat("unsupported URI scheme \"", scheme,
                                      "\" (use file://, an absolute path, http://, https:// or s3://)"));
  } else {
    path = std::string(uri);
  }
  if (path.find('\0') != std::string::npos) return BadUri(field, "path contains a NUL byte");
  if (path.empty() || path[0] != '/') return BadUri(field, "path must be absolute");
  return path;
}

absl::StatusOr<std::string> RealPath(const std::string& path, std::string_view field,
                                     std::string_view what) {
  char* resolved = ::realpath(path.c_str(), nullptr);
  if (resolved == nullptr) {
    const int err = errno;
    if (err == ENOENT || err == ENOTDIR) {
      return BadUri(field, absl::StrCat(AV(what), " not found: ", path));
    }
    if (err == EACCES) return BadUri(field, absl::StrCat("permission denied: ", path));
    return BadUri(field, absl::StrCat("cannot resolve ", path, ": ", std::strerror(err)));
  }
  std::string out(resolved);
  std::free(resolved);
  return out;
}

absl::StatusOr<std::vector<std::string>> CanonicalRoots(const UriOptions& options) {
  std::vector<std::string> roots;
  for (const std::string& root : options.data_roots) {
    char* resolved = ::realpath(root.c_str(), nullptr);
    if (resolved == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat("data root ", root, " cannot be resolved: ", std::strerror(errno)));
    }
    roots.emplace_back(resolved);
    std::free(resolved);
  }
  return roots;
}

absl::Status CheckConfined(const std::string& canonical, const std::vector<std::string>& roots,
                           std::string_view shown_path, std::string_view field) {
  if (roots.empty()) return absl::OkStatus();
  for (const std::string& root : roots) {
    if (PathIsUnder(canonical, root)) return absl::OkStatus();
  }
  return BadUri(field, absl::StrCat(AV(shown_path), " is outside the data roots"));
}

absl::StatusOr<std::string> ReadLocal(std::string_view uri, const UriOptions& options,
                                      std::string_view field) {
  FT_ASSIGN_OR_RETURN(const std::string path, ResolveLocalPath(uri, options, field));
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    const int err = errno;
    if (err == EACCES) return BadUri(field, absl::StrCat("permission denied: ", path));
    if (err == ENOENT) return BadUri(field, absl::StrCat("file not found: ", path));
    return BadUri(field, absl::StrCat("cannot open ", path, ": ", std::strerror(err)));
  }
  struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
  } closer{fd};
  // The path was checked before open(); re-check what was actually opened, so
  // a component swapped for a symlink in between cannot escape the roots.
  FT_ASSIGN_OR_RETURN(const std::vector<std::string> roots, CanonicalRoots(options));
  {
    char buf[PATH_MAX + 1];
    const std::string proc = absl::StrCat("/proc/self/fd/", fd);
    const ssize_t n = ::readlink(proc.c_str(), buf, PATH_MAX);
    if (n > 0) FT_RETURN_IF_ERROR(CheckConfined(std::string(buf, n), roots, path, field));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    return BadUri(field, absl::StrCat("cannot stat ", path, ": ", std::strerror(errno)));
  }
  if (S_ISDIR(st.st_mode)) return BadUri(field, absl::StrCat("is a directory: ", path));
  if (!S_ISREG(st.st_mode)) return BadUri(field, absl::StrCat("not a regular file: ", path));
  if (st.st_size > options.max_bytes) {
    return BadUri(field, absl::StrCat("file is ", st.st_size, " bytes, over the limit of ",
                                      options.max_bytes, " bytes"));
  }
  std::string content;
  content.resize(static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < content.size()) {
    const ssize_t n = ::read(fd, content.data() + done, content.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return BadUri(field, absl::StrCat("cannot read ", path, ": ", std::strerror(errno)));
    }
    if (n == 0) break;  // shrank while reading
    done += static_cast<size_t>(n);
  }
  content.resize(done);
  // A file that grew since fstat must still respect the cap.
  char extra;
  const ssize_t more = ::read(fd, &extra, 1);
  if (more > 0) {
    return BadUri(field, absl::StrCat("file grew while reading and exceeds the limit of ",
                                      options.max_bytes, " bytes"));
  }
  return content;
}

// ---------------------------------------------------------------------------
// http(s)

struct CurlUrlDeleter {
  void operator()(CURLU* u) const { curl_url_cleanup(u); }
};
struct CurlStringDeleter {
  void operator()(char* s) const { curl_free(s); }
};

struct UrlParts {
  std::string scheme;  // "http" or "https"
  std::string host;    // without IPv6 brackets
  int port = 0;
};

absl::StatusOr<UrlParts> ParseHttpUrl(const std::string& url, std::string_view field) {
  std::unique_ptr<CURLU, CurlUrlDeleter> h(curl_url());
  if (!h) return absl::InternalError("curl_url failed");
  if (curl_url_set(h.get(), CURLUPART_URL, url.c_str(), 0) != CURLUE_OK) {
    return BadUri(field, "malformed URL");
  }
  auto get = [&](CURLUPart part, unsigned flags, std::string* out) -> bool {
    char* value = nullptr;
    if (curl_url_get(h.get(), part, &value, flags) != CURLUE_OK || value == nullptr) return false;
    std::unique_ptr<char, CurlStringDeleter> owned(value);
    *out = value;
    return true;
  };
  UrlParts parts;
  std::string port;
  if (!get(CURLUPART_SCHEME, 0, &parts.scheme)) return BadUri(field, "malformed URL");
  parts.scheme = absl::AsciiStrToLower(parts.scheme);
  if (parts.scheme != "http" && parts.scheme != "https") {
    return BadUri(field, absl::StrCat("unsupported URL scheme \"", parts.scheme, "\""));
  }
  if (!get(CURLUPART_HOST, 0, &parts.host) || parts.host.empty()) {
    return BadUri(field, "URL has no host");
  }
  if (parts.host.size() >= 2 && parts.host.front() == '[' && parts.host.back() == ']') {
    parts.host = parts.host.substr(1, parts.host.size() - 2);
  }
  if (!get(CURLUPART_PORT, CURLU_DEFAULT_PORT, &port) || !absl::SimpleAtoi(port, &parts.port) ||
      parts.port <= 0 || parts.port > 65535) {
    return BadUri(field, "URL has an invalid port");
  }
  return parts;
}

// Resolves `host` and checks every address; returns the textual addresses to
// pin the connection to.
absl::StatusOr<std::vector<std::string>> ResolveAndCheck(const UrlParts& parts,
                                                         const UriOptions& options,
                                                         std::string_view field) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const int rc = ::getaddrinfo(parts.host.c_str(), nullptr, &hints, &res);
  if (rc != 0 || res == nullptr) {
    return absl::UnavailableError(
        absl::StrCat(AV(field), ": cannot resolve host ", parts.host, ": ", gai_strerror(rc)));
  }
  std::unique_ptr<addrinfo, void (*)(addrinfo*)> owned(res, ::freeaddrinfo);
  std::vector<std::string> addrs;
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6) continue;
    char text[INET6_ADDRSTRLEN] = {0};
    const void* raw = ai->ai_family == AF_INET
                          ? static_cast<const void*>(
                                &reinterpret_cast<const sockaddr_in*>(ai->ai_addr)->sin_addr)
                          : static_cast<const void*>(
                                &reinterpret_cast<const sockaddr_in6*>(ai->ai_addr)->sin6_addr);
    if (::inet_ntop(ai->ai_family, raw, text, sizeof(text)) == nullptr) continue;
    if (!options.allow_private_http && !internal::IsPublicAddress(ai->ai_addr)) {
      return BadUri(field, absl::StrCat("host ", parts.host, " resolves to ", text,
                                        ", a loopback, private, link-local or reserved address, "
                                        "which is not allowed"));
    }
    std::string entry = ai->ai_family == AF_INET6 ? absl::StrCat("[", text, "]") : text;
    if (std::find(addrs.begin(), addrs.end(), entry) == addrs.end()) addrs.push_back(entry);
  }
  if (addrs.empty()) {
    return absl::UnavailableError(absl::StrCat(AV(field), ": host ", parts.host, " has no address"));
  }
  return addrs;
}

// The CURLOPT_RESOLVE entry that pins `parts.host` to `addrs` (none for a
// literal address).
std::vector<std::string> PinTo(const UrlParts& parts, const std::vector<std::string>& addrs) {
  in6_addr probe6;
  in_addr probe4;
  const bool literal = ::inet_pton(AF_INET, parts.host.c_str(), &probe4) == 1 ||
                       ::inet_pton(AF_INET6, parts.host.c_str(), &probe6) == 1;
  if (literal) return {};
  return {absl::StrCat(parts.host, ":", parts.port, ":", absl::StrJoin(addrs, ","))};
}

absl::StatusOr<UrlParts> ParseCallbackUrl(std::string_view url, const UriOptions& options,
                                          std::string_view field) {
  FT_ASSIGN_OR_RETURN(UrlParts parts, ParseHttpUrl(std::string(url), field));
  // As dataset URIs: plain http:// only where the server allows it.
  if (parts.scheme == "http" && !(options.allow_http && options.allow_plain_http)) {
    return BadUri(field,
                  "http:// callbacks need the server's --allow_http and --allow_plain_http; "
                  "use https://");
  }
  return parts;
}

absl::StatusOr<std::string> ReadHttp(std::string_view uri, const UriOptions& options,
                                     std::string_view field) {
  if (!options.allow_http) return BadUri(field, "http(s) URIs are disabled on this server");
  std::string url(uri);
  for (int hop = 0;; ++hop) {
    FT_ASSIGN_OR_RETURN(const UrlParts parts, ParseHttpUrl(url, field));
    if (parts.scheme == "http" && !options.allow_plain_http) {
      return BadUri(field, hop == 0 ? "plain http:// URIs are disabled on this server; use https://"
                                    : "redirected to plain http://, which is disabled on this "
                                      "server");
    }
    FT_ASSIGN_OR_RETURN(const std::vector<std::string> addrs,
                        ResolveAndCheck(parts, options, field));
    internal::HttpRequest request;
    request.url = url;
    // Pin the connection to the addresses just checked, so a second DNS
    // answer (rebinding) cannot send it elsewhere.
    request.resolve = PinTo(parts, addrs);
    request.max_response_bytes = options.max_bytes;
    request.timeout_seconds = options.http_timeout_seconds;
    std::string body;
    internal::HttpSink sink;
    sink.body = &body;
    FT_ASSIGN_OR_RETURN(const internal::HttpResponse response,
                        internal::PerformHttp(request, sink, field));
    const long status = response.status;
    if (status >= 300 && status < 400) {
      if (response.redirect_url.empty()) {
        return BadUri(field, absl::StrCat("HTTP ", status, " redirect without a Location"));
      }
      if (hop >= kMaxRedirects) {
        return BadUri(field, absl::StrCat("more than ", kMaxRedirects, " redirects"));
      }
      url = response.redirect_url;  // re-validated (scheme, host, addresses) on the next hop
      continue;
    }
    if (status == 404 || status == 410) {
      return BadUri(field, absl::StrCat("not found (HTTP ", status, ")"));
    }
    if (status < 200 || status >= 300) {
      return absl::UnavailableError(absl::StrCat(AV(field), ": fetch failed with HTTP ", status));
    }
    return body;
  }
}

absl::StatusOr<std::string> ReadS3(std::string_view uri, const UriOptions& options,
                                   std::string_view field) {
  FT_ASSIGN_OR_RETURN(const S3Location at, ParseS3Uri(uri, field));
  absl::StatusOr<std::string> body = S3Client(options.s3).Get(at, options.max_bytes, field);
  // A missing object is the job's fault, as a missing file is.
  if (body.status().code() == absl::StatusCode::kNotFound) {
    return absl::InvalidArgumentError(body.status().message());
  }
  return body;
}

}  // namespace

bool PathIsUnder(std::string_view path, std::string_view root) {
  if (root == "/") return !path.empty() && path[0] == '/';
  while (root.size() > 1 && root.back() == '/') root.remove_suffix(1);
  if (!absl::StartsWith(AV(path), AV(root))) return false;
  return path.size() == root.size() || path[root.size()] == '/';
}

bool IsLocalUri(std::string_view uri) {
  const std::string scheme = SchemeOf(uri);
  return scheme.empty() || scheme == "file";
}

namespace internal {

bool IsPublicAddress(const sockaddr* addr) {
  auto v4_public = [](uint32_t a) {  // host byte order
    const auto in = [a](uint32_t net, int bits) {
      const uint32_t mask = bits == 0 ? 0 : ~uint32_t{0} << (32 - bits);
      return (a & mask) == net;
    };
    return !(in(0x00000000, 8) ||     // 0/8 "this network", unspecified
             in(0x0A000000, 8) ||     // 10/8
             in(0x64400000, 10) ||    // 100.64/10 carrier-grade NAT
             in(0x7F000000, 8) ||     // 127/8 loopback
             in(0xA9FE0000, 16) ||    // 169.254/16 link-local (cloud metadata)
             in(0xAC100000, 12) ||    // 172.16/12
             in(0xC0000000, 24) ||    // 192.0.0/24 IETF protocol assignments
             in(0xC0A80000, 16) ||    // 192.168/16
             in(0xC6120000, 15) ||    // 198.18/15 benchmarking
             in(0xE0000000, 4) ||     // multicast
             in(0xF0000000, 4));      // reserved and broadcast
  };
  if (addr->sa_family == AF_INET) {
    const auto* sin = reinterpret_cast<const sockaddr_in*>(addr);
    return v4_public(ntohl(sin->sin_addr.s_addr));
  }
  if (addr->sa_family != AF_INET6) return false;
  const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(addr);
  const uint8_t* b = sin6->sin6_addr.s6_addr;
  auto embedded_v4 = [b](int offset) {
    return (uint32_t{b[offset]} << 24) | (uint32_t{b[offset + 1]} << 16) |
           (uint32_t{b[offset + 2]} << 8) | uint32_t{b[offset + 3]};
  };
  static const uint8_t kZero10[10] = {0};
  // ::/96 (unspecified, loopback, IPv4-compatible) and ::ffff:0:0/96 (mapped).
  if (std::memcmp(b, kZero10, 10) == 0) {
    if (b[10] == 0 && b[11] == 0) {
      // :: and ::1 and deprecated IPv4-compatible forms.
      bool small = true;
      for (int i = 10; i < 15; ++i) small = small && b[i] == 0;
      if (small) return false;
      return v4_public(embedded_v4(12));
    }
    if (b[10] == 0xff && b[11] == 0xff) return v4_public(embedded_v4(12));
  }
  // 64:ff9b::/96 NAT64 carries an IPv4 address too.
  static const uint8_t kNat64[12] = {0x00, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
  if (std::memcmp(b, kNat64, 12) == 0) return v4_public(embedded_v4(12));
  if (b[0] == 0x20 && b[1] == 0x02) return v4_public(embedded_v4(2));  // 2002::/16 6to4
  if ((b[0] & 0xfe) == 0xfc) return false;                             // fc00::/7 ULA
  if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) return false;             // fe80::/10
  if (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0) return false;             // fec0::/10 site-local
  if (b[0] == 0xff) return false;                                      // multicast
  return true;
}

}  // namespace internal

absl::StatusOr<std::string> ResolveLocalPath(std::string_view uri, const UriOptions& options,
                                             std::string_view field) {
  FT_ASSIGN_OR_RETURN(const std::string path, LocalPathOf(uri, field));
  FT_ASSIGN_OR_RETURN(const std::vector<std::string> roots, CanonicalRoots(options));
  FT_ASSIGN_OR_RETURN(std::string canonical, RealPath(path, field, "file"));
  FT_RETURN_IF_ERROR(CheckConfined(canonical, roots, path, field));
  return canonical;
}

absl::StatusOr<std::string> ReadUri(std::string_view uri, const UriOptions& options,
                                    std::string_view field) {
  const std::string scheme = SchemeOf(uri);
  if (scheme == "http" || scheme == "https") return ReadHttp(uri, options, field);
  if (scheme == "s3") return ReadS3(uri, options, field);
  return ReadLocal(uri, options, field);
}

namespace {

// An output URI split at its deepest existing ancestor: `existing` is that
// ancestor's canonical path (confined to the roots), `missing` the plain
// names still to create below it (never "." or "..", which could climb back
// out of the checked ancestor).
struct OutputPath {
  std::string existing;
  std::vector<std::string> missing;
};

absl::StatusOr<OutputPath> SplitOutputPath(std::string_view uri,
                                           const std::vector<std::string>& roots,
                                           std::string_view field) {
  FT_ASSIGN_OR_RETURN(const std::string path, LocalPathOf(uri, field));
  std::vector<std::string> parts = absl::StrSplit(path, '/', absl::SkipEmpty());
  size_t existing = parts.size();
  std::string base;
  for (;;) {
    base = "/" + absl::StrJoin(parts.begin(), parts.begin() + existing, "/");
    struct stat st;
    if (::stat(base.c_str(), &st) == 0) {
      if (!S_ISDIR(st.st_mode)) return BadUri(field, absl::StrCat("not a directory: ", base));
      break;
    }
    if (errno == EACCES) return BadUri(field, absl::StrCat("permission denied: ", base));
    if (existing == 0) return BadUri(field, "no existing ancestor directory");
    --existing;
  }
  OutputPath out;
  FT_ASSIGN_OR_RETURN(out.existing, RealPath(base, field, "directory"));
  FT_RETURN_IF_ERROR(CheckConfined(out.existing, roots, path, field));
  for (size_t i = existing; i < parts.size(); ++i) {
    if (parts[i] == "." || parts[i] == "..") {
      return BadUri(field, "\".\" and \"..\" are not allowed in the part of the path to create");
    }
    out.missing.push_back(parts[i]);
  }
  return out;
}

std::string JoinPath(const std::string& dir, const std::string& name) {
  return dir == "/" ? "/" + name : dir + "/" + name;
}

}  // namespace

absl::StatusOr<std::string> PlanOutputDir(std::string_view uri, const UriOptions& options,
                                          std::string_view field) {
  if (IsS3Uri(uri)) {
    return BadUri(field, "s3:// is not supported here (only a job's output_uri may be s3://)");
  }
  FT_ASSIGN_OR_RETURN(const std::vector<std::string> roots, CanonicalRoots(options));
  FT_ASSIGN_OR_RETURN(const OutputPath split, SplitOutputPath(uri, roots, field));
  if (!split.missing.empty()) {
    std::string planned = split.existing;
    for (const std::string& name : split.missing) planned = JoinPath(planned, name);
    return planned;
  }
  // The whole path exists (and is a directory): only an empty one may be
  // written into, so nothing already there can be replaced.
  DIR* dir = ::opendir(split.existing.c_str());
  if (dir == nullptr) {
    return BadUri(field, absl::StrCat("cannot open ", split.existing, ": ", std::strerror(errno)));
  }
  bool empty = true;
  while (const dirent* entry = ::readdir(dir)) {
    const std::string_view name = entry->d_name;
    if (name != "." && name != "..") {
      empty = false;
      break;
    }
  }
  ::closedir(dir);
  if (!empty) {
    return BadUri(field, absl::StrCat(split.existing,
                                      " exists and is not empty; outputs go to a new or empty "
                                      "directory"));
  }
  return split.existing;
}

absl::StatusOr<std::string> ResolveOutputDir(std::string_view uri, const UriOptions& options,
                                             std::string_view field) {
  if (IsS3Uri(uri)) {
    return BadUri(field, "s3:// is not supported here (only a job's output_uri may be s3://)");
  }
  FT_ASSIGN_OR_RETURN(const std::vector<std::string> roots, CanonicalRoots(options));
  // Confine the deepest existing ancestor, then create the missing
  // components one plain name at a time, re-checking each: nothing is
  // created before the check.
  FT_ASSIGN_OR_RETURN(const OutputPath split, SplitOutputPath(uri, roots, field));
  std::string current = split.existing;
  for (const std::string& name : split.missing) {
    const std::string next = JoinPath(current, name);
    if (::mkdir(next.c_str(), 0755) != 0 && errno != EEXIST) {
      const int err = errno;
      if (err == EACCES) return BadUri(field, absl::StrCat("permission denied: ", next));
      return BadUri(field, absl::StrCat("cannot create ", next, ": ", std::strerror(err)));
    }
    FT_ASSIGN_OR_RETURN(current, RealPath(next, field, "directory"));
    FT_RETURN_IF_ERROR(CheckConfined(current, roots, next, field));
  }
  struct stat st;
  if (::stat(current.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return BadUri(field, absl::StrCat("not a directory: ", current));
  }
  return current;
}

}  // namespace freezetune::data

namespace freezetune::data {

absl::Status CheckCallbackUrl(std::string_view url, const UriOptions& options,
                              std::string_view field) {
  FT_ASSIGN_OR_RETURN(const UrlParts parts, ParseCallbackUrl(url, options, field));
  // A literal address is checked now; host names when the callback is sent.
  addrinfo hints{};
  hints.ai_flags = AI_NUMERICHOST;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (::getaddrinfo(parts.host.c_str(), nullptr, &hints, &res) == 0 && res != nullptr) {
    std::unique_ptr<addrinfo, void (*)(addrinfo*)> owned(res, ::freeaddrinfo);
    if (!options.allow_private_http && !internal::IsPublicAddress(res->ai_addr)) {
      return BadUri(field, absl::StrCat(parts.host, " is a loopback, private, link-local or "
                                        "reserved address, which is not allowed"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<int> PostCallback(std::string_view url, const std::string& body,
                                 const std::vector<std::string>& headers,
                                 const UriOptions& options, std::string_view field) {
  FT_ASSIGN_OR_RETURN(const UrlParts parts, ParseCallbackUrl(url, options, field));
  FT_ASSIGN_OR_RETURN(const std::vector<std::string> addrs, ResolveAndCheck(parts, options, field));
  internal::HttpRequest request;
  request.method = "POST";
  request.url = std::string(url);
  request.headers = headers;
  request.body = &body;
  request.resolve = PinTo(parts, addrs);
  request.max_response_bytes = 64 << 10;
  request.timeout_seconds = options.http_timeout_seconds;
  std::string response_body;
  internal::HttpSink sink;
  sink.body = &response_body;
  FT_ASSIGN_OR_RETURN(const internal::HttpResponse response,
                      internal::PerformHttp(request, sink, field));
  return static_cast<int>(response.status);
}

}  // namespace freezetune::data
