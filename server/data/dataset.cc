// Dataset readers (JSONL, CSV, TSV, TREC) and the label space. Torch-free.
//
// Choices the contract leaves open:
// - A UTF-8 byte-order mark at the start of the content is dropped.
// - Lines (records, for CSV) that are entirely empty are ignored in every
//   format, wherever they are; any other malformed line is an error.
// - Labels are trimmed of surrounding ASCII whitespace.
// - Errors name the line but quote no text; a label value is quoted only when
//   it is short printable ASCII (class names, not sentences).
#include "server/data/dataset.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/common/status_macros.h"
#include "server/data/dataset_internal.h"

namespace freezetune::data {
namespace {

// Debian's Abseil has its own string_view, distinct from std::string_view.
absl::string_view AV(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// Above this many classes a "classification" label column is almost surely a
// regression target or an id column; refuse rather than build a huge head.
constexpr int64_t kMaxClasses = 1000;

absl::Status LineError(std::string_view field, int64_t line, std::string_view reason) {
  return absl::InvalidArgumentError(absl::StrCat(AV(field), ": line ", line, ": ", AV(reason)));
}

absl::Status FieldError(std::string_view field, std::string_view reason) {
  return absl::InvalidArgumentError(absl::StrCat(AV(field), ": ", AV(reason)));
}

std::string Quoted(std::string_view name) { return absl::StrCat("\"", AV(name), "\""); }

std::string_view StripBom(std::string_view s) {
  if (s.size() >= 3 && static_cast<unsigned char>(s[0]) == 0xEF &&
      static_cast<unsigned char>(s[1]) == 0xBB && static_cast<unsigned char>(s[2]) == 0xBF) {
    s.remove_prefix(3);
  }
  return s;
}

std::string TrimLabel(std::string_view s) {
  return std::string(absl::StripAsciiWhitespace(AV(s)));
}

// Calls fn(line_number, line) for every line, '\n'-separated, without a
// trailing '\r'. Stops at the first error.
template <typename Fn>
absl::Status ForEachLine(std::string_view content, Fn fn) {
  int64_t line_no = 0;
  size_t pos = 0;
  while (pos < content.size()) {
    size_t end = content.find('\n', pos);
    if (end == std::string_view::npos) end = content.size();
    std::string_view line = content.substr(pos, end - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    ++line_no;
    FT_RETURN_IF_ERROR(fn(line_no, line));
    pos = end + 1;
  }
  return absl::OkStatus();
}

std::vector<std::string_view> SplitTabs(std::string_view line) {
  std::vector<std::string_view> out;
  size_t pos = 0;
  for (;;) {
    const size_t tab = line.find('\t', pos);
    if (tab == std::string_view::npos) {
      out.push_back(line.substr(pos));
      return out;
    }
    out.push_back(line.substr(pos, tab - pos));
    pos = tab + 1;
  }
}

// Column indices chosen from a header (CSV/TSV) or the first record (JSONL).
struct Columns {
  std::string text, text_pair, label;  // names; text_pair empty = none
  int text_index = -1, pair_index = -1, label_index = -1;  // CSV/TSV only
};

// Picks the field names given the set of names present.
// Without `labelled`, no label column is looked for (masked-LM text).
template <typename HasFn>
absl::StatusOr<Columns> ChooseColumns(const v1::DatasetSpec& spec, std::string_view field,
                                      std::string_view where, bool labelled, HasFn has) {
  Columns c;
  if (!spec.text_field().empty()) {
    if (!has(spec.text_field())) {
      return FieldError(absl::StrCat(AV(field), ".text_field"),
                        absl::StrCat(Quoted(spec.text_field()), " not found in the ", AV(where)));
    }
    c.text = spec.text_field();
  } else {
    for (const char* name : {"text", "sentence", "sentence1"}) {
      if (has(name)) {
        c.text = name;
        break;
      }
    }
    if (c.text.empty()) {
      return FieldError(field, absl::StrCat("no text field in the ", AV(where),
                                            " (looked for \"text\", \"sentence\", "
                                            "\"sentence1\"); set text_field"));
    }
  }
  if (!spec.text_pair_field().empty()) {
    if (!has(spec.text_pair_field())) {
      return FieldError(
          absl::StrCat(AV(field), ".text_pair_field"),
          absl::StrCat(Quoted(spec.text_pair_field()), " not found in the ", AV(where)));
    }
    c.text_pair = spec.text_pair_field();
  } else {
    for (const char* name : {"text_pair", "sentence2"}) {
      if (has(name)) {
        c.text_pair = name;
        break;
      }
    }
  }
  if (!labelled) {
    if (c.text == c.text_pair) return FieldError(field, "text and text_pair must be different fields");
    return c;
  }
  c.label = spec.label_field().empty() ? "label" : spec.label_field();
  if (!has(c.label)) {
    if (!spec.label_field().empty()) {
      return FieldError(absl::StrCat(AV(field), ".label_field"),
                        absl::StrCat(Quoted(c.label), " not found in the ", AV(where)));
    }
    return FieldError(field, absl::StrCat("no \"label\" field in the ", AV(where),
                                          "; set label_field"));
  }
  if (c.text == c.label || c.text == c.text_pair || c.text_pair == c.label) {
    return FieldError(field, "text, text_pair and label must be different fields");
  }
  return c;
}

absl::StatusOr<Columns> ColumnsFromHeader(const std::vector<std::string>& header,
                                          const v1::DatasetSpec& spec, std::string_view field,
                                          bool labelled) {
  std::map<std::string, int> index;
  for (size_t i = 0; i < header.size(); ++i) {
    // Header names are trimmed; GLUE headers are clean, hand-made ones may not be.
    const std::string name(absl::StripAsciiWhitespace(header[i]));
    if (!index.emplace(name, static_cast<int>(i)).second) {
      return LineError(field, 1, absl::StrCat("duplicate column ", Quoted(name), " in the header"));
    }
  }
  FT_ASSIGN_OR_RETURN(
      Columns c, ChooseColumns(spec, field, "header", labelled, [&](const std::string& name) {
        return index.count(name) > 0;
      }));
  c.text_index = index[c.text];
  if (!c.label.empty()) c.label_index = index[c.label];
  if (!c.text_pair.empty()) c.pair_index = index[c.text_pair];
  return c;
}

absl::Status RowToExample(const std::vector<std::string>& row, size_t expected, int64_t line,
                          const Columns& c, std::string_view field,
                          std::vector<RawExample>* out) {
  if (row.size() != expected) {
    return LineError(field, line,
                     absl::StrCat("expected ", expected, " columns, got ", row.size()));
  }
  RawExample ex;
  ex.line = line;
  ex.text = row[c.text_index];
  if (c.pair_index >= 0) ex.text_pair = row[c.pair_index];
  if (c.label_index >= 0) {
    ex.label = TrimLabel(row[c.label_index]);
    if (ex.label.empty()) return LineError(field, line, absl::StrCat("empty ", Quoted(c.label)));
  }
  out->push_back(std::move(ex));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<RawExample>> ParseTsv(std::string_view content,
                                                 const v1::DatasetSpec& spec,
                                                 std::string_view field, bool labelled) {
  std::vector<std::string> header;
  Columns columns;
  std::vector<RawExample> out;
  FT_RETURN_IF_ERROR(ForEachLine(content, [&](int64_t line, std::string_view text) {
    if (text.empty()) return absl::OkStatus();
    std::vector<std::string_view> parts = SplitTabs(text);
    std::vector<std::string> row(parts.begin(), parts.end());
    if (header.empty()) {
      header = std::move(row);
      FT_ASSIGN_OR_RETURN(columns, ColumnsFromHeader(header, spec, field, labelled));
      return absl::OkStatus();
    }
    return RowToExample(row, header.size(), line, columns, field, &out);
  }));
  if (header.empty()) return FieldError(field, "no examples (the file is empty)");
  if (out.empty()) return FieldError(field, "no examples (only a header)");
  return out;
}

absl::StatusOr<std::vector<RawExample>> ParseCsv(std::string_view content,
                                                 const v1::DatasetSpec& spec,
                                                 std::string_view field, bool labelled) {
  std::vector<std::string> header;
  Columns columns;
  std::vector<RawExample> out;
  FT_RETURN_IF_ERROR(internal::ForEachCsvRecord(
      content, field, [&](int64_t line, std::vector<std::string> row) -> absl::Status {
        if (header.empty()) {
          header = std::move(row);
          FT_ASSIGN_OR_RETURN(columns, ColumnsFromHeader(header, spec, field, labelled));
          return absl::OkStatus();
        }
        return RowToExample(row, header.size(), line, columns, field, &out);
      }));
  if (header.empty()) return FieldError(field, "no examples (the file is empty)");
  if (out.empty()) return FieldError(field, "no examples (only a header)");
  return out;
}

// A JSON label as text: strings as they are, integers in decimal, floats in
// shortest round-trip form.
absl::StatusOr<std::string> JsonLabel(const nlohmann::json& v, std::string_view name,
                                      std::string_view field, int64_t line) {
  if (v.is_string()) {
    std::string s = TrimLabel(v.get_ref<const std::string&>());
    if (s.empty()) return LineError(field, line, absl::StrCat("empty ", Quoted(name)));
    return s;
  }
  if (v.is_number_integer() && !v.is_number_unsigned()) return absl::StrCat(v.get<int64_t>());
  if (v.is_number_unsigned()) return absl::StrCat(v.get<uint64_t>());
  if (v.is_number_float()) {
    const double d = v.get<double>();
    if (!std::isfinite(d)) return LineError(field, line, "label is not finite");
    return v.dump();  // nlohmann prints the shortest form that round-trips
  }
  return LineError(field, line,
                   absl::StrCat("field ", Quoted(name), " must be a string or a number"));
}

absl::StatusOr<std::vector<RawExample>> ParseJsonl(std::string_view content,
                                                 const v1::DatasetSpec& spec,
                                                 std::string_view field, bool labelled) {
  std::vector<RawExample> out;
  std::optional<Columns> columns;
  FT_RETURN_IF_ERROR(ForEachLine(content, [&](int64_t line, std::string_view text) -> absl::Status {
    if (absl::StripAsciiWhitespace(AV(text)).empty()) return absl::OkStatus();
    nlohmann::json record;
    try {
      record = nlohmann::json::parse(text.begin(), text.end());
    } catch (const nlohmann::json::parse_error& e) {
      // e.what() quotes the input near the error; report the position only.
      return LineError(field, line, absl::StrCat("invalid JSON (at byte ", e.byte, ")"));
    }
    if (!record.is_object()) return LineError(field, line, "expected a JSON object");
    if (!columns) {
      FT_ASSIGN_OR_RETURN(columns, ChooseColumns(spec, field, "first record", labelled,
                                                 [&](const std::string& name) {
                                                   return record.contains(name);
                                                 }));
    }
    auto get_text = [&](const std::string& name) -> absl::StatusOr<std::string> {
      auto it = record.find(name);
      if (it == record.end() || it->is_null()) {
        return LineError(field, line, absl::StrCat("missing field ", Quoted(name)));
      }
      if (!it->is_string()) {
        return LineError(field, line, absl::StrCat("field ", Quoted(name), " must be a string"));
      }
      return it->get<std::string>();
    };
    RawExample ex;
    ex.line = line;
    FT_ASSIGN_OR_RETURN(ex.text, get_text(columns->text));
    if (!columns->text_pair.empty()) {
      FT_ASSIGN_OR_RETURN(std::string pair, get_text(columns->text_pair));
      ex.text_pair = std::move(pair);
    }
    if (!columns->label.empty()) {
      auto label = record.find(columns->label);
      if (label == record.end() || label->is_null()) {
        return LineError(field, line, absl::StrCat("missing field ", Quoted(columns->label)));
      }
      FT_ASSIGN_OR_RETURN(ex.label, JsonLabel(*label, columns->label, field, line));
    }
    out.push_back(std::move(ex));
    return absl::OkStatus();
  }));
  if (out.empty()) return FieldError(field, "no examples");
  return out;
}

absl::StatusOr<std::vector<RawExample>> ParseTrec(std::string_view content,
                                                  std::string_view field) {
  const std::string utf8 = internal::Latin1ToUtf8(content);
  std::vector<RawExample> out;
  FT_RETURN_IF_ERROR(ForEachLine(utf8, [&](int64_t line, std::string_view text) {
    if (text.empty()) return absl::OkStatus();
    const size_t space = text.find(' ');
    const std::string_view tag = text.substr(0, space);
    const size_t colon = tag.find(':');
    if (space == std::string_view::npos || colon == std::string_view::npos || colon == 0) {
      return LineError(field, line, "expected \"COARSE:fine question\"");
    }
    RawExample ex;
    ex.line = line;
    ex.label = std::string(tag.substr(0, colon));
    ex.text = std::string(text.substr(space + 1));
    out.push_back(std::move(ex));
    return absl::OkStatus();
  }));
  if (out.empty()) return FieldError(field, "no examples");
  return out;
}

// One example per non-blank line (surrounding whitespace trimmed), no label.
absl::StatusOr<std::vector<RawExample>> ParseText(std::string_view content, std::string_view field) {
  std::vector<RawExample> out;
  FT_RETURN_IF_ERROR(ForEachLine(content, [&](int64_t line, std::string_view text) {
    const absl::string_view trimmed = absl::StripAsciiWhitespace(AV(text));
    if (trimmed.empty()) return absl::OkStatus();
    RawExample ex;
    ex.line = line;
    ex.text = std::string(trimmed);
    out.push_back(std::move(ex));
    return absl::OkStatus();
  }));
  if (out.empty()) return FieldError(field, "no examples");
  return out;
}

// True for an optional '-' and 1..18 digits: an integer label that fits int64.
bool ParseIntLabel(std::string_view s, int64_t* out) {
  if (s.empty() || s.size() > 19) return false;
  size_t i = s[0] == '-' ? 1 : 0;
  if (i == s.size()) return false;
  for (size_t j = i; j < s.size(); ++j) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(s[j]))) return false;
  }
  return absl::SimpleAtoi(AV(s), out);
}

// The label for an error message, or a neutral phrase when it could be text.
std::string ShowLabel(std::string_view label) {
  const bool printable = label.size() <= 40 && std::all_of(label.begin(), label.end(), [](char c) {
                           return c >= 0x20 && c < 0x7f;
                         });
  return printable ? Quoted(label) : std::string("(long or non-ASCII label)");
}

}  // namespace

namespace internal {

std::string Latin1ToUtf8(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() + bytes.size() / 16);
  for (const char ch : bytes) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 0x80) {
      out.push_back(ch);
    } else {
      out.push_back(static_cast<char>(0xC0 | (c >> 6)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    }
  }
  return out;
}

absl::Status ForEachCsvRecord(
    std::string_view content, std::string_view field,
    const std::function<absl::Status(int64_t line, std::vector<std::string> fields)>& fn) {
  int64_t line = 1;  // current physical line
  size_t i = 0;
  const size_t n = content.size();
  while (i < n) {
    const int64_t record_line = line;
    std::vector<std::string> fields;
    std::string cur;
    bool end_of_record = false;
    while (!end_of_record) {
      // One field starts at i.
      cur.clear();
      if (i < n && content[i] == '"') {
        ++i;
        for (;;) {
          if (i >= n) return LineError(field, record_line, "unterminated quoted field");
          const char c = content[i];
          if (c == '"') {
            if (i + 1 < n && content[i + 1] == '"') {
              cur.push_back('"');
              i += 2;
              continue;
            }
            ++i;  // closing quote
            break;
          }
          if (c == '\n') ++line;
          cur.push_back(c);
          ++i;
        }
        // After the closing quote: a delimiter, a line end or the end.
        if (i < n && content[i] == '\r' && i + 1 < n && content[i + 1] == '\n') ++i;
        if (i < n && content[i] != ',' && content[i] != '\n') {
          return LineError(field, line, "unexpected character after a closing quote");
        }
      } else {
        // Unquoted: a stray '"' inside is kept as is (as Python's csv does).
        while (i < n && content[i] != ',' && content[i] != '\n') {
          if (content[i] == '\r' && i + 1 < n && content[i + 1] == '\n') {
            ++i;
            break;
          }
          cur.push_back(content[i]);
          ++i;
        }
        if (i == n && !cur.empty() && cur.back() == '\r') cur.pop_back();  // final bare CR
      }
      fields.push_back(cur);
      if (i >= n) {
        end_of_record = true;
      } else if (content[i] == ',') {
        ++i;
        if (i == n) fields.emplace_back();  // trailing comma at EOF: empty last field
        end_of_record = i == n;
      } else {  // '\n'
        ++i;
        ++line;
        end_of_record = true;
      }
    }
    if (fields.size() == 1 && fields[0].empty()) continue;  // blank line
    FT_RETURN_IF_ERROR(fn(record_line, std::move(fields)));
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::DatasetFormat> ResolveFormat(const v1::DatasetSpec& spec,
                                                std::string_view field) {
  if (spec.format() != v1::DATASET_FORMAT_UNSPECIFIED) {
    if (!v1::DatasetFormat_IsValid(spec.format())) {
      return FieldError(absl::StrCat(AV(field), ".format"), "unknown format");
    }
    return spec.format();
  }
  std::string_view path = spec.uri();
  path = path.substr(0, path.find_first_of("?#"));
  const size_t slash = path.rfind('/');
  if (slash != std::string_view::npos) path.remove_prefix(slash + 1);
  const size_t dot = path.rfind('.');
  const std::string ext =
      dot == std::string_view::npos ? "" : absl::AsciiStrToLower(AV(path.substr(dot + 1)));
  if (ext == "jsonl" || ext == "json") return v1::DATASET_FORMAT_JSONL;
  if (ext == "csv") return v1::DATASET_FORMAT_CSV;
  if (ext == "tsv") return v1::DATASET_FORMAT_TSV;
  if (ext == "label" || ext == "trec") return v1::DATASET_FORMAT_TREC;
  if (ext == "txt") return v1::DATASET_FORMAT_TEXT;
  return FieldError(absl::StrCat(AV(field), ".format"),
                    "not set and not inferable from the URI's extension "
                    "(.jsonl, .json, .csv, .tsv, .label, .trec, .txt)");
}

}  // namespace internal

absl::StatusOr<std::vector<RawExample>> ParseDataset(std::string_view content,
                                                     const v1::DatasetSpec& spec,
                                                     std::string_view field, bool labelled) {
  FT_ASSIGN_OR_RETURN(const v1::DatasetFormat format, internal::ResolveFormat(spec, field));
  content = StripBom(content);
  switch (format) {
    case v1::DATASET_FORMAT_JSONL:
      return ParseJsonl(content, spec, field, labelled);
    case v1::DATASET_FORMAT_CSV:
      return ParseCsv(content, spec, field, labelled);
    case v1::DATASET_FORMAT_TSV:
      return ParseTsv(content, spec, field, labelled);
    case v1::DATASET_FORMAT_TREC:
      return ParseTrec(content, field);
    case v1::DATASET_FORMAT_TEXT:
      if (labelled) {
        return FieldError(absl::StrCat(AV(field), ".format"),
                          "plain text (DATASET_FORMAT_TEXT, .txt) has no labels; it serves "
                          "masked-LM tasks (task.type TASK_TYPE_MASKED_LM)");
      }
      return ParseText(content, field);
    default:
      return FieldError(absl::StrCat(AV(field), ".format"), "unknown format");
  }
}

absl::StatusOr<std::vector<RawExample>> LoadDataset(const v1::DatasetSpec& spec,
                                                    const UriOptions& uris,
                                                    std::string_view field, bool labelled) {
  // Check the format first: no point fetching what cannot be parsed.
  FT_RETURN_IF_ERROR(internal::ResolveFormat(spec, field).status());
  FT_ASSIGN_OR_RETURN(const std::string content,
                      ReadUri(spec.uri(), uris, absl::StrCat(AV(field), ".uri")));
  return ParseDataset(content, spec, field, labelled);
}

absl::StatusOr<LabelSpace> ResolveLabelSpace(const v1::TaskSpec& task,
                                             const std::vector<RawExample>& train,
                                             std::string_view field) {
  LabelSpace space;
  const int64_t num_labels = task.num_labels();
  const int64_t num_names = task.label_names_size();
  if (num_labels < 0) return FieldError("job.task.num_labels", "must not be negative");
  if (num_labels > kMaxClasses) {
    return FieldError("job.task.num_labels", absl::StrCat("at most ", kMaxClasses));
  }
  if (num_labels == 1) {
    if (num_names > 1) {
      return FieldError("job.task.label_names", "regression (num_labels 1) takes at most one name");
    }
    space.regression = true;
    space.names = {num_names == 1 ? task.label_names(0) : std::string("LABEL_0")};
    FT_RETURN_IF_ERROR(MapLabels(train, space, field).status());
    return space;
  }
  if (num_names > 0) {
    if (num_labels != 0 && num_labels != num_names) {
      return FieldError("job.task.num_labels",
                        absl::StrCat(num_labels, " does not match the ", num_names,
                                     " label_names"));
    }
    if (num_names < 2) return FieldError("job.task.label_names", "need at least 2 names");
    if (num_names > kMaxClasses) {
      return FieldError("job.task.label_names", absl::StrCat("at most ", kMaxClasses));
    }
    std::set<std::string> seen;
    for (int i = 0; i < task.label_names_size(); ++i) {
      const std::string& name = task.label_names(i);
      if (name.empty()) return FieldError(absl::StrCat("job.task.label_names[", i, "]"), "empty");
      if (!seen.insert(name).second) {
        return FieldError(absl::StrCat("job.task.label_names[", i, "]"), "duplicate name");
      }
    }
    space.names.assign(task.label_names().begin(), task.label_names().end());
    FT_RETURN_IF_ERROR(MapLabels(train, space, field).status());
    return space;
  }

  // No names: integer labels -> "0".."K-1"; otherwise the sorted distinct strings.
  bool all_int = true;
  int64_t max_int = -1;
  std::set<std::string> distinct;
  for (const RawExample& ex : train) {
    int64_t v = 0;
    if (all_int && ParseIntLabel(ex.label, &v)) {
      if (v < 0) {
        return LineError(field, ex.line,
                         absl::StrCat("label ", v, " is negative; integer labels must lie in "
                                                   "[0, num_labels), or list every label in "
                                                   "task.label_names"));
      }
      max_int = std::max(max_int, v);
    } else {
      all_int = false;
    }
    if (distinct.size() <= static_cast<size_t>(kMaxClasses)) distinct.insert(ex.label);
  }
  if (train.empty()) return FieldError(field, "no examples");
  if (all_int) {
    const int64_t k = num_labels > 0 ? num_labels : max_int + 1;
    if (k > kMaxClasses) {
      return FieldError(field, absl::StrCat("labels go up to ", max_int, ", more than ",
                                            kMaxClasses, " classes; for regression set "
                                            "task.num_labels to 1"));
    }
    for (int64_t i = 0; i < k; ++i) space.names.push_back(absl::StrCat(i));
  } else {
    if (distinct.size() > static_cast<size_t>(kMaxClasses)) {
      return FieldError(field, absl::StrCat("more than ", kMaxClasses,
                                            " distinct labels; for regression set "
                                            "task.num_labels to 1"));
    }
    if (num_labels > 0 && static_cast<int64_t>(distinct.size()) != num_labels) {
      return FieldError("job.task.num_labels",
                        absl::StrCat(num_labels, " but ", AV(field), " has ", distinct.size(),
                                     " distinct string labels; set label_names"));
    }
    space.names.assign(distinct.begin(), distinct.end());
  }
  if (space.names.size() < 2) {
    return FieldError(field, "only one distinct label; classification needs at least 2 "
                             "(for regression set task.num_labels to 1)");
  }
  FT_RETURN_IF_ERROR(MapLabels(train, space, field).status());
  return space;
}

absl::StatusOr<MappedLabels> MapLabels(const std::vector<RawExample>& examples,
                                       const LabelSpace& labels, std::string_view field) {
  MappedLabels out;
  if (labels.unlabelled()) return out;
  if (labels.regression) {
    out.targets.reserve(examples.size());
    for (const RawExample& ex : examples) {
      double v = 0;
      if (!absl::SimpleAtod(AV(ex.label), &v) || !std::isfinite(v)) {
        return LineError(field, ex.line, "label is not a finite number (regression task)");
      }
      // Targets are float32: a larger magnitude would become infinity and
      // the loss NaN at the first step.
      if (std::fabs(v) > static_cast<double>(std::numeric_limits<float>::max())) {
        return LineError(field, ex.line,
                         absl::StrCat("label ", ex.label,
                                      " does not fit in float32 (|label| <= 3.4e38; regression "
                                      "targets are float32)"));
      }
      out.targets.push_back(static_cast<float>(v));
    }
    return out;
  }
  std::map<std::string_view, int64_t> ids;
  for (size_t i = 0; i < labels.names.size(); ++i) {
    ids.emplace(labels.names[i], static_cast<int64_t>(i));
  }
  const int64_t k = static_cast<int64_t>(labels.names.size());
  out.ids.reserve(examples.size());
  for (const RawExample& ex : examples) {
    auto it = ids.find(ex.label);
    if (it != ids.end()) {
      out.ids.push_back(it->second);
      continue;
    }
    int64_t v = 0;
    if (ParseIntLabel(ex.label, &v)) {
      if (v < 0 || v >= k) {
        return LineError(field, ex.line,
                         absl::StrCat("label ", v, " out of range [0, ", k, ")"));
      }
      out.ids.push_back(v);
      continue;
    }
    return LineError(field, ex.line,
                     absl::StrCat("label ", ShowLabel(ex.label), " is not one of the ", k,
                                  " known labels"));
  }
  return out;
}

}  // namespace freezetune::data
