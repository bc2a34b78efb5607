// Store latency, SQLite vs PostgreSQL side by side in one run (a plain
// program, not a CTest; results in tests/bench/STORE.md):
//   build/tests/freezetune_store_bench [jobs=300] [events=1000]
// Per backend, through Store (what the server calls): CreateJob (a submit's
// store write), AppendJobEvent (a training event), AppendJobEvent with the
// job record (a state change), CreateSweep with 40 trials in one
// transaction, and ReadJobEvents of 100 events from the backend (a fresh
// Store, so the in-memory tail does not answer). PostgreSQL is the tests'
// throwaway server on loopback (fsync=off, synchronous_commit=off; SQLite
// runs WAL with synchronous=NORMAL, which does not fsync per commit either).
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/store/store.h"
#include "tests/support/postgres_instance.h"

namespace freezetune::store {
namespace {

namespace fs = std::filesystem;

struct Stats {
  double p50_us = 0, p99_us = 0;
};

Stats Measure(int n, const std::function<void(int)>& op) {
  std::vector<double> us;
  us.reserve(n);
  for (int i = 0; i < n; ++i) {
    const absl::Time start = absl::Now();
    op(i);
    us.push_back(absl::ToDoubleMicroseconds(absl::Now() - start));
  }
  std::sort(us.begin(), us.end());
  return {us[us.size() / 2], us[std::min(us.size() - 1, us.size() * 99 / 100)]};
}

v1::Job MakeJob(const std::string& id, int64_t micros, const std::string& request_id) {
  v1::Job job;
  job.set_id(id);
  job.set_state(v1::JOB_STATE_QUEUED);
  job.mutable_spec()->set_model_uri("/models/bert-tiny");
  job.mutable_spec()->mutable_train()->set_uri("/data/train.jsonl");
  job.mutable_spec()->set_client_request_id(request_id);
  *job.mutable_create_time() = FromMicros(micros);
  return job;
}

void Check(const absl::Status& status, const char* what) {
  if (!status.ok()) {
    std::fprintf(stderr, "%s: %s\n", what, status.ToString().c_str());
    std::exit(1);
  }
}

void Run(const std::string& name, const StoreOptions& options, int jobs, int events) {
  auto opened = Store::Open(options);
  Check(opened.status(), "open");
  Store& store = **opened;
  v1::JobEvent queued;
  queued.mutable_state_change()->set_state(v1::JOB_STATE_QUEUED);
  const Stats create = Measure(jobs, [&](int i) {
    Check(store.CreateJob(MakeJob(absl::StrCat("job-", i), i, absl::StrCat("req-", i)), queued)
              .status(),
          "create");
  });
  v1::JobEvent train;
  train.mutable_train()->set_step(1);
  train.mutable_train()->set_loss(0.5f);
  const Stats append = Measure(events, [&](int i) {
    Check(store.AppendJobEvent(absl::StrCat("job-", i % jobs), train).status(), "append");
  });
  v1::Job running = MakeJob("job-0", 0, "req-0");
  running.set_state(v1::JOB_STATE_RUNNING);
  const Stats append_record = Measure(events / 4, [&](int) {
    v1::JobEvent change;
    change.mutable_state_change()->set_state(v1::JOB_STATE_RUNNING);
    Check(store.AppendJobEvent("job-0", change, &running).status(), "append with record");
  });
  const Stats sweep = Measure(20, [&](int i) {
    const std::string sweep_id = absl::StrCat("sweep-", i);
    v1::Sweep s;
    s.set_id(sweep_id);
    s.set_state(v1::SWEEP_STATE_RUNNING);
    std::vector<v1::Job> trials;
    for (int t = 0; t < 40; ++t) {
      v1::Job trial = MakeJob(absl::StrCat(sweep_id, "-trial-", t), 1000 + i, "");
      trial.set_sweep_id(sweep_id);
      s.add_trials()->set_job_id(trial.id());
      trials.push_back(std::move(trial));
    }
    v1::SweepEvent table;
    *table.mutable_table() = s;
    Check(store.CreateSweep(s, table, trials, queued).status(), "create sweep");
  });
  auto fresh = Store::Open(options);  // no tail: reads hit the backend
  Check(fresh.status(), "reopen");
  const Stats read = Measure(200, [&](int) {
    auto got = (*fresh)->ReadJobEvents("job-0", 0, 100);
    Check(got.status(), "read");
    if (got->size() != 100u) Check(absl::InternalError("short read"), "read");
  });
  auto row = [&](const char* op, const Stats& s) {
    std::printf("| %-10s | %-38s | %8.0f | %8.0f |\n", name.c_str(), op, s.p50_us, s.p99_us);
  };
  row("CreateJob (submit)", create);
  row("AppendJobEvent", append);
  row("AppendJobEvent + record (state change)", append_record);
  row("CreateSweep, 40 trials", sweep);
  row("ReadJobEvents, 100 from the backend", read);
}

}  // namespace
}  // namespace freezetune::store

int main(int argc, char** argv) {
  using freezetune::store::StoreOptions;
  const int jobs = argc > 1 ? std::atoi(argv[1]) : 300;
  const int events = argc > 2 ? std::atoi(argv[2]) : 1000;
  const std::string bindir = freezetune::testing::PostgresInstance::FindBinDir();
  if (bindir.empty()) {
    std::fprintf(stderr, "PostgreSQL is not installed\n");
    return 1;
  }
  auto pg = freezetune::testing::PostgresInstance::Start(bindir);
  if (!pg.ok()) {
    std::fprintf(stderr, "%s\n", pg.status().ToString().c_str());
    return 1;
  }
  if (!(*pg)->CreateDatabase("bench").ok()) return 1;
  const std::filesystem::path dir = std::filesystem::temp_directory_path() /
                                    ("ft_store_bench_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::printf("%d jobs, %d events; microseconds per call\n\n", jobs, events);
  std::printf("| backend    | operation                              |      p50 |      p99 |\n");
  std::printf("|---|---|---:|---:|\n");
  StoreOptions sqlite;
  sqlite.path = (dir / "freezetune.db").string();
  freezetune::store::Run("sqlite", sqlite, jobs, events);
  StoreOptions postgres;
  postgres.postgres_uri = (*pg)->Uri("bench");
  freezetune::store::Run("postgresql", postgres, jobs, events);
  std::filesystem::remove_all(dir);
  return 0;
}
