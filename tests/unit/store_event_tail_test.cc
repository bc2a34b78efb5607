// EventTail: recent events served from memory, and a refusal (read the
// database) whenever the tail cannot prove it holds everything asked for.
#include "server/store/event_tail.h"

#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace freezetune::store {
namespace {

TEST(EventTailTest, ServesRecentEventsAndRefusesWhatItLacks) {
  EventTail tail(/*tail_size=*/3);
  std::vector<std::pair<int64_t, std::string>> out;
  EXPECT_FALSE(tail.Read("job/a", 0, 0, &out));  // nothing published yet
  for (int s = 1; s <= 5; ++s) tail.Publish("job/a", s, "e" + std::to_string(s), false);
  // Holds 3..5.
  EXPECT_FALSE(tail.Read("job/a", 0, 0, &out));
  EXPECT_FALSE(tail.Read("job/a", 1, 0, &out));
  ASSERT_TRUE(tail.Read("job/a", 2, 0, &out));
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].first, 3);
  EXPECT_EQ(out[0].second, "e3");
  out.clear();
  ASSERT_TRUE(tail.Read("job/a", 3, 1, &out));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].first, 4);
  out.clear();
  ASSERT_TRUE(tail.Read("job/a", 5, 0, &out));  // caught up
  EXPECT_TRUE(out.empty());
  EXPECT_FALSE(tail.Read("job/b", 0, 0, &out));  // keys are separate
  // A gap restarts the tail rather than serving a hole.
  tail.Publish("job/a", 9, "e9", false);
  EXPECT_FALSE(tail.Read("job/a", 5, 0, &out));
  ASSERT_TRUE(tail.Read("job/a", 8, 0, &out));
  ASSERT_EQ(out.size(), 1u);
  out.clear();
  // The final event drops the tail: late readers go to the database.
  tail.Publish("job/a", 10, "e10", true);
  EXPECT_FALSE(tail.Read("job/a", 9, 0, &out));
  EXPECT_TRUE(out.empty());
}

}  // namespace
}  // namespace freezetune::store
