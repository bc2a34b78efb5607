// The `freezetune` CLI's commands: argv in, exit status out. cli_main.cc is a
// thin shell around RunCli so that the whole CLI can also run in-process.
//
// Exit status: 0 when the command succeeded (for `watch` and `submit --watch`:
// when the job SUCCEEDED); 1 when it failed, the job FAILED or was CANCELLED,
// or the server could not be reached, with a one-line reason on `err`
// ("freezetune: job job-abc FAILED: step 12: non-finite loss"); 2 for a usage
// error; 130 after Ctrl-C while following a job or sweep (it keeps running;
// the message on stderr says how to follow or stop it).
//
// Output: `-o table|json|name|wide` on every command that prints resources;
// the default is a table whether or not stdout is a terminal, except for
// `watch`/`sweep-watch` (and `--watch`), which print JSON lines when stdout
// is not a terminal, and `submit`/`sweep`, which then print the new id.
//
// Not thread-safe: one call at a time per set of streams.
#ifndef FREEZETUNE_CLIENT_SRC_CLI_COMMANDS_H_
#define FREEZETUNE_CLIENT_SRC_CLI_COMMANDS_H_

#include <functional>
#include <ostream>
#include <string>
#include <vector>

namespace freezetune::cli {

// What the process environment supplies.
struct CliEnv {
  std::string server;  // $FREEZETUNE_SERVER (empty: 127.0.0.1:50051)
  std::string token;   // $FREEZETUNE_TOKEN
  bool stdout_is_tty = false;
  int columns = 0;     // terminal width (0: unknown)
  // Called when a command starts following a job or sweep: from then on,
  // Ctrl-C is to print `message()` (called on another thread; it must be
  // thread-safe) on stderr and exit 130. Null: Ctrl-C keeps its default.
  std::function<void(std::function<std::string()> message)> on_interrupt;
};

// `argv` excludes the program name.
int RunCli(const std::vector<std::string>& argv, const CliEnv& env,
           std::ostream& out, std::ostream& err);

}  // namespace freezetune::cli

#endif  // FREEZETUNE_CLIENT_SRC_CLI_COMMANDS_H_
