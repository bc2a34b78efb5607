// A real S3-protocol server for tests: s3rver (npm, installed into the build
// dir by tests/unit/s3.cmake) started on 127.0.0.1 with an OS-chosen port,
// its data in a fresh temporary directory, the given buckets created at
// start. Stopped (SIGTERM, then SIGKILL) and its directory removed when the
// object is destroyed.
//
// s3rver accepts the access key "S3RVER" (secret "S3RVER") and refuses
// other keys with InvalidAccessKeyId; it does not check SigV4 signatures
// (that is proven separately against AWS's test vectors).
//
// Thread safety: construct and destroy on one thread; endpoint() is const.
#ifndef FREEZETUNE_TESTS_S3SERVER_S3_TEST_SERVER_H_
#define FREEZETUNE_TESTS_S3SERVER_S3_TEST_SERVER_H_

#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

namespace freezetune::testing {

class S3TestServer {
 public:
  explicit S3TestServer(const std::vector<std::string>& buckets) {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "ft_s3rver_XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) return;
    dir_ = tmpl;
    const std::string bin = std::string(FREEZETUNE_BINARY_DIR) + "/s3server/node_modules/.bin/s3rver";
    std::vector<std::string> args = {bin, "-d", dir_ + "/data", "-a", "127.0.0.1", "-p", "0", "-s"};
    for (const std::string& b : buckets) {
      args.push_back("--configure-bucket");
      args.push_back(b);
    }
    int out[2];
    if (::pipe(out) != 0) return;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(out[1], 1);
      ::close(out[0]);
      ::close(out[1]);
      std::vector<char*> argv;
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(out[1]);
    // Wait for "S3rver listening on 127.0.0.1:<port>".
    std::string seen;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (port_ == 0 && std::chrono::steady_clock::now() < deadline) {
      pollfd p{out[0], POLLIN, 0};
      if (::poll(&p, 1, 200) <= 0) continue;
      char buf[512];
      const ssize_t n = ::read(out[0], buf, sizeof(buf));
      if (n <= 0) break;
      seen.append(buf, static_cast<size_t>(n));
      const size_t at = seen.find("listening on 127.0.0.1:");
      if (at != std::string::npos) {
        const size_t start = at + std::string("listening on 127.0.0.1:").size();
        const size_t end = seen.find_first_not_of("0123456789", start);
        if (end != std::string::npos) port_ = std::stoi(seen.substr(start, end - start));
      }
    }
    output_fd_ = out[0];  // kept open so that s3rver never writes to a closed pipe
    startup_output_ = seen;
  }

  ~S3TestServer() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      for (int i = 0; i < 50; ++i) {
        if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
          pid_ = -1;
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      if (pid_ > 0) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
      }
    }
    if (output_fd_ >= 0) ::close(output_fd_);
    if (!dir_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
    }
  }
  S3TestServer(const S3TestServer&) = delete;
  S3TestServer& operator=(const S3TestServer&) = delete;

  bool ok() const { return port_ > 0; }
  int port() const { return port_; }
  // "http://127.0.0.1:<port>", for AWS_ENDPOINT_URL / S3Options.endpoint_url.
  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }
  // Where s3rver keeps objects (<dir>/<bucket>/<key>._S3rver_object).
  std::string data_dir() const { return dir_ + "/data"; }
  const std::string& startup_output() const { return startup_output_; }

 private:
  std::string dir_;
  pid_t pid_ = -1;
  int port_ = 0;
  int output_fd_ = -1;
  std::string startup_output_;
};

}  // namespace freezetune::testing

#endif  // FREEZETUNE_TESTS_S3SERVER_S3_TEST_SERVER_H_
