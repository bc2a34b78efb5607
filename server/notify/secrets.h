// Per-tenant secrets that sign completion callbacks, from the server's
// --notify_secret_file: one "<tenant> <secret>" per line, '#' comments and
// blank lines ignored; the tenant "*" is the default for tenants without a
// line of their own (and, without authentication, for every job: their
// tenant is ""). Immutable after Load; thread-safe.
#ifndef FREEZETUNE_SERVER_NOTIFY_SECRETS_H_
#define FREEZETUNE_SERVER_NOTIFY_SECRETS_H_

#include <map>
#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace freezetune::notify {

class Secrets {
 public:
  // INVALID_ARGUMENT "<path>:<line>: ..." for a malformed line, a duplicate
  // tenant or a secret shorter than 16 bytes; NOT_FOUND for a missing file.
  static absl::StatusOr<Secrets> Load(const std::string& path);
  static absl::StatusOr<Secrets> Parse(const std::string& text, const std::string& name);

  // The tenant's secret, else the "*" one, else none.
  std::optional<std::string> For(const std::string& tenant) const;
  bool empty() const { return by_tenant_.empty(); }

 private:
  std::map<std::string, std::string> by_tenant_;
};

}  // namespace freezetune::notify

#endif  // FREEZETUNE_SERVER_NOTIFY_SECRETS_H_
