// What the load benchmarks (load_bench.cc, replicas_bench.cc) share: the
// tiny model and training set their jobs use, and the watch side, a
// WatchJob stream on gRPC's callback API that checks the sequence and
// records the latency of live events (client receipt time - JobEvent.time,
// set when the event is stored; events stored before the stream started are
// history, not live delivery; same machine, same clock).
#ifndef FREEZETUNE_TESTS_BENCH_WATCH_REACTOR_H_
#define FREEZETUNE_TESTS_BENCH_WATCH_REACTOR_H_

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <cstdint>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "freezetune/v1/freezetune.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "tests/integration/server_process.h"

namespace freezetune::bench {

// Writes `dir`/vocab.txt, a 1-layer hidden-32 BERT in `dir`/model and
// `dir`/train.jsonl (16 sentences: each job is about loading + 2 steps).
// False, with the model tool's output on stderr, when the model cannot be
// made.
inline bool MakeTinyJobInputs(const std::string& model_bin, const std::string& dir) {
  {
    std::ofstream vocab(dir + "/vocab.txt");
    for (const char* t : {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "great", "terrible",
                          "movie", "film", "good", "bad", "i", "loved", "hated", "it"}) {
      vocab << t << "\n";
    }
    std::ofstream train(dir + "/train.jsonl");
    for (int i = 0; i < 8; ++i) {
      train << "{\"text\": \"a great movie i loved it\", \"label\": 1}\n";
      train << "{\"text\": \"a terrible film i hated it\", \"label\": 0}\n";
    }
  }
  if (testing::RunToCompletion({model_bin, "init", "--out", dir + "/model", "--vocab",
                                dir + "/vocab.txt", "--layers", "1", "--hidden", "32", "--heads",
                                "2", "--intermediate", "64", "--max-position", "32",
                                "--num-labels", "2", "--seed", "1"},
                               dir + "/model.log") == 0) {
    return true;
  }
  std::fprintf(stderr, "model init failed:\n%s\n", testing::ReadWholeFile(dir + "/model.log").c_str());
  return false;
}

// One WatchJob stream on the callback API: checks the sequence, records
// latencies of live events, and reports how it ended.
class Watcher : public grpc::ClientReadReactor<v1::JobEvent> {
 public:
  Watcher(v1::FineTuneService::Stub* stub, const std::string& job_id) : stub_(stub) {
    request_.set_job_id(job_id);
  }
  void Start() {
    started_ = absl::Now();
    stub_->async()->WatchJob(&context_, &request_, this);
    StartRead(&event_);
    StartCall();
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;  // OnDone follows
    absl::Time now = absl::Now();
    absl::Time created =
        absl::FromUnixSeconds(event_.time().seconds()) + absl::Nanoseconds(event_.time().nanos());
    {
      absl::MutexLock lock(&mu_);
      if (event_.sequence() != next_) in_order_ = false;
      next_ = event_.sequence() + 1;
      if (created >= started_) latencies_ms_.push_back(absl::ToDoubleMilliseconds(now - created));
      if (event_.has_state_change()) last_state_ = event_.state_change().state();
    }
    StartRead(&event_);
  }
  void OnDone(const grpc::Status& status) override {
    absl::MutexLock lock(&mu_);
    status_ = status;
    done_ = true;
  }
  bool done() {
    absl::MutexLock lock(&mu_);
    return done_;
  }
  int64_t received() {
    absl::MutexLock lock(&mu_);
    return next_ - 1;
  }
  // Whether the stream ended OK, in order, with the job's last event
  // (`last_sequence`) and SUCCEEDED.
  bool Complete(int64_t last_sequence, std::string* why) {
    absl::MutexLock lock(&mu_);
    if (!done_) *why = "not done";
    else if (!status_.ok()) *why = "status " + status_.error_message();
    else if (!in_order_) *why = "out of order or gap";
    else if (next_ - 1 != last_sequence) *why = "got " + std::to_string(next_ - 1) + " of " + std::to_string(last_sequence);
    else if (last_state_ != v1::JOB_STATE_SUCCEEDED) *why = "last state " + v1::JobState_Name(last_state_);
    else return true;
    return false;
  }
  void AppendLatencies(std::vector<double>* out) {
    absl::MutexLock lock(&mu_);
    out->insert(out->end(), latencies_ms_.begin(), latencies_ms_.end());
  }
  void Cancel() { context_.TryCancel(); }

 private:
  v1::FineTuneService::Stub* const stub_;
  grpc::ClientContext context_;
  v1::WatchJobRequest request_;
  v1::JobEvent event_;  // touched only by the reactor's read chain
  absl::Time started_;
  absl::Mutex mu_;
  int64_t next_ ABSL_GUARDED_BY(mu_) = 1;
  bool in_order_ ABSL_GUARDED_BY(mu_) = true;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  v1::JobState last_state_ ABSL_GUARDED_BY(mu_) = v1::JOB_STATE_UNSPECIFIED;
  grpc::Status status_ ABSL_GUARDED_BY(mu_);
  std::vector<double> latencies_ms_ ABSL_GUARDED_BY(mu_);
};

inline double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

inline bool WaitUntil(const std::function<bool()>& pred, absl::Time deadline) {
  while (!pred()) {
    if (absl::Now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

}  // namespace freezetune::bench

#endif  // FREEZETUNE_TESTS_BENCH_WATCH_REACTOR_H_
