// Test helper: runs the real freezetune-server binary as a child process on
// 127.0.0.1 with port 0 (read back from --port_file), and a tiny BERT made by
// the real freezetune-model tool. Used by the client-side end-to-end tests.
//
// Not thread-safe: one test thread drives it.
#ifndef FREEZETUNE_TESTS_INTEGRATION_REAL_SERVER_H_
#define FREEZETUNE_TESTS_INTEGRATION_REAL_SERVER_H_

#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace freezetune::testing {

inline std::string ReadWholeFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// Runs argv to completion with stdout+stderr in `log`; returns the exit code.
inline int RunToCompletion(const std::vector<std::string>& argv, const std::string& log) {
  pid_t pid = fork();
  if (pid == 0) {
    FILE* out = std::freopen(log.c_str(), "w", stdout);
    (void)out;
    dup2(fileno(stdout), fileno(stderr));
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

class RealServer {
 public:
  // `dir` holds the server's data dir, log and port file; it is also the only
  // data root, so test models and datasets must live under it.
  explicit RealServer(std::string dir) : dir_(std::move(dir)) {}
  ~RealServer() { Stop(); }

  // Starts the server; returns "" on success or the reason with its log.
  std::string Start(const std::vector<std::string>& extra_flags = {}) {
    std::string port_file = dir_ + "/server.port";
    std::filesystem::remove(port_file);
    std::vector<std::string> argv = {FREEZETUNE_SERVER_BIN, "--listen", "127.0.0.1:0",
                                     "--port_file", port_file, "--metrics_listen", "127.0.0.1:0",
                                     "--data_dir", dir_ + "/server", "--data_roots", dir_,
                                     "--threads", "1", "--cpu_slots", "1"};
    argv.insert(argv.end(), extra_flags.begin(), extra_flags.end());
    pid_ = fork();
    if (pid_ == 0) {
      FILE* out = std::freopen(log().c_str(), "a", stdout);
      (void)out;
      dup2(fileno(stdout), fileno(stderr));
      std::vector<char*> args;
      for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline) {
      std::string port = ReadWholeFile(port_file);
      if (!port.empty() && port.back() == '\n') {
        address_ = "127.0.0.1:" + port.substr(0, port.size() - 1);
        return "";
      }
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = 0;
        return "server exited at start:\n" + ReadWholeFile(log());
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return "server did not write its port in 60 s:\n" + ReadWholeFile(log());
  }

  // SIGTERM, then SIGKILL after 30 s. True when it exited 0 on SIGTERM.
  bool Stop() {
    if (pid_ <= 0) return true;
    kill(pid_, SIGTERM);
    int status = 0;
    pid_t done = 0;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while ((done = waitpid(pid_, &status, WNOHANG)) == 0 &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (done == 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, &status, 0);
    }
    pid_ = 0;
    return done != 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
  }

  // Writes a 2-layer, hidden-32 BERT in Hugging Face format to <dir>/<name>
  // with the repository's bert-base-uncased vocab; returns its file:// URI,
  // or "" (and the tool's log in *error) on failure.
  std::string MakeTinyModel(const std::string& name, std::string* error) const {
    std::string out = dir_ + "/" + name;
    std::string vocab =
        std::string(FREEZETUNE_SOURCE_DIR) + "/tests/fixtures/data/bert-base-uncased-vocab.txt";
    int rc = RunToCompletion({FREEZETUNE_MODEL_BIN, "init", "--out", out, "--vocab", vocab,
                              "--layers", "2", "--hidden", "32", "--heads", "2",
                              "--intermediate", "64", "--max-position", "64", "--seed", "7"},
                             dir_ + "/" + name + ".log");
    if (rc != 0) {
      *error = ReadWholeFile(dir_ + "/" + name + ".log");
      return "";
    }
    return "file://" + out;
  }

  const std::string& address() const { return address_; }
  std::string log() const { return dir_ + "/server.log"; }

 private:
  std::string dir_;
  std::string address_;
  pid_t pid_ = 0;
};

}  // namespace freezetune::testing

#endif  // FREEZETUNE_TESTS_INTEGRATION_REAL_SERVER_H_
