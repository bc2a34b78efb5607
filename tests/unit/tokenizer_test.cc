// Tests for the WordPiece tokenizer: conformance with Hugging Face's
// BertTokenizerFast on every golden record, plus focused behaviour tests
// against the real bert-base-uncased vocab.
#include "server/model/tokenizer.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace freezetune::model {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

std::string SharedDir() {
  const char* env = std::getenv("FREEZETUNE_SOURCE_DIR");
  return std::string(env != nullptr ? env : FREEZETUNE_SOURCE_DIR) + "/../shared";
}
std::string VocabPath() { return SharedDir() + "/data/bert-base-uncased-vocab.txt"; }

const WordPieceTokenizer& Uncased() {
  static const WordPieceTokenizer* tok = [] {
    auto t = WordPieceTokenizer::FromVocabFile(VocabPath(), /*do_lower_case=*/true);
    if (!t.ok()) {
      ADD_FAILURE() << t.status();
      std::abort();
    }
    return new WordPieceTokenizer(std::move(t).value());
  }();
  return *tok;
}

std::vector<std::string> Tok(std::string_view text) { return Uncased().Tokenize(text); }

// --- Golden conformance -----------------------------------------------------

struct GoldenCase {
  const char* file;
  int expected_records;
};

class GoldenTest : public ::testing::TestWithParam<GoldenCase> {};

TEST_P(GoldenTest, MatchesHuggingFaceExactly) {
  const std::string path = SharedDir() + "/golden/tokenizer/" + GetParam().file;
  std::ifstream in(path);
  ASSERT_TRUE(in) << "cannot open " << path;
  const WordPieceTokenizer& tok = Uncased();
  std::string line;
  int line_no = 0;
  int records = 0;
  int mismatches = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.empty()) continue;
    ++records;
    const auto rec = nlohmann::json::parse(line);
    const std::string text = rec.at("text").get<std::string>();
    std::optional<std::string> pair;
    if (rec.contains("text_pair") && !rec["text_pair"].is_null()) {
      pair = rec["text_pair"].get<std::string>();
    }
    const auto want_ids = rec.at("ids").get<std::vector<int32_t>>();
    const auto want_types = rec.at("type_ids").get<std::vector<int32_t>>();
    const auto want_tokens = rec.at("tokens").get<std::vector<std::string>>();
    // No golden record is truncated (the longest has 253 ids, well under
    // BERT's 512), so encode without truncation.
    const Encoding got = pair ? tok.Encode(text, std::string_view(*pair)) : tok.Encode(text);
    if (got.ids != want_ids || got.type_ids != want_types || got.tokens != want_tokens) {
      if (++mismatches <= 10) {
        std::ostringstream os;
        for (const auto& t : got.tokens) os << t << ' ';
        std::ostringstream ws;
        for (const auto& t : want_tokens) ws << t << ' ';
        ADD_FAILURE() << GetParam().file << ":" << line_no << ": mismatch\n  got:  " << os.str()
                      << "\n  want: " << ws.str();
      }
    }
  }
  EXPECT_EQ(records, GetParam().expected_records);
  EXPECT_EQ(mismatches, 0) << GetParam().file << ": " << mismatches << " of " << records
                           << " records differ";
}

// Truncating a golden RTE pair keeps a prefix of each side, fills max_length
// exactly when the pair was longer, and leaves shorter pairs untouched.
TEST(GoldenTruncation, RtePairsKeepPrefixesAndFillBudget) {
  const std::string path = SharedDir() + "/golden/tokenizer/rte-dev.golden.jsonl";
  std::ifstream in(path);
  ASSERT_TRUE(in) << "cannot open " << path;
  const WordPieceTokenizer& tok = Uncased();
  constexpr int kMax = 48;
  std::string line;
  int truncated = 0;
  while (std::getline(in, line)) {
    const auto rec = nlohmann::json::parse(line);
    const auto full = rec.at("ids").get<std::vector<int32_t>>();
    const auto types = rec.at("type_ids").get<std::vector<int32_t>>();
    const std::string text = rec.at("text").get<std::string>();
    const std::string pair = rec.at("text_pair").get<std::string>();
    const Encoding e = tok.Encode(text, std::string_view(pair), kMax);
    auto side = [](const std::vector<int32_t>& ids, const std::vector<int32_t>& ty, int t) {
      std::vector<int32_t> out;
      for (size_t i = 0; i < ids.size(); ++i) {
        if (ty[i] == t) out.push_back(ids[i]);
      }
      if (t == 0) out.erase(out.begin());  // [CLS]
      out.pop_back();                      // the side's [SEP]
      return out;
    };
    const auto fa = side(full, types, 0), fb = side(full, types, 1);
    const auto ga = side(e.ids, e.type_ids, 0), gb = side(e.ids, e.type_ids, 1);
    ASSERT_LE(ga.size(), fa.size());
    ASSERT_LE(gb.size(), fb.size());
    EXPECT_TRUE(std::equal(ga.begin(), ga.end(), fa.begin())) << line;
    EXPECT_TRUE(std::equal(gb.begin(), gb.end(), fb.begin())) << line;
    if (full.size() > static_cast<size_t>(kMax)) {
      ++truncated;
      EXPECT_EQ(e.ids.size(), static_cast<size_t>(kMax));
      // The shorter side is only cut when it alone exceeds half the budget.
      const size_t shorter = std::min(fa.size(), fb.size());
      if (shorter <= (kMax - 3) / 2) {
        EXPECT_EQ(std::min(ga.size(), gb.size()), shorter) << line;
      }
    } else {
      EXPECT_EQ(e.ids, full);
    }
  }
  EXPECT_GT(truncated, 100);  // RTE premises are long: most pairs get cut
}

INSTANTIATE_TEST_SUITE_P(AllGoldenFiles, GoldenTest,
                         ::testing::Values(GoldenCase{"sst2-dev.golden.jsonl", 872},
                                           GoldenCase{"rte-dev.golden.jsonl", 277},
                                           GoldenCase{"trec-test.golden.jsonl", 500}));

// --- Vocab and accessors ----------------------------------------------------

TEST(TokenizerVocab, SpecialIdsAndSize) {
  const WordPieceTokenizer& tok = Uncased();
  EXPECT_EQ(tok.pad_id(), 0);
  EXPECT_EQ(tok.unk_id(), 100);
  EXPECT_EQ(tok.cls_id(), 101);
  EXPECT_EQ(tok.sep_id(), 102);
  EXPECT_EQ(tok.vocab_size(), 30522);
  EXPECT_TRUE(tok.do_lower_case());
  ASSERT_EQ(tok.tokens().size(), 30522u);
  EXPECT_EQ(tok.tokens()[1996], "the");
  EXPECT_EQ(tok.tokens()[2075], "##ing");
}

// --- Normalizer -------------------------------------------------------------

TEST(TokenizerNormalize, LowercasesAndStripsAccents) {
  EXPECT_THAT(Tok("Héllo"), ElementsAre("hello"));
  EXPECT_THAT(Tok("HELLO World"), ElementsAre("hello", "world"));
  // Decomposed input (e + U+0301) strips the same way.
  EXPECT_THAT(Tok("He\xCC\x81llo"), ElementsAre("hello"));
}

TEST(TokenizerNormalize, SpacesAroundCjkIdeographs) {
  EXPECT_THAT(Tok("中国hello"), ElementsAre("中", "国", "hello"));
  EXPECT_THAT(Tok("hello中"), ElementsAre("hello", "中"));
}

TEST(TokenizerNormalize, DropsControlAndFormatCharsWithoutSplitting) {
  EXPECT_THAT(Tok(std::string("hel\x01lo", 6)), ElementsAre("hello"));
  EXPECT_THAT(Tok(std::string("hel\0lo", 6)), ElementsAre("hello"));
  EXPECT_THAT(Tok("hel\xE2\x80\x8Blo"), ElementsAre("hello"));  // U+200B ZWSP (Cf)
  EXPECT_THAT(Tok("hel\xC2\x85lo"), ElementsAre("hello"));      // U+0085 (Cc) is dropped
  EXPECT_THAT(Tok("hel\xEF\xBF\xBDlo"), ElementsAre("hello"));  // U+FFFD
}

TEST(TokenizerNormalize, WhitespaceVariantsSplit) {
  EXPECT_THAT(Tok("hello\tworld\nthe\rend"), ElementsAre("hello", "world", "the", "end"));
  EXPECT_THAT(Tok("hello\xC2\xA0world"), ElementsAre("hello", "world"));      // NBSP
  EXPECT_THAT(Tok("hello\xE3\x80\x80world"), ElementsAre("hello", "world"));  // U+3000
  EXPECT_THAT(Tok("   "), ElementsAre());
}

TEST(TokenizerNormalize, InvalidUtf8BecomesReplacementAndIsDropped) {
  EXPECT_THAT(Tok("hel\xFFlo"), ElementsAre("hello"));
  EXPECT_THAT(Tok("sister\xF0" "city"), ElementsAre("sister", "##city"));
  EXPECT_THAT(Tok("a \xE4\xB8"), ElementsAre("a"));  // truncated sequence at the end
  EXPECT_THAT(Tok("\xC0\xAF"), ElementsAre());        // overlong '/'
  EXPECT_THAT(Tok("\xED\xA0\x80"), ElementsAre());    // encoded surrogate
}

TEST(TokenizerNormalize, CapitalIWithDotDecomposesBeforeLowercase) {
  // U+0130 has a canonical decomposition (I + U+0307), so NFD and the Mn
  // filter run before lowercasing ever sees it: the result is plain "i",
  // never Rust's two-char full lowercase "i\u0307".
  auto tok = WordPieceTokenizer::FromTokens(
      {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "i", "##\xCC\x87"}, /*do_lower_case=*/true);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_THAT(tok->Tokenize("\xC4\xB0"), ElementsAre("i"));
  // Greek capital sigma lowercases per char (no final-sigma context), as HF.
  EXPECT_THAT(Tok("\xCE\xA3"), ElementsAre("\xCF\x83"));
}

TEST(TokenizerNormalize, HangulDecomposesToJamoWhenUncased) {
  // NFD (part of strip_accents) splits Hangul syllables into conjoining
  // jamo, which are letters (Lo), not marks: HF's uncased BERT does the same.
  EXPECT_THAT(Tok("한국어"),
              ElementsAre("ᄒ", "##ᅡ", "##ᆫ", "##ᄀ", "##ᅮ", "##ᆨ", "##ᄋ", "##ᅥ"));
  // Compatibility-only decompositions (the fi ligature) are not applied.
  EXPECT_THAT(Tok("ﬁne"), ElementsAre("ﬁ", "##ne"));
}

// --- Pre-tokenizer ----------------------------------------------------------

TEST(TokenizerPreTokenize, EachPunctuationCharIsItsOwnToken) {
  EXPECT_THAT(Tok("hello,world!!"), ElementsAre("hello", ",", "world", "!", "!"));
  // ASCII symbols that are not Unicode P* still split (HF's ASCII rule).
  EXPECT_THAT(Tok("$5+5"), ElementsAre("$", "5", "+", "5"));
  // Unicode punctuation splits; a currency symbol (Sc) outside ASCII does not
  // (so the euro sign stays in the word as a continuation piece).
  EXPECT_THAT(Tok("«hello»"), ElementsAre("«", "hello", "»"));
  EXPECT_THAT(Tok("a—b"), ElementsAre("a", "—", "b"));
  EXPECT_THAT(Tok("5€"), ElementsAre("5", "##€"));
}

// --- WordPiece --------------------------------------------------------------

TEST(TokenizerWordPiece, ContinuationPieces) {
  EXPECT_THAT(Tok("Modesto"), ElementsAre("modest", "##o"));
  EXPECT_THAT(Tok("playing"), ElementsAre("playing"));
}

TEST(TokenizerWordPiece, WordWithoutFullMatchIsOneUnk) {
  // The emoji has no piece, so the whole word (not just its tail) is [UNK].
  EXPECT_THAT(Tok("hello ab\xF0\x9F\x98\x80" "cd there"), ElementsAre("hello", "[UNK]", "there"));
}

TEST(TokenizerWordPiece, WordsOverHundredCharsAreUnk) {
  const std::string w100(100, 'a');
  const std::string w101(101, 'a');
  const auto t100 = Tok(w100);
  ASSERT_FALSE(t100.empty());
  EXPECT_NE(t100[0], "[UNK]");
  EXPECT_THAT(Tok(w101), ElementsAre("[UNK]"));
  // The limit counts characters, not bytes: 60 two-byte chars stay a word.
  std::string accented;
  for (int i = 0; i < 60; ++i) accented += "\xC3\xA0";  // 'à' -> 'a' after stripping
  EXPECT_NE(Tok(accented)[0], "[UNK]");
}

// --- Special tokens in text -------------------------------------------------

TEST(TokenizerSpecial, LiteralSpecialTokensInInputAreMatched) {
  EXPECT_THAT(Tok("hello [SEP] world[MASK]"), ElementsAre("hello", "[SEP]", "world", "[MASK]"));
  // Matching is on the raw, case-sensitive text.
  EXPECT_THAT(Tok("[sep]"), ElementsAre("[", "sep", "]"));
}

// --- Post-processing and truncation -----------------------------------------

TEST(TokenizerEncode, SingleAndPairTemplates) {
  const Encoding single = Uncased().Encode("hello world");
  EXPECT_THAT(single.tokens, ElementsAre("[CLS]", "hello", "world", "[SEP]"));
  EXPECT_THAT(single.ids, ElementsAre(101, 7592, 2088, 102));
  EXPECT_THAT(single.type_ids, ElementsAre(0, 0, 0, 0));

  const Encoding pair = Uncased().Encode("hello", std::string_view("world"));
  EXPECT_THAT(pair.tokens, ElementsAre("[CLS]", "hello", "[SEP]", "world", "[SEP]"));
  EXPECT_THAT(pair.type_ids, ElementsAre(0, 0, 0, 1, 1));

  const Encoding empty = Uncased().Encode("");
  EXPECT_THAT(empty.tokens, ElementsAre("[CLS]", "[SEP]"));
}

TEST(TokenizerEncode, TruncatesSingleText) {
  const Encoding e = Uncased().Encode("a b c d e", std::nullopt, 4);
  EXPECT_THAT(e.tokens, ElementsAre("[CLS]", "a", "b", "[SEP]"));
  EXPECT_EQ(Uncased().Encode("a b c d e", std::nullopt, 100).ids.size(), 7u);
  EXPECT_EQ(Uncased().Encode("a b c d e", std::nullopt, 7).ids.size(), 7u);
}

TEST(TokenizerEncode, TruncatesPairLongestFirst) {
  const WordPieceTokenizer& tok = Uncased();
  // Budgets below exclude the 3 specials; cases follow HF tokenizers'
  // truncate_encodings (LongestFirst) with a content budget of 7.
  auto lens = [&](std::string_view a, std::string_view b) {
    const Encoding e = tok.Encode(a, b, 7 + 3);
    size_t first = 0;
    while (e.type_ids[first] == 0) ++first;
    EXPECT_LE(e.ids.size(), 10u);
    return std::make_pair(first - 2, e.ids.size() - first - 1);
  };
  // Only the longer side is cut when the shorter fits.
  EXPECT_EQ(lens("a b", "c d e f g h i j"), std::make_pair(size_t{2}, size_t{5}));
  EXPECT_EQ(lens("c d e f g h i j", "a b"), std::make_pair(size_t{5}, size_t{2}));
  // Both cut: halves, the longer side gets the odd token...
  EXPECT_EQ(lens("a b c d", "e f g h i j k l"), std::make_pair(size_t{3}, size_t{4}));
  EXPECT_EQ(lens("e f g h i j k l", "a b c d"), std::make_pair(size_t{4}, size_t{3}));
  // ...and on a tie the second side gets it.
  EXPECT_EQ(lens("a b c d", "e f g h"), std::make_pair(size_t{3}, size_t{4}));
  EXPECT_EQ(lens("a b c d e f g h", "i j k l m n o p"), std::make_pair(size_t{3}, size_t{4}));
  // Fits: untouched.
  EXPECT_EQ(lens("a b", "c d"), std::make_pair(size_t{2}, size_t{2}));

  // The kept tokens are prefixes of each side, with the right type ids.
  const Encoding e = tok.Encode("a b c d", std::string_view("e f g h i j k l"), 10);
  EXPECT_THAT(e.tokens,
              ElementsAre("[CLS]", "a", "b", "c", "[SEP]", "e", "f", "g", "h", "[SEP]"));
  EXPECT_THAT(e.type_ids, ElementsAre(0, 0, 0, 0, 0, 1, 1, 1, 1, 1));
}

TEST(TokenizerEncode, MaxLengthBelowSpecialsKeepsOnlySpecials) {
  EXPECT_THAT(Uncased().Encode("a b", std::string_view("c"), 2).tokens,
              ElementsAre("[CLS]", "[SEP]", "[SEP]"));
  EXPECT_THAT(Uncased().Encode("a b", std::nullopt, 1).tokens, ElementsAre("[CLS]", "[SEP]"));
}

TEST(TokenizerEncode, ConcurrentEncodesAgree) {
  const std::string text = "Héllo, wörld! It's a charming and often affecting journey.";
  const Encoding want = Uncased().Encode(text);
  std::vector<std::thread> threads;
  std::vector<int> ok(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      int good = 0;
      for (int i = 0; i < 200; ++i) good += Uncased().Encode(text).ids == want.ids;
      ok[t] = good;
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_THAT(ok, ElementsAre(200, 200, 200, 200));
}

TEST(TokenizerEncode, ArbitraryBytesKeepInvariants) {
  // Deterministic pseudo-random bytes, biased towards UTF-8 lead bytes,
  // spaces and brackets, must never crash and must keep the output coherent.
  const WordPieceTokenizer& tok = Uncased();
  uint64_t x = 0x9E3779B97F4A7C15ull;
  auto next = [&x] {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return x;
  };
  static constexpr unsigned char kBias[] = {' ', '[', ']', 'S', 'E', 'P', 0xC3, 0xA9,
                                            0xE4, 0xB8, 0xAD, 0xF0, 0x9F, 0x80, 0xCC, 0x81};
  for (int round = 0; round < 2000; ++round) {
    std::string a, b;
    const size_t la = next() % 64, lb = next() % 64;
    for (size_t i = 0; i < la + lb; ++i) {
      const uint64_t r = next();
      const char c = static_cast<char>((r & 1) ? kBias[(r >> 1) % sizeof(kBias)] : (r >> 8) & 0xFF);
      (i < la ? a : b).push_back(c);
    }
    const int max_length = static_cast<int>(next() % 40);
    const Encoding e = tok.Encode(a, std::string_view(b), max_length);
    ASSERT_EQ(e.ids.size(), e.type_ids.size());
    ASSERT_EQ(e.ids.size(), e.tokens.size());
    ASSERT_GE(e.ids.size(), 3u);
    if (max_length >= 3) {
      ASSERT_LE(e.ids.size(), static_cast<size_t>(max_length));
    }
    EXPECT_EQ(e.ids.front(), tok.cls_id());
    EXPECT_EQ(e.ids.back(), tok.sep_id());
    for (size_t i = 0; i < e.ids.size(); ++i) {
      ASSERT_GE(e.ids[i], 0);
      ASSERT_LT(e.ids[i], tok.vocab_size());
      ASSERT_EQ(e.tokens[i], tok.tokens()[static_cast<size_t>(e.ids[i])]);
      if (i > 0) {
        ASSERT_GE(e.type_ids[i], e.type_ids[i - 1]);
      }
    }
  }
}

// --- Cased mode -------------------------------------------------------------

TEST(TokenizerCased, NoLowercaseNoAccentStripping) {
  const std::vector<std::string> vocab = {"[PAD]", "[UNK]", "[CLS]", "[SEP]",
                                          "Héllo", "hello", "H",     "##ello"};
  auto cased = WordPieceTokenizer::FromTokens(vocab, /*do_lower_case=*/false);
  ASSERT_TRUE(cased.ok()) << cased.status();
  EXPECT_FALSE(cased->do_lower_case());
  EXPECT_THAT(cased->Tokenize("Héllo Hello hello"), ElementsAre("Héllo", "H", "##ello", "hello"));
  // Clean-text and CJK rules still apply when cased.
  EXPECT_THAT(cased->Tokenize("hel\x01lo\tH"), ElementsAre("hello", "H"));

  auto uncased = WordPieceTokenizer::FromTokens(vocab, /*do_lower_case=*/true);
  ASSERT_TRUE(uncased.ok());
  EXPECT_THAT(uncased->Tokenize("Héllo Hello"), ElementsAre("hello", "hello"));
}

// --- Bad vocab files --------------------------------------------------------

std::string WriteTemp(const std::string& name, const std::string& content) {
  const std::string path = ::testing::TempDir() + "/tokenizer_test_" + name;
  std::ofstream(path, std::ios::binary) << content;
  return path;
}

TEST(TokenizerVocabErrors, MissingFile) {
  const std::string path = ::testing::TempDir() + "/no_such_vocab.txt";
  auto tok = WordPieceTokenizer::FromVocabFile(path, true);
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(tok.status().message()), StartsWith(path));
}

TEST(TokenizerVocabErrors, MissingUnk) {
  const std::string path = WriteTemp("no_unk.txt", "[PAD]\n[CLS]\n[SEP]\nhello\n");
  auto tok = WordPieceTokenizer::FromVocabFile(path, true);
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(tok.status().message()), StartsWith(path));
  EXPECT_THAT(std::string(tok.status().message()), HasSubstr("[UNK]"));
}

TEST(TokenizerVocabErrors, EmptyFileDuplicateAndBadLines) {
  auto empty = WordPieceTokenizer::FromVocabFile(WriteTemp("empty.txt", ""), true);
  ASSERT_FALSE(empty.ok());
  EXPECT_THAT(std::string(empty.status().message()), HasSubstr("empty"));

  const std::string dup_path =
      WriteTemp("dup.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\nsecretword\nsecretword\n");
  auto dup = WordPieceTokenizer::FromVocabFile(dup_path, true);
  ASSERT_FALSE(dup.ok());
  const std::string msg(dup.status().message());
  EXPECT_THAT(msg, StartsWith(dup_path + ":6: duplicate token"));
  EXPECT_THAT(msg, HasSubstr(":5"));
  EXPECT_THAT(msg, ::testing::Not(HasSubstr("secretword")));  // never echo contents

  auto blank = WordPieceTokenizer::FromVocabFile(
      WriteTemp("blank.txt", "[PAD]\n\n[UNK]\n[CLS]\n[SEP]\n"), true);
  ASSERT_FALSE(blank.ok());
  EXPECT_THAT(std::string(blank.status().message()), HasSubstr(":2: empty token"));

  auto tokens = WordPieceTokenizer::FromTokens({"[PAD]", "[UNK]", "[CLS]"}, true);
  ASSERT_FALSE(tokens.ok());
  EXPECT_THAT(std::string(tokens.status().message()), HasSubstr("[SEP]"));
}

TEST(TokenizerVocabErrors, CrlfVocabIsTrimmed) {
  auto tok = WordPieceTokenizer::FromVocabFile(
      WriteTemp("crlf.txt", "[PAD]\r\n[UNK]\r\n[CLS]\r\n[SEP]\r\nhello\r\n"), true);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ(tok->vocab_size(), 5);
  EXPECT_THAT(tok->Encode("Hello").ids, ElementsAre(2, 4, 3));
}

}  // namespace
}  // namespace freezetune::model
