// The tokenization cache: hits on equal content, misses when any part of
// the key changes (texts, pairs, labels, label space, order, max_length,
// tokenizer vocab or lowercasing), LRU eviction within the byte budget,
// failures passed through unchanged and never cached, concurrent use.
// Real tokenizers (the bert-base-uncased vocab and a small one), no mocks.
#include "server/train/encode_cache.h"

#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace freezetune::train {
namespace {

using data::EncodedDataset;
using data::LabelSpace;
using data::RawExample;

const model::WordPieceTokenizer& Bert(bool lower = true) {
  static const auto* lowered = new model::WordPieceTokenizer(*model::WordPieceTokenizer::FromVocabFile(
      std::string(FREEZETUNE_SOURCE_DIR) + "/../shared/data/bert-base-uncased-vocab.txt", true));
  static const auto* cased = new model::WordPieceTokenizer(*model::WordPieceTokenizer::FromVocabFile(
      std::string(FREEZETUNE_SOURCE_DIR) + "/../shared/data/bert-base-uncased-vocab.txt", false));
  return lower ? *lowered : *cased;
}

model::WordPieceTokenizer Small(const std::string& extra) {
  auto t = model::WordPieceTokenizer::FromTokens(
      {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "movie", "good", "bad", extra}, true);
  EXPECT_TRUE(t.ok()) << t.status();
  return std::move(*t);
}

std::vector<RawExample> Examples(int n, int offset = 0) {
  std::vector<RawExample> out;
  for (int i = 0; i < n; ++i) {
    const int k = i + offset;
    out.push_back({absl::StrCat("The movie number ", k, " was ", k % 2 ? "good" : "bad"),
                   std::nullopt, k % 2 ? "pos" : "neg", i + 2});
  }
  return out;
}

const LabelSpace kSpace{{"neg", "pos"}, false};

bool Same(const EncodedDataset& a, const EncodedDataset& b) {
  return a.ids == b.ids && a.type_ids == b.type_ids && a.label_ids == b.label_ids &&
         a.targets == b.targets;
}

TEST(EncodeCacheTest, HitOnSameContentEqualsDirectEncoding) {
  EncodeCache cache(kDefaultEncodeCacheBytes);
  const auto direct = data::EncodeDataset(Examples(50), kSpace, Bert(), 16, "job.train");
  ASSERT_TRUE(direct.ok()) << direct.status();

  auto first = cache.GetOrEncode(Examples(50), kSpace, Bert(), 16, "job.train");
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(cache.stats().misses, 1);
  EXPECT_EQ(cache.stats().hits, 0);

  // Equal content in a fresh vector, other line numbers, other field: a hit.
  std::vector<RawExample> again = Examples(50);
  for (RawExample& ex : again) ex.line += 100;
  auto second = cache.GetOrEncode(again, kSpace, Bert(), 16, "job.validation");
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(cache.stats().hits, 1);
  EXPECT_EQ(cache.stats().misses, 1);
  EXPECT_EQ(cache.stats().entries, 1);
  EXPECT_EQ(cache.stats().bytes, EncodedBytes(*second));  // what the entry holds
  // 50 examples of 8 ids and 8 type ids ([CLS] + 6 words + [SEP]), int32.
  EXPECT_GE(cache.stats().bytes, 50 * 2 * 8 * 4);
  EXPECT_TRUE(Same(*first, *direct));
  EXPECT_TRUE(Same(*second, *direct));
}

TEST(EncodeCacheTest, MissWhenAnyKeyPartChanges) {
  const std::vector<RawExample> base = Examples(20);
  const EncodeKey bert = TokenizerFingerprint(Bert());
  const EncodeKey key = EncodeCacheKey(base, kSpace, bert, 16);
  EXPECT_EQ(key, EncodeCacheKey(Examples(20), kSpace, bert, 16));
  EXPECT_EQ(bert, TokenizerFingerprint(Bert()));

  std::vector<std::vector<RawExample>> variants(6, base);
  variants[0][7].text += "!";                            // one text
  variants[1][6].label = "pos";                          // one label (was neg)
  variants[2][3].text_pair = "";                         // an empty pair is still a pair
  std::swap(variants[3][0], variants[3][1]);             // order
  variants[4].pop_back();                                // count
  variants[5][7].text = "The movie number 7 wa";         // a boundary shift between
  variants[5][7].label = "s goodpos";                    // text and label
  for (size_t v = 0; v < variants.size(); ++v) {
    EXPECT_NE(EncodeCacheKey(variants[v], kSpace, bert, 16), key) << "variant " << v;
  }
  EXPECT_NE(EncodeCacheKey(base, kSpace, bert, 17), key);
  EXPECT_NE(EncodeCacheKey(base, LabelSpace{{"pos", "neg"}, false}, bert, 16), key);
  EXPECT_NE(EncodeCacheKey(base, LabelSpace{{"neg", "pos", "x"}, false}, bert, 16), key);
  EXPECT_NE(TokenizerFingerprint(Bert(false)), bert);
  EXPECT_NE(TokenizerFingerprint(Small("great")), TokenizerFingerprint(Small("fine")));

  // Through the cache: each change is a miss, and each result is right.
  EncodeCache cache(kDefaultEncodeCacheBytes);
  ASSERT_TRUE(cache.GetOrEncode(base, kSpace, Bert(), 16, "f").ok());
  int64_t misses = 1;
  auto expect_miss = [&](const std::vector<RawExample>& ex, const LabelSpace& space,
                         const model::WordPieceTokenizer& tok, int max_length,
                         const std::string& what) {
    auto got = cache.GetOrEncode(ex, space, tok, max_length, "f");
    auto direct = data::EncodeDataset(ex, space, tok, max_length, "f");
    ASSERT_TRUE(got.ok() && direct.ok()) << what;
    EXPECT_EQ(cache.stats().misses, ++misses) << what;
    EXPECT_EQ(cache.stats().hits, 0) << what;
    EXPECT_TRUE(Same(*got, *direct)) << what;
  };
  expect_miss(variants[0], kSpace, Bert(), 16, "text");
  expect_miss(variants[1], kSpace, Bert(), 16, "label");
  expect_miss(variants[2], kSpace, Bert(), 16, "pair");
  expect_miss(base, kSpace, Bert(), 8, "max_length");
  expect_miss(base, LabelSpace{{"pos", "neg"}, false}, Bert(), 16, "label space");
  expect_miss(base, kSpace, Bert(false), 16, "tokenizer lowercasing");
  const model::WordPieceTokenizer small = Small("number");
  expect_miss(base, kSpace, small, 16, "tokenizer vocab");
  // And the original is still there.
  ASSERT_TRUE(cache.GetOrEncode(base, kSpace, Bert(), 16, "f").ok());
  EXPECT_EQ(cache.stats().hits, 1);
}

TEST(EncodeCacheTest, EvictsLeastRecentlyUsedBeyondBudget) {
  const auto a = Examples(40, 0), b = Examples(40, 1000), c = Examples(40, 2000);
  const auto one = data::EncodeDataset(a, kSpace, Bert(), 32, "f");
  ASSERT_TRUE(one.ok());
  const int64_t size = EncodedBytes(*one);
  ASSERT_GT(size, 0);
  // Room for two of these datasets (their sizes differ by a few tokens), not three.
  EncodeCache cache(size * 5 / 2);

  ASSERT_TRUE(cache.GetOrEncode(a, kSpace, Bert(), 32, "f").ok());
  ASSERT_TRUE(cache.GetOrEncode(b, kSpace, Bert(), 32, "f").ok());
  ASSERT_TRUE(cache.GetOrEncode(a, kSpace, Bert(), 32, "f").ok());  // a is now the newest
  EXPECT_EQ(cache.stats().hits, 1);
  EXPECT_EQ(cache.stats().entries, 2);
  ASSERT_TRUE(cache.GetOrEncode(c, kSpace, Bert(), 32, "f").ok());  // evicts b
  EXPECT_EQ(cache.stats().evictions, 1);
  EXPECT_EQ(cache.stats().entries, 2);
  EXPECT_LE(cache.stats().bytes, cache.max_bytes());

  ASSERT_TRUE(cache.GetOrEncode(a, kSpace, Bert(), 32, "f").ok());
  ASSERT_TRUE(cache.GetOrEncode(c, kSpace, Bert(), 32, "f").ok());
  EXPECT_EQ(cache.stats().hits, 3);
  const int64_t misses = cache.stats().misses;
  ASSERT_TRUE(cache.GetOrEncode(b, kSpace, Bert(), 32, "f").ok());
  EXPECT_EQ(cache.stats().misses, misses + 1);  // b was the one evicted
}

TEST(EncodeCacheTest, DatasetOverTheBudgetIsReturnedButNotKept) {
  EncodeCache small_budget(64);
  auto got = small_budget.GetOrEncode(Examples(30), kSpace, Bert(), 16, "f");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->size(), 30);
  EXPECT_EQ(small_budget.stats().entries, 0);
  EXPECT_EQ(small_budget.stats().bytes, 0);

  EncodeCache off(0);
  ASSERT_TRUE(off.GetOrEncode({}, kSpace, Bert(), 16, "f").ok());
  ASSERT_TRUE(off.GetOrEncode({}, kSpace, Bert(), 16, "f").ok());
  EXPECT_EQ(off.stats().entries, 0);
  EXPECT_EQ(off.stats().hits, 0);
}

TEST(EncodeCacheTest, FailuresPassThroughUnchangedAndAreNotCached) {
  std::vector<RawExample> bad = Examples(10);
  bad[6].label = "maybe";
  const auto direct = data::EncodeDataset(bad, kSpace, Bert(), 16, "job.validation");
  ASSERT_FALSE(direct.ok());
  EXPECT_THAT(std::string(direct.status().message()), ::testing::HasSubstr("line 8"));

  EncodeCache cache(kDefaultEncodeCacheBytes);
  for (int round = 1; round <= 2; ++round) {
    auto got = cache.GetOrEncode(bad, kSpace, Bert(), 16, "job.validation");
    ASSERT_FALSE(got.ok());
    EXPECT_EQ(got.status(), direct.status());
    EXPECT_EQ(cache.stats().misses, round);  // tried again, not served from the cache
    EXPECT_EQ(cache.stats().entries, 0);
  }
  const auto too_short = cache.GetOrEncode(Examples(3), kSpace, Bert(), 2, "job.train");
  EXPECT_EQ(too_short.status(), data::EncodeDataset(Examples(3), kSpace, Bert(), 2, "job.train").status());
  EXPECT_EQ(cache.stats().entries, 0);
}

TEST(EncodeCacheTest, ConcurrentLookupsAgree) {
  EncodeCache cache(kDefaultEncodeCacheBytes);
  const auto direct = data::EncodeDataset(Examples(200), kSpace, Bert(), 24, "f");
  ASSERT_TRUE(direct.ok());
  constexpr int kThreads = 4, kRounds = 5;
  std::vector<int> same(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const auto examples = Examples(200);
      for (int r = 0; r < kRounds; ++r) {
        auto got = cache.GetOrEncode(examples, kSpace, Bert(), 24, "f");
        if (got.ok() && Same(*got, *direct)) ++same[static_cast<size_t>(t)];
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(same[static_cast<size_t>(t)], kRounds);
  const EncodeCache::Stats s = cache.stats();
  EXPECT_EQ(s.hits + s.misses, kThreads * kRounds);
  EXPECT_GE(s.hits, kThreads * kRounds - kThreads);  // at most one miss per thread
  EXPECT_EQ(s.entries, 1);
}

TEST(EncodeCacheTest, GlobalIsOneInstanceWithTheDefaultBudget) {
  EXPECT_EQ(&EncodeCache::Global(), &EncodeCache::Global());
  EXPECT_EQ(EncodeCache::Global().max_bytes(), kDefaultEncodeCacheBytes);
}

}  // namespace
}  // namespace freezetune::train
