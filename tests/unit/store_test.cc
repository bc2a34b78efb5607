// The store suite: every test runs against each backend (the same
// assertions for SQLite and for a real PostgreSQL that the test starts:
// tests/support/postgres_instance.h; skipped, saying why, only where
// PostgreSQL is not installed). Jobs and sweeps:
// idempotent create, gapless sequences under concurrent appends, atomic
// record+event writes, paging, reopen; a sweep and its trials created in one
// transaction (and a process killed -9 in the middle of it leaves none of
// them, on either backend); watchers notified after the commit, never after
// Unsubscribe.
// SQLite only: a data dir of the server before the unified store
// (freezetune.db v1 + sweeps.db) opens, migrated, with nothing lost.
// PostgreSQL only: replicas opening one database at once migrate it once
// (the advisory lock); two stores on one database (two replicas) keep
// client_request_id idempotency, gapless sequences and exclusive output
// claims between them; a newer
// schema is refused; the shared queue: claims take each job once (SKIP
// LOCKED) in priority order and fit the idle slots, a replica that lost its
// lease cannot write, per-tenant running limits hold across replicas, and
// other replicas' writes are signalled (LISTEN/NOTIFY); the readiness probe follows the database going away
// and coming back; an unreachable server is UNAVAILABLE; URIs are
// validated and never logged with their password.
#include "server/store/store.h"

#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "server/store/postgres_backend.h"
#include "server/store/sqlite_backend.h"
#include "server/store/store_probe.h"
#include "tests/support/postgres_instance.h"

namespace freezetune::store {
namespace {

namespace fs = std::filesystem;

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

// Runs body(0) .. body(n - 1) on n threads released together, so that they
// race; returns when all are done.
void RaceOnThreads(int n, const std::function<void(int)>& body) {
  std::atomic<int> ready{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      ready.fetch_add(1);
      while (ready.load() < n) std::this_thread::yield();
      body(i);
    });
  }
  for (auto& t : threads) t.join();
}

v1::JobEvent Queued() {
  v1::JobEvent e;
  e.mutable_state_change()->set_state(v1::JOB_STATE_QUEUED);
  return e;
}

v1::JobEvent Notice(const std::string& text) {
  v1::JobEvent e;
  e.mutable_notice()->set_message(text);
  return e;
}

v1::Sweep MakeSweep(const std::string& id, int64_t create_micros, const std::string& request_id,
                    const std::vector<v1::Job>& trials, const std::string& tenant = "") {
  v1::Sweep sweep;
  sweep.set_id(id);
  sweep.set_tenant(tenant);
  sweep.set_state(v1::SWEEP_STATE_RUNNING);
  sweep.mutable_spec()->set_client_request_id(request_id);
  *sweep.mutable_create_time() = FromMicros(create_micros);
  for (const v1::Job& job : trials) sweep.add_trials()->set_job_id(job.id());
  return sweep;
}

std::vector<v1::Job> Trials(const std::string& sweep_id, int n, int64_t create_micros) {
  std::vector<v1::Job> trials;
  for (int i = 0; i < n; ++i) {
    v1::Job job = MakeJob(absl::StrCat(sweep_id, "-trial-", i), create_micros);
    job.set_sweep_id(sweep_id);
    trials.push_back(std::move(job));
  }
  return trials;
}

v1::SweepEvent TableEvent(const v1::Sweep& sweep) {
  v1::SweepEvent e;
  *e.mutable_table() = sweep;
  return e;
}

// A backend under test: opens a fresh, empty store and reopens the same one.
class BackendFixture {
 public:
  virtual ~BackendFixture() = default;
  // Makes a fresh, empty store named after `name` and opens it.
  virtual std::unique_ptr<Store> OpenFresh(const std::string& name) = 0;
  // The options that open the store OpenFresh made (from any process).
  virtual StoreOptions Options() const = 0;
  std::unique_ptr<Store> Reopen() {
    auto store = Store::Open(Options());
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? std::move(store).value() : nullptr;
  }
};

class SqliteFixture final : public BackendFixture {
 public:
  std::unique_ptr<Store> OpenFresh(const std::string& name) override {
    std::string file_name = name;
    std::replace(file_name.begin(), file_name.end(), '/', '_');
    dir_ = fs::temp_directory_path() / ("ft_store_" + file_name + "_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    return Reopen();
  }
  StoreOptions Options() const override {
    StoreOptions options;
    options.path = (dir_ / "freezetune.db").string();
    return options;
  }
  ~SqliteFixture() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }

 private:
  fs::path dir_;
};

// One PostgreSQL server for the whole binary, started by the first test
// that needs it and stopped when the tests end.
class PostgresEnvironment final : public ::testing::Environment {
 public:
  // The running server, or nullptr with *skip (not installed) or a test
  // failure (installed but would not start).
  static testing::PostgresInstance* Get(std::string* skip) {
    static const std::string bindir = testing::PostgresInstance::FindBinDir();
    if (bindir.empty()) {
      *skip = testing::PostgresInstance::kNotInstalled;
      return nullptr;
    }
    if (instance_ == nullptr && start_error_.ok()) {
      auto started = testing::PostgresInstance::Start(bindir);
      if (started.ok()) {
        instance_ = std::move(started).value();
      } else {
        start_error_ = started.status();
      }
    }
    EXPECT_TRUE(start_error_.ok()) << start_error_;
    return instance_.get();
  }
  // A new, empty database named after `name`.
  static std::string FreshDatabase(testing::PostgresInstance* pg, const std::string& name) {
    static std::atomic<int> counter{0};
    std::string db = absl::StrCat("t", counter.fetch_add(1), "_");
    for (char c : name) {
      if (db.size() >= 60) break;
      db += std::isalnum(static_cast<unsigned char>(c)) ? static_cast<char>(std::tolower(c)) : '_';
    }
    absl::Status created = pg->CreateDatabase(db);
    EXPECT_TRUE(created.ok()) << created;
    return db;
  }
  void TearDown() override { instance_.reset(); }

 private:
  static inline std::unique_ptr<testing::PostgresInstance> instance_;
  static inline absl::Status start_error_;
};
[[maybe_unused]] ::testing::Environment* const kPostgresEnvironment =
    ::testing::AddGlobalTestEnvironment(new PostgresEnvironment);

class PostgresFixture final : public BackendFixture {
 public:
  explicit PostgresFixture(testing::PostgresInstance* pg) : pg_(pg) {}
  std::unique_ptr<Store> OpenFresh(const std::string& name) override {
    uri_ = pg_->Uri(PostgresEnvironment::FreshDatabase(pg_, name));
    return Reopen();
  }
  StoreOptions Options() const override {
    StoreOptions options;
    options.postgres_uri = uri_;
    return options;
  }

 private:
  testing::PostgresInstance* pg_;
  std::string uri_;
};

// nullptr with *skip set when the backend cannot run here.
std::unique_ptr<BackendFixture> MakeFixture(const std::string& backend, std::string* skip) {
  if (backend == "sqlite") return std::make_unique<SqliteFixture>();
  if (backend == "postgres") {
    testing::PostgresInstance* pg = PostgresEnvironment::Get(skip);
    return pg != nullptr ? std::make_unique<PostgresFixture>(pg) : nullptr;
  }
  return nullptr;
}

class StoreTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    std::string skip;
    fixture_ = MakeFixture(GetParam(), &skip);
    if (fixture_ == nullptr && !skip.empty()) GTEST_SKIP() << skip;
    ASSERT_NE(fixture_, nullptr) << GetParam();
    store_ = fixture_->OpenFresh(
        ::testing::UnitTest::GetInstance()->current_test_info()->name() +
        std::string("_") + GetParam());
    ASSERT_NE(store_, nullptr);
  }
  void Reopen() {
    store_.reset();
    store_ = fixture_->Reopen();
    ASSERT_NE(store_, nullptr);
  }

  std::unique_ptr<BackendFixture> fixture_;
  std::unique_ptr<Store> store_;
};

// --max_queued_per_tenant in the insert's transaction: a job over the
// tenant's limit is not written; other tenants, and a retry of a job already
// in, are not refused.
TEST_P(StoreTest, CreateJobKeepsTheTenantsQueueLimit) {
  constexpr int64_t kLimit = 2;
  const QueueLimits limits{0, kLimit};
  auto job = [](const std::string& id, const std::string& tenant, const std::string& request = "") {
    return MakeJob(id, 1, request, v1::JOB_STATE_QUEUED, tenant);
  };
  ASSERT_TRUE(store_->CreateJob(job("t-1", "t", "req"), Queued(), nullptr, limits)->created);
  ASSERT_TRUE(store_->CreateJob(job("t-2", "t"), Queued(), nullptr, limits)->created);
  auto over = store_->CreateJob(job("t-3", "t"), Queued(), nullptr, limits);
  ASSERT_TRUE(over.ok()) << over.status();
  EXPECT_FALSE(over->created);
  ASSERT_TRUE(over->queue_full.has_value());
  EXPECT_TRUE(over->queue_full->tenant);
  EXPECT_EQ(over->queue_full->queued, kLimit);
  EXPECT_TRUE(absl::IsNotFound(store_->GetJob("t-3").status()));
  auto events = store_->ReadJobEvents("t-3", 0, 0);
  EXPECT_TRUE(!events.ok() || events->empty());

  auto retry = store_->CreateJob(job("t-4", "t", "req"), Queued(), nullptr, limits);
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_EQ(retry->job.id(), "t-1");
  EXPECT_FALSE(retry->queue_full.has_value());
  EXPECT_TRUE(store_->CreateJob(job("u-1", "u"), Queued(), nullptr, limits)->created);

  // A job that leaves QUEUED frees its place.
  v1::Job started = job("t-1", "t");
  started.set_state(v1::JOB_STATE_RUNNING);
  ASSERT_TRUE(store_->UpdateJob(started).ok());
  EXPECT_TRUE(store_->CreateJob(job("t-5", "t"), Queued(), nullptr, limits)->created);
  EXPECT_FALSE(store_->CreateJob(job("t-6", "t"), Queued(), nullptr, limits)->created);
}

// --max_queue on a shared store: the whole store's QUEUED jobs, every tenant's.
TEST_P(StoreTest, CreateJobKeepsTheQueueLimit) {
  const QueueLimits limits{2, 0};
  ASSERT_TRUE(store_->CreateJob(MakeJob("a-1", 1, "", v1::JOB_STATE_QUEUED, "a"), Queued(), nullptr,
                                limits)->created);
  ASSERT_TRUE(store_->CreateJob(MakeJob("b-1", 2, "", v1::JOB_STATE_QUEUED, "b"), Queued(), nullptr,
                                limits)->created);
  auto over = store_->CreateJob(MakeJob("c-1", 3, "", v1::JOB_STATE_QUEUED, "c"), Queued(), nullptr,
                                limits);
  ASSERT_TRUE(over.ok()) << over.status();
  EXPECT_FALSE(over->created);
  ASSERT_TRUE(over->queue_full.has_value());
  EXPECT_FALSE(over->queue_full->tenant);
  EXPECT_EQ(over->queue_full->queued, 2);
  EXPECT_TRUE(absl::IsNotFound(store_->GetJob("c-1").status()));
}

TEST_P(StoreTest, CreateJobIsIdempotentPerTenantAndRequestId) {
  auto first = store_->CreateJob(MakeJob("job-a", 1, "req-1"), Queued());
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE(first->created);
  EXPECT_EQ(first->job.last_sequence(), 1);

  auto again = store_->CreateJob(MakeJob("job-b", 2, "req-1"), Queued());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(again->created);
  EXPECT_EQ(again->job.id(), "job-a");
  EXPECT_TRUE(absl::IsNotFound(store_->GetJob("job-b").status()));

  // Another tenant, or no request id at all, creates new jobs.
  auto other_tenant =
      store_->CreateJob(MakeJob("job-c", 3, "req-1", v1::JOB_STATE_QUEUED, "t2"), Queued());
  ASSERT_TRUE(other_tenant.ok());
  EXPECT_TRUE(other_tenant->created);
  ASSERT_TRUE(store_->CreateJob(MakeJob("job-d", 4), Queued())->created);
  ASSERT_TRUE(store_->CreateJob(MakeJob("job-e", 5), Queued())->created);

  auto found = store_->FindJobByClientRequestId("", "req-1");
  ASSERT_TRUE(found.ok());
  ASSERT_TRUE(found->has_value());
  EXPECT_EQ((*found)->id(), "job-a");
  EXPECT_FALSE(store_->FindJobByClientRequestId("", "nope")->has_value());

  // A duplicate id is refused and leaves the first record alone.
  auto dup = store_->CreateJob(MakeJob("job-a", 9), Queued());
  EXPECT_TRUE(absl::IsAlreadyExists(dup.status())) << dup.status();
  EXPECT_EQ(store_->GetJob("job-a")->spec().client_request_id(), "req-1");
}

TEST_P(StoreTest, GetUnknownIsNotFound) {
  absl::Status s = store_->GetJob("job-nope").status();
  EXPECT_TRUE(absl::IsNotFound(s));
  EXPECT_EQ(s.message(), "job job-nope not found");
  EXPECT_TRUE(absl::IsNotFound(store_->AppendJobEvent("job-nope", Queued()).status()));
  EXPECT_EQ(store_->GetSweep("sweep-nope").status().message(), "sweep sweep-nope not found");
  EXPECT_TRUE(absl::IsNotFound(store_->AppendSweepEvent("sweep-nope", v1::SweepEvent()).status()));
}

TEST_P(StoreTest, SequencesHaveNoGapsUnderConcurrentAppends) {
  ASSERT_TRUE(store_->CreateJob(MakeJob("job-a", 1), Queued()).ok());
  constexpr int kThreads = 4, kPerThread = 50;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kPerThread; ++i) {
        ASSERT_TRUE(store_->AppendJobEvent("job-a", Notice("n")).ok());
      }
    });
  }
  for (auto& t : threads) t.join();
  auto events = store_->ReadJobEvents("job-a", 0, 0);
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 1u + kThreads * kPerThread);
  for (size_t i = 0; i < events->size(); ++i) {
    EXPECT_EQ((*events)[i].sequence(), static_cast<int64_t>(i + 1));
    EXPECT_EQ((*events)[i].job_id(), "job-a");
    EXPECT_TRUE((*events)[i].has_time());
  }
  EXPECT_EQ(store_->GetJob("job-a")->last_sequence(), 1 + kThreads * kPerThread);

  auto middle = store_->ReadJobEvents("job-a", 10, 5);
  ASSERT_TRUE(middle.ok());
  ASSERT_EQ(middle->size(), 5u);
  EXPECT_EQ(middle->front().sequence(), 11);
  EXPECT_EQ(middle->back().sequence(), 15);
  EXPECT_TRUE(store_->ReadJobEvents("job-zzz", 0, 0)->empty());
  // Past the in-memory tail (256 events): the rest comes from the backend,
  // still gapless.
  for (int i = 0; i < 300; ++i) ASSERT_TRUE(store_->AppendJobEvent("job-a", Notice("m")).ok());
  auto all = store_->ReadJobEvents("job-a", 0, 0);
  ASSERT_EQ(all->size(), 501u);
  for (size_t i = 0; i < all->size(); ++i) {
    ASSERT_EQ((*all)[i].sequence(), static_cast<int64_t>(i + 1));
  }
}

TEST_P(StoreTest, AppendWithJobUpdateIsAtomicAndStaleCopiesKeepSequence) {
  v1::Job job = MakeJob("job-a", 1);
  ASSERT_TRUE(store_->CreateJob(job, Queued()).ok());
  job.set_state(v1::JOB_STATE_RUNNING);
  v1::JobEvent running;
  running.mutable_state_change()->set_state(v1::JOB_STATE_RUNNING);
  auto stored = store_->AppendJobEvent("job-a", running, &job);
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(stored->sequence(), 2);
  auto got = store_->GetJob("job-a");
  EXPECT_EQ(got->state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(got->last_sequence(), 2);

  // UpdateJob from a copy with an old last_sequence cannot move it back.
  job.set_last_sequence(0);
  job.mutable_progress()->set_step(7);
  ASSERT_TRUE(store_->UpdateJob(job).ok());
  EXPECT_EQ(store_->GetJob("job-a")->last_sequence(), 2);
  EXPECT_EQ(store_->GetJob("job-a")->progress().step(), 7);
  EXPECT_TRUE(absl::IsNotFound(store_->UpdateJob(MakeJob("job-x", 1))));
}

TEST_P(StoreTest, ListJobsPagesNewestFirstWithStateFilter) {
  // Two jobs share a create_time to exercise the (time, id) cursor.
  for (int i = 0; i < 7; ++i) {
    v1::JobState state = i % 2 == 0 ? v1::JOB_STATE_QUEUED : v1::JOB_STATE_SUCCEEDED;
    ASSERT_TRUE(store_->CreateJob(MakeJob("job-" + std::to_string(i), i == 6 ? 5 : i, "", state),
                                  Queued())
                    .ok());
  }
  std::vector<std::string> ids;
  ListQuery query;
  query.page_size = 3;
  int pages = 0;
  while (true) {
    auto page = store_->ListJobs(query);
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

  ListQuery queued;
  queued.states = {v1::JOB_STATE_QUEUED};
  auto only_queued = store_->ListJobs(queued);
  ASSERT_TRUE(only_queued.ok());
  ASSERT_EQ(only_queued->jobs_size(), 4);
  for (const auto& j : only_queued->jobs()) EXPECT_EQ(j.state(), v1::JOB_STATE_QUEUED);
  EXPECT_TRUE(only_queued->next_page_token().empty());

  ListQuery huge;
  huge.page_size = 100000;  // clamped, not an error
  EXPECT_EQ(store_->ListJobs(huge)->jobs_size(), 7);

  ListQuery bad;
  bad.page_token = "not a token!";
  absl::Status s = store_->ListJobs(bad).status();
  EXPECT_TRUE(absl::IsInvalidArgument(s));
  EXPECT_EQ(s.message().rfind("page_token:", 0), 0u) << s;

  auto counts = store_->CountJobsByState();
  ASSERT_TRUE(counts.ok());
  EXPECT_EQ((*counts)[v1::JOB_STATE_QUEUED], 4);
  EXPECT_EQ((*counts)[v1::JOB_STATE_SUCCEEDED], 3);

  auto unfinished = store_->JobsInStates({v1::JOB_STATE_QUEUED, v1::JOB_STATE_RUNNING});
  ASSERT_TRUE(unfinished.ok());
  ASSERT_EQ(unfinished->size(), 4u);
  EXPECT_EQ(unfinished->front().id(), "job-0");  // oldest first
}

TEST_P(StoreTest, PersistsAcrossReopen) {
  ASSERT_TRUE(store_->CreateJob(MakeJob("job-a", 1, "req"), Queued()).ok());
  v1::JobEvent e;
  e.mutable_train()->set_step(10);
  ASSERT_TRUE(store_->AppendJobEvent("job-a", e).ok());
  Reopen();
  auto job = store_->GetJob("job-a");
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->last_sequence(), 2);
  auto events = store_->ReadJobEvents("job-a", 1, 0);
  ASSERT_EQ(events->size(), 1u);
  EXPECT_EQ(events->front().train().step(), 10);
  // Idempotency survives the restart too.
  EXPECT_FALSE(store_->CreateJob(MakeJob("job-b", 2, "req"), Queued())->created);
  EXPECT_EQ(store_->AppendJobEvent("job-a", Notice("after reopen"))->sequence(), 3);
}

// A sweep's queued trials count against the tenant's queue limit as jobs do.
TEST_P(StoreTest, CreateSweepCountsItsTrialsAgainstTheTenantsQueueLimit) {
  constexpr int64_t kLimit = 3;
  ASSERT_TRUE(store_->CreateJob(MakeJob("job-a", 1), Queued(), nullptr, {0, kLimit})->created);
  std::vector<v1::Job> two = Trials("sweep-a", 2, 2);
  v1::Sweep a = MakeSweep("sweep-a", 2, "", two);
  ASSERT_TRUE(store_->CreateSweep(a, TableEvent(a), two, Queued(), {}, {0, kLimit})->created);
  std::vector<v1::Job> one = Trials("sweep-b", 1, 3);
  v1::Sweep b = MakeSweep("sweep-b", 3, "", one);
  auto over = store_->CreateSweep(b, TableEvent(b), one, Queued(), {}, {0, kLimit});
  ASSERT_TRUE(over.ok()) << over.status();
  EXPECT_FALSE(over->created);
  ASSERT_TRUE(over->queue_full.has_value());
  EXPECT_EQ(over->queue_full->queued, 3);
  EXPECT_TRUE(absl::IsNotFound(store_->GetSweep("sweep-b").status()));
  EXPECT_TRUE(absl::IsNotFound(store_->GetJob("sweep-b-trial-0").status()));
}

TEST_P(StoreTest, SweepAndTrialsAreCreatedTogetherAndIdempotently) {
  std::vector<v1::Job> trials = Trials("sweep-a", 3, 10);
  v1::Sweep sweep = MakeSweep("sweep-a", 10, "sweep-req", trials, "t1");
  auto created = store_->CreateSweep(sweep, TableEvent(sweep), trials, Queued());
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_TRUE(created->created);
  EXPECT_EQ(created->sweep.last_sequence(), 1);
  for (const v1::Job& trial : trials) {
    auto job = store_->GetJob(trial.id());
    ASSERT_TRUE(job.ok()) << job.status();
    EXPECT_EQ(job->sweep_id(), "sweep-a");
    EXPECT_EQ(job->last_sequence(), 1);
    auto events = store_->ReadJobEvents(trial.id(), 0, 0);
    ASSERT_EQ(events->size(), 1u);
    EXPECT_EQ(events->front().state_change().state(), v1::JOB_STATE_QUEUED);
  }
  auto events = store_->ReadSweepEvents("sweep-a", 0, 0);
  ASSERT_EQ(events->size(), 1u);
  EXPECT_EQ(events->front().sweep_id(), "sweep-a");
  EXPECT_EQ(events->front().table().trials_size(), 3);

  // Same tenant and request id: nothing new, the first sweep comes back.
  std::vector<v1::Job> retry_trials = Trials("sweep-b", 3, 11);
  v1::Sweep retry = MakeSweep("sweep-b", 11, "sweep-req", retry_trials, "t1");
  auto again = store_->CreateSweep(retry, TableEvent(retry), retry_trials, Queued());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(again->created);
  EXPECT_EQ(again->sweep.id(), "sweep-a");
  EXPECT_TRUE(absl::IsNotFound(store_->GetSweep("sweep-b").status()));
  for (const v1::Job& trial : retry_trials) {
    EXPECT_TRUE(absl::IsNotFound(store_->GetJob(trial.id()).status())) << trial.id();
  }
  EXPECT_EQ((*store_->FindSweepByClientRequestId("t1", "sweep-req"))->id(), "sweep-a");
  EXPECT_FALSE(store_->FindSweepByClientRequestId("t2", "sweep-req")->has_value());

  // A trial id that is taken fails the whole create: no sweep, no trial.
  std::vector<v1::Job> clash = Trials("sweep-c", 2, 12);
  clash.push_back(trials[0]);
  v1::Sweep clashing = MakeSweep("sweep-c", 12, "", clash);
  auto failed = store_->CreateSweep(clashing, TableEvent(clashing), clash, Queued());
  EXPECT_TRUE(absl::IsAlreadyExists(failed.status())) << failed.status();
  EXPECT_TRUE(absl::IsNotFound(store_->GetSweep("sweep-c").status()));
  EXPECT_TRUE(absl::IsNotFound(store_->GetJob(clash[0].id()).status()));
  EXPECT_EQ(store_->CountJobsByState()->at(v1::JOB_STATE_QUEUED), 3);
}

// Output claims (issue 14.1 on the store seam): no two live claims nested
// (by whole components), taken in the create's transaction, released when
// the owning job FAILED or was CANCELLED; a sweep's claims and its trials'
// are all or nothing.
TEST_P(StoreTest, OutputClaimsAreExclusiveNestedAndTakenWithTheirOwner) {
  const OutputClaim a{"/out/a", "job-a", "t1"};
  auto created = store_->CreateJob(MakeJob("job-a", 1), Queued(), &a);
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_TRUE(created->created);
  // Equal, inside, containing: refused with the live claim, nothing written.
  for (const char* path : {"/out/a", "/out/a/sub", "/out"}) {
    const OutputClaim b{path, "job-b", "t2"};
    auto refused = store_->CreateJob(MakeJob("job-b", 2), Queued(), &b);
    ASSERT_TRUE(refused.ok()) << refused.status();
    EXPECT_FALSE(refused->created) << path;
    ASSERT_TRUE(refused->output_conflict.has_value()) << path;
    EXPECT_EQ(refused->output_conflict->owner, "job-a");
    EXPECT_EQ(refused->output_conflict->tenant, "t1");
    EXPECT_TRUE(absl::IsNotFound(store_->GetJob("job-b").status())) << path;
  }
  // A sibling sharing a name prefix is not nested.
  const OutputClaim ab{"/out/ab", "job-ab", ""};
  EXPECT_TRUE(store_->CreateJob(MakeJob("job-ab", 3), Queued(), &ab)->created);
  ASSERT_EQ(store_->LiveClaimsNestedWith("/out")->size(), 2u);
  EXPECT_EQ(store_->LiveClaimsNestedWith("/out/a/x")->front().owner, "job-a");
  EXPECT_TRUE(store_->LiveClaimsNestedWith("/elsewhere")->empty());

  // The owner failed: its claim is dead and may be taken again.
  v1::Job failed = *store_->GetJob("job-a");
  failed.set_state(v1::JOB_STATE_FAILED);
  ASSERT_TRUE(store_->UpdateJob(failed).ok());
  const OutputClaim again{"/out/a", "job-c", "t2"};
  auto retaken = store_->CreateJob(MakeJob("job-c", 4), Queued(), &again);
  ASSERT_TRUE(retaken.ok()) << retaken.status();
  EXPECT_TRUE(retaken->created);
  EXPECT_EQ(store_->LiveClaimsNestedWith("/out/a")->front().owner, "job-c");

  // A sweep whose last trial's claim conflicts: no sweep, no trial, no claim.
  std::vector<v1::Job> trials = Trials("sweep-x", 2, 5);
  v1::Sweep sweep = MakeSweep("sweep-x", 5, "", trials);
  std::vector<OutputClaim> claims = {{"/sweeps/x", "sweep-x", ""},
                                     {"/sweeps/x-0", trials[0].id(), ""},
                                     {"/out/ab/deep", trials[1].id(), ""}};
  auto clash = store_->CreateSweep(sweep, TableEvent(sweep), trials, Queued(), claims);
  ASSERT_TRUE(clash.ok()) << clash.status();
  EXPECT_FALSE(clash->created);
  ASSERT_TRUE(clash->output_conflict.has_value());
  EXPECT_EQ(clash->output_conflict->owner, "job-ab");
  EXPECT_TRUE(absl::IsNotFound(store_->GetSweep("sweep-x").status()));
  EXPECT_TRUE(absl::IsNotFound(store_->GetJob(trials[0].id()).status()));
  EXPECT_TRUE(store_->LiveClaimsNestedWith("/sweeps")->empty());
  claims.back().path = "/sweeps/x-1";
  auto ok = store_->CreateSweep(sweep, TableEvent(sweep), trials, Queued(), claims);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_TRUE(ok->created);
  EXPECT_EQ(store_->LiveClaimsNestedWith("/sweeps")->size(), 3u);
  // Claims survive a restart.
  Reopen();
  EXPECT_EQ(store_->LiveClaimsNestedWith("/sweeps/x")->front().owner, "sweep-x");
}

TEST_P(StoreTest, SweepEventsAndListing) {
  for (int i = 0; i < 5; ++i) {
    std::vector<v1::Job> trials = Trials(absl::StrCat("sweep-", i), 2, 100 + i);
    v1::Sweep sweep = MakeSweep(absl::StrCat("sweep-", i), 100 + i, "", trials,
                                i == 4 ? "other" : "mine");
    ASSERT_TRUE(store_->CreateSweep(sweep, TableEvent(sweep), trials, Queued()).ok());
  }
  v1::Sweep done = *store_->GetSweep("sweep-1");
  done.set_state(v1::SWEEP_STATE_SUCCEEDED);
  v1::SweepEvent result;
  *result.mutable_result() = done;
  auto stored = store_->AppendSweepEvent("sweep-1", result, &done);
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(stored->sequence(), 2);
  EXPECT_EQ(store_->GetSweep("sweep-1")->state(), v1::SWEEP_STATE_SUCCEEDED);
  EXPECT_EQ(store_->GetSweep("sweep-1")->last_sequence(), 2);
  EXPECT_EQ(store_->ReadSweepEvents("sweep-1", 1, 0)->front().result().state(),
            v1::SWEEP_STATE_SUCCEEDED);
  // Job and sweep events are separate logs in one table.
  EXPECT_EQ(store_->ReadJobEvents("sweep-1", 0, 0)->size(), 0u);

  ListQuery query;
  query.page_size = 2;
  query.tenant = "mine";
  std::vector<std::string> ids;
  while (true) {
    auto page = store_->ListSweeps(query);
    ASSERT_TRUE(page.ok()) << page.status();
    for (const auto& s : page->sweeps()) ids.push_back(s.id());
    if (page->next_page_token().empty()) break;
    query.page_token = page->next_page_token();
  }
  EXPECT_EQ(ids, (std::vector<std::string>{"sweep-3", "sweep-2", "sweep-1", "sweep-0"}));
  ListQuery running;
  running.states = {v1::SWEEP_STATE_RUNNING};
  EXPECT_EQ(store_->ListSweeps(running)->sweeps_size(), 4);
  EXPECT_EQ(store_->SweepsInStates({v1::SWEEP_STATE_RUNNING})->front().id(), "sweep-0");
  EXPECT_EQ(store_->CountSweepsByState()->at(v1::SWEEP_STATE_SUCCEEDED), 1);
  // A job page token is not a sweep page token.
  ListQuery jobs_query;
  jobs_query.page_size = 1;
  auto jobs_page = store_->ListJobs(jobs_query);
  ASSERT_FALSE(jobs_page->next_page_token().empty());
  ListQuery mixed;
  mixed.page_token = jobs_page->next_page_token();
  EXPECT_EQ(store_->ListSweeps(mixed).status().message(), "page_token: malformed");
  Reopen();
  EXPECT_EQ(store_->ReadSweepEvents("sweep-1", 0, 0)->size(), 2u);
}

TEST_P(StoreTest, SubscribersAreNotifiedAfterTheEventIsReadable) {
  ASSERT_TRUE(store_->CreateJob(MakeJob("job-a", 1), Queued()).ok());
  ASSERT_TRUE(store_->CreateJob(MakeJob("job-b", 2), Queued()).ok());
  int a_calls = 0, b_calls = 0;
  int64_t a_seen = 0;
  auto a = store_->Subscribe(Kind::kJob, "job-a", [&] {
    ++a_calls;
    auto events = store_->ReadJobEvents("job-a", a_seen, 0);
    if (events.ok() && !events->empty()) a_seen = events->back().sequence();
  });
  auto b = store_->Subscribe(Kind::kJob, "job-b", [&] { ++b_calls; });
  // Same id, other kind: a different log.
  int sweep_calls = 0;
  auto s = store_->Subscribe(Kind::kSweep, "job-a", [&] { ++sweep_calls; });
  EXPECT_EQ(store_->subscriber_count(Kind::kJob), 2u);
  EXPECT_EQ(store_->subscriber_count(Kind::kSweep), 1u);
  EXPECT_EQ(store_->subscriber_count(Kind::kJob, "job-a"), 1u);
  ASSERT_TRUE(store_->AppendJobEvent("job-a", Notice("1")).ok());
  ASSERT_TRUE(store_->AppendJobEvent("job-a", Notice("2")).ok());
  EXPECT_EQ(a_calls, 2);
  EXPECT_EQ(a_seen, 3);  // each callback found its event already readable
  EXPECT_EQ(b_calls, 0);
  EXPECT_EQ(sweep_calls, 0);
  store_->NotifyAll();
  EXPECT_EQ(b_calls, 1);
  EXPECT_EQ(sweep_calls, 1);
  store_->Unsubscribe(a);
  ASSERT_TRUE(store_->AppendJobEvent("job-a", Notice("3")).ok());
  EXPECT_EQ(a_calls, 3);  // the NotifyAll, not the event after Unsubscribe
  store_->Unsubscribe(b);
  store_->Unsubscribe(b);  // twice is harmless
  store_->Unsubscribe(s);
  EXPECT_EQ(store_->subscriber_count(Kind::kJob), 0u);
}

TEST_P(StoreTest, NoCallbackRunsAfterUnsubscribeReturns) {
  ASSERT_TRUE(store_->CreateJob(MakeJob("job-a", 1), Queued()).ok());
  std::atomic<bool> unsubscribed{false};
  std::atomic<int> calls{0};
  std::atomic<int> late_calls{0};
  std::atomic<bool> stop{false};
  auto id = store_->Subscribe(Kind::kJob, "job-a", [&] {
    calls.fetch_add(1);
    if (unsubscribed.load()) late_calls.fetch_add(1);
    std::this_thread::yield();
  });
  std::atomic<int> appended{0};
  std::thread publisher([&] {
    while (!stop.load()) {
      ASSERT_TRUE(store_->AppendJobEvent("job-a", Notice("n")).ok());
      appended.fetch_add(1);
    }
  });
  // Positive control: the callback has run before we unsubscribe.
  while (calls.load() < 5) std::this_thread::yield();
  store_->Unsubscribe(id);
  unsubscribed.store(true);
  // More appends after Unsubscribe returned, however slow the machine.
  const int after = appended.load();
  while (appended.load() < after + 20) std::this_thread::yield();
  stop.store(true);
  publisher.join();
  EXPECT_EQ(late_calls.load(), 0);
}

INSTANTIATE_TEST_SUITE_P(Backends, StoreTest, ::testing::Values("sqlite", "postgres"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

// --- SQLite only -------------------------------------------------------------

fs::path TempDir(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / ("ft_store_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

void Sql(sqlite3* db, const std::string& sql) {
  char* error = nullptr;
  ASSERT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &error), SQLITE_OK)
      << (error != nullptr ? error : "") << "\n" << sql;
}

// Binds blobs through a prepared statement (serialized protos hold NULs).
void Insert(sqlite3* db, const std::string& sql, const std::vector<std::string>& blobs) {
  sqlite3_stmt* stmt = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr), SQLITE_OK) << sql;
  for (size_t i = 0; i < blobs.size(); ++i) {
    sqlite3_bind_blob(stmt, static_cast<int>(i + 1), blobs[i].data(),
                      static_cast<int>(blobs[i].size()), SQLITE_TRANSIENT);
  }
  ASSERT_EQ(sqlite3_step(stmt), SQLITE_DONE) << sqlite3_errmsg(db);
  sqlite3_finalize(stmt);
}

// A data dir exactly as the server before the unified store left it: the
// version-1 freezetune.db (its DDL verbatim, PRAGMA user_version = 1, no
// schema_version table) and a separate sweeps.db.
TEST(SqliteMigrationTest, LegacyDataDirOpensWithNothingLost) {
  fs::path dir = TempDir("legacy");
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open((dir / "freezetune.db").c_str(), &db), SQLITE_OK);
    Sql(db, R"sql(
PRAGMA journal_mode=WAL;
CREATE TABLE IF NOT EXISTS jobs(
  id TEXT PRIMARY KEY, tenant TEXT NOT NULL, client_request_id TEXT, state INTEGER NOT NULL,
  create_time INTEGER NOT NULL, last_sequence INTEGER NOT NULL DEFAULT 0, spec BLOB NOT NULL,
  job BLOB NOT NULL, UNIQUE(tenant, client_request_id));
CREATE INDEX IF NOT EXISTS jobs_by_create_time ON jobs(create_time DESC, id DESC);
CREATE TABLE IF NOT EXISTS events(job_id TEXT NOT NULL, sequence INTEGER NOT NULL,
  event BLOB NOT NULL, PRIMARY KEY(job_id, sequence)) WITHOUT ROWID;
PRAGMA user_version = 1;)sql");
    v1::Job job = MakeJob("job-old", 5, "old-req", v1::JOB_STATE_QUEUED, "t");
    job.set_sweep_id("sweep-old");
    Insert(db,
           "INSERT INTO jobs VALUES('job-old', 't', 'old-req', 1, 5, 2, ?1, ?2)",
           {job.spec().SerializeAsString(), job.SerializeAsString()});
    for (int seq = 1; seq <= 2; ++seq) {
      v1::JobEvent e = Notice(absl::StrCat("old ", seq));
      e.set_job_id("job-old");
      e.set_sequence(seq);
      Insert(db, absl::StrCat("INSERT INTO events VALUES('job-old', ", seq, ", ?1)"),
             {e.SerializeAsString()});
    }
    sqlite3_close(db);
  }
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open((dir / "sweeps.db").c_str(), &db), SQLITE_OK);
    Sql(db,
        "PRAGMA journal_mode=WAL;"
        "CREATE TABLE IF NOT EXISTS sweeps(id TEXT PRIMARY KEY, record BLOB NOT NULL);"
        "CREATE TABLE IF NOT EXISTS sweep_events(sweep_id TEXT NOT NULL, "
        "sequence INTEGER NOT NULL, event BLOB NOT NULL, PRIMARY KEY(sweep_id, sequence));");
    v1::Sweep sweep = MakeSweep("sweep-old", 4, "", {MakeJob("job-old", 5)}, "t");
    sweep.set_last_sequence(2);
    Insert(db, "INSERT INTO sweeps VALUES('sweep-old', ?1)", {sweep.SerializeAsString()});
    for (int seq = 1; seq <= 2; ++seq) {
      v1::SweepEvent e = TableEvent(sweep);
      e.set_sweep_id("sweep-old");
      e.set_sequence(seq);
      Insert(db, absl::StrCat("INSERT INTO sweep_events VALUES('sweep-old', ", seq, ", ?1)"),
             {e.SerializeAsString()});
    }
    sqlite3_close(db);
  }

  StoreOptions options;
  options.path = (dir / "freezetune.db").string();
  options.legacy_sweeps_path = (dir / "sweeps.db").string();
  for (int open = 0; open < 2; ++open) {  // migrated once; the second open finds it current
    auto store = Store::Open(options);
    ASSERT_TRUE(store.ok()) << store.status();
    auto job = (*store)->GetJob("job-old");
    ASSERT_TRUE(job.ok()) << job.status();
    EXPECT_EQ(job->last_sequence(), 2 + open);
    EXPECT_EQ(job->sweep_id(), "sweep-old");
    auto events = (*store)->ReadJobEvents("job-old", 0, 0);
    ASSERT_EQ(events->size(), 2u + open);
    EXPECT_EQ((*events)[1].notice().message(), "old 2");
    EXPECT_EQ((*store)->FindJobByClientRequestId("t", "old-req")->value().id(), "job-old");
    auto sweep = (*store)->GetSweep("sweep-old");
    ASSERT_TRUE(sweep.ok()) << sweep.status();
    EXPECT_EQ(sweep->last_sequence(), 2 + open);
    EXPECT_EQ(sweep->tenant(), "t");
    EXPECT_EQ((*store)->ReadSweepEvents("sweep-old", 0, 0)->size(), 2u + open);
    ListQuery listing;
    listing.tenant = "t";
    EXPECT_EQ((*store)->ListSweeps(listing)->sweeps_size(), 1);
    // New writes continue the old sequences.
    if (open == 0) {
      EXPECT_EQ((*store)->AppendJobEvent("job-old", Notice("new"))->sequence(), 3);
      v1::SweepEvent next = TableEvent(*sweep);
      EXPECT_EQ((*store)->AppendSweepEvent("sweep-old", next)->sequence(), 3);
    }
  }
  EXPECT_FALSE(fs::exists(dir / "sweeps.db"));
  EXPECT_TRUE(fs::exists(dir / "sweeps.db.imported"));
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir / "freezetune.db").c_str(), &db), SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "SELECT version FROM schema_version", -1, &stmt, nullptr),
            SQLITE_OK);
  ASSERT_EQ(sqlite3_step(stmt), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int(stmt, 0), SqliteSchemaVersion());
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  fs::remove_all(dir);
}

TEST(SqliteMigrationTest, NewerSchemaIsRefused) {
  fs::path dir = TempDir("newer");
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open((dir / "freezetune.db").c_str(), &db), SQLITE_OK);
    Sql(db, "CREATE TABLE schema_version(version INTEGER NOT NULL);"
            "INSERT INTO schema_version VALUES(999);");
    sqlite3_close(db);
  }
  StoreOptions options;
  options.path = (dir / "freezetune.db").string();
  auto store = Store::Open(options);
  EXPECT_TRUE(absl::IsFailedPrecondition(store.status())) << store.status();
  EXPECT_NE(store.status().message().find("schema version 999"), std::string::npos);
  fs::remove_all(dir);
}

// Issue 14.5: records that do not parse (garbage written into a real
// SQLite file) are quarantined, never fatal: listings and reads go on, the
// bad job or sweep is FAILED with the reason (and a terminal event), a
// corrupt QUEUED job is no longer queued, the listener hears of each once.
TEST(SqliteQuarantineTest, CorruptRecordsAreQuarantinedAndTheRestServed) {
  fs::path dir = TempDir("quarantine");
  const std::string path = (dir / "freezetune.db").string();
  StoreOptions options;
  options.path = path;
  {
    auto store = Store::Open(options);
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE((*store)->CreateJob(MakeJob("job-done", 1, "", v1::JOB_STATE_SUCCEEDED), Queued()).ok());
    ASSERT_TRUE((*store)->CreateJob(MakeJob("job-queued", 2), Queued()).ok());
    ASSERT_TRUE((*store)->CreateJob(MakeJob("job-good", 3), Queued()).ok());
    std::vector<v1::Job> none;
    v1::Sweep sweep = MakeSweep("sweep-bad", 4, "", none);
    ASSERT_TRUE((*store)->CreateSweep(sweep, TableEvent(sweep), none, Queued()).ok());
  }
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    // 0xff...: a field number past the end of a varint, not a protobuf.
    Sql(db, "UPDATE jobs SET record = x'ffffffffffffffffffff' WHERE id IN ('job-done', 'job-queued');"
            "UPDATE sweeps SET record = x'ffffffffffffffffffff' WHERE id = 'sweep-bad';");
    sqlite3_close(db);
  }
  auto store = Store::Open(options);
  ASSERT_TRUE(store.ok()) << store.status();
  std::vector<std::string> quarantined;
  (*store)->AddQuarantineListener([&](Kind kind, const std::string& id, const std::string& reason,
                                      const absl::Status& written) {
    EXPECT_TRUE(written.ok()) << written;
    EXPECT_NE(reason.find("corrupt"), std::string::npos) << reason;
    quarantined.push_back(absl::StrCat(kind == Kind::kJob ? "job:" : "sweep:", id));
  });
  // What a restart reads: only the good job is still queued.
  auto queued = (*store)->JobsInStates({v1::JOB_STATE_QUEUED, v1::JOB_STATE_RUNNING});
  ASSERT_TRUE(queued.ok()) << queued.status();
  ASSERT_EQ(queued->size(), 1u);
  EXPECT_EQ(queued->front().id(), "job-good");
  // Listing every job works for everyone, with the bad ones FAILED.
  auto list = (*store)->ListJobs(ListQuery());
  ASSERT_TRUE(list.ok()) << list.status();
  ASSERT_EQ(list->jobs_size(), 3);
  for (const v1::Job& job : list->jobs()) {
    if (job.id() == "job-good") {
      EXPECT_EQ(job.state(), v1::JOB_STATE_QUEUED);
      continue;
    }
    EXPECT_EQ(job.state(), v1::JOB_STATE_FAILED) << job.id();
    EXPECT_NE(job.error_message().find("is corrupt"), std::string::npos) << job.error_message();
    EXPECT_EQ(job.spec().model_uri(), "/models/" + job.id());  // the spec column survived
  }
  auto events = (*store)->ReadJobEvents("job-queued", 0, 0);
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_EQ(events->size(), 2u);
  EXPECT_EQ(events->back().state_change().state(), v1::JOB_STATE_FAILED);
  auto sweep = (*store)->GetSweep("sweep-bad");
  ASSERT_TRUE(sweep.ok()) << sweep.status();
  EXPECT_EQ(sweep->state(), v1::SWEEP_STATE_FAILED);
  EXPECT_TRUE((*store)->ListSweeps(ListQuery()).ok());
  // Each once: the placeholders were stored and parse from now on.
  std::sort(quarantined.begin(), quarantined.end());
  EXPECT_EQ(quarantined,
            (std::vector<std::string>{"job:job-done", "job:job-queued", "sweep:sweep-bad"}));
  EXPECT_EQ((*store)->CountJobsByState()->at(v1::JOB_STATE_FAILED), 2);
  store->reset();
  fs::remove_all(dir);
}

TEST(SqliteMigrationTest, OpenFailsForUnwritablePath) {
  StoreOptions options;
  options.path = "/nonexistent-dir/for/sure/x.db";
  EXPECT_FALSE(Store::Open(options).ok());
}

// A process killed -9 while it writes a sweep with many trials: each time,
// either the sweep and every trial are there, or none of them.
using StoreCrashTest = StoreTest;

TEST_P(StoreCrashTest, KillDuringCreateSweepLeavesAllOrNothing) {
  store_.reset();
  const StoreOptions options = fixture_->Options();
  constexpr int kTrials = 2000;
  // How long one such write takes here, so that the kills spread over it
  // whatever the machine's speed.
  absl::Duration write_time;
  {
    auto store = Store::Open(options);
    ASSERT_TRUE(store.ok()) << store.status();
    std::vector<v1::Job> trials = Trials("sweep-timed", kTrials, 999);
    v1::Sweep sweep = MakeSweep("sweep-timed", 999, "", trials);
    const absl::Time start = absl::Now();
    ASSERT_TRUE((*store)->CreateSweep(sweep, TableEvent(sweep), trials, Queued()).ok());
    write_time = absl::Now() - start;
  }
  int saw_none = 0, saw_all = 0;
  for (int round = 0; round < 6; ++round) {
    const std::string sweep_id = absl::StrCat("sweep-", round);
    int ready[2];
    ASSERT_EQ(pipe(ready), 0);
    pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      close(ready[0]);
      auto store = Store::Open(options);
      if (!store.ok()) _exit(2);
      std::vector<v1::Job> trials = Trials(sweep_id, kTrials, 1000 + round);
      v1::Sweep sweep = MakeSweep(sweep_id, 1000 + round, "", trials);
      char byte = 1;
      if (write(ready[1], &byte, 1) != 1) _exit(3);
      auto created = (*store)->CreateSweep(sweep, TableEvent(sweep), trials, Queued());
      _exit(created.ok() ? 0 : 4);
    }
    close(ready[1]);
    char byte = 0;
    ASSERT_EQ(read(ready[0], &byte, 1), 1);
    close(ready[0]);
    // From at once to past the write's length (plus the child's own set-up):
    // some kills land mid-transaction.
    absl::SleepFor(write_time * round * 0.4);
    kill(child, SIGKILL);
    int status = 0;
    waitpid(child, &status, 0);

    auto store = Store::Open(options);
    ASSERT_TRUE(store.ok()) << store.status();
    const bool has_sweep = (*store)->GetSweep(sweep_id).ok();
    auto queued = (*store)->JobsInStates({v1::JOB_STATE_QUEUED});
    ASSERT_TRUE(queued.ok()) << queued.status();
    int trials_found = 0;
    for (const v1::Job& job : *queued) trials_found += job.sweep_id() == sweep_id;
    if (has_sweep) {
      EXPECT_EQ(trials_found, kTrials) << "round " << round;
      ++saw_all;
    } else {
      EXPECT_EQ(trials_found, 0) << "round " << round << ": orphan trials";
      ++saw_none;
    }
  }
  // The invariant held whichever way each kill fell; say how they fell.
  std::printf("%s: one write of %d trials: %s; kills before the commit: %d, after: %d\n",
              GetParam().c_str(), kTrials, absl::FormatDuration(write_time).c_str(), saw_none,
              saw_all);
}

INSTANTIATE_TEST_SUITE_P(Backends, StoreCrashTest, ::testing::Values("sqlite", "postgres"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

// --- PostgreSQL only ---------------------------------------------------------

// The shared test server, or skips (not installed) / fails (would not start).
#define FT_POSTGRES_OR_SKIP(pg)                            \
  std::string pg##_skip;                                   \
  testing::PostgresInstance* pg = PostgresEnvironment::Get(&pg##_skip); \
  if (pg == nullptr && !pg##_skip.empty()) GTEST_SKIP() << pg##_skip; \
  ASSERT_NE(pg, nullptr)

// Several stores on one database stand for replicas; `replica_id` names
// their writes in notifications.
std::unique_ptr<Store> OpenPostgresStore(const std::string& uri,
                                         const std::string& replica_id = "test-replica") {
  StoreOptions options;
  options.postgres_uri = uri;
  options.replica_id = replica_id;
  auto store = Store::Open(options);
  EXPECT_TRUE(store.ok()) << store.status();
  return store.ok() ? std::move(store).value() : nullptr;
}

// Two stores on one database, as the replicas "replica-a" and "replica-b".
void OpenTwoReplicas(const std::string& uri, std::unique_ptr<Store>* a,
                     std::unique_ptr<Store>* b) {
  *a = OpenPostgresStore(uri, "replica-a");
  *b = OpenPostgresStore(uri, "replica-b");
  ASSERT_NE(*a, nullptr);
  ASSERT_NE(*b, nullptr);
}

// Replicas starting together: each opens the empty database at once; the
// advisory lock makes one create the schema and the others find it current.
TEST(PostgresStoreTest, ConcurrentOpensMigrateOnce) {
  FT_POSTGRES_OR_SKIP(pg);
  const std::string uri = pg->Uri(PostgresEnvironment::FreshDatabase(pg, "concurrent_open"));
  constexpr int kReplicas = 6;
  std::vector<absl::Status> results(kReplicas);
  RaceOnThreads(kReplicas, [&](int i) {
    PostgresOptions options;
    options.uri = uri;
    results[i] = OpenPostgresBackend(options).status();
  });
  for (int i = 0; i < kReplicas; ++i) EXPECT_TRUE(results[i].ok()) << i << ": " << results[i];
  auto version = pg->Query(uri.substr(uri.rfind('/') + 1), "SELECT version FROM schema_version");
  ASSERT_TRUE(version.ok()) << version.status();
  ASSERT_EQ(version->size(), 1u);
  EXPECT_EQ((*version)[0][0], std::to_string(PostgresSchemaVersion()));
}

// Two stores on one database, as two replicas: one job per client_request_id
// however the creates race, and one gapless sequence however appends
// interleave.
TEST(PostgresStoreTest, TwoReplicasShareIdempotencyAndSequences) {
  FT_POSTGRES_OR_SKIP(pg);
  const std::string uri = pg->Uri(PostgresEnvironment::FreshDatabase(pg, "two_replicas"));
  std::unique_ptr<Store> a, b;
  ASSERT_NO_FATAL_FAILURE(OpenTwoReplicas(uri, &a, &b));
  constexpr int kThreads = 8;
  std::vector<std::string> ids(kThreads);
  std::atomic<int> created{0};
  RaceOnThreads(kThreads, [&](int i) {
    Store* store = i % 2 == 0 ? a.get() : b.get();
    auto result = store->CreateJob(MakeJob(absl::StrCat("job-", i), i, "same-request"), Queued());
    ASSERT_TRUE(result.ok()) << result.status();
    if (result->created) created.fetch_add(1);
    ids[i] = result->job.id();
  });
  EXPECT_EQ(created.load(), 1);
  for (const std::string& id : ids) EXPECT_EQ(id, ids[0]);
  EXPECT_EQ(a->CountJobsByState()->at(v1::JOB_STATE_QUEUED), 1);

  constexpr int kPerStore = 40;
  std::thread ta([&] {
    for (int i = 0; i < kPerStore; ++i) ASSERT_TRUE(a->AppendJobEvent(ids[0], Notice("a")).ok());
  });
  std::thread tb([&] {
    for (int i = 0; i < kPerStore; ++i) ASSERT_TRUE(b->AppendJobEvent(ids[0], Notice("b")).ok());
  });
  ta.join();
  tb.join();
  // A third store (no in-memory tail) reads what both wrote.
  std::unique_ptr<Store> reader = OpenPostgresStore(uri);
  auto events = reader->ReadJobEvents(ids[0], 0, 0);
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_EQ(events->size(), 1u + 2 * kPerStore);
  int from_a = 0;
  for (size_t i = 0; i < events->size(); ++i) {
    EXPECT_EQ((*events)[i].sequence(), static_cast<int64_t>(i + 1));
    from_a += (*events)[i].notice().message() == "a";
  }
  EXPECT_EQ(from_a, kPerStore);
  EXPECT_EQ(reader->GetJob(ids[0])->last_sequence(), 1 + 2 * kPerStore);
}

// Replicas claiming nested output directories at once: exactly one wins,
// the others get its claim back as the conflict.
TEST(PostgresStoreTest, TwoReplicasNeverTakeNestedOutputClaims) {
  FT_POSTGRES_OR_SKIP(pg);
  const std::string uri = pg->Uri(PostgresEnvironment::FreshDatabase(pg, "claims_race"));
  std::unique_ptr<Store> a, b;
  ASSERT_NO_FATAL_FAILURE(OpenTwoReplicas(uri, &a, &b));
  for (int round = 0; round < 5; ++round) {
    constexpr int kThreads = 8;
    std::atomic<int> won{0};
    std::atomic<int> conflicts{0};
    RaceOnThreads(kThreads, [&](int i) {
      // /r<round>, /r<round>/d1, /r<round>/d1/d2, ...: all nested.
      std::string path = absl::StrCat("/r", round);
      for (int d = 1; d <= i; ++d) absl::StrAppend(&path, "/d", d);
      const std::string id = absl::StrCat("job-", round, "-", i);
      const OutputClaim claim{path, id, ""};
      Store* store = i % 2 == 0 ? a.get() : b.get();
      auto result = store->CreateJob(MakeJob(id, i), Queued(), &claim);
      ASSERT_TRUE(result.ok()) << result.status();
      if (result->created) won.fetch_add(1);
      if (result->output_conflict.has_value()) conflicts.fetch_add(1);
    });
    EXPECT_EQ(won.load(), 1) << "round " << round;
    EXPECT_EQ(conflicts.load(), kThreads - 1) << "round " << round;
    EXPECT_EQ(a->LiveClaimsNestedWith(absl::StrCat("/r", round))->size(), 1u);
  }
}

TEST(PostgresStoreTest, NewerSchemaIsRefused) {
  FT_POSTGRES_OR_SKIP(pg);
  const std::string db = PostgresEnvironment::FreshDatabase(pg, "newer_schema");
  ASSERT_NE(OpenPostgresStore(pg->Uri(db)), nullptr);
  ASSERT_TRUE(pg->Query(db, "UPDATE schema_version SET version = 999").ok());
  StoreOptions options;
  options.postgres_uri = pg->Uri(db);
  auto store = Store::Open(options);
  EXPECT_TRUE(absl::IsFailedPrecondition(store.status())) << store.status();
  EXPECT_NE(store.status().message().find("schema version 999"), std::string::npos);
}

// Connections the server closed while they sat in the pool (a restart, an
// administrator) are replaced: the next call works.
TEST(PostgresStoreTest, SurvivesTerminatedConnections) {
  FT_POSTGRES_OR_SKIP(pg);
  const std::string db = PostgresEnvironment::FreshDatabase(pg, "terminated");
  std::unique_ptr<Store> store = OpenPostgresStore(pg->Uri(db));
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->CreateJob(MakeJob("job-a", 1), Queued()).ok());
  for (int round = 0; round < 3; ++round) {
    auto killed = pg->Query(db, absl::StrCat("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                             "WHERE datname = '", db, "' AND pid <> pg_backend_pid()"));
    ASSERT_TRUE(killed.ok()) << killed.status();
    ASSERT_FALSE(killed->empty());  // positive control: the store's connections were there
    // Let the server finish closing them.
    absl::SleepFor(absl::Milliseconds(200));
    auto appended = store->AppendJobEvent("job-a", Notice("after terminate"));
    ASSERT_TRUE(appended.ok()) << round << ": " << appended.status();
    EXPECT_EQ(appended->sequence(), 2 + round);
  }
}

// Readiness: the probe reports the database going away (it refuses new
// connections and the pooled ones are terminated) and coming back, once
// each.
TEST(PostgresStoreTest, ProbeFollowsReachability) {
  FT_POSTGRES_OR_SKIP(pg);
  const std::string db = PostgresEnvironment::FreshDatabase(pg, "probe");
  std::unique_ptr<Store> store = OpenPostgresStore(pg->Uri(db));
  ASSERT_NE(store, nullptr);
  absl::Mutex mu;
  std::vector<bool> reports;
  StoreProbe probe(store.get(), absl::Milliseconds(50), [&](bool reachable) {
    absl::MutexLock lock(&mu);
    reports.push_back(reachable);
  });
  auto wait_for = [&](size_t n) {
    absl::MutexLock lock(&mu);
    auto enough = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return reports.size() >= n; };
    return mu.AwaitWithTimeout(absl::Condition(&enough), absl::Seconds(30));
  };
  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_TRUE(probe.reachable());
  ASSERT_TRUE(pg->Query("postgres", absl::StrCat("ALTER DATABASE ", db, " ALLOW_CONNECTIONS false"))
                  .ok());
  ASSERT_TRUE(pg->Query("postgres", absl::StrCat("SELECT pg_terminate_backend(pid) FROM "
                                                 "pg_stat_activity WHERE datname = '", db, "'"))
                  .ok());
  ASSERT_TRUE(wait_for(1));
  EXPECT_FALSE(probe.reachable());
  EXPECT_TRUE(absl::IsUnavailable(store->Ping()));
  ASSERT_TRUE(pg->Query("postgres", absl::StrCat("ALTER DATABASE ", db, " ALLOW_CONNECTIONS true"))
                  .ok());
  ASSERT_TRUE(wait_for(2));
  EXPECT_TRUE(probe.reachable());
  absl::SleepFor(absl::Milliseconds(200));
  absl::MutexLock lock(&mu);
  EXPECT_EQ(reports, (std::vector<bool>{false, true}));
}

TEST(PostgresStoreTest, UnreachableServerIsUnavailableWithoutThePassword) {
  FT_POSTGRES_OR_SKIP(pg);
  // A port nothing listens on: the test server's, once a new one is chosen.
  StoreOptions options;
  options.postgres_uri = "postgresql://freezetune:s3cr3t-pw@127.0.0.1:1/nodb";
  auto store = Store::Open(options);
  EXPECT_TRUE(absl::IsUnavailable(store.status())) << store.status();
  EXPECT_EQ(store.status().message().find("s3cr3t-pw"), std::string::npos) << store.status();
  EXPECT_NE(store.status().message().find("127.0.0.1:1/nodb"), std::string::npos)
      << store.status();
}

TEST(PostgresStoreTest, TextWithNulIsRefusedNotTruncated) {
  FT_POSTGRES_OR_SKIP(pg);
  std::unique_ptr<Store> store =
      OpenPostgresStore(pg->Uri(PostgresEnvironment::FreshDatabase(pg, "nul")));
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->CreateJob(MakeJob("job-a", 1, "req"), Queued()).ok());
  // Truncated at the NUL it would collide with "req" and return job-a.
  auto nul = store->CreateJob(MakeJob("job-b", 2, std::string("req\0x", 5)), Queued());
  EXPECT_TRUE(absl::IsInvalidArgument(nul.status())) << nul.status();
  EXPECT_TRUE(absl::IsNotFound(store->GetJob("job-b").status()));
}

// --- The shared queue (issue 12.2) ---

int64_t NowMicros() { return absl::ToUnixMicros(absl::Now()); }

ClaimRequest CpuClaim(const std::string& owner, int idle_cpu = 1) {
  ClaimRequest request;
  request.owner = owner;
  request.now_micros = NowMicros();
  request.expires_micros = request.now_micros + 60'000'000;
  request.idle_cpu_slots = idle_cpu;
  return request;
}

v1::Job PriorityJob(const std::string& id, int64_t create_micros, int priority,
                    const std::string& tenant = "", const std::string& device = "") {
  v1::Job job = MakeJob(id, create_micros, "", v1::JOB_STATE_QUEUED, tenant);
  job.mutable_spec()->set_priority(priority);
  job.mutable_spec()->set_device(device);
  return job;
}

// Replicas claiming at once (SKIP LOCKED): every job is claimed exactly
// once, however eight claimers on two stores race; a claim takes higher
// priority first, then the older job.
TEST(PostgresStoreTest, ClaimsTakeEachJobOnceInPriorityOrder) {
  FT_POSTGRES_OR_SKIP(pg);
  const std::string uri = pg->Uri(PostgresEnvironment::FreshDatabase(pg, "claims"));
  std::unique_ptr<Store> a, b;
  ASSERT_NO_FATAL_FAILURE(OpenTwoReplicas(uri, &a, &b));
  ASSERT_TRUE(a->CreateJob(PriorityJob("old-low", 1, 0), Queued()).ok());
  ASSERT_TRUE(a->CreateJob(PriorityJob("new-high", 2, 5), Queued()).ok());
  auto first = b->ClaimJob(CpuClaim("replica-b"));
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(first->has_value());
  EXPECT_EQ((*first)->id, "new-high");
  EXPECT_EQ((*first)->epoch, 1);
  auto second = a->ClaimJob(CpuClaim("replica-a"));
  ASSERT_TRUE(second.ok() && second->has_value());
  EXPECT_EQ((*second)->id, "old-low");
  auto none = a->ClaimJob(CpuClaim("replica-a"));
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_FALSE(none->has_value());

  constexpr int kJobs = 40;
  for (int i = 0; i < kJobs; ++i) {
    ASSERT_TRUE(a->CreateJob(PriorityJob(absl::StrCat("job-", i), 100 + i, i % 3), Queued()).ok());
  }
  constexpr int kClaimers = 8;
  absl::Mutex mu;
  std::vector<std::string> claimed;
  RaceOnThreads(kClaimers, [&](int t) {
    Store* store = t % 2 == 0 ? a.get() : b.get();
    for (;;) {
      auto got = store->ClaimJob(CpuClaim(absl::StrCat("claimer-", t)));
      ASSERT_TRUE(got.ok()) << got.status();
      if (!got->has_value()) return;
      absl::MutexLock lock(&mu);
      claimed.push_back((*got)->id);
    }
  });
  std::sort(claimed.begin(), claimed.end());
  ASSERT_EQ(claimed.size(), static_cast<size_t>(kJobs));
  EXPECT_EQ(std::adjacent_find(claimed.begin(), claimed.end()), claimed.end())
      << "a job was claimed twice";
}

// A claim takes only jobs the idle slots can run: a CPU slot no CUDA job, a
// GPU slot only the devices it has, and a gang job only as many slots as
// are idle.
TEST(PostgresStoreTest, ClaimsFitTheIdleSlots) {
  FT_POSTGRES_OR_SKIP(pg);
  std::unique_ptr<Store> store =
      OpenPostgresStore(pg->Uri(PostgresEnvironment::FreshDatabase(pg, "claim_fit")));
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->CreateJob(PriorityJob("on-cuda1", 1, 0, "", "cuda:1"), Queued()).ok());
  v1::Job gang = PriorityJob("gang-of-2", 2, 0, "", "cpu");
  gang.mutable_spec()->mutable_resources()->set_data_parallel(2);
  ASSERT_TRUE(store->CreateJob(gang, Queued()).ok());
  EXPECT_FALSE(store->ClaimJob(CpuClaim("r", /*idle_cpu=*/1))->has_value());
  ClaimRequest gpu0 = CpuClaim("r", 0);
  gpu0.idle_gpu_slots = 1;
  gpu0.gpu_devices = {"cuda:0"};
  EXPECT_FALSE(store->ClaimJob(gpu0)->has_value());
  gpu0.gpu_devices = {"cuda:0", "cuda:1"};
  auto cuda = store->ClaimJob(gpu0);
  ASSERT_TRUE(cuda.ok()) << cuda.status();
  ASSERT_TRUE(cuda->has_value());
  EXPECT_EQ((*cuda)->id, "on-cuda1");
  auto both = store->ClaimJob(CpuClaim("r", /*idle_cpu=*/2));
  ASSERT_TRUE(both.ok() && both->has_value());
  EXPECT_EQ((*both)->id, "gang-of-2");
}

// Fencing: once another replica took an expired lease over, the first
// replica's writes are refused and leave nothing; its renewal says the
// lease is lost. The new owner re-queues the job, releasing the lease, and
// the job can be claimed again.
TEST(PostgresStoreTest, WritesOfAReplicaThatLostItsLeaseAreRefused) {
  FT_POSTGRES_OR_SKIP(pg);
  const std::string uri = pg->Uri(PostgresEnvironment::FreshDatabase(pg, "fencing"));
  std::unique_ptr<Store> a, b;
  ASSERT_NO_FATAL_FAILURE(OpenTwoReplicas(uri, &a, &b));
  ASSERT_TRUE(a->CreateJob(PriorityJob("job-1", 1, 0), Queued()).ok());
  ClaimRequest short_lease = CpuClaim("replica-a");
  short_lease.expires_micros = short_lease.now_micros + 1000;  // 1 ms
  auto claimed = a->ClaimJob(short_lease);
  ASSERT_TRUE(claimed.ok() && claimed->has_value()) << claimed.status();
  const int64_t epoch_a = (*claimed)->epoch;
  v1::Job running = PriorityJob("job-1", 1, 0);
  running.set_state(v1::JOB_STATE_RUNNING);
  const Fence fence_a{epoch_a, false};
  ASSERT_TRUE(a->AppendJobEvent("job-1", Notice("running"), &running, &fence_a).ok());
  // Not expired yet for a reader whose clock is behind: nothing taken.
  auto early = b->TakeExpiredLeases("replica-b", short_lease.now_micros, NowMicros() + 60'000'000);
  ASSERT_TRUE(early.ok()) << early.status();
  EXPECT_TRUE(early->empty());
  absl::SleepFor(absl::Milliseconds(5));
  auto taken = b->TakeExpiredLeases("replica-b", NowMicros(), NowMicros() + 60'000'000);
  ASSERT_TRUE(taken.ok()) << taken.status();
  ASSERT_EQ(taken->size(), 1u);
  EXPECT_EQ((*taken)[0].id, "job-1");
  EXPECT_EQ((*taken)[0].previous_owner, "replica-a");
  const int64_t epoch_b = (*taken)[0].epoch;
  EXPECT_GT(epoch_b, epoch_a);

  auto stale = a->AppendJobEvent("job-1", Notice("stale write"), &running, &fence_a);
  EXPECT_TRUE(absl::IsAborted(stale.status())) << stale.status();
  EXPECT_NE(stale.status().message().find("superseded"), std::string::npos) << stale.status();
  EXPECT_TRUE(a->writable()) << "a fenced write is not the store failing";
  EXPECT_FALSE(*a->RenewLease(Kind::kJob, "job-1", epoch_a, NowMicros() + 60'000'000, nullptr));
  auto events = b->ReadJobEvents("job-1", 0, 0);
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 2u) << "the refused write left an event";

  v1::Job requeued = running;
  requeued.set_state(v1::JOB_STATE_QUEUED);
  const Fence release_b{epoch_b, true};
  ASSERT_TRUE(b->AppendJobEvent("job-1", Queued(), &requeued, &release_b).ok());
  // Released: the old epoch cannot write, and a claim takes the job again.
  auto after_release = b->AppendJobEvent("job-1", Notice("late"), nullptr, &release_b);
  EXPECT_TRUE(absl::IsAborted(after_release.status())) << after_release.status();
  auto again = a->ClaimJob(CpuClaim("replica-a"));
  ASSERT_TRUE(again.ok() && again->has_value());
  EXPECT_EQ((*again)->epoch, epoch_b + 2);  // + the release, + this claim
}

// A RUNNING sweep has one driver at a time: a second replica's claim takes
// nothing until the first's lease expires, and then the first's fenced
// writes are refused.
TEST(PostgresStoreTest, SweepsHaveOneDriverAtATime) {
  FT_POSTGRES_OR_SKIP(pg);
  const std::string uri = pg->Uri(PostgresEnvironment::FreshDatabase(pg, "sweep_leases"));
  std::unique_ptr<Store> a, b;
  ASSERT_NO_FATAL_FAILURE(OpenTwoReplicas(uri, &a, &b));
  const std::vector<v1::Job> trials = Trials("sweep-1", 2, 1);
  const v1::Sweep sweep = MakeSweep("sweep-1", 1, "", trials);
  ASSERT_TRUE(a->CreateSweep(sweep, TableEvent(sweep), trials, Queued()).ok());
  auto first = a->ClaimSweeps("replica-a", NowMicros(), NowMicros() + 1000);  // 1 ms
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_EQ(first->size(), 1u);
  const Fence fence_a{(*first)[0].epoch, false};
  ASSERT_TRUE(a->AppendSweepEvent("sweep-1", TableEvent(sweep), &sweep, &fence_a).ok());
  // "Now" a minute back: the 1 ms lease has not expired for this claim.
  auto none = b->ClaimSweeps("replica-b", NowMicros() - 60'000'000, NowMicros() + 60'000'000);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty()) << "taken while the first lease was live";
  absl::SleepFor(absl::Milliseconds(5));
  auto second = b->ClaimSweeps("replica-b", NowMicros(), NowMicros() + 60'000'000);
  ASSERT_TRUE(second.ok());
  ASSERT_EQ(second->size(), 1u);
  EXPECT_EQ((*second)[0].previous_owner, "replica-a");
  auto stale = a->AppendSweepEvent("sweep-1", TableEvent(sweep), &sweep, &fence_a);
  EXPECT_TRUE(absl::IsAborted(stale.status())) << stale.status();
  const Fence fence_b{(*second)[0].epoch, false};
  EXPECT_TRUE(b->AppendSweepEvent("sweep-1", TableEvent(sweep), &sweep, &fence_b).ok());
}

// A restarted replica (same name) takes over what its previous process
// held at once: RUNNING jobs' leases (returned, epoch moved on), unstarted
// claims and sweeps released; other replicas' leases are left alone.
TEST(PostgresStoreTest, ARestartedReplicaTakesOverItsPreviousProcesssLeases) {
  FT_POSTGRES_OR_SKIP(pg);
  std::unique_ptr<Store> store =
      OpenPostgresStore(pg->Uri(PostgresEnvironment::FreshDatabase(pg, "previous_process")));
  ASSERT_NE(store, nullptr);
  for (const char* id : {"running-mine", "claimed-mine", "running-other"}) {
    ASSERT_TRUE(store->CreateJob(PriorityJob(id, 1, 0), Queued()).ok());
  }
  const std::vector<v1::Job> trials = Trials("sweep-mine", 1, 1);
  const v1::Sweep sweep = MakeSweep("sweep-mine", 1, "", trials);
  ASSERT_TRUE(store->CreateSweep(sweep, TableEvent(sweep), trials, Queued()).ok());
  ASSERT_EQ(store->ClaimSweeps("me", NowMicros(), NowMicros() + 60'000'000)->size(), 1u);
  std::map<std::string, int64_t> epochs;
  for (const char* owner : {"me", "me", "other"}) {
    auto claimed = store->ClaimJob(CpuClaim(owner));
    ASSERT_TRUE(claimed.ok() && claimed->has_value());
    epochs[(*claimed)->id] = (*claimed)->epoch;
  }
  // Claims go oldest first within a priority: ids in creation order.
  v1::Job running = PriorityJob("running-mine", 1, 0);
  running.set_state(v1::JOB_STATE_RUNNING);
  const Fence mine{epochs["running-mine"], false};
  ASSERT_TRUE(store->AppendJobEvent("running-mine", Notice("run"), &running, &mine).ok());
  v1::Job other = PriorityJob("running-other", 1, 0);
  other.set_state(v1::JOB_STATE_RUNNING);
  const Fence theirs{epochs["running-other"], false};
  ASSERT_TRUE(store->AppendJobEvent("running-other", Notice("run"), &other, &theirs).ok());

  auto taken = store->TakeOverPreviousProcess("me", NowMicros() + 60'000'000);
  ASSERT_TRUE(taken.ok()) << taken.status();
  ASSERT_EQ(taken->size(), 1u);
  EXPECT_EQ((*taken)[0].id, "running-mine");
  EXPECT_GT((*taken)[0].epoch, epochs["running-mine"]);
  // The claimed job is free again; the other replica's lease still holds.
  auto again = store->ClaimJob(CpuClaim("someone"));
  ASSERT_TRUE(again.ok() && again->has_value());
  EXPECT_EQ((*again)->id, "claimed-mine");
  EXPECT_TRUE(*store->RenewLease(Kind::kJob, "running-other", epochs["running-other"],
                                 NowMicros() + 60'000'000, nullptr));
  EXPECT_EQ(store->ClaimSweeps("someone", NowMicros(), NowMicros() + 60'000'000)->size(), 1u)
      << "the previous process's sweep is free again";
}

// Replicas admitting at once: the tenant's limit holds exactly (each
// admission is counted under the tenant's lock); the whole queue's, counted
// without a lock, by at most one job per concurrent admission. Jobs of
// tenants "t" and "u" against --max_queue, of "t" against
// --max_queued_per_tenant.
TEST(PostgresStoreTest, QueueLimitsHoldAcrossReplicas) {
  FT_POSTGRES_OR_SKIP(pg);
  constexpr int64_t kLimit = 10;
  for (const bool per_tenant : {false, true}) {
    SCOPED_TRACE(per_tenant ? "max_queued_per_tenant" : "max_queue");
    const std::string uri = pg->Uri(PostgresEnvironment::FreshDatabase(
        pg, per_tenant ? "tenant_queue_limit" : "queue_limit"));
    std::unique_ptr<Store> a, b;
    ASSERT_NO_FATAL_FAILURE(OpenTwoReplicas(uri, &a, &b));
    const QueueLimits limits = per_tenant ? QueueLimits{0, kLimit} : QueueLimits{kLimit, 0};
    constexpr int kThreads = 8;
    constexpr int kJobsEach = 5;
    std::atomic<int> created{0};
    std::atomic<int> refused{0};
    RaceOnThreads(kThreads, [&](int i) {
      Store* store = i % 2 == 0 ? a.get() : b.get();
      for (int j = 0; j < kJobsEach; ++j) {
        const std::string tenant = per_tenant || j % 2 == 0 ? "t" : "u";
        v1::Job job = MakeJob(absl::StrCat("job-", i, "-", j), 1, "", v1::JOB_STATE_QUEUED, tenant);
        auto result = store->CreateJob(job, Queued(), nullptr, limits);
        ASSERT_TRUE(result.ok()) << result.status();
        if (result->created) {
          created.fetch_add(1);
        } else {
          refused.fetch_add(1);
          ASSERT_TRUE(result->queue_full.has_value());
          EXPECT_EQ(result->queue_full->tenant, per_tenant);
          EXPECT_GE(result->queue_full->queued, kLimit);
        }
      }
    });
    const int slack = per_tenant ? 0 : kThreads - 1;
    EXPECT_GE(created.load(), kLimit);
    EXPECT_LE(created.load(), kLimit + slack);
    EXPECT_EQ(created.load() + refused.load(), kThreads * kJobsEach);
    EXPECT_EQ(a->CountJobsByState()->at(v1::JOB_STATE_QUEUED), created.load());
  }
}

// Per-tenant running limits hold across replicas: leased jobs count,
// whichever replica holds them.
TEST(PostgresStoreTest, TenantRunningLimitHoldsAcrossReplicas) {
  FT_POSTGRES_OR_SKIP(pg);
  const std::string uri = pg->Uri(PostgresEnvironment::FreshDatabase(pg, "tenant_limit"));
  std::unique_ptr<Store> a, b;
  ASSERT_NO_FATAL_FAILURE(OpenTwoReplicas(uri, &a, &b));
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(a->CreateJob(PriorityJob(absl::StrCat("t1-", i), 1 + i, 0, "t1"), Queued()).ok());
  }
  ASSERT_TRUE(a->CreateJob(PriorityJob("t2-0", 10, 0, "t2"), Queued()).ok());
  ClaimRequest limited_a = CpuClaim("replica-a");
  limited_a.max_running_per_tenant = 1;
  ClaimRequest limited_b = CpuClaim("replica-b");
  limited_b.max_running_per_tenant = 1;
  auto first = a->ClaimJob(limited_a);
  ASSERT_TRUE(first.ok() && first->has_value());
  EXPECT_EQ((*first)->id, "t1-0");
  auto second = b->ClaimJob(limited_b);
  ASSERT_TRUE(second.ok() && second->has_value());
  EXPECT_EQ((*second)->id, "t2-0") << "t1 already runs its one job on replica a";
  EXPECT_FALSE(b->ClaimJob(limited_b)->has_value());
  ListQuery t1_queued;
  t1_queued.states = {v1::JOB_STATE_QUEUED};
  t1_queued.tenant = "t1";
  EXPECT_EQ(a->ListJobs(t1_queued)->jobs_size(), 3);
}

// Other replicas hear of writes through LISTEN/NOTIFY: an event wakes this
// store's subscribers of that job (and the tail does not hide it), a cancel
// request reaches the replica listening, and a queued job is announced.
TEST(PostgresStoreTest, OtherReplicasWritesAreSignalled) {
  FT_POSTGRES_OR_SKIP(pg);
  const std::string uri = pg->Uri(PostgresEnvironment::FreshDatabase(pg, "signals"));
  std::unique_ptr<Store> a, b;
  ASSERT_NO_FATAL_FAILURE(OpenTwoReplicas(uri, &a, &b));
  absl::Mutex mu;
  std::vector<Signal> signals;
  ASSERT_TRUE(b->Listen([&](const Signal& signal) {
                 absl::MutexLock lock(&mu);
                 signals.push_back(signal);
               }).ok());
  auto wait_for = [&](Signal::Type type) {
    absl::MutexLock lock(&mu);
    auto seen = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
      return std::any_of(signals.begin(), signals.end(),
                         [&](const Signal& s) { return s.type == type; });
    };
    return mu.AwaitWithTimeout(absl::Condition(&seen), absl::Seconds(10));
  };
  ASSERT_TRUE(a->CreateJob(PriorityJob("job-1", 1, 0), Queued()).ok());
  ASSERT_TRUE(wait_for(Signal::Type::kQueued));
  // b's tail holds sequence 1 (read through it); a appends 2.
  ASSERT_EQ(b->ReadJobEvents("job-1", 0, 0)->size(), 1u);
  std::atomic<int> woken{0};
  const auto subscription = b->Subscribe(Kind::kJob, "job-1", [&] { woken.fetch_add(1); });
  ASSERT_TRUE(a->AppendJobEvent("job-1", Notice("from a")).ok());
  ASSERT_TRUE(wait_for(Signal::Type::kEvent));
  for (int i = 0; i < 200 && woken.load() == 0; ++i) absl::SleepFor(absl::Milliseconds(10));
  EXPECT_GE(woken.load(), 1);
  auto events = b->ReadJobEvents("job-1", 1, 0);
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 1u);
  EXPECT_EQ((*events)[0].notice().message(), "from a");
  b->Unsubscribe(subscription);
  {
    absl::MutexLock lock(&mu);
    const Signal& event = *std::find_if(signals.begin(), signals.end(), [](const Signal& s) {
      return s.type == Signal::Type::kEvent;
    });
    EXPECT_EQ(event.origin, "replica-a");
    EXPECT_EQ(event.id, "job-1");
    EXPECT_EQ(event.sequence, 2);
  }

  auto claimed = b->ClaimJob(CpuClaim("replica-b"));
  ASSERT_TRUE(claimed.ok() && claimed->has_value());
  ASSERT_TRUE(a->RequestCancel(Kind::kJob, "job-1").ok());
  ASSERT_TRUE(wait_for(Signal::Type::kCancel));
  EXPECT_EQ(*b->PendingCancels("replica-b"), std::vector<std::string>{"job-1"});
  bool cancel_requested = false;
  EXPECT_TRUE(*b->RenewLease(Kind::kJob, "job-1", (*claimed)->epoch, NowMicros() + 60'000'000,
                             &cancel_requested));
  EXPECT_TRUE(cancel_requested);
}

TEST(PostgresUriTest, ValidationAndRedaction) {
  EXPECT_TRUE(ValidatePostgresUri("postgresql://u:pw@db.example:5432/jobs?sslmode=require",
                                  "job_store")
                  .ok());
  EXPECT_TRUE(ValidatePostgresUri("postgres://db.example/jobs", "job_store").ok());
  absl::Status not_pg = ValidatePostgresUri("mysql://db/x", "job_store");
  EXPECT_TRUE(absl::IsInvalidArgument(not_pg));
  EXPECT_EQ(not_pg.message().rfind("job_store: ", 0), 0u) << not_pg;
  absl::Status bad_param =
      ValidatePostgresUri("postgresql://u:hunter2@db/x?no_such_option=1", "job_store");
  EXPECT_TRUE(absl::IsInvalidArgument(bad_param));
  EXPECT_NE(bad_param.message().find("no_such_option"), std::string::npos) << bad_param;
  EXPECT_EQ(bad_param.message().find("hunter2"), std::string::npos) << bad_param;
  absl::Status bad_escape = ValidatePostgresUri("postgresql://u:hun%zzter2@db/x", "job_store");
  EXPECT_TRUE(absl::IsInvalidArgument(bad_escape));
  EXPECT_EQ(bad_escape.message().find("hun%zzter2"), std::string::npos) << bad_escape;

  EXPECT_EQ(RedactPostgresUri("postgresql://u:pw@db.example:5432/jobs?sslmode=require"),
            "postgresql://u@db.example:5432/jobs");
  EXPECT_EQ(RedactPostgresUri("postgresql://db.example/jobs"), "postgresql://db.example/jobs");
  EXPECT_EQ(RedactPostgresUri("postgresql://u:pw@db/x?password=other"), "postgresql://u@db/x");
  EXPECT_EQ(RedactPostgresUri("sqlite"), "postgresql://(unparsable)");
}

}  // namespace
}  // namespace freezetune::store
