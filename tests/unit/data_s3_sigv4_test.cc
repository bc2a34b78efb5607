// Proves freezetune's S3 request signing against AWS's published Signature
// Version 4 test suite (tests/fixtures/aws-sigv4/cases.json, provenance in
// its README): each case's request goes through internal::PerformHttp, the
// libcurl path S3Client uses (CURLOPT_AWS_SIGV4, the time from the case's
// X-Amz-Date header, the query in canonical order from CanonicalQuery), to
// a real loopback HTTP server that echoes the Authorization header it got;
// that header must equal the suite's expected one byte for byte.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/data/http_transfer.h"
#include "server/data/s3_client.h"

namespace freezetune::data {
namespace {

// Answers every request with its Authorization header as the body.
class AuthorizationEcho {
 public:
  AuthorizationEcho() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), len) != 0 || ::listen(fd_, 16) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      return;
    }
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { Serve(); });
  }
  ~AuthorizationEcho() {
    stop_ = true;
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    if (thread_.joinable()) thread_.join();
  }
  int port() const { return port_; }

 private:
  void Serve() {
    while (!stop_) {
      const int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      std::string req;
      char buf[4096];
      while (req.find("\r\n\r\n") == std::string::npos) {
        const ssize_t n = ::read(c, buf, sizeof(buf));
        if (n <= 0) break;
        req.append(buf, static_cast<size_t>(n));
      }
      std::string auth = "none";
      for (absl::string_view line : absl::StrSplit(req, "\r\n")) {
        if (absl::StartsWithIgnoreCase(line, "authorization:")) {
          auth = std::string(absl::StripAsciiWhitespace(line.substr(14)));
        }
      }
      const std::string resp = "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: " +
                               std::to_string(auth.size()) + "\r\n\r\n" + auth;
      (void)!::write(c, resp.data(), resp.size());
      ::shutdown(c, SHUT_WR);
      while (::read(c, buf, sizeof(buf)) > 0) {
      }
      ::close(c);
    }
  }
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

nlohmann::json LoadCases() {
  std::ifstream in(std::string(FREEZETUNE_SOURCE_DIR) + "/tests/fixtures/aws-sigv4/cases.json");
  std::stringstream text;
  text << in.rdbuf();
  return nlohmann::json::parse(text.str());
}

// "a=b&c" -> {{"a","b"},{"c",""}}.
std::vector<std::pair<std::string, std::string>> QueryParams(const std::string& query) {
  std::vector<std::pair<std::string, std::string>> params;
  if (query.empty()) return params;
  for (absl::string_view part : absl::StrSplit(query, '&')) {
    const size_t eq = part.find('=');
    params.emplace_back(std::string(part.substr(0, eq)),
                        eq == absl::string_view::npos ? "" : std::string(part.substr(eq + 1)));
  }
  return params;
}

TEST(SigV4TestSuite, LibcurlSignsEveryCaseAsAwsPublished) {
  const nlohmann::json suite = LoadCases();
  ASSERT_GE(suite["cases"].size(), 15u);
  AuthorizationEcho echo;
  ASSERT_GT(echo.port(), 0);
  const internal::SigV4 sigv4{suite["config"]["region"], suite["config"]["service"],
                              suite["config"]["accessKeyId"], suite["config"]["secretAccessKey"]};
  for (const nlohmann::json& c : suite["cases"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    const nlohmann::json& r = c["request"];
    const std::string uri = r["uri"];
    const size_t q = uri.find('?');
    internal::HttpRequest request;
    request.method = r["method"];
    const std::string query = CanonicalQuery(QueryParams(q == std::string::npos ? "" : uri.substr(q + 1)));
    request.url = "http://127.0.0.1:" + std::to_string(echo.port()) + uri.substr(0, q) +
                  (query.empty() ? "" : "?" + query);
    for (const nlohmann::json& h : r["headers"]) {
      request.headers.push_back(h[0].get<std::string>() + ": " + h[1].get<std::string>());
    }
    const std::string body = r["body"];
    if (request.method == "POST") request.body = &body;
    request.sigv4 = &sigv4;
    request.timeout_seconds = 10;
    std::string got;
    internal::HttpSink sink;
    sink.body = &got;
    auto response = internal::PerformHttp(request, sink, "sigv4");
    ASSERT_TRUE(response.ok()) << response.status();
    EXPECT_EQ(got, c["authz"].get<std::string>());
  }
}

TEST(SigV4TestSuite, AWrongSecretChangesTheSignature) {
  const nlohmann::json suite = LoadCases();
  AuthorizationEcho echo;
  const internal::SigV4 wrong{suite["config"]["region"], suite["config"]["service"],
                              suite["config"]["accessKeyId"], "not-the-secret"};
  const nlohmann::json& c = suite["cases"][0];
  internal::HttpRequest request;
  request.url = "http://127.0.0.1:" + std::to_string(echo.port()) + "/";
  for (const nlohmann::json& h : c["request"]["headers"]) {
    request.headers.push_back(h[0].get<std::string>() + ": " + h[1].get<std::string>());
  }
  request.sigv4 = &wrong;
  std::string got;
  internal::HttpSink sink;
  sink.body = &got;
  ASSERT_TRUE(internal::PerformHttp(request, sink, "sigv4").ok());
  EXPECT_THAT(got, ::testing::StartsWith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/"));
  EXPECT_NE(got, c["authz"].get<std::string>());
}

// S3Client's own requests carry what S3 needs on top of the signature: the
// payload hash header (curl 7.88 does not add it), the session token, both
// signed, and the query in canonical order.
TEST(SigV4TestSuite, S3ClientSignsPayloadHashTokenAndCanonicalQuery) {
  AuthorizationEcho echo;
  S3Options o;
  o.endpoint_url = "http://127.0.0.1:" + std::to_string(echo.port());
  o.path_style = true;
  o.access_key_id = "AKIDEXAMPLE";
  o.secret_access_key = "secret";
  o.session_token = "token";
  o.fixed_amz_date = "20150830T123600Z";
  o.attempts = 1;
  S3Client client(o);
  // The echo's body (the Authorization header) comes back as a List
  // response with no <Contents>: an empty listing.
  auto listed = client.List("bucket", "a b/", "f");
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_TRUE(listed->empty());
  auto got = client.Get(S3Location{"bucket", "k"}, 1 << 20, "f");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_THAT(*got, ::testing::HasSubstr(
                        "Credential=AKIDEXAMPLE/20150830/us-east-1/s3/aws4_request, "
                        "SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token,"));
  EXPECT_EQ(CanonicalQuery({{"prefix", "a b/"}, {"list-type", "2"}, {"max-keys", "1"}}),
            "list-type=2&max-keys=1&prefix=a%20b%2F");
  EXPECT_EQ(AwsUriEncode("dir/ü x+y.tsv", true), "dir/%C3%BC%20x%2By.tsv");
}

}  // namespace
}  // namespace freezetune::data
