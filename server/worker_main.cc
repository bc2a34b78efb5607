// freezetune-worker: one rank of a data-parallel job. Started only by the
// server's data-parallel launcher (server/train/data_parallel_launcher.h),
// never by hand:
//
//   freezetune-worker --task FILE --rank R --world_size N
//
// Reads the task (worker_protocol.h), joins the c10d process group through
// the launcher's TCPStore, trains its shard with train::RunFineTune, and
// reports on fd 3: rank 0 its events and result, every rank its final
// status. Its stdin is the launcher's stop channel: a byte, or end of file
// (the server went away), stops it at the next step boundary. It dies with
// the server (PR_SET_PDEATHSIG). Exit status 0 when the run succeeded, 1
// when it failed (the status says why), 2 for a usage error.
#include <poll.h>
#include <signal.h>
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

// True once the launcher wrote to stdin or closed it.
bool StopRequested() {
  static std::atomic<bool> stopped{false};
  if (stopped.load()) return true;
  pollfd fd{0, POLLIN, 0};
  if (::poll(&fd, 1, 0) > 0 && (fd.revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
    stopped.store(true);
  }
  return stopped.load();
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

  std::string task_path;
  int rank = -1, world = -1;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--task") {
      task_path = value;
    } else if (flag == "--rank") {
      if (!absl::SimpleAtoi(value, &rank)) Usage("bad --rank");
    } else if (flag == "--world_size") {
      if (!absl::SimpleAtoi(value, &world)) Usage("bad --world_size");
    } else {
      Usage("unknown flag " + flag);
    }
  }
  if (argc % 2 != 1 || task_path.empty() || rank < 0 || world < 1 || rank >= world) {
    Usage("--task, --rank and --world_size are required");
  }
  std::ifstream in(task_path);
  std::stringstream text;
  text << in.rdbuf();
  absl::StatusOr<ft::train::WorkerTask> task = ft::train::ParseWorkerTask(text.str());
  if (!task.ok()) return Report(task.status());
  if (static_cast<int>(task->devices.size()) != world) {
    return Report(absl::InvalidArgumentError("worker task: one device per rank expected"));
  }
  if (task->threads > 0) at::set_num_threads(task->threads);

  ft::train::C10dSyncOptions sync_options;
  sync_options.store_host = task->store_host;
  sync_options.store_port = task->store_port;
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
