#include "server/notify/secrets.h"

#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace freezetune::notify {

absl::StatusOr<Secrets> Secrets::Load(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("notify secret file ", path, " not readable"));
  std::stringstream ss;
  ss << in.rdbuf();
  return Parse(ss.str(), path);
}

absl::StatusOr<Secrets> Secrets::Parse(const std::string& text, const std::string& name) {
  Secrets out;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    line = absl::StripAsciiWhitespace(line.substr(0, line.find('#')));
    if (line.empty()) continue;
    std::vector<absl::string_view> parts = absl::StrSplit(line, ' ', absl::SkipWhitespace());
    auto error = [&](absl::string_view why) {
      return absl::InvalidArgumentError(absl::StrCat(name, ":", line_no, ": ", why));
    };
    if (parts.size() != 2) return error("expected \"<tenant> <secret>\"");
    if (parts[1].size() < 16) return error("secret shorter than 16 bytes");
    if (!out.by_tenant_.emplace(std::string(parts[0]), std::string(parts[1])).second) {
      return error(absl::StrCat("tenant '", parts[0], "' listed twice"));
    }
  }
  return out;
}

std::optional<std::string> Secrets::For(const std::string& tenant) const {
  auto it = by_tenant_.find(tenant);
  if (it == by_tenant_.end()) it = by_tenant_.find("*");
  if (it == by_tenant_.end()) return std::nullopt;
  return it->second;
}

}  // namespace freezetune::notify
