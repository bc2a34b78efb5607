// freezetune.v1.FineTuneService on gRPC's callback API: a thin skin over
// jobs::JobManager. Requests are checked for missing fields here; everything
// else (spec validation, state rules) is the manager's, and its Status is
// turned into a grpc::Status by ToGrpcStatus() only.
//
// Auth: with ServiceOptions.auth every RPC needs a bearer token; jobs and
// sweeps of other tenants are NOT_FOUND and ListJobs/ListSweeps show only the
// caller's.
//
// Threading: reactors never block on training. SubmitJob and PlanFreeze may
// read a model config and whole datasets to validate, so they run on a small
// pool of service threads (ServiceOptions.blocking_threads) and finish their
// reactor from there; the other unary RPCs are quick store reads and finish
// inline. WatchJob and WatchSweep are one ServerWriteReactor template
// (event_stream_reactor.h) with at most one write in flight: it replays
// stored events after `after_sequence`, then follows live events as the
// job's event log or the SweepManager announces them (they only notify; the
// reactor pulls), and finishes OK after the final event. While the server
// drains, a watcher that has caught up ends with UNAVAILABLE ("resume with
// after_sequence=N").
//
// Lifetime: the JobManager and Metrics must outlive this service, and the
// grpc::Server using it must be shut down (which waits for every reactor)
// before the service is destroyed.
#ifndef FREEZETUNE_SERVER_SERVICE_FINETUNE_SERVICE_H_
#define FREEZETUNE_SERVER_SERVICE_FINETUNE_SERVICE_H_

#include <memory>
#include <string>

#include "absl/time/time.h"
#include "freezetune/v1/freezetune.grpc.pb.h"
#include "server/jobs/job_manager.h"
#include "server/sweeps/sweep_manager.h"
#include "server/metrics/metrics.h"
#include "server/service/auth.h"

namespace freezetune::service {

struct ServiceOptions {
  // Threads that run SubmitJob/PlanFreeze validation.
  int blocking_threads = 2;
  // Server-side deadline of SubmitJob and PlanFreeze, from the call's
  // arrival: one still waiting for a pool thread, or whose validation ends
  // later, is DEADLINE_EXCEEDED (and a SubmitJob stores nothing). The
  // other unary RPCs are quick store reads. Zero or less: none.
  absl::Duration unary_deadline = absl::Seconds(60);
  // Bearer-token table; null disables authentication (every call is
  // tenant ""). See auth.h.
  std::shared_ptr<const Authenticator> auth;
};

class BlockingPool;

class FineTuneServiceImpl final : public v1::FineTuneService::CallbackService {
 public:
  // `metrics` may be null. `sweeps` may be null: the sweep RPCs then answer
  // UNIMPLEMENTED. Both must outlive the service.
  FineTuneServiceImpl(jobs::JobManager* manager, metrics::Metrics* metrics,
                      const ServiceOptions& options, sweeps::SweepManager* sweeps = nullptr);
  // Runs the pool's remaining work, then joins its threads.
  ~FineTuneServiceImpl() override;

  grpc::ServerUnaryReactor* SubmitJob(grpc::CallbackServerContext* context,
                                      const v1::SubmitJobRequest* request,
                                      v1::Job* response) override;
  grpc::ServerUnaryReactor* GetJob(grpc::CallbackServerContext* context,
                                   const v1::GetJobRequest* request, v1::Job* response) override;
  grpc::ServerUnaryReactor* ListJobs(grpc::CallbackServerContext* context,
                                     const v1::ListJobsRequest* request,
                                     v1::ListJobsResponse* response) override;
  grpc::ServerUnaryReactor* CancelJob(grpc::CallbackServerContext* context,
                                      const v1::CancelJobRequest* request,
                                      v1::Job* response) override;
  grpc::ServerWriteReactor<v1::JobEvent>* WatchJob(grpc::CallbackServerContext* context,
                                                   const v1::WatchJobRequest* request) override;
  grpc::ServerUnaryReactor* PlanFreeze(grpc::CallbackServerContext* context,
                                       const v1::PlanFreezeRequest* request,
                                       v1::PlanFreezeResponse* response) override;

  // Sweeps. SubmitSweep validates every candidate on the blocking pool;
  // WatchSweep streams as WatchJob does (pushed by SweepManager, no
  // polling) and finishes OK after the sweep's final event; ListSweeps pages
  // newest first like ListJobs. Other tenants' sweeps are NOT_FOUND.
  grpc::ServerUnaryReactor* SubmitSweep(grpc::CallbackServerContext* context,
                                        const v1::SubmitSweepRequest* request,
                                        v1::Sweep* response) override;
  grpc::ServerUnaryReactor* GetSweep(grpc::CallbackServerContext* context,
                                     const v1::GetSweepRequest* request,
                                     v1::Sweep* response) override;
  grpc::ServerUnaryReactor* CancelSweep(grpc::CallbackServerContext* context,
                                        const v1::CancelSweepRequest* request,
                                        v1::Sweep* response) override;
  grpc::ServerWriteReactor<v1::SweepEvent>* WatchSweep(
      grpc::CallbackServerContext* context, const v1::WatchSweepRequest* request) override;
  grpc::ServerUnaryReactor* ListSweeps(grpc::CallbackServerContext* context,
                                       const v1::ListSweepsRequest* request,
                                       v1::ListSweepsResponse* response) override;

 private:
  // When a SubmitJob/PlanFreeze that arrived at `start` must be answered.
  absl::Time Deadline(absl::Time start) const;
  // Maps `status` to gRPC (the one mapping, status_mapping.h), records the
  // RPC's code and latency since `start`, and finishes the reactor.
  void FinishUnary(grpc::ServerUnaryReactor* reactor, const char* method,
                   const absl::Status& status, absl::Time start);
  // The caller's tenant ("" without auth); UNAUTHENTICATED otherwise.
  absl::StatusOr<std::string> Tenant(const grpc::CallbackServerContext& context) const;

  jobs::JobManager* const manager_;
  metrics::Metrics* const metrics_;
  const ServiceOptions options_;
  std::unique_ptr<BlockingPool> pool_;
  sweeps::SweepManager* const sweeps_;
};

}  // namespace freezetune::service

#endif  // FREEZETUNE_SERVER_SERVICE_FINETUNE_SERVICE_H_
