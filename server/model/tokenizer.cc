// WordPiece tokenizer: BertNormalizer + BertPreTokenizer + WordPiece + the
// BERT template post-processor, mirroring Hugging Face `tokenizers`.
//
// Pipeline per input segment (between literal special tokens):
//   1. Normalize into one UTF-8 buffer: clean_text, CJK spacing, and when
//      lowercasing, NFD + drop Mn + per-char full lowercase.
//   2. Scan that buffer once, splitting on whitespace and isolating
//      punctuation; each word goes straight through WordPiece into ids.
// ASCII takes a table-driven path; utf8proc is consulted only for non-ASCII.
//
// Known gaps versus HF (all outside ASCII/Latin-1/common scripts):
//   * HF classifies control/format/private-use, punctuation and Mn with the
//     `unicode_categories` 0.1.1 crate (2016, Unicode 8/9 tables); utf8proc 2.8
//     uses Unicode 15. Characters assigned or re-categorized after Unicode 9
//     (e.g. Cf, Mn or P* characters added since) may be treated differently.
//   * Lowercasing: HF uses Rust's char::to_lowercase (full mapping); we use
//     utf8proc's simple mapping. They differ only for U+0130 (full: "i\u0307"),
//     and U+0130 never reaches lowercasing: lowercase always follows NFD + Mn
//     stripping here, which turn it into "I". So no gap beyond the Unicode
//     version of the tables.
#include "server/model/tokenizer.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"
#include "utf8proc.h"

namespace freezetune::model {
namespace {

// HF WordPiece's max_input_chars_per_word: longer words become one [UNK].
constexpr size_t kMaxInputCharsPerWord = 100;
constexpr char32_t kReplacement = 0xFFFD;

inline bool IsContinuationByte(unsigned char b) { return (b & 0xC0) == 0x80; }

// Decodes one code point at s[*i], which must be a non-ASCII lead byte or a
// stray byte. Advances *i. Any invalid, overlong, surrogate or truncated
// sequence yields U+FFFD and consumes exactly one byte.
inline char32_t DecodeNonAscii(std::string_view s, size_t* i) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data()) + *i;
  const size_t n = s.size() - *i;
  const unsigned char b0 = p[0];
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    if (n >= 2 && IsContinuationByte(p[1])) {
      *i += 2;
      return (char32_t{b0 & 0x1Fu} << 6) | (p[1] & 0x3Fu);
    }
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    if (n >= 3 && IsContinuationByte(p[1]) && IsContinuationByte(p[2])) {
      const char32_t cp =
          (char32_t{b0 & 0x0Fu} << 12) | (char32_t{p[1] & 0x3Fu} << 6) | (p[2] & 0x3Fu);
      if (cp >= 0x800 && (cp < 0xD800 || cp > 0xDFFF)) {
        *i += 3;
        return cp;
      }
    }
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    if (n >= 4 && IsContinuationByte(p[1]) && IsContinuationByte(p[2]) &&
        IsContinuationByte(p[3])) {
      const char32_t cp = (char32_t{b0 & 0x07u} << 18) | (char32_t{p[1] & 0x3Fu} << 12) |
                          (char32_t{p[2] & 0x3Fu} << 6) | (p[3] & 0x3Fu);
      if (cp >= 0x10000 && cp <= 0x10FFFF) {
        *i += 4;
        return cp;
      }
    }
  }
  *i += 1;
  return kReplacement;
}

bool IsValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    const size_t before = i;
    if (DecodeNonAscii(s, &i) == kReplacement && i == before + 1) {
      // U+FFFD itself is three bytes, so a one-byte advance means invalid.
      return false;
    }
  }
  return true;
}


inline void AppendUtf8(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    const char buf[2] = {static_cast<char>(0xC0 | (cp >> 6)),
                         static_cast<char>(0x80 | (cp & 0x3F))};
    out->append(buf, 2);
  } else if (cp < 0x10000) {
    const char buf[3] = {static_cast<char>(0xE0 | (cp >> 12)),
                         static_cast<char>(0x80 | ((cp >> 6) & 0x3F)),
                         static_cast<char>(0x80 | (cp & 0x3F))};
    out->append(buf, 3);
  } else {
    const char buf[4] = {static_cast<char>(0xF0 | (cp >> 18)),
                         static_cast<char>(0x80 | ((cp >> 12) & 0x3F)),
                         static_cast<char>(0x80 | ((cp >> 6) & 0x3F)),
                         static_cast<char>(0x80 | (cp & 0x3F))};
    out->append(buf, 4);
  }
}

// Rust's char::is_whitespace (the Unicode White_Space property), which both
// HF's BertNormalizer and BertPreTokenizer use.
inline bool IsWhitespace(char32_t c) {
  if (c < 0x80) return c == ' ' || (c >= 0x09 && c <= 0x0D);
  return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
         c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// HF's is_chinese_char, ranges copied as HF has them (including its
// 0x2B920 start of the fifth range).
inline bool IsChineseChar(char32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
         (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
         (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

// HF's clean_text drops chars for which unicode_categories' is_other() holds:
// Cc, Cf and Co (its is_other does not include Cn or Cs).
inline bool IsOtherNonAscii(char32_t c) {
  const utf8proc_category_t cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return cat == UTF8PROC_CATEGORY_CC || cat == UTF8PROC_CATEGORY_CF ||
         cat == UTF8PROC_CATEGORY_CO;
}

inline bool IsPunctNonAscii(char32_t c) {
  const utf8proc_category_t cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return cat >= UTF8PROC_CATEGORY_PC && cat <= UTF8PROC_CATEGORY_PO;
}

// What normalization does with an ASCII byte.
enum AsciiNorm : uint8_t { kKeep, kDrop, kSpace, kUpper };
// What pre-tokenization does with an ASCII byte of normalized text.
enum AsciiSplit : uint8_t { kWordChar, kSplitSpace, kSplitPunct };

struct AsciiTables {
  AsciiNorm norm[128];
  AsciiSplit split[128];
  constexpr AsciiTables() : norm(), split() {
    for (int b = 0; b < 128; ++b) {
      // NUL and every C0 control / DEL except \t \n \r are dropped.
      if (b == '\t' || b == '\n' || b == '\r' || b == ' ') {
        norm[b] = kSpace;
      } else if (b < 0x20 || b == 0x7F) {
        norm[b] = kDrop;
      } else if (b >= 'A' && b <= 'Z') {
        norm[b] = kUpper;
      } else {
        norm[b] = kKeep;
      }
      if (b == ' ' || (b >= 0x09 && b <= 0x0D)) {
        split[b] = kSplitSpace;
      } else if ((b >= 33 && b <= 47) || (b >= 58 && b <= 64) || (b >= 91 && b <= 96) ||
                 (b >= 123 && b <= 126)) {
        split[b] = kSplitPunct;
      } else {
        split[b] = kWordChar;
      }
    }
  }
};
constexpr AsciiTables kAscii;

// BertNormalizer over one segment, appending to `out`. `lower` enables
// strip_accents + lowercase (HF ties strip_accents to lowercase when unset).
class Normalizer {
 public:
  Normalizer(bool lower, std::string* out) : lower_(lower), out_(out) {}

  void Run(std::string_view in) {
    size_t i = 0;
    const size_t n = in.size();
    while (i < n) {
      const auto b = static_cast<unsigned char>(in[i]);
      if (b < 0x80) {
        ++i;
        switch (kAscii.norm[b]) {
          case kDrop:
            continue;
          case kSpace:
            EmitStarterRaw(' ');
            continue;
          case kUpper:
            EmitStarterRaw(lower_ ? static_cast<char>(b + 32) : static_cast<char>(b));
            continue;
          case kKeep:
            EmitStarterRaw(static_cast<char>(b));
            continue;
        }
        continue;
      }
      const char32_t cp = DecodeNonAscii(in, &i);
      if (cp == kReplacement || IsOtherNonAscii(cp)) continue;
      if (IsWhitespace(cp)) {
        EmitStarterRaw(' ');
      } else if (IsChineseChar(cp)) {
        EmitStarterRaw(' ');
        Transform(cp);
        EmitStarterRaw(' ');
      } else {
        Transform(cp);
      }
    }
    FlushMarks();
  }

 private:
  // An ASCII char after normalization: always a starter (ccc 0), never Mn,
  // already lowercased.
  void EmitStarterRaw(char c) {
    if (!marks_.empty()) FlushMarks();
    out_->push_back(c);
  }

  // NFD (+ canonical reordering via marks_), then drop Mn, then lowercase.
  void Transform(char32_t cp) {
    if (!lower_) {
      AppendUtf8(cp, out_);
      return;
    }
    utf8proc_int32_t buf[32];
    utf8proc_int32_t boundclass = 0;
    utf8proc_ssize_t n = utf8proc_decompose_char(static_cast<utf8proc_int32_t>(cp), buf, 32,
                                                 UTF8PROC_DECOMPOSE, &boundclass);
    if (n <= 0 || n > 32) {
      buf[0] = static_cast<utf8proc_int32_t>(cp);
      n = 1;
    }
    for (utf8proc_ssize_t k = 0; k < n; ++k) {
      const utf8proc_property_t* prop = utf8proc_get_property(buf[k]);
      if (prop->combining_class == 0) {
        if (!marks_.empty()) FlushMarks();
        Finish(static_cast<char32_t>(buf[k]), prop);
      } else {
        marks_.push_back(static_cast<char32_t>(buf[k]));
      }
    }
  }

  // Canonical ordering: a run of non-starters is stable-sorted by combining
  // class before the Mn filter and lowercasing see it.
  void FlushMarks() {
    if (marks_.empty()) return;
    std::stable_sort(marks_.begin(), marks_.end(), [](char32_t a, char32_t b) {
      return utf8proc_get_property(static_cast<utf8proc_int32_t>(a))->combining_class <
             utf8proc_get_property(static_cast<utf8proc_int32_t>(b))->combining_class;
    });
    for (char32_t m : marks_) Finish(m, utf8proc_get_property(static_cast<utf8proc_int32_t>(m)));
    marks_.clear();
  }

  void Finish(char32_t cp, const utf8proc_property_t* prop) {
    if (prop->category == UTF8PROC_CATEGORY_MN) return;
    AppendUtf8(static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(cp))), out_);
  }

  const bool lower_;
  std::string* out_;
  std::vector<char32_t> marks_;  // pending non-starters; allocates only for combining text
};

// Open-addressing hash map from a token's text to its id. Keys are views
// into strings owned elsewhere (the tokenizer's State::tokens, which never
// changes after construction), so lookups by string_view never allocate.
class PieceTable {
 public:
  void Reserve(size_t n) {
    size_t cap = 16;
    while (cap < 2 * n + 1) cap <<= 1;
    slots_.assign(cap, Slot{});
    mask_ = cap - 1;
  }

  // Inserts key -> id and returns -1, or returns the id already stored for
  // key. The key's bytes must outlive the table.
  int32_t Insert(std::string_view key, int32_t id) {
    for (size_t i = Hash(key) & mask_;; i = (i + 1) & mask_) {
      Slot& s = slots_[i];
      if (s.id < 0) {
        s = Slot{key.data(), static_cast<uint32_t>(key.size()), id};
        return -1;
      }
      if (Matches(s, key)) return s.id;
    }
  }

  int32_t Find(std::string_view key) const {
    for (size_t i = Hash(key) & mask_;; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.id < 0) return -1;
      if (Matches(s, key)) return s.id;
    }
  }

 private:
  struct Slot {
    const char* data = nullptr;
    uint32_t size = 0;
    int32_t id = -1;
  };

  static bool Matches(const Slot& s, std::string_view key) {
    return s.size == key.size() && std::memcmp(s.data, key.data(), key.size()) == 0;
  }

  // FNV-1a, then a final avalanche so the low bits used for the slot index
  // depend on every byte.
  static size_t Hash(std::string_view key) {
    uint64_t h = 1469598103934665603ull;
    for (unsigned char c : key) h = (h ^ c) * 1099511628211ull;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 32;
    return static_cast<size_t>(h);
  }

  std::vector<Slot> slots_ = std::vector<Slot>(16);  // always has an empty slot
  size_t mask_ = 15;
};

}  // namespace

struct WordPieceTokenizer::State {
  std::vector<std::string> tokens;
  // Word-initial lookup: every token, by its full text.
  PieceTable initial;
  // Continuation lookup: "##x" tokens keyed by "x", so lookups never build
  // a prefixed string.
  PieceTable continuation;
  size_t max_initial_bytes = 0;
  size_t max_continuation_bytes = 0;
  // Literal special tokens matched in raw input before normalization (HF's
  // added-tokens split with normalized=false), e.g. "[SEP]" -> 102.
  std::vector<std::pair<std::string, int32_t>> specials;
  int32_t pad = -1, unk = -1, cls = -1, sep = -1;
  bool lower = true;

  // Validates `vocab` and fills every lookup; `where(i)` names entry i in
  // errors ("path:LINE" or "tokens[i]"), `origin` names the source.
  template <typename WhereFn>
  absl::Status Fill(std::vector<std::string> vocab, bool do_lower_case,
                    const std::string& origin, WhereFn where) {
    State* st = this;
    if (vocab.empty()) return absl::InvalidArgumentError(absl::StrCat(origin, ": vocab is empty"));
    st->lower = do_lower_case;
    // The tables point into st->tokens, so it takes ownership first.
    st->tokens = std::move(vocab);
    const std::vector<std::string>& toks = st->tokens;
    st->initial.Reserve(toks.size());
    size_t num_continuations = 0;
    for (const std::string& tok : toks) num_continuations += tok.size() > 2 && tok[0] == '#' && tok[1] == '#';
    st->continuation.Reserve(num_continuations);
    for (size_t i = 0; i < toks.size(); ++i) {
      const std::string& tok = toks[i];
      if (tok.empty()) return absl::InvalidArgumentError(absl::StrCat(where(i), ": empty token"));
      if (!IsValidUtf8(tok)) {
        return absl::InvalidArgumentError(absl::StrCat(where(i), ": token is not valid UTF-8"));
      }
      const auto id = static_cast<int32_t>(i);
      if (const int32_t first = st->initial.Insert(tok, id); first >= 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            where(i), ": duplicate token (first at ", where(static_cast<size_t>(first)), ")"));
      }
      st->max_initial_bytes = std::max(st->max_initial_bytes, tok.size());
      if (tok.size() > 2 && tok[0] == '#' && tok[1] == '#') {
        st->continuation.Insert(std::string_view(tok).substr(2), id);
        st->max_continuation_bytes = std::max(st->max_continuation_bytes, tok.size() - 2);
      }
    }
    struct Required {
      const char* text;
      int32_t* id;
    };
    const Required required[] = {
        {"[PAD]", &st->pad}, {"[UNK]", &st->unk}, {"[CLS]", &st->cls}, {"[SEP]", &st->sep}};
    for (const Required& r : required) {
      const int32_t id = st->initial.Find(r.text);
      if (id < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat(origin, ": missing required token ", r.text));
      }
      *r.id = id;
      st->specials.emplace_back(r.text, id);
    }
    if (const int32_t mask = st->initial.Find("[MASK]"); mask >= 0) {
      st->specials.emplace_back("[MASK]", mask);
    }
    return absl::OkStatus();
  }

  void WordPiece(std::string_view word, std::vector<int32_t>* ids) const;
  void EncodePlain(std::string_view segment, std::string* scratch,
                   std::vector<int32_t>* ids) const;
  void EncodeText(std::string_view text, std::string* scratch, std::vector<int32_t>* ids) const;
};

void WordPieceTokenizer::State::WordPiece(std::string_view word,
                                          std::vector<int32_t>* ids) const {
  const size_t len = word.size();
  if (len > kMaxInputCharsPerWord) {
    size_t chars = 0;
    for (char c : word) chars += !IsContinuationByte(static_cast<unsigned char>(c));
    if (chars > kMaxInputCharsPerWord) {
      ids->push_back(unk);
      return;
    }
  }
  const size_t mark = ids->size();
  size_t start = 0;
  while (start < len) {
    const bool first = start == 0;
    const auto& map = first ? initial : continuation;
    size_t end = std::min(len, start + (first ? max_initial_bytes : max_continuation_bytes));
    while (end > start && end < len && IsContinuationByte(static_cast<unsigned char>(word[end]))) {
      --end;
    }
    int32_t found = -1;
    while (end > start) {
      found = map.Find(word.substr(start, end - start));
      if (found >= 0) break;
      --end;
      while (end > start && IsContinuationByte(static_cast<unsigned char>(word[end]))) --end;
    }
    if (found < 0) {  // no piece matches here: the whole word is one [UNK]
      ids->resize(mark);
      ids->push_back(unk);
      return;
    }
    ids->push_back(found);
    start = end;
  }
}

void WordPieceTokenizer::State::EncodePlain(std::string_view segment, std::string* scratch,
                                            std::vector<int32_t>* ids) const {
  scratch->clear();
  Normalizer(lower, scratch).Run(segment);
  const std::string_view norm(*scratch);
  const size_t n = norm.size();
  size_t word_start = 0;
  size_t i = 0;
  auto flush = [&](size_t end) {
    if (end > word_start) WordPiece(norm.substr(word_start, end - word_start), ids);
  };
  while (i < n) {
    const auto b = static_cast<unsigned char>(norm[i]);
    if (b < 0x80) {
      switch (kAscii.split[b]) {
        case kWordChar:
          ++i;
          break;
        case kSplitSpace:
          flush(i);
          word_start = ++i;
          break;
        case kSplitPunct:
          flush(i);
          WordPiece(norm.substr(i, 1), ids);
          word_start = ++i;
          break;
      }
      continue;
    }
    const size_t at = i;
    const char32_t cp = DecodeNonAscii(norm, &i);
    if (IsWhitespace(cp)) {
      flush(at);
      word_start = i;
    } else if (IsPunctNonAscii(cp)) {
      flush(at);
      WordPiece(norm.substr(at, i - at), ids);
      word_start = i;
    }
  }
  flush(n);
}

void WordPieceTokenizer::State::EncodeText(std::string_view text, std::string* scratch,
                                           std::vector<int32_t>* ids) const {
  size_t seg_start = 0;
  size_t pos = specials.empty() ? std::string_view::npos : text.find('[');
  while (pos != std::string_view::npos) {
    // Leftmost-longest match among the literal special tokens.
    const std::pair<std::string, int32_t>* best = nullptr;
    for (const auto& sp : specials) {
      if (text.compare(pos, sp.first.size(), sp.first) == 0 &&
          (best == nullptr || sp.first.size() > best->first.size())) {
        best = &sp;
      }
    }
    if (best == nullptr) {
      pos = text.find('[', pos + 1);
      continue;
    }
    EncodePlain(text.substr(seg_start, pos - seg_start), scratch, ids);
    ids->push_back(best->second);
    seg_start = pos + best->first.size();
    pos = text.find('[', seg_start);
  }
  EncodePlain(text.substr(seg_start), scratch, ids);
}

namespace {

// HF tokenizers' TruncationStrategy::LongestFirst for content budgets that
// exclude specials: the shorter side keeps its length if the longer can
// absorb the cut, otherwise both get half (the longer side, or on a tie the
// second, gets the odd token).
void TruncateLongestFirst(std::vector<int32_t>* a, std::vector<int32_t>* b, size_t budget) {
  if (b == nullptr) {
    if (a->size() > budget) a->resize(budget);
    return;
  }
  if (a->size() + b->size() <= budget) return;
  const bool swap = a->size() > b->size();
  size_t n1 = swap ? b->size() : a->size();  // shorter
  size_t n2;
  if (n1 > budget) {
    n2 = n1;
  } else {
    n2 = std::max(n1, budget - n1);
  }
  if (n1 + n2 > budget) {
    n1 = budget / 2;
    n2 = n1 + budget % 2;
  }
  const size_t a_len = swap ? n2 : n1;
  const size_t b_len = swap ? n1 : n2;
  if (a->size() > a_len) a->resize(a_len);
  if (b->size() > b_len) b->resize(b_len);
}

absl::Status ReadFile(const std::string& path, std::string* content) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": is a directory, not a vocab file"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    if (err == ENOENT) return absl::NotFoundError(absl::StrCat(path, ": file not found"));
    return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", std::strerror(err)));
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read failed"));
  *content = std::move(ss).str();
  return absl::OkStatus();
}

}  // namespace

WordPieceTokenizer::WordPieceTokenizer(std::unique_ptr<State> state) : state_(std::move(state)) {}
WordPieceTokenizer::WordPieceTokenizer(WordPieceTokenizer&&) noexcept = default;
WordPieceTokenizer& WordPieceTokenizer::operator=(WordPieceTokenizer&&) noexcept = default;
WordPieceTokenizer::~WordPieceTokenizer() = default;

absl::StatusOr<WordPieceTokenizer> WordPieceTokenizer::FromVocabFile(const std::string& path,
                                                                     bool do_lower_case) {
  std::string content;
  FT_RETURN_IF_ERROR(ReadFile(path, &content));
  std::vector<std::string> tokens;
  size_t pos = 0;
  while (pos < content.size()) {
    size_t eol = content.find('\n', pos);
    if (eol == std::string::npos) eol = content.size();
    std::string_view line(content.data() + pos, eol - pos);
    // HF trims trailing whitespace of each vocab line (this also eats \r).
    while (!line.empty() && (line.back() == ' ' || line.back() == '\t' || line.back() == '\r' ||
                             line.back() == '\v' || line.back() == '\f')) {
      line.remove_suffix(1);
    }
    tokens.emplace_back(line);
    pos = eol + 1;
  }
  auto st = std::make_unique<State>();
  FT_RETURN_IF_ERROR(st->Fill(std::move(tokens), do_lower_case, path,
                                        [&path](size_t i) { return absl::StrCat(path, ":", i + 1); }));
  return WordPieceTokenizer(std::move(st));
}

absl::StatusOr<WordPieceTokenizer> WordPieceTokenizer::FromTokens(std::vector<std::string> tokens,
                                                                  bool do_lower_case) {
  auto st = std::make_unique<State>();
  FT_RETURN_IF_ERROR(st->Fill(std::move(tokens), do_lower_case, "tokens",
                                        [](size_t i) { return absl::StrCat("tokens[", i, "]"); }));
  return WordPieceTokenizer(std::move(st));
}

Encoding WordPieceTokenizer::Encode(std::string_view text, std::optional<std::string_view> pair,
                                    int max_length) const {
  const State& st = *state_;
  std::string scratch;
  scratch.reserve(text.size() + (pair ? pair->size() : 0) + 16);
  std::vector<int32_t> a;
  std::vector<int32_t> b;
  a.reserve(text.size() / 3 + 4);
  st.EncodeText(text, &scratch, &a);
  if (pair) {
    b.reserve(pair->size() / 3 + 4);
    st.EncodeText(*pair, &scratch, &b);
  }
  if (max_length > 0) {
    const size_t specials = pair ? 3 : 2;
    const auto max = static_cast<size_t>(max_length);
    TruncateLongestFirst(&a, pair ? &b : nullptr, max > specials ? max - specials : 0);
  }
  Encoding enc;
  const size_t total = a.size() + (pair ? b.size() + 3 : 2);
  enc.ids.reserve(total);
  enc.type_ids.reserve(total);
  enc.ids.push_back(st.cls);
  enc.ids.insert(enc.ids.end(), a.begin(), a.end());
  enc.ids.push_back(st.sep);
  enc.type_ids.assign(enc.ids.size(), 0);
  if (pair) {
    enc.ids.insert(enc.ids.end(), b.begin(), b.end());
    enc.ids.push_back(st.sep);
    enc.type_ids.resize(enc.ids.size(), 1);
  }
  enc.tokens.reserve(total);
  for (int32_t id : enc.ids) enc.tokens.push_back(st.tokens[static_cast<size_t>(id)]);
  return enc;
}

std::vector<std::string> WordPieceTokenizer::Tokenize(std::string_view text) const {
  std::string scratch;
  std::vector<int32_t> ids;
  state_->EncodeText(text, &scratch, &ids);
  std::vector<std::string> out;
  out.reserve(ids.size());
  for (int32_t id : ids) out.push_back(state_->tokens[static_cast<size_t>(id)]);
  return out;
}

int32_t WordPieceTokenizer::pad_id() const { return state_->pad; }
int32_t WordPieceTokenizer::unk_id() const { return state_->unk; }
int32_t WordPieceTokenizer::cls_id() const { return state_->cls; }
int32_t WordPieceTokenizer::sep_id() const { return state_->sep; }
int64_t WordPieceTokenizer::vocab_size() const {
  return static_cast<int64_t>(state_->tokens.size());
}
bool WordPieceTokenizer::do_lower_case() const { return state_->lower; }
const std::vector<std::string>& WordPieceTokenizer::tokens() const { return state_->tokens; }

}  // namespace freezetune::model
