// freezetune-worker: one rank of a data-parallel job. Started only by the
// server's data-parallel launcher (server/train/data_parallel_launcher.h),
// never by hand:
//
//   freezetune-worker --task FILE --rank R --world_size N
//       [--store_host H --store_port P] [--store_rank R] [--gloo_hostname A]
//       [--report HOST:PORT]
//
// Reads the task (worker_protocol.h), joins the c10d process group through
// the launcher's TCPStore, trains its shard with train::RunFineTune, and
// reports on fd 3: rank 0 its events and result, every rank its final
// status. The optional flags are for ranks on several machines
// (deploy/README.md, "Multi-node data-parallel training"): the store's
// address (overriding the task's), which rank hosts the store (every pod
// of an Indexed Job gets the same arguments; without the flag the launcher
// hosts it), the
// address Gloo uses for this rank, and a TCP address to send the reports to
// instead of fd 3. Its stdin (with --report, that socket) is the stop
// channel: a byte, or end of file (the server went away), stops it at the
// next step boundary. It dies with its parent (PR_SET_PDEATHSIG). Exit status 0 when the run succeeded, 1
// when it failed (the status says why), 2 for a usage error.
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <torch/torch.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server/train/c10d_sync.h"
#include "server/train/fine_tune.h"
#include "server/train/prefix_store.h"
#include "server/train/worker_protocol.h"

namespace ft = freezetune;

namespace {

[[noreturn]] void Usage(const std::string& why) {
  std::fprintf(stderr, "freezetune-worker: %s\nusage: freezetune-worker --task FILE --rank R "
               "--world_size N (started by freezetune-server)\n", why.c_str());
  std::exit(2);
}

// Where stop requests arrive: stdin, or the --report socket.
int stop_fd = 0;

// True once the launcher wrote to the stop channel or closed it.
bool StopRequested() {
  static std::atomic<bool> stopped{false};
  if (stopped.load()) return true;
  pollfd fd{stop_fd, POLLIN, 0};
  if (::poll(&fd, 1, 0) > 0 && (fd.revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
    stopped.store(true);
  }
  return stopped.load();
}

// Connects fd 3 to HOST:PORT (retrying for up to `timeout_ms`, as the
// receiver may start after the ranks).
bool ConnectReport(const std::string& address, int64_t timeout_ms) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos) return false;
  const std::string host = address.substr(0, colon), port = address.substr(colon + 1);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    if (::getaddrinfo(host.c_str(), port.c_str(), &hints, &found) == 0) {
      for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
        const int fd = ::socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (fd < 0) continue;
        if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
          ::freeaddrinfo(found);
          if (fd != ft::train::kWorkerReportFd) {
            ::dup2(fd, ft::train::kWorkerReportFd);
            ::close(fd);
          }
          return true;
        }
        ::close(fd);
      }
      ::freeaddrinfo(found);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return false;
}

int Report(const absl::Status& status) {
  (void)ft::train::WriteWorkerFrame(ft::train::kWorkerReportFd, 'S', ft::train::EncodeStatus(status));
  return status.ok() ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  // Die with the server: a worker must never outlive the job's supervisor.
  const pid_t parent = ::getppid();
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) return 1;

  std::string task_path, store_host, gloo_hostname, report;
  int rank = -1, world = -1, store_port = -1, store_rank = -1;
  // "--flag value" or "--flag=value" (as Kubernetes manifests write them).
  std::vector<std::pair<std::string, std::string>> flags;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const size_t eq = arg.find('=');
    if (eq != std::string::npos) {
      flags.emplace_back(arg.substr(0, eq), arg.substr(eq + 1));
    } else if (i + 1 < argc) {
      flags.emplace_back(arg, argv[++i]);
    } else {
      Usage("missing value for " + arg);
    }
  }
  for (const auto& [flag, value] : flags) {
    if (flag == "--task") {
      task_path = value;
    } else if (flag == "--store_host") {
      store_host = value;
    } else if (flag == "--store_port") {
      if (!absl::SimpleAtoi(value, &store_port) || store_port <= 0 || store_port > 65535) {
        Usage("bad --store_port");
      }
    } else if (flag == "--store_rank") {
      if (!absl::SimpleAtoi(value, &store_rank) || store_rank < 0) Usage("bad --store_rank");
    } else if (flag == "--gloo_hostname") {
      gloo_hostname = value;
    } else if (flag == "--report") {
      report = value;
    } else if (flag == "--rank") {
      if (!absl::SimpleAtoi(value, &rank)) Usage("bad --rank");
    } else if (flag == "--world_size") {
      if (!absl::SimpleAtoi(value, &world)) Usage("bad --world_size");
    } else {
      Usage("unknown flag " + flag);
    }
  }
  if (task_path.empty() || rank < 0 || world < 1 || rank >= world) {
    Usage("--task, --rank and --world_size are required");
  }
  std::ifstream in(task_path);
  std::stringstream text;
  text << in.rdbuf();
  absl::StatusOr<ft::train::WorkerTask> task = ft::train::ParseWorkerTask(text.str());
  if (!report.empty()) {
    if (!ConnectReport(report, task.ok() ? task->timeout_ms : 60000)) {
      std::fprintf(stderr, "freezetune-worker: cannot connect --report %s\n", report.c_str());
      return 1;
    }
    stop_fd = ft::train::kWorkerReportFd;  // the receiver's bytes (or close) stop the run
  }
  if (!task.ok()) return Report(task.status());
  if (!store_host.empty()) task->store_host = store_host;
  if (store_port > 0) task->store_port = store_port;
  if (static_cast<int>(task->devices.size()) != world) {
    return Report(absl::InvalidArgumentError("worker task: one device per rank expected"));
  }
  if (task->threads > 0) at::set_num_threads(task->threads);

  ft::train::C10dSyncOptions sync_options;
  sync_options.store_host = task->store_host;
  sync_options.store_port = task->store_port;
  sync_options.host_store = store_rank == rank;
  if (!gloo_hostname.empty()) sync_options.gloo_hostname = gloo_hostname;
  sync_options.rank = rank;
  sync_options.world_size = world;
  sync_options.timeout = std::chrono::milliseconds(task->timeout_ms);
  absl::StatusOr<std::unique_ptr<ft::train::GradientSync>> sync =
      ft::train::ConnectC10dSync(sync_options);
  if (!sync.ok()) return Report(sync.status());

  ft::train::RunContext context;
  context.job_id = task->job_id;
  context.output_dir = task->output_dir;
  context.checkpoint_dir = task->checkpoint_dir;
  context.device = task->devices[static_cast<size_t>(rank)];
  context.uris = task->uris;
  context.limits = task->limits;
  context.sync = std::move(*sync);
  context.prefix_store = std::make_shared<ft::train::PrefixStore>(task->prefix_cache_bytes);
  context.should_stop = [] { return StopRequested(); };
  if (rank == 0) {
    context.emit = [](ft::v1::JobEvent event) {
      (void)ft::train::WriteWorkerFrame(ft::train::kWorkerReportFd, 'E', event.SerializeAsString());
    };
  }
  absl::StatusOr<ft::v1::JobResult> result = ft::train::RunFineTune(task->job, context);
  if (result.ok() && rank == 0) {
    (void)ft::train::WriteWorkerFrame(ft::train::kWorkerReportFd, 'R', result->SerializeAsString());
  }
  return Report(result.status());
}
