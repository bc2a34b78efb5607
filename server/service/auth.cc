#include "server/service/auth.h"

#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace freezetune::service {

absl::StatusOr<std::shared_ptr<const Authenticator>> Authenticator::FromText(
    absl::string_view text, absl::string_view field) {
  auto auth = std::make_shared<Authenticator>();
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    std::vector<absl::string_view> parts = absl::StrSplit(line, absl::ByAnyChar(" \t"),
                                                         absl::SkipEmpty());
    if (parts.size() != 2) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, ": line ", line_number, ": expected \"<tenant> <token>\""));
    }
    if (!auth->tenant_by_token_.emplace(std::string(parts[1]), std::string(parts[0])).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": line ", line_number, ": token already listed"));
    }
  }
  if (auth->tenant_by_token_.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": no tokens"));
  }
  return std::shared_ptr<const Authenticator>(std::move(auth));
}

absl::StatusOr<std::shared_ptr<const Authenticator>> Authenticator::FromFile(
    const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("auth_token_file: cannot read ", path));
  std::stringstream buffer;
  buffer << in.rdbuf();
  return FromText(buffer.str(), "auth_token_file");
}

absl::StatusOr<std::string> Authenticator::TenantOfHeader(absl::string_view authorization) const {
  constexpr absl::string_view kBearer = "bearer ";
  if (authorization.size() <= kBearer.size() ||
      !absl::StartsWithIgnoreCase(authorization, kBearer)) {
    return absl::UnauthenticatedError("authorization: expected \"Bearer <token>\"");
  }
  absl::string_view token = absl::StripAsciiWhitespace(authorization.substr(kBearer.size()));
  auto it = tenant_by_token_.find(token);
  if (it == tenant_by_token_.end()) return absl::UnauthenticatedError("authorization: unknown token");
  return it->second;
}

absl::StatusOr<std::string> Authenticator::TenantOf(
    const grpc::CallbackServerContext& context) const {
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) {
    return absl::UnauthenticatedError("authorization: bearer token required");
  }
  return TenantOfHeader(absl::string_view(it->second.data(), it->second.size()));
}

}  // namespace freezetune::service
