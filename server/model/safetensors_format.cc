// safetensors header validation and construction (no tensor library).
#include "server/model/safetensors_format.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>
#include <unordered_set>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/common/status_macros.h"

namespace freezetune::model {
namespace {

absl::Status Invalid(const std::string& msg) { return absl::InvalidArgumentError(msg); }

// A short, printable rendering of a tensor name for error messages (names
// are attacker-controlled; keep messages one line and bounded).
std::string Quote(const std::string& s) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size() && i < 80; ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    out += (c >= 0x20 && c < 0x7f && c != '"') ? static_cast<char>(c) : '?';
  }
  if (s.size() > 80) out += "...";
  return out + "\"";
}

uint64_t ReadLe64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

// Reads a JSON array of non-negative integers that fit int64.
absl::Status ReadIndexArray(const nlohmann::json& j, std::vector<uint64_t>* out) {
  if (!j.is_array()) return Invalid("must be an array");
  for (const auto& v : j) {
    if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<int64_t>() >= 0)) {
      return Invalid("must hold non-negative integers");
    }
    uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(INT64_MAX)) return Invalid("value out of range");
    out->push_back(u);
  }
  return absl::OkStatus();
}

absl::StatusOr<SafetensorsTensorInfo> ParseEntry(const std::string& name,
                                                 const nlohmann::json& entry) {
  const std::string where = absl::StrCat("tensor ", Quote(name), ": ");
  if (!entry.is_object()) return Invalid(where + "entry must be an object");
  SafetensorsTensorInfo info;
  info.name = name;
  for (const auto& [key, value] : entry.items()) {
    if (key != "dtype" && key != "shape" && key != "data_offsets") {
      return Invalid(where + "unexpected field " + Quote(key));
    }
  }
  auto dtype = entry.find("dtype");
  if (dtype == entry.end()) return Invalid(where + "missing dtype");
  if (!dtype->is_string()) return Invalid(where + "dtype must be a string");
  info.dtype = dtype->get<std::string>();
  const size_t elem = SafetensorsDtypeSize(info.dtype);
  if (elem == 0) return Invalid(where + "unknown dtype " + Quote(info.dtype));

  auto shape = entry.find("shape");
  if (shape == entry.end()) return Invalid(where + "missing shape");
  std::vector<uint64_t> dims;
  if (absl::Status s = ReadIndexArray(*shape, &dims); !s.ok()) {
    return Invalid(absl::StrCat(where, "shape ", s.message()));
  }
  auto offsets = entry.find("data_offsets");
  if (offsets == entry.end()) return Invalid(where + "missing data_offsets");
  std::vector<uint64_t> range;
  if (absl::Status s = ReadIndexArray(*offsets, &range); !s.ok()) {
    return Invalid(absl::StrCat(where, "data_offsets ", s.message()));
  }
  if (range.size() != 2) return Invalid(where + "data_offsets must be [begin, end]");
  info.begin = range[0];
  info.end = range[1];
  if (info.end < info.begin) {
    return Invalid(absl::StrCat(where, "data_offsets end ", info.end, " < begin ", info.begin));
  }
  // numel * elem must equal end - begin; every partial product is checked
  // against overflow so a shape like [2^40, 2^40] cannot wrap around.
  uint64_t bytes = elem;
  for (uint64_t d : dims) {
    if (d != 0 && bytes > UINT64_MAX / d) {
      return Invalid(where + "shape size overflows");
    }
    bytes *= d;
    info.shape.push_back(static_cast<int64_t>(d));
  }
  if (bytes != info.end - info.begin) {
    return Invalid(absl::StrCat(where, "shape and dtype need ", bytes, " bytes but data_offsets span ",
                                info.end - info.begin));
  }
  return info;
}

}  // namespace

size_t SafetensorsDtypeSize(std::string_view dtype) {
  static constexpr std::pair<std::string_view, size_t> kSizes[] = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1},
      {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},
      {"U32", 4},  {"F32", 4}, {"F64", 8}, {"I64", 8},     {"U64", 8},
  };
  for (const auto& [name, size] : kSizes) {
    if (name == dtype) return size;
  }
  return 0;
}

bool IsFloatWeightDtype(std::string_view dtype) {
  return dtype == "F32" || dtype == "F16" || dtype == "BF16";
}

absl::StatusOr<SafetensorsHeader> ParseSafetensors(std::string_view file) {
  if (file.size() < 8) {
    return Invalid(absl::StrCat("file too short for the 8-byte header length (", file.size(),
                                " bytes)"));
  }
  const uint64_t n = ReadLe64(file.data());
  if (n > kMaxSafetensorsHeaderBytes) {
    return Invalid(absl::StrCat("header length ", n, " exceeds the limit of ",
                                kMaxSafetensorsHeaderBytes, " bytes"));
  }
  if (n > file.size() - 8) {
    return Invalid(absl::StrCat("header length ", n, " exceeds the ", file.size() - 8,
                                " bytes after the length prefix"));
  }
  return ParseSafetensorsHeader(file.substr(8, n), file.size());
}

absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(std::string_view header_json,
                                                         uint64_t file_size) {
  SafetensorsHeader header;
  header.header_bytes = header_json.size();
  if (header_json.size() > kMaxSafetensorsHeaderBytes) {
    return Invalid(absl::StrCat("header length ", header_json.size(), " exceeds the limit of ",
                                kMaxSafetensorsHeaderBytes, " bytes"));
  }
  if (file_size < 8 + header_json.size()) {
    return Invalid("header length exceeds the file size");
  }

  // nlohmann keeps the last of duplicate keys silently; the parse callback
  // sees every key, so track the keys of each open object on a stack.
  std::vector<std::unordered_set<std::string>> open_objects;
  std::string duplicate;
  auto callback = [&](int /*depth*/, nlohmann::json::parse_event_t event,
                      nlohmann::json& parsed) {
    using E = nlohmann::json::parse_event_t;
    if (event == E::object_start) {
      open_objects.emplace_back();
    } else if (event == E::object_end) {
      if (!open_objects.empty()) open_objects.pop_back();
    } else if (event == E::key && duplicate.empty() && !open_objects.empty()) {
      const std::string& key = parsed.get_ref<const std::string&>();
      if (!open_objects.back().insert(key).second) duplicate = key;
    }
    return true;
  };
  // nlohmann's lexer treats a NUL byte as end of input and would ignore what
  // follows; raw NUL is never valid JSON (not even inside strings).
  if (size_t nul = header_json.find('\0'); nul != std::string_view::npos) {
    return Invalid(absl::StrCat("header is not valid JSON/UTF-8 (at byte ", nul, ")"));
  }
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(header_json.begin(), header_json.end(), callback);
  } catch (const nlohmann::json::parse_error& e) {
    // e.what() quotes header bytes; report only the position.
    return Invalid(absl::StrCat("header is not valid JSON/UTF-8 (at byte ", e.byte, ")"));
  } catch (const nlohmann::json::exception&) {
    return Invalid("header is not valid JSON");
  }
  if (!duplicate.empty()) return Invalid("header: duplicate key " + Quote(duplicate));
  if (!j.is_object()) return Invalid("header must be a JSON object");

  for (const auto& [key, value] : j.items()) {
    if (key == "__metadata__") {
      if (value.is_null()) continue;
      if (!value.is_object()) return Invalid("__metadata__ must be an object");
      for (const auto& [mk, mv] : value.items()) {
        if (!mv.is_string()) return Invalid("__metadata__: value of " + Quote(mk) + " must be a string");
        header.metadata.emplace_back(mk, mv.get<std::string>());
      }
      continue;
    }
    if (key.empty()) return Invalid("tensor name must not be empty");
    FT_ASSIGN_OR_RETURN(SafetensorsTensorInfo info, ParseEntry(key, value));
    header.tensors.push_back(std::move(info));
  }
  std::stable_sort(header.tensors.begin(), header.tensors.end(),
                   [](const SafetensorsTensorInfo& a, const SafetensorsTensorInfo& b) {
                     return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
                   });
  uint64_t expected = 0;
  for (const auto& t : header.tensors) {
    if (t.begin != expected) {
      return Invalid(absl::StrCat("tensor ", Quote(t.name), ": data_offsets begin ", t.begin,
                                  t.begin < expected ? " overlaps the previous tensor"
                                                     : " leaves a gap",
                                  " (expected ", expected, ")"));
    }
    expected = t.end;
  }
  const uint64_t data_start = 8 + header_json.size();
  const uint64_t data_size = file_size - data_start;
  if (expected != data_size) {
    return Invalid(absl::StrCat("file length ", file_size, " != 8 + header ",
                                header_json.size(), " + data ", expected,
                                expected < data_size ? " (trailing bytes)" : " (truncated)"));
  }
  return header;
}

absl::StatusOr<SafetensorsHeader> ReadSafetensorsHeader(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    return absl::Status(err == ENOENT ? absl::StatusCode::kNotFound
                                      : absl::StatusCode::kFailedPrecondition,
                        absl::StrCat(path, ": cannot open: ", std::strerror(err)));
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  auto read_exact = [fd](char* buf, size_t size, off_t offset) {
    size_t done = 0;
    while (done < size) {
      ssize_t r = ::pread(fd, buf + done, size - done, offset + static_cast<off_t>(done));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return false;
      done += static_cast<size_t>(r);
    }
    return true;
  };
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  char prefix[8];
  if (file_size < 8 || !read_exact(prefix, 8, 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": file too short for the 8-byte header length"));
  }
  const uint64_t n = ReadLe64(prefix);
  if (n > kMaxSafetensorsHeaderBytes || n > file_size - 8) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": header length ", n,
                                                   " exceeds the limit or the file size"));
  }
  std::string json(n, '\0');
  if (!read_exact(json.data(), n, 8)) {
    return absl::DataLossError(absl::StrCat(path, ": read failed"));
  }
  auto header = ParseSafetensorsHeader(json, file_size);
  if (!header.ok()) {
    return absl::Status(header.status().code(),
                        absl::StrCat(path, ": ", header.status().message()));
  }
  return header;
}

absl::StatusOr<std::string> BuildSafetensorsHeader(
    std::vector<SafetensorsTensorInfo>& tensors,
    const std::vector<std::pair<std::string, std::string>>& metadata) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    j["__metadata__"] = std::move(m);
  }
  uint64_t offset = 0;
  for (auto& t : tensors) {
    if (t.name.empty() || t.name == "__metadata__" || j.contains(t.name)) {
      return Invalid("tensor " + Quote(t.name) + ": name empty, reserved or repeated");
    }
    const size_t elem = SafetensorsDtypeSize(t.dtype);
    if (elem == 0) return Invalid("tensor " + Quote(t.name) + ": unknown dtype");
    uint64_t bytes = elem;
    for (int64_t d : t.shape) {
      if (d < 0) return Invalid("tensor " + Quote(t.name) + ": negative dimension");
      bytes *= static_cast<uint64_t>(d);
    }
    t.begin = offset;
    t.end = offset + bytes;
    offset = t.end;
    j[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {t.begin, t.end}}};
  }
  std::string json = j.dump();
  json.append((8 - json.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  out += json;
  return out;
}

}  // namespace freezetune::model
