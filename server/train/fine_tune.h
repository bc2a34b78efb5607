// The train layer's entry points used by jobs/: synchronous validation of a
// submitted job, the PlanFreeze dry run, and running one fine-tuning job to
// completion on the calling (scheduler) thread.
#ifndef FREEZETUNE_SERVER_TRAIN_FINE_TUNE_H_
#define FREEZETUNE_SERVER_TRAIN_FINE_TUNE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "freezetune/v1/freezetune.pb.h"
#include "server/data/uri.h"

namespace freezetune::train {

class EncodeCache;   // encode_cache.h
class GradientSync;  // data_parallel.h
class PrefixStore;   // prefix_store.h

// Most data-parallel ranks a job may ask for (FineTuneJob.resources).
constexpr int kMaxDataParallel = 64;

// Server-side bounds on what a job may ask for.
struct JobLimits {
  int max_epochs = 100;
  int max_seq_length = 512;
  int max_batch_size = 1024;
  int64_t max_examples = 10'000'000;
  int64_t max_model_parameters = int64_t{2} << 30;
};

// Everything that can be checked before queueing: URIs resolve and are
// allowed, formats known, datasets parse, labels fit the task, the freeze
// spec compiles against the model's parameter names, hyperparameters are in
// range. INVALID_ARGUMENT messages start with the field path ("job.train.uri:
// ..."); an unreadable model or dataset is FAILED_PRECONDITION or
// INVALID_ARGUMENT as appropriate.
absl::Status ValidateJob(const v1::FineTuneJob& job, const data::UriOptions& uris,
                         const JobLimits& limits);

// Compiles the freeze spec against the model at request.model_uri.
absl::StatusOr<v1::PlanFreezeResponse> PlanFreeze(const v1::PlanFreezeRequest& request,
                                                  const data::UriOptions& uris);

struct RunContext {
  std::string job_id;
  std::string output_dir;      // resolved local directory for the final model
  std::string checkpoint_dir;  // resumable checkpoints; resume from the newest
  std::string device = "cpu";  // torch device string
  data::UriOptions uris;
  JobLimits limits;
  // Called on the training thread for every event; the caller assigns
  // sequence, time and job_id.
  std::function<void(v1::JobEvent)> emit;
  // Polled at least once per step; true stops the run with CANCELLED.
  std::function<bool()> should_stop;
  // Optional: intra-op threads for a CPU run, polled before every batch
  // (TrainerOptions::intra_op_threads); per rank for a data-parallel job
  // (read once, when its workers start).
  std::function<int()> intra_op_threads;
  // Optional: after every optimizer step this run takes
  // (TrainerOptions::on_step).
  std::function<void(double seconds, int64_t samples)> on_step;
  // Frozen-prefix outputs shared by the jobs of this process (see
  // prefix_store.h); null: the job caches within itself only.
  std::shared_ptr<PrefixStore> prefix_store;
  // Other jobs may read this job's prefix outputs (a sweep trial; the
  // server's --prefix_cache_shared): store them and keep them after the
  // job (TrainerOptions::prefix_cache_shared). The job's own
  // share_frozen_prefix does the same.
  bool prefix_cache_shared = false;
  // Where tokenized datasets are looked up and kept (not owned; must outlive
  // the run). nullptr: the process-wide EncodeCache::Global().
  EncodeCache* encode_cache = nullptr;
  // Data-parallel jobs (FineTuneJob.resources.data_parallel > 1), see
  // data_parallel_launcher.h: the device of each rank (the slots the
  // scheduler gave the job; empty: `device` for every rank), the
  // freezetune-worker program (empty: the one beside this executable) and
  // the c10d timeout (rendezvous and every collective).
  std::vector<std::string> devices;
  std::string worker_binary;
  int64_t data_parallel_timeout_ms = 300000;
  // Set inside a worker process: this run is one rank of a data-parallel
  // job (rank 0 writes the output).
  std::shared_ptr<GradientSync> sync;
};

// Runs the job to the end. Returns the result on success; CANCELLED when
// should_stop fired; another error (with the step number where relevant) on
// failure. Never throws: LibTorch exceptions become a Status here.
absl::StatusOr<v1::JobResult> RunFineTune(const v1::FineTuneJob& job, const RunContext& context);

}  // namespace freezetune::train

#endif  // FREEZETUNE_SERVER_TRAIN_FINE_TUNE_H_
