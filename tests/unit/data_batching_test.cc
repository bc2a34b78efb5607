// Tests for server/data/batching.h: plan determinism and coverage, bucketing
// that reduces padding while staying random, and collation values.
#include "server/data/batching.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <random>
#include <set>
#include <stdexcept>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace freezetune::data {
namespace {

using ::testing::ElementsAre;

// n examples with lengths drawn from [3, 60], ids = 100 + position, a pair
// segment in the second half of each example.
EncodedDataset Synthetic(int n, uint64_t seed = 7) {
  std::mt19937_64 rng(seed);
  EncodedDataset ds;
  for (int i = 0; i < n; ++i) {
    const int len = 3 + static_cast<int>(rng() % 58);
    std::vector<int32_t> ids(len), types(len);
    for (int j = 0; j < len; ++j) {
      ids[j] = 100 + j;
      types[j] = j >= len / 2 ? 1 : 0;
    }
    ds.ids.push_back(ids);
    ds.type_ids.push_back(types);
    ds.label_ids.push_back(i % 3);
  }
  return ds;
}

void ExpectCoverage(const std::vector<std::vector<int64_t>>& plan, int n, int batch_size) {
  std::vector<int64_t> all;
  int partial = 0;
  for (const auto& b : plan) {
    ASSERT_FALSE(b.empty());
    ASSERT_LE(static_cast<int>(b.size()), batch_size);
    partial += static_cast<int>(b.size()) < batch_size;
    all.insert(all.end(), b.begin(), b.end());
  }
  EXPECT_LE(partial, 1);
  std::sort(all.begin(), all.end());
  ASSERT_EQ(static_cast<int>(all.size()), n);
  for (int i = 0; i < n; ++i) ASSERT_EQ(all[static_cast<size_t>(i)], i);
}

TEST(PlanBatchesTest, EveryIndexExactlyOnceInEveryMode) {
  const EncodedDataset ds = Synthetic(1003);
  for (bool shuffle : {false, true}) {
    for (bool bucketed : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "shuffle=" << shuffle << " bucketed=" << bucketed);
      ExpectCoverage(PlanBatches(ds, 16, 42, 0, shuffle, bucketed), 1003, 16);
    }
  }
  ExpectCoverage(PlanBatches(ds, 0, 42, 0, true, true), 1003, 1);  // clamped to 1
  EXPECT_TRUE(PlanBatches(EncodedDataset(), 8, 1, 0, true, true).empty());
}

TEST(PlanBatchesTest, DeterministicForSeedAndEpochAndDifferentOtherwise) {
  const EncodedDataset ds = Synthetic(500);
  for (bool bucketed : {false, true}) {
    const auto a = PlanBatches(ds, 8, 42, 3, true, bucketed);
    EXPECT_EQ(a, PlanBatches(ds, 8, 42, 3, true, bucketed));
    EXPECT_NE(a, PlanBatches(ds, 8, 42, 4, true, bucketed));
    EXPECT_NE(a, PlanBatches(ds, 8, 43, 3, true, bucketed));
  }
  // Without shuffling, dataset order.
  const auto plain = PlanBatches(ds, 8, 1, 0, false, false);
  EXPECT_THAT(plain[0], ElementsAre(0, 1, 2, 3, 4, 5, 6, 7));
}

TEST(PlanBatchesTest, FixedPlanIsPinned) {
  // Pins the exact shuffle: a change of RNG or algorithm would silently change
  // every job's data order (and break resuming from a checkpoint mid-epoch).
  const EncodedDataset ds = Synthetic(10);
  const auto plan = PlanBatches(ds, 4, 42, 0, true, false);
  const std::vector<std::vector<int64_t>> want = {{9, 6, 2, 0}, {1, 4, 3, 8}, {5, 7}};
  EXPECT_EQ(plan, want);
}

TEST(PlanBatchesTest, BucketingCutsPaddingButStaysRandom) {
  const EncodedDataset ds = Synthetic(3200);
  const auto random = PlanBatches(ds, 32, 42, 0, true, false);
  const auto bucketed = PlanBatches(ds, 32, 42, 0, true, true);
  int64_t real = 0;
  for (const auto& ids : ds.ids) real += static_cast<int64_t>(ids.size());
  const int64_t pad_random = PaddedTokens(ds, random) - real;
  const int64_t pad_bucketed = PaddedTokens(ds, bucketed) - real;
  EXPECT_LT(pad_bucketed * 5, pad_random) << pad_bucketed << " vs " << pad_random;
  // Batch order is shuffled: lengths of consecutive batches are not sorted.
  std::vector<size_t> first_len;
  for (const auto& b : bucketed) first_len.push_back(ds.ids[static_cast<size_t>(b[0])].size());
  EXPECT_FALSE(std::is_sorted(first_len.begin(), first_len.end()));
  // Eval mode (no shuffle) sorts by length overall.
  const auto eval = PlanBatches(ds, 32, 0, 0, false, true);
  EXPECT_LE(PaddedTokens(ds, eval), PaddedTokens(ds, bucketed));
}

TEST(CollateBatchTest, DynamicPaddingMaskAndTypes) {
  EncodedDataset ds;
  ds.ids = {{101, 7, 102}, {101, 8, 9, 102, 10, 102}, {101, 102}};
  ds.type_ids = {{0, 0, 0}, {0, 0, 0, 0, 1, 1}, {0, 0}};
  ds.label_ids = {1, 0, 2};
  const Batch b = CollateBatch(ds, {2, 0});
  ASSERT_EQ(b.input_ids.sizes(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(b.input_ids.scalar_type(), at::kLong);
  EXPECT_TRUE(at::equal(b.input_ids, at::tensor({101, 102, 0, 101, 7, 102}, at::kLong).view({2, 3})));
  EXPECT_TRUE(at::equal(b.attention_mask, at::tensor({1, 1, 0, 1, 1, 1}, at::kLong).view({2, 3})));
  EXPECT_TRUE(at::equal(b.labels, at::tensor({2, 1}, at::kLong)));
  EXPECT_EQ(b.tokens, 5);
  EXPECT_THAT(b.indices, ElementsAre(2, 0));

  const Batch full = CollateBatch(ds, {0, 1}, /*pad_id=*/5);
  ASSERT_EQ(full.input_ids.size(1), 6);
  EXPECT_TRUE(at::equal(full.token_type_ids,
                        at::tensor({0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1}, at::kLong).view({2, 6})));
  EXPECT_EQ(full.input_ids[0][5].item<int64_t>(), 5);  // pad id
  EXPECT_EQ(full.attention_mask.sum().item<int64_t>(), full.tokens);
}

TEST(CollateBatchTest, RegressionTargetsAndBadIndices) {
  EncodedDataset ds;
  ds.ids = {{101, 102}, {101, 5, 102}};
  ds.type_ids = {{0, 0}, {0, 0, 0}};
  ds.targets = {0.25f, -3.5f};
  const Batch b = CollateBatch(ds, {1, 0});
  EXPECT_EQ(b.labels.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::equal(b.labels, at::tensor({-3.5f, 0.25f})));
  EXPECT_THROW(CollateBatch(ds, {2}), std::out_of_range);
  EXPECT_THROW(CollateBatch(ds, {}), std::out_of_range);
  EncodedDataset unlabeled;
  unlabeled.ids = {{101, 102}};
  EXPECT_FALSE(CollateBatch(unlabeled, {0}).labels.defined());
}

}  // namespace
}  // namespace freezetune::data
