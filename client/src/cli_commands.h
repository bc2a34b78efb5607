// The `freezetune` CLI's commands: argv in, exit status out. cli_main.cc is a
// thin shell around RunCli so that the whole CLI can also run in-process.
//
// Exit status: 0 when the command succeeded (for `watch` and `submit --watch`:
// when the job SUCCEEDED); 1 when it failed, the job FAILED or was CANCELLED,
// or the server could not be reached, with a one-line reason on `err`
// ("freezetune: job job-abc FAILED: step 12: non-finite loss"); 2 for a usage
// error.
//
// Not thread-safe: one call at a time per set of streams.
#ifndef FREEZETUNE_CLIENT_SRC_CLI_COMMANDS_H_
#define FREEZETUNE_CLIENT_SRC_CLI_COMMANDS_H_

#include <ostream>
#include <string>
#include <vector>

namespace freezetune::cli {

// What the process environment supplies.
struct CliEnv {
  std::string server;  // $FREEZETUNE_SERVER (empty: 127.0.0.1:50051)
  std::string token;   // $FREEZETUNE_TOKEN
  bool stdout_is_tty = false;
};

// `argv` excludes the program name.
int RunCli(const std::vector<std::string>& argv, const CliEnv& env,
           std::ostream& out, std::ostream& err);

}  // namespace freezetune::cli

#endif  // FREEZETUNE_CLIENT_SRC_CLI_COMMANDS_H_
