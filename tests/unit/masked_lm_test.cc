// Masked-LM masking: what gets selected (never specials or padding; about p
// of the tokens; whole words together), what replaces it (80/10/10), and
// determinism in (seed, dataset row).
#include "server/train/masked_lm.h"

#include <ATen/ATen.h>

#include <map>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace freezetune::train {
namespace {

// [PAD] [UNK] [CLS] [SEP] [MASK], whole words w0..w49 and pieces ##p0..##p9.
model::WordPieceTokenizer Tokenizer() {
  std::vector<std::string> vocab = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
  for (int i = 0; i < 50; ++i) vocab.push_back("w" + std::to_string(i));
  for (int i = 0; i < 10; ++i) vocab.push_back("##p" + std::to_string(i));
  auto t = model::WordPieceTokenizer::FromTokens(vocab, true);
  EXPECT_TRUE(t.ok()) << t.status();
  return std::move(*t);
}

constexpr int64_t kPad = 0, kCls = 2, kSep = 3, kMask = 4, kFirstWord = 5, kFirstPiece = 55;

// Rows of [CLS] tokens... [SEP] padded to `t`; `pieces` makes every other
// token a "##" continuation of the one before it.
data::Batch MakeBatch(int64_t rows, int64_t len, int64_t t, bool pieces, int64_t first_index = 0) {
  data::Batch b;
  b.input_ids = at::full({rows, t}, kPad, at::kLong);
  b.token_type_ids = at::zeros({rows, t}, at::kLong);
  b.attention_mask = at::zeros({rows, t}, at::kLong);
  for (int64_t r = 0; r < rows; ++r) {
    b.input_ids[r][0] = kCls;
    for (int64_t j = 1; j <= len; ++j) {
      const bool piece = pieces && j % 2 == 0;
      b.input_ids[r][j] = piece ? kFirstPiece + (j % 10) : kFirstWord + ((r + j) % 50);
    }
    b.input_ids[r][len + 1] = kSep;
    b.attention_mask[r].slice(0, 0, len + 2).fill_(1);
    b.indices.push_back(first_index + r);
  }
  return b;
}

TEST(MlmMaskingTest, SelectsAboutPOfRealTokensAndSplits801010) {
  const auto tok = Tokenizer();
  MlmMasker masker(tok, {0.15, false});
  data::Batch b = MakeBatch(400, 40, 48, false);
  const at::Tensor original = b.input_ids.clone();
  const at::Tensor labels = masker.Apply(b, 7);
  const at::Tensor selected = labels.ne(kNotPredicted);
  // Never [CLS], [SEP] or padding.
  EXPECT_FALSE(selected.slice(1, 0, 1).any().item<bool>());
  EXPECT_FALSE(selected.slice(1, 41).any().item<bool>());
  // Labels are the original ids where selected.
  EXPECT_TRUE(at::equal(labels.masked_select(selected), original.masked_select(selected)));
  const double n = selected.sum().item<double>();
  EXPECT_NEAR(n / (400.0 * 40.0), 0.15, 0.012);
  const at::Tensor now = b.input_ids.masked_select(selected);
  const at::Tensor was = original.masked_select(selected);
  const double masked = now.eq(kMask).sum().item<double>();
  const double kept = now.eq(was).sum().item<double>();
  const double random = n - masked - kept;
  EXPECT_NEAR(masked / n, 0.8, 0.03);
  EXPECT_NEAR(kept / n, 0.1 + 0.1 / 65, 0.03);  // a random draw may hit the same id
  EXPECT_NEAR(random / n, 0.1, 0.03);
  // Unselected positions are untouched.
  EXPECT_TRUE(at::equal(b.input_ids.masked_select(~selected), original.masked_select(~selected)));
}

TEST(MlmMaskingTest, DeterministicPerSeedAndRowNotBatch) {
  const auto tok = Tokenizer();
  MlmMasker masker(tok, {0.15, false});
  data::Batch a = MakeBatch(8, 20, 24, false);
  data::Batch b = MakeBatch(8, 20, 24, false);
  EXPECT_TRUE(at::equal(masker.Apply(a, 3), masker.Apply(b, 3)));
  EXPECT_TRUE(at::equal(a.input_ids, b.input_ids));
  data::Batch c = MakeBatch(8, 20, 24, false);
  data::Batch d = MakeBatch(8, 20, 24, false);
  EXPECT_FALSE(at::equal(masker.Apply(c, 4), masker.Apply(d, 3)));
  // Row 5 alone in a batch gets the masks it got among the others.
  data::Batch all = MakeBatch(8, 20, 24, false);
  const at::Tensor all_labels = masker.Apply(all, 3);
  data::Batch one = MakeBatch(1, 20, 24, false, /*first_index=*/5);
  one.input_ids[0].copy_(MakeBatch(8, 20, 24, false).input_ids[5]);
  EXPECT_TRUE(at::equal(masker.Apply(one, 3)[0], all_labels[5]));
}

TEST(MlmMaskingTest, EverySequenceGetsAPrediction) {
  const auto tok = Tokenizer();
  MlmMasker masker(tok, {0.01, false});
  data::Batch b = MakeBatch(50, 3, 8, false);
  const at::Tensor labels = masker.Apply(b, 1);
  EXPECT_TRUE(labels.ne(kNotPredicted).any(1).all().item<bool>());
}

TEST(MlmMaskingTest, WholeWordsAreSelectedTogether) {
  const auto tok = Tokenizer();
  MlmMasker masker(tok, {0.15, true});
  data::Batch b = MakeBatch(200, 40, 44, /*pieces=*/true);
  const at::Tensor labels = masker.Apply(b, 11);
  const at::Tensor sel = labels.ne(kNotPredicted);
  // Words are (odd j, j + 1): both or neither.
  for (int64_t j = 1; j < 40; j += 2) {
    EXPECT_TRUE(at::equal(sel.select(1, j), sel.select(1, j + 1))) << j;
  }
  // Budget round(0.15 * 40) = 6 tokens = 3 words per row.
  EXPECT_TRUE(sel.sum(1).eq(6).all().item<bool>());
}

}  // namespace
}  // namespace freezetune::train
