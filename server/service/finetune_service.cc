#include "server/service/finetune_service.h"

#include <deque>
#include <functional>
#include <memory>
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
#include "server/service/event_sources.h"
#include "server/service/event_stream_reactor.h"
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

}  // namespace

FineTuneServiceImpl::FineTuneServiceImpl(jobs::JobManager* manager, metrics::Metrics* metrics,
                                         const ServiceOptions& options,
                                         sweeps::SweepManager* sweeps)
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
  const absl::Time start = absl::Now();
  const int64_t after = request->after_sequence();
  absl::StatusOr<std::string> tenant = Tenant(*context);
  absl::Status status = tenant.ok() ? RequireJobId(request->job_id()) : tenant.status();
  if (status.ok() && after < 0) status = absl::InvalidArgumentError("after_sequence: must be >= 0");
  bool ended = false;
  if (status.ok()) {
    absl::StatusOr<v1::Job> job = GetOwned(manager_, request->job_id(), *tenant);
    status = job.status();
    if (job.ok() && after > job->last_sequence()) {
      // Events are only ever appended, so a stream past the end could never
      // see the job's final event.
      status = absl::OutOfRangeError(absl::StrCat("after_sequence: ", after,
                                                  " is past the job's last sequence ",
                                                  job->last_sequence()));
    }
    // A finished job has nothing after its final event.
    if (job.ok()) ended = store::IsTerminal(job->state()) && after >= job->last_sequence();
  }
  auto* reactor = new EventStreamReactor<v1::JobEvent>(
      std::make_unique<JobEventSource>(manager_, request->job_id()), metrics_, "WatchJob", start,
      after);
  reactor->Begin(status, ended);
  return reactor;
}

grpc::ServerUnaryReactor* FineTuneServiceImpl::PlanFreeze(grpc::CallbackServerContext* context,
                                                          const v1::PlanFreezeRequest* request,
                                                          v1::PlanFreezeResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::Time start = absl::Now();
  absl::StatusOr<std::string> tenant = Tenant(*context);
  absl::Status early = tenant.status();
  if (early.ok() && request->model_uri().empty()) {
    early = absl::InvalidArgumentError("model_uri: required");
  }
  if (!early.ok()) {
    FinishUnary(reactor, "PlanFreeze", early, start);
    return reactor;
  }
  const absl::Time deadline = Deadline(start);
  pool_->Run([this, reactor, request, response, start, deadline, tenant = *tenant] {
    absl::StatusOr<v1::PlanFreezeResponse> plan = manager_->PlanFreeze(*request, tenant, deadline);
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

absl::StatusOr<v1::Sweep> GetOwnedSweep(sweeps::SweepManager* sweeps, const std::string& sweep_id,
                                        const std::string& tenant) {
  absl::StatusOr<v1::Sweep> sweep = sweeps->Get(sweep_id);
  if (sweep.ok() && sweep->tenant() != tenant) {
    return absl::NotFoundError(absl::StrCat("sweep ", sweep_id, " not found"));
  }
  return sweep;
}

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
  const absl::Time start = absl::Now();
  const int64_t after = request->after_sequence();
  absl::StatusOr<std::string> tenant = Tenant(*context);
  absl::Status status = tenant.ok() ? RequireSweepId(request->sweep_id()) : tenant.status();
  if (status.ok() && sweeps_ == nullptr) status = absl::UnimplementedError("sweeps are not enabled");
  if (status.ok() && after < 0) {
    status = absl::InvalidArgumentError("after_sequence: must not be negative");
  }
  bool ended = false;
  if (status.ok()) {
    absl::StatusOr<v1::Sweep> sweep = GetOwnedSweep(sweeps_, request->sweep_id(), *tenant);
    status = sweep.status();
    // Every event of a sweep that has ended is stored: none follows its last.
    if (sweep.ok()) {
      ended = sweep->state() != v1::SWEEP_STATE_RUNNING && after >= sweep->last_sequence();
    }
  }
  // With sweeps disabled the source is never subscribed or read: Begin
  // finishes with UNIMPLEMENTED first.
  auto* reactor = new EventStreamReactor<v1::SweepEvent>(
      std::make_unique<SweepEventSource>(sweeps_, request->sweep_id()), metrics_, "WatchSweep",
      start, after);
  reactor->Begin(status, ended);
  return reactor;
}

grpc::ServerUnaryReactor* FineTuneServiceImpl::ListSweeps(grpc::CallbackServerContext* context,
                                                          const v1::ListSweepsRequest* request,
                                                          v1::ListSweepsResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::Time start = absl::Now();
  absl::StatusOr<std::string> tenant = Tenant(*context);
  absl::Status status = tenant.status();
  if (status.ok() && sweeps_ == nullptr) status = absl::UnimplementedError("sweeps are not enabled");
  if (status.ok()) {
    // As ListJobs: with auth only the caller's sweeps, without it all.
    absl::StatusOr<v1::ListSweepsResponse> list = sweeps_->List(
        *request, options_.auth != nullptr ? std::optional<std::string>(*tenant) : std::nullopt);
    if (list.ok()) *response = *std::move(list);
    status = list.status();
  }
  FinishUnary(reactor, "ListSweeps", status, start);
  return reactor;
}

}  // namespace freezetune::service
