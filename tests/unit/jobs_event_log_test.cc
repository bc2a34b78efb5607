// EventLog: notification fan-out, tail reads, unsubscribe guarantees.
#include "server/jobs/event_log.h"

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace freezetune::jobs {
namespace {

v1::JobEvent Event(const std::string& job, int64_t seq) {
  v1::JobEvent e;
  e.set_job_id(job);
  e.set_sequence(seq);
  e.mutable_notice()->set_message("n");
  return e;
}

TEST(EventLogTest, NotifiesOnlyTheJobsSubscribers) {
  EventLog log;
  int a_calls = 0, b_calls = 0;
  auto a = log.Subscribe("job-a", [&] { ++a_calls; });
  auto b = log.Subscribe("job-b", [&] { ++b_calls; });
  EXPECT_EQ(log.subscriber_count(), 2u);
  log.Publish(Event("job-a", 1), false);
  log.Publish(Event("job-a", 2), false);
  EXPECT_EQ(a_calls, 2);
  EXPECT_EQ(b_calls, 0);
  log.Unsubscribe(a);
  log.Publish(Event("job-a", 3), false);
  EXPECT_EQ(a_calls, 2);
  log.Unsubscribe(b);
  log.Unsubscribe(b);  // twice is harmless
  EXPECT_EQ(log.subscriber_count(), 0u);
}

TEST(EventLogTest, TailServesRecentEventsAndRefusesWhatItLacks) {
  EventLog log(/*tail_size=*/3);
  std::vector<v1::JobEvent> out;
  EXPECT_FALSE(log.ReadTail("job-a", 0, 0, &out));  // nothing published yet
  for (int s = 1; s <= 5; ++s) log.Publish(Event("job-a", s), false);
  // Tail holds 3..5.
  EXPECT_FALSE(log.ReadTail("job-a", 0, 0, &out));
  EXPECT_FALSE(log.ReadTail("job-a", 1, 0, &out));
  ASSERT_TRUE(log.ReadTail("job-a", 2, 0, &out));
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].sequence(), 3);
  out.clear();
  ASSERT_TRUE(log.ReadTail("job-a", 3, 1, &out));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].sequence(), 4);
  out.clear();
  ASSERT_TRUE(log.ReadTail("job-a", 5, 0, &out));  // caught up
  EXPECT_TRUE(out.empty());
  // A gap restarts the tail rather than serving a hole.
  log.Publish(Event("job-a", 9), false);
  EXPECT_FALSE(log.ReadTail("job-a", 5, 0, &out));
  // The final event drops the tail: late readers go to the store.
  log.Publish(Event("job-a", 10), true);
  EXPECT_FALSE(log.ReadTail("job-a", 9, 0, &out));
}

TEST(EventLogTest, NotifyAllWakesEverySubscriber) {
  EventLog log;
  int a = 0, b = 0;
  log.Subscribe("job-a", [&] { ++a; });
  auto sub_b = log.Subscribe("job-b", [&] { ++b; });
  log.NotifyAll();
  log.Unsubscribe(sub_b);
  log.NotifyAll();
  EXPECT_EQ(a, 2);
  EXPECT_EQ(b, 1);
}

TEST(EventLogTest, CallbackMayUnsubscribeItself) {
  EventLog log;
  int calls = 0;
  EventLog::SubscriptionId id = 0;
  id = log.Subscribe("job-a", [&] {
    ++calls;
    log.Unsubscribe(id);
  });
  log.Publish(Event("job-a", 1), false);
  log.Publish(Event("job-a", 2), false);
  EXPECT_EQ(calls, 1);
}

// Unsubscribe races a publisher that keeps publishing. Positive controls:
// the callback did run before Unsubscribe (so a Publish that notifies no one
// cannot pass), and a second subscriber of the same job keeps being called
// for a good number of publishes after Unsubscribe returned (so the window
// in which a late call could happen was really exercised, however slow the
// machine).
TEST(EventLogTest, NoCallbackRunsAfterUnsubscribeReturns) {
  EventLog log;
  std::atomic<bool> unsubscribed{false};
  std::atomic<int> calls{0};
  std::atomic<int> late_calls{0};
  std::atomic<int> witness_calls_after{0};
  std::atomic<bool> stop{false};
  auto id = log.Subscribe("job-a", [&] {
    calls.fetch_add(1);
    if (unsubscribed.load()) late_calls.fetch_add(1);
    std::this_thread::yield();
  });
  log.Subscribe("job-a", [&] {
    if (unsubscribed.load()) witness_calls_after.fetch_add(1);
  });
  std::thread publisher([&] {
    for (int s = 1; !stop.load(); ++s) log.Publish(Event("job-a", s), false);
  });
  for (int i = 0; i < 10000 && calls.load() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_GT(calls.load(), 0) << "the callback never ran: nothing to unsubscribe from";
  log.Unsubscribe(id);
  unsubscribed.store(true);
  for (int i = 0; i < 10000 && witness_calls_after.load() < 1000; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  stop.store(true);
  publisher.join();
  EXPECT_GE(witness_calls_after.load(), 1000) << "too few publishes after Unsubscribe to tell";
  EXPECT_EQ(late_calls.load(), 0);
}

}  // namespace
}  // namespace freezetune::jobs
