// Directories of files on S3: model inputs, published outputs, and job
// checkpoints that every replica can read. Torch-free: these move files.
//
// Manifests. A directory freezetune writes to S3 is complete only when its
// manifest, kS3ManifestName, exists; it is always written last and lists
// every file (relative path, size, ETag).
//  - Outputs: the files are uploaded under a temporary sibling prefix
//    "<key>.freezetune-partial/<nonce>/", copied server-side to "<key>/", and
//    then the manifest is written, so a reader that goes by the manifest
//    never sees half an output; the temporary objects are deleted last. An
//    output prefix that already holds a manifest is refused and nothing is
//    written under it.
//  - Checkpoints: "<checkpoint_uri>/<job id>/step-<N>/" with the checkpoint's
//    files, then its manifest. Restoring picks the newest step with a
//    manifest.
//  - Model inputs: a directory with a manifest is read by it; any other
//    prefix is read as a plain Hugging Face directory (config.json,
//    model.safetensors, vocab.txt, optional tokenizer_config.json).
//
// Errors follow s3_client.h, with NOT_FOUND turned into INVALID_ARGUMENT
// (a missing model file is the job's fault).
//
// Thread safety: free functions, safe to call concurrently; concurrent
// stagings of one model each download and the first rename wins.
#ifndef FREEZETUNE_SERVER_DATA_S3_DIRS_H_
#define FREEZETUNE_SERVER_DATA_S3_DIRS_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "server/data/uri.h"

namespace freezetune::data {

inline constexpr char kS3ManifestName[] = "freezetune.manifest.json";

// Downloads the model directory `uri` (s3://bucket/prefix) into
// options.s3_cache_dir (reused while every file's ETag is unchanged) and
// returns the local directory. Each file is capped at
// options.max_model_file_bytes.
absl::StatusOr<std::string> StageS3ModelDir(std::string_view uri, const UriOptions& options,
                                            std::string_view field);

// At submit: INVALID_ARGUMENT "<field>: s3://... already holds objects"
// when anything exists under "<key>/"; checks the URI's syntax too.
absl::Status CheckS3OutputFree(std::string_view uri, const UriOptions& options,
                               std::string_view field);

// Publishes the regular files under `local_dir` (recursively, relative
// paths kept) to `uri` as described above, its manifest naming `owner` (the
// job's id). Returns the published URI. INVALID_ARGUMENT when the prefix
// already holds another owner's published output (nothing is overwritten);
// `owner`'s own, from an earlier run that was stopped before recording it,
// is replaced.
absl::StatusOr<std::string> PublishS3Dir(const std::string& local_dir, std::string_view uri,
                                         const UriOptions& options, std::string_view field,
                                         std::string_view owner);

// Uploads the checkpoint directory `local_step_dir` (".../step-<N>") under
// `job_prefix_uri`, manifest last, then deletes the job's older steps beyond
// the newest `keep_last`. Returns the checkpoint's URI.
absl::StatusOr<std::string> UploadS3Checkpoint(const std::string& local_step_dir,
                                               std::string_view job_prefix_uri,
                                               const UriOptions& options, int keep_last);

// Makes `local_checkpoint_dir` hold exactly the newest complete checkpoint
// under `job_prefix_uri` (local step directories are removed: the object
// store is the truth). No checkpoint there: the local directory is emptied
// of steps and OK is returned.
absl::Status RestoreS3Checkpoint(std::string_view job_prefix_uri,
                                 const std::string& local_checkpoint_dir,
                                 const UriOptions& options);

// Deletes every object under "<key>/" of `uri`.
absl::Status RemoveS3Prefix(std::string_view uri, const UriOptions& options);

}  // namespace freezetune::data

#endif  // FREEZETUNE_SERVER_DATA_S3_DIRS_H_
