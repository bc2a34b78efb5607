#include "server/jobs/path_policy.h"

#include <sys/stat.h>

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/common/status_macros.h"
#include "server/data/s3_client.h"

namespace freezetune::jobs {
namespace {

absl::Status Refuse(std::string_view field, const std::string& reason) {
  return absl::InvalidArgumentError(absl::StrCat(std::string(field), ": ", reason));
}

std::string Join(const std::string& dir, const std::string& name) {
  return dir == "/" ? "/" + name : dir + "/" + name;
}

// Strictly below `root` (not equal to it).
bool StrictlyUnder(const std::string& path, const std::string& root) {
  return path != root && data::PathIsUnder(path, root);
}

// The nearest directory at or above `path` that holds model.safetensors;
// empty when none does.
std::string EnclosingModelDir(const std::string& path) {
  std::string dir = path;
  while (true) {
    struct stat st;
    if (::stat(Join(dir, "model.safetensors").c_str(), &st) == 0) return dir;
    if (dir == "/" || dir.empty()) return "";
    const size_t slash = dir.rfind('/');
    dir = slash == 0 ? "/" : dir.substr(0, slash);
  }
}

}  // namespace

std::string TenantPathComponent(const std::string& tenant) {
  std::string out;
  for (size_t i = 0; i < tenant.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(tenant[i]);
    const bool plain = absl::ascii_isalnum(c) || c == '_' || c == '-' || (c == '.' && i > 0);
    if (plain) {
      out.push_back(static_cast<char>(c));
    } else {
      absl::StrAppend(&out, absl::StrFormat("%%%02X", c));
    }
  }
  return out;
}

PathPolicy::PathPolicy(PathPolicyOptions options, store::Store* store)
    : options_(std::move(options)), store_(store) {}

std::string PathPolicy::outputs_root() const { return Join(options_.data_dir, "outputs"); }

std::string PathPolicy::TenantOutputs(const std::string& tenant) const {
  if (tenant.empty()) return outputs_root();
  return Join(outputs_root(), TenantPathComponent(tenant));
}

absl::Status PathPolicy::ClaimConflict(std::string_view field, const std::string& path,
                                       const store::OutputClaim& conflict) {
  // The other owner's id is not named: it may be another tenant's.
  const char* relation = conflict.path == path                   ? "is already"
                         : data::PathIsUnder(path, conflict.path) ? "lies inside"
                                                                  : "contains";
  return Refuse(field, absl::StrCat(path, " ", relation,
                                    " the output directory of another job or sweep"));
}

absl::StatusOr<std::string> PathPolicy::PlanOutput(std::string_view uri,
                                                   const std::string& tenant,
                                                   const std::string& owner_id,
                                                   std::string_view field) const {
  const std::string prefix = TenantOutputs(tenant);
  if (uri.empty()) {
    // Server-chosen and unique by id; still planned (not created) here.
    return Join(prefix, owner_id);
  }
  if (data::IsS3Uri(uri)) {
    // Object storage: claimed by its URI (what the job publishes to); that
    // nothing is there yet is checked by the validation hook. A tenant has
    // no prefix there, so only an operator's --allow_tenant_output_paths
    // lets it name one.
    if (!tenant.empty() && !options_.allow_tenant_output_paths) {
      return Refuse(field, "s3:// outputs of a tenant need the server's "
                           "--allow_tenant_output_paths (omit output_uri for the default)");
    }
    return ClaimKey(uri);
  }
  FT_ASSIGN_OR_RETURN(const std::string path, data::PlanOutputDir(uri, options_.uris, field));
  if (!tenant.empty() && !options_.allow_tenant_output_paths && !StrictlyUnder(path, prefix)) {
    return Refuse(field, absl::StrCat(path, " is outside this tenant's output directory ", prefix,
                                      "/ (omit output_uri for the default)"));
  }
  if (data::PathIsUnder(path, options_.data_dir) && !StrictlyUnder(path, outputs_root())) {
    return Refuse(field, absl::StrCat(path, " is inside the server's state directory ",
                                      options_.data_dir, " (only below ", outputs_root(),
                                      "/ may outputs go)"));
  }
  if (StrictlyUnder(prefix, path) || path == prefix) {
    // outputs/ (or a tenant's prefix) holds the default outputs of jobs
    // still to come: no single output may take it.
    return Refuse(field, absl::StrCat(path, " holds the default outputs of other jobs"));
  }
  if (!tenant.empty() && StrictlyUnder(path, outputs_root()) && !StrictlyUnder(path, prefix)) {
    return Refuse(field, absl::StrCat(path, " is another tenant's output directory"));
  }
  if (std::string model = EnclosingModelDir(path); !model.empty()) {
    return Refuse(field, absl::StrCat(path, " lies inside the model directory ", model,
                                      " (it holds model.safetensors)"));
  }
  return path;
}

absl::Status PathPolicy::CheckInput(std::string_view uri, const std::string& tenant,
                                    std::string_view field) const {
  if (!tenant.empty() && data::IsS3Uri(uri)) return CheckNotOthersOutput(ClaimKey(uri), tenant, field);
  if (uri.empty() || !data::IsLocalUri(uri)) return absl::OkStatus();
  absl::StatusOr<std::string> resolved = data::ResolveLocalPath(uri, options_.uris, field);
  if (!resolved.ok()) return absl::OkStatus();  // reported by whoever reads it
  const std::string& path = *resolved;
  if (data::PathIsUnder(path, options_.data_dir) && !StrictlyUnder(path, outputs_root())) {
    return Refuse(field, absl::StrCat(path, " is the server's own state (inside ",
                                      options_.data_dir, ")"));
  }
  if (tenant.empty()) return absl::OkStatus();
  if (data::PathIsUnder(path, outputs_root()) && !StrictlyUnder(path, TenantOutputs(tenant))) {
    return Refuse(field, absl::StrCat(path, " is not one of this tenant's outputs"));
  }
  return CheckNotOthersOutput(path, tenant, field);
}

absl::Status PathPolicy::CheckNotOthersOutput(const std::string& path, const std::string& tenant,
                                              std::string_view field) const {
  FT_ASSIGN_OR_RETURN(const std::vector<store::OutputClaim> claims,
                      store_->LiveClaimsNestedWith(path));
  for (const store::OutputClaim& claim : claims) {
    if (data::PathIsUnder(path, claim.path) && claim.tenant != tenant) {
      return Refuse(field, absl::StrCat(path, " is not one of this tenant's outputs"));
    }
  }
  return absl::OkStatus();
}

std::string PathPolicy::ClaimKey(std::string_view s3_uri) {
  std::string key(s3_uri);
  while (key.size() > 5 && key.back() == '/') key.pop_back();
  return key;
}

absl::Status PathPolicy::CheckJobInputs(const v1::FineTuneJob& job,
                                        const std::string& tenant) const {
  FT_RETURN_IF_ERROR(CheckInput(job.model_uri(), tenant, "job.model_uri"));
  FT_RETURN_IF_ERROR(CheckInput(job.base_model_uri(), tenant, "job.base_model_uri"));
  FT_RETURN_IF_ERROR(CheckInput(job.train().uri(), tenant, "job.train.uri"));
  return CheckInput(job.validation().uri(), tenant, "job.validation.uri");
}

}  // namespace freezetune::jobs
