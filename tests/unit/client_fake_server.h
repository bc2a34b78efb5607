// A real gRPC server for the client tests, backed by an in-memory fake
// FineTuneService whose behaviour the test controls (injected failures,
// dropped watch streams, canned events). It is the genuine gRPC stack end to
// end: only the job logic behind the service is fake.
//
// Thread safety: the service's knobs and observations are guarded by one
// mutex, so a test may change them while RPCs run on the server's threads.
#ifndef FREEZETUNE_TESTS_UNIT_CLIENT_FAKE_SERVER_H_
#define FREEZETUNE_TESTS_UNIT_CLIENT_FAKE_SERVER_H_

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "freezetune/v1/freezetune.grpc.pb.h"

namespace freezetune::testing {

// How one WatchJob call ends: after sending `events` events (-1: all of them)
// it returns `code`. With hang = true it instead waits, after those events,
// until the call is cancelled (e.g. by server shutdown).
struct WatchScript {
  int events = -1;
  grpc::StatusCode code = grpc::StatusCode::OK;
  bool hang = false;
};

class FakeFineTuneService final : public v1::FineTuneService::Service {
 public:
  // --- knobs -------------------------------------------------------------

  // The next `n` calls of `method` ("SubmitJob", "GetJob", ...) fail with
  // `code` and `message`.
  void FailNext(const std::string& method, int n, grpc::StatusCode code,
                std::string message) {
    absl::MutexLock lock(&mu_);
    for (int i = 0; i < n; ++i) failures_[method].push_back({code, message});
  }
  // Adds a job as stored; ids must be unique.
  void AddJob(v1::Job job) {
    absl::MutexLock lock(&mu_);
    order_.push_back(job.id());
    jobs_[job.id()] = std::move(job);
  }
  // Sets a job's event log and syncs its last_sequence and state.
  void SetEvents(const std::string& job_id, std::vector<v1::JobEvent> events) {
    absl::MutexLock lock(&mu_);
    v1::Job& job = jobs_[job_id];
    if (job.id().empty()) {
      job.set_id(job_id);
      order_.push_back(job_id);
    }
    for (const v1::JobEvent& e : events) {
      job.set_last_sequence(e.sequence());
      if (e.has_state_change()) job.set_state(e.state_change().state());
    }
    events_[job_id] = std::move(events);
  }
  // Successive WatchJob calls follow these scripts in turn; once they run
  // out, a call sends every remaining event and ends OK.
  void ScriptWatch(std::vector<WatchScript> scripts) {
    absl::MutexLock lock(&mu_);
    watch_scripts_.assign(scripts.begin(), scripts.end());
  }
  // When set, WatchJob ignores after_sequence and replays from event 1 (a
  // misbehaving server: the client must drop the duplicates).
  void set_replay_all(bool v) {
    absl::MutexLock lock(&mu_);
    replay_all_ = v;
  }
  // Every job SubmitJob creates from now on gets this event log (job_id
  // rewritten), so that `submit --watch` has something to follow.
  void set_log_for_submitted(std::vector<v1::JobEvent> log) {
    absl::MutexLock lock(&mu_);
    log_for_submitted_ = std::move(log);
  }
  void set_plan(v1::PlanFreezeResponse plan) {
    absl::MutexLock lock(&mu_);
    plan_ = std::move(plan);
  }

  // --- observations --------------------------------------------------------

  int Calls(const std::string& method) const {
    absl::MutexLock lock(&mu_);
    auto it = calls_.find(method);
    return it == calls_.end() ? 0 : it->second;
  }
  std::vector<int64_t> WatchAfterSequences() const {
    absl::MutexLock lock(&mu_);
    return watch_after_;
  }
  // The "authorization" metadata of every call ("" when absent).
  std::vector<std::string> AuthHeaders() const {
    absl::MutexLock lock(&mu_);
    return auth_;
  }
  std::vector<v1::FineTuneJob> Submitted() const {
    absl::MutexLock lock(&mu_);
    return submitted_;
  }
  std::vector<v1::PlanFreezeRequest> PlanRequests() const {
    absl::MutexLock lock(&mu_);
    return plan_requests_;
  }

  // --- the service -----------------------------------------------------------

  grpc::Status SubmitJob(grpc::ServerContext* ctx,
                         const v1::SubmitJobRequest* req,
                         v1::Job* resp) override {
    absl::MutexLock lock(&mu_);
    grpc::Status injected;
    if (Begin("SubmitJob", ctx, &injected)) return injected;
    submitted_.push_back(req->job());
    const std::string& rid = req->job().client_request_id();
    if (!rid.empty()) {
      auto it = by_request_id_.find(rid);
      if (it != by_request_id_.end()) {
        *resp = jobs_[it->second];
        return grpc::Status::OK;
      }
    }
    if (req->job().model_uri().empty()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "job.model_uri: required");
    }
    v1::Job job;
    job.set_id(absl::StrCat("job-", ++next_id_));
    *job.mutable_spec() = req->job();
    job.set_state(v1::JOB_STATE_QUEUED);
    job.mutable_create_time()->set_seconds(1700000000 + next_id_);
    job.set_last_sequence(1);
    if (!rid.empty()) by_request_id_[rid] = job.id();
    order_.push_back(job.id());
    if (!log_for_submitted_.empty()) {
      std::vector<v1::JobEvent>& log = events_[job.id()];
      for (v1::JobEvent e : log_for_submitted_) {
        e.set_job_id(job.id());
        log.push_back(e);
      }
      // The stored job has run to the end of its log at once; the reply
      // shows it as just queued, as a real submit would.
      job.set_last_sequence(log.back().sequence());
      job.set_state(log.back().has_state_change()
                        ? log.back().state_change().state()
                        : v1::JOB_STATE_RUNNING);
      *resp = job;
      resp->set_state(v1::JOB_STATE_QUEUED);
      resp->set_last_sequence(1);
      jobs_[job.id()] = job;
      return grpc::Status::OK;
    }
    jobs_[job.id()] = job;
    *resp = job;
    return grpc::Status::OK;
  }

  grpc::Status GetJob(grpc::ServerContext* ctx, const v1::GetJobRequest* req,
                      v1::Job* resp) override {
    absl::MutexLock lock(&mu_);
    grpc::Status injected;
    if (Begin("GetJob", ctx, &injected)) return injected;
    auto it = jobs_.find(req->job_id());
    if (it == jobs_.end()) return NotFound(req->job_id());
    *resp = it->second;
    return grpc::Status::OK;
  }

  // Newest first; the page token is the index of the next job.
  grpc::Status ListJobs(grpc::ServerContext* ctx,
                        const v1::ListJobsRequest* req,
                        v1::ListJobsResponse* resp) override {
    absl::MutexLock lock(&mu_);
    grpc::Status injected;
    if (Begin("ListJobs", ctx, &injected)) return injected;
    std::vector<const v1::Job*> matching;
    for (auto it = order_.rbegin(); it != order_.rend(); ++it) {
      const v1::Job& job = jobs_[*it];
      if (req->states_size() == 0 ||
          std::find(req->states().begin(), req->states().end(), job.state()) !=
              req->states().end()) {
        matching.push_back(&job);
      }
    }
    size_t start = 0;
    if (!req->page_token().empty() &&
        !absl::SimpleAtoi(req->page_token(), &start)) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "page_token: malformed");
    }
    const size_t size = req->page_size() > 0 ? req->page_size() : 50;
    for (size_t i = start; i < matching.size() && i < start + size; ++i) {
      *resp->add_jobs() = *matching[i];
    }
    if (start + size < matching.size()) {
      resp->set_next_page_token(absl::StrCat(start + size));
    }
    return grpc::Status::OK;
  }

  grpc::Status CancelJob(grpc::ServerContext* ctx,
                         const v1::CancelJobRequest* req,
                         v1::Job* resp) override {
    absl::MutexLock lock(&mu_);
    grpc::Status injected;
    if (Begin("CancelJob", ctx, &injected)) return injected;
    auto it = jobs_.find(req->job_id());
    if (it == jobs_.end()) return NotFound(req->job_id());
    v1::JobState s = it->second.state();
    if (s == v1::JOB_STATE_SUCCEEDED || s == v1::JOB_STATE_FAILED ||
        s == v1::JOB_STATE_CANCELLED) {
      return grpc::Status(
          grpc::StatusCode::FAILED_PRECONDITION,
          absl::StrCat("job ", req->job_id(), " already finished"));
    }
    it->second.set_state(v1::JOB_STATE_CANCELLED);
    *resp = it->second;
    return grpc::Status::OK;
  }

  grpc::Status WatchJob(grpc::ServerContext* ctx,
                        const v1::WatchJobRequest* req,
                        grpc::ServerWriter<v1::JobEvent>* writer) override {
    std::vector<v1::JobEvent> to_send;
    WatchScript script;
    {
      absl::MutexLock lock(&mu_);
      grpc::Status injected;
      if (Begin("WatchJob", ctx, &injected)) return injected;
      watch_after_.push_back(req->after_sequence());
      if (jobs_.count(req->job_id()) == 0) return NotFound(req->job_id());
      for (const v1::JobEvent& e : events_[req->job_id()]) {
        if (replay_all_ || e.sequence() > req->after_sequence()) {
          to_send.push_back(e);
        }
      }
      if (!watch_scripts_.empty()) {
        script = watch_scripts_.front();
        watch_scripts_.pop_front();
      }
    }
    size_t n = script.events < 0
                   ? to_send.size()
                   : std::min<size_t>(script.events, to_send.size());
    for (size_t i = 0; i < n; ++i) {
      if (!writer->Write(to_send[i])) return grpc::Status::CANCELLED;
    }
    if (script.hang) {
      while (!ctx->IsCancelled()) absl::SleepFor(absl::Milliseconds(5));
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "shutting down");
    }
    if (script.code != grpc::StatusCode::OK) {
      return grpc::Status(script.code, "stream dropped by test");
    }
    return grpc::Status::OK;
  }

  grpc::Status PlanFreeze(grpc::ServerContext* ctx,
                          const v1::PlanFreezeRequest* req,
                          v1::PlanFreezeResponse* resp) override {
    absl::MutexLock lock(&mu_);
    grpc::Status injected;
    if (Begin("PlanFreeze", ctx, &injected)) return injected;
    plan_requests_.push_back(*req);
    *resp = plan_;
    return grpc::Status::OK;
  }

 private:
  struct Failure {
    grpc::StatusCode code;
    std::string message;
  };

  // Counts the call, records auth, and applies an injected failure.
  bool Begin(const std::string& method, grpc::ServerContext* ctx,
             grpc::Status* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    ++calls_[method];
    auto md = ctx->client_metadata().find("authorization");
    auth_.push_back(md == ctx->client_metadata().end()
                        ? std::string()
                        : std::string(md->second.data(), md->second.size()));
    auto& queue = failures_[method];
    if (queue.empty()) return false;
    *out = grpc::Status(queue.front().code, queue.front().message);
    queue.pop_front();
    return true;
  }

  static grpc::Status NotFound(const std::string& id) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        absl::StrCat("job ", id, " not found"));
  }

  mutable absl::Mutex mu_;
  std::map<std::string, v1::Job> jobs_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> order_ ABSL_GUARDED_BY(mu_);  // oldest first
  std::map<std::string, std::vector<v1::JobEvent>> events_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> by_request_id_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::deque<Failure>> failures_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int> calls_ ABSL_GUARDED_BY(mu_);
  std::deque<WatchScript> watch_scripts_ ABSL_GUARDED_BY(mu_);
  std::vector<int64_t> watch_after_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> auth_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::FineTuneJob> submitted_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::PlanFreezeRequest> plan_requests_ ABSL_GUARDED_BY(mu_);
  v1::PlanFreezeResponse plan_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::JobEvent> log_for_submitted_ ABSL_GUARDED_BY(mu_);
  bool replay_all_ ABSL_GUARDED_BY(mu_) = false;
  int next_id_ ABSL_GUARDED_BY(mu_) = 0;
};

// A grpc::Server on 127.0.0.1 (port 0 picks a free port) serving `service`,
// which must outlive it.
class FakeServer {
 public:
  explicit FakeServer(grpc::Service* service, int port = 0) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort(absl::StrCat("127.0.0.1:", port),
                             grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(service);
    server_ = builder.BuildAndStart();
  }
  ~FakeServer() { Shutdown(); }
  bool ok() const { return server_ != nullptr && port_ > 0; }
  int port() const { return port_; }
  std::string target() const { return absl::StrCat("127.0.0.1:", port_); }
  // Cancels in-flight calls after a short grace period and waits for them.
  void Shutdown() {
    if (server_) {
      server_->Shutdown(std::chrono::system_clock::now() +
                        std::chrono::milliseconds(50));
      server_->Wait();
      server_.reset();
    }
  }

 private:
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

// Builders for canned events.
inline v1::JobEvent StateEvent(const std::string& job, int64_t seq,
                               v1::JobState state, std::string message = "") {
  v1::JobEvent e;
  e.set_job_id(job);
  e.set_sequence(seq);
  e.mutable_time()->set_seconds(1700000000 + seq);
  e.mutable_state_change()->set_state(state);
  e.mutable_state_change()->set_message(std::move(message));
  return e;
}

inline v1::JobEvent TrainEvent(const std::string& job, int64_t seq,
                               int64_t step, int64_t total, float loss) {
  v1::JobEvent e;
  e.set_job_id(job);
  e.set_sequence(seq);
  e.mutable_time()->set_seconds(1700000000 + seq);
  v1::TrainMetrics* t = e.mutable_train();
  t->set_step(step);
  t->set_total_steps(total);
  t->set_epoch(static_cast<float>(step) / static_cast<float>(total));
  t->set_loss(loss);
  t->set_learning_rate(4.1e-5f);
  t->set_samples_per_second(812.f);
  return e;
}

// QUEUED, RUNNING, `train_events` TrainMetrics, then `final_state`: a log
// of train_events + 3 events, sequences 1..n.
inline std::vector<v1::JobEvent> SimpleLog(const std::string& job,
                                           int train_events,
                                           v1::JobState final_state,
                                           std::string final_message = "") {
  std::vector<v1::JobEvent> log;
  int64_t seq = 0;
  log.push_back(StateEvent(job, ++seq, v1::JOB_STATE_QUEUED));
  log.push_back(StateEvent(job, ++seq, v1::JOB_STATE_RUNNING));
  for (int i = 1; i <= train_events; ++i) {
    log.push_back(TrainEvent(job, ++seq, i * 10, train_events * 10,
                             1.0f / static_cast<float>(i)));
  }
  log.push_back(StateEvent(job, ++seq, final_state, std::move(final_message)));
  return log;
}

}  // namespace freezetune::testing

#endif  // FREEZETUNE_TESTS_UNIT_CLIENT_FAKE_SERVER_H_
