// kill -9 chaos run against the real freezetune-server (issue 14, "Done
// when"): CYCLES times, start the server on the same data dir, retry every
// submit whose answer was lost (same client_request_id), submit this
// cycle's share of JOBS jobs, then SIGKILL the server at a moment chosen by
// the cycle, in turn:
//   submit  while this cycle's jobs are submitted, all at once (a thread
//           each), after a random time up to 4 times the mean submit
//           latency measured so far (plus 1 ms);
//   output  after a running job stores its last training step, at a random
//           point of the time a job took from there to SUCCEEDED
//           (evaluation, output writing, the final events; measured once on
//           an extra job); the report says how many of these kills found
//           the output begun;
//   sweep   while a SubmitSweep of 20 candidates is in flight, after a
//           random time up to the mean SubmitSweep latency plus 1 ms (the first sweep
//           cycle submits one whole sweep first to measure it; this cycle's
//           jobs are submitted before).
// Then one last start, the lost submits retried once more, and every job
// and sweep waited for. It exits 0 only when nothing was lost:
//   - every acknowledged job and sweep exists, and every job SUCCEEDED and
//     every sweep SUCCEEDED;
//   - each client_request_id names exactly one job or sweep, and a retry of
//     an acknowledged submit returned the same id;
//   - no trial job names a missing sweep, each sweep's trials are exactly
//     the jobs that name it, and every trial job ended;
//   - each job's events are 1..N without a gap, the last one terminal.
// One JSON line of counts goes to stdout (numbers in tests/bench/README.md).
//
// Usage: freezetune_chaos_bench SERVER_BIN MODEL_BIN [cycles=10] [jobs=45]
//        [seed=1] [timeout_s=1800]
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
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "freezetune/v1/freezetune.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "tests/integration/server_process.h"
#include "tests/integration/server_test_util.h"

namespace freezetune {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::ServerProcess;

constexpr int kSweepCandidates = 20;

// What was submitted and what was acknowledged, by client_request_id.
// Specs are added by the main thread only while no submitter runs; answers
// are recorded under Chaos::mu_ by the submitting threads, which the main
// thread joins before it reads them.
struct Ledger {
  std::map<std::string, v1::FineTuneJob> job_specs;
  std::map<std::string, std::string> job_ids;
  std::map<std::string, v1::SweepSpec> sweep_specs;
  std::map<std::string, std::string> sweep_ids;
  int retries = 0;             // submits repeated because a kill cut their answer
  int stored_before_kill = 0;  // of those, the ones the server had stored (retry found them)
  int same_id_repeats = 0;     // repeats of acknowledged submits that returned the same id
  // Latency of the acknowledged first submits, for timing the kills.
  double job_submit_ms = 0, sweep_submit_ms = 0;
  int job_submits = 0, sweep_submits = 0;
  std::vector<std::string> errors;
};

class Chaos {
 public:
  Chaos(std::string server_bin, std::string model_bin, std::string dir, unsigned seed)
      : server_bin_(std::move(server_bin)),
        model_bin_(std::move(model_bin)),
        dir_(std::move(dir)),
        rng_(seed) {}

  bool Setup() {
    std::string error;
    if (!testing::MakeTinyModel(model_bin_, dir_ + "/model", &error)) {
      std::fprintf(stderr, "model: %s\n", error.c_str());
      return false;
    }
    testing::WriteTinySentimentJsonl(dir_ + "/train.jsonl");
    server_ = std::make_unique<ServerProcess>(server_bin_, dir_);
    return true;
  }

  bool Start() {
    std::string error;
    if (!server_->Start({"--metrics_listen=", "--data_dir=" + dir_ + "/data",
                         "--data_roots=" + dir_, "--threads=1", "--cpu_slots=1",
                         "--drain_grace_period=2s"},
                        &error)) {
      std::fprintf(stderr, "start: %s\n", error.c_str());
      return false;
    }
    ++starts_;
    stub_ = v1::FineTuneService::NewStub(server_->Channel());
    ClassifyOutputKill();
    return true;
  }

  void Kill(const char* mode) {
    server_->Kill();
    ++kills_[mode];
  }

  v1::FineTuneJob Job(const std::string& request_id) const {
    v1::FineTuneJob job;
    job.set_model_uri("file://" + dir_ + "/model");
    job.mutable_train()->set_uri(dir_ + "/train.jsonl");
    job.mutable_freeze()->mutable_bottom()->set_num_layers(1);
    auto* hp = job.mutable_hyperparameters();
    hp->set_epochs(2);
    hp->set_batch_size(8);
    hp->set_max_seq_length(16);
    hp->set_log_every_steps(1);
    hp->set_checkpoint_every_steps(2);
    hp->set_learning_rate(1e-3f);
    hp->set_validation_split(0.25f);
    job.set_client_request_id(request_id);
    return job;
  }

  v1::SweepSpec Sweep(const std::string& request_id) const {
    v1::SweepSpec spec;
    *spec.mutable_job() = Job("");
    spec.mutable_job()->clear_freeze();
    spec.mutable_job()->mutable_hyperparameters()->set_epochs(1);
    for (int i = 0; i < kSweepCandidates; ++i) {
      spec.add_specs()->mutable_bottom()->set_num_layers(i % 3);
    }
    spec.set_client_request_id(request_id);
    return spec;
  }

  // Submits (or repeats) the job of `request_id`; records the answer.
  void SubmitJob(const std::string& request_id, bool retry) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + seconds(60));
    v1::SubmitJobRequest request;
    *request.mutable_job() = ledger_.job_specs.at(request_id);
    v1::Job job;
    const auto sent = std::chrono::system_clock::now();
    if (!stub_->SubmitJob(&context, request, &job).ok()) return;  // the server died: retried
    Record(request_id, job.id(), retry, sent, job.create_time(), &ledger_.job_ids,
           &ledger_.job_submit_ms, &ledger_.job_submits, "job");
  }

  void SubmitSweep(const std::string& request_id, bool retry) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + seconds(120));
    v1::SubmitSweepRequest request;
    *request.mutable_sweep() = ledger_.sweep_specs.at(request_id);
    v1::Sweep sweep;
    const auto sent = std::chrono::system_clock::now();
    if (!stub_->SubmitSweep(&context, request, &sweep).ok()) return;
    Record(request_id, sweep.id(), retry, sent, sweep.create_time(), &ledger_.sweep_ids,
           &ledger_.sweep_submit_ms, &ledger_.sweep_submits, "sweep");
  }

  // Every submit without an answer again, plus a repeat of two acknowledged
  // ones of each kind (their id must not change).
  void RetryPending() {
    for (const auto& [request_id, spec] : ledger_.job_specs) {
      if (ledger_.job_ids.count(request_id) == 0) {
        ++ledger_.retries;
        SubmitJob(request_id, true);
      }
    }
    for (const auto& [request_id, spec] : ledger_.sweep_specs) {
      if (ledger_.sweep_ids.count(request_id) == 0) {
        ++ledger_.retries;
        SubmitSweep(request_id, true);
      }
    }
    RepeatAcknowledged(ledger_.job_ids, [this](const std::string& id) { SubmitJob(id, true); });
    RepeatAcknowledged(ledger_.sweep_ids, [this](const std::string& id) { SubmitSweep(id, true); });
  }

  void Cycle(int cycle, int first_job, int end_job) {
    std::vector<std::string> request_ids;
    for (int i = first_job; i < end_job; ++i) {
      const std::string request_id = absl::StrCat("chaos-job-", i);
      ledger_.job_specs[request_id] = Job(request_id);
      request_ids.push_back(request_id);
    }
    auto submit_all = [this, request_ids] {
      for (const std::string& request_id : request_ids) SubmitJob(request_id, false);
    };
    switch (cycle % 3) {
      case 0: {  // submit
        const double mean_ms =
            ledger_.job_submits > 0 ? ledger_.job_submit_ms / ledger_.job_submits : 20;
        std::vector<std::thread> submitters;
        for (const std::string& request_id : request_ids) {
          submitters.emplace_back([this, request_id] { SubmitJob(request_id, false); });
        }
        std::this_thread::sleep_for(
            std::chrono::microseconds(Uniform(0, static_cast<int>(4000 * mean_ms) + 1000)));
        Kill("submit");
        for (std::thread& t : submitters) t.join();
        break;
      }
      case 1: {  // output
        submit_all();
        KillWhileFinishing();
        break;
      }
      default: {  // sweep
        submit_all();
        if (ledger_.sweep_submits == 0) {
          const std::string measure = absl::StrCat("chaos-sweep-measure-", cycle);
          ledger_.sweep_specs[measure] = Sweep(measure);
          SubmitSweep(measure, false);
        }
        const double mean_ms =
            ledger_.sweep_submits > 0 ? ledger_.sweep_submit_ms / ledger_.sweep_submits : 100;
        const std::string request_id = absl::StrCat("chaos-sweep-", cycle);
        ledger_.sweep_specs[request_id] = Sweep(request_id);
        std::thread submitter([this, request_id] { SubmitSweep(request_id, false); });
        std::this_thread::sleep_for(
            std::chrono::microseconds(Uniform(0, static_cast<int>(1000 * mean_ms) + 1000)));
        Kill("sweep");
        submitter.join();
        break;
      }
    }
  }

  // Waits until every acknowledged job and sweep has ended, then checks
  // everything the header lists. False on a timeout.
  bool WaitAndCheck(std::chrono::steady_clock::time_point deadline) {
    while (std::chrono::steady_clock::now() < deadline) {
      bool all_ended = true;
      for (const v1::Job& job : AllJobs()) all_ended &= Ended(job.state());
      for (const v1::Sweep& sweep : AllSweeps()) all_ended &= sweep.state() != v1::SWEEP_STATE_RUNNING;
      if (all_ended) break;
      std::this_thread::sleep_for(milliseconds(500));
    }
    grpc::Status listed_jobs, listed_sweeps;
    const std::vector<v1::Job> jobs = testing::ListAllJobs(stub_.get(), &listed_jobs);
    const std::vector<v1::Sweep> sweeps = testing::ListAllSweeps(stub_.get(), &listed_sweeps);
    if (!listed_jobs.ok()) Error("ListJobs: ", listed_jobs.error_message());
    if (!listed_sweeps.ok()) Error("ListSweeps: ", listed_sweeps.error_message());
    std::map<std::string, std::vector<std::string>> jobs_per_key, sweeps_per_key;
    std::map<std::string, std::set<std::string>> jobs_by_sweep, trials_by_sweep;
    std::map<std::string, v1::JobState> job_state;
    for (const v1::Job& job : jobs) {
      job_state[job.id()] = job.state();
      if (!job.spec().client_request_id().empty()) {
        jobs_per_key[job.spec().client_request_id()].push_back(job.id());
      }
      if (!job.sweep_id().empty()) jobs_by_sweep[job.sweep_id()].insert(job.id());
      if (!Ended(job.state())) Error("job ", job.id(), " still ", v1::JobState_Name(job.state()));
      CheckEvents(job.id());
    }
    for (const v1::Sweep& sweep : sweeps) {
      sweeps_per_key[sweep.spec().client_request_id()].push_back(sweep.id());
      for (const v1::SweepTrial& t : sweep.trials()) trials_by_sweep[sweep.id()].insert(t.job_id());
    }
    for (const auto& [request_id, id] : ledger_.job_ids) {
      auto state = job_state.find(id);
      if (state == job_state.end()) {
        Error("acknowledged job ", id, " (", request_id, ") is lost");
      } else if (state->second != v1::JOB_STATE_SUCCEEDED) {
        Error("job ", id, " ended ", v1::JobState_Name(state->second));
      }
      if (jobs_per_key[request_id].size() != 1) {
        Error(jobs_per_key[request_id].size(), " jobs for client_request_id ", request_id);
      }
    }
    for (const auto& [request_id, spec] : ledger_.job_specs) {
      if (ledger_.job_ids.count(request_id) == 0) Error("job ", request_id, " never acknowledged");
    }
    for (const auto& [request_id, id] : ledger_.sweep_ids) {
      auto sweep = std::find_if(sweeps.begin(), sweeps.end(),
                                [&](const v1::Sweep& s) { return s.id() == id; });
      if (sweep == sweeps.end()) {
        Error("acknowledged sweep ", id, " (", request_id, ") is lost");
      } else if (sweep->state() != v1::SWEEP_STATE_SUCCEEDED) {
        Error("sweep ", id, " ended ", v1::SweepState_Name(sweep->state()), ": ",
              sweep->error_message());
      }
      if (sweeps_per_key[request_id].size() != 1) {
        Error(sweeps_per_key[request_id].size(), " sweeps for client_request_id ", request_id);
      }
    }
    for (const auto& [sweep_id, trial_jobs] : jobs_by_sweep) {
      if (trials_by_sweep.count(sweep_id) == 0) {
        Error(trial_jobs.size(), " orphan trial jobs of missing sweep ", sweep_id);
      } else if (trial_jobs != trials_by_sweep[sweep_id]) {
        Error("sweep ", sweep_id, "'s trials are not the jobs that name it");
      }
    }
    for (const auto& [sweep_id, trials] : trials_by_sweep) {
      if (jobs_by_sweep[sweep_id] != trials) Error("sweep ", sweep_id, " lost trial jobs");
    }
    jobs_total_ = jobs.size();
    sweeps_total_ = sweeps.size();
    return std::chrono::steady_clock::now() < deadline;
  }

  void Report(double seconds_total, bool in_time) {
    std::printf(
        "{\"bench\": \"chaos\", \"cycles_killed\": %d, \"kills_submit\": %d, "
        "\"kills_output\": %d, \"kills_sweep\": %d, \"starts\": %d, \"jobs_submitted\": %zu, "
        "\"jobs_acknowledged\": %zu, \"sweeps_submitted\": %zu, \"sweeps_acknowledged\": %zu, "
        "\"jobs_in_store\": %zu, \"sweeps_in_store\": %zu, \"submits_cut_by_a_kill\": %d, "
        "\"of_which_stored_before_the_kill\": %d, \"repeats_same_id\": %d, "
        "\"mean_submit_ms\": %.1f, \"mean_submit_sweep_ms\": %.1f, "
        "\"finish_window_ms\": %.1f, \"output_kills_before_output\": %d, "
        "\"output_kills_with_output_files\": %d, \"output_kills_after_the_end\": %d, "
        "\"errors\": %zu, "
        "\"finished_in_time\": %s, \"wall_seconds\": %.1f}\n",
        kills_["submit"] + kills_["output"] + kills_["sweep"], kills_["submit"], kills_["output"],
        kills_["sweep"], starts_, ledger_.job_specs.size(), ledger_.job_ids.size(),
        ledger_.sweep_specs.size(), ledger_.sweep_ids.size(), jobs_total_, sweeps_total_,
        ledger_.retries, ledger_.stored_before_kill, ledger_.same_id_repeats,
        ledger_.job_submits > 0 ? ledger_.job_submit_ms / ledger_.job_submits : 0.0,
        ledger_.sweep_submits > 0 ? ledger_.sweep_submit_ms / ledger_.sweep_submits : 0.0,
        finish_window_ms_, output_kills_before_output_, output_kills_during_output_,
        output_kills_after_end_, ledger_.errors.size(), in_time ? "true" : "false", seconds_total);
    for (const std::string& e : ledger_.errors) std::fprintf(stderr, "chaos: %s\n", e.c_str());
  }

  bool ok() const { return ledger_.errors.empty(); }
  void StopServer() { server_->Stop(seconds(30)); }
  std::string Logs() const { return server_->Logs(); }

 private:
  template <typename... Args>
  void Error(const Args&... args) {
    ledger_.errors.push_back(absl::StrCat(args...));
  }

  static bool Ended(v1::JobState s) {
    return s == v1::JOB_STATE_SUCCEEDED || s == v1::JOB_STATE_FAILED ||
           s == v1::JOB_STATE_CANCELLED;
  }

  int Uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }

  // An answer: the id for `request_id` (a repeat must return the same
  // one); a retry whose resource was created before it was sent had been
  // stored before the kill cut its first answer.
  void Record(const std::string& request_id, const std::string& id, bool retry,
              std::chrono::system_clock::time_point sent,
              const google::protobuf::Timestamp& created, std::map<std::string, std::string>* ids,
              double* latency_ms, int* latencies, const char* what) {
    const auto now = std::chrono::system_clock::now();
    absl::MutexLock lock(&mu_);
    auto [it, inserted] = ids->emplace(request_id, id);
    if (!inserted && it->second != id) {
      Error(what, " ", request_id, " acknowledged as ", it->second, " and again as ", id);
    } else if (!inserted) {
      ++ledger_.same_id_repeats;
    } else if (retry) {
      const auto created_at = std::chrono::system_clock::time_point(
          std::chrono::seconds(created.seconds()) + std::chrono::nanoseconds(created.nanos()));
      if (created_at < sent) ++ledger_.stored_before_kill;
    } else {
      *latency_ms += std::chrono::duration<double, std::milli>(now - sent).count();
      ++*latencies;
    }
  }

  template <typename Fn>
  void RepeatAcknowledged(const std::map<std::string, std::string>& ids, Fn repeat) {
    if (ids.empty()) return;
    std::vector<std::string> keys;
    for (const auto& [request_id, id] : ids) keys.push_back(request_id);
    for (int i = 0; i < 2; ++i) repeat(keys[Uniform(0, static_cast<int>(keys.size()) - 1)]);
  }

  // Follows a running job; once it stores its last training step, waits a
  // random part of the finish window (an earlier job's time from its last
  // step to SUCCEEDED: evaluation, output writing, the final events) and
  // kills the server. Notes whether the job's output directory had files
  // then (the output is written only at the end), for ClassifyOutputKill.
  // After 120 s without such a job, kills anyway.
  void KillWhileFinishing() {
    const int window_us = FinishWindowMicros();
    const auto give_up = std::chrono::steady_clock::now() + seconds(120);
    while (std::chrono::steady_clock::now() < give_up) {
      v1::Job running;
      for (const v1::Job& job : AllJobs()) {
        if (job.state() == v1::JOB_STATE_RUNNING) running = job;
      }
      if (running.id().empty()) {
        std::this_thread::sleep_for(milliseconds(20));
        continue;
      }
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + seconds(60));
      v1::WatchJobRequest request;
      request.set_job_id(running.id());
      auto reader = stub_->WatchJob(&context, request);
      v1::JobEvent event;
      while (reader->Read(&event)) {
        if (event.has_train() && event.train().total_steps() > 0 &&
            event.train().step() == event.train().total_steps()) {
          std::this_thread::sleep_for(std::chrono::microseconds(Uniform(0, window_us)));
          Kill("output");
          std::string dir = running.output_uri();
          if (dir.rfind("file://", 0) == 0) dir = dir.substr(7);
          std::error_code ec;
          output_kill_job_ = running.id();
          output_kill_had_files_ = !dir.empty() && fs::is_directory(dir, ec) &&
                                   !fs::is_empty(dir, ec);
          context.TryCancel();
          reader->Finish();
          return;
        }
      }
      reader->Finish();
    }
    Kill("output");
  }

  // After the start that follows an output kill: whether the job had ended
  // before the kill, was killed with its output (partly) written, or
  // before its output.
  void ClassifyOutputKill() {
    if (output_kill_job_.empty()) return;
    grpc::ClientContext context;
    v1::GetJobRequest request;
    request.set_job_id(output_kill_job_);
    v1::Job job;
    if (stub_->GetJob(&context, request, &job).ok() && job.state() == v1::JOB_STATE_SUCCEEDED) {
      ++output_kills_after_end_;
    } else if (output_kill_had_files_) {
      ++output_kills_during_output_;
    } else {
      ++output_kills_before_output_;
    }
    output_kill_job_.clear();
  }

  // The time from the last training step to SUCCEEDED, in microseconds,
  // of a job submitted for it (first call; the first priority, so it runs
  // next) and remembered; 50 ms if it cannot be measured.
  int FinishWindowMicros() {
    if (finish_window_ms_ > 0) return static_cast<int>(finish_window_ms_ * 1000);
    const std::string request_id = "chaos-job-finish-window";
    ledger_.job_specs[request_id] = Job(request_id);
    ledger_.job_specs[request_id].set_priority(100);
    SubmitJob(request_id, false);
    auto id = ledger_.job_ids.find(request_id);
    if (id == ledger_.job_ids.end()) return 50000;
    testing::WaitForState(stub_.get(), id->second, v1::JOB_STATE_SUCCEEDED, seconds(120));
    std::vector<v1::JobEvent> events;
    testing::WatchAll(stub_.get(), id->second, 0, &events, seconds(30));
    double last_step = 0, succeeded = 0;
    for (const v1::JobEvent& event : events) {
      const double t = event.time().seconds() + event.time().nanos() * 1e-9;
      if (event.has_train()) last_step = t;
      if (event.state_change().state() == v1::JOB_STATE_SUCCEEDED) succeeded = t;
    }
    if (last_step <= 0 || succeeded <= last_step) return 50000;
    finish_window_ms_ = (succeeded - last_step) * 1000;
    return static_cast<int>(finish_window_ms_ * 1000);
  }

  // Events 1..N in order, the last one terminal.
  void CheckEvents(const std::string& job_id) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + seconds(60));
    v1::WatchJobRequest request;
    request.set_job_id(job_id);
    auto reader = stub_->WatchJob(&context, request);
    v1::JobEvent event;
    int64_t next = 1;
    v1::JobState last = v1::JOB_STATE_UNSPECIFIED;
    while (reader->Read(&event)) {
      if (event.sequence() != next) {
        Error("job ", job_id, ": event ", event.sequence(), " where ", next, " was due");
        context.TryCancel();
        break;
      }
      ++next;
      if (event.has_state_change()) last = event.state_change().state();
    }
    grpc::Status s = reader->Finish();
    if (!s.ok() && s.error_code() != grpc::StatusCode::CANCELLED) {
      Error("job ", job_id, ": WatchJob ", s.error_message());
    } else if (!Ended(last)) {
      Error("job ", job_id, ": events end in ", v1::JobState_Name(last));
    }
  }

  std::vector<v1::Job> AllJobs() { return testing::ListAllJobs(stub_.get()); }
  std::vector<v1::Sweep> AllSweeps() { return testing::ListAllSweeps(stub_.get()); }

  const std::string server_bin_;
  const std::string model_bin_;
  const std::string dir_;
  std::mt19937 rng_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<v1::FineTuneService::Stub> stub_;
  absl::Mutex mu_;  // the answers in ledger_ while submitters run
  Ledger ledger_;
  std::map<std::string, int> kills_;
  int starts_ = 0;
  std::string output_kill_job_;
  bool output_kill_had_files_ = false;
  int output_kills_after_end_ = 0, output_kills_during_output_ = 0, output_kills_before_output_ = 0;
  double finish_window_ms_ = 0;
  size_t jobs_total_ = 0;
  size_t sweeps_total_ = 0;
};

int Main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr,
                 "usage: %s SERVER_BIN MODEL_BIN [cycles=10] [jobs=45] [seed=1] "
                 "[timeout_s=1800]\n",
                 argv[0]);
    return 2;
  }
  const int cycles = argc > 3 ? std::atoi(argv[3]) : 10;
  const int jobs = argc > 4 ? std::atoi(argv[4]) : 45;
  const unsigned seed = argc > 5 ? static_cast<unsigned>(std::atoi(argv[5])) : 1;
  const int timeout_s = argc > 6 ? std::atoi(argv[6]) : 1800;
  if (cycles <= 0 || jobs < 0 || timeout_s <= 0) {
    std::fprintf(stderr, "cycles and timeout_s must be positive, jobs not negative\n");
    return 2;
  }
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + seconds(timeout_s);
  const std::string dir =
      (fs::temp_directory_path() / ("ft_chaos_" + std::to_string(::getpid()))).string();
  fs::remove_all(dir);
  fs::create_directories(dir);
  Chaos chaos(argv[1], argv[2], dir, seed);
  if (!chaos.Setup()) return 1;
  for (int cycle = 0; cycle < cycles; ++cycle) {
    if (!chaos.Start()) return 1;
    chaos.RetryPending();
    chaos.Cycle(cycle, jobs * cycle / cycles, jobs * (cycle + 1) / cycles);
  }
  if (!chaos.Start()) return 1;
  chaos.RetryPending();
  const bool in_time = chaos.WaitAndCheck(deadline);
  chaos.StopServer();
  chaos.Report(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
               in_time);
  if (!chaos.ok() || !in_time) {
    std::fprintf(stderr, "chaos: FAILED; server logs and data kept in %s\n", dir.c_str());
    return 1;
  }
  fs::remove_all(dir);
  return 0;
}

}  // namespace
}  // namespace freezetune

int main(int argc, char** argv) { return freezetune::Main(argc, argv); }
