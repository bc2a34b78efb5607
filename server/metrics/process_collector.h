// The standard process_* series (as the Go and Python Prometheus clients
// export them), read from /proc/self on every scrape: prometheus-cpp has no
// process collector.
//
//   process_cpu_seconds_total        user + system CPU time
//   process_resident_memory_bytes    resident set size
//   process_virtual_memory_bytes     virtual memory size
//   process_open_fds                 open file descriptors
//   process_max_fds                  the soft RLIMIT_NOFILE
//   process_start_time_seconds       start time, Unix seconds
//   process_threads                  threads (the kernel's num_threads)
//
// A value that cannot be read is left out of that scrape.
//
// Thread safety: Collect() may run on any thread; the object holds no state
// after construction.
#ifndef FREEZETUNE_SERVER_METRICS_PROCESS_COLLECTOR_H_
#define FREEZETUNE_SERVER_METRICS_PROCESS_COLLECTOR_H_

#include <string>
#include <vector>

#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"

namespace freezetune::metrics {

class ProcessCollector final : public prometheus::Collectable {
 public:
  // `proc_dir` is /proc/self; tests may point it elsewhere.
  explicit ProcessCollector(std::string proc_dir = "/proc/self");
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const std::string proc_dir_;
};

// Fields of a /proc/<pid>/stat line (see proc(5)), in base units; false when
// the line does not parse. `ticks_per_second` and `boot_time` (Unix seconds)
// convert utime/stime and starttime; `page_size` converts rss.
struct ProcStat {
  double cpu_seconds = 0;
  double start_time_seconds = 0;
  double virtual_bytes = 0;
  double resident_bytes = 0;
  double threads = 0;
};
bool ParseProcStat(const std::string& line, double ticks_per_second, double boot_time,
                   double page_size, ProcStat* out);

}  // namespace freezetune::metrics

#endif  // FREEZETUNE_SERVER_METRICS_PROCESS_COLLECTOR_H_
