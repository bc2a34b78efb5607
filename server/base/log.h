// Structured server logging: one line per message on stderr, either text
// ("I 2026-11-26T09:00:00.123456Z job-0123 msg key=value") or, with
// SetLogFormat(kJson), one JSON object per line:
//   {"time":"2026-11-26T09:00:00.123456Z","level":"info","msg":"...",
//    "job_id":"job-0123",<fields>}
// job_id is present exactly when the line concerns a job. Field values are
// strings. Callers must never pass secrets (tokens, keys) as text or fields.
//
// Thread safety: every function may be called from any thread; each line is
// written with one fwrite under a mutex, so lines never interleave.
#ifndef FREEZETUNE_SERVER_BASE_LOG_H_
#define FREEZETUNE_SERVER_BASE_LOG_H_

#include <string>
#include "absl/strings/string_view.h"
#include <utility>
#include <vector>

namespace freezetune::base {

enum class LogFormat { kText, kJson };
enum class LogLevel { kDebug, kInfo, kWarning, kError };

// Process-wide; set once at start (default kText).
void SetLogFormat(LogFormat format);
LogFormat GetLogFormat();

using LogFields = std::vector<std::pair<std::string, std::string>>;

// Writes one line. An empty `job_id` leaves the key out.
void Log(LogLevel level, absl::string_view msg, absl::string_view job_id = {},
         const LogFields& fields = {});

// The line Log() would write, without the trailing newline (for tests).
std::string FormatLogLine(LogFormat format, LogLevel level, absl::string_view msg,
                          absl::string_view job_id, const LogFields& fields);

// `s` as a JSON string literal, quotes included.
std::string JsonQuote(absl::string_view s);

}  // namespace freezetune::base

#endif  // FREEZETUNE_SERVER_BASE_LOG_H_
