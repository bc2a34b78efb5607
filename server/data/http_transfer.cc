// One HTTP exchange over libcurl (see http_transfer.h).
#include "server/data/http_transfer.h"

#include <curl/curl.h>
#include <errno.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <mutex>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"

namespace freezetune::data::internal {
namespace {

absl::string_view AV(std::string_view s) { return absl::string_view(s.data(), s.size()); }

void CurlGlobalInit() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

struct CurlDeleter {
  void operator()(CURL* c) const { curl_easy_cleanup(c); }
};
struct SlistDeleter {
  void operator()(curl_slist* s) const { curl_slist_free_all(s); }
};

struct Transfer {
  CURL* curl = nullptr;
  const HttpRequest* request = nullptr;
  HttpSink* sink = nullptr;
  HttpResponse* response = nullptr;
  int64_t sent = 0;  // request body bytes handed to curl
  bool too_large = false;
  bool write_failed = false;
  int write_errno = 0;
};

size_t OnBody(char* data, size_t size, size_t nmemb, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t n = size * nmemb;
  if (t->sink->error_body != nullptr) {
    long status = 0;
    curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &status);
    if (status < 200 || status >= 300) {
      constexpr size_t kMaxErrorBody = 64 << 10;
      std::string& e = *t->sink->error_body;
      e.append(data, std::min(n, kMaxErrorBody - std::min(kMaxErrorBody, e.size())));
      return n;
    }
  }
  if (t->sink->bytes + static_cast<int64_t>(n) > t->request->max_response_bytes) {
    t->too_large = true;
    return 0;  // aborts the transfer with CURLE_WRITE_ERROR
  }
  if (t->sink->body != nullptr) {
    t->sink->body->append(data, n);
  } else {
    size_t done = 0;
    while (done < n) {
      const ssize_t w = ::write(t->sink->fd, data + done, n - done);
      if (w < 0) {
        if (errno == EINTR) continue;
        t->write_failed = true;
        t->write_errno = errno;
        return 0;
      }
      done += static_cast<size_t>(w);
    }
  }
  t->sink->bytes += static_cast<int64_t>(n);
  return n;
}

size_t OnHeader(char* data, size_t size, size_t nmemb, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t n = size * nmemb;
  absl::string_view line(data, n);
  if (absl::StartsWith(line, "HTTP/")) {
    t->response->headers.clear();  // a new response (after 100 Continue)
    return n;
  }
  const size_t colon = line.find(':');
  if (colon == absl::string_view::npos) return n;
  std::string name = absl::AsciiStrToLower(line.substr(0, colon));
  std::string value(absl::StripAsciiWhitespace(line.substr(colon + 1)));
  // Size a string body once instead of growing it by doubling (a 100 MB
  // dataset would be copied several times over); never beyond the cap.
  int64_t length = 0;
  if (name == "content-length" && t->sink->body != nullptr &&
      absl::SimpleAtoi(value, &length) && length > 0 &&
      length <= t->request->max_response_bytes) {
    t->sink->body->reserve(t->sink->body->size() + static_cast<size_t>(length));
  }
  t->response->headers[name] = std::move(value);
  return n;
}

size_t OnRead(char* buffer, size_t size, size_t nitems, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const HttpRequest& r = *t->request;
  const int64_t total = r.body != nullptr ? static_cast<int64_t>(r.body->size()) : r.body_length;
  const size_t want =
      static_cast<size_t>(std::min<int64_t>(static_cast<int64_t>(size * nitems), total - t->sent));
  if (want == 0) return 0;
  if (r.body != nullptr) {
    std::memcpy(buffer, r.body->data() + t->sent, want);
    t->sent += static_cast<int64_t>(want);
    return want;
  }
  for (;;) {
    const ssize_t got = ::pread(r.body_fd, buffer, want, r.body_offset + t->sent);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return CURL_READFUNC_ABORT;  // the file shrank or failed
    t->sent += got;
    return static_cast<size_t>(got);
  }
}

// Rewinds the request body when curl must send it again (e.g. after an auth
// negotiation or a reused connection that closed).
int OnSeek(void* user, curl_off_t offset, int origin) {
  auto* t = static_cast<Transfer*>(user);
  if (origin != SEEK_SET) return CURL_SEEKFUNC_CANTSEEK;
  t->sent = static_cast<int64_t>(offset);
  return CURL_SEEKFUNC_OK;
}

}  // namespace

absl::StatusOr<HttpResponse> PerformHttp(const HttpRequest& request, HttpSink& sink,
                                         std::string_view field) {
  CurlGlobalInit();
  std::unique_ptr<CURL, CurlDeleter> curl(curl_easy_init());
  if (!curl) return absl::InternalError("curl_easy_init failed");
  CURL* c = curl.get();
  HttpResponse response;
  Transfer t;
  t.curl = c;
  t.request = &request;
  t.sink = &sink;
  t.response = &response;

  std::unique_ptr<curl_slist, SlistDeleter> resolve;
  for (const std::string& entry : request.resolve) {
    resolve.reset(curl_slist_append(resolve.release(), entry.c_str()));
  }
  if (resolve) curl_easy_setopt(c, CURLOPT_RESOLVE, resolve.get());
  std::unique_ptr<curl_slist, SlistDeleter> headers;
  for (const std::string& h : request.headers) {
    headers.reset(curl_slist_append(headers.release(), h.c_str()));
  }
  if (headers) curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());

  const bool has_body = request.body != nullptr || request.body_fd >= 0;
  const int64_t body_size =
      request.body != nullptr ? static_cast<int64_t>(request.body->size()) : request.body_length;
  if (request.method == "HEAD") {
    curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
  } else if (request.method == "PUT") {
    curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(has_body ? body_size : 0));
  } else if (request.method == "POST") {
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    if (request.body != nullptr) {
      // As postfields, so that libcurl's SigV4 hashes the payload itself
      // when no x-amz-content-sha256 header is given.
      curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body_size));
      curl_easy_setopt(c, CURLOPT_POSTFIELDS, request.body->data());
    } else {
      curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE,
                       static_cast<curl_off_t>(has_body ? body_size : 0));
    }
  } else if (request.method != "GET") {
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, request.method.c_str());
  }
  if (has_body && !(request.method == "POST" && request.body != nullptr)) {
    curl_easy_setopt(c, CURLOPT_READFUNCTION, &OnRead);
    curl_easy_setopt(c, CURLOPT_READDATA, &t);
    curl_easy_setopt(c, CURLOPT_SEEKFUNCTION, &OnSeek);
    curl_easy_setopt(c, CURLOPT_SEEKDATA, &t);
  }

  std::string userpwd;
  std::string sigv4;
  if (request.sigv4 != nullptr) {
    sigv4 = absl::StrCat("aws:amz:", request.sigv4->region, ":", request.sigv4->service);
    curl_easy_setopt(c, CURLOPT_AWS_SIGV4, sigv4.c_str());
    curl_easy_setopt(c, CURLOPT_USERNAME, request.sigv4->access_key.c_str());
    curl_easy_setopt(c, CURLOPT_PASSWORD, request.sigv4->secret_key.c_str());
  }

  char error[CURL_ERROR_SIZE] = {0};
  const long timeout = std::max(1, request.timeout_seconds);
  curl_easy_setopt(c, CURLOPT_URL, request.url.c_str());
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);  // callers decide about redirects
  curl_easy_setopt(c, CURLOPT_PROXY, "");           // a proxy would bypass address pinning
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, std::min(timeout, 10L));
  curl_easy_setopt(c, CURLOPT_TIMEOUT, timeout);
  if (request.method != "HEAD") {  // a HEAD's Content-Length is the object's size
    curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE,
                     static_cast<curl_off_t>(request.max_response_bytes));
  }
  curl_easy_setopt(c, CURLOPT_BUFFERSIZE, 512L * 1024);  // fewer callbacks on large bodies
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, &OnBody);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &t);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, &OnHeader);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &t);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, error);
  curl_easy_setopt(c, CURLOPT_USERAGENT, "freezetune/0.1");

  const CURLcode rc = curl_easy_perform(c);
  if (t.too_large || rc == CURLE_FILESIZE_EXCEEDED) {
    return absl::InvalidArgumentError(absl::StrCat(
        AV(field), ": response exceeds the limit of ", request.max_response_bytes, " bytes"));
  }
  if (t.write_failed) {
    return absl::InternalError(absl::StrCat(AV(field), ": cannot write the download: ",
                                            std::strerror(t.write_errno)));
  }
  if (rc == CURLE_OPERATION_TIMEDOUT) {
    return absl::DeadlineExceededError(
        absl::StrCat(AV(field), ": fetch timed out after ", timeout, " s"));
  }
  if (rc != CURLE_OK) {
    return absl::UnavailableError(absl::StrCat(
        AV(field), ": fetch failed: ", error[0] != '\0' ? error : curl_easy_strerror(rc)));
  }
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &response.status);
  if (response.status >= 300 && response.status < 400) {
    char* location = nullptr;
    curl_easy_getinfo(c, CURLINFO_REDIRECT_URL, &location);
    if (location != nullptr) response.redirect_url = location;
  }
  // curl reports a body cut short of its Content-Length as CURLE_PARTIAL_FILE;
  // check again here so that no short body is ever returned as complete.
  if (request.method != "HEAD" && response.status >= 200 && response.status < 300) {
    auto it = response.headers.find("content-length");
    int64_t announced = 0;
    if (it != response.headers.end() && absl::SimpleAtoi(it->second, &announced) &&
        announced != sink.bytes && response.headers.count("content-encoding") == 0) {
      return absl::UnavailableError(absl::StrCat(AV(field), ": fetch failed: got ", sink.bytes,
                                                 " of ", announced, " bytes"));
    }
  }
  return response;
}

}  // namespace freezetune::data::internal
