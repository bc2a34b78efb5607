// The metrics endpoint's own parts (issue 14 item 7): the process_* series
// read from /proc/self, and the optional bearer token on /metrics, through a
// real socket.
#include "server/metrics/metrics.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <ctime>
#include <filesystem>
#include <string>

#include "gtest/gtest.h"
#include "prometheus/text_serializer.h"
#include "server/metrics/http_exposer.h"
#include "server/metrics/process_collector.h"

namespace freezetune::metrics {
namespace {

double Value(const std::vector<prometheus::MetricFamily>& families, const std::string& name) {
  for (const auto& f : families) {
    if (f.name != name || f.metric.empty()) continue;
    return f.type == prometheus::MetricType::Counter ? f.metric[0].counter.value
                                                     : f.metric[0].gauge.value;
  }
  ADD_FAILURE() << name << " missing";
  return -1;
}

TEST(ProcessCollectorTest, ReportsThisProcess) {
  ProcessCollector collector;
  auto before = collector.Collect();
  EXPECT_GT(Value(before, "process_resident_memory_bytes"), 1 << 20);
  EXPECT_GE(Value(before, "process_virtual_memory_bytes"),
            Value(before, "process_resident_memory_bytes"));
  EXPECT_GE(Value(before, "process_threads"), 1);
  EXPECT_GT(Value(before, "process_max_fds"), 0);
  const double start = Value(before, "process_start_time_seconds");
  const double now = static_cast<double>(std::time(nullptr));
  EXPECT_LE(start, now + 1);
  EXPECT_GT(start, now - 3600);  // the test started less than an hour ago
  // Open descriptors are counted, and move when one is opened; CPU time
  // grows with work.
  const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  volatile double spin = 0;
  for (int i = 0; i < 100'000'000; ++i) spin = spin + i;
  auto after = collector.Collect();
  ::close(fd);
  EXPECT_EQ(Value(after, "process_open_fds"), Value(before, "process_open_fds") + 1);
  EXPECT_GT(Value(after, "process_cpu_seconds_total"), Value(before, "process_cpu_seconds_total"));
  // Names and types pass the text format as Prometheus expects them.
  const std::string text = prometheus::TextSerializer().Serialize(after);
  EXPECT_NE(text.find("# TYPE process_cpu_seconds_total counter"), std::string::npos) << text;
  EXPECT_NE(text.find("# TYPE process_open_fds gauge"), std::string::npos);
}

TEST(ProcessCollectorTest, ParsesStatLinesWhoseCommandHoldsSpacesAndParens) {
  // Fields 14/15 utime/stime, 20 threads, 22 starttime, 23 vsize, 24 rss.
  const std::string line =
      "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 150 0 0 20 0 7 0 1000 8192000 300 "
      "18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
  ProcStat stat;
  ASSERT_TRUE(ParseProcStat(line, 100, 1'700'000'000, 4096, &stat));
  EXPECT_DOUBLE_EQ(stat.cpu_seconds, 4.0);
  EXPECT_DOUBLE_EQ(stat.threads, 7);
  EXPECT_DOUBLE_EQ(stat.start_time_seconds, 1'700'000'010);
  EXPECT_DOUBLE_EQ(stat.virtual_bytes, 8192000);
  EXPECT_DOUBLE_EQ(stat.resident_bytes, 300 * 4096);
  EXPECT_FALSE(ParseProcStat("42 (x) S 1 2", 100, 0, 4096, &stat));
  EXPECT_FALSE(ParseProcStat("no parenthesis", 100, 0, 4096, &stat));
}

std::string Http(int port, const std::string& request) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return "";
  }
  (void)!::write(fd, request.data(), request.size());
  std::string response;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof(buf))) > 0) response.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return response;
}

TEST(MetricsEndpointTest, BearerTokenGuardsMetrics) {
  MetricsOptions options;
  options.listen_address = "127.0.0.1:0";
  options.bearer_token = "s3cret-metrics-token";
  auto metrics = Metrics::Create(options);
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  std::atomic<int> collects{0};
  (*metrics)->SetCollectHook([&] { collects.fetch_add(1); });
  (*metrics)->TrainProgress("job-000000000001", 0.5, 1e-3, 0.1);
  const int port = (*metrics)->port();
  for (const std::string& auth :
       {std::string(), std::string("Authorization: Bearer wrong\r\n"),
        std::string("Authorization: Bearer s3cret-metrics-token-longer\r\n"),
        std::string("Authorization: Basic czNjcmV0\r\n")}) {
    SCOPED_TRACE(auth);
    const std::string response = Http(port, "GET /metrics HTTP/1.0\r\n" + auth + "\r\n");
    EXPECT_EQ(response.rfind("HTTP/1.0 401", 0), 0u) << response;
    EXPECT_NE(response.find("WWW-Authenticate: Bearer"), std::string::npos);
    EXPECT_EQ(response.find("job-000000000001"), std::string::npos);
  }
  EXPECT_EQ(collects.load(), 0);  // nothing collected for a refused scrape
  const std::string ok = Http(
      port, "GET /metrics HTTP/1.0\r\nauthorization:   Bearer s3cret-metrics-token\r\n\r\n");
  EXPECT_EQ(ok.rfind("HTTP/1.0 200", 0), 0u) << ok;
  EXPECT_NE(ok.find("freezetune_job_train_loss{job_id=\"job-000000000001\"} 0.5"),
            std::string::npos);
  EXPECT_NE(ok.find("process_resident_memory_bytes "), std::string::npos);
  EXPECT_EQ(collects.load(), 1);
  (*metrics)->SetCollectHook(nullptr);
}

TEST(MetricsEndpointTest, WithoutATokenMetricsAreOpen) {
  MetricsOptions options;
  options.listen_address = "127.0.0.1:0";
  auto metrics = Metrics::Create(options);
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  const std::string ok = Http((*metrics)->port(), "GET /metrics HTTP/1.0\r\n\r\n");
  EXPECT_EQ(ok.rfind("HTTP/1.0 200", 0), 0u) << ok;
  EXPECT_NE(ok.find("process_cpu_seconds_total "), std::string::npos);
  EXPECT_NE(ok.find("freezetune_train_steps_total "), std::string::npos);
}

}  // namespace
}  // namespace freezetune::metrics
