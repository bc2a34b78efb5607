// The CLI's argv parser: `freezetune [global flags] COMMAND [flags] [args]`.
//
// Flags are `--name value`, `--name=value`, or bare `--name` for booleans;
// `-f` and `-h` are short for `--file` and `--help`; `-o FORMAT` (also
// `-o=FORMAT`, `-oFORMAT`) picks the output; `--` ends the flags.
// Flags may come before or after the command word. Every flag must be
// declared in kFlags, and each command accepts only the flags it lists, so a
// typo is an error instead of a silently ignored option.
//
// Pure functions of their input; no I/O.
#ifndef FREEZETUNE_CLIENT_SRC_CLI_ARGS_H_
#define FREEZETUNE_CLIENT_SRC_CLI_ARGS_H_

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace freezetune::cli {

struct FlagDef {
  const char* name;        // without the leading "--"
  const char* value_name;  // nullptr: a boolean flag
  bool repeatable;
  const char* help;
};

struct CommandDef {
  const char* name;
  const char* args;  // positional arguments, for usage text
  const char* summary;
  std::vector<std::string> flags;  // accepted besides the global flags
  std::vector<std::string> examples;  // shown by `freezetune help COMMAND`
};

// Every flag the CLI knows, and which are global (valid for any command).
const std::vector<FlagDef>& AllFlags();
const std::vector<std::string>& GlobalFlags();
const std::vector<CommandDef>& Commands();
const CommandDef* FindCommand(absl::string_view name);

class ParsedArgs {
 public:
  std::string command;  // empty when none was given
  std::vector<std::string> positional;
  // In command-line order; booleans carry "true" (or the =value given).
  std::vector<std::pair<std::string, std::string>> flags;

  bool Has(absl::string_view name) const;
  // The last value given for `name`.
  std::optional<std::string> Get(absl::string_view name) const;
  std::vector<std::string> GetAll(absl::string_view name) const;
  // A boolean flag: true when given bare or as =true/=1/=yes.
  bool Bool(absl::string_view name) const;
};

// Parses argv (without argv[0]). INVALID_ARGUMENT names the offending flag:
// unknown flag, missing value, a non-repeatable flag given twice, or a flag
// the command does not take.
absl::StatusOr<ParsedArgs> ParseArgs(const std::vector<std::string>& argv);

// `freezetune help` text, or one command's usage (flags with their
// defaults, and examples) when `command` is set.
std::string UsageText(absl::string_view command = "");

// "; did you mean '--epochs'?" for the candidate closest to `input` (small
// edit distance, or the only candidate it is a prefix of), with `prefix`
// before it; "" when none is close.
std::string DidYouMean(absl::string_view input, const std::vector<std::string>& candidates,
                       absl::string_view prefix);

// `freezetune completion bash`: a bash completion script for the commands
// and flags above (and the values of -o, --state, --freeze, ...).
std::string BashCompletion();

}  // namespace freezetune::cli

#endif  // FREEZETUNE_CLIENT_SRC_CLI_ARGS_H_
