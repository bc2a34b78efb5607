// The data-parallel launcher (see data_parallel_launcher.h).
#include "server/train/data_parallel_launcher.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/train/prefix_store.h"
#include "server/train/worker_protocol.h"

extern char** environ;

namespace freezetune::train {
namespace {

using Clock = std::chrono::steady_clock;

struct Rank {
  int index = 0;
  pid_t pid = -1;
  int report_fd = -1;   // read end of the rank's fd 3
  int control_fd = -1;  // our end of its stdin
  WorkerFrameReader reader;
  std::optional<absl::Status> status;  // its final 'S' frame
  bool exited = false;
  int wait_status = 0;
  bool eof = false;
  // Still running when rank 0 had failed: killed by us, so not the cause
  // of its own end but the one that stopped answering.
  bool unresponsive = false;
};

std::string HowItEnded(int wait_status) {
  if (WIFSIGNALED(wait_status)) {
    return absl::StrCat("was killed by signal ", WTERMSIG(wait_status), " (",
                        strsignal(WTERMSIG(wait_status)), ")");
  }
  if (WIFEXITED(wait_status)) return absl::StrCat("exited with status ", WEXITSTATUS(wait_status));
  return "ended";
}

absl::Status Errno(const std::string& what) {
  return absl::InternalError(absl::StrCat("data-parallel: ", what, ": ", std::strerror(errno)));
}

// Starts one rank: stdin is `control` (a socket: writing to a dead rank
// cannot SIGPIPE the server), fd 3 is `report`, own process group.
absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& argv, int control, int report) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, control, 0);
  posix_spawn_file_actions_adddup2(&actions, report, kWorkerReportFd);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attr, 0);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, args[0], &actions, &attr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    errno = rc;
    return Errno(absl::StrCat("starting ", argv[0]));
  }
  return pid;
}

}  // namespace

std::string DefaultWorkerBinary() {
  std::error_code ec;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return "freezetune-worker";
  return (self.parent_path() / "freezetune-worker").string();
}

absl::StatusOr<v1::JobResult> RunDataParallel(const v1::FineTuneJob& job,
                                              const RunContext& context) {
  const int n = job.resources().data_parallel();
  const std::string binary =
      context.worker_binary.empty() ? DefaultWorkerBinary() : context.worker_binary;
  if (::access(binary.c_str(), X_OK) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "data-parallel: the worker program ", binary, " is missing or not executable"));
  }
  std::vector<std::string> devices = context.devices;
  if (devices.empty()) devices.assign(static_cast<size_t>(n), context.device.empty() ? "cpu" : context.device);
  if (static_cast<int>(devices.size()) != n) {
    return absl::InternalError(absl::StrCat("data-parallel: ", n, " ranks but ", devices.size(),
                                            " devices"));
  }

  // The rendezvous, for the job's lifetime.
  c10::intrusive_ptr<c10d::TCPStore> store;
  try {
    c10d::TCPStoreOptions options;
    options.port = 0;
    options.isServer = true;
    options.waitWorkers = false;
    options.timeout = std::chrono::milliseconds(context.data_parallel_timeout_ms);
    store = c10::make_intrusive<c10d::TCPStore>("127.0.0.1", options);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("data-parallel: starting the TCPStore: ", e.what()));
  }

  WorkerTask task;
  task.job = job;
  task.job_id = context.job_id;
  task.output_dir = context.output_dir;
  task.checkpoint_dir = context.checkpoint_dir;
  task.devices = devices;
  task.uris = context.uris;
  task.limits = context.limits;
  task.prefix_cache_bytes = context.prefix_store ? context.prefix_store->max_bytes() : 0;
  const int threads = context.intra_op_threads ? context.intra_op_threads() : 0;
  task.threads = threads > 0 ? threads : 0;  // per rank
  task.timeout_ms = context.data_parallel_timeout_ms;
  task.store_port = store->getPort();
  char path[] = "/tmp/freezetune-worker-task-XXXXXX";
  const int task_fd = ::mkstemp(path);
  if (task_fd < 0) return Errno("creating the task file");
  const std::string task_path = path;
  absl::Cleanup remove_task = [&] { ::unlink(task_path.c_str()); };
  {
    const std::string text = SerializeWorkerTask(task);
    const bool written = ::write(task_fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
    ::close(task_fd);
    if (!written) return Errno("writing the task file");
  }

  std::vector<Rank> ranks(static_cast<size_t>(n));
  auto kill_all = [&] {
    for (Rank& r : ranks) {
      if (r.pid > 0 && !r.exited) ::kill(-r.pid, SIGKILL);
    }
  };
  absl::Cleanup cleanup = [&] {
    kill_all();
    for (Rank& r : ranks) {
      if (r.pid > 0 && !r.exited) ::waitpid(r.pid, &r.wait_status, 0);
      if (r.report_fd >= 0) ::close(r.report_fd);
      if (r.control_fd >= 0) ::close(r.control_fd);
    }
  };
  std::vector<std::string> pids;
  for (int i = 0; i < n; ++i) {
    Rank& r = ranks[static_cast<size_t>(i)];
    r.index = i;
    int report[2], control[2];
    if (::pipe2(report, O_CLOEXEC) != 0) return Errno("pipe");
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, control) != 0) {
      ::close(report[0]);
      ::close(report[1]);
      return Errno("socketpair");
    }
    absl::StatusOr<pid_t> pid =
        Spawn({binary, "--task", task_path, "--rank", std::to_string(i), "--world_size",
               std::to_string(n)},
              control[1], report[1]);
    ::close(report[1]);
    ::close(control[1]);
    r.report_fd = report[0];
    r.control_fd = control[0];
    if (!pid.ok()) return pid.status();
    r.pid = *pid;
    pids.push_back(std::to_string(r.pid));
  }
  if (context.emit) {
    v1::JobEvent event;
    event.mutable_notice()->set_message(absl::StrCat(
        "data-parallel: ", n, " ranks (pids ", absl::StrJoin(pids, ", "), ") on ",
        absl::StrJoin(devices, ", "), ", c10d Gloo, rendezvous 127.0.0.1:", task.store_port,
        ", timeout ", context.data_parallel_timeout_ms / 1000, " s"));
    context.emit(std::move(event));
  }

  std::optional<v1::JobResult> result;
  std::optional<absl::Status> failure;  // a rank that died without a status
  bool stop_sent = false;
  std::optional<Clock::time_point> rank0_done;
  while (true) {
    std::vector<pollfd> fds;
    std::vector<Rank*> polled;
    for (Rank& r : ranks) {
      if (r.eof) continue;
      fds.push_back({r.report_fd, POLLIN, 0});
      polled.push_back(&r);
    }
    if (!fds.empty()) ::poll(fds.data(), fds.size(), 100);
    for (size_t k = 0; k < fds.size(); ++k) {
      if ((fds[k].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      Rank& r = *polled[k];
      char buf[65536];
      const ssize_t got = ::read(r.report_fd, buf, sizeof(buf));
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) {
        r.eof = true;
        continue;
      }
      r.reader.Append(buf, static_cast<size_t>(got));
      while (std::optional<WorkerFrame> frame = r.reader.Next()) {
        if (frame->type == 'S') {
          r.status = DecodeStatus(frame->payload);
        } else if (frame->type == 'E' && r.index == 0 && context.emit) {
          v1::JobEvent event;
          if (event.ParseFromString(frame->payload)) context.emit(std::move(event));
        } else if (frame->type == 'R' && r.index == 0) {
          v1::JobResult parsed;
          if (parsed.ParseFromString(frame->payload)) result = std::move(parsed);
        }
      }
    }
    if (!stop_sent && context.should_stop && context.should_stop()) {
      for (Rank& r : ranks) (void)::send(r.control_fd, "s", 1, MSG_NOSIGNAL);
      stop_sent = true;
    }
    for (Rank& r : ranks) {
      if (r.exited) continue;
      if (::waitpid(r.pid, &r.wait_status, WNOHANG) == r.pid) r.exited = true;
    }
    // A rank gone without a final status failed the job: stop the rest now.
    for (Rank& r : ranks) {
      if (!r.exited || !r.eof || r.status.has_value() || failure.has_value()) continue;
      // Rank 0 may already have decided (e.g. cancelled); then the others
      // dying after it is expected.
      if (ranks[0].status.has_value()) continue;
      failure = absl::UnavailableError(
          absl::StrCat("data-parallel rank ", r.index, " (pid ", r.pid, ") ",
                       HowItEnded(r.wait_status), " without reporting; the job's other ",
                       n - 1, " ranks were stopped"));
      kill_all();
    }
    const bool all_done = std::all_of(ranks.begin(), ranks.end(),
                                      [](const Rank& r) { return r.exited && r.eof; });
    if (all_done) break;
    if (failure.has_value()) continue;  // reap the killed ranks
    // Once rank 0 has finished, the others follow within moments: after a
    // success they are at the same point; after a failure their next
    // collective fails at once, unless the rank hangs (which is likely what
    // failed rank 0). Wait the c10d timeout after a success, 2 s after a
    // failure; then kill what is left.
    if (ranks[0].exited && ranks[0].eof && !rank0_done) rank0_done = Clock::now();
    const bool rank0_ok = ranks[0].status.has_value() && ranks[0].status->ok();
    const auto grace = rank0_ok ? std::chrono::milliseconds(context.data_parallel_timeout_ms)
                                : std::chrono::milliseconds(2000);
    if (rank0_done && Clock::now() - *rank0_done > grace) {
      for (Rank& r : ranks) r.unresponsive = !r.exited;
      kill_all();
    }
  }

  if (failure.has_value()) return *failure;
  // A rank that died without reporting is the cause even when rank 0 saw
  // it first (as a broken connection) and reported that.
  const Rank* dead = nullptr;
  const Rank* hung = nullptr;
  for (const Rank& r : ranks) {
    if (r.unresponsive && hung == nullptr) hung = &r;
    if (!r.unresponsive && !r.status.has_value() && (dead == nullptr || r.index != 0)) dead = &r;
  }
  const absl::Status rank0 = ranks[0].status.value_or(absl::UnavailableError("no status"));
  if (hung != nullptr && !rank0.ok() && !absl::IsCancelled(rank0)) {
    return absl::UnavailableError(absl::StrCat(
        "data-parallel rank ", hung->index, " (pid ", hung->pid,
        ") stopped answering and was killed; rank 0: ", rank0.message(), " (c10d timeout ",
        context.data_parallel_timeout_ms / 1000, " s)"));
  }
  if (dead != nullptr && !rank0.ok() && !absl::IsCancelled(rank0)) {
    return absl::UnavailableError(absl::StrCat(
        "data-parallel rank ", dead->index, " (pid ", dead->pid, ") ",
        HowItEnded(dead->wait_status), " without reporting; rank 0: ", rank0.message()));
  }
  if (!rank0.ok()) {
    std::string message = absl::StrCat("data-parallel rank 0: ", rank0.message());
    if (absl::StrContains(rank0.message(), "timed out")) {
      absl::StrAppend(&message, " (a rank did not answer within the c10d timeout of ",
                      context.data_parallel_timeout_ms / 1000, " s)");
    }
    return absl::Status(rank0.code(), message);
  }
  // Rank 0 succeeded; every other rank must have too (they took the same
  // steps), or the job failed.
  for (const Rank& r : ranks) {
    const absl::Status st = r.status.value_or(absl::UnavailableError(HowItEnded(r.wait_status)));
    if (!st.ok()) {
      return absl::Status(st.code(), absl::StrCat("data-parallel rank ", r.index, ": ", st.message()));
    }
  }
  if (!result.has_value()) return absl::InternalError("data-parallel rank 0 sent no result");
  return *result;
}

}  // namespace freezetune::train
