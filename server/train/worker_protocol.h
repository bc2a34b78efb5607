// The pipe protocol between the data-parallel launcher (in the server) and
// its freezetune-worker processes, and the task file that tells a worker
// what to run.
//
// Frames, worker -> launcher on the worker's fd 3: one type byte, a 4-byte
// little-endian payload length, the payload:
//   'E'  a serialized v1.JobEvent (rank 0 only), in emission order;
//   'R'  a serialized v1.JobResult (rank 0 only, before a final OK 'S');
//   'S'  the rank's final status: 4-byte little-endian absl::StatusCode,
//        then the message. Sent once, last.
// Launcher -> worker on the worker's stdin: any byte (or end of file, when
// the server goes away) asks the worker to stop at the next step boundary.
//
// Thread safety: the functions keep no state.
#ifndef FREEZETUNE_SERVER_TRAIN_WORKER_PROTOCOL_H_
#define FREEZETUNE_SERVER_TRAIN_WORKER_PROTOCOL_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "freezetune/v1/freezetune.pb.h"
#include "server/train/fine_tune.h"

namespace freezetune::train {

constexpr int kWorkerReportFd = 3;

struct WorkerFrame {
  char type = 0;
  std::string payload;
};

// Blocking write of one frame (retries short writes and EINTR).
absl::Status WriteWorkerFrame(int fd, char type, const std::string& payload);
std::string EncodeStatus(const absl::Status& status);
absl::Status DecodeStatus(const std::string& payload);

// Accumulates bytes read from a worker's pipe and splits them into frames.
class WorkerFrameReader {
 public:
  void Append(const char* data, size_t n) { buffer_.append(data, n); }
  // The next complete frame, or nullopt while incomplete.
  std::optional<WorkerFrame> Next();

 private:
  std::string buffer_;
};

// What a worker runs: the job, the launcher's run context (minus the
// callbacks) and its place in the group.
struct WorkerTask {
  v1::FineTuneJob job;
  std::string job_id;
  std::string output_dir;
  std::string checkpoint_dir;
  std::vector<std::string> devices;  // one per rank
  data::UriOptions uris;
  JobLimits limits;
  int64_t prefix_cache_bytes = 0;
  int threads = 0;  // intra-op threads per rank; 0: LibTorch's default
  int64_t timeout_ms = 300000;
  std::string store_host = "127.0.0.1";
  int store_port = 0;
};

std::string SerializeWorkerTask(const WorkerTask& task);
absl::StatusOr<WorkerTask> ParseWorkerTask(const std::string& text);

}  // namespace freezetune::train

#endif  // FREEZETUNE_SERVER_TRAIN_WORKER_PROTOCOL_H_
