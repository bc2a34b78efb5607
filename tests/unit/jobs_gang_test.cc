// Gang scheduling of data-parallel jobs (issue 13): a job that needs N slots
// gets all N at once, never part of them; two such jobs never deadlock; a
// waiting gang job is not starved by later single-slot jobs; a job asking
// for more slots than exist is INVALID_ARGUMENT; and the JobManager hands
// the run one device per rank.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/jobs/job_manager.h"
#include "server/jobs/scheduler.h"

namespace freezetune::jobs {
namespace {

using ::testing::HasSubstr;
using std::chrono::milliseconds;

// Records, per job, the slots it held and the order jobs started in; jobs
// wait for their own release.
class Recorder {
 public:
  Scheduler::RunFn Fn(Scheduler** self) {
    return [this, self](const std::string& id, int slot, const StopFlag&) {
      {
        absl::MutexLock lock(&mu_);
        held_[id] = (*self)->SlotsOf(id);
        started_.push_back(id);
        for (int s : held_[id]) {
          EXPECT_TRUE(in_use_.insert(s).second) << id << " got slot " << s << ", in use";
        }
        EXPECT_EQ(held_[id].front(), slot);
        mu_.Await(absl::Condition(
            +[](std::pair<Recorder*, std::string>* a) ABSL_NO_THREAD_SAFETY_ANALYSIS {
              return a->first->released_.count(a->second) > 0;
            },
            new std::pair<Recorder*, std::string>(this, id)));  // leaked: test only
        for (int s : held_[id]) in_use_.erase(s);
        finished_.push_back(id);
      }
    };
  }
  void Release(const std::string& id) {
    absl::MutexLock lock(&mu_);
    released_.insert(id);
  }
  bool WaitStarted(const std::string& id) {
    for (int i = 0; i < 500; ++i) {
      {
        absl::MutexLock lock(&mu_);
        if (std::find(started_.begin(), started_.end(), id) != started_.end()) return true;
      }
      std::this_thread::sleep_for(milliseconds(10));
    }
    return false;
  }
  bool WaitFinished(size_t n) {
    for (int i = 0; i < 1000; ++i) {
      {
        absl::MutexLock lock(&mu_);
        if (finished_.size() >= n) return true;
      }
      std::this_thread::sleep_for(milliseconds(10));
    }
    return false;
  }
  std::vector<std::string> started() {
    absl::MutexLock lock(&mu_);
    return started_;
  }
  std::vector<int> held(const std::string& id) {
    absl::MutexLock lock(&mu_);
    return held_[id];
  }

 private:
  absl::Mutex mu_;
  std::map<std::string, std::vector<int>> held_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> started_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> finished_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> released_ ABSL_GUARDED_BY(mu_);
  std::set<int> in_use_ ABSL_GUARDED_BY(mu_);
};

SchedulerOptions ThreeCpuSlots() {
  SchedulerOptions o;
  o.cpu_slots = 3;
  return o;
}

TEST(GangSchedulingTest, AGangJobHoldsAllItsSlotsAndSinglesUseTheRest) {
  Recorder rec;
  Scheduler* self = nullptr;
  Scheduler scheduler(ThreeCpuSlots(), rec.Fn(&self));
  self = &scheduler;
  scheduler.Start();
  ASSERT_TRUE(scheduler.Enqueue("gang", 0, false, absl::Now(), "", "cpu", 2).ok());
  ASSERT_TRUE(rec.WaitStarted("gang"));
  EXPECT_EQ(rec.held("gang").size(), 2u);
  ASSERT_TRUE(scheduler.Enqueue("single1", 0, false, absl::Now(), "", "cpu").ok());
  ASSERT_TRUE(rec.WaitStarted("single1"));  // the third slot
  ASSERT_TRUE(scheduler.Enqueue("single2", 0).ok());
  std::this_thread::sleep_for(milliseconds(100));
  EXPECT_EQ(rec.started().size(), 2u) << "single2 started with every slot taken";
  rec.Release("gang");  // frees two slots
  ASSERT_TRUE(rec.WaitStarted("single2"));
  rec.Release("single1");
  rec.Release("single2");
  EXPECT_TRUE(rec.WaitFinished(3));
}

TEST(GangSchedulingTest, AWaitingGangJobIsNotStarvedBySingles) {
  Recorder rec;
  Scheduler* self = nullptr;
  Scheduler scheduler(ThreeCpuSlots(), rec.Fn(&self));
  self = &scheduler;
  scheduler.Start();
  ASSERT_TRUE(scheduler.Enqueue("a", 0).ok());
  ASSERT_TRUE(scheduler.Enqueue("b", 0).ok());
  ASSERT_TRUE(rec.WaitStarted("a") && rec.WaitStarted("b"));
  // Needs 3 slots, 1 is free: it waits at the head, and the free slot
  // starts nothing queued behind it.
  ASSERT_TRUE(scheduler.Enqueue("gang3", 0, false, absl::Now(), "", "cpu", 3).ok());
  ASSERT_TRUE(scheduler.Enqueue("later", 0).ok());
  std::this_thread::sleep_for(milliseconds(150));
  // a and b start on two workers at once, in either order.
  auto first_two = [](std::vector<std::string> started) {
    if (started.size() >= 2) std::sort(started.begin(), started.begin() + 2);
    return started;
  };
  EXPECT_EQ(first_two(rec.started()), (std::vector<std::string>{"a", "b"}));
  rec.Release("a");
  rec.Release("b");
  ASSERT_TRUE(rec.WaitStarted("gang3"));
  EXPECT_EQ(rec.held("gang3").size(), 3u);
  rec.Release("gang3");
  ASSERT_TRUE(rec.WaitStarted("later"));
  rec.Release("later");
  EXPECT_TRUE(rec.WaitFinished(4));
  EXPECT_EQ(first_two(rec.started()), (std::vector<std::string>{"a", "b", "gang3", "later"}));
}

TEST(GangSchedulingTest, ManyGangAndSingleJobsAllFinishWithoutOverlap) {
  // Gang jobs of 2 and 3 slots mixed with singles on 3 slots, each running
  // briefly: every job finishes (no deadlock) and no slot is ever used by
  // two jobs at once (the Recorder checks that on every start).
  Recorder rec;
  Scheduler* self = nullptr;
  Scheduler scheduler(ThreeCpuSlots(), rec.Fn(&self));
  self = &scheduler;
  std::mt19937 rng(5);
  std::vector<std::string> ids;
  for (int i = 0; i < 40; ++i) {
    const int slots = 1 + static_cast<int>(rng() % 3);
    ids.push_back("job" + std::to_string(i) + "x" + std::to_string(slots));
    ASSERT_TRUE(scheduler.Enqueue(ids.back(), static_cast<int>(rng() % 3), false, absl::Now(), "",
                                  "cpu", slots)
                    .ok());
  }
  scheduler.Start();
  std::atomic<bool> done{false};
  std::thread releaser([&] {
    while (!done.load()) {
      for (const std::string& id : ids) rec.Release(id);
      std::this_thread::sleep_for(milliseconds(2));
    }
  });
  EXPECT_TRUE(rec.WaitFinished(ids.size())) << "deadlock: not every job finished";
  done = true;
  releaser.join();
  for (const std::string& id : ids) {
    const int want = id.back() - '0';
    const std::vector<int> held = rec.held(id);
    EXPECT_EQ(held.size(), static_cast<size_t>(want)) << id;
    std::set<int> distinct(held.begin(), held.end());
    EXPECT_EQ(distinct.size(), static_cast<size_t>(want)) << id;
  }
}

TEST(GangSchedulingTest, MoreRanksThanSlotsIsInvalidArgument) {
  Scheduler scheduler(ThreeCpuSlots(), [](const std::string&, int, const StopFlag&) {});
  EXPECT_TRUE(scheduler.CheckDevice("cpu", 3).ok());
  absl::Status s = scheduler.CheckDevice("cpu", 4);
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("job.resources.data_parallel: 4 ranks need 4 slots"));
  EXPECT_TRUE(absl::IsInvalidArgument(
      scheduler.Enqueue("big", 0, false, absl::Now(), "", "cpu", 4)));
  EXPECT_TRUE(absl::IsInvalidArgument(scheduler.CanAccept("", "", 4)));
}

TEST(GangSchedulingTest, TheJobManagerGivesEachRankADevice) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("ft_gang_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  JobManagerOptions options;
  options.data_dir = dir.string();
  options.scheduler.cpu_slots = 2;
  absl::Mutex mu;
  std::vector<std::string> devices;
  absl::Notification ran;
  TrainHooks hooks;
  hooks.validate = [](const v1::FineTuneJob&, const data::UriOptions&, const train::JobLimits&) {
    return absl::OkStatus();
  };
  hooks.plan_freeze = [](const v1::PlanFreezeRequest&, const data::UriOptions&)
      -> absl::StatusOr<v1::PlanFreezeResponse> { return v1::PlanFreezeResponse(); };
  hooks.run = [&](const v1::FineTuneJob&, const train::RunContext& context)
      -> absl::StatusOr<v1::JobResult> {
    absl::MutexLock lock(&mu);
    devices = context.devices;
    ran.Notify();
    return v1::JobResult();
  };
  auto manager = JobManager::Create(options, hooks);
  ASSERT_TRUE(manager.ok()) << manager.status();
  v1::FineTuneJob spec;
  spec.set_model_uri("/m");
  spec.mutable_train()->set_uri("/t.jsonl");
  spec.mutable_resources()->set_data_parallel(3);
  absl::StatusOr<v1::Job> too_big = (*manager)->Submit(spec, "");
  EXPECT_TRUE(absl::IsInvalidArgument(too_big.status())) << too_big.status();
  spec.mutable_resources()->set_data_parallel(2);
  absl::StatusOr<v1::Job> job = (*manager)->Submit(spec, "");
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_TRUE(ran.WaitForNotificationWithTimeout(absl::Seconds(30)));
  {
    absl::MutexLock lock(&mu);
    EXPECT_EQ(devices, (std::vector<std::string>{"cpu", "cpu"}));
  }
  (*manager)->Shutdown();
  manager->reset();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace freezetune::jobs
