// WordPiece tokenizer equal to Hugging Face's BertTokenizerFast, token for
// token: clean-text, CJK spacing, optional lowercasing with accent stripping
// (NFD, drop Mn), punctuation split, greedy longest-match with "##"
// continuations (words over 100 chars -> [UNK]), pairs with token_type_ids,
// and longest-first truncation. Torch-free.
//
// Like HF, the literal special tokens [PAD] [UNK] [CLS] [SEP] [MASK] (those
// present in the vocab) are matched in the raw input, case-sensitively,
// before normalization: "a [SEP] b" yields the [SEP] id, "[sep]" does not.
// Unicode tables come from utf8proc (Unicode 15); HF's category tables are
// from 2016 (Unicode 8/9), so characters assigned or re-categorized since
// then may differ. All golden records match exactly.
//
// Thread safety: a constructed tokenizer is immutable; Encode may be called
// from many threads at once.
#ifndef FREEZETUNE_SERVER_MODEL_TOKENIZER_H_
#define FREEZETUNE_SERVER_MODEL_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace freezetune::model {

// One encoded example, with [CLS]/[SEP] specials.
struct Encoding {
  std::vector<int32_t> ids;
  std::vector<int32_t> type_ids;  // 0 for the first segment, 1 for the pair
  std::vector<std::string> tokens;
};

class WordPieceTokenizer {
 public:
  // Reads vocab.txt: one token per line, id = 0-based line number; trailing
  // whitespace (including \r) is trimmed as HF does.
  // Errors name the path and the line (empty file, duplicate token, missing
  // [PAD]/[UNK]/[CLS]/[SEP]).
  // Codes: NotFound for a missing/unreadable file, InvalidArgument for bad
  // content (empty file or line, duplicate, invalid UTF-8, missing special).
  // Messages name "path:LINE" but never echo token text.
  static absl::StatusOr<WordPieceTokenizer> FromVocabFile(const std::string& path,
                                                          bool do_lower_case);
  // Validates like FromVocabFile; errors name "tokens[i]".
  static absl::StatusOr<WordPieceTokenizer> FromTokens(std::vector<std::string> tokens,
                                                       bool do_lower_case);

  // Encodes `text` (and `pair`) as [CLS] a [SEP] (b [SEP]). `max_length` > 0
  // truncates longest-first so the result, specials included, fits;
  // 0 means no truncation. Invalid UTF-8 bytes are decoded as U+FFFD.
  // Truncation follows HF tokenizers' LongestFirst: for a pair, the shorter
  // side is kept whole if the longer can absorb the cut, else both get half
  // of the budget (the longer side, or on a tie the pair, gets the odd one).
  // A max_length below the number of specials (2, or 3 for a pair) keeps
  // only the specials, so the result is then longer than max_length.
  Encoding Encode(std::string_view text, std::optional<std::string_view> pair = std::nullopt,
                  int max_length = 0) const;

  // Word pieces of one text, without specials and without truncation.
  std::vector<std::string> Tokenize(std::string_view text) const;

  int32_t pad_id() const;
  int32_t unk_id() const;
  int32_t cls_id() const;
  int32_t sep_id() const;
  int64_t vocab_size() const;
  bool do_lower_case() const;
  // Tokens in id order (for writing vocab.txt back out).
  const std::vector<std::string>& tokens() const;

  WordPieceTokenizer(WordPieceTokenizer&&) noexcept;
  WordPieceTokenizer& operator=(WordPieceTokenizer&&) noexcept;
  ~WordPieceTokenizer();

 private:
  struct State;
  explicit WordPieceTokenizer(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace freezetune::model

#endif  // FREEZETUNE_SERVER_MODEL_TOKENIZER_H_
