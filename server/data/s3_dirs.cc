// Directories of files on S3 (see s3_dirs.h).
#include "server/data/s3_dirs.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <random>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "server/common/status_macros.h"
#include "server/data/s3_client.h"

namespace freezetune::data {
namespace {

namespace fs = std::filesystem;

absl::string_view AV(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// NOT_FOUND is the job's fault at this boundary (a missing model file).
absl::Status AsUriError(absl::Status s) {
  if (s.code() == absl::StatusCode::kNotFound) return absl::InvalidArgumentError(s.message());
  return s;
}

S3Location Child(const S3Location& dir, std::string_view name) {
  return S3Location{dir.bucket, absl::StrCat(dir.key, "/", AV(name))};
}

std::string RandomHex() {
  std::random_device rd;
  return absl::StrFormat("%08x%08x", rd(), rd());
}

uint64_t Fnv1a(std::string_view s) {
  uint64_t h = 1469598103934665603ULL;
  for (const char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ULL;
  }
  return h;
}

struct ManifestFile {
  std::string name;
  int64_t size = 0;
  std::string etag;
};

// `owner`: the job whose output this is (outputs only; empty: none).
std::string ManifestJson(const std::vector<ManifestFile>& files, std::string_view kind,
                         std::string_view owner = "") {
  nlohmann::json j;
  j["format"] = "freezetune-manifest/1";
  j["kind"] = std::string(kind);
  if (!owner.empty()) j["owner"] = std::string(owner);
  j["files"] = nlohmann::json::array();
  for (const ManifestFile& f : files) {
    j["files"].push_back({{"name", f.name}, {"size", f.size}, {"etag", f.etag}});
  }
  return j.dump(2) + "\n";
}

// What a manifest may list: a relative path of plain segments (no empty,
// "." or ".." segment, no NUL), so no file can land outside the directory.
bool PlainName(const std::string& name) {
  if (name.empty() || name.find('\0') != std::string::npos) return false;
  for (absl::string_view part : absl::StrSplit(name, '/')) {
    if (part.empty() || part == "." || part == "..") return false;
  }
  return true;
}

absl::StatusOr<std::vector<ManifestFile>> ParseManifest(const std::string& text,
                                                        std::string_view where,
                                                        std::string_view field) {
  auto bad = [&](std::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat(AV(field), ": manifest ", AV(where), " is invalid: ", AV(why)));
  };
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("files") || !j["files"].is_array()) {
    return bad("no \"files\" list");
  }
  std::vector<ManifestFile> files;
  for (const auto& f : j["files"]) {
    if (!f.is_object() || !f.contains("name") || !f["name"].is_string()) return bad("a file has no name");
    ManifestFile m;
    m.name = f["name"].get<std::string>();
    if (!PlainName(m.name)) return bad(absl::StrCat("file name '", m.name, "' is not plain"));
    if (f.contains("size") && f["size"].is_number_integer()) m.size = f["size"].get<int64_t>();
    if (f.contains("etag") && f["etag"].is_string()) m.etag = f["etag"].get<std::string>();
    files.push_back(std::move(m));
  }
  return files;
}

// The regular files under `dir` (recursively), as relative paths, sorted.
absl::StatusOr<std::vector<std::string>> LocalFiles(const std::string& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_regular_file()) names.push_back(fs::relative(it->path(), dir).string());
  }
  if (ec) {
    return absl::InternalError(absl::StrCat("cannot list ", dir, ": ", ec.message()));
  }
  std::sort(names.begin(), names.end());
  return names;
}

// Uploads `names` from `dir` to `to`, returning their manifest entries.
absl::StatusOr<std::vector<ManifestFile>> UploadFiles(const S3Client& client,
                                                      const std::string& dir,
                                                      const std::vector<std::string>& names,
                                                      const S3Location& to,
                                                      std::string_view field) {
  std::vector<ManifestFile> files;
  for (const std::string& name : names) {
    const std::string path = (fs::path(dir) / name).string();
    FT_RETURN_IF_ERROR(client.PutFile(Child(to, name), path, field).status());
    FT_ASSIGN_OR_RETURN(const S3Object head, client.Head(Child(to, name), field));
    std::error_code ec;
    const auto size = static_cast<int64_t>(fs::file_size(path, ec));
    if (!ec && head.size >= 0 && head.size != size) {
      return absl::DataLossError(absl::StrCat(AV(field), ": uploaded ", name, " is ", head.size,
                                              " bytes on S3 but ", size, " locally"));
    }
    files.push_back({name, size, head.etag});
  }
  return files;
}

absl::Status DeleteAll(const S3Client& client, const std::string& bucket,
                       const std::string& prefix, std::string_view field) {
  FT_ASSIGN_OR_RETURN(const std::vector<S3Object> objects, client.List(bucket, prefix, field));
  for (const S3Object& o : objects) {
    FT_RETURN_IF_ERROR(client.Delete(S3Location{bucket, o.key}, field));
  }
  return absl::OkStatus();
}

// Step number of a checkpoint directory name "step-<N>", or -1.
int64_t StepOf(std::string_view name) {
  int64_t step = -1;
  if (!absl::StartsWith(AV(name), "step-") || !absl::SimpleAtoi(AV(name.substr(5)), &step)) {
    return -1;
  }
  return step;
}

struct RemoteStep {
  int64_t step = -1;
  std::string name;
  bool complete = false;
};

// The checkpoint steps under `job` (a prefix), ascending.
absl::StatusOr<std::vector<RemoteStep>> RemoteSteps(const S3Client& client, const S3Location& job,
                                                    std::string_view field) {
  const std::string prefix = job.key + "/";
  FT_ASSIGN_OR_RETURN(const std::vector<S3Object> objects,
                      client.List(job.bucket, prefix, field));
  std::map<int64_t, RemoteStep> steps;
  for (const S3Object& o : objects) {
    const std::string rest = o.key.substr(prefix.size());
    const size_t slash = rest.find('/');
    if (slash == std::string::npos) continue;
    const std::string name = rest.substr(0, slash);
    const int64_t step = StepOf(name);
    if (step < 0) continue;
    RemoteStep& s = steps[step];
    s.step = step;
    s.name = name;
    if (rest.substr(slash + 1) == kS3ManifestName) s.complete = true;
  }
  std::vector<RemoteStep> out;
  for (auto& [step, s] : steps) out.push_back(std::move(s));
  return out;
}

}  // namespace

absl::StatusOr<std::string> StageS3ModelDir(std::string_view uri, const UriOptions& options,
                                            std::string_view field) {
  FT_ASSIGN_OR_RETURN(const S3Location dir, ParseS3Uri(uri, field));
  const S3Client client(options.s3);
  // Which files, and their ETags: from the manifest when there is one.
  std::vector<ManifestFile> files;
  absl::StatusOr<std::string> manifest =
      client.Get(Child(dir, kS3ManifestName), int64_t{1} << 20, field);
  if (manifest.ok()) {
    FT_ASSIGN_OR_RETURN(files, ParseManifest(*manifest, S3Uri(Child(dir, kS3ManifestName)), field));
  } else if (manifest.status().code() != absl::StatusCode::kNotFound) {
    return manifest.status();
  } else {
    for (const char* name : {"config.json", "model.safetensors", "vocab.txt",
                             "tokenizer_config.json"}) {
      absl::StatusOr<S3Object> head = client.Head(Child(dir, name), field);
      if (!head.ok()) {
        if (head.status().code() == absl::StatusCode::kNotFound &&
            std::string_view(name) == "tokenizer_config.json") {
          continue;  // optional
        }
        return AsUriError(head.status());
      }
      files.push_back({name, head->size, head->etag});
    }
  }
  std::string identity = S3Uri(dir);
  for (const ManifestFile& f : files) absl::StrAppend(&identity, "\n", f.name, " ", f.etag);
  const fs::path cache = options.s3_cache_dir.empty()
                             ? fs::temp_directory_path() / "freezetune-s3-cache"
                             : fs::path(options.s3_cache_dir);
  const fs::path final_dir = cache / absl::StrFormat("%016x", Fnv1a(identity));
  std::error_code ec;
  if (fs::is_directory(final_dir, ec)) return final_dir.string();

  const fs::path partial = cache / absl::StrCat(final_dir.filename().string(), ".partial-",
                                                RandomHex());
  fs::create_directories(partial, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat(AV(field), ": cannot create ", partial.string(), ": ", ec.message()));
  }
  auto cleanup = [&partial] {
    std::error_code ignored;
    fs::remove_all(partial, ignored);
  };
  for (const ManifestFile& f : files) {
    fs::create_directories((partial / f.name).parent_path(), ec);
    absl::StatusOr<S3Object> got = client.GetToFile(
        Child(dir, f.name), (partial / f.name).string(), options.max_model_file_bytes, field);
    if (!got.ok()) {
      cleanup();
      return AsUriError(got.status());
    }
    if (!f.etag.empty() && !got->etag.empty() && got->etag != f.etag) {
      cleanup();
      return absl::UnavailableError(absl::StrCat(AV(field), ": ", S3Uri(Child(dir, f.name)),
                                                 " changed while it was being read; try again"));
    }
  }
  fs::rename(partial, final_dir, ec);
  if (ec) {
    cleanup();  // another staging of the same content won the rename
    if (!fs::is_directory(final_dir)) {
      return absl::InternalError(
          absl::StrCat(AV(field), ": cannot rename into ", final_dir.string(), ": ", ec.message()));
    }
  }
  return final_dir.string();
}

absl::Status CheckS3OutputFree(std::string_view uri, const UriOptions& options,
                               std::string_view field) {
  FT_ASSIGN_OR_RETURN(const S3Location dir, ParseS3Uri(uri, field));
  const S3Client client(options.s3);
  absl::StatusOr<std::vector<S3Object>> objects =
      client.List(dir.bucket, dir.key + "/", field, /*max_keys=*/1);
  if (!objects.ok()) return AsUriError(objects.status());
  if (!objects->empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        AV(field), ": ", S3Uri(dir), " already holds objects (", (*objects)[0].key,
        "); choose an empty prefix, outputs are never overwritten"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> PublishS3Dir(const std::string& local_dir, std::string_view uri,
                                         const UriOptions& options, std::string_view field,
                                         std::string_view owner) {
  FT_ASSIGN_OR_RETURN(const S3Location dir, ParseS3Uri(uri, field));
  const S3Client client(options.s3);
  FT_ASSIGN_OR_RETURN(const std::vector<std::string> names, LocalFiles(local_dir));
  const S3Location manifest = Child(dir, kS3ManifestName);
  auto refuse_if_published = [&]() -> absl::Status {
    absl::StatusOr<std::string> published = client.Get(manifest, int64_t{1} << 20, field);
    if (published.status().code() == absl::StatusCode::kNotFound) return absl::OkStatus();
    if (!published.ok()) return published.status();
    // The same job's own output: an earlier run published it and was
    // stopped before recording that (a replica killed in between); this
    // run's output replaces it.
    const nlohmann::json j = nlohmann::json::parse(*published, nullptr, /*allow_exceptions=*/false);
    if (!owner.empty() && j.is_object() && j.value("owner", std::string()) == owner) {
      return absl::OkStatus();
    }
    return absl::InvalidArgumentError(absl::StrCat(
        AV(field), ": ", S3Uri(dir), " already holds a published output (", kS3ManifestName,
        " exists); nothing was overwritten"));
  };
  FT_RETURN_IF_ERROR(refuse_if_published());

  const S3Location staging{dir.bucket,
                           absl::StrCat(dir.key, ".freezetune-partial/", RandomHex())};
  absl::StatusOr<std::vector<ManifestFile>> files =
      UploadFiles(client, local_dir, names, staging, field);
  absl::Status published = files.status();
  if (published.ok()) published = refuse_if_published();
  if (published.ok()) {
    for (const ManifestFile& f : *files) {
      published = client.Copy(Child(staging, f.name), Child(dir, f.name), field);
      if (!published.ok()) break;
    }
  }
  if (published.ok()) {
    // The publication point: readers go by the manifest.
    published = client.Put(manifest, ManifestJson(*files, "output", owner), field);
  }
  // The staging objects are garbage either way.
  absl::Status cleaned = DeleteAll(client, staging.bucket, staging.key + "/", field);
  FT_RETURN_IF_ERROR(published);
  (void)cleaned;  // a leftover under the partial prefix does not hide the output
  return S3Uri(dir);
}

absl::StatusOr<std::string> UploadS3Checkpoint(const std::string& local_step_dir,
                                               std::string_view job_prefix_uri,
                                               const UriOptions& options, int keep_last) {
  constexpr std::string_view kField = "checkpoint_uri";
  FT_ASSIGN_OR_RETURN(const S3Location job, ParseS3Uri(job_prefix_uri, kField));
  const S3Client client(options.s3);
  const std::string name = fs::path(local_step_dir).filename().string();
  if (StepOf(name) < 0) {
    return absl::InternalError(absl::StrCat("not a checkpoint directory: ", local_step_dir));
  }
  const S3Location step = Child(job, name);
  FT_ASSIGN_OR_RETURN(const std::vector<std::string> names, LocalFiles(local_step_dir));
  FT_ASSIGN_OR_RETURN(const std::vector<ManifestFile> files,
                      UploadFiles(client, local_step_dir, names, step, kField));
  FT_RETURN_IF_ERROR(
      client.Put(Child(step, kS3ManifestName), ManifestJson(files, "checkpoint"), kField));
  // Prune: keep the newest keep_last complete steps (this one among them)
  // and anything newer than the oldest kept.
  FT_ASSIGN_OR_RETURN(const std::vector<RemoteStep> steps, RemoteSteps(client, job, kField));
  std::vector<int64_t> complete;
  for (const RemoteStep& s : steps) {
    if (s.complete) complete.push_back(s.step);
  }
  if (static_cast<int>(complete.size()) > keep_last && keep_last > 0) {
    const int64_t oldest_kept = complete[complete.size() - static_cast<size_t>(keep_last)];
    for (const RemoteStep& s : steps) {
      if (s.step >= oldest_kept) continue;
      FT_RETURN_IF_ERROR(DeleteAll(client, job.bucket, Child(job, s.name).key + "/", kField));
    }
  }
  return S3Uri(step);
}

absl::Status RestoreS3Checkpoint(std::string_view job_prefix_uri,
                                 const std::string& local_checkpoint_dir,
                                 const UriOptions& options) {
  constexpr std::string_view kField = "checkpoint_uri";
  FT_ASSIGN_OR_RETURN(const S3Location job, ParseS3Uri(job_prefix_uri, kField));
  const S3Client client(options.s3);
  FT_ASSIGN_OR_RETURN(const std::vector<RemoteStep> steps, RemoteSteps(client, job, kField));
  const RemoteStep* newest = nullptr;
  for (const RemoteStep& s : steps) {
    if (s.complete) newest = &s;
  }
  std::error_code ec;
  fs::create_directories(local_checkpoint_dir, ec);
  // Local steps other than the newest remote one are stale (another replica
  // may have gone further since this one wrote them).
  for (const auto& entry : fs::directory_iterator(local_checkpoint_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (newest != nullptr && name == newest->name) continue;
    if (absl::StartsWith(name, "step-")) fs::remove_all(entry.path(), ec);
  }
  if (newest == nullptr) return absl::OkStatus();
  const fs::path target = fs::path(local_checkpoint_dir) / newest->name;
  if (fs::is_directory(target, ec)) return absl::OkStatus();
  const S3Location step = Child(job, newest->name);
  FT_ASSIGN_OR_RETURN(const std::string manifest_text,
                      client.Get(Child(step, kS3ManifestName), int64_t{1} << 20, kField));
  FT_ASSIGN_OR_RETURN(const std::vector<ManifestFile> files,
                      ParseManifest(manifest_text, S3Uri(step), kField));
  const fs::path partial = fs::path(local_checkpoint_dir) / (newest->name + ".restore");
  fs::remove_all(partial, ec);
  fs::create_directories(partial, ec);
  for (const ManifestFile& f : files) {
    fs::create_directories((partial / f.name).parent_path(), ec);
    FT_RETURN_IF_ERROR(client
                           .GetToFile(Child(step, f.name), (partial / f.name).string(),
                                      options.max_model_file_bytes, kField)
                           .status());
  }
  fs::rename(partial, target, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot rename ", partial.string(), " to ", target.string(), ": ", ec.message()));
  }
  return absl::OkStatus();
}

absl::Status RemoveS3Prefix(std::string_view uri, const UriOptions& options) {
  FT_ASSIGN_OR_RETURN(const S3Location dir, ParseS3Uri(uri, "checkpoint_uri"));
  return DeleteAll(S3Client(options.s3), dir.bucket, dir.key + "/", "checkpoint_uri");
}

}  // namespace freezetune::data
