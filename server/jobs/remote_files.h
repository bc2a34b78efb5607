// A job's files that live in object storage: an s3:// output_uri (the
// trainer writes a local staging directory, published to S3 when the job
// succeeds) and resumable checkpoints under --checkpoint_uri (uploaded as
// the trainer writes them, restored before a run, so that any replica can
// resume the job). Thin glue between JobManager and data/s3_dirs.h.
//
// Thread safety: free functions; one caller per job at a time.
#ifndef FREEZETUNE_SERVER_JOBS_REMOTE_FILES_H_
#define FREEZETUNE_SERVER_JOBS_REMOTE_FILES_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "freezetune/v1/freezetune.pb.h"
#include "server/data/uri.h"

namespace freezetune::jobs {

// True when the job's output goes to object storage.
bool OutputIsRemote(const v1::FineTuneJob& spec);

// "<checkpoint_uri>/<job id>", or "" when checkpoints are local.
std::string RemoteCheckpointPrefix(const std::string& checkpoint_uri, const std::string& job_id);

// Before a run: makes `local_dir` hold the job's newest checkpoint from
// `prefix` (a no-op when `prefix` is empty).
absl::Status RestoreRemoteCheckpoint(const std::string& prefix, const std::string& local_dir,
                                     const data::UriOptions& uris);

// For a Checkpoint event from the trainer (its uri names a local
// directory): uploads that directory under `prefix` and points the event at
// the uploaded copy. A no-op for other events or an empty `prefix`.
absl::Status MirrorCheckpoint(const std::string& prefix, v1::JobEvent& event,
                              const data::UriOptions& uris);

// After a successful run with a remote output: publishes `local_dir` to the
// job's output_uri (replacing only the same job's own earlier publication,
// data::PublishS3Dir), sets result.output_uri to it and removes the staging
// directory.
absl::Status PublishOutput(const std::string& job_id, const v1::FineTuneJob& spec,
                           const std::string& local_dir, const data::UriOptions& uris,
                           v1::JobResult& result);

// Deletes the job's remote checkpoints (a no-op when `prefix` is empty).
absl::Status RemoveRemoteCheckpoints(const std::string& prefix, const data::UriOptions& uris);

}  // namespace freezetune::jobs

#endif  // FREEZETUNE_SERVER_JOBS_REMOTE_FILES_H_
