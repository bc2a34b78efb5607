#include "server/jobs/sweep_manager.h"

#include <sqlite3.h>

#include <algorithm>
#include <filesystem>
#include <limits>
#include <map>
#include <fstream>
#include <system_error>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "google/protobuf/util/json_util.h"
#include "server/common/status_macros.h"
#include "server/jobs/job_store.h"
#include "server/jobs/page_token.h"

namespace freezetune::jobs {
namespace {

constexpr int kMaxDisplayNameLength = 256;

std::string NewSweepId() {
  static absl::Mutex mu(absl::kConstInit);
  static absl::BitGen* gen = new absl::BitGen();
  absl::MutexLock lock(&mu);
  uint64_t bits = absl::Uniform<uint64_t>(*gen);
  return absl::StrFormat("sweep-%012x", bits & 0xffffffffffffULL);
}

bool Ended(v1::SweepState state) {
  return state == v1::SWEEP_STATE_SUCCEEDED || state == v1::SWEEP_STATE_FAILED ||
         state == v1::SWEEP_STATE_CANCELLED;
}

bool TrialEnded(v1::TrialState state) {
  return state == v1::TRIAL_STATE_FINISHED || state == v1::TRIAL_STATE_STOPPED_EARLY ||
         state == v1::TRIAL_STATE_FAILED || state == v1::TRIAL_STATE_CANCELLED ||
         state == v1::TRIAL_STATE_PRUNED;
}

constexpr int kDefaultReductionFactor = 2;
constexpr int kMaxReductionFactor = 16;

absl::Status ValidateHalving(const v1::SuccessiveHalving& halving) {
  const std::string field = "sweep.successive_halving";
  if (halving.rung_steps_size() == 0) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".rung_steps: at least one rung "
                                                   "required (leave successive_halving unset "
                                                   "to run every trial to its end)"));
  }
  for (int r = 0; r < halving.rung_steps_size(); ++r) {
    const int64_t step = halving.rung_steps(r);
    if (step < 1 || (r > 0 && step <= halving.rung_steps(r - 1))) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, ".rung_steps[", r, "]: ", step, " must be >= 1 and above the previous rung"));
    }
  }
  if (halving.reduction_factor() != 0 && (halving.reduction_factor() < 2 ||
                                          halving.reduction_factor() > kMaxReductionFactor)) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".reduction_factor: ",
                                                   halving.reduction_factor(), " is outside [2, ",
                                                   kMaxReductionFactor, "]"));
  }
  return absl::OkStatus();
}

bool Better(double a, double b, bool lower_is_better) { return lower_is_better ? a < b : a > b; }

struct Candidate {
  std::string field;  // e.g. "sweep.freeze_depths[1]"
  std::string label;
  int32_t depth;
  v1::FreezeSpec freeze;
};

absl::Status Sqlite(sqlite3* db, int rc, const char* what) {
  if (rc == SQLITE_OK || rc == SQLITE_DONE || rc == SQLITE_ROW) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("sweep store: ", what, ": ", sqlite3_errmsg(db)));
}

absl::Status Exec(sqlite3* db, const char* sql) {
  char* err = nullptr;
  int rc = sqlite3_exec(db, sql, nullptr, nullptr, &err);
  if (rc != SQLITE_OK) {
    std::string message = err != nullptr ? err : "error";
    sqlite3_free(err);
    return absl::InternalError(absl::StrCat("sweep store: ", message));
  }
  return absl::OkStatus();
}

}  // namespace

bool SweepMetricValue(const v1::EvalMetrics& eval, const std::string& metric, double* value) {
  if (metric == "accuracy") *value = eval.accuracy();
  else if (metric == "macro_f1") *value = eval.macro_f1();
  else if (metric == "mcc") *value = eval.mcc();
  else if (metric == "loss") *value = eval.loss();
  else if (metric == "mse") *value = eval.mse();
  else if (metric == "pearson") *value = eval.pearson();
  else if (metric == "spearman") *value = eval.spearman();
  else return false;
  return true;
}

bool SweepMetricLowerIsBetter(const std::string& metric) {
  return metric == "loss" || metric == "mse";
}

int PickSweepWinner(const std::vector<v1::SweepTrial>& trials, bool lower_is_better) {
  int winner = -1;
  for (int i = 0; i < static_cast<int>(trials.size()); ++i) {
    const v1::SweepTrial& t = trials[i];
    if (!t.has_best()) continue;
    if (t.state() != v1::TRIAL_STATE_FINISHED && t.state() != v1::TRIAL_STATE_STOPPED_EARLY) {
      continue;
    }
    if (winner < 0) {
      winner = i;
      continue;
    }
    const v1::SweepTrial& w = trials[winner];
    bool better = lower_is_better ? t.best_metric() < w.best_metric()
                                  : t.best_metric() > w.best_metric();
    bool tie = t.best_metric() == w.best_metric();
    if (better || (tie && t.trainable_parameters() < w.trainable_parameters())) winner = i;
  }
  return winner;
}

SweepManager::SweepManager(JobManager* jobs, const SweepManagerOptions& options,
                           metrics::Metrics* metrics)
    : jobs_(jobs), options_(options), metrics_(metrics) {}

void SweepManager::UpdateMetrics(const Entry* changed) {
  if (metrics_ == nullptr) return;
  int64_t running = 0, succeeded = 0, failed = 0, cancelled = 0;
  for (const auto& [id, entry] : sweeps_) {
    switch (entry.sweep.state()) {
      case v1::SWEEP_STATE_RUNNING: ++running; break;
      case v1::SWEEP_STATE_SUCCEEDED: ++succeeded; break;
      case v1::SWEEP_STATE_FAILED: ++failed; break;
      case v1::SWEEP_STATE_CANCELLED: ++cancelled; break;
      default: break;
    }
  }
  metrics_->SetSweepsInState("running", running);
  metrics_->SetSweepsInState("succeeded", succeeded);
  metrics_->SetSweepsInState("failed", failed);
  metrics_->SetSweepsInState("cancelled", cancelled);
  if (changed == nullptr) return;
  const v1::Sweep& sweep = changed->sweep;
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
    if (!has_best || (sweep.lower_is_better() ? t.best_metric() < best : t.best_metric() > best)) {
      best = t.best_metric();
    }
    has_best = true;
  }
  metrics_->SweepProgress(sweep.id(), done, sweep.trials_size(), has_best, best);
}

absl::StatusOr<std::unique_ptr<SweepManager>> SweepManager::Create(
    JobManager* jobs, const SweepManagerOptions& options, metrics::Metrics* metrics) {
  SweepManagerOptions resolved = options;
  if (resolved.store_path.empty()) {
    resolved.store_path =
        (std::filesystem::path(jobs->options().data_dir) / "sweeps.db").string();
  }
  std::unique_ptr<SweepManager> manager(new SweepManager(jobs, resolved, metrics));
  {
    absl::MutexLock lock(&manager->mu_);
    FT_RETURN_IF_ERROR(manager->Open());
    FT_RETURN_IF_ERROR(manager->Load());
    // What the ended trials of a halving sweep reached at each rung is
    // rebuilt from their events once, so running trials are judged against
    // it; running trials fold their own events as the monitor polls.
    for (auto& [id, entry] : manager->sweeps_) {
      if (entry.sweep.state() != v1::SWEEP_STATE_RUNNING ||
          !entry.sweep.spec().has_successive_halving()) {
        continue;
      }
      for (int i = 0; i < entry.sweep.trials_size(); ++i) {
        if (TrialEnded(entry.sweep.trials(i).state())) manager->FoldEvents(entry, i);
      }
    }
    for (const auto& [id, entry] : manager->sweeps_) manager->UpdateMetrics(&entry);
  }
  manager->monitor_ = std::thread([m = manager.get()] { m->MonitorLoop(); });
  return manager;
}

SweepManager::~SweepManager() {
  Shutdown();
  absl::MutexLock lock(&mu_);
  if (db_ != nullptr) sqlite3_close(db_);
  db_ = nullptr;
}

void SweepManager::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (monitor_.joinable()) monitor_.join();
  // Wake every watcher so that one which has caught up sees stopped() and
  // ends now instead of waiting for events that will not come.
  stopped_.store(true);
  watchers_.NotifyAll();
}

absl::Status SweepManager::Open() {
  int rc = sqlite3_open_v2(options_.store_path.c_str(), &db_,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                           nullptr);
  if (rc != SQLITE_OK) {
    return absl::UnavailableError(
        absl::StrCat("sweep store: cannot open ", options_.store_path, ": ",
                     db_ != nullptr ? sqlite3_errmsg(db_) : "out of memory"));
  }
  sqlite3_busy_timeout(db_, 5000);
  return Exec(db_,
              "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
              "CREATE TABLE IF NOT EXISTS sweeps(id TEXT PRIMARY KEY, record BLOB NOT NULL);"
              "CREATE TABLE IF NOT EXISTS sweep_events(sweep_id TEXT NOT NULL, "
              "sequence INTEGER NOT NULL, event BLOB NOT NULL, PRIMARY KEY(sweep_id, sequence));");
}

absl::Status SweepManager::Load() {
  sqlite3_stmt* stmt = nullptr;
  FT_RETURN_IF_ERROR(Sqlite(db_, sqlite3_prepare_v2(db_, "SELECT record FROM sweeps", -1, &stmt,
                                                    nullptr),
                            "load sweeps"));
  while (sqlite3_step(stmt) == SQLITE_ROW) {
    v1::Sweep sweep;
    if (!sweep.ParseFromArray(sqlite3_column_blob(stmt, 0), sqlite3_column_bytes(stmt, 0))) {
      continue;
    }
    Entry& entry = sweeps_[sweep.id()];
    entry.sweep = std::move(sweep);
    entry.seen_job_sequence.assign(entry.sweep.trials_size(), 0);
    entry.next_rung.assign(entry.sweep.trials_size(), 0);
    entry.rung_values.assign(entry.sweep.spec().successive_halving().rung_steps_size(), {});
  }
  sqlite3_finalize(stmt);
  FT_RETURN_IF_ERROR(Sqlite(
      db_,
      sqlite3_prepare_v2(db_, "SELECT event FROM sweep_events ORDER BY sweep_id, sequence", -1,
                         &stmt, nullptr),
      "load sweep events"));
  while (sqlite3_step(stmt) == SQLITE_ROW) {
    v1::SweepEvent event;
    if (!event.ParseFromArray(sqlite3_column_blob(stmt, 0), sqlite3_column_bytes(stmt, 0))) {
      continue;
    }
    auto it = sweeps_.find(event.sweep_id());
    if (it != sweeps_.end()) it->second.events.push_back(std::move(event));
  }
  sqlite3_finalize(stmt);
  return absl::OkStatus();
}

absl::Status SweepManager::Store(const v1::Sweep& sweep, const v1::SweepEvent* event) {
  FT_RETURN_IF_ERROR(Exec(db_, "BEGIN"));
  sqlite3_stmt* stmt = nullptr;
  std::string record = sweep.SerializeAsString();
  absl::Status status = Sqlite(
      db_,
      sqlite3_prepare_v2(db_, "INSERT OR REPLACE INTO sweeps(id, record) VALUES(?1, ?2)", -1,
                         &stmt, nullptr),
      "prepare");
  if (status.ok()) {
    sqlite3_bind_text(stmt, 1, sweep.id().c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_blob(stmt, 2, record.data(), static_cast<int>(record.size()), SQLITE_TRANSIENT);
    status = Sqlite(db_, sqlite3_step(stmt), "store sweep");
  }
  sqlite3_finalize(stmt);
  if (status.ok() && event != nullptr) {
    std::string blob = event->SerializeAsString();
    stmt = nullptr;
    status = Sqlite(db_,
                    sqlite3_prepare_v2(db_,
                                       "INSERT INTO sweep_events(sweep_id, sequence, event) "
                                       "VALUES(?1, ?2, ?3)",
                                       -1, &stmt, nullptr),
                    "prepare");
    if (status.ok()) {
      sqlite3_bind_text(stmt, 1, sweep.id().c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_int64(stmt, 2, event->sequence());
      sqlite3_bind_blob(stmt, 3, blob.data(), static_cast<int>(blob.size()), SQLITE_TRANSIENT);
      status = Sqlite(db_, sqlite3_step(stmt), "store sweep event");
    }
    sqlite3_finalize(stmt);
  }
  if (!status.ok()) {
    Exec(db_, "ROLLBACK").IgnoreError();
    return status;
  }
  return Exec(db_, "COMMIT");
}

void SweepManager::Emit(Entry& entry, v1::SweepEvent event) {
  event.set_sweep_id(entry.sweep.id());
  event.set_sequence(entry.sweep.last_sequence() + 1);
  *event.mutable_time() = NowTimestamp();
  entry.sweep.set_last_sequence(event.sequence());
  absl::Status stored = Store(entry.sweep, &event);
  if (!stored.ok()) {
    std::fprintf(stderr, "sweep %s: %s\n", entry.sweep.id().c_str(), stored.ToString().c_str());
  }
  entry.events.push_back(std::move(event));
  UpdateMetrics(&entry);
  // After the event is readable; delivered off this thread (mu_ is held).
  watchers_.Post(entry.sweep.id());
}

absl::StatusOr<v1::Sweep> SweepManager::Submit(const v1::SweepSpec& spec,
                                               const std::string& tenant, absl::Time deadline) {
  if (!spec.has_job()) return absl::InvalidArgumentError("sweep.job: required");
  if (spec.display_name().size() > kMaxDisplayNameLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("sweep.display_name: at most ", kMaxDisplayNameLength, " characters"));
  }
  std::vector<Candidate> candidates;
  for (int i = 0; i < spec.freeze_depths_size(); ++i) {
    Candidate c;
    c.field = absl::StrCat("sweep.freeze_depths[", i, "]");
    c.depth = spec.freeze_depths(i);
    if (c.depth < 0) {
      return absl::InvalidArgumentError(absl::StrCat(c.field, ": must not be negative"));
    }
    c.label = absl::StrCat("depth=", c.depth);
    c.freeze.mutable_bottom()->set_num_layers(c.depth);
    // Deterministic frozen layers (no dropout) make their outputs the same
    // for every trial, so a deeper trial reuses a shallower one's.
    c.freeze.set_frozen_eval_mode(true);
    candidates.push_back(std::move(c));
  }
  if (spec.include_head_only()) {
    Candidate c;
    c.field = "sweep.include_head_only";
    c.label = "head-only";
    c.depth = -1;  // the model's layer count, filled from the plan below
    c.freeze.mutable_head_only();
    candidates.push_back(std::move(c));
  }
  for (int i = 0; i < spec.specs_size(); ++i) {
    Candidate c;
    c.field = absl::StrCat("sweep.specs[", i, "]");
    c.label = absl::StrCat("spec[", i, "]");
    c.depth = -1;
    c.freeze = spec.specs(i);
    candidates.push_back(std::move(c));
  }
  if (candidates.size() < 2) {
    return absl::InvalidArgumentError(
        "sweep.freeze_depths: at least 2 candidates required (freeze_depths, "
        "include_head_only and specs together)");
  }
  std::string metric = spec.selection_metric();
  if (metric.empty()) metric = spec.job().hyperparameters().selection_metric();
  if (metric.empty()) metric = spec.job().task().num_labels() == 1 ? "loss" : "accuracy";
  double unused;
  if (!SweepMetricValue(v1::EvalMetrics(), metric, &unused)) {
    return absl::InvalidArgumentError(
        absl::StrCat("sweep.selection_metric: unknown metric \"", metric,
                     "\" (accuracy, macro_f1, mcc, loss, pearson, spearman, mse)"));
  }
  const bool lower = spec.has_lower_is_better() ? spec.lower_is_better()
                                                : SweepMetricLowerIsBetter(metric);
  if (spec.has_successive_halving()) FT_RETURN_IF_ERROR(ValidateHalving(spec.successive_halving()));

  v1::Sweep sweep;
  sweep.set_id(NewSweepId());
  *sweep.mutable_spec() = spec;
  sweep.set_state(v1::SWEEP_STATE_RUNNING);
  *sweep.mutable_create_time() = NowTimestamp();
  sweep.set_selection_metric(metric);
  sweep.set_lower_is_better(lower);
  sweep.set_winner_index(-1);
  sweep.set_tenant(tenant);

  // Validate every candidate before submitting any.
  std::vector<v1::FineTuneJob> trial_jobs;
  for (const Candidate& c : candidates) {
    v1::FineTuneJob job = spec.job();
    *job.mutable_freeze() = c.freeze;
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
    trial->set_state(v1::TRIAL_STATE_PENDING);
    trial->set_trainable_parameters(plan->trainable_parameters());
    trial->set_total_parameters(plan->total_parameters());
    trial_jobs.push_back(std::move(job));
  }

  // Checked and claimed as a job's output is (path_policy.h); created when
  // the winner is copied there.
  FT_ASSIGN_OR_RETURN(const std::string output_dir,
                      jobs_->PlanOutput(spec.output_uri(), tenant, sweep.id(), "sweep.output_uri"));
  FT_RETURN_IF_ERROR(jobs_->ClaimOutput(output_dir, sweep.id(), tenant, "sweep.output_uri"));
  sweep.set_output_uri(absl::StrCat("file://", output_dir));

  // Queued shallowest first: each depth then finds the next shallower
  // one's frozen-prefix outputs stored (the table keeps candidate order).
  std::vector<int> submit_order(trial_jobs.size());
  for (size_t i = 0; i < submit_order.size(); ++i) submit_order[i] = static_cast<int>(i);
  std::stable_sort(submit_order.begin(), submit_order.end(), [&](int a, int b) {
    auto key = [&](int i) {
      const int depth = sweep.trials(i).frozen_depth();
      return depth < 0 ? std::numeric_limits<int>::max() : depth;
    };
    return key(a) < key(b);
  });
  for (size_t n = 0; n < submit_order.size(); ++n) {
    const int i = submit_order[n];
    absl::StatusOr<v1::Job> job = jobs_->Submit(trial_jobs[i], tenant, deadline, sweep.id());
    if (!job.ok()) {
      for (size_t k = 0; k < n; ++k) {
        jobs_->Cancel(sweep.trials(submit_order[k]).job_id()).IgnoreError();
      }
      return absl::Status(job.status().code(),
                          absl::StrCat(candidates[i].field, ": ", job.status().message()));
    }
    sweep.mutable_trials(i)->set_job_id(job->id());
  }

  absl::MutexLock lock(&mu_);
  Entry& entry = sweeps_[sweep.id()];
  entry.sweep = sweep;
  entry.seen_job_sequence.assign(sweep.trials_size(), 0);
  entry.next_rung.assign(sweep.trials_size(), 0);
  entry.rung_values.assign(sweep.spec().successive_halving().rung_steps_size(), {});
  v1::SweepEvent event;
  *event.mutable_table() = entry.sweep;
  Emit(entry, std::move(event));
  return entry.sweep;
}

absl::StatusOr<v1::Sweep> SweepManager::Get(const std::string& sweep_id) {
  absl::MutexLock lock(&mu_);
  auto it = sweeps_.find(sweep_id);
  if (it == sweeps_.end()) return absl::NotFoundError(absl::StrCat("sweep ", sweep_id, " not found"));
  return it->second.sweep;
}

absl::StatusOr<v1::Sweep> SweepManager::Cancel(const std::string& sweep_id) {
  absl::MutexLock lock(&mu_);
  auto it = sweeps_.find(sweep_id);
  if (it == sweeps_.end()) return absl::NotFoundError(absl::StrCat("sweep ", sweep_id, " not found"));
  Entry& entry = it->second;
  if (Ended(entry.sweep.state())) {
    return absl::FailedPreconditionError(absl::StrCat(
        "sweep ", sweep_id, " already ", v1::SweepState_Name(entry.sweep.state())));
  }
  for (v1::SweepTrial& trial : *entry.sweep.mutable_trials()) {
    if (TrialEnded(trial.state())) continue;
    absl::StatusOr<v1::Job> job = jobs_->Cancel(trial.job_id());
    if (job.ok() && job->state() == v1::JOB_STATE_CANCELLED) {
      trial.set_state(v1::TRIAL_STATE_CANCELLED);
    }
  }
  entry.sweep.set_state(v1::SWEEP_STATE_CANCELLED);
  *entry.sweep.mutable_end_time() = NowTimestamp();
  v1::SweepEvent event;
  *event.mutable_result() = entry.sweep;
  Emit(entry, std::move(event));
  return entry.sweep;
}

absl::StatusOr<std::vector<v1::SweepEvent>> SweepManager::ReadEvents(const std::string& sweep_id,
                                                                     int64_t after_sequence,
                                                                     int limit) {
  absl::MutexLock lock(&mu_);
  auto it = sweeps_.find(sweep_id);
  if (it == sweeps_.end()) return absl::NotFoundError(absl::StrCat("sweep ", sweep_id, " not found"));
  std::vector<v1::SweepEvent> out;
  for (const v1::SweepEvent& e : it->second.events) {
    if (e.sequence() <= after_sequence) continue;
    out.push_back(e);
    if (limit > 0 && static_cast<int>(out.size()) >= limit) break;
  }
  return out;
}

void SweepManager::MonitorLoop() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&stop_), options_.poll_interval)) return;
      for (auto& [id, entry] : sweeps_) {
        if (entry.sweep.state() == v1::SWEEP_STATE_RUNNING) Poll(entry);
      }
    }
  }
}

bool SweepManager::FoldEvents(Entry& entry, int i) {
  v1::SweepTrial& trial = *entry.sweep.mutable_trials(i);
  absl::StatusOr<std::vector<v1::JobEvent>> events =
      jobs_->ReadEvents(trial.job_id(), entry.seen_job_sequence[i], 0);
  if (!events.ok()) return false;
  const bool lower = entry.sweep.lower_is_better();
  bool improved = false;
  for (const v1::JobEvent& e : *events) {
    entry.seen_job_sequence[i] = e.sequence();
    if (!e.has_eval()) continue;
    double value = 0;
    SweepMetricValue(e.eval(), entry.sweep.selection_metric(), &value);
    if (!trial.has_best() || Better(value, trial.best_metric(), lower)) {
      trial.set_has_best(true);
      trial.set_best_metric(value);
      trial.set_best_step(e.eval().step());
      improved = true;
    }
    JudgeRungs(entry, i, e.eval().step());
  }
  return improved;
}

void SweepManager::JudgeRungs(Entry& entry, int i, int64_t step) {
  const v1::SuccessiveHalving& halving = entry.sweep.spec().successive_halving();
  v1::SweepTrial& trial = *entry.sweep.mutable_trials(i);
  const bool lower = entry.sweep.lower_is_better();
  const int eta = halving.reduction_factor() > 0 ? halving.reduction_factor()
                                                 : kDefaultReductionFactor;
  for (int& r = entry.next_rung[i]; r < halving.rung_steps_size() && step >= halving.rung_steps(r);
       ++r) {
    std::map<int, double>& values = entry.rung_values[r];
    values[i] = trial.best_metric();
    // Rebuilding after a restart only records what ended trials reached.
    if (TrialEnded(trial.state())) continue;
    int strictly_better = 0;
    for (const auto& [other, value] : values) {
      if (other != i && Better(value, trial.best_metric(), lower)) ++strictly_better;
    }
    const int keep = (static_cast<int>(values.size()) + eta - 1) / eta;
    if (strictly_better < keep) continue;
    // FAILED_PRECONDITION: the job ended on its own before this poll saw
    // it; its row then follows the job's state.
    if (!jobs_->Cancel(trial.job_id()).ok()) return;
    trial.set_state(v1::TRIAL_STATE_PRUNED);
    trial.set_pruned_at_step(halving.rung_steps(r));
    trial.set_error_message(absl::StrCat(
        "pruned by successive halving at rung step ", halving.rung_steps(r), ": ",
        entry.sweep.selection_metric(), " ", trial.best_metric(), " is not in the top ", keep,
        " of ", values.size()));
    v1::SweepEvent event;
    event.mutable_trial()->set_index(i);
    *event.mutable_trial()->mutable_trial() = trial;
    Emit(entry, std::move(event));
    ++r;
    return;
  }
}

void SweepManager::Poll(Entry& entry) {
  const std::string& metric = entry.sweep.selection_metric();
  const bool lower = entry.sweep.lower_is_better();
  bool improved = false;
  for (int i = 0; i < entry.sweep.trials_size(); ++i) {
    v1::SweepTrial& trial = *entry.sweep.mutable_trials(i);
    if (TrialEnded(trial.state())) continue;
    absl::StatusOr<v1::Job> job = jobs_->Get(trial.job_id());
    if (!job.ok()) continue;
    improved = FoldEvents(entry, i) || improved;
    if (TrialEnded(trial.state())) continue;  // pruned just now
    v1::TrialState state = trial.state();
    switch (job->state()) {
      case v1::JOB_STATE_RUNNING: state = v1::TRIAL_STATE_RUNNING; break;
      case v1::JOB_STATE_SUCCEEDED:
        state = job->result().early_stopped() ? v1::TRIAL_STATE_STOPPED_EARLY
                                              : v1::TRIAL_STATE_FINISHED;
        break;
      case v1::JOB_STATE_FAILED: state = v1::TRIAL_STATE_FAILED; break;
      case v1::JOB_STATE_CANCELLED: state = v1::TRIAL_STATE_CANCELLED; break;
      default: break;
    }
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
      Emit(entry, std::move(event));
    }
  }
  if (improved) {
    v1::SweepEvent event;
    *event.mutable_table() = entry.sweep;
    Emit(entry, std::move(event));
  }
  bool all_ended = true;
  for (const v1::SweepTrial& t : entry.sweep.trials()) all_ended = all_ended && TrialEnded(t.state());
  if (all_ended) Finish(entry);
}

void SweepManager::Finish(Entry& entry) {
  v1::Sweep& sweep = entry.sweep;
  std::vector<v1::SweepTrial> rows(sweep.trials().begin(), sweep.trials().end());
  int winner = PickSweepWinner(rows, sweep.lower_is_better());
  sweep.set_winner_index(winner);
  *sweep.mutable_end_time() = NowTimestamp();
  std::string output_dir = sweep.output_uri();
  if (absl::StartsWith(output_dir, "file://")) output_dir = output_dir.substr(7);
  std::string error;
  if (winner < 0) {
    error = "no trial succeeded with an evaluation";
  } else {
    absl::StatusOr<v1::Job> job = jobs_->Get(sweep.trials(winner).job_id());
    if (!job.ok()) {
      error = std::string(job.status().message());
    } else {
      std::string from = job->result().output_uri();
      if (absl::StartsWith(from, "file://")) from = from.substr(7);
      std::error_code ec;
      std::filesystem::create_directories(output_dir, ec);
      if (!ec) {
        std::filesystem::copy(from, output_dir,
                              std::filesystem::copy_options::recursive |
                                  std::filesystem::copy_options::overwrite_existing,
                              ec);
      }
      if (ec) error = absl::StrCat("copying the winner's output ", from, " to ", output_dir,
                                   ": ", ec.message());
    }
  }
  sweep.set_state(error.empty() ? v1::SWEEP_STATE_SUCCEEDED : v1::SWEEP_STATE_FAILED);
  sweep.set_error_message(error);
  // sweep.json: the final sweep with its table, also for a failed sweep.
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
  v1::SweepEvent event;
  *event.mutable_result() = sweep;
  Emit(entry, std::move(event));
}

absl::StatusOr<v1::ListSweepsResponse> SweepManager::List(const v1::ListSweepsRequest& request,
                                                           std::optional<std::string> tenant) {
  // The kind of ListSweeps page tokens (page_token.h): a ListJobs token is
  // rejected rather than read as a position among sweeps.
  constexpr char kSweepPageTokenKind[] = "sweeps-v1";
  constexpr int kDefaultPageSize = 50;
  constexpr int kMaxPageSize = 500;
  if (request.page_size() < 0) return absl::InvalidArgumentError("page_size: must not be negative");
  uint32_t state_mask = 0;  // empty: every state
  for (int s : request.states()) {
    if (s == v1::SWEEP_STATE_UNSPECIFIED || !v1::SweepState_IsValid(s)) {
      return absl::InvalidArgumentError(absl::StrCat("states: invalid sweep state ", s));
    }
    state_mask |= uint32_t{1} << s;
  }
  const int page_size =
      request.page_size() == 0 ? kDefaultPageSize : std::min(request.page_size(), kMaxPageSize);
  bool has_cursor = !request.page_token().empty();
  int64_t cursor_time = 0;
  std::string cursor_id;
  if (has_cursor) {
    FT_RETURN_IF_ERROR(
        DecodePageToken(kSweepPageTokenKind, request.page_token(), &cursor_time, &cursor_id));
  }

  // Every sweep is in sweeps_ (loaded at Create, added by Submit), so the
  // listing is served from memory, consistent with Get(); the store's sweeps
  // table has no state or time columns to query.
  using Key = std::pair<int64_t, const std::string*>;  // (create micros, id)
  std::vector<std::pair<Key, const v1::Sweep*>> rows;
  absl::MutexLock lock(&mu_);
  for (const auto& [id, entry] : sweeps_) {
    const v1::Sweep& sweep = entry.sweep;
    if (tenant.has_value() && sweep.tenant() != *tenant) continue;
    if (state_mask != 0 && (state_mask & (uint32_t{1} << sweep.state())) == 0) continue;
    const int64_t created = ToMicros(sweep.create_time());
    if (has_cursor && (created > cursor_time || (created == cursor_time && id >= cursor_id))) {
      continue;  // on an earlier page
    }
    rows.push_back({{created, &id}, &sweep});
  }
  // Newest first; the id breaks ties so that the order (and the cursor) is
  // total.
  auto newer = [](const auto& a, const auto& b) {
    if (a.first.first != b.first.first) return a.first.first > b.first.first;
    return *a.first.second > *b.first.second;
  };
  const size_t take = std::min(rows.size(), static_cast<size_t>(page_size));
  std::partial_sort(rows.begin(), rows.begin() + take, rows.end(), newer);
  v1::ListSweepsResponse response;
  for (size_t i = 0; i < take; ++i) *response.add_sweeps() = *rows[i].second;
  if (rows.size() > take) {
    const Key& last = rows[take - 1].first;
    response.set_next_page_token(EncodePageToken(kSweepPageTokenKind, last.first, *last.second));
  }
  return response;
}

SubscriberHub::SubscriptionId SweepManager::Subscribe(const std::string& sweep_id,
                                                      std::function<void()> on_new_events) {
  return watchers_.Subscribe(sweep_id, std::move(on_new_events));
}

void SweepManager::Unsubscribe(SubscriberHub::SubscriptionId id) { watchers_.Unsubscribe(id); }

size_t SweepManager::subscriber_count() const { return watchers_.subscriber_count(); }

size_t SweepManager::subscriber_count(const std::string& sweep_id) const {
  return watchers_.subscriber_count(sweep_id);
}

}  // namespace freezetune::jobs
