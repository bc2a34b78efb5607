// Replicas on one PostgreSQL (issue 12.2), side by side in one run: the
// same burst of M tiny jobs (1 epoch, 2 steps) submitted concurrently to one
// server on the embedded SQLite store (the baseline), to 1 replica on
// PostgreSQL, then to 3 replicas round-robin, each job watched on a replica
// other than the one it was submitted to (with 3). Reports submit
// throughput, the time until every job ended, the event->watcher latency
// (watch_reactor.h) and each replica's VmRSS. It starts PostgreSQL and the
// servers itself and stops them (exit 0 only when every job succeeded with
// every event delivered in order).
//
// Usage: freezetune_replicas_bench SERVER_BIN MODEL_BIN [jobs=200] [timeout_s=900]
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "freezetune/v1/freezetune.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "tests/bench/watch_reactor.h"
#include "tests/integration/server_process.h"
#include "tests/support/postgres_instance.h"

namespace freezetune {
namespace {

namespace fs = std::filesystem;
using bench::Percentile;
using bench::WaitUntil;
using bench::Watcher;
using testing::PostgresInstance;
using testing::ServerProcess;

struct Result {
  std::string store;  // "sqlite" or "postgresql"
  int replicas = 0;
  int complete = 0;
  double submit_seconds = 0;
  double all_done_seconds = 0;
  std::vector<double> latency_ms;
  std::vector<long> rss_idle_kib, rss_after_kib;
  std::string problem;
};

// `pg` null: one replica on the embedded SQLite store (the default), for
// comparison.
Result RunBurst(const std::string& server_bin, const std::string& dir, PostgresInstance* pg,
                int replicas, int jobs, absl::Time deadline) {
  Result r;
  r.store = pg != nullptr ? "postgresql" : "sqlite";
  r.replicas = replicas;
  const std::string db = r.store + "_r" + std::to_string(replicas);
  if (pg != nullptr && !pg->CreateDatabase(db).ok()) {
    r.problem = "create database";
    return r;
  }
  std::vector<std::unique_ptr<ServerProcess>> servers;
  std::vector<std::unique_ptr<v1::FineTuneService::Stub>> stubs;
  for (int i = 0; i < replicas; ++i) {
    const std::string sdir = dir + "/" + db + "_" + std::to_string(i);
    fs::create_directories(sdir);
    servers.push_back(std::make_unique<ServerProcess>(server_bin, sdir));
    std::string error;
    if (!servers.back()->Start({"--metrics_listen=", "--data_dir=" + sdir + "/data",
                                "--data_roots=" + dir, "--threads=1", "--cpu_slots=2",
                                "--max_queue=10000",
                                "--job_store=" + (pg != nullptr ? pg->Uri(db) : "sqlite")},
                               &error)) {
      r.problem = error;
      return r;
    }
    stubs.push_back(v1::FineTuneService::NewStub(servers.back()->Channel()));
  }
  std::this_thread::sleep_for(std::chrono::seconds(1));
  for (auto& s : servers) r.rss_idle_kib.push_back(s->RssKiB());

  v1::FineTuneJob spec;
  spec.set_model_uri(dir + "/model");
  spec.mutable_train()->set_uri(dir + "/train.jsonl");
  auto* hp = spec.mutable_hyperparameters();
  hp->set_epochs(1);
  hp->set_batch_size(8);
  hp->set_max_seq_length(8);
  hp->set_log_every_steps(1);
  hp->set_validation_split(0);
  std::vector<v1::Job> submitted(jobs);
  std::vector<std::unique_ptr<Watcher>> watchers(jobs);
  std::atomic<int> failures{0};
  const absl::Time start = absl::Now();
  {
    std::vector<std::thread> threads;
    constexpr int kThreads = 16;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = t; i < jobs; i += kThreads) {
          grpc::ClientContext context;
          context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
          v1::SubmitJobRequest request;
          *request.mutable_job() = spec;
          if (!stubs[i % replicas]->SubmitJob(&context, request, &submitted[i]).ok()) {
            ++failures;
            continue;
          }
          watchers[i] = std::make_unique<Watcher>(stubs[(i + 1) % replicas].get(),
                                                  submitted[i].id());
          watchers[i]->Start();
        }
      });
    }
    for (auto& th : threads) th.join();
  }
  r.submit_seconds = absl::ToDoubleSeconds(absl::Now() - start);
  const bool done = failures == 0 &&
                    WaitUntil(
                        [&] {
                          return std::all_of(watchers.begin(), watchers.end(),
                                             [](auto& w) { return w == nullptr || w->done(); });
                        },
                        deadline);
  r.all_done_seconds = absl::ToDoubleSeconds(absl::Now() - start);
  for (int i = 0; i < jobs; ++i) {
    if (watchers[i] == nullptr) continue;
    grpc::ClientContext context;
    v1::GetJobRequest get;
    get.set_job_id(submitted[i].id());
    v1::Job final_job;
    stubs[0]->GetJob(&context, get, &final_job);
    std::string why;
    if (watchers[i]->Complete(final_job.last_sequence(), &why)) {
      ++r.complete;
    } else if (r.problem.empty()) {
      r.problem = submitted[i].id() + ": " + why;
    }
    watchers[i]->AppendLatencies(&r.latency_ms);
  }
  if (!done) {
    for (auto& w : watchers) {
      if (w) w->Cancel();
    }
    WaitUntil([&] { return std::all_of(watchers.begin(), watchers.end(),
                                       [](auto& w) { return w == nullptr || w->done(); }); },
              absl::Now() + absl::Seconds(10));
  }
  watchers.clear();
  for (auto& s : servers) r.rss_after_kib.push_back(s->RssKiB());
  for (auto& s : servers) s->Stop();
  return r;
}

int Run(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s SERVER_BIN MODEL_BIN [jobs] [timeout_s]\n", argv[0]);
    return 2;
  }
  const std::string server_bin = argv[1], model_bin = argv[2];
  const int jobs = argc > 3 ? std::atoi(argv[3]) : 200;
  const absl::Time deadline = absl::Now() + absl::Seconds(argc > 4 ? std::atoi(argv[4]) : 900);
  const std::string bindir = PostgresInstance::FindBinDir();
  if (bindir.empty()) {
    std::fprintf(stderr, "%s\n", PostgresInstance::kNotInstalled);
    return 1;
  }
  auto pg = PostgresInstance::Start(bindir);
  if (!pg.ok()) {
    std::fprintf(stderr, "%s\n", pg.status().ToString().c_str());
    return 1;
  }
  const std::string dir =
      (fs::temp_directory_path() / ("ft_replicas_bench_" + std::to_string(getpid()))).string();
  fs::remove_all(dir);
  fs::create_directories(dir);
  if (!bench::MakeTinyJobInputs(model_bin, dir)) return 1;
  std::vector<Result> results;
  results.push_back(RunBurst(server_bin, dir, nullptr, 1, jobs, deadline));
  for (int replicas : {1, 3}) {
    results.push_back(RunBurst(server_bin, dir, pg->get(), replicas, jobs, deadline));
  }
  bool ok = true;
  std::printf("replicas on one PostgreSQL: %d jobs (1 epoch, 2 steps) submitted by 16 threads, "
              "cpu_slots=2 and threads=1 per replica\n", jobs);
  std::printf("| store | replicas | succeeded, events in order | submit s | jobs/s submitted | all done s "
              "| event latency p50 ms | p99 ms | VmRSS per replica idle -> after, MiB |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  for (const Result& r : results) {
    std::string rss;
    for (size_t i = 0; i < r.rss_idle_kib.size(); ++i) {
      char one[64];
      std::snprintf(one, sizeof(one), "%s%.0f -> %.0f", i ? ", " : "", r.rss_idle_kib[i] / 1024.0,
                    i < r.rss_after_kib.size() ? r.rss_after_kib[i] / 1024.0 : -1.0);
      rss += one;
    }
    std::printf("| %s | %d | %d/%d | %.2f | %.1f | %.2f | %.1f | %.1f | %s |\n", r.store.c_str(),
                r.replicas, r.complete,
                jobs, r.submit_seconds, jobs / std::max(r.submit_seconds, 1e-9),
                r.all_done_seconds, Percentile(r.latency_ms, 0.5), Percentile(r.latency_ms, 0.99),
                rss.c_str());
    if (r.complete != jobs) {
      ok = false;
      std::printf("  %s, %d replicas: first problem: %s\n", r.store.c_str(), r.replicas,
                  r.problem.c_str());
    }
  }
  if (!ok) {
    std::printf("FAILED; logs in %s\n", dir.c_str());
    return 1;
  }
  fs::remove_all(dir);
  std::printf("OK\n");
  return 0;
}

}  // namespace
}  // namespace freezetune

int main(int argc, char** argv) { return freezetune::Run(argc, argv); }
