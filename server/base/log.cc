#include "server/base/log.h"

#include <atomic>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace freezetune::base {
namespace {

std::atomic<LogFormat> g_format{LogFormat::kText};

const char* LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarning:
      return "warning";
    case LogLevel::kError:
      return "error";
  }
  return "info";
}

}  // namespace

void SetLogFormat(LogFormat format) { g_format.store(format); }
LogFormat GetLogFormat() { return g_format.load(); }

std::string JsonQuote(absl::string_view s) {
  std::string out = "\"";
  out.reserve(s.size() + 2);
  for (char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += absl::StrFormat("\\u%04x", static_cast<unsigned char>(c));
        } else {
          out += c;  // UTF-8 passes through; invalid bytes are the caller's
        }
    }
  }
  out += '"';
  return out;
}

std::string FormatLogLine(LogFormat format, LogLevel level, absl::string_view msg,
                          absl::string_view job_id, const LogFields& fields) {
  const std::string time =
      absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", absl::Now(), absl::UTCTimeZone());
  if (format == LogFormat::kJson) {
    std::string line = absl::StrCat("{\"time\":\"", time, "\",\"level\":\"", LevelName(level),
                                    "\",\"msg\":", JsonQuote(msg));
    if (!job_id.empty()) absl::StrAppend(&line, ",\"job_id\":", JsonQuote(job_id));
    for (const auto& [key, value] : fields) {
      absl::StrAppend(&line, ",", JsonQuote(key), ":", JsonQuote(value));
    }
    line += '}';
    return line;
  }
  std::string line = absl::StrCat(std::string(1, LevelName(level)[0] - 'a' + 'A'), " ", time, " ");
  if (!job_id.empty()) absl::StrAppend(&line, job_id, " ");
  absl::StrAppend(&line, msg);
  for (const auto& [key, value] : fields) absl::StrAppend(&line, " ", key, "=", value);
  return line;
}

void Log(LogLevel level, absl::string_view msg, absl::string_view job_id, const LogFields& fields) {
  static absl::Mutex mu(absl::kConstInit);
  std::string line = FormatLogLine(g_format.load(), level, msg, job_id, fields);
  line += '\n';
  absl::MutexLock lock(&mu);
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

}  // namespace freezetune::base
