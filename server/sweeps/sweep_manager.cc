#include "server/sweeps/sweep_manager.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <system_error>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "google/protobuf/util/json_util.h"
#include "server/base/ids.h"
#include "server/base/log.h"
#include "server/common/status_macros.h"
#include "server/jobs/path_policy.h"

namespace freezetune::sweeps {
namespace {

using store::NowTimestamp;
using store::ToMicros;

constexpr int kMaxDisplayNameLength = 256;
constexpr int kMaxClientRequestIdLength = 128;

const char* MetricsStateName(v1::SweepState state) {
  switch (state) {
    case v1::SWEEP_STATE_RUNNING: return "running";
    case v1::SWEEP_STATE_SUCCEEDED: return "succeeded";
    case v1::SWEEP_STATE_FAILED: return "failed";
    case v1::SWEEP_STATE_CANCELLED: return "cancelled";
    default: return nullptr;
  }
}

// Copies the winner's output directory `from` into `to`; empty on success,
// else why not.
std::string CopyOutput(const std::string& from, const std::string& to) {
  std::error_code ec;
  std::filesystem::create_directories(to, ec);
  if (!ec) {
    std::filesystem::copy(from, to,
                          std::filesystem::copy_options::recursive |
                              std::filesystem::copy_options::overwrite_existing,
                          ec);
  }
  if (!ec) return "";
  return absl::StrCat("copying the winner's output ", from, " to ", to, ": ", ec.message());
}

// sweep.json: the final sweep with its table, also for a failed sweep.
void WriteSweepJson(const v1::Sweep& sweep, const std::string& output_dir) {
  std::error_code ec;
  std::filesystem::create_directories(output_dir, ec);
  std::string json;
  google::protobuf::util::JsonPrintOptions print;
  print.add_whitespace = true;
  print.preserve_proto_field_names = true;
  print.always_print_primitive_fields = true;
  if (google::protobuf::util::MessageToJsonString(sweep, &json, print).ok()) {
    std::ofstream out(std::filesystem::path(output_dir) / "sweep.json", std::ios::trunc);
    out << json;
  }
}

std::string LocalPath(std::string uri) {
  if (absl::StartsWith(uri, "file://")) uri = uri.substr(7);
  return uri;
}

}  // namespace

SweepManager::SweepManager(jobs::JobManager* jobs, const SweepManagerOptions& options,
                           metrics::Metrics* metrics)
    : jobs_(jobs),
      store_(jobs->store()),
      options_(options),
      metrics_(metrics),
      shared_(store_->shared_queue()) {}

absl::StatusOr<std::unique_ptr<SweepManager>> SweepManager::Create(
    jobs::JobManager* jobs, const SweepManagerOptions& options, metrics::Metrics* metrics) {
  std::unique_ptr<SweepManager> manager(new SweepManager(jobs, options, metrics));
  FT_RETURN_IF_ERROR(manager->Load());
  FT_RETURN_IF_ERROR(manager->CancelOrphanTrials());
  manager->monitor_ = std::thread([m = manager.get()] { m->MonitorLoop(); });
  return manager;
}

SweepManager::~SweepManager() { Shutdown(); }

void SweepManager::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (monitor_.joinable()) monitor_.join();
  if (shared_) {
    // Another replica may drive them now rather than when the leases expire.
    std::map<std::string, std::shared_ptr<Running>> running;
    {
      absl::MutexLock lock(&mu_);
      running.swap(running_);
    }
    for (const auto& [id, run] : running) {
      absl::MutexLock lock(&run->mu);
      if (!run->ended) (void)store_->ReleaseLease(store::Kind::kSweep, id, run->lease_epoch);
    }
  }
  // Wake every watcher so that one which has caught up sees stopped() and
  // ends now instead of waiting for events that will not come.
  stopped_.store(true);
  store_->NotifyAll();
}

std::shared_ptr<SweepManager::Running> SweepManager::Track(const v1::Sweep& sweep,
                                                          int64_t lease_epoch) {
  auto run = std::make_shared<Running>();
  {
    absl::MutexLock lock(&run->mu);
    run->sweep = sweep;
    run->seen_job_sequence.assign(sweep.trials_size(), 0);
    run->halving = HalvingPolicy(sweep.spec().successive_halving(), sweep.lower_is_better(),
                                 sweep.trials_size());
    run->lease_epoch = lease_epoch;
    // What the ended trials of a halving sweep reached at each rung is
    // rebuilt from their events once, so running trials are judged against
    // it; running trials fold their own events as the monitor polls.
    if (sweep.spec().has_successive_halving()) {
      for (int i = 0; i < sweep.trials_size(); ++i) {
        if (TrialEnded(sweep.trials(i).state())) FoldEvents(*run, i);
      }
    }
  }
  absl::MutexLock lock(&mu_);
  running_[sweep.id()] = run;
  return run;
}

std::shared_ptr<SweepManager::Running> SweepManager::FindRunning(const std::string& sweep_id) {
  absl::MutexLock lock(&mu_);
  auto it = running_.find(sweep_id);
  return it == running_.end() ? nullptr : it->second;
}

absl::Status SweepManager::Load() {
  FT_ASSIGN_OR_RETURN(std::vector<v1::Sweep> running,
                      store_->SweepsInStates({v1::SWEEP_STATE_RUNNING}));
  // A shared queue's sweeps are claimed by the monitor, one driver each.
  if (!shared_) {
    for (const v1::Sweep& sweep : running) Track(sweep);
  }
  FT_ASSIGN_OR_RETURN(auto counts, store_->CountSweepsByState());
  {
    absl::MutexLock lock(&mu_);
    counts_ = std::move(counts);
  }
  UpdateMetrics(nullptr);
  if (!shared_) {
    for (const v1::Sweep& sweep : running) UpdateMetrics(&sweep);
  }
  return absl::OkStatus();
}

void SweepManager::ClaimSweeps() {
  const absl::Time now = absl::Now();
  absl::StatusOr<std::vector<store::ResourceLease>> claimed = store_->ClaimSweeps(
      jobs_->replica_id(), absl::ToUnixMicros(now),
      absl::ToUnixMicros(now + jobs_->options().lease_duration));
  if (!claimed.ok()) {
    base::Log(base::LogLevel::kError,
              absl::StrCat("claim sweeps: ", claimed.status().ToString()));
    return;
  }
  for (const store::ResourceLease& lease : *claimed) {
    if (metrics_ != nullptr && !lease.previous_owner.empty()) metrics_->LeaseTakeover();
    absl::StatusOr<v1::Sweep> sweep = store_->GetSweep(lease.id);
    if (!sweep.ok()) {
      (void)store_->ReleaseLease(store::Kind::kSweep, lease.id, lease.epoch);
      continue;
    }
    Track(*sweep, lease.epoch);
    UpdateMetrics(&*sweep);
    base::Log(base::LogLevel::kInfo, "sweep driven by this replica", {},
              {{"sweep_id", lease.id}, {"replica", jobs_->replica_id()},
               {"previous_driver", lease.previous_owner.empty() ? "(none)" : lease.previous_owner}});
    if (lease.cancel_requested) Cancel(lease.id).IgnoreError();
  }
}

void SweepManager::KeepLeases() {
  std::vector<std::shared_ptr<Running>> running;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [id, run] : running_) running.push_back(run);
  }
  const absl::Time expires = absl::Now() + jobs_->options().lease_duration;
  for (const std::shared_ptr<Running>& run : running) {
    std::string id;
    bool cancel_requested = false;
    absl::StatusOr<bool> renewed;
    {
      absl::MutexLock lock(&run->mu);
      if (run->ended) continue;
      id = run->sweep.id();
      renewed = store_->RenewLease(store::Kind::kSweep, id, run->lease_epoch,
                                   absl::ToUnixMicros(expires), &cancel_requested);
    }
    if (metrics_ != nullptr) {
      metrics_->LeaseRenewal(!renewed.ok() ? "error" : *renewed ? "renewed" : "lost");
    }
    if (!renewed.ok()) continue;  // retried next time; the lease may expire
    if (!*renewed) {
      base::Log(base::LogLevel::kWarning, "sweep lease lost: another replica drives it now", {},
                {{"sweep_id", id}});
      absl::MutexLock lock(&mu_);
      running_.erase(id);
      continue;
    }
    if (cancel_requested) Cancel(id).IgnoreError();
  }
  ClaimSweeps();
}

absl::Status SweepManager::CancelOrphanTrials() {
  FT_ASSIGN_OR_RETURN(
      std::vector<v1::Job> unfinished,
      store_->JobsInStates({v1::JOB_STATE_QUEUED, v1::JOB_STATE_RUNNING}));
  for (const v1::Job& job : unfinished) {
    if (job.sweep_id().empty()) continue;
    absl::StatusOr<v1::Sweep> sweep = store_->GetSweep(job.sweep_id());
    if (!absl::IsNotFound(sweep.status())) continue;
    base::Log(base::LogLevel::kWarning, "cancelling an orphan trial: its sweep does not exist",
              job.id(), {{"sweep_id", job.sweep_id()}});
    jobs_->Cancel(job.id()).IgnoreError();
  }
  return absl::OkStatus();
}

void SweepManager::UpdateMetrics(const v1::Sweep* changed) {
  if (metrics_ == nullptr) return;
  {
    absl::MutexLock lock(&mu_);
    for (v1::SweepState s : {v1::SWEEP_STATE_RUNNING, v1::SWEEP_STATE_SUCCEEDED,
                             v1::SWEEP_STATE_FAILED, v1::SWEEP_STATE_CANCELLED}) {
      auto it = counts_.find(s);
      metrics_->SetSweepsInState(MetricsStateName(s), it == counts_.end() ? 0 : it->second);
    }
  }
  if (changed == nullptr) return;
  const v1::Sweep& sweep = *changed;
  if (sweep.state() != v1::SWEEP_STATE_RUNNING) {
    metrics_->SweepEnded(sweep.id());
    return;
  }
  int64_t done = 0;
  bool has_best = false;
  double best = 0;
  for (const v1::SweepTrial& t : sweep.trials()) {
    done += TrialEnded(t.state());
    if (!t.has_best()) continue;
    if (!has_best || Better(t.best_metric(), best, sweep.lower_is_better())) best = t.best_metric();
    has_best = true;
  }
  metrics_->SweepProgress(sweep.id(), done, sweep.trials_size(), has_best, best);
}

void SweepManager::Emit(Running& run, v1::SweepEvent event) {
  // The final event ends this replica's lease.
  const store::Fence fence{run.lease_epoch, event.has_result()};
  absl::StatusOr<v1::SweepEvent> stored = store_->AppendSweepEvent(
      run.sweep.id(), std::move(event), &run.sweep, shared_ ? &fence : nullptr);
  if (!stored.ok()) {
    base::Log(base::LogLevel::kError, absl::StrCat("store sweep event: ", stored.status().ToString()),
              {}, {{"sweep_id", run.sweep.id()}});
    return;
  }
  run.sweep.set_last_sequence(stored->sequence());
  UpdateMetrics(&run.sweep);
}

void SweepManager::Ended(Running& run, v1::SweepState from) {
  run.ended = true;
  {
    absl::MutexLock lock(&mu_);
    --counts_[from];
    ++counts_[run.sweep.state()];
    running_.erase(run.sweep.id());
  }
  UpdateMetrics(&run.sweep);
  if (options_.sweep_ended) options_.sweep_ended(run.sweep);
}

absl::StatusOr<v1::Sweep> SweepManager::Submit(const v1::SweepSpec& spec,
                                               const std::string& tenant, absl::Time deadline) {
  if (!spec.has_job()) return absl::InvalidArgumentError("sweep.job: required");
  if (spec.job().has_notify()) {
    return absl::InvalidArgumentError(
        "sweep.job.notify: trials do not call back; set sweep.notify for the sweep's end");
  }
  if (spec.display_name().size() > kMaxDisplayNameLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("sweep.display_name: at most ", kMaxDisplayNameLength, " characters"));
  }
  if (spec.client_request_id().size() > kMaxClientRequestIdLength) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sweep.client_request_id: at most ", kMaxClientRequestIdLength, " characters"));
  }
  // A retry returns the first sweep even if its inputs changed since.
  FT_ASSIGN_OR_RETURN(std::optional<v1::Sweep> existing,
                      store_->FindSweepByClientRequestId(tenant, spec.client_request_id()));
  if (existing.has_value()) return *std::move(existing);

  FT_ASSIGN_OR_RETURN(std::vector<Candidate> candidates, ExpandCandidates(spec));
  FT_ASSIGN_OR_RETURN(Selection selection, ResolveSelection(spec));
  if (spec.has_successive_halving()) FT_RETURN_IF_ERROR(ValidateHalving(spec.successive_halving()));
  if (spec.has_notify()) {
    FT_RETURN_IF_ERROR(jobs_->ValidateNotify(spec.notify(), tenant, "sweep.notify"));
  }

  v1::Sweep sweep;
  sweep.set_id(base::NewId("sweep"));
  *sweep.mutable_spec() = spec;
  sweep.set_state(v1::SWEEP_STATE_RUNNING);
  *sweep.mutable_create_time() = NowTimestamp();
  sweep.set_selection_metric(selection.metric);
  sweep.set_lower_is_better(selection.lower_is_better);
  sweep.set_winner_index(-1);
  sweep.set_tenant(tenant);

  // Validate every candidate before storing anything.
  std::vector<v1::FineTuneJob> trial_specs;
  for (const Candidate& c : candidates) {
    v1::FineTuneJob job = spec.job();
    *job.mutable_freeze() = c.freeze;
    if (c.learning_rate.has_value()) {
      job.mutable_hyperparameters()->set_learning_rate(*c.learning_rate);
    }
    job.clear_output_uri();
    job.clear_client_request_id();
    job.set_display_name(absl::StrCat(spec.display_name().empty() ? sweep.id()
                                                                  : spec.display_name(),
                                      " ", c.label));
    absl::Status valid = jobs_->Validate(job, tenant);
    if (!valid.ok()) {
      return absl::Status(valid.code(), absl::StrCat(c.field, ": ", valid.message()));
    }
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError("validating the sweep took longer than the deadline");
    }
    v1::PlanFreezeRequest plan_request;
    plan_request.set_model_uri(job.model_uri());
    *plan_request.mutable_freeze() = job.freeze();
    *plan_request.mutable_task() = job.task();
    absl::StatusOr<v1::PlanFreezeResponse> plan =
        jobs_->PlanFreeze(plan_request, tenant, deadline);
    if (!plan.ok()) {
      return absl::Status(plan.status().code(),
                          absl::StrCat(c.field, ": ", plan.status().message()));
    }
    v1::SweepTrial* trial = sweep.add_trials();
    trial->set_label(c.label);
    trial->set_frozen_depth(c.freeze.has_head_only() ? plan->num_layers() : c.depth);
    *trial->mutable_freeze() = c.freeze;
    trial->set_learning_rate(job.hyperparameters().learning_rate());
    trial->set_lora_rank(c.freeze.has_lora() ? c.freeze.lora().rank() : 0);
    trial->set_state(v1::TRIAL_STATE_PENDING);
    trial->set_trainable_parameters(plan->trainable_parameters());
    trial->set_total_parameters(plan->total_parameters());
    trial_specs.push_back(std::move(job));
  }

  // Checked as a job's output is (path_policy.h), claimed with the sweep;
  // created when the winner is copied there.
  FT_ASSIGN_OR_RETURN(const std::string output_dir,
                      jobs_->PlanOutput(spec.output_uri(), tenant, sweep.id(), "sweep.output_uri"));
  sweep.set_output_uri(absl::StrCat("file://", output_dir));

  // Queued shallowest first (the table keeps candidate order).
  const std::vector<int> order = SubmitOrder(sweep);
  std::vector<v1::FineTuneJob> ordered_specs;
  for (int i : order) ordered_specs.push_back(trial_specs[i]);
  FT_ASSIGN_OR_RETURN(jobs::JobManager::NewJobs new_jobs,
                      jobs_->NewJobRecords(ordered_specs, tenant, sweep.id()));
  const std::vector<v1::Job>& trials = new_jobs.jobs;
  for (size_t n = 0; n < order.size(); ++n) sweep.mutable_trials(order[n])->set_job_id(trials[n].id());

  // The sweep's output and its trials' are claimed in the transaction that
  // stores them: a crash leaves no claim without its owner.
  std::vector<store::OutputClaim> claims = std::move(new_jobs.claims);
  claims.insert(claims.begin(), store::OutputClaim{output_dir, sweep.id(), tenant});
  v1::SweepEvent first;
  *first.mutable_table() = sweep;
  FT_ASSIGN_OR_RETURN(store::Store::CreateSweepResult created,
                      store_->CreateSweep(sweep, first, trials, jobs::JobManager::QueuedEvent(),
                                          claims, jobs_->StoreQueueLimits()));
  if (created.output_conflict.has_value()) {
    return jobs::PathPolicy::ClaimConflict("sweep.output_uri", output_dir,
                                           *created.output_conflict);
  }
  if (created.queue_full.has_value()) {
    return jobs_->QueueFullError(tenant, *created.queue_full, trials.size());
  }
  if (!created.created) return std::move(created.sweep);  // a concurrent retry won
  jobs_->EnqueueStored(trials);
  {
    absl::MutexLock lock(&mu_);
    ++counts_[v1::SWEEP_STATE_RUNNING];
  }
  if (shared_) {
    ClaimSweeps();  // most likely this one; else another replica drives it
  } else {
    Track(created.sweep);
    UpdateMetrics(&created.sweep);
  }
  base::Log(base::LogLevel::kInfo, "sweep submitted", {},
            {{"sweep_id", sweep.id()}, {"trials", absl::StrCat(sweep.trials_size())},
             {"tenant", tenant}});
  return std::move(created.sweep);
}

absl::StatusOr<v1::Sweep> SweepManager::Get(const std::string& sweep_id) {
  return store_->GetSweep(sweep_id);
}

absl::StatusOr<v1::Sweep> SweepManager::Cancel(const std::string& sweep_id) {
  std::shared_ptr<Running> run = FindRunning(sweep_id);
  auto already = [](const v1::Sweep& sweep) {
    return absl::FailedPreconditionError(absl::StrCat(
        "sweep ", sweep.id(), " already ", v1::SweepState_Name(sweep.state())));
  };
  if (run == nullptr) {
    FT_ASSIGN_OR_RETURN(v1::Sweep sweep, store_->GetSweep(sweep_id));
    if (!shared_ || sweep.state() != v1::SWEEP_STATE_RUNNING) return already(sweep);
    // Another replica drives it: its trials stop now (any replica can
    // cancel a job), and the driver records the sweep CANCELLED.
    for (const v1::SweepTrial& trial : sweep.trials()) {
      if (!TrialEnded(trial.state())) jobs_->Cancel(trial.job_id()).IgnoreError();
    }
    FT_RETURN_IF_ERROR(store_->RequestCancel(store::Kind::kSweep, sweep_id));
    return store_->GetSweep(sweep_id);
  }
  absl::MutexLock lock(&run->mu);
  if (run->ended) return already(run->sweep);
  for (v1::SweepTrial& trial : *run->sweep.mutable_trials()) {
    if (TrialEnded(trial.state())) continue;
    absl::StatusOr<v1::Job> job = jobs_->Cancel(trial.job_id());
    if (job.ok() && job->state() == v1::JOB_STATE_CANCELLED) {
      trial.set_state(v1::TRIAL_STATE_CANCELLED);
    }
  }
  const v1::SweepState from = run->sweep.state();
  run->sweep.set_state(v1::SWEEP_STATE_CANCELLED);
  *run->sweep.mutable_end_time() = NowTimestamp();
  v1::SweepEvent event;
  *event.mutable_result() = run->sweep;
  Emit(*run, std::move(event));
  Ended(*run, from);
  return run->sweep;
}

absl::StatusOr<std::vector<v1::SweepEvent>> SweepManager::ReadEvents(const std::string& sweep_id,
                                                                     int64_t after_sequence,
                                                                     int limit) {
  FT_ASSIGN_OR_RETURN(std::vector<v1::SweepEvent> events,
                      store_->ReadSweepEvents(sweep_id, after_sequence, limit));
  if (events.empty()) FT_RETURN_IF_ERROR(store_->GetSweep(sweep_id).status());
  return events;
}

void SweepManager::MonitorLoop() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&stop_), options_.poll_interval)) return;
    }
    if (shared_ && absl::Now() >= next_lease_tick_) {
      next_lease_tick_ = absl::Now() + jobs_->options().lease_renew_interval;
      KeepLeases();
    }
    std::vector<std::shared_ptr<Running>> running;
    {
      absl::MutexLock lock(&mu_);
      for (const auto& [id, run] : running_) running.push_back(run);
    }
    // No manager lock from here on: each sweep under its own writer lock.
    for (const std::shared_ptr<Running>& run : running) {
      absl::MutexLock lock(&run->mu);
      if (!run->ended) Poll(*run);
    }
  }
}

bool SweepManager::FoldEvents(Running& run, int i) {
  v1::SweepTrial& trial = *run.sweep.mutable_trials(i);
  absl::StatusOr<std::vector<v1::JobEvent>> events =
      jobs_->ReadEvents(trial.job_id(), run.seen_job_sequence[i], 0);
  if (!events.ok()) return false;
  const bool lower = run.sweep.lower_is_better();
  bool improved = false;
  for (const v1::JobEvent& e : *events) {
    run.seen_job_sequence[i] = e.sequence();
    if (!e.has_eval()) continue;
    double value = 0;
    SweepMetricValue(e.eval(), run.sweep.selection_metric(), &value);
    if (!trial.has_best() || Better(value, trial.best_metric(), lower)) {
      trial.set_has_best(true);
      trial.set_best_metric(value);
      trial.set_best_step(e.eval().step());
      improved = true;
    }
    std::optional<HalvingPolicy::Prune> prune = run.halving.Observe(
        i, trial.best_metric(), e.eval().step(), TrialEnded(trial.state()));
    if (!prune.has_value()) continue;
    // FAILED_PRECONDITION: the job ended on its own before this poll saw
    // it; its row then follows the job's state.
    if (!jobs_->Cancel(trial.job_id()).ok()) break;
    run.halving.Pruned(i);
    trial.set_state(v1::TRIAL_STATE_PRUNED);
    trial.set_pruned_at_step(prune->rung_step);
    trial.set_error_message(absl::StrCat(
        "pruned by successive halving at rung step ", prune->rung_step, ": ",
        run.sweep.selection_metric(), " ", trial.best_metric(), " is not in the top ", prune->keep,
        " of ", prune->reached));
    v1::SweepEvent event;
    event.mutable_trial()->set_index(i);
    *event.mutable_trial()->mutable_trial() = trial;
    Emit(run, std::move(event));
    break;
  }
  return improved;
}

void SweepManager::Poll(Running& run) {
  const std::string& metric = run.sweep.selection_metric();
  const bool lower = run.sweep.lower_is_better();
  bool improved = false;
  for (int i = 0; i < run.sweep.trials_size(); ++i) {
    v1::SweepTrial& trial = *run.sweep.mutable_trials(i);
    if (TrialEnded(trial.state())) continue;
    absl::StatusOr<v1::Job> job = jobs_->Get(trial.job_id());
    if (!job.ok()) continue;
    improved = FoldEvents(run, i) || improved;
    if (TrialEnded(trial.state())) continue;  // pruned just now
    const v1::TrialState state = TrialStateForJob(*job, trial.state());
    if (job->has_start_time()) {
      absl::Time start = absl::FromUnixMicros(ToMicros(job->start_time()));
      absl::Time end = job->has_end_time() ? absl::FromUnixMicros(ToMicros(job->end_time()))
                                           : absl::Now();
      trial.set_wall_seconds(absl::ToDoubleSeconds(end - start));
    }
    if (job->state() == v1::JOB_STATE_SUCCEEDED && job->result().has_best_eval()) {
      double value = 0;
      SweepMetricValue(job->result().best_eval(), metric, &value);
      if (!trial.has_best() || Better(value, trial.best_metric(), lower)) {
        trial.set_has_best(true);
        trial.set_best_metric(value);
        trial.set_best_step(job->result().best_eval().step());
        improved = true;
      }
    }
    if (state != trial.state()) {
      trial.set_state(state);
      trial.set_error_message(job->error_message());
      v1::SweepEvent event;
      event.mutable_trial()->set_index(i);
      *event.mutable_trial()->mutable_trial() = trial;
      Emit(run, std::move(event));
    }
  }
  if (improved) {
    v1::SweepEvent event;
    *event.mutable_table() = run.sweep;
    Emit(run, std::move(event));
  }
  bool all_ended = true;
  for (const v1::SweepTrial& t : run.sweep.trials()) all_ended = all_ended && TrialEnded(t.state());
  if (all_ended) Finish(run);
}

void SweepManager::Finish(Running& run) {
  v1::Sweep& sweep = run.sweep;
  std::vector<v1::SweepTrial> rows(sweep.trials().begin(), sweep.trials().end());
  const int winner = PickSweepWinner(rows, sweep.lower_is_better());
  sweep.set_winner_index(winner);
  *sweep.mutable_end_time() = NowTimestamp();
  const std::string output_dir = LocalPath(sweep.output_uri());
  std::string error;
  if (winner < 0) {
    error = "no trial succeeded with an evaluation";
  } else {
    absl::StatusOr<v1::Job> job = jobs_->Get(sweep.trials(winner).job_id());
    error = job.ok() ? CopyOutput(LocalPath(job->result().output_uri()), output_dir)
                     : std::string(job.status().message());
  }
  const v1::SweepState from = sweep.state();
  sweep.set_state(error.empty() ? v1::SWEEP_STATE_SUCCEEDED : v1::SWEEP_STATE_FAILED);
  sweep.set_error_message(error);
  WriteSweepJson(sweep, output_dir);
  v1::SweepEvent event;
  *event.mutable_result() = sweep;
  Emit(run, std::move(event));
  Ended(run, from);
}

absl::StatusOr<v1::ListSweepsResponse> SweepManager::List(const v1::ListSweepsRequest& request,
                                                           std::optional<std::string> tenant) {
  FT_ASSIGN_OR_RETURN(store::ListQuery query,
                      store::MakeListQuery(request.page_size(), request.page_token(),
                                           request.states(), &v1::SweepState_IsValid, "sweep",
                                           std::move(tenant)));
  return store_->ListSweeps(query);
}

store::Store::SubscriptionId SweepManager::Subscribe(const std::string& sweep_id,
                                                     std::function<void()> on_new_events) {
  return store_->Subscribe(store::Kind::kSweep, sweep_id, std::move(on_new_events));
}

void SweepManager::Unsubscribe(store::Store::SubscriptionId id) { store_->Unsubscribe(id); }

size_t SweepManager::subscriber_count() const {
  return store_->subscriber_count(store::Kind::kSweep);
}

size_t SweepManager::subscriber_count(const std::string& sweep_id) const {
  return store_->subscriber_count(store::Kind::kSweep, sweep_id);
}

}  // namespace freezetune::sweeps
