// SubscriberHub: inline Notify, Post delivered on the hub's thread (also
// while the poster holds a lock the callback takes), coalescing without
// losing a wake-up, per-key counts, and no callback after Unsubscribe.
#include "server/store/subscriber_hub.h"

#include <atomic>
#include <chrono>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace freezetune::store {
namespace {

TEST(SubscriberHubTest, NotifyRunsOnlyTheKeysCallbacksInline) {
  int a = 0, b = 0;
  SubscriberHub hub;  // after what its callbacks use: destroyed (joined) first
  auto sub_a = hub.Subscribe("a", [&] { ++a; });
  hub.Subscribe("b", [&] { ++b; });
  EXPECT_EQ(hub.subscriber_count(), 2u);
  EXPECT_EQ(hub.subscriber_count("a"), 1u);
  EXPECT_EQ(hub.subscriber_count("nope"), 0u);
  hub.Notify("a");
  EXPECT_EQ(a, 1);  // before Notify returned
  EXPECT_EQ(b, 0);
  hub.Unsubscribe(sub_a);
  hub.Notify("a");
  EXPECT_EQ(a, 1);
  EXPECT_EQ(hub.subscriber_count("a"), 0u);
}

// The reason Post exists: the publisher holds a lock that the callback
// takes (SweepManager's mutex around Emit). An inline call would deadlock.
TEST(SubscriberHubTest, PostRunsCallbacksOnAnotherThreadAfterThePostersLock) {
  absl::Mutex publisher_mu;
  int stored = 0;
  absl::Notification seen;
  std::atomic<int> seen_value{-1};
  const std::thread::id test_thread = std::this_thread::get_id();
  std::atomic<bool> on_other_thread{false};
  // Declared after what its callback uses, so that its destructor (which
  // joins the delivery thread) runs first: the callback may still hold
  // publisher_mu when `seen` is notified (ThreadSanitizer found the test
  // destroying the locked mutex).
  SubscriberHub hub;
  hub.Subscribe("sweep-1", [&] {
    on_other_thread = std::this_thread::get_id() != test_thread;
    absl::MutexLock lock(&publisher_mu);  // what a watcher's read does
    seen_value = stored;
    if (!seen.HasBeenNotified()) seen.Notify();
  });
  {
    absl::MutexLock lock(&publisher_mu);
    stored = 1;
    hub.Post("sweep-1");
    // The callback cannot have read yet: this thread still holds the lock.
    EXPECT_FALSE(seen.HasBeenNotified());
  }
  ASSERT_TRUE(seen.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_TRUE(on_other_thread.load());
  EXPECT_EQ(seen_value.load(), 1);
}

// However posts coalesce, a callback runs after the last Post and sees
// what was stored before it.
TEST(SubscriberHubTest, CoalescedPostsNeverLoseTheLastWakeUp) {
  std::atomic<int> stored{0};
  std::atomic<int> last_seen{0};
  std::atomic<int> calls{0};
  SubscriberHub hub;  // after what its callbacks use: destroyed (joined) first
  hub.Subscribe("k", [&] {
    ++calls;
    last_seen = stored.load();
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  });
  constexpr int kPosts = 2000;
  for (int i = 1; i <= kPosts; ++i) {
    stored = i;
    hub.Post("k");
  }
  for (int i = 0; i < 1000 && last_seen.load() != kPosts; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(last_seen.load(), kPosts);
  EXPECT_GE(calls.load(), 1);
  EXPECT_LT(calls.load(), kPosts);  // they did coalesce
}

TEST(SubscriberHubTest, NotifyAllWakesEverySubscriber) {
  int a = 0, b = 0;
  SubscriberHub hub;  // after what its callbacks use: destroyed (joined) first
  hub.Subscribe("a", [&] { ++a; });
  hub.Subscribe("b", [&] { ++b; });
  hub.NotifyAll();
  EXPECT_EQ(a, 1);
  EXPECT_EQ(b, 1);
}

// Positive controls as in EventLogTest: the callback ran before Unsubscribe,
// and a witness on the same key keeps being delivered posts made after
// Unsubscribe returned (the delivery thread serves subscribers in order, so
// a late call of the first would have happened by then).
TEST(SubscriberHubTest, NoPostedCallbackRunsAfterUnsubscribeReturns) {
  std::atomic<bool> unsubscribed{false};
  std::atomic<int> calls{0};
  std::atomic<int> late_calls{0};
  std::atomic<int> witness_calls_after{0};
  SubscriberHub hub;  // after what its callbacks use: destroyed (joined) first
  auto id = hub.Subscribe("k", [&] {
    ++calls;
    if (unsubscribed.load()) late_calls.fetch_add(1);
    std::this_thread::yield();
  });
  hub.Subscribe("k", [&] {
    if (unsubscribed.load()) witness_calls_after.fetch_add(1);
  });
  std::atomic<bool> stop{false};
  std::thread poster([&] {
    while (!stop.load()) hub.Post("k");
  });
  for (int i = 0; i < 1000 && calls.load() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  hub.Unsubscribe(id);
  unsubscribed.store(true);
  for (int i = 0; i < 2000 && witness_calls_after.load() < 100; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  stop.store(true);
  poster.join();
  EXPECT_GT(calls.load(), 0);
  EXPECT_GE(witness_calls_after.load(), 100) << "too few deliveries after Unsubscribe to tell";
  EXPECT_EQ(late_calls.load(), 0);
}

TEST(SubscriberHubTest, CallbackMayUnsubscribeItselfOnTheDeliveryThread) {
  std::atomic<int> calls{0};
  std::atomic<int> witness_calls{0};
  absl::Notification done;
  SubscriberHub hub;  // after what its callbacks use: destroyed (joined) first
  SubscriberHub::SubscriptionId id = 0;
  id = hub.Subscribe("k", [&] {
    ++calls;
    hub.Unsubscribe(id);
    done.Notify();
  });
  hub.Post("k");
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  // A witness subscribed now sees the next Post (and the inline Notify);
  // once it has, a call of the unsubscribed callback would have been made.
  hub.Subscribe("k", [&] { ++witness_calls; });
  hub.Post("k");
  hub.Notify("k");
  for (int i = 0; i < 2000 && witness_calls.load() < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(witness_calls.load(), 2);
  EXPECT_EQ(calls.load(), 1);
  EXPECT_EQ(hub.subscriber_count(), 1u);
}

}  // namespace
}  // namespace freezetune::store
