// The completion-callback queue (SqliteQueue) on a real SQLite file: a
// notification is written once per resource, survives reopening the file
// (a server restart), comes back soonest-due first while pending, records
// attempts, and finished rows are pruned by age.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "absl/time/clock.h"
#include "server/notify/sqlite_queue.h"

namespace freezetune::notify {
namespace {

class NotifyQueueTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("ft_notify_queue_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
            "_" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    path_ = (dir_ / "notifications.db").string();
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  static Notification Make(const std::string& id, absl::Time due) {
    Notification n;
    n.id = id;
    n.event = "job.ended";
    n.tenant = "acme";
    n.url = "https://hooks.example.com/x";
    n.payload = std::string("{\"id\":\"") + id + "\"}\n\0binary-safe";
    n.payload.push_back('\0');
    n.created = due;
    n.next_attempt = due;
    return n;
  }

  std::filesystem::path dir_;
  std::string path_;
};

TEST_F(NotifyQueueTest, OneRowPerResourceSurvivingAReopen) {
  const absl::Time t0 = absl::FromUnixSeconds(1'800'000'000);
  {
    auto q = SqliteQueue::Open(path_);
    ASSERT_TRUE(q.ok()) << q.status();
    auto first = (*q)->PutNotification(Make("job-b", t0 + absl::Seconds(5)));
    ASSERT_TRUE(first.ok()) << first.status();
    EXPECT_TRUE(*first);
    // The same resource again (e.g. the reconciliation at start): ignored.
    Notification again = Make("job-b", t0);
    again.url = "https://elsewhere.example.com/";
    EXPECT_FALSE(*(*q)->PutNotification(again));
    EXPECT_TRUE(*(*q)->PutNotification(Make("job-a", t0 + absl::Seconds(1))));
  }
  auto q = SqliteQueue::Open(path_);
  ASSERT_TRUE(q.ok()) << q.status();
  auto pending = (*q)->PendingNotifications(10);
  ASSERT_TRUE(pending.ok()) << pending.status();
  ASSERT_EQ(pending->size(), 2u);
  EXPECT_EQ((*pending)[0].id, "job-a");  // due first
  EXPECT_EQ((*pending)[1].id, "job-b");
  EXPECT_EQ((*pending)[1].url, "https://hooks.example.com/x");
  EXPECT_EQ((*pending)[1].payload, Make("job-b", t0).payload);
  EXPECT_EQ((*pending)[1].next_attempt, t0 + absl::Seconds(5));
  EXPECT_EQ((*pending)[1].created, t0 + absl::Seconds(5));
  EXPECT_EQ((*pending)[1].tenant, "acme");
  EXPECT_EQ((*pending)[1].event, "job.ended");
  EXPECT_EQ(*(*q)->CountPending(), 2);
  EXPECT_EQ((*q)->PendingNotifications(1)->size(), 1u);
}

TEST_F(NotifyQueueTest, AttemptsAreRecordedAndFinishedRowsLeaveThePendingSet) {
  const absl::Time t0 = absl::FromUnixSeconds(1'800'000'000);
  auto q = SqliteQueue::Open(path_);
  ASSERT_TRUE(q.ok()) << q.status();
  ASSERT_TRUE((*q)->PutNotification(Make("job-a", t0)).ok());
  ASSERT_TRUE((*q)->PutNotification(Make("sweep-b", t0)).ok());

  Notification a = (*(*q)->PendingNotifications(10))[0];
  ASSERT_EQ(a.id, "job-a");
  a.attempts = 3;
  a.last_error = "HTTP 503";
  a.next_attempt = t0 + absl::Minutes(2);
  ASSERT_TRUE((*q)->UpdateNotification(a).ok());
  auto pending = *(*q)->PendingNotifications(10);
  ASSERT_EQ(pending.size(), 2u);
  EXPECT_EQ(pending[0].id, "sweep-b");  // job-a is now due later
  EXPECT_EQ(pending[1].attempts, 3);
  EXPECT_EQ(pending[1].last_error, "HTTP 503");

  a.state = Notification::kDelivered;
  ASSERT_TRUE((*q)->UpdateNotification(a).ok());
  EXPECT_EQ(*(*q)->CountPending(), 1);
  EXPECT_EQ((*(*q)->PendingNotifications(10))[0].id, "sweep-b");
  // Delivered rows are kept (a repeated Put stays ignored) until pruned.
  EXPECT_FALSE(*(*q)->PutNotification(Make("job-a", t0)));
  Notification unknown = Make("job-zzz", t0);
  EXPECT_EQ((*q)->UpdateNotification(unknown).code(), absl::StatusCode::kNotFound);

  // Prune drops finished rows created before the cut, never pending ones.
  ASSERT_TRUE((*q)->Prune(t0).ok());
  EXPECT_EQ((*q)->All()->size(), 2u);
  ASSERT_TRUE((*q)->Prune(t0 + absl::Seconds(1)).ok());
  auto all = *(*q)->All();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].id, "sweep-b");
}

TEST_F(NotifyQueueTest, UnopenableFileIsUnavailable) {
  auto q = SqliteQueue::Open((dir_ / "missing-dir" / "n.db").string());
  EXPECT_EQ(q.status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace freezetune::notify
