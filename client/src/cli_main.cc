// `freezetune`: the command-line client. All logic is in cli_commands.cc;
// this only gathers argv, the environment and the terminal, keeps gRPC's own
// log lines off the terminal, and turns Ctrl-C during a watch into a
// "detached" message and exit status 130.
#include <fcntl.h>
#include <grpc/support/log.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "client/src/cli_commands.h"

namespace {

// gRPC core logs connection errors on stderr by itself; the CLI reports
// failures in its own one-line form. GRPC_VERBOSITY brings them back.
void DropGrpcLog(gpr_log_func_args*) {}

int TerminalColumns() {
  winsize ws{};
  if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  int columns = 0;
  if (const char* c = std::getenv("COLUMNS"); c && absl::SimpleAtoi(c, &columns)) return columns;
  return 0;
}

// Ctrl-C while following: the handler only writes to a pipe (async-signal
// safe); a thread reads it, prints the message the command supplied and
// exits 130 without unwinding (the main thread is blocked in gRPC).
std::mutex interrupt_mu;
std::function<std::string()> interrupt_message;  // guarded by interrupt_mu
int interrupt_pipe[2] = {-1, -1};

void OnSigint(int) {
  const char byte = 1;
  const int saved = errno;
  [[maybe_unused]] ssize_t n = write(interrupt_pipe[1], &byte, 1);
  errno = saved;
}

void ArmInterrupt(std::function<std::string()> message) {
  std::lock_guard<std::mutex> lock(interrupt_mu);
  const bool first = !interrupt_message;
  interrupt_message = std::move(message);
  if (!first || pipe(interrupt_pipe) != 0) return;
  std::thread([] {
    char byte;
    while (read(interrupt_pipe[0], &byte, 1) < 0 && errno == EINTR) {
    }
    std::string text;
    {
      std::lock_guard<std::mutex> lock(interrupt_mu);
      text = "\nfreezetune: " + interrupt_message() + "\n";
    }
    [[maybe_unused]] ssize_t n = write(STDERR_FILENO, text.data(), text.size());
    _exit(130);
  }).detach();
  struct sigaction sa {};
  sa.sa_handler = OnSigint;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
}

}  // namespace

int main(int argc, char** argv) {
  if (std::getenv("GRPC_VERBOSITY") == nullptr) gpr_set_log_function(DropGrpcLog);
  std::vector<std::string> args(argv + 1, argv + argc);
  freezetune::cli::CliEnv env;
  if (const char* s = std::getenv("FREEZETUNE_SERVER")) env.server = s;
  if (const char* t = std::getenv("FREEZETUNE_TOKEN")) env.token = t;
  env.stdout_is_tty = isatty(STDOUT_FILENO) == 1;
  if (env.stdout_is_tty) env.columns = TerminalColumns();
  env.on_interrupt = ArmInterrupt;
  return freezetune::cli::RunCli(args, env, std::cout, std::cerr);
}
