// A real freezetune-server child process for integration tests and the load
// bench: started with the given flags on 127.0.0.1:0 (port read back from
// --port_file), its stdout+stderr in a log file; stopped with SIGTERM or
// killed with SIGKILL. Also creates tiny models with freezetune-model.
//
// Thread safety: none; one test thread drives it.
#ifndef FREEZETUNE_TESTS_INTEGRATION_SERVER_PROCESS_H_
#define FREEZETUNE_TESTS_INTEGRATION_SERVER_PROCESS_H_

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "grpcpp/grpcpp.h"

namespace freezetune::testing {

inline std::string ReadWholeFile(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Runs argv to completion with stdout+stderr into `log`; its exit status
// (or -1).
inline int RunToCompletion(const std::vector<std::string>& args, const std::string& log) {
  pid_t pid = fork();
  if (pid == 0) {
    FILE* out = std::freopen(log.c_str(), "w", stdout);
    (void)out;
    dup2(fileno(stdout), fileno(stderr));
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  int status = 0;
  if (waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// The shape of a randomly initialised BERT (freezetune-model init).
struct ModelShape {
  int layers = 2;
  int hidden = 32;
  int heads = 2;
  int intermediate = 64;
  int max_position = 64;
};

// Writes a BERT of `shape` in Hugging Face format to `out` with the
// repository's bert-base-uncased vocab, using the real freezetune-model tool;
// false (with the tool's output in *error) on failure.
inline bool MakeModel(const std::string& model_bin, const std::string& out,
                      const ModelShape& shape, std::string* error) {
  const std::string vocab =
      std::string(FREEZETUNE_SOURCE_DIR) + "/tests/fixtures/data/bert-base-uncased-vocab.txt";
  const std::string log = out + ".log";
  int rc = RunToCompletion(
      {model_bin, "init", "--out", out, "--vocab", vocab, "--layers",
       std::to_string(shape.layers), "--hidden", std::to_string(shape.hidden), "--heads",
       std::to_string(shape.heads), "--intermediate", std::to_string(shape.intermediate),
       "--max-position", std::to_string(shape.max_position), "--seed", "7"},
      log);
  if (rc != 0) *error = ReadWholeFile(log);
  return rc == 0;
}

// A 2-layer, hidden-32 BERT (ModelShape's defaults).
inline bool MakeTinyModel(const std::string& model_bin, const std::string& out,
                          std::string* error) {
  return MakeModel(model_bin, out, ModelShape{}, error);
}

// Writes a 32-line two-class JSONL training set ("a great movie" = 1,
// "a dreadful movie" = 0) to `path`, enough for a tiny model's short job.
inline void WriteTinySentimentJsonl(const std::string& path) {
  std::ofstream train(path);
  for (int i = 0; i < 16; ++i) {
    train << "{\"text\": \"a great movie\", \"label\": 1}\n";
    train << "{\"text\": \"a dreadful movie\", \"label\": 0}\n";
  }
}

class ServerProcess {
 public:
  // `dir` holds the port file and logs; `flags` are passed after --listen
  // and --port_file.
  ServerProcess(std::string binary, std::string dir)
      : binary_(std::move(binary)), dir_(std::move(dir)) {}
  ~ServerProcess() { Kill(); }

  // Starts the server; false (with the log in *error) when it exited or did
  // not write its port within 60 s. stdout goes to log(), stderr to
  // stderr_log() (appending, so restarts keep the history unless
  // truncate_logs).
  bool Start(const std::vector<std::string>& flags, std::string* error,
             bool truncate_logs = false) {
    const std::string port_file = dir_ + "/server.port";
    std::filesystem::remove(port_file);
    if (truncate_logs) {
      std::ofstream truncate_out(log(), std::ios::trunc);
      std::ofstream truncate_err(stderr_log(), std::ios::trunc);
    }
    pid_ = fork();
    if (pid_ == 0) {
      FILE* out = std::freopen(log().c_str(), "a", stdout);
      FILE* err = std::freopen(stderr_log().c_str(), "a", stderr);
      (void)out;
      (void)err;
      std::vector<std::string> args = {binary_, "--listen=127.0.0.1:0", "--port_file=" + port_file};
      args.insert(args.end(), flags.begin(), flags.end());
      std::vector<char*> argv;
      for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    std::string port;
    while (std::chrono::steady_clock::now() < deadline) {
      port = ReadWholeFile(port_file);
      if (!port.empty()) break;
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = 0;
        *error = "server exited:\n" + ReadWholeFile(log()) + ReadWholeFile(stderr_log());
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    while (!port.empty() && port.back() == '\n') port.pop_back();
    if (port.empty()) {
      *error = "server did not start:\n" + ReadWholeFile(log()) + ReadWholeFile(stderr_log());
      return false;
    }
    port_ = std::stoi(port);
    return true;
  }

  std::shared_ptr<grpc::Channel> Channel(
      const grpc::ChannelArguments& args = grpc::ChannelArguments()) const {
    return grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(port_),
                                     grpc::InsecureChannelCredentials(), args);
  }

  // SIGTERM and wait up to `timeout`; true when it exited 0.
  bool Stop(std::chrono::seconds timeout = std::chrono::seconds(30)) {
    if (pid_ <= 0) return true;
    kill(pid_, SIGTERM);
    int status = 0;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    pid_t done = 0;
    while ((done = waitpid(pid_, &status, WNOHANG)) == 0 &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (done == 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, &status, 0);
    }
    pid_ = 0;
    return done != 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
  }

  // SIGKILL: no drain, no checkpoint, nothing flushed.
  void Kill() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = 0;
  }

  pid_t pid() const { return pid_; }
  int port() const { return port_; }
  std::string log() const { return dir_ + "/server.stdout.log"; }
  std::string stderr_log() const { return dir_ + "/server.stderr.log"; }
  std::string Logs() const { return ReadWholeFile(log()) + ReadWholeFile(stderr_log()); }

  // VmRSS of the process in KiB (-1 if unknown).
  long RssKiB() const {
    std::ifstream status("/proc/" + std::to_string(pid_) + "/status");
    std::string line;
    while (std::getline(status, line)) {
      if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
    }
    return -1;
  }

 private:
  const std::string binary_;
  const std::string dir_;
  pid_t pid_ = 0;
  int port_ = 0;
};

}  // namespace freezetune::testing

#endif  // FREEZETUNE_TESTS_INTEGRATION_SERVER_PROCESS_H_
