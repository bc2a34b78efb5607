// `freezetune`: the command-line client. All logic is in cli_commands.cc;
// this only gathers argv, the environment and whether stdout is a terminal.
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "client/src/cli_commands.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  freezetune::cli::CliEnv env;
  if (const char* s = std::getenv("FREEZETUNE_SERVER")) env.server = s;
  if (const char* t = std::getenv("FREEZETUNE_TOKEN")) env.token = t;
  env.stdout_is_tty = isatty(STDOUT_FILENO) == 1;
  return freezetune::cli::RunCli(args, env, std::cout, std::cerr);
}
