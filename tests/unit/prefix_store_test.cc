// PrefixStore: rows round-trip, the byte budget holds, and only entries no
// trainer holds are evicted, least recently used first.
#include "server/train/prefix_store.h"

#include <ATen/ATen.h>

#include <memory>
#include <vector>

#include "gtest/gtest.h"

namespace freezetune::train {
namespace {

// [rows, length, hidden] filled with `value`.
at::Tensor Hidden(int64_t rows, int64_t length, int64_t hidden, float value) {
  return at::full({rows, length, hidden}, value);
}

TEST(PrefixStoreTest, GatherReturnsWhatPutStoredPaddedWithTheCallersZeros) {
  PrefixStore store(1 << 20);
  std::shared_ptr<PrefixEntry> entry = store.Open("k", 4);
  at::Tensor out = at::zeros({2, 3, 2});
  EXPECT_FALSE(entry->Gather({0, 1}, out));
  entry->Put({1, 0}, {2, 3}, Hidden(2, 3, 2, 5.0));
  EXPECT_EQ(store.bytes(), (2 + 3) * 2 * 4);
  ASSERT_TRUE(entry->Gather({0, 1}, out));
  EXPECT_EQ(out[0].sum().item<float>(), 3 * 2 * 5.0f);
  EXPECT_EQ(out[1].sum().item<float>(), 2 * 2 * 5.0f);  // length 2: row 2 stays zero
  EXPECT_EQ(out[1][2].sum().item<float>(), 0.0f);
  EXPECT_FALSE(entry->Gather({0, 2}, out));
  // A row already stored is not replaced.
  entry->Put({0}, {3}, Hidden(1, 3, 2, 9.0));
  ASSERT_TRUE(entry->Gather({0}, out));
  EXPECT_EQ(out[0].sum().item<float>(), 3 * 2 * 5.0f);
  EXPECT_EQ(store.Find("k"), entry);
  EXPECT_EQ(store.Find("other"), nullptr);
}

TEST(PrefixStoreTest, RowsBeyondTheBudgetAreNotStoredWhileEntriesAreHeld) {
  PrefixStore store(3 * 4 * 4);  // three rows of length 1, hidden 4
  std::shared_ptr<PrefixEntry> a = store.Open("a", 4);
  std::shared_ptr<PrefixEntry> b = store.Open("b", 4);
  a->Put({0, 1}, {1, 1}, Hidden(2, 1, 4, 1.0));
  b->Put({0, 1}, {1, 1}, Hidden(2, 1, 4, 1.0));  // only one fits
  EXPECT_EQ(store.bytes(), 3 * 16);
  at::Tensor out = at::zeros({1, 1, 4});
  EXPECT_TRUE(b->Gather({0}, out));
  EXPECT_FALSE(b->Gather({1}, out));
  EXPECT_TRUE(a->Gather({1}, out));  // held entries are never evicted
}

TEST(PrefixStoreTest, UnheldEntriesAreEvictedLeastRecentlyUsedFirst) {
  PrefixStore store(2 * 4 * 4);  // two rows of length 1, hidden 4
  store.Open("old", 1)->Put({0}, {1}, Hidden(1, 1, 4, 1.0));
  store.Open("recent", 1)->Put({0}, {1}, Hidden(1, 1, 4, 1.0));
  ASSERT_NE(store.Find("old"), nullptr);  // now "recent" is the older use
  std::shared_ptr<PrefixEntry> fresh = store.Open("fresh", 1);
  fresh->Put({0}, {1}, Hidden(1, 1, 4, 1.0));
  EXPECT_EQ(store.Find("recent"), nullptr);
  EXPECT_NE(store.Find("old"), nullptr);
  at::Tensor out = at::zeros({1, 1, 4});
  EXPECT_TRUE(fresh->Gather({0}, out));
  EXPECT_EQ(store.bytes(), 2 * 16);
}

}  // namespace
}  // namespace freezetune::train
