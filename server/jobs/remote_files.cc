// Object-storage glue for a job's output and checkpoints (see remote_files.h).
#include "server/jobs/remote_files.h"

#include <filesystem>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"
#include "server/data/s3_client.h"
#include "server/data/s3_dirs.h"

namespace freezetune::jobs {
namespace {
// Remote steps kept per job; the trainer keeps as many locally
// (train::kKeepCheckpoints, in a torch header this file stays out of).
constexpr int kRemoteCheckpointsKept = 2;
}  // namespace

bool OutputIsRemote(const v1::FineTuneJob& spec) { return data::IsS3Uri(spec.output_uri()); }

std::string RemoteCheckpointPrefix(const std::string& checkpoint_uri, const std::string& job_id) {
  if (checkpoint_uri.empty()) return "";
  std::string prefix = checkpoint_uri;
  while (!prefix.empty() && prefix.back() == '/') prefix.pop_back();
  return absl::StrCat(prefix, "/", job_id);
}

absl::Status RestoreRemoteCheckpoint(const std::string& prefix, const std::string& local_dir,
                                     const data::UriOptions& uris) {
  if (prefix.empty()) return absl::OkStatus();
  return data::RestoreS3Checkpoint(prefix, local_dir, uris);
}

absl::Status MirrorCheckpoint(const std::string& prefix, v1::JobEvent& event,
                              const data::UriOptions& uris) {
  if (prefix.empty() || !event.has_checkpoint()) return absl::OkStatus();
  std::string local = event.checkpoint().uri();
  if (!absl::StartsWith(local, "file://")) return absl::OkStatus();
  local = local.substr(7);
  FT_ASSIGN_OR_RETURN(const std::string uploaded,
                      data::UploadS3Checkpoint(local, prefix, uris, kRemoteCheckpointsKept));
  event.mutable_checkpoint()->set_uri(uploaded);
  return absl::OkStatus();
}

absl::Status PublishOutput(const std::string& job_id, const v1::FineTuneJob& spec,
                           const std::string& local_dir, const data::UriOptions& uris,
                           v1::JobResult& result) {
  FT_ASSIGN_OR_RETURN(const std::string uri, data::PublishS3Dir(local_dir, spec.output_uri(), uris,
                                                                "job.output_uri", job_id));
  result.set_output_uri(uri);
  std::error_code ec;
  std::filesystem::remove_all(local_dir, ec);  // only disk use now
  return absl::OkStatus();
}

absl::Status RemoveRemoteCheckpoints(const std::string& prefix, const data::UriOptions& uris) {
  if (prefix.empty()) return absl::OkStatus();
  return data::RemoveS3Prefix(prefix, uris);
}

}  // namespace freezetune::jobs
