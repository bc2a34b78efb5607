// Which local paths a job may read and where it may write, beyond the data
// layer's URI rules (server/data/uri.h: scheme, data roots, no ".." or
// symlink escapes):
//
//   Outputs (FineTuneJob.output_uri, SweepSpec.output_uri), decided at
//   submit by PlanOutput:
//     - a new or empty directory (data::PlanOutputDir), never inside a model
//       directory (an ancestor holding model.safetensors);
//     - inside data_dir only under <data_dir>/outputs/ (never the store,
//       LOCK or checkpoints/; never outputs/ itself, which holds every
//       default output);
//     - a tenant's (tenant != ""; with auth every tenant is non-empty) must
//       lie under its prefix <data_dir>/outputs/<tenant>/ unless
//       allow_tenant_output_paths;
//     - the default, for an empty URI: <data_dir>/outputs/<id>, or
//       <data_dir>/outputs/<tenant>/<id> for a tenant.
//   The caller then claims the path in the store (store::Store::CreateJob or
//   CreateSweep), which refuses one nested with another live output.
//
//   Inputs (model and dataset URIs, PlanFreeze's model), by CheckInput:
//     - nothing of the server's state: inside data_dir only under outputs/;
//     - a tenant reads under <data_dir>/outputs/ only its own prefix, and
//       never a directory another tenant's job or sweep claimed as output.
//   http(s) URIs are not local paths and pass.
//
// s3:// outputs (published when the job succeeds) are claimed by their URI
// (trailing '/' dropped) the same way, nested by '/'-separated components; a
// tenant may name one only with allow_tenant_output_paths, and no tenant
// reads (as s3://) what another tenant's job or sweep claimed.
//
// Tenant names become one path component: bytes outside [A-Za-z0-9._-]
// (and a leading '.') are %XX-escaped, so "a/b" or ".." cannot climb.
//
// Thread safety: immutable after construction; the store is thread-safe.
#ifndef FREEZETUNE_SERVER_JOBS_PATH_POLICY_H_
#define FREEZETUNE_SERVER_JOBS_PATH_POLICY_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/data/uri.h"
#include "server/store/store.h"

namespace freezetune::jobs {

struct PathPolicyOptions {
  // Canonical server state directory.
  std::string data_dir;
  data::UriOptions uris;
  // Tenants may name outputs outside their prefix (still under the data
  // roots and subject to every other rule).
  bool allow_tenant_output_paths = false;
};

class PathPolicy {
 public:
  // `store` is not owned and must outlive the policy.
  PathPolicy(PathPolicyOptions options, store::Store* store);

  // The canonical directory an output will be written to (or the claim key
  // of an s3:// output); `uri` empty means the default for `owner_id`.
  // INVALID_ARGUMENT "<field>: ..." when a rule above refuses it. Creates
  // nothing.
  absl::StatusOr<std::string> PlanOutput(std::string_view uri, const std::string& tenant,
                                         const std::string& owner_id, std::string_view field) const;

  // OK unless `uri` is a local path a rule above forbids `tenant` to read
  // (INVALID_ARGUMENT "<field>: ..."). A local path that does not resolve
  // passes: reading it fails later with the data layer's error.
  absl::Status CheckInput(std::string_view uri, const std::string& tenant,
                          std::string_view field) const;

  // The job's model, delta base and dataset URIs through CheckInput.
  absl::Status CheckJobInputs(const v1::FineTuneJob& job, const std::string& tenant) const;

  // INVALID_ARGUMENT "<field>: <path> is already the output of another job
  // or sweep" for the conflicting claim a store call returned.
  static absl::Status ClaimConflict(std::string_view field, const std::string& path,
                                    const store::OutputClaim& conflict);

  // The claim key of an s3:// URI: the URI without trailing '/'.
  static std::string ClaimKey(std::string_view s3_uri);

  // <data_dir>/outputs, and a tenant's prefix (the former for tenant "").
  std::string outputs_root() const;
  std::string TenantOutputs(const std::string& tenant) const;

 private:
  // INVALID_ARGUMENT when `path` lies inside a live output another tenant
  // claimed.
  absl::Status CheckNotOthersOutput(const std::string& path, const std::string& tenant,
                                    std::string_view field) const;

  const PathPolicyOptions options_;
  store::Store* const store_;
};

// `tenant` as one safe path component (see above).
std::string TenantPathComponent(const std::string& tenant);

}  // namespace freezetune::jobs

#endif  // FREEZETUNE_SERVER_JOBS_PATH_POLICY_H_
