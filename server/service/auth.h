// Bearer-token authentication for FineTuneService: a static table of tokens,
// each naming the tenant it acts for. The tenant scopes jobs: a caller sees
// and controls only its own tenant's jobs (others' are NOT_FOUND, so ids do
// not leak). Without a table (no --auth_token_file) every call is tenant "".
//
// Token file format, one entry per line: `<tenant> <token>`, separated by
// whitespace; blank lines and lines starting with '#' are ignored. Tenants
// and tokens are non-empty and contain no whitespace; a token appears once.
// Error messages give the line number, never the line's content.
//
// Thread safety: immutable after construction; safe from any thread.
#ifndef FREEZETUNE_SERVER_SERVICE_AUTH_H_
#define FREEZETUNE_SERVER_SERVICE_AUTH_H_

#include <memory>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "grpcpp/server_context.h"

namespace freezetune::service {

class Authenticator {
 public:
  // Parses token file text. `field` prefixes errors ("auth_token_file").
  static absl::StatusOr<std::shared_ptr<const Authenticator>> FromText(absl::string_view text,
                                                                       absl::string_view field);
  static absl::StatusOr<std::shared_ptr<const Authenticator>> FromFile(const std::string& path);

  // Tenant of the call's "authorization: Bearer <token>" metadata.
  // UNAUTHENTICATED when missing, malformed or unknown.
  absl::StatusOr<std::string> TenantOf(const grpc::CallbackServerContext& context) const;
  absl::StatusOr<std::string> TenantOfHeader(absl::string_view authorization) const;

  size_t size() const { return tenant_by_token_.size(); }

 private:
  absl::flat_hash_map<std::string, std::string> tenant_by_token_;
};

}  // namespace freezetune::service

#endif  // FREEZETUNE_SERVER_SERVICE_AUTH_H_
