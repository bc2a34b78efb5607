// The one storage seam of the server: jobs, sweeps and their event logs, on
// a Backend (backend.h: SQLite or PostgreSQL), plus the subscriber hub that tells
// watchers a resource has new events.
//
// Records are the API's proto messages, serialized: a v1::Job or v1::Sweep
// per row, a v1::JobEvent or v1::SweepEvent per event. A few fields are
// copied into columns for querying (tenant, client_request_id, state,
// create_time). The last_sequence column is authoritative: every read
// overwrites Job/Sweep.last_sequence from it, so a record written from a
// stale copy can never move the event counter backwards.
//
// Events: appending one assigns the next sequence (1, 2, 3, ... with no gap
// or duplicate) in the transaction that also bumps the counter and, when
// asked, replaces the record, so a state change and its event are written
// atomically. After the commit the event goes into an in-memory tail
// (event_tail.h) and then the resource's subscribers are notified, on the
// appending thread. A watcher that subscribes BEFORE it reads never misses
// an event: it is either in what it read or announced afterwards.
//
// Write health (issue 14.3): a write (create, update, append) that the engine
// refuses (INTERNAL or UNAVAILABLE: disk full, I/O error, read-only file,
// connection lost) marks the store unwritable, until a later write or
// ProbeWrite() succeeds. Listeners hear of every such failure and of the
// return to writable; JobManager probes while the store is unwritable,
// stops jobs whose events cannot be stored, and the server reports
// NOT_SERVING meanwhile.
//
// Corrupt rows (issue 14.5): a record that does not parse never fails a
// read. It is quarantined: replaced by what its columns still say (id,
// tenant, create time, the spec if that parses), FAILED with the reason in
// error_message, with a terminal event appended, in one transaction; the
// quarantine listeners hear of it (log, metric). Listings, GetJob/GetSweep
// and JobsInStates serve the placeholder (a corrupt QUEUED job is FAILED,
// so the server still starts). A corrupt event fails only that resource's
// event read (DATA_LOSS).
//
// Thread safety: every method may be called from any thread. Appends to one
// resource are serialized with their tail update (a striped lock), so the
// tail and the notifications follow commit order. Subscriber callbacks run
// with no store lock held.
#ifndef FREEZETUNE_SERVER_STORE_STORE_H_
#define FREEZETUNE_SERVER_STORE_STORE_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "freezetune/v1/freezetune.pb.h"
#include "server/store/backend.h"
#include "server/store/event_tail.h"
#include "server/store/records.h"
#include "server/store/subscriber_hub.h"

namespace freezetune::store {

struct StoreOptions {
  // Non-empty: the PostgreSQL backend at this libpq URI
  // (postgres_backend.h); path and legacy_sweeps_path are then unused.
  std::string postgres_uri;
  // This process's name among the replicas sharing a PostgreSQL store
  // (PostgresOptions.origin).
  std::string replica_id;
  // SQLite file; created (with its tables) if missing, migrated to the
  // current schema if older. ":memory:" works for throwaway stores.
  std::string path;
  // A sweeps.db written by servers before the unified store; imported (once)
  // when the store is migrated. Empty: none.
  std::string legacy_sweeps_path;
  int busy_timeout_ms = 5000;
  // Caps the file at this many pages (SqliteOptions.max_page_count); 0: no
  // cap.
  int64_t max_page_count = 0;
  // Events kept in memory per live resource.
  size_t tail_size = EventTail::kDefaultTailSize;
};

struct ListQuery {
  // Empty lists every state; each value must be a valid state.
  std::vector<int> states;
  // Only this tenant's resources when set.
  std::optional<std::string> tenant;
  // <= 0 means 50; values above 500 are clamped to 500.
  int page_size = 0;
  // Opaque cursor from a previous page; empty for the first page.
  std::string page_token;
};

// A ListQuery from a List request's fields. INVALID_ARGUMENT naming the
// field for a negative page_size ("page_size: ...") or a state that is 0 or
// that `valid` rejects ("states: invalid <noun> state N").
absl::StatusOr<ListQuery> MakeListQuery(int page_size, const std::string& page_token,
                                        const google::protobuf::RepeatedField<int>& states,
                                        bool (*valid)(int), const char* noun,
                                        std::optional<std::string> tenant);

class Store {
 public:
  static constexpr int kDefaultPageSize = 50;
  static constexpr int kMaxPageSize = 500;

  static absl::StatusOr<std::unique_ptr<Store>> Open(const StoreOptions& options);
  // Over any backend (tests; other engines).
  // `replica_id`: Signal.origin of this store's own writes (Listen).
  explicit Store(std::unique_ptr<Backend> backend,
                 size_t tail_size = EventTail::kDefaultTailSize, std::string replica_id = "");
  // Stops listening before the members the listener uses go.
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // --- Jobs ---------------------------------------------------------------

  struct CreateJobResult {
    v1::Job job;
    // False when an existing job with the same (tenant, client_request_id)
    // was returned instead, or when output_conflict is set.
    bool created = false;
    // The live claim that kept `output` from being taken; nothing was
    // written.
    std::optional<OutputClaim> output_conflict;
    // Set when `limits` kept the job out (nothing was written).
    std::optional<QueueFull> queue_full;
  };
  // Inserts `job` (id, tenant, spec and create_time set) with `first_event`
  // as sequence 1, in one transaction. When job.spec.client_request_id is
  // non-empty and the tenant already has a job with it, nothing is written
  // and the existing job is returned. With `output`, the job also claims
  // that directory in the same transaction (backend.h: OutputClaim); a live
  // claim nested with it is returned as output_conflict and nothing is
  // written. A job that would take the store's or its tenant's QUEUED jobs
  // past `limits` is not written (queue_full; backend.h: Create says how
  // exact the counts are across replicas). ALREADY_EXISTS if job.id is
  // taken.
  absl::StatusOr<CreateJobResult> CreateJob(const v1::Job& job, const v1::JobEvent& first_event,
                                            const OutputClaim* output = nullptr,
                                            const QueueLimits& limits = {});
  // The live output claims nested with canonical `path` (equal, inside it,
  // or containing it).
  absl::StatusOr<std::vector<OutputClaim>> LiveClaimsNestedWith(const std::string& path);
  // The tenant's job with this client_request_id, if any.
  absl::StatusOr<std::optional<v1::Job>> FindJobByClientRequestId(const std::string& tenant,
                                                                  const std::string& request_id);
  // NOT_FOUND "job <id> not found".
  absl::StatusOr<v1::Job> GetJob(const std::string& job_id);
  // Newest first (create_time, then id, descending). INVALID_ARGUMENT
  // "page_token: ..." for a token this store did not produce.
  absl::StatusOr<v1::ListJobsResponse> ListJobs(const ListQuery& query);
  // Every job in one of `states`, oldest first.
  absl::StatusOr<std::vector<v1::Job>> JobsInStates(const std::vector<v1::JobState>& states);
  absl::StatusOr<std::map<v1::JobState, int64_t>> CountJobsByState();
  // The jobs of the whole store (on PostgreSQL, every replica's) by state,
  // and when the oldest QUEUED one was created (nullopt: none is queued).
  struct JobCounts {
    std::map<v1::JobState, int64_t> by_state;
    std::optional<absl::Time> oldest_queued;
  };
  absl::StatusOr<JobCounts> CountJobs();
  // Replaces the stored job (state and record); last_sequence is not
  // touched. NOT_FOUND if the job does not exist.
  absl::Status UpdateJob(const v1::Job& job);
  // Appends `event` with the next sequence (setting job_id, and time if
  // unset) and, with `updated_job`, replaces the job record in the same
  // transaction. Returns the event as stored. NOT_FOUND for an unknown job.
  // With `fence`, the write is refused (ABORTED) unless the job's lease
  // epoch matches, and releases the lease when asked (backend.h: Fence).
  absl::StatusOr<v1::JobEvent> AppendJobEvent(const std::string& job_id, v1::JobEvent event,
                                              const v1::Job* updated_job = nullptr,
                                              const Fence* fence = nullptr);
  // Events with sequence > after_sequence, ascending, at most `limit` (<= 0:
  // all): from the in-memory tail when it has them, else from the backend.
  // Empty for an unknown job.
  absl::StatusOr<std::vector<v1::JobEvent>> ReadJobEvents(const std::string& job_id,
                                                          int64_t after_sequence, int limit);

  // --- Sweeps -------------------------------------------------------------

  struct CreateSweepResult {
    v1::Sweep sweep;
    // False when an existing sweep with the same (tenant,
    // spec.client_request_id) was returned instead, or when output_conflict
    // is set; nothing was written.
    bool created = false;
    // The live claim nested with one of `outputs`.
    std::optional<OutputClaim> output_conflict;
    // Set when `limits` kept the sweep out (nothing was written).
    std::optional<QueueFull> queue_full;
  };
  // Inserts the sweep with `first_event` and every trial job with
  // `trial_first_event` (each as its sequence 1), and takes every claim of
  // `outputs` (the sweep's and its trials'), in ONE transaction: a crash
  // leaves either all of them or none. Idempotent on (tenant,
  // sweep.spec.client_request_id), and keeps `limits` counting the queued
  // trials, as CreateJob.
  absl::StatusOr<CreateSweepResult> CreateSweep(const v1::Sweep& sweep,
                                                const v1::SweepEvent& first_event,
                                                const std::vector<v1::Job>& trials,
                                                const v1::JobEvent& trial_first_event,
                                                const std::vector<OutputClaim>& outputs = {},
                                                const QueueLimits& limits = {});
  absl::StatusOr<std::optional<v1::Sweep>> FindSweepByClientRequestId(
      const std::string& tenant, const std::string& request_id);
  // NOT_FOUND "sweep <id> not found".
  absl::StatusOr<v1::Sweep> GetSweep(const std::string& sweep_id);
  // As ListJobs; its page tokens are not ListJobs'.
  absl::StatusOr<v1::ListSweepsResponse> ListSweeps(const ListQuery& query);
  absl::StatusOr<std::vector<v1::Sweep>> SweepsInStates(const std::vector<v1::SweepState>& states);
  absl::StatusOr<std::map<v1::SweepState, int64_t>> CountSweepsByState();
  // As AppendJobEvent.
  absl::StatusOr<v1::SweepEvent> AppendSweepEvent(const std::string& sweep_id,
                                                  v1::SweepEvent event,
                                                  const v1::Sweep* updated_sweep = nullptr,
                                                  const Fence* fence = nullptr);
  absl::StatusOr<std::vector<v1::SweepEvent>> ReadSweepEvents(const std::string& sweep_id,
                                                              int64_t after_sequence, int limit);

  // OK when the backend answers now (backend.h Ping; SQLite: always).
  absl::Status Ping() { return backend_->Ping(); }

  // --- Corrupt rows -------------------------------------------------------

  // `listener(kind, id, reason, written)` runs after a corrupt record was
  // quarantined (`written`: whether the FAILED placeholder was stored; if
  // not, the next read tries again), on the reading thread with no store
  // lock held. Add listeners before the store is shared.
  using QuarantineListener = std::function<void(Kind, const std::string& id,
                                                const std::string& reason,
                                                const absl::Status& written)>;
  void AddQuarantineListener(QuarantineListener listener);

  // --- Write health -------------------------------------------------------

  // False from a write the engine refused until one succeeds.
  bool writable() const { return writable_.load(); }
  // The refusal while !writable(), else OK.
  absl::Status write_error() const;
  // `listener(result)` runs after every write the engine refused (result
  // not OK) and after the first successful write that follows (OK), on the
  // writing thread with no store lock held; calls are serialized. Add
  // listeners before the store is shared; they live as long as the store.
  void AddWriteListener(std::function<void(const absl::Status&)> listener);
  // Backend::ProbeWrite(), counted as a write. UNIMPLEMENTED (not counted)
  // when the backend has no probe.
  absl::Status ProbeWrite();

  // --- The shared queue (issue 12.2; backend.h, PostgreSQL only) ----------

  bool shared_queue() const { return backend_->shared_queue(); }
  absl::StatusOr<std::optional<ResourceLease>> ClaimJob(const ClaimRequest& request);
  absl::StatusOr<bool> RenewLease(Kind kind, const std::string& id, int64_t epoch,
                                  int64_t expires_micros, bool* cancel_requested);
  // The RUNNING jobs whose lease expired (Backend::TakeFreeLeases).
  absl::StatusOr<std::vector<ResourceLease>> TakeExpiredLeases(const std::string& owner,
                                                          int64_t now_micros,
                                                          int64_t expires_micros);
  absl::StatusOr<bool> ReleaseLease(Kind kind, const std::string& id, int64_t epoch);
  // Backend::TakeOverPreviousProcess.
  absl::StatusOr<std::vector<ResourceLease>> TakeOverPreviousProcess(const std::string& owner,
                                                                     int64_t expires_micros);
  // The RUNNING sweeps nobody drives (Backend::TakeFreeLeases).
  absl::StatusOr<std::vector<ResourceLease>> ClaimSweeps(const std::string& owner,
                                                         int64_t now_micros,
                                                         int64_t expires_micros);
  // Asks the owner of an unfinished job or sweep to cancel it.
  absl::Status RequestCancel(Kind kind, const std::string& id);
  absl::StatusOr<std::vector<std::string>> PendingCancels(const std::string& owner);
  // Follows the other replicas' writes: their events wake this store's
  // subscribers (so WatchJob on any replica is pushed, not polled); after a
  // lost connection every subscriber is woken. `on_signal` then sees every
  // signal (Backend::Listen), on the backend's thread.
  absl::Status Listen(std::function<void(const Signal&)> on_signal);

  // --- Watching -----------------------------------------------------------

  using SubscriptionId = SubscriberHub::SubscriptionId;
  // `on_new_events` runs after each event of (kind, id) is appended (on the
  // appending thread) and on NotifyAll(). SubscriberHub's contract: after
  // Unsubscribe(id) returns the callback is not running and never runs again.
  SubscriptionId Subscribe(Kind kind, const std::string& id, std::function<void()> on_new_events);
  void Unsubscribe(SubscriptionId id);
  // Runs every subscriber's callback (so that watchers notice a shutdown).
  void NotifyAll();
  // Subscriptions to resources of `kind` (all, or one resource's).
  size_t subscriber_count(Kind kind) const;
  size_t subscriber_count(Kind kind, const std::string& id) const;

 private:
  // Serializes appends to one resource with their tail update.
  absl::Mutex& StripeFor(const std::string& key);
  // Appends an event (bytes from `serialize(sequence)`) and, with `updated`,
  // the record; then the tail and the subscribers. `final`: the resource's
  // last event.
  absl::Status Append(Kind kind, const std::string& id,
                      absl::FunctionRef<std::string(int64_t)> serialize, const Row* updated,
                      bool final, const Fence* fence = nullptr);
  // From the tail when it has them, else from the backend.
  absl::StatusOr<std::vector<std::pair<int64_t, std::string>>> ReadEvents(
      Kind kind, const std::string& id, int64_t after_sequence, int limit);
  // The record of `row`, or its quarantined FAILED placeholder.
  template <typename Record>
  Record ParseOrQuarantine(Kind kind, const Row& row);
  // Records a write's outcome for writable() and the listeners; returns it.
  absl::Status TrackWrite(absl::Status status);
  template <typename T>
  absl::StatusOr<T> TrackWrite(absl::StatusOr<T> result);

  const std::unique_ptr<Backend> backend_;
  const std::string replica_id_;
  EventTail tail_;
  std::array<absl::Mutex, 16> append_stripes_;
  // Keys being quarantined now (one placeholder write per corrupt row), and
  // the listeners.
  absl::Mutex quarantine_mu_;
  std::set<std::string> quarantining_ ABSL_GUARDED_BY(quarantine_mu_);
  std::vector<QuarantineListener> quarantine_listeners_ ABSL_GUARDED_BY(quarantine_mu_);
  std::atomic<bool> writable_{true};
  // Serializes listener calls with the flips of writable_ they report.
  mutable absl::Mutex health_mu_;
  absl::Status write_error_ ABSL_GUARDED_BY(health_mu_);
  std::vector<std::function<void(const absl::Status&)>> write_listeners_
      ABSL_GUARDED_BY(health_mu_);
  // Last member: destroyed first.
  SubscriberHub hub_;
};

}  // namespace freezetune::store

#endif  // FREEZETUNE_SERVER_STORE_STORE_H_
