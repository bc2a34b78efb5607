#include "server/metrics/process_collector.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"

namespace freezetune::metrics {
namespace {

prometheus::MetricFamily Family(const char* name, const char* help, prometheus::MetricType type,
                                double value) {
  prometheus::MetricFamily family;
  family.name = name;
  family.help = help;
  family.type = type;
  prometheus::ClientMetric metric;
  if (type == prometheus::MetricType::Counter) {
    metric.counter.value = value;
  } else {
    metric.gauge.value = value;
  }
  family.metric.push_back(std::move(metric));
  return family;
}

// "btime" of /proc/stat: boot time in Unix seconds; 0 if unknown.
double BootTime() {
  std::ifstream in("/proc/stat");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("btime ", 0) == 0) {
      double value = 0;
      if (absl::SimpleAtod(line.substr(6), &value)) return value;
    }
  }
  return 0;
}

}  // namespace

bool ParseProcStat(const std::string& line, double ticks_per_second, double boot_time,
                   double page_size, ProcStat* out) {
  // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so
  // the fields start after the last ')'.
  const size_t close = line.rfind(')');
  if (close == std::string::npos || ticks_per_second <= 0) return false;
  std::vector<std::string> f =
      absl::StrSplit(line.substr(close + 1), ' ', absl::SkipWhitespace());
  // f[0] is field 3 (state); field N is f[N - 3].
  auto field = [&f](int n, double* value) {
    const size_t i = static_cast<size_t>(n - 3);
    return i < f.size() && absl::SimpleAtod(f[i], value);
  };
  double utime, stime, threads, starttime, vsize, rss;
  if (!field(14, &utime) || !field(15, &stime) || !field(20, &threads) ||
      !field(22, &starttime) || !field(23, &vsize) || !field(24, &rss)) {
    return false;
  }
  out->cpu_seconds = (utime + stime) / ticks_per_second;
  out->start_time_seconds = boot_time + starttime / ticks_per_second;
  out->virtual_bytes = vsize;
  out->resident_bytes = rss * page_size;
  out->threads = threads;
  return true;
}

ProcessCollector::ProcessCollector(std::string proc_dir) : proc_dir_(std::move(proc_dir)) {}

std::vector<prometheus::MetricFamily> ProcessCollector::Collect() const {
  using prometheus::MetricType;
  std::vector<prometheus::MetricFamily> families;
  std::ifstream stat_file(proc_dir_ + "/stat");
  std::string line;
  ProcStat stat;
  if (std::getline(stat_file, line) &&
      ParseProcStat(line, static_cast<double>(::sysconf(_SC_CLK_TCK)), BootTime(),
                    static_cast<double>(::sysconf(_SC_PAGESIZE)), &stat)) {
    families.push_back(Family("process_cpu_seconds_total",
                              "Total user and system CPU time spent in seconds.",
                              MetricType::Counter, stat.cpu_seconds));
    families.push_back(Family("process_resident_memory_bytes", "Resident memory size in bytes.",
                              MetricType::Gauge, stat.resident_bytes));
    families.push_back(Family("process_virtual_memory_bytes", "Virtual memory size in bytes.",
                              MetricType::Gauge, stat.virtual_bytes));
    families.push_back(Family("process_start_time_seconds",
                              "Start time of the process since unix epoch in seconds.",
                              MetricType::Gauge, stat.start_time_seconds));
    families.push_back(Family("process_threads", "Number of OS threads in the process.",
                              MetricType::Gauge, stat.threads));
  }
  if (DIR* dir = ::opendir((proc_dir_ + "/fd").c_str())) {
    // The directory stream's own descriptor is not counted.
    const std::string own = std::to_string(::dirfd(dir));
    double open = 0;
    while (const dirent* entry = ::readdir(dir)) {
      if (entry->d_name[0] != '.' && own != entry->d_name) ++open;
    }
    ::closedir(dir);
    families.push_back(Family("process_open_fds", "Number of open file descriptors.",
                              MetricType::Gauge, open));
  }
  rlimit limit;
  if (::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY) {
    families.push_back(Family("process_max_fds", "Maximum number of open file descriptors.",
                              MetricType::Gauge, static_cast<double>(limit.rlim_cur)));
  }
  return families;
}

}  // namespace freezetune::metrics
