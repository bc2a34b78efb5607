// Tests for server/data/uri.h: local confinement with real files, dirs and
// symlinks, and http(s) with a real one-shot HTTP server on 127.0.0.1:0.
#include "server/data/uri.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/data/uri_internal.h"

namespace freezetune::data {
namespace {

namespace fs = std::filesystem;
using ::testing::Not;
using ::testing::HasSubstr;
using ::testing::StartsWith;

std::string Msg(const absl::Status& s) { return std::string(s.message()); }

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "ft_uri_XXXXXX").string();
    char* made = ::mkdtemp(tmpl.data());
    EXPECT_NE(made, nullptr);
    path_ = fs::canonical(tmpl);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

void WriteFile(const fs::path& p, const std::string& content) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << content;
}

class LocalUriTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = tmp_.path() / "data";
    fs::create_directories(root_);
    WriteFile(root_ / "train.tsv", "sentence\tlabel\nok\t1\n");
    WriteFile(tmp_.path() / "secret.txt", "top secret");
    options_.data_roots = {root_.string()};
  }
  TempDir tmp_;
  fs::path root_;
  UriOptions options_;
};

TEST_F(LocalUriTest, ReadsAbsolutePathAndFileUri) {
  auto a = ReadUri((root_ / "train.tsv").string(), options_, "job.train.uri");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(*a, "sentence\tlabel\nok\t1\n");
  auto b = ReadUri("file://" + (root_ / "train.tsv").string(), options_, "job.train.uri");
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(*b, *a);
}

TEST_F(LocalUriTest, FileUriIsPercentDecoded) {
  WriteFile(root_ / "my file%.tsv", "x");
  auto r = ReadUri("file://" + root_.string() + "/my%20file%25.tsv", options_, "job.train.uri");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "x");
  auto bad = ReadUri("file://" + root_.string() + "/x%2", options_, "job.train.uri");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(Msg(bad.status()), HasSubstr("percent-escape"));
  auto local = ReadUri("file://localhost" + root_.string() + "/train.tsv", options_, "f");
  EXPECT_TRUE(local.ok()) << local.status();
  auto host = ReadUri("file://example.com" + root_.string() + "/train.tsv", options_, "f");
  EXPECT_FALSE(host.ok());
}

TEST_F(LocalUriTest, RelativePathRejected) {
  auto r = ResolveLocalPath("data/train.tsv", options_, "job.train.uri");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Msg(r.status()), "job.train.uri: path must be absolute");
}

TEST_F(LocalUriTest, NotFoundNamesFieldAndPath) {
  const std::string missing = (root_ / "nope.tsv").string();
  auto r = ReadUri(missing, options_, "job.train.uri");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(Msg(r.status()), "job.train.uri: file not found: " + missing);
}

TEST_F(LocalUriTest, DotDotEscapeRejected) {
  const std::string escape = (root_ / ".." / "secret.txt").string();
  auto r = ReadUri(escape, options_, "job.train.uri");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(Msg(r.status()), StartsWith("job.train.uri: "));
  EXPECT_THAT(Msg(r.status()), HasSubstr("outside the data roots"));
  EXPECT_THAT(Msg(r.status()), ::testing::Not(HasSubstr("top secret")));
}

TEST_F(LocalUriTest, SymlinkEscapeRejected) {
  fs::create_symlink(tmp_.path() / "secret.txt", root_ / "link.txt");
  auto r = ReadUri((root_ / "link.txt").string(), options_, "job.train.uri");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(Msg(r.status()), HasSubstr("outside the data roots"));
  // A symlink that stays inside the root is fine.
  fs::create_symlink(root_ / "train.tsv", root_ / "inside.tsv");
  EXPECT_TRUE(ReadUri((root_ / "inside.tsv").string(), options_, "f").ok());
}

TEST_F(LocalUriTest, RootPrefixIsComparedByComponent) {
  const fs::path sibling = tmp_.path() / "data2";
  WriteFile(sibling / "x.tsv", "x");
  auto r = ReadUri((sibling / "x.tsv").string(), options_, "job.train.uri");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(Msg(r.status()), HasSubstr("outside the data roots"));
  EXPECT_TRUE(internal::PathIsUnder("/tmp/x", "/tmp/x"));
  EXPECT_TRUE(internal::PathIsUnder("/tmp/x/y", "/tmp/x"));
  EXPECT_FALSE(internal::PathIsUnder("/tmp/xy", "/tmp/x"));
  EXPECT_TRUE(internal::PathIsUnder("/anything", "/"));
}

TEST_F(LocalUriTest, EmptyRootsAllowAnyPath) {
  UriOptions open;
  auto r = ReadUri((tmp_.path() / "secret.txt").string(), open, "f");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "top secret");
}

TEST_F(LocalUriTest, MaxBytesEnforced) {
  options_.max_bytes = 5;
  auto r = ReadUri((root_ / "train.tsv").string(), options_, "job.train.uri");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(Msg(r.status()), StartsWith("job.train.uri: "));
  EXPECT_THAT(Msg(r.status()), HasSubstr("over the limit of 5 bytes"));
  options_.max_bytes = static_cast<int64_t>(fs::file_size(root_ / "train.tsv"));  // exactly
  EXPECT_TRUE(ReadUri((root_ / "train.tsv").string(), options_, "f").ok());
}

TEST_F(LocalUriTest, DirectoryIsNotReadable) {
  auto r = ReadUri(root_.string(), options_, "job.train.uri");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(Msg(r.status()), HasSubstr("is a directory"));
  // but resolves, for model directories
  auto p = ResolveLocalPath("file://" + root_.string(), options_, "job.model_uri");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(*p, root_.string());
}

// Message from ReadUri run as an unprivileged user: as root, in a forked
// child that drops to nobody, since root bypasses file permissions.
std::string ReadAsUnprivileged(const std::string& uri, const UriOptions& options) {
  if (::geteuid() != 0) {
    auto r = ReadUri(uri, options, "job.train.uri");
    return r.ok() ? "OK" : Msg(r.status());
  }
  int fds[2];
  if (::pipe(fds) != 0) return "pipe failed";
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(2);
    auto r = ReadUri(uri, options, "job.train.uri");
    const std::string m = r.ok() ? "OK" : Msg(r.status());
    if (::write(fds[1], m.data(), m.size()) < 0) ::_exit(3);
    ::_exit(0);
  }
  ::close(fds[1]);
  std::string out;
  char buf[256];
  ssize_t n;
  while ((n = ::read(fds[0], buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return out;
}

TEST_F(LocalUriTest, PermissionDenied) {
  fs::permissions(tmp_.path(), fs::perms::owner_all | fs::perms::group_exec |
                                   fs::perms::others_exec | fs::perms::group_read |
                                   fs::perms::others_read);
  fs::permissions(root_, fs::perms::owner_all | fs::perms::others_exec | fs::perms::others_read);
  WriteFile(root_ / "locked.tsv", "x");
  fs::permissions(root_ / "locked.tsv", fs::perms::none);
  EXPECT_EQ(ReadAsUnprivileged((root_ / "locked.tsv").string(), options_),
            "job.train.uri: permission denied: " + (root_ / "locked.tsv").string());
  // A directory on the way that cannot be searched.
  fs::create_directories(root_ / "closed");
  WriteFile(root_ / "closed" / "x.tsv", "x");
  fs::permissions(root_ / "closed", fs::perms::owner_all);
  EXPECT_EQ(ReadAsUnprivileged((root_ / "closed" / "x.tsv").string(), options_),
            "job.train.uri: permission denied: " + (root_ / "closed" / "x.tsv").string());
}

TEST_F(LocalUriTest, UnsupportedScheme) {
  auto r = ReadUri("gs://bucket/x.tsv", options_, "job.train.uri");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(Msg(r.status()), StartsWith("job.train.uri: unsupported URI scheme \"gs\""));
  EXPECT_FALSE(ReadUri("", options_, "f").ok());
}

TEST_F(LocalUriTest, OutputDirCreatedInsideRoot) {
  const fs::path want = root_ / "outputs" / "job-1";
  auto r = ResolveOutputDir("file://" + want.string(), options_, "job.output_uri");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, want.string());
  EXPECT_TRUE(fs::is_directory(want));
  // Idempotent.
  EXPECT_TRUE(ResolveOutputDir(want.string(), options_, "f").ok());
}

TEST_F(LocalUriTest, OutputDirOutsideRootNotCreated) {
  const fs::path outside = tmp_.path() / "elsewhere" / "out";
  auto r = ResolveOutputDir(outside.string(), options_, "job.output_uri");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(Msg(r.status()), HasSubstr("outside the data roots"));
  EXPECT_FALSE(fs::exists(tmp_.path() / "elsewhere"));
  // ".." in the part still to be created could climb out after the check.
  auto dots = ResolveOutputDir((root_ / "new" / ".." / ".." / "escaped").string(), options_, "f");
  ASSERT_FALSE(dots.ok());
  EXPECT_FALSE(fs::exists(tmp_.path() / "escaped"));
  // Through a symlinked directory.
  fs::create_symlink(tmp_.path(), root_ / "up");
  auto link = ResolveOutputDir((root_ / "up" / "made").string(), options_, "f");
  ASSERT_FALSE(link.ok());
  EXPECT_FALSE(fs::exists(tmp_.path() / "made"));
  // A file in the way.
  auto file = ResolveOutputDir((root_ / "train.tsv" / "x").string(), options_, "f");
  ASSERT_FALSE(file.ok());
  EXPECT_THAT(Msg(file.status()), HasSubstr("not a directory"));
}

TEST_F(LocalUriTest, PlannedOutputIsCheckedButNotCreated) {
  // New: the canonical path it will have, nothing made yet.
  const fs::path want = root_ / "outputs" / "job-2";
  auto r = PlanOutputDir("file://" + want.string(), options_, "job.output_uri");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, want.string());
  EXPECT_FALSE(fs::exists(root_ / "outputs"));
  // Existing and empty: fine. Existing with anything in it: refused, since
  // writing there would replace what is there.
  fs::create_directories(root_ / "empty");
  EXPECT_TRUE(PlanOutputDir((root_ / "empty").string(), options_, "f").ok());
  WriteFile(root_ / "empty" / ".hidden", "x");
  auto full = PlanOutputDir((root_ / "empty").string(), options_, "job.output_uri");
  ASSERT_FALSE(full.ok());
  EXPECT_EQ(Msg(full.status()), "job.output_uri: " + (root_ / "empty").string() +
                                    " exists and is not empty; outputs go to a new or empty "
                                    "directory");
  // The input rules hold as for ResolveOutputDir, and nothing is created.
  EXPECT_THAT(Msg(PlanOutputDir((tmp_.path() / "elsewhere").string(), options_, "f").status()),
              HasSubstr("outside the data roots"));
  EXPECT_FALSE(PlanOutputDir((root_ / "new" / ".." / ".." / "escaped").string(), options_, "f").ok());
  fs::create_symlink(tmp_.path(), root_ / "up");
  EXPECT_FALSE(PlanOutputDir((root_ / "up" / "made").string(), options_, "f").ok());
  EXPECT_THAT(Msg(PlanOutputDir((root_ / "train.tsv").string(), options_, "f").status()),
              HasSubstr("not a directory"));
  EXPECT_FALSE(fs::exists(tmp_.path() / "made"));
  EXPECT_FALSE(fs::exists(tmp_.path() / "elsewhere"));
}

// ---------------------------------------------------------------------------
// http

TEST(AddressTest, PrivateAndPublicRanges) {
  auto v4 = [](const char* text) {
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    EXPECT_EQ(::inet_pton(AF_INET, text, &sa.sin_addr), 1) << text;
    return internal::IsPublicAddress(reinterpret_cast<sockaddr*>(&sa));
  };
  auto v6 = [](const char* text) {
    sockaddr_in6 sa{};
    sa.sin6_family = AF_INET6;
    EXPECT_EQ(::inet_pton(AF_INET6, text, &sa.sin6_addr), 1) << text;
    return internal::IsPublicAddress(reinterpret_cast<sockaddr*>(&sa));
  };
  for (const char* a : {"127.0.0.1", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1",
                        "169.254.169.254", "0.0.0.0", "100.64.0.1", "224.0.0.1",
                        "255.255.255.255"}) {
    EXPECT_FALSE(v4(a)) << a;
  }
  for (const char* a : {"8.8.8.8", "172.15.255.255", "172.32.0.1", "1.1.1.1", "193.168.0.1"}) {
    EXPECT_TRUE(v4(a)) << a;
  }
  for (const char* a : {"::", "::1", "fc00::1", "fdff::1", "fe80::1", "::ffff:127.0.0.1",
                        "::ffff:10.0.0.1", "64:ff9b::a9fe:a9fe", "2002:7f00:1::", "ff02::1"}) {
    EXPECT_FALSE(v6(a)) << a;
  }
  for (const char* a : {"2001:4860:4860::8888", "::ffff:8.8.8.8"}) EXPECT_TRUE(v6(a)) << a;
}

// Serves one canned response per accepted connection, in order, on
// 127.0.0.1:<ephemeral>. Counts connections so tests can prove none was made.
class OneShotHttpServer {
 public:
  explicit OneShotHttpServer(std::vector<std::string> responses)
      : responses_(std::move(responses)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    EXPECT_GE(fd_, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    EXPECT_EQ(::listen(fd_, 8), 0);
    socklen_t len = sizeof(addr);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { Serve(); });
  }
  ~OneShotHttpServer() {
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    thread_.join();
  }
  int port() const { return port_; }
  int connections() const { return connections_.load(); }
  std::string url(const std::string& path) const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }

 private:
  void Serve() {
    for (const std::string& response : responses_) {
      const int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) return;  // closed by the destructor
      ++connections_;
      std::string request;
      char buf[1024];
      while (request.find("\r\n\r\n") == std::string::npos) {
        const ssize_t n = ::read(c, buf, sizeof(buf));
        if (n <= 0) break;
        request.append(buf, static_cast<size_t>(n));
      }
      size_t off = 0;
      while (off < response.size()) {
        const ssize_t n = ::send(c, response.data() + off, response.size() - off, MSG_NOSIGNAL);
        if (n <= 0) break;
        off += static_cast<size_t>(n);
      }
      ::close(c);
    }
  }

  std::vector<std::string> responses_;
  int fd_ = -1;
  int port_ = 0;
  std::atomic<int> connections_{0};
  std::thread thread_;
};

std::string Ok(const std::string& body, bool with_length = true) {
  std::string r = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n";
  if (with_length) r += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  return r + "\r\n" + body;
}

std::string Redirect(const std::string& to) {
  return "HTTP/1.1 302 Found\r\nLocation: " + to +
         "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
}

TEST(HttpUriTest, LoopbackRefusedByDefault) {
  OneShotHttpServer server({Ok("hello")});
  UriOptions options;
  for (const std::string& url :
       {server.url("/x.tsv"), "http://localhost:" + std::to_string(server.port()) + "/x.tsv",
        "http://[::1]:" + std::to_string(server.port()) + "/x",
        "http://2130706433:" + std::to_string(server.port()) + "/x"}) {  // 127.0.0.1
    auto r = ReadUri(url, options, "job.train.uri");
    ASSERT_FALSE(r.ok()) << url;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(Msg(r.status()), StartsWith("job.train.uri: host "));
    EXPECT_THAT(Msg(r.status()), HasSubstr("not allowed"));
  }
  EXPECT_EQ(server.connections(), 0);
}

TEST(HttpUriTest, FetchesWhenPrivateAllowed) {
  OneShotHttpServer server({Ok("sentence\tlabel\nhi\t1\n")});
  UriOptions options;
  options.allow_private_http = true;
  auto r = ReadUri(server.url("/train.tsv"), options, "job.train.uri");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "sentence\tlabel\nhi\t1\n");
}

TEST(HttpUriTest, LocalhostNameIsPinnedAndFetched) {
  OneShotHttpServer server({Ok("via name")});
  UriOptions options;
  options.allow_private_http = true;
  auto r = ReadUri("http://localhost:" + std::to_string(server.port()) + "/x", options, "f");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "via name");
}

TEST(HttpUriTest, TooLargeBodyRefused) {
  const std::string body(1000, 'x');
  UriOptions options;
  options.allow_private_http = true;
  options.max_bytes = 100;
  {
    OneShotHttpServer server({Ok(body)});  // Content-Length announces it
    auto r = ReadUri(server.url("/big"), options, "job.train.uri");
    ASSERT_FALSE(r.ok());
    EXPECT_THAT(Msg(r.status()), HasSubstr("exceeds the limit of 100 bytes"));
  }
  {
    OneShotHttpServer server({Ok(body, /*with_length=*/false)});  // only the stream tells
    auto r = ReadUri(server.url("/big"), options, "job.train.uri");
    ASSERT_FALSE(r.ok());
    EXPECT_THAT(Msg(r.status()), HasSubstr("exceeds the limit of 100 bytes"));
  }
}

TEST(HttpUriTest, FollowsUpToThreeRedirects) {
  OneShotHttpServer target({Ok("final")});
  OneShotHttpServer hops({Redirect("/b"), Redirect("/c"), Redirect(target.url("/d"))});
  UriOptions options;
  options.allow_private_http = true;
  auto r = ReadUri(hops.url("/a"), options, "job.train.uri");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "final");
}

TEST(HttpUriTest, TooManyRedirectsAndBadSchemeRefused) {
  UriOptions options;
  options.allow_private_http = true;
  {
    OneShotHttpServer hops({Redirect("/1"), Redirect("/2"), Redirect("/3"), Redirect("/4")});
    auto r = ReadUri(hops.url("/0"), options, "job.train.uri");
    ASSERT_FALSE(r.ok());
    EXPECT_THAT(Msg(r.status()), HasSubstr("more than 3 redirects"));
  }
  {
    OneShotHttpServer hops({Redirect("file:///etc/passwd")});
    auto r = ReadUri(hops.url("/0"), options, "job.train.uri");
    ASSERT_FALSE(r.ok());
    EXPECT_THAT(Msg(r.status()), HasSubstr("unsupported URL scheme \"file\""));
  }
}

TEST(HttpUriTest, SilentServerTimesOut) {
  // Listens but never accepts: the kernel completes the handshake, nothing
  // ever answers.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(fd, 4), 0);
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  UriOptions options;
  options.allow_private_http = true;
  options.http_timeout_seconds = 1;
  auto r = ReadUri("http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port)) + "/", options,
                   "job.train.uri");
  ::close(fd);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(Msg(r.status()), StartsWith("job.train.uri: fetch timed out"));
}

TEST(HttpUriTest, HttpErrorsAndDisabledHttp) {
  UriOptions options;
  options.allow_private_http = true;
  OneShotHttpServer server(
      {"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"});
  auto r = ReadUri(server.url("/missing"), options, "job.train.uri");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(Msg(r.status()), "job.train.uri: not found (HTTP 404)");
  options.allow_http = false;
  auto off = ReadUri("https://example.com/x", options, "job.train.uri");
  ASSERT_FALSE(off.ok());
  EXPECT_THAT(Msg(off.status()), HasSubstr("disabled"));
}

// --allow_plain_http=false (the Kubernetes default, matching its 443-only
// egress): http:// is refused before any connection; https:// is not.
TEST(HttpUriTest, PlainHttpCanBeTurnedOffAlone) {
  UriOptions options;
  options.allow_private_http = true;
  options.allow_plain_http = false;
  auto r = ReadUri("http://127.0.0.1:9/train.tsv", options, "job.train.uri");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(Msg(r.status()),
            "job.train.uri: plain http:// URIs are disabled on this server; use https://");
  // https:// gets as far as connecting (nothing listens on port 9).
  auto tls = ReadUri("https://127.0.0.1:9/train.tsv", options, "job.train.uri");
  ASSERT_FALSE(tls.ok());
  EXPECT_THAT(Msg(tls.status()), Not(HasSubstr("disabled")));
  // The positive twin: the same options with plain http allowed fetch.
  OneShotHttpServer server({Ok("sentence\tlabel\nhi\t1\n")});
  options.allow_plain_http = true;
  EXPECT_TRUE(ReadUri(server.url("/train.tsv"), options, "job.train.uri").ok());
}

}  // namespace
}  // namespace freezetune::data
