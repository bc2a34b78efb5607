// Streaming load test against the real freezetune-server on loopback; it
// starts the server itself and stops by itself (exit 0 only when every check
// holds, 1 otherwise; a hard deadline ends a stuck run).
//
//  1. Idle: the server's VmRSS with no calls.
//  2. One job watched by N concurrent WatchJob streams (default 1000, over 8
//     connections). The streams attach while the job is queued behind a
//     blocker job; VmRSS is read with all N open, then the blocker is
//     cancelled and the job trains. Every watcher must receive every event,
//     in order, ending with SUCCEEDED.
//  3. M jobs (default 200; tiny model, 1 epoch, 2 steps) submitted
//     concurrently, each with one watcher; all must succeed with every event
//     delivered in order.
// Latency: watch_reactor.h.
//
// Usage: freezetune_load_bench SERVER_BIN MODEL_BIN [watchers=1000] [jobs=200]
//        [timeout_s=600]
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "freezetune/v1/freezetune.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "tests/bench/watch_reactor.h"
#include "tests/integration/server_process.h"

namespace freezetune {
namespace {

namespace fs = std::filesystem;
using bench::Percentile;
using bench::WaitUntil;
using bench::Watcher;
using testing::ServerProcess;


int Run(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s SERVER_BIN MODEL_BIN [watchers] [jobs] [timeout_s]\n", argv[0]);
    return 2;
  }
  const std::string server_bin = argv[1], model_bin = argv[2];
  const int watchers = argc > 3 ? std::atoi(argv[3]) : 1000;
  const int jobs = argc > 4 ? std::atoi(argv[4]) : 200;
  const absl::Time deadline = absl::Now() + absl::Seconds(argc > 5 ? std::atoi(argv[5]) : 600);

  const std::string dir = (fs::temp_directory_path() / ("ft_load_" + std::to_string(getpid()))).string();
  fs::remove_all(dir);
  fs::create_directories(dir);
  if (!bench::MakeTinyJobInputs(model_bin, dir)) return 1;
  {
    std::ofstream big(dir + "/big.jsonl");  // the blockers': 100 steps an epoch
    for (int i = 0; i < 400; ++i) {
      big << "{\"text\": \"a great movie i loved it\", \"label\": 1}\n";
      big << "{\"text\": \"a terrible film i hated it\", \"label\": 0}\n";
    }
  }

  ServerProcess server(server_bin, dir);
  std::string error;
  if (!server.Start({"--metrics_listen=", "--data_dir=" + dir + "/data", "--data_roots=" + dir,
                     "--threads=1", "--cpu_slots=2", "--max_queue=10000"},
                    &error)) {
    std::fprintf(stderr, "%s\n", error.c_str());
    return 1;
  }
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  std::vector<std::unique_ptr<v1::FineTuneService::Stub>> stubs;
  for (int i = 0; i < 8; ++i) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // a connection each
    args.SetInt("freezetune.load_channel", i);
    channels.push_back(server.Channel(args));
    stubs.push_back(v1::FineTuneService::NewStub(channels.back()));
  }
  auto* stub = stubs[0].get();
  auto make_job = [&](int epochs) {
    v1::FineTuneJob job;
    job.set_model_uri(dir + "/model");
    job.mutable_train()->set_uri(dir + "/train.jsonl");
    job.mutable_freeze()->mutable_bottom()->set_num_layers(0);
    auto* hp = job.mutable_hyperparameters();
    hp->set_epochs(epochs);
    hp->set_batch_size(8);
    hp->set_max_seq_length(8);
    hp->set_log_every_steps(1);
    hp->set_validation_split(0);
    return job;
  };
  auto submit = [&](v1::FineTuneService::Stub* s, const v1::FineTuneJob& spec, v1::Job* job) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
    v1::SubmitJobRequest request;
    *request.mutable_job() = spec;
    return s->SubmitJob(&context, request, job);
  };
  auto get = [&](const std::string& id) {
    grpc::ClientContext context;
    v1::GetJobRequest request;
    request.set_job_id(id);
    v1::Job job;
    stub->GetJob(&context, request, &job);
    return job;
  };

  std::this_thread::sleep_for(std::chrono::seconds(1));
  const long rss_idle = server.RssKiB();
  bool ok = true;

  // Phase 2: N watchers on one job.
  v1::Job blocker1, blocker2, watched;
  v1::FineTuneJob forever = make_job(100);
  forever.mutable_train()->set_uri(dir + "/big.jsonl");
  if (!submit(stub, forever, &blocker1).ok() || !submit(stub, forever, &blocker2).ok() ||
      !submit(stub, make_job(20), &watched).ok()) {
    std::fprintf(stderr, "submit failed\n%s\n", server.Logs().c_str());
    return 1;
  }
  // The baseline for the streams' cost: both slots training, no stream open.
  WaitUntil([&] { return get(blocker1.id()).progress().step() >= 5 && get(blocker2.id()).progress().step() >= 5; },
            deadline);
  std::this_thread::sleep_for(std::chrono::seconds(1));
  const long rss_training = server.RssKiB();
  std::vector<std::unique_ptr<Watcher>> fan;
  absl::Time open_start = absl::Now();
  for (int i = 0; i < watchers; ++i) {
    fan.push_back(std::make_unique<Watcher>(stubs[i % stubs.size()].get(), watched.id()));
    fan.back()->Start();
  }
  bool attached = WaitUntil(
      [&] {
        return std::all_of(fan.begin(), fan.end(), [](auto& w) { return w->received() >= 1; });
      },
      deadline);
  const double open_seconds = absl::ToDoubleSeconds(absl::Now() - open_start);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const long rss_open = server.RssKiB();
  for (const v1::Job& b : {blocker1, blocker2}) {
    grpc::ClientContext context;
    v1::CancelJobRequest request;
    request.set_job_id(b.id());
    v1::Job out;
    stub->CancelJob(&context, request, &out);
  }
  absl::Time run_start = absl::Now();
  bool fan_done = attached && WaitUntil(
      [&] { return std::all_of(fan.begin(), fan.end(), [](auto& w) { return w->done(); }); },
      deadline);
  const double fan_seconds = absl::ToDoubleSeconds(absl::Now() - run_start);
  v1::Job watched_final = get(watched.id());
  int fan_complete = 0;
  std::string why;
  for (auto& w : fan) {
    std::string reason;
    if (w->Complete(watched_final.last_sequence(), &reason)) {
      ++fan_complete;
    } else if (why.empty()) {
      why = reason;
    }
  }
  std::vector<double> fan_latency;
  for (auto& w : fan) w->AppendLatencies(&fan_latency);
  if (fan_complete != watchers) ok = false;
  if (!fan_done) {
    for (auto& w : fan) w->Cancel();
    WaitUntil([&] { return std::all_of(fan.begin(), fan.end(), [](auto& w) { return w->done(); }); },
              absl::Now() + absl::Seconds(10));
  }
  fan.clear();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const long rss_after_fan = server.RssKiB();

  // Phase 3: M jobs submitted concurrently, one watcher each.
  std::vector<v1::Job> submitted(jobs);
  std::vector<std::unique_ptr<Watcher>> per_job(jobs);
  std::atomic<int> submit_failures{0};
  absl::Time burst_start = absl::Now();
  {
    std::vector<std::thread> threads;
    const int kThreads = 16;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = t; i < jobs; i += kThreads) {
          auto* s = stubs[i % stubs.size()].get();
          grpc::Status status = submit(s, make_job(1), &submitted[i]);
          if (!status.ok()) {
            ++submit_failures;
            continue;
          }
          per_job[i] = std::make_unique<Watcher>(s, submitted[i].id());
          per_job[i]->Start();
        }
      });
    }
    for (auto& th : threads) th.join();
  }
  const double submit_seconds = absl::ToDoubleSeconds(absl::Now() - burst_start);
  bool jobs_done = submit_failures == 0 &&
                   WaitUntil(
                       [&] {
                         return std::all_of(per_job.begin(), per_job.end(),
                                            [](auto& w) { return w == nullptr || w->done(); });
                       },
                       deadline);
  const double burst_seconds = absl::ToDoubleSeconds(absl::Now() - burst_start);
  int jobs_complete = 0;
  std::vector<double> burst_latency;
  for (int i = 0; i < jobs; ++i) {
    if (per_job[i] == nullptr) continue;
    std::string reason;
    v1::Job final_job = get(submitted[i].id());
    if (per_job[i]->Complete(final_job.last_sequence(), &reason)) {
      ++jobs_complete;
    } else if (why.empty()) {
      why = submitted[i].id() + ": " + reason;
    }
    per_job[i]->AppendLatencies(&burst_latency);
  }
  if (!jobs_done) {
    for (auto& w : per_job) if (w) w->Cancel();
    WaitUntil([&] { return std::all_of(per_job.begin(), per_job.end(),
                                       [](auto& w) { return w == nullptr || w->done(); }); },
              absl::Now() + absl::Seconds(10));
  }
  if (jobs_complete != jobs) ok = false;
  per_job.clear();
  const bool stopped = server.Stop();

  std::printf("streaming load test (loopback, real server, cpu_slots=2, threads=1)\n");
  std::printf("  watchers on one job: %d/%d complete and in order (%lld events each); attach %.2f s, run %.2f s\n",
              fan_complete, watchers, static_cast<long long>(watched_final.last_sequence()),
              open_seconds, fan_seconds);
  std::printf("    event->client latency ms: p50 %.2f  p99 %.2f  max %.2f  (n=%zu live events)\n",
              Percentile(fan_latency, 0.5), Percentile(fan_latency, 0.99),
              Percentile(fan_latency, 1.0), fan_latency.size());
  std::printf("  concurrent jobs: %d/%d succeeded with every event in order; submit %.2f s, all done %.2f s\n",
              jobs_complete, jobs, submit_seconds, burst_seconds);
  std::printf("    event->client latency ms: p50 %.2f  p99 %.2f  max %.2f  (n=%zu live events)\n",
              Percentile(burst_latency, 0.5), Percentile(burst_latency, 0.99),
              Percentile(burst_latency, 1.0), burst_latency.size());
  std::printf("  server VmRSS: idle %.1f MiB; 2 jobs training, no streams %.1f MiB; same + %d open "
              "watch streams %.1f MiB (+%.1f MiB for the streams, +%.1f MiB over idle); after they closed %.1f MiB\n",
              rss_idle / 1024.0, rss_training / 1024.0, watchers, rss_open / 1024.0,
              (rss_open - rss_training) / 1024.0, (rss_open - rss_idle) / 1024.0,
              rss_after_fan / 1024.0);
  std::printf("  server exited 0 on SIGTERM: %s\n", stopped ? "yes" : "no");
  if (!why.empty()) std::printf("  first problem: %s\n", why.c_str());
  if (!ok || !stopped) {
    std::printf("FAILED; server log in %s\n", dir.c_str());
    return 1;
  }
  fs::remove_all(dir);
  std::printf("OK\n");
  return 0;
}

}  // namespace
}  // namespace freezetune

int main(int argc, char** argv) { return freezetune::Run(argc, argv); }
