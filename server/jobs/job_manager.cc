#include "server/jobs/job_manager.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/base/ids.h"
#include "server/base/log.h"
#include "server/common/status_macros.h"
#include "server/data/s3_client.h"
#include "server/jobs/remote_files.h"
#include "server/store/postgres_backend.h"

namespace freezetune::jobs {
namespace {

// Device slots a job takes at once: its data-parallel ranks (gang), else 1.
int Ranks(const v1::FineTuneJob& spec) { return std::max(1, spec.resources().data_parallel()); }

constexpr int kMaxClientRequestIdLength = 128;
constexpr int kMaxDisplayNameLength = 256;

using base::Log;
using base::LogLevel;
using store::IsTerminal;
using store::NowTimestamp;
using store::ToMicros;

metrics::JobStateLabel ToMetricsState(v1::JobState state) {
  switch (state) {
    case v1::JOB_STATE_RUNNING:
      return metrics::JobStateLabel::kRunning;
    case v1::JOB_STATE_SUCCEEDED:
      return metrics::JobStateLabel::kSucceeded;
    case v1::JOB_STATE_FAILED:
      return metrics::JobStateLabel::kFailed;
    case v1::JOB_STATE_CANCELLED:
      return metrics::JobStateLabel::kCancelled;
    default:
      return metrics::JobStateLabel::kQueued;
  }
}

std::string StateName(v1::JobState state) {
  std::string name = v1::JobState_Name(state);
  constexpr std::string_view kPrefix = "JOB_STATE_";
  if (name.rfind(kPrefix, 0) == 0) name.erase(0, kPrefix.size());
  return name;
}

v1::JobEvent StateChangeEvent(v1::JobState state, const std::string& message) {
  v1::JobEvent event;
  event.mutable_state_change()->set_state(state);
  event.mutable_state_change()->set_message(message);
  return event;
}

void LogError(const std::string& what, const absl::Status& status,
              const std::string& job_id = "") {
  Log(LogLevel::kError, absl::StrCat(what, ": ", status.ToString()), job_id);
}

absl::Status CheckDeadline(absl::Time deadline, const char* what) {
  if (absl::Now() <= deadline) return absl::OkStatus();
  return absl::DeadlineExceededError(
      absl::StrCat(what, " took longer than the server's deadline for the call; nothing was done"));
}

// <hostname>:<canonical data dir>: unique among the live processes sharing
// a database (the data dir's LOCK admits one process), and the same for the
// next process on that host and dir, which can then take over at once.
std::string DefaultReplicaId(const std::string& data_dir) {
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  std::error_code ec;
  const std::filesystem::path canonical = std::filesystem::canonical(data_dir, ec);
  return absl::StrCat(host, ":", ec ? data_dir : canonical.string());
}

int64_t NowMicros() { return absl::ToUnixMicros(absl::Now()); }

absl::Status MakeDir(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", path, ": ", ec.message()));
  return absl::OkStatus();
}

}  // namespace

JobManager::JobManager(const JobManagerOptions& options, TrainHooks hooks,
                       metrics::Metrics* metrics)
    : options_(options), hooks_(std::move(hooks)), metrics_(metrics) {}

absl::StatusOr<std::unique_ptr<JobManager>> JobManager::Create(const JobManagerOptions& options,
                                                               TrainHooks hooks,
                                                               metrics::Metrics* metrics) {
  if (options.data_dir.empty()) return absl::InvalidArgumentError("data_dir: required");
  if (!hooks.validate || !hooks.run || !hooks.plan_freeze) {
    return absl::InvalidArgumentError("job manager: every train hook must be set");
  }
  FT_RETURN_IF_ERROR(MakeDir(options.data_dir));
  std::unique_ptr<JobManager> manager(new JobManager(options, std::move(hooks), metrics));
  std::string lock_path = (std::filesystem::path(options.data_dir) / "LOCK").string();
  manager->lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (manager->lock_fd_ < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("data_dir: cannot open ", lock_path, ": ", std::strerror(errno)));
  }
  if (::flock(manager->lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "data_dir: ", options.data_dir, " is in use by another freezetune-server"));
  }
  manager->replica_id_ =
      options.replica_id.empty() ? DefaultReplicaId(options.data_dir) : options.replica_id;
  if (metrics != nullptr) {
    metrics->SetQueueName(options.postgres_uri.empty()
                              ? absl::StrCat("sqlite:", manager->replica_id_)
                              : store::RedactPostgresUri(options.postgres_uri));
  }
  store::StoreOptions store_options;
  store_options.postgres_uri = options.postgres_uri;
  store_options.replica_id = manager->replica_id_;
  store_options.path = options.store_path.empty()
                           ? (std::filesystem::path(options.data_dir) / "freezetune.db").string()
                           : options.store_path;
  store_options.legacy_sweeps_path =
      options.legacy_sweeps_path.empty()
          ? (std::filesystem::path(options.data_dir) / "sweeps.db").string()
          : options.legacy_sweeps_path;
  store_options.max_page_count = options.store_max_page_count;
  FT_ASSIGN_OR_RETURN(manager->store_, store::Store::Open(store_options));
  manager->shared_queue_ = manager->store_->shared_queue();
  if (metrics != nullptr) {
    manager->store_->AddWriteListener(
        [metrics](const absl::Status& result) { metrics->StoreWrite(result.ok()); });
  }
  manager->store_->AddQuarantineListener([metrics](store::Kind kind, const std::string& id,
                                                   const std::string& reason,
                                                   const absl::Status& written) {
    if (metrics != nullptr) metrics->StoreRecordQuarantined();
    Log(LogLevel::kError, "corrupt store record quarantined", kind == store::Kind::kJob ? id : "",
        {{"id", id}, {"reason", reason}, {"placeholder_stored", written.ok() ? "yes" : written.ToString()}});
  });
  // One line when the store stops accepting writes and one when it
  // accepts them again, not one per refused write (listener calls are
  // serialized).
  manager->store_->AddWriteListener([refusing = false](const absl::Status& result) mutable {
    if (result.ok()) {
      Log(LogLevel::kInfo, "job store accepts writes again");
    } else if (!refusing) {
      LogError("store write (the store refuses writes; probing)", result, {});
    }
    refusing = !result.ok();
  });
  PathPolicyOptions path_options;
  path_options.data_dir = std::filesystem::canonical(options.data_dir).string();
  path_options.uris = options.uris;
  path_options.allow_tenant_output_paths = options.allow_tenant_output_paths;
  manager->paths_ = std::make_unique<PathPolicy>(path_options, manager->store_.get());
  SchedulerOptions scheduler_options = options.scheduler;
  // A shared queue's depth is the store's (set when scraped, below), the
  // same number on every replica; the local queue holds only claimed jobs.
  scheduler_options.metrics = manager->shared_queue_ ? nullptr : metrics;
  JobManager* self = manager.get();
  // A freed slot can take the next job of the shared queue at once.
  if (manager->shared_queue_) scheduler_options.on_slots_freed = [self] { self->WakeClaimer(); };
  manager->scheduler_ = std::make_unique<Scheduler>(
      scheduler_options,
      [self](const std::string& id, int slot, const StopFlag& stop) { self->RunJob(id, slot, stop); });
  FT_RETURN_IF_ERROR(manager->Recover());
  manager->WarnIfStoreLost(store_options.path);
  manager->scheduler_->Start();
  manager->prober_ = std::thread([self] { self->ProbeLoop(); });
  if (manager->shared_queue_) {
    // This replica's previous process died holding leases (a clean stop
    // releases them): its jobs go back to the queue now, not when the
    // leases expire.
    FT_ASSIGN_OR_RETURN(std::vector<store::ResourceLease> previous,
                        manager->store_->TakeOverPreviousProcess(
                            manager->replica_id_,
                            NowMicros() + absl::ToInt64Microseconds(options.lease_duration)));
    for (const store::ResourceLease& lease : previous) {
      manager->Adopt(lease, absl::StrCat("re-queued: replica ", manager->replica_id_,
                                         " restarted; the next run resumes from the last "
                                         "checkpoint"));
    }
    FT_RETURN_IF_ERROR(manager->store_->Listen([self](const store::Signal& signal) {
      // Events already woke their watchers (Store::Listen); anything else
      // may concern the claimer: a claimable job, a cancel, missed news.
      if (signal.type != store::Signal::Type::kEvent) self->WakeClaimer();
    }));
    manager->claimer_ = std::thread([self] { self->ClaimLoop(); });
    manager->keeper_ = std::thread([self] { self->KeepLeases(); });
    Log(LogLevel::kInfo, "shared queue: this replica claims jobs from the job store", {},
        {{"replica", manager->replica_id_},
         {"lease", absl::FormatDuration(options.lease_duration)},
         {"renew_every", absl::FormatDuration(options.lease_renew_interval)}});
  }
  if (metrics != nullptr) {
    metrics->SetCollectHook([self, metrics] {
      // A shared queue's numbers are the store's: the other replicas'
      // submits, claims and ends are seen nowhere else. A queue of its own
      // is kept up to date as jobs move, and its age is the scheduler's.
      std::optional<absl::Time> oldest;
      if (self->shared_queue_) {
        absl::StatusOr<store::Store::JobCounts> counts = self->store_->CountJobs();
        if (!counts.ok()) return;  // the last values stay
        self->SetJobsInStates(counts->by_state);
        metrics->SetQueueDepth(counts->by_state[v1::JOB_STATE_QUEUED]);
        oldest = counts->oldest_queued;
      } else if (absl::Time since = self->scheduler_->OldestQueuedSince();
                 since != absl::InfiniteFuture()) {
        oldest = since;
      }
      metrics->SetQueueOldestAge(
          oldest.has_value() ? std::max(0.0, absl::ToDoubleSeconds(absl::Now() - *oldest)) : 0);
    });
  }
  return manager;
}

JobManager::~JobManager() {
  // The scrape thread must not call into a manager being destroyed.
  if (metrics_ != nullptr) metrics_->SetCollectHook(nullptr);
  Shutdown();
  scheduler_.reset();
  store_.reset();
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the flock
}

void JobManager::Shutdown(absl::Time deadline) {
  shutting_down_.store(true);
  if (!prober_stop_.HasBeenNotified()) prober_stop_.Notify();
  WakeClaimer();
  if (claimer_.joinable()) claimer_.join();
  std::vector<std::string> still_running;
  if (scheduler_ != nullptr) still_running = scheduler_->Shutdown(deadline);
  for (const std::string& job_id : still_running) HandBack(job_id);
  abandoned_runs_.store(still_running.size());
  // Jobs claimed but never started: other replicas may take them now, not
  // when the leases expire. (The leases were renewed during the drain.)
  std::vector<std::string> held;
  {
    absl::MutexLock lock(&leases_mu_);
    for (const auto& [job_id, epoch] : leases_) held.push_back(job_id);
  }
  for (const std::string& job_id : held) ReleaseLeaseIfHeld(job_id);
  if (!keeper_stop_.HasBeenNotified()) keeper_stop_.Notify();
  if (keeper_.joinable()) keeper_.join();
  if (prober_.joinable()) prober_.join();
  drained_.store(true);
  if (store_ != nullptr) store_->NotifyAll();
}

absl::Status JobManager::WriteAsRunner(RunGuard& guard, const std::string& job_id,
                                       const std::function<absl::Status()>& write) {
  absl::MutexLock lock(&guard.mu);
  if (guard.handed_back) {
    return absl::AbortedError(absl::StrCat("job ", job_id, " was handed back by the drain"));
  }
  return write();
}

void JobManager::HandBack(const std::string& job_id) {
  std::shared_ptr<RunGuard> guard;
  {
    absl::MutexLock lock(&runs_mu_);
    auto it = runs_.find(job_id);
    if (it != runs_.end()) guard = it->second;
  }
  // No guard: the run has already recorded its end and makes no more writes.
  if (guard == nullptr) return;
  {
    // Waits for a write the run has in progress; none follows.
    absl::MutexLock lock(&guard->mu);
    guard->handed_back = true;
  }
  absl::StatusOr<v1::Job> job = store_->GetJob(job_id);
  if (!job.ok()) {
    LogError("hand back", job.status(), job_id);
    return;
  }
  // QUEUED: it never started; terminal: its end was recorded just before.
  if (job->state() != v1::JOB_STATE_RUNNING) return;
  job->clear_start_time();
  // If this write fails the job stays RUNNING in the store, and the next
  // start re-queues it all the same (Recover).
  absl::Status recorded = Transition(
      *job, v1::JOB_STATE_QUEUED,
      "the drain's grace period ended during a training step; re-queued for the next start, "
      "which resumes from the last checkpoint");
  if (!recorded.ok()) {
    LogError("hand back", recorded, job_id);
    return;
  }
  Log(LogLevel::kWarning,
      "job QUEUED: the drain's grace period ended during a training step (its thread is "
      "abandoned; the steps since its last checkpoint are redone at the next start)",
      job_id, {{"last_sequence", absl::StrCat(job->last_sequence())}});
}

absl::Status JobManager::Recover() {
  // A shared queue has no recovery of its own: the claimer takes QUEUED
  // jobs and the keeper takes over RUNNING ones whose lease expired.
  std::vector<v1::Job> unfinished;
  if (!shared_queue_) {
    FT_ASSIGN_OR_RETURN(unfinished,
                        store_->JobsInStates({v1::JOB_STATE_QUEUED, v1::JOB_STATE_RUNNING}));
  }
  for (v1::Job& job : unfinished) {
    if (absl::Status device = scheduler_->CheckDevice(job.spec().device(), Ranks(job.spec()));
        !device.ok()) {
      // E.g. restarted on a machine without its GPU: it could never run, so
      // it fails instead of waiting forever.
      job.set_error_message(std::string(device.message()));
      *job.mutable_end_time() = NowTimestamp();
      FT_RETURN_IF_ERROR(Transition(job, v1::JOB_STATE_FAILED, job.error_message()));
      if (metrics_ != nullptr) metrics_->JobFinished(metrics::JobStateLabel::kFailed);
      Log(LogLevel::kWarning, "job FAILED at recovery", job.id(), {{"reason", job.error_message()}});
      RemoveCheckpoints(job.id());
      continue;
    }
    if (job.state() == v1::JOB_STATE_RUNNING) {
      job.clear_start_time();
      FT_RETURN_IF_ERROR(Transition(job, v1::JOB_STATE_QUEUED,
                                    "re-queued after a server restart interrupted it"));
    }
    FT_RETURN_IF_ERROR(scheduler_->Enqueue(job.id(), job.spec().priority(), /*force=*/true,
                                           absl::FromUnixMicros(ToMicros(job.create_time())),
                                           job.tenant(), job.spec().device(), Ranks(job.spec())));
    Log(LogLevel::kInfo, "job recovered and queued", job.id(),
        {{"last_sequence", absl::StrCat(job.last_sequence())}});
  }
  if (metrics_ != nullptr) {
    FT_ASSIGN_OR_RETURN(auto counts, store_->CountJobsByState());
    SetJobsInStates(counts);
  }
  return absl::OkStatus();
}

void JobManager::SetJobsInStates(std::map<v1::JobState, int64_t> counts) {
  for (v1::JobState s : {v1::JOB_STATE_QUEUED, v1::JOB_STATE_RUNNING, v1::JOB_STATE_SUCCEEDED,
                         v1::JOB_STATE_FAILED, v1::JOB_STATE_CANCELLED}) {
    metrics_->SetJobsInState(ToMetricsState(s), counts[s]);
  }
}

absl::Status JobManager::Validate(const v1::FineTuneJob& job, const std::string& tenant) {
  FT_RETURN_IF_ERROR(paths_->CheckJobInputs(job, tenant));
  return hooks_.validate(job, options_.uris, options_.limits);
}

absl::StatusOr<std::string> JobManager::PlanOutput(std::string_view uri, const std::string& tenant,
                                                   const std::string& owner_id,
                                                   std::string_view field) {
  if (data::IsS3Uri(uri)) {
    // A sweep writes its winner's copy and sweep.json to a local directory.
    return absl::InvalidArgumentError(absl::StrCat(
        std::string(field), ": s3:// is not supported here (only a job's output_uri may be s3://)"));
  }
  return paths_->PlanOutput(uri, tenant, owner_id, field);
}

absl::StatusOr<v1::Job> JobManager::Submit(const v1::FineTuneJob& spec, const std::string& tenant,
                                           absl::Time deadline, const std::string& sweep_id) {
  if (shutting_down_.load()) return absl::UnavailableError("server is shutting down");
  if (spec.client_request_id().size() > kMaxClientRequestIdLength) {
    return absl::InvalidArgumentError(absl::StrCat(
        "job.client_request_id: at most ", kMaxClientRequestIdLength, " characters"));
  }
  if (spec.display_name().size() > kMaxDisplayNameLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("job.display_name: at most ", kMaxDisplayNameLength, " characters"));
  }
  // A retry returns the first job even if its inputs changed since.
  FT_ASSIGN_OR_RETURN(std::optional<v1::Job> existing,
                      store_->FindJobByClientRequestId(tenant, spec.client_request_id()));
  if (existing.has_value()) return *std::move(existing);

  // Cheap early answers before the (possibly slow) validation.
  FT_RETURN_IF_ERROR(scheduler_->CanAccept(tenant, spec.device(), Ranks(spec)));
  FT_RETURN_IF_ERROR(CheckDeadline(deadline, "waiting to validate the job"));
  const std::string job_id = base::NewId("job");
  FT_ASSIGN_OR_RETURN(const std::string output_dir,
                      paths_->PlanOutput(spec.output_uri(), tenant, job_id, "job.output_uri"));
  FT_RETURN_IF_ERROR(Validate(spec, tenant));
  if (spec.has_notify()) FT_RETURN_IF_ERROR(ValidateNotify(spec.notify(), tenant, "job.notify"));
  FT_RETURN_IF_ERROR(CheckDeadline(deadline, "validating the job"));

  absl::MutexLock lock(&submit_mu_);
  FT_RETURN_IF_ERROR(scheduler_->CanAccept(tenant, spec.device(), Ranks(spec)));
  v1::Job job;
  job.set_id(job_id);
  job.set_tenant(tenant);
  job.set_output_uri(data::IsS3Uri(output_dir) ? output_dir : absl::StrCat("file://", output_dir));
  job.set_sweep_id(sweep_id);
  *job.mutable_spec() = spec;
  job.set_state(v1::JOB_STATE_QUEUED);
  *job.mutable_create_time() = NowTimestamp();
  // The claim is taken with the insert: of two submits naming one
  // directory (or nested ones) only the first is stored.
  const store::OutputClaim claim{output_dir, job.id(), tenant};
  FT_ASSIGN_OR_RETURN(
      store::Store::CreateJobResult created,
      store_->CreateJob(job, QueuedEvent(), &claim, StoreQueueLimits()));
  if (created.output_conflict.has_value()) {
    return PathPolicy::ClaimConflict("job.output_uri", output_dir, *created.output_conflict);
  }
  if (created.queue_full.has_value()) return QueueFullError(tenant, *created.queue_full, 1);
  if (!created.created) return std::move(created.job);
  if (metrics_ != nullptr) metrics_->JobCreated();
  if (shared_queue_) {
    // Whichever replica has a slot first claims it (NOTIFY wakes them).
    WakeClaimer();
    Log(LogLevel::kInfo, "job queued", job.id(),
        {{"tenant", tenant}, {"priority", absl::StrCat(spec.priority())}});
    return std::move(created.job);
  }
  absl::Status queued = scheduler_->Enqueue(job.id(), spec.priority(), /*force=*/true,
                                            absl::FromUnixMicros(ToMicros(job.create_time())),
                                            tenant, spec.device(), Ranks(spec));
  if (!queued.ok()) {
    // Only possible while shutting down: the job stays QUEUED in the store
    // and is picked up at the next start.
    LogError("enqueue", queued, job.id());
  } else {
    Log(LogLevel::kInfo, "job queued", job.id(),
        {{"tenant", tenant}, {"priority", absl::StrCat(spec.priority())}});
  }
  return std::move(created.job);
}

absl::Status JobManager::ValidateNotify(const v1::Notify& notify, const std::string& tenant,
                                       const std::string& field) {
  if (!options_.notify.validate) {
    return absl::FailedPreconditionError(
        absl::StrCat(field, ": completion callbacks are not enabled on this server"));
  }
  return options_.notify.validate(notify, tenant, field);
}

absl::StatusOr<v1::Job> JobManager::Get(const std::string& job_id) {
  return store_->GetJob(job_id);
}

absl::StatusOr<v1::ListJobsResponse> JobManager::List(const v1::ListJobsRequest& request,
                                                      std::optional<std::string> tenant) {
  FT_ASSIGN_OR_RETURN(store::ListQuery query,
                      store::MakeListQuery(request.page_size(), request.page_token(),
                                           request.states(), &v1::JobState_IsValid, "job",
                                           std::move(tenant)));
  return store_->ListJobs(query);
}

absl::StatusOr<v1::Job> JobManager::Cancel(const std::string& job_id) {
  FT_ASSIGN_OR_RETURN(v1::Job job, store_->GetJob(job_id));
  if (IsTerminal(job.state())) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", job_id, " already ", StateName(job.state())));
  }
  bool claimed_to_cancel = false;
  if (shared_queue_ && !HoldsLease(job_id)) {
    // Another replica's, or nobody's: a QUEUED job nobody holds is taken
    // and cancelled here; any other is left to its owner, told through the
    // store (or to whoever takes it over).
    store::ClaimRequest request;
    request.owner = replica_id_;
    request.now_micros = NowMicros();
    request.expires_micros =
        request.now_micros + absl::ToInt64Microseconds(options_.lease_duration);
    request.only_id = job_id;
    FT_ASSIGN_OR_RETURN(std::optional<store::ResourceLease> claimed, store_->ClaimJob(request));
    if (!claimed.has_value()) {
      FT_RETURN_IF_ERROR(store_->RequestCancel(store::Kind::kJob, job_id));
      Log(LogLevel::kInfo, "job cancel requested of the replica that runs it", job_id);
      return store_->GetJob(job_id);
    }
    absl::MutexLock lock(&leases_mu_);
    leases_[job_id] = claimed->epoch;
    claimed_to_cancel = true;
  }
  // Taken only to cancel it: recording CANCELLED releases the lease; if
  // that fails, the lease must not keep the job from the other replicas.
  absl::Cleanup release_if_kept = [&] {
    if (claimed_to_cancel) ReleaseLeaseIfHeld(job_id);
  };
  absl::MutexLock lock(&submit_mu_);
  switch (scheduler_->Cancel(job_id)) {
    case Scheduler::CancelOutcome::kStopRequested:
      // The worker owns the job; it records CANCELLED when the run stops.
      return store_->GetJob(job_id);
    case Scheduler::CancelOutcome::kRemovedFromQueue:
    case Scheduler::CancelOutcome::kNotFound: {
      // No worker owns the job now (or ever will); re-read it, since a worker
      // may have finished it between our read and the scheduler's answer.
      FT_ASSIGN_OR_RETURN(job, store_->GetJob(job_id));
      if (IsTerminal(job.state())) {
        return absl::FailedPreconditionError(
            absl::StrCat("job ", job_id, " already ", StateName(job.state())));
      }
      *job.mutable_end_time() = NowTimestamp();
      FT_RETURN_IF_ERROR(Transition(job, v1::JOB_STATE_CANCELLED, "cancelled by request"));
      if (metrics_ != nullptr) metrics_->JobFinished(metrics::JobStateLabel::kCancelled);
      Log(LogLevel::kInfo, "job CANCELLED while queued", job_id);
      RemoveCheckpoints(job_id);
      return job;
    }
  }
  return absl::InternalError("unreachable");
}

absl::StatusOr<v1::PlanFreezeResponse> JobManager::PlanFreeze(
    const v1::PlanFreezeRequest& request, const std::string& tenant, absl::Time deadline) {
  FT_RETURN_IF_ERROR(CheckDeadline(deadline, "waiting to plan the freeze"));
  FT_RETURN_IF_ERROR(paths_->CheckInput(request.model_uri(), tenant, "model_uri"));
  absl::StatusOr<v1::PlanFreezeResponse> plan = hooks_.plan_freeze(request, options_.uris);
  if (plan.ok()) FT_RETURN_IF_ERROR(CheckDeadline(deadline, "planning the freeze"));
  return plan;
}

absl::StatusOr<std::vector<v1::JobEvent>> JobManager::ReadEvents(const std::string& job_id,
                                                                 int64_t after_sequence,
                                                                 int limit) {
  return store_->ReadJobEvents(job_id, after_sequence, limit);
}

store::Store::SubscriptionId JobManager::Subscribe(const std::string& job_id,
                                                   std::function<void()> on_new_events) {
  return store_->Subscribe(store::Kind::kJob, job_id, std::move(on_new_events));
}

void JobManager::Unsubscribe(store::Store::SubscriptionId id) { store_->Unsubscribe(id); }

size_t JobManager::subscriber_count() const {
  return store_->subscriber_count(store::Kind::kJob);
}

v1::JobEvent JobManager::QueuedEvent() { return StateChangeEvent(v1::JOB_STATE_QUEUED, "queued"); }

absl::StatusOr<JobManager::NewJobs> JobManager::NewJobRecords(
    const std::vector<v1::FineTuneJob>& specs, const std::string& tenant,
    const std::string& sweep_id) {
  if (shutting_down_.load()) return absl::UnavailableError("server is shutting down");
  NewJobs out;
  out.jobs.reserve(specs.size());
  absl::MutexLock lock(&submit_mu_);
  for (size_t i = 0; i < specs.size(); ++i) {
    FT_RETURN_IF_ERROR(
        scheduler_->CanAccept(tenant, specs[i].device(), Ranks(specs[i]), /*extra=*/i));
    v1::Job job;
    job.set_id(base::NewId("job"));
    FT_ASSIGN_OR_RETURN(const std::string output_dir,
                        paths_->PlanOutput(specs[i].output_uri(), tenant, job.id(),
                                           "job.output_uri"));
    job.set_tenant(tenant);
    job.set_output_uri(data::IsS3Uri(output_dir) ? output_dir
                                                 : absl::StrCat("file://", output_dir));
    job.set_sweep_id(sweep_id);
    *job.mutable_spec() = specs[i];
    job.set_state(v1::JOB_STATE_QUEUED);
    *job.mutable_create_time() = NowTimestamp();
    out.claims.push_back({output_dir, job.id(), tenant});
    out.jobs.push_back(std::move(job));
  }
  return out;
}

store::QueueLimits JobManager::StoreQueueLimits() const {
  if (!shared_queue_) return {};
  return {options_.scheduler.max_queue, options_.scheduler.max_queued_per_tenant};
}

absl::Status JobManager::QueueFullError(const std::string& tenant, const store::QueueFull& full,
                                        int64_t adding) const {
  if (!full.tenant) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "queue is full (", full.queued, " jobs waiting across the replicas; ", adding,
        " more would exceed max_queue ", options_.scheduler.max_queue, "); retry later"));
  }
  return absl::ResourceExhaustedError(absl::StrCat(
      "tenant \"", tenant, "\" has ", full.queued, " queued jobs across the replicas; ", adding,
      " more would exceed its limit (max_queued_per_tenant ",
      options_.scheduler.max_queued_per_tenant, "); retry when one starts"));
}

void JobManager::EnqueueStored(const std::vector<v1::Job>& jobs) {
  if (shared_queue_) {
    if (metrics_ != nullptr) {
      for (size_t i = 0; i < jobs.size(); ++i) metrics_->JobCreated();
    }
    WakeClaimer();
    return;
  }
  absl::MutexLock lock(&submit_mu_);
  for (const v1::Job& job : jobs) {
    if (metrics_ != nullptr) metrics_->JobCreated();
    absl::Status queued = scheduler_->Enqueue(
        job.id(), job.spec().priority(), /*force=*/true,
        absl::FromUnixMicros(ToMicros(job.create_time())), job.tenant(), job.spec().device(),
        Ranks(job.spec()));
    if (!queued.ok()) {
      // Only while shutting down: the job stays QUEUED in the store and is
      // picked up at the next start.
      LogError("enqueue", queued, job.id());
    } else {
      Log(LogLevel::kInfo, "job queued", job.id(),
          {{"tenant", job.tenant()}, {"sweep_id", job.sweep_id()}});
    }
  }
}

absl::StatusOr<v1::JobEvent> JobManager::Append(v1::Job& job, v1::JobEvent event,
                                                bool update_job) {
  // A job that ends or goes back to the queue leaves this replica.
  const bool release =
      update_job && (IsTerminal(job.state()) || job.state() == v1::JOB_STATE_QUEUED);
  FT_ASSIGN_OR_RETURN(std::optional<store::Fence> fence, FenceFor(job.id(), release));
  FT_ASSIGN_OR_RETURN(v1::JobEvent stored,
                      store_->AppendJobEvent(job.id(), std::move(event),
                                             update_job ? &job : nullptr,
                                             fence.has_value() ? &*fence : nullptr));
  if (fence.has_value() && release) {
    absl::MutexLock lock(&leases_mu_);
    leases_.erase(job.id());
  }
  job.set_last_sequence(stored.sequence());
  return stored;
}

absl::Status JobManager::Transition(v1::Job& job, v1::JobState state, const std::string& message) {
  v1::JobState from = job.state();
  job.set_state(state);
  // The gauges move first, so that anyone who sees the new state (event or
  // record) also sees them; undone if the write fails.
  if (metrics_ != nullptr) metrics_->JobStateChanged(ToMetricsState(from), ToMetricsState(state));
  absl::StatusOr<v1::JobEvent> stored = Append(job, StateChangeEvent(state, message), true);
  if (!stored.ok()) {
    job.set_state(from);
    if (metrics_ != nullptr) metrics_->JobStateChanged(ToMetricsState(state), ToMetricsState(from));
    return stored.status();
  }
  if (IsTerminal(state) && options_.notify.job_ended) options_.notify.job_ended(job);
  return absl::OkStatus();
}

absl::StatusOr<std::string> JobManager::OutputDir(const v1::Job& job) {
  if (!job.spec().output_uri().empty() && !OutputIsRemote(job.spec())) {
    // Planned at submit (Job.output_uri, "file://" + the canonical path);
    // created now, re-confined component by component. Jobs stored before
    // outputs were planned have only the spec's URI.
    const std::string planned = absl::StartsWith(job.output_uri(), "file://")
                                    ? job.output_uri().substr(7)
                                    : job.spec().output_uri();
    return data::ResolveOutputDir(planned, options_.uris, "job.output_uri");
  }
  // The default, or where an s3:// output is staged until it is published
  // when the job succeeds: under data_dir (which need not lie under a data
  // root).
  FT_ASSIGN_OR_RETURN(std::string dir,
                      paths_->PlanOutput({}, job.tenant(), job.id(), "job.output_uri"));
  FT_RETURN_IF_ERROR(MakeDir(dir));
  return dir;
}

void JobManager::RunJob(const std::string& job_id, int slot, const StopFlag& stop) {
  absl::StatusOr<v1::Job> loaded = store_->GetJob(job_id);
  if (!loaded.ok()) {
    LogError("load", loaded.status(), job_id);
    return;
  }
  v1::Job job = *std::move(loaded);
  if (job.state() != v1::JOB_STATE_QUEUED) {  // cancelled while queued
    ReleaseLeaseIfHeld(job_id);
    return;
  }
  // Every store write of the job below goes through `as_runner`, so none
  // lands after Shutdown handed the job back (HandBack).
  auto guard = std::make_shared<RunGuard>();
  {
    absl::MutexLock lock(&runs_mu_);
    runs_[job_id] = guard;
  }
  absl::Cleanup forget_guard = [&] {
    absl::MutexLock lock(&runs_mu_);
    runs_.erase(job_id);
  };
  auto as_runner = [&](const std::function<absl::Status()>& write) {
    return WriteAsRunner(*guard, job_id, write);
  };
  auto handed_back = [&] {
    absl::MutexLock lock(&guard->mu);
    return guard->handed_back;
  };
  *job.mutable_start_time() = NowTimestamp();
  job.clear_progress();
  const std::string& device = scheduler_->slot_device(slot);
  // A data-parallel job holds one slot per rank (gang scheduling).
  std::vector<int> slots = scheduler_->SlotsOf(job_id);
  if (slots.empty()) slots = {slot};
  std::vector<std::string> devices;
  for (int s : slots) devices.push_back(scheduler_->slot_device(s));
  // While the store refuses writes the job waits here, QUEUED, holding its
  // slots (no other job could start either); it starts once the store
  // accepts writes, or stays QUEUED in the store for the next start.
  if (absl::Status s = RetryWhileUnwritable(job_id, "start", [&] {
        if (stop.requested()) return absl::CancelledError("stopped before it started");
        return as_runner([&] {
          return Transition(
              job, v1::JOB_STATE_RUNNING,
              absl::StrCat(slots.size() == 1
                               ? absl::StrCat("running in slot ", slot, " (", device, ")")
                               : absl::StrCat("running in slots ", absl::StrJoin(slots, ", "),
                                              " (", absl::StrJoin(devices, ", "), ")"),
                           shared_queue_ ? absl::StrCat(" on replica ", replica_id_,
                                                        " (lease epoch ", LeaseEpoch(job_id), ")")
                                         : ""));
        });
      });
      !s.ok()) {
    // A cancel that reached the worker before the job started: nobody else
    // will record it (Cancel left it to the worker), so the job ends here.
    // A drain's stop leaves it QUEUED for the next start.
    if (absl::IsCancelled(s) && stop.cancelled.load() && !stop.shutdown.load()) {
      *job.mutable_end_time() = NowTimestamp();
      s = as_runner([&] {
        return Transition(job, v1::JOB_STATE_CANCELLED, "cancelled by request");
      });
      if (s.ok()) {
        if (metrics_ != nullptr) metrics_->JobFinished(metrics::JobStateLabel::kCancelled);
        Log(LogLevel::kInfo, "job CANCELLED before it started", job_id);
        RemoveCheckpoints(job_id);
        return;
      }
    }
    LogError("start", s, job_id);
    // Still QUEUED: another replica may run it.
    if (!handed_back()) ReleaseLeaseIfHeld(job_id);
    return;
  }
  Log(LogLevel::kInfo, "job running", job.id(),
      {{"slot", absl::StrCat(slot)}, {"device", device}});

  train::RunContext context;
  context.job_id = job.id();
  context.device = device;
  if (slots.size() > 1) context.devices = devices;
  context.uris = options_.uris;
  context.limits = options_.limits;
  // A sweep's trials read each other's frozen-prefix outputs.
  context.prefix_cache_shared = !job.sweep_id().empty();
  // Issue 14.3: once an event cannot be stored the run stops (its watchers
  // would otherwise wait forever on a job that trains unseen) and the job
  // ends FAILED with the store's error once the store accepts writes.
  std::atomic<bool> store_failed{false};
  absl::Status store_error;  // set once, before store_failed, on the emitting thread
  int64_t store_failed_step = 0;
  context.should_stop = [&stop, &store_failed] { return stop.requested() || store_failed.load(); };
  // CPU threads are shared per slot: a data-parallel job's ranks each get
  // one slot's share (train::RunContext::intra_op_threads).
  const bool on_cpu = device == "cpu";
  const int cpu_slots = on_cpu ? static_cast<int>(slots.size()) : 0;
  running_cpu_jobs_ += cpu_slots;
  absl::Cleanup cpu_job_done = [&] { running_cpu_jobs_ -= cpu_slots; };
  if (on_cpu && options_.cpu_threads > 0) {
    context.intra_op_threads = [this] {
      return std::max(1, options_.cpu_threads / std::max(1, running_cpu_jobs_.load()));
    };
  }

  // Steps are counted as the trainer takes them: a resumed run does not
  // count again the steps its checkpoint already holds.
  if (metrics_ != nullptr) {
    context.on_step = [this](double seconds, int64_t samples) {
      metrics_->TrainStep(seconds, samples);
    };
  }
  const std::string remote_checkpoints =
      RemoteCheckpointPrefix(options_.checkpoint_uri, job.id());
  context.emit = [&](v1::JobEvent event) {
    // Stopping, or handed back by the drain: nothing more is stored.
    if (store_failed.load() || handed_back()) return;
    bool update = false;
    if (event.has_train()) {
      const v1::TrainMetrics& t = event.train();
      job.mutable_progress()->set_step(t.step());
      job.mutable_progress()->set_total_steps(t.total_steps());
      job.mutable_progress()->set_epoch(t.epoch());
      update = true;
      if (metrics_ != nullptr) {
        double progress = t.total_steps() > 0 ? static_cast<double>(t.step()) / t.total_steps() : 0;
        metrics_->TrainProgress(job.id(), t.loss(), t.learning_rate(), progress);
      }
    }
    if (event.has_train() && metrics_ != nullptr &&
        event.train().device_memory_reserved_bytes() > 0) {
      metrics_->DeviceMemory(job.id(), event.train().device_memory_allocated_bytes(),
                             event.train().device_memory_reserved_bytes(),
                             event.train().device_memory_peak_bytes());
    }
    if (event.has_eval() && metrics_ != nullptr) {
      metrics_->EvalProgress(job.id(), event.eval().loss(), event.eval().accuracy());
    }
    // Never let a terminal-looking event from the trainer end the stream
    // early: only this function writes state changes.
    if (event.has_state_change()) {
      v1::JobEvent notice;
      notice.mutable_notice()->set_message(event.state_change().message());
      event = std::move(notice);
    }
    // A replica that lost the job uploads no checkpoint over its new
    // owner's.
    if (event.has_checkpoint() && !remote_checkpoints.empty() && !LeaseStillHeld(job.id())) {
      return;
    }
    if (absl::Status s = MirrorCheckpoint(remote_checkpoints, event, options_.uris); !s.ok()) {
      LogError("upload checkpoint", s, job.id());
    }
    event.clear_sequence();
    absl::StatusOr<v1::JobEvent> stored;
    if (absl::Status s = as_runner([&] {
          stored = Append(job, std::move(event), update);
          return absl::OkStatus();
        });
        !s.ok()) {
      return;  // handed back: the run is abandoned and stores nothing more
    }
    if (!stored.ok()) {
      LogError("append event (stopping the job)", stored.status(), job.id());
      store_error = stored.status();
      store_failed_step = job.progress().step();
      store_failed.store(true);
    }
  };

  absl::StatusOr<v1::JobResult> result;
  absl::StatusOr<std::string> output_dir = OutputDir(job);
  std::string checkpoint_dir =
      (std::filesystem::path(options_.data_dir) / "checkpoints" / job.id()).string();
  if (!output_dir.ok()) {
    result = output_dir.status();
  } else if (absl::Status s = MakeDir(checkpoint_dir); !s.ok()) {
    result = s;
  } else if (absl::Status r =
                 RestoreRemoteCheckpoint(remote_checkpoints, checkpoint_dir, options_.uris);
             !r.ok()) {
    result = r;
  } else {
    context.output_dir = *output_dir;
    context.checkpoint_dir = checkpoint_dir;
    result = hooks_.run(job.spec(), context);
    if (result.ok() && !LeaseStillHeld(job.id())) {
      result = absl::AbortedError("another replica took the job over; its output is not published");
    }
    if (result.ok() && OutputIsRemote(job.spec())) {
      if (absl::Status p = PublishOutput(job.id(), job.spec(), *output_dir, options_.uris, *result);
          !p.ok()) {
        result = p;
      }
    }
  }

  if (metrics_ != nullptr) metrics_->JobEnded(job.id());
  if (store_failed.load() && !stop.requested()) {
    result = absl::InternalError(absl::StrCat(
        "the job's events could not be stored (", store_error.message(),
        "); training stopped at step ", store_failed_step));
  }
  absl::Status recorded;
  if (result.ok()) {
    *job.mutable_result() = *result;
    v1::JobEvent result_event;
    *result_event.mutable_result() = *result;
    bool result_stored = false;
    *job.mutable_end_time() = NowTimestamp();
    // Counted before the final event is published, so that whoever sees the
    // event also sees the count.
    if (metrics_ != nullptr) metrics_->JobFinished(metrics::JobStateLabel::kSucceeded);
    recorded = RetryWhileUnwritable(job.id(), "finish", [&] {
      return as_runner([&]() -> absl::Status {
        if (!result_stored) {
          FT_RETURN_IF_ERROR(Append(job, result_event, false).status());
          result_stored = true;
        }
        return Transition(job, v1::JOB_STATE_SUCCEEDED, "succeeded");
      });
    });
  } else if (stop.shutdown.load() && !stop.cancelled.load()) {
    // Not the user's decision: run it again at the next start.
    job.clear_start_time();
    recorded = as_runner([&] {
      return Transition(job, v1::JOB_STATE_QUEUED,
                        "interrupted by server shutdown; re-queued for the next start");
    });
  } else if (stop.cancelled.load() || result.status().code() == absl::StatusCode::kCancelled) {
    *job.mutable_end_time() = NowTimestamp();
    if (metrics_ != nullptr) metrics_->JobFinished(metrics::JobStateLabel::kCancelled);
    recorded = RetryWhileUnwritable(job.id(), "finish", [&] {
      return as_runner(
          [&] { return Transition(job, v1::JOB_STATE_CANCELLED, "cancelled by request"); });
    });
  } else {
    job.set_error_message(std::string(result.status().message()));
    *job.mutable_end_time() = NowTimestamp();
    if (metrics_ != nullptr) metrics_->JobFinished(metrics::JobStateLabel::kFailed);
    recorded = RetryWhileUnwritable(job.id(), "finish", [&] {
      return as_runner(
          [&] { return Transition(job, v1::JOB_STATE_FAILED, job.error_message()); });
    });
  }
  if (handed_back()) return;  // the job's record is the drain's (HandBack)
  if (!recorded.ok()) LogError("finish", recorded, job.id());
  Log(result.ok() || job.state() == v1::JOB_STATE_QUEUED || job.state() == v1::JOB_STATE_CANCELLED
          ? LogLevel::kInfo
          : LogLevel::kWarning,
      absl::StrCat("job ", StateName(job.state())), job.id(),
      {{"last_sequence", absl::StrCat(job.last_sequence())}});
  if (IsTerminal(job.state())) RemoveCheckpoints(job.id());
}

void JobManager::WarnIfStoreLost(const std::string& store_path) {
  // Issue 14.5: an empty store beside finished outputs means the store file
  // was deleted or replaced (every job and its history are gone).
  absl::StatusOr<std::map<v1::JobState, int64_t>> counts = store_->CountJobsByState();
  if (!counts.ok()) return;
  int64_t jobs = 0;
  for (const auto& [state, count] : *counts) jobs += count;
  if (jobs > 0) return;
  const std::filesystem::path outputs = std::filesystem::path(options_.data_dir) / "outputs";
  std::error_code ec;
  int64_t entries = 0;
  for (auto it = std::filesystem::directory_iterator(outputs, ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++entries;
  }
  if (entries == 0) return;
  Log(LogLevel::kError,
      absl::StrCat("THE JOB STORE IS EMPTY but ", outputs.string(), " holds ", entries,
                   " output(s): was ", store_path,
                   " deleted or replaced? Every earlier job and its history are missing; restore "
                   "the store file from a backup before submitting jobs."));
}

void JobManager::ProbeLoop() {
  while (!prober_stop_.WaitForNotificationWithTimeout(options_.store_retry_interval)) {
    if (!store_->writable()) (void)store_->ProbeWrite();
  }
}

absl::Status JobManager::RetryWhileUnwritable(const std::string& job_id, const char* what,
                                              const std::function<absl::Status()>& write) {
  absl::Status status = write();
  bool logged = false;
  while (!status.ok() && !store_->writable() && !shutting_down_.load()) {
    if (!logged) {
      Log(LogLevel::kWarning, absl::StrCat(what, ": waiting for the job store to accept writes"),
          job_id, {{"error", status.ToString()}});
      logged = true;
    }
    if (prober_stop_.WaitForNotificationWithTimeout(options_.store_retry_interval)) break;
    status = write();
  }
  return status;
}

// --- The shared queue ------------------------------------------------------

absl::StatusOr<std::optional<store::Fence>> JobManager::FenceFor(const std::string& job_id,
                                                                 bool release) {
  if (!shared_queue_) return std::optional<store::Fence>();
  absl::MutexLock lock(&leases_mu_);
  auto it = leases_.find(job_id);
  if (it == leases_.end()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "job ", job_id, ": replica ", replica_id_, " holds no lease on it; nothing written"));
  }
  return std::optional<store::Fence>(store::Fence{it->second, release});
}

bool JobManager::HoldsLease(const std::string& job_id) { return LeaseEpoch(job_id) > 0; }

int64_t JobManager::LeaseEpoch(const std::string& job_id) {
  absl::MutexLock lock(&leases_mu_);
  auto it = leases_.find(job_id);
  return it == leases_.end() ? 0 : it->second;
}

bool JobManager::LeaseStillHeld(const std::string& job_id) {
  if (!shared_queue_) return true;
  int64_t epoch = 0;
  {
    absl::MutexLock lock(&leases_mu_);
    auto it = leases_.find(job_id);
    if (it == leases_.end()) return false;
    epoch = it->second;
  }
  absl::StatusOr<bool> renewed = store_->RenewLease(
      store::Kind::kJob, job_id, epoch, NowMicros() + absl::ToInt64Microseconds(options_.lease_duration), nullptr);
  if (!renewed.ok()) {
    // Unknown: the caller goes ahead; the next fenced write decides.
    LogError("check lease", renewed.status(), job_id);
    return true;
  }
  if (!*renewed) LoseLease(job_id, epoch);
  return *renewed;
}

void JobManager::WakeClaimer() {
  absl::MutexLock lock(&wake_mu_);
  wake_ = true;
}

void JobManager::ClaimLoop() {
  while (!shutting_down_.load()) {
    {
      absl::MutexLock lock(&wake_mu_);
      // The timeout is the backstop for a notification lost with the
      // listening connection.
      wake_mu_.AwaitWithTimeout(absl::Condition(&wake_), absl::Seconds(1));
      wake_ = false;
    }
    if (shutting_down_.load()) break;
    absl::StatusOr<std::vector<std::string>> cancels = store_->PendingCancels(replica_id_);
    if (cancels.ok()) {
      for (const std::string& job_id : *cancels) {
        absl::StatusOr<v1::Job> cancelled = Cancel(job_id);
        if (!cancelled.ok() && !absl::IsFailedPrecondition(cancelled.status())) {
          LogError("cancel by request of another replica", cancelled.status(), job_id);
        }
      }
    }
    ClaimWhileIdle();
  }
}

void JobManager::ClaimWhileIdle() {
  while (!shutting_down_.load() && store_->writable()) {
    const Scheduler::IdleSlots idle = scheduler_->IdleSlotsToClaimFor();
    if (idle.cpu == 0 && idle.gpu == 0) return;
    store::ClaimRequest request;
    request.owner = replica_id_;
    request.now_micros = NowMicros();
    request.expires_micros =
        request.now_micros + absl::ToInt64Microseconds(options_.lease_duration);
    request.idle_cpu_slots = idle.cpu;
    request.idle_gpu_slots = idle.gpu;
    request.gpu_devices = options_.scheduler.gpu_devices;
    request.max_running_per_tenant = options_.scheduler.max_running_per_tenant;
    const absl::Time started = absl::Now();
    absl::StatusOr<std::optional<store::ResourceLease>> claimed = store_->ClaimJob(request);
    if (metrics_ != nullptr) metrics_->JobClaim(absl::ToDoubleSeconds(absl::Now() - started));
    if (!claimed.ok()) {
      LogError("claim a job", claimed.status());
      return;
    }
    if (!claimed->has_value()) return;
    Adopt(**claimed, "");
  }
}

void JobManager::Adopt(const store::ResourceLease& lease, const std::string& requeue_message) {
  {
    absl::MutexLock lock(&leases_mu_);
    leases_[lease.id] = lease.epoch;
  }
  absl::StatusOr<v1::Job> job = store_->GetJob(lease.id);
  absl::Status status = job.status();
  if (status.ok() && lease.cancel_requested) {
    *job->mutable_end_time() = NowTimestamp();
    status = Transition(*job, v1::JOB_STATE_CANCELLED, "cancelled by request");
    if (status.ok()) {
      if (metrics_ != nullptr) metrics_->JobFinished(metrics::JobStateLabel::kCancelled);
      Log(LogLevel::kInfo, "job CANCELLED (asked while no replica ran it)", lease.id);
      RemoveCheckpoints(lease.id);
    }
  } else if (status.ok() && !requeue_message.empty()) {
    job->clear_start_time();
    status = Transition(*job, v1::JOB_STATE_QUEUED, requeue_message);
    if (status.ok()) Log(LogLevel::kWarning, absl::StrCat("job ", requeue_message), lease.id);
  } else if (status.ok()) {
    status = scheduler_->Enqueue(job->id(), job->spec().priority(), /*force=*/true,
                                 absl::FromUnixMicros(ToMicros(job->create_time())), job->tenant(),
                                 job->spec().device(), Ranks(job->spec()));
    if (status.ok()) {
      Log(LogLevel::kInfo, "job claimed", lease.id,
          {{"replica", replica_id_}, {"lease_epoch", absl::StrCat(lease.epoch)}});
      return;
    }
  }
  if (status.ok()) return;
  LogError("take a claimed job", status, lease.id);
  ReleaseLeaseIfHeld(lease.id);
}

void JobManager::ReleaseLeaseIfHeld(const std::string& job_id) {
  int64_t epoch = 0;
  {
    absl::MutexLock lock(&leases_mu_);
    auto it = leases_.find(job_id);
    if (it == leases_.end()) return;
    epoch = it->second;
    leases_.erase(it);
  }
  if (absl::StatusOr<bool> released = store_->ReleaseLease(store::Kind::kJob, job_id, epoch); !released.ok()) {
    LogError("release lease", released.status(), job_id);
  }
}

void JobManager::KeepLeases() {
  do {
    const int64_t now = NowMicros();
    const int64_t expires = now + absl::ToInt64Microseconds(options_.lease_duration);
    std::map<std::string, int64_t> held;
    {
      absl::MutexLock lock(&leases_mu_);
      held = leases_;
    }
    for (const auto& [job_id, epoch] : held) {
      bool cancel_requested = false;
      absl::StatusOr<bool> renewed =
          store_->RenewLease(store::Kind::kJob, job_id, epoch, expires, &cancel_requested);
      if (metrics_ != nullptr) {
        metrics_->LeaseRenewal(!renewed.ok() ? "error" : *renewed ? "renewed" : "lost");
      }
      if (!renewed.ok()) {
        // Retried at the next tick; if the store stays out of reach the
        // lease expires and the fence stops this replica's writes.
        LogError("renew lease", renewed.status(), job_id);
      } else if (!*renewed) {
        LoseLease(job_id, epoch);
      } else if (cancel_requested) {
        WakeClaimer();
      }
    }
    if (shutting_down_.load()) continue;
    absl::StatusOr<std::vector<store::ResourceLease>> taken =
        store_->TakeExpiredLeases(replica_id_, now, expires);
    if (!taken.ok()) {
      LogError("take over expired leases", taken.status());
      continue;
    }
    for (const store::ResourceLease& lease : *taken) {
      if (metrics_ != nullptr) metrics_->LeaseTakeover();
      Adopt(lease, absl::StrCat("re-queued: the lease of replica ",
                                lease.previous_owner.empty() ? "(none)" : lease.previous_owner,
                                " expired; the next run resumes from the last checkpoint"));
    }
  } while (!keeper_stop_.WaitForNotificationWithTimeout(options_.lease_renew_interval));
}

void JobManager::LoseLease(const std::string& job_id, int64_t epoch) {
  {
    absl::MutexLock lock(&leases_mu_);
    auto it = leases_.find(job_id);
    // Released meanwhile (the job ended), or a newer lease: nothing lost.
    if (it == leases_.end() || it->second != epoch) return;
    leases_.erase(it);
  }
  Log(LogLevel::kWarning,
      "lease lost: another replica took the job over; its run here stops and stores nothing",
      job_id, {{"lease_epoch", absl::StrCat(epoch)}});
  std::shared_ptr<RunGuard> guard;
  {
    absl::MutexLock lock(&runs_mu_);
    auto it = runs_.find(job_id);
    if (it != runs_.end()) guard = it->second;
  }
  if (guard != nullptr) {
    absl::MutexLock lock(&guard->mu);
    guard->handed_back = true;
  }
  scheduler_->Cancel(job_id);  // stops the run, or drops it from the local queue
}

void JobManager::RemoveCheckpoints(const std::string& job_id) {
  // Nothing can resume a finished job, so its checkpoints are only disk use.
  if (absl::Status s = RemoveRemoteCheckpoints(
          RemoteCheckpointPrefix(options_.checkpoint_uri, job_id), options_.uris);
      !s.ok()) {
    LogError("remove remote checkpoints", s, job_id);
  }
  std::error_code ec;
  std::filesystem::remove_all(
      std::filesystem::path(options_.data_dir) / "checkpoints" / job_id, ec);
  if (ec) LogError("remove checkpoints", absl::InternalError(ec.message()), job_id);
}

}  // namespace freezetune::jobs
