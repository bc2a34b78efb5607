// JobStore: idempotent create, gapless sequences, paging, reopen.
#include "server/jobs/job_store.h"

#include <filesystem>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace freezetune::jobs {
namespace {

std::string TempDbPath(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() /
             ("ft_store_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return (dir / "freezetune.db").string();
}

v1::Job MakeJob(const std::string& id, int64_t create_micros, const std::string& request_id = "",
                v1::JobState state = v1::JOB_STATE_QUEUED, const std::string& tenant = "") {
  v1::Job job;
  job.set_id(id);
  job.set_tenant(tenant);
  job.set_state(state);
  job.mutable_spec()->set_model_uri("/models/" + id);
  job.mutable_spec()->set_client_request_id(request_id);
  *job.mutable_create_time() = FromMicros(create_micros);
  return job;
}

v1::JobEvent Queued() {
  v1::JobEvent e;
  e.mutable_state_change()->set_state(v1::JOB_STATE_QUEUED);
  return e;
}

std::unique_ptr<JobStore> OpenStore(const std::string& path) {
  auto store = JobStore::Open({path});
  EXPECT_TRUE(store.ok()) << store.status();
  return std::move(store).value();
}

TEST(JobStoreTest, CreateIsIdempotentPerTenantAndRequestId) {
  auto store = OpenStore(TempDbPath("idem"));
  auto first = store->CreateJob(MakeJob("job-a", 1, "req-1"), Queued());
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE(first->created);
  EXPECT_EQ(first->job.last_sequence(), 1);

  auto again = store->CreateJob(MakeJob("job-b", 2, "req-1"), Queued());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(again->created);
  EXPECT_EQ(again->job.id(), "job-a");
  EXPECT_TRUE(absl::IsNotFound(store->GetJob("job-b").status()));

  // Another tenant, or no request id at all, creates new jobs.
  auto other_tenant = store->CreateJob(MakeJob("job-c", 3, "req-1", v1::JOB_STATE_QUEUED, "t2"),
                                       Queued());
  ASSERT_TRUE(other_tenant.ok());
  EXPECT_TRUE(other_tenant->created);
  ASSERT_TRUE(store->CreateJob(MakeJob("job-d", 4), Queued())->created);
  ASSERT_TRUE(store->CreateJob(MakeJob("job-e", 5), Queued())->created);

  auto found = store->FindByClientRequestId("", "req-1");
  ASSERT_TRUE(found.ok());
  ASSERT_TRUE(found->has_value());
  EXPECT_EQ((*found)->id(), "job-a");
  EXPECT_FALSE(store->FindByClientRequestId("", "nope")->has_value());

  // A duplicate id is refused and leaves the first record alone.
  auto dup = store->CreateJob(MakeJob("job-a", 9), Queued());
  EXPECT_TRUE(absl::IsAlreadyExists(dup.status())) << dup.status();
  EXPECT_EQ(store->GetJob("job-a")->spec().client_request_id(), "req-1");
}

TEST(JobStoreTest, GetUnknownIsNotFound) {
  auto store = OpenStore(TempDbPath("notfound"));
  absl::Status s = store->GetJob("job-nope").status();
  EXPECT_TRUE(absl::IsNotFound(s));
  EXPECT_EQ(s.message(), "job job-nope not found");
  EXPECT_TRUE(absl::IsNotFound(store->AppendEvent("job-nope", Queued()).status()));
}

TEST(JobStoreTest, SequencesHaveNoGapsUnderConcurrentAppends) {
  auto store = OpenStore(TempDbPath("seq"));
  ASSERT_TRUE(store->CreateJob(MakeJob("job-a", 1), Queued()).ok());
  constexpr int kThreads = 4, kPerThread = 50;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kPerThread; ++i) {
        v1::JobEvent e;
        e.mutable_notice()->set_message("n");
        ASSERT_TRUE(store->AppendEvent("job-a", e).ok());
      }
    });
  }
  for (auto& t : threads) t.join();
  auto events = store->ReadEvents("job-a", 0, 0);
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 1u + kThreads * kPerThread);
  for (size_t i = 0; i < events->size(); ++i) {
    EXPECT_EQ((*events)[i].sequence(), static_cast<int64_t>(i + 1));
    EXPECT_EQ((*events)[i].job_id(), "job-a");
    EXPECT_TRUE((*events)[i].has_time());
  }
  EXPECT_EQ(store->GetJob("job-a")->last_sequence(), 1 + kThreads * kPerThread);

  auto middle = store->ReadEvents("job-a", 10, 5);
  ASSERT_TRUE(middle.ok());
  ASSERT_EQ(middle->size(), 5u);
  EXPECT_EQ(middle->front().sequence(), 11);
  EXPECT_EQ(middle->back().sequence(), 15);
  EXPECT_TRUE(store->ReadEvents("job-zzz", 0, 0)->empty());
}

TEST(JobStoreTest, AppendWithJobUpdateIsAtomicAndStaleCopiesKeepSequence) {
  auto store = OpenStore(TempDbPath("update"));
  v1::Job job = MakeJob("job-a", 1);
  ASSERT_TRUE(store->CreateJob(job, Queued()).ok());
  job.set_state(v1::JOB_STATE_RUNNING);
  v1::JobEvent running;
  running.mutable_state_change()->set_state(v1::JOB_STATE_RUNNING);
  auto stored = store->AppendEvent("job-a", running, &job);
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(stored->sequence(), 2);
  auto got = store->GetJob("job-a");
  EXPECT_EQ(got->state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(got->last_sequence(), 2);

  // UpdateJob from a copy with an old last_sequence cannot move it back.
  job.set_last_sequence(0);
  job.mutable_progress()->set_step(7);
  ASSERT_TRUE(store->UpdateJob(job).ok());
  EXPECT_EQ(store->GetJob("job-a")->last_sequence(), 2);
  EXPECT_EQ(store->GetJob("job-a")->progress().step(), 7);
  EXPECT_TRUE(absl::IsNotFound(store->UpdateJob(MakeJob("job-x", 1))));
}

TEST(JobStoreTest, ListPagesNewestFirstWithStateFilter) {
  auto store = OpenStore(TempDbPath("list"));
  // Two jobs share a create_time to exercise the (time, id) cursor.
  for (int i = 0; i < 7; ++i) {
    v1::JobState state = i % 2 == 0 ? v1::JOB_STATE_QUEUED : v1::JOB_STATE_SUCCEEDED;
    ASSERT_TRUE(store->CreateJob(MakeJob("job-" + std::to_string(i), i == 6 ? 5 : i, "", state),
                                 Queued())
                    .ok());
  }
  std::vector<std::string> ids;
  ListJobsQuery query;
  query.page_size = 3;
  int pages = 0;
  while (true) {
    auto page = store->ListJobs(query);
    ASSERT_TRUE(page.ok()) << page.status();
    ++pages;
    EXPECT_LE(page->jobs_size(), 3);
    for (const auto& j : page->jobs()) ids.push_back(j.id());
    if (page->next_page_token().empty()) break;
    query.page_token = page->next_page_token();
  }
  EXPECT_EQ(pages, 3);
  EXPECT_EQ(ids, (std::vector<std::string>{"job-6", "job-5", "job-4", "job-3", "job-2", "job-1",
                                            "job-0"}));

  ListJobsQuery queued;
  queued.states = {v1::JOB_STATE_QUEUED};
  auto only_queued = store->ListJobs(queued);
  ASSERT_TRUE(only_queued.ok());
  ASSERT_EQ(only_queued->jobs_size(), 4);
  for (const auto& j : only_queued->jobs()) EXPECT_EQ(j.state(), v1::JOB_STATE_QUEUED);
  EXPECT_TRUE(only_queued->next_page_token().empty());

  ListJobsQuery huge;
  huge.page_size = 100000;  // clamped, not an error
  EXPECT_EQ(store->ListJobs(huge)->jobs_size(), 7);

  ListJobsQuery bad;
  bad.page_token = "not a token!";
  absl::Status s = store->ListJobs(bad).status();
  EXPECT_TRUE(absl::IsInvalidArgument(s));
  EXPECT_EQ(s.message().rfind("page_token:", 0), 0u) << s;

  auto counts = store->CountByState();
  ASSERT_TRUE(counts.ok());
  EXPECT_EQ((*counts)[v1::JOB_STATE_QUEUED], 4);
  EXPECT_EQ((*counts)[v1::JOB_STATE_SUCCEEDED], 3);

  auto unfinished = store->JobsInStates({v1::JOB_STATE_QUEUED, v1::JOB_STATE_RUNNING});
  ASSERT_TRUE(unfinished.ok());
  ASSERT_EQ(unfinished->size(), 4u);
  EXPECT_EQ(unfinished->front().id(), "job-0");  // oldest first
}

TEST(JobStoreTest, PersistsAcrossReopen) {
  std::string path = TempDbPath("reopen");
  {
    auto store = OpenStore(path);
    ASSERT_TRUE(store->CreateJob(MakeJob("job-a", 1, "req"), Queued()).ok());
    v1::JobEvent e;
    e.mutable_train()->set_step(10);
    ASSERT_TRUE(store->AppendEvent("job-a", e).ok());
  }
  auto store = OpenStore(path);
  auto job = store->GetJob("job-a");
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->last_sequence(), 2);
  auto events = store->ReadEvents("job-a", 1, 0);
  ASSERT_EQ(events->size(), 1u);
  EXPECT_EQ(events->front().train().step(), 10);
  // Idempotency survives the restart too.
  EXPECT_FALSE(store->CreateJob(MakeJob("job-b", 2, "req"), Queued())->created);
  v1::JobEvent e;
  e.mutable_notice()->set_message("after reopen");
  EXPECT_EQ(store->AppendEvent("job-a", e)->sequence(), 3);
}

TEST(JobStoreTest, OpenFailsForUnwritablePath) {
  auto store = JobStore::Open({"/nonexistent-dir/for/sure/x.db"});
  EXPECT_FALSE(store.ok());
}

}  // namespace
}  // namespace freezetune::jobs
