#include "server/service/finetune_service.h"

#include <deque>
#include <functional>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/alarm.h"
#include "server/service/status_mapping.h"

namespace freezetune::service {

// Fixed threads draining a FIFO of tasks. The destructor runs what is queued
// before joining, so every reactor handed to the pool gets finished.
class BlockingPool {
 public:
  explicit BlockingPool(int threads) {
    for (int i = 0; i < std::max(1, threads); ++i) threads_.emplace_back([this] { Loop(); });
  }
  ~BlockingPool() {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
    }
    for (std::thread& t : threads_) t.join();
  }
  void Run(std::function<void()> task) {
    absl::MutexLock lock(&mu_);
    tasks_.push_back(std::move(task));
  }

 private:
  void Loop() {
    while (true) {
      std::function<void()> task;
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(
            +[](BlockingPool* p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(p->mu_) {
              return p->stopping_ || !p->tasks_.empty();
            },
            this));
        if (tasks_.empty()) return;  // stopping, and nothing left to run
        task = std::move(tasks_.front());
        tasks_.pop_front();
      }
      task();
    }
  }

  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> threads_;
};

namespace {

absl::Status RequireJobId(const std::string& job_id) {
  if (job_id.empty()) return absl::InvalidArgumentError("job_id: required");
  if (job_id.size() > 64) return absl::InvalidArgumentError("job_id: too long");
  return absl::OkStatus();
}

// The job, unless it belongs to another tenant (then NOT_FOUND, exactly as
// for an unknown id, so ids of other tenants do not leak).
absl::StatusOr<v1::Job> GetOwned(jobs::JobManager* manager, const std::string& job_id,
                                 const std::string& tenant) {
  absl::StatusOr<v1::Job> job = manager->Get(job_id);
  if (job.ok() && job->tenant() != tenant) {
    return absl::NotFoundError(absl::StrCat("job ", job_id, " not found"));
  }
  return job;
}

bool IsFinalEvent(const v1::JobEvent& event) {
  return event.has_state_change() && jobs::IsTerminal(event.state_change().state());
}

// WatchJob's reactor. Invariants, all under mu_: at most one write in flight
// (`writing_`); Finish is called exactly once (`finished_`), never while a
// write is in flight. gRPC calls (StartWrite, Finish) are made after mu_ is
// released: Finish may run OnDone inline, which deletes the reactor.
class WatchReactor final : public grpc::ServerWriteReactor<v1::JobEvent> {
 public:
  static constexpr int kBatch = 64;

  WatchReactor(jobs::JobManager* manager, metrics::Metrics* metrics, const v1::WatchJobRequest& req,
               absl::StatusOr<std::string> tenant)
      : manager_(manager), metrics_(metrics), job_id_(req.job_id()), tenant_(std::move(tenant)),
        start_(absl::Now()), after_(req.after_sequence()) {
    if (metrics_ != nullptr) metrics_->WatchStreamOpened();
  }

  void Begin() {
    absl::Status valid = tenant_.status();
    if (valid.ok()) valid = RequireJobId(job_id_);
    if (valid.ok() && after_ < 0) valid = absl::InvalidArgumentError("after_sequence: must be >= 0");
    absl::StatusOr<v1::Job> job =
        valid.ok() ? GetOwned(manager_, job_id_, *tenant_) : absl::StatusOr<v1::Job>(valid);
    if (job.ok() && after_ > job->last_sequence()) {
      // Events are only ever appended, so a stream past the end could never
      // see the job's final event.
      job = absl::OutOfRangeError(absl::StrCat("after_sequence: ", after_,
                                               " is past the job's last sequence ",
                                               job->last_sequence()));
    }
    if (!job.ok()) {
      FinishNow(ToGrpcStatus(job.status()));
      return;
    }
    // Subscribe before the first read: whatever is appended later is
    // announced, whatever was appended before is read.
    subscription_ = manager_->event_log().Subscribe(job_id_, [this] { Pump(); });
    {
      absl::MutexLock lock(&mu_);
      subscribed_ = true;
      // A finished job has nothing after its final event.
      job_finished_ = jobs::IsTerminal(job->state()) && after_ >= job->last_sequence();
    }
    Pump();
  }

  void OnWriteDone(bool ok) override {
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) {
        // The client is gone or the call was cancelled.
        pending_finish_ = grpc::Status(grpc::StatusCode::CANCELLED, "stream closed");
      }
    }
    Pump();
  }

  void OnCancel() override {
    {
      absl::MutexLock lock(&mu_);
      if (!pending_finish_.has_value()) {
        pending_finish_ = grpc::Status(grpc::StatusCode::CANCELLED, "watch cancelled");
      }
    }
    Pump();
  }

  void OnDone() override {
    if (subscribed_once()) manager_->event_log().Unsubscribe(subscription_);
    if (metrics_ != nullptr) {
      metrics_->WatchStreamClosed();
      metrics_->RpcFinished("WatchJob", GrpcCodeName(final_code_),
                            absl::ToDoubleSeconds(absl::Now() - start_));
    }
    delete this;
  }

 private:
  bool subscribed_once() {
    absl::MutexLock lock(&mu_);
    return subscribed_;
  }

  void FinishNow(const grpc::Status& status) {
    {
      absl::MutexLock lock(&mu_);
      if (finished_) return;
      finished_ = true;
      final_code_ = status.error_code();
    }
    Finish(status);
  }

  // Decides the next action under mu_, then performs it unlocked.
  void Pump() {
    const v1::JobEvent* to_write = nullptr;
    std::optional<grpc::Status> to_finish;
    {
      absl::MutexLock lock(&mu_);
      if (finished_ || writing_) return;
      if (pending_finish_.has_value()) {
        to_finish = pending_finish_;
      } else if (last_written_final_ || (job_finished_ && buffer_.empty())) {
        to_finish = grpc::Status::OK;
      } else {
        if (buffer_.empty()) {
          absl::StatusOr<std::vector<v1::JobEvent>> events =
              manager_->ReadEvents(job_id_, after_, kBatch);
          if (!events.ok()) {
            to_finish = ToGrpcStatus(events.status());
          } else {
            for (v1::JobEvent& e : *events) buffer_.push_back(std::move(e));
          }
        }
        if (!to_finish.has_value() && buffer_.empty() && manager_->drained()) {
          // Caught up and no more events will come from this process: end
          // now rather than at the drain deadline; the client resumes
          // elsewhere (or after the restart) from after_sequence.
          to_finish = grpc::Status(
              grpc::StatusCode::UNAVAILABLE,
              absl::StrCat("server shutting down; resume with after_sequence=", after_));
        }
        if (!to_finish.has_value() && !buffer_.empty()) {
          current_ = std::move(buffer_.front());
          buffer_.pop_front();
          after_ = current_.sequence();
          last_written_final_ = IsFinalEvent(current_);
          writing_ = true;
          to_write = &current_;
        }
        // Otherwise: caught up with a live job; the next Publish calls Pump.
      }
      if (to_finish.has_value()) {
        finished_ = true;
        final_code_ = to_finish->error_code();
      }
    }
    if (to_write != nullptr) {
      StartWrite(to_write);
    } else if (to_finish.has_value()) {
      Finish(*to_finish);
    }
  }

  jobs::JobManager* const manager_;
  metrics::Metrics* const metrics_;
  const std::string job_id_;
  const absl::StatusOr<std::string> tenant_;
  const absl::Time start_;
  jobs::EventLog::SubscriptionId subscription_ = 0;  // written once in Begin

  absl::Mutex mu_;
  int64_t after_ ABSL_GUARDED_BY(mu_);
  bool subscribed_ ABSL_GUARDED_BY(mu_) = false;
  bool job_finished_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool last_written_final_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<grpc::Status> pending_finish_ ABSL_GUARDED_BY(mu_);
  std::deque<v1::JobEvent> buffer_ ABSL_GUARDED_BY(mu_);
  v1::JobEvent current_ ABSL_GUARDED_BY(mu_);  // the write in flight
  grpc::StatusCode final_code_ = grpc::StatusCode::OK;  // set once, before Finish
};

}  // namespace

FineTuneServiceImpl::FineTuneServiceImpl(jobs::JobManager* manager, metrics::Metrics* metrics,
                                         const ServiceOptions& options,
                                         jobs::SweepManager* sweeps)
    : manager_(manager), metrics_(metrics), options_(options),
      pool_(std::make_unique<BlockingPool>(options.blocking_threads)), sweeps_(sweeps) {}

FineTuneServiceImpl::~FineTuneServiceImpl() = default;

absl::StatusOr<std::string> FineTuneServiceImpl::Tenant(
    const grpc::CallbackServerContext& context) const {
  if (options_.auth == nullptr) return std::string();
  return options_.auth->TenantOf(context);
}

absl::Time FineTuneServiceImpl::Deadline(absl::Time start) const {
  return options_.unary_deadline > absl::ZeroDuration() ? start + options_.unary_deadline
                                                        : absl::InfiniteFuture();
}

void FineTuneServiceImpl::FinishUnary(grpc::ServerUnaryReactor* reactor, const char* method,
                                      const absl::Status& status, absl::Time start) {
  grpc::Status result = ToGrpcStatus(status);
  if (metrics_ != nullptr) {
    metrics_->RpcFinished(method, GrpcCodeName(result.error_code()),
                          absl::ToDoubleSeconds(absl::Now() - start));
  }
  reactor->Finish(result);
}

grpc::ServerUnaryReactor* FineTuneServiceImpl::SubmitJob(grpc::CallbackServerContext* context,
                                                         const v1::SubmitJobRequest* request,
                                                         v1::Job* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::Time start = absl::Now();
  absl::StatusOr<std::string> tenant = Tenant(*context);
  absl::Status early = tenant.status();
  if (early.ok() && !request->has_job()) early = absl::InvalidArgumentError("job: required");
  if (!early.ok()) {
    FinishUnary(reactor, "SubmitJob", early, start);
    return reactor;
  }
  const absl::Time deadline = Deadline(start);
  pool_->Run([this, reactor, request, response, start, deadline, tenant = *tenant] {
    absl::StatusOr<v1::Job> job = manager_->Submit(request->job(), tenant, deadline);
    if (job.ok()) *response = *std::move(job);
    FinishUnary(reactor, "SubmitJob", job.status(), start);
  });
  return reactor;
}

grpc::ServerUnaryReactor* FineTuneServiceImpl::GetJob(grpc::CallbackServerContext* context,
                                                      const v1::GetJobRequest* request,
                                                      v1::Job* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::Time start = absl::Now();
  absl::StatusOr<std::string> tenant = Tenant(*context);
  absl::Status status = tenant.ok() ? RequireJobId(request->job_id()) : tenant.status();
  if (status.ok()) {
    absl::StatusOr<v1::Job> job = GetOwned(manager_, request->job_id(), *tenant);
    if (job.ok()) *response = *std::move(job);
    status = job.status();
  }
  FinishUnary(reactor, "GetJob", status, start);
  return reactor;
}

grpc::ServerUnaryReactor* FineTuneServiceImpl::ListJobs(grpc::CallbackServerContext* context,
                                                        const v1::ListJobsRequest* request,
                                                        v1::ListJobsResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::Time start = absl::Now();
  absl::StatusOr<std::string> tenant = Tenant(*context);
  absl::StatusOr<v1::ListJobsResponse> list =
      !tenant.ok() ? absl::StatusOr<v1::ListJobsResponse>(tenant.status())
                   : manager_->List(*request, options_.auth != nullptr
                                                  ? std::optional<std::string>(*tenant)
                                                  : std::nullopt);
  if (list.ok()) *response = *std::move(list);
  FinishUnary(reactor, "ListJobs", list.status(), start);
  return reactor;
}

grpc::ServerUnaryReactor* FineTuneServiceImpl::CancelJob(grpc::CallbackServerContext* context,
                                                         const v1::CancelJobRequest* request,
                                                         v1::Job* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::Time start = absl::Now();
  absl::StatusOr<std::string> tenant = Tenant(*context);
  absl::Status status = tenant.ok() ? RequireJobId(request->job_id()) : tenant.status();
  if (status.ok()) status = GetOwned(manager_, request->job_id(), *tenant).status();
  if (status.ok()) {
    absl::StatusOr<v1::Job> job = manager_->Cancel(request->job_id());
    if (job.ok()) *response = *std::move(job);
    status = job.status();
  }
  FinishUnary(reactor, "CancelJob", status, start);
  return reactor;
}

grpc::ServerWriteReactor<v1::JobEvent>* FineTuneServiceImpl::WatchJob(
    grpc::CallbackServerContext* context, const v1::WatchJobRequest* request) {
  auto* reactor = new WatchReactor(manager_, metrics_, *request, Tenant(*context));
  reactor->Begin();
  return reactor;
}

grpc::ServerUnaryReactor* FineTuneServiceImpl::PlanFreeze(grpc::CallbackServerContext* context,
                                                          const v1::PlanFreezeRequest* request,
                                                          v1::PlanFreezeResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::Time start = absl::Now();
  absl::Status early = Tenant(*context).status();
  if (early.ok() && request->model_uri().empty()) {
    early = absl::InvalidArgumentError("model_uri: required");
  }
  if (!early.ok()) {
    FinishUnary(reactor, "PlanFreeze", early, start);
    return reactor;
  }
  const absl::Time deadline = Deadline(start);
  pool_->Run([this, reactor, request, response, start, deadline] {
    absl::StatusOr<v1::PlanFreezeResponse> plan = manager_->PlanFreeze(*request, deadline);
    if (plan.ok()) *response = *std::move(plan);
    FinishUnary(reactor, "PlanFreeze", plan.status(), start);
  });
  return reactor;
}

// ---------------------------------------------------------------------------
// Sweeps.

namespace {

absl::Status RequireSweepId(const std::string& sweep_id) {
  if (sweep_id.empty()) return absl::InvalidArgumentError("sweep_id: required");
  if (sweep_id.size() > 64) return absl::InvalidArgumentError("sweep_id: too long");
  return absl::OkStatus();
}

absl::StatusOr<v1::Sweep> GetOwnedSweep(jobs::SweepManager* sweeps, const std::string& sweep_id,
                                        const std::string& tenant) {
  absl::StatusOr<v1::Sweep> sweep = sweeps->Get(sweep_id);
  if (sweep.ok() && sweep->tenant() != tenant) {
    return absl::NotFoundError(absl::StrCat("sweep ", sweep_id, " not found"));
  }
  return sweep;
}

// WatchSweep's reactor. All state is touched only from gRPC callbacks
// (OnWriteDone, the alarm, OnDone), which never overlap for one reactor
// except OnCancel; mu_ covers everything.
class SweepWatchReactor : public grpc::ServerWriteReactor<v1::SweepEvent> {
 public:
  SweepWatchReactor(jobs::SweepManager* sweeps, std::string sweep_id, int64_t after,
                    absl::Status early)
      : sweeps_(sweeps), sweep_id_(std::move(sweep_id)), next_after_(after) {
    absl::MutexLock lock(&mu_);
    if (!early.ok()) {
      Finish(ToGrpcStatus(early));
      finished_ = true;
      return;
    }
    Pump();
  }
  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "write failed"));
      finished_ = true;
      return;
    }
    Pump();
  }
  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
  }
  // With a poll pending, the alarm's callback (at most 100 ms later) sees
  // done_ and deletes the reactor; it never touches the SweepManager then.
  // (No Alarm::Cancel here: its callback takes mu_.)
  void OnDone() override {
    {
      absl::MutexLock lock(&mu_);
      done_ = true;
      if (alarm_pending_) return;
    }
    delete this;
  }

 private:
  void Pump() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_ || writing_) return;
    if (cancelled_) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled"));
      finished_ = true;
      return;
    }
    absl::StatusOr<std::vector<v1::SweepEvent>> events = sweeps_->ReadEvents(sweep_id_, next_after_, 1);
    if (!events.ok()) {
      Finish(ToGrpcStatus(events.status()));
      finished_ = true;
      return;
    }
    if (!events->empty()) {
      current_ = std::move(events->front());
      next_after_ = current_.sequence();
      final_ = current_.has_result();
      writing_ = true;
      StartWrite(&current_);
      return;
    }
    if (final_) {
      Finish(grpc::Status::OK);
      finished_ = true;
      return;
    }
    // Events of a sweep that ended before this watch are all stored; an
    // empty read after its final event means it is done.
    absl::StatusOr<v1::Sweep> sweep = sweeps_->Get(sweep_id_);
    if (sweep.ok() && sweep->state() != v1::SWEEP_STATE_RUNNING &&
        next_after_ >= sweep->last_sequence()) {
      Finish(grpc::Status::OK);
      finished_ = true;
      return;
    }
    alarm_pending_ = true;
    alarm_.Set(std::chrono::system_clock::now() + std::chrono::milliseconds(100),
               [this](bool) { OnAlarm(); });
  }
  void OnAlarm() {
    bool del = false;
    {
      absl::MutexLock lock(&mu_);
      alarm_pending_ = false;
      if (done_) {
        del = true;
      } else {
        Pump();
      }
    }
    if (del) delete this;
  }

  jobs::SweepManager* const sweeps_;
  const std::string sweep_id_;
  absl::Mutex mu_;
  int64_t next_after_ ABSL_GUARDED_BY(mu_);
  v1::SweepEvent current_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool final_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool alarm_pending_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Alarm alarm_;
};

}  // namespace

grpc::ServerUnaryReactor* FineTuneServiceImpl::SubmitSweep(grpc::CallbackServerContext* context,
                                                           const v1::SubmitSweepRequest* request,
                                                           v1::Sweep* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::Time start = absl::Now();
  absl::StatusOr<std::string> tenant = Tenant(*context);
  absl::Status early = tenant.status();
  if (early.ok() && sweeps_ == nullptr) early = absl::UnimplementedError("sweeps are not enabled");
  if (early.ok() && !request->has_sweep()) early = absl::InvalidArgumentError("sweep: required");
  if (!early.ok()) {
    FinishUnary(reactor, "SubmitSweep", early, start);
    return reactor;
  }
  const absl::Time deadline = Deadline(start);
  pool_->Run([this, reactor, request, response, start, deadline, tenant = *tenant] {
    absl::StatusOr<v1::Sweep> sweep = sweeps_->Submit(request->sweep(), tenant, deadline);
    if (sweep.ok()) *response = *std::move(sweep);
    FinishUnary(reactor, "SubmitSweep", sweep.status(), start);
  });
  return reactor;
}

grpc::ServerUnaryReactor* FineTuneServiceImpl::GetSweep(grpc::CallbackServerContext* context,
                                                        const v1::GetSweepRequest* request,
                                                        v1::Sweep* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::Time start = absl::Now();
  absl::StatusOr<std::string> tenant = Tenant(*context);
  absl::Status status = tenant.ok() ? RequireSweepId(request->sweep_id()) : tenant.status();
  if (status.ok() && sweeps_ == nullptr) status = absl::UnimplementedError("sweeps are not enabled");
  if (status.ok()) {
    absl::StatusOr<v1::Sweep> sweep = GetOwnedSweep(sweeps_, request->sweep_id(), *tenant);
    if (sweep.ok()) *response = *std::move(sweep);
    status = sweep.status();
  }
  FinishUnary(reactor, "GetSweep", status, start);
  return reactor;
}

grpc::ServerUnaryReactor* FineTuneServiceImpl::CancelSweep(grpc::CallbackServerContext* context,
                                                           const v1::CancelSweepRequest* request,
                                                           v1::Sweep* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::Time start = absl::Now();
  absl::StatusOr<std::string> tenant = Tenant(*context);
  absl::Status status = tenant.ok() ? RequireSweepId(request->sweep_id()) : tenant.status();
  if (status.ok() && sweeps_ == nullptr) status = absl::UnimplementedError("sweeps are not enabled");
  if (status.ok()) status = GetOwnedSweep(sweeps_, request->sweep_id(), *tenant).status();
  if (status.ok()) {
    absl::StatusOr<v1::Sweep> sweep = sweeps_->Cancel(request->sweep_id());
    if (sweep.ok()) *response = *std::move(sweep);
    status = sweep.status();
  }
  FinishUnary(reactor, "CancelSweep", status, start);
  return reactor;
}

grpc::ServerWriteReactor<v1::SweepEvent>* FineTuneServiceImpl::WatchSweep(
    grpc::CallbackServerContext* context, const v1::WatchSweepRequest* request) {
  absl::StatusOr<std::string> tenant = Tenant(*context);
  absl::Status status = tenant.ok() ? RequireSweepId(request->sweep_id()) : tenant.status();
  if (status.ok() && sweeps_ == nullptr) status = absl::UnimplementedError("sweeps are not enabled");
  if (status.ok() && request->after_sequence() < 0) {
    status = absl::InvalidArgumentError("after_sequence: must not be negative");
  }
  if (status.ok()) status = GetOwnedSweep(sweeps_, request->sweep_id(), *tenant).status();
  return new SweepWatchReactor(sweeps_, request->sweep_id(), request->after_sequence(), status);
}

}  // namespace freezetune::service
