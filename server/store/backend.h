// The storage engine under Store (store.h): records and event logs as rows
// and bytes, nothing about what the bytes mean. One implementation per
// engine: SQLite (sqlite_backend.h, the embedded default) and, later,
// PostgreSQL. Store does the proto work (serializing, parsing, page tokens,
// quarantining corrupt rows) once, on top of any backend.
//
// Data model: two kinds of resource, jobs and sweeps, each a table of
// records with the same columns (Row), and ONE events table keyed by
// (kind, resource id, sequence). A resource's last_sequence column is
// authoritative and is bumped in the same transaction that inserts the event,
// so sequences are 1, 2, 3, ... with no gap or duplicate.
//
// Thread safety: every method may be called from any thread; each is one
// transaction (atomic: all of it or nothing).
#ifndef FREEZETUNE_SERVER_STORE_BACKEND_H_
#define FREEZETUNE_SERVER_STORE_BACKEND_H_

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace freezetune::store {

// Stored as an integer in the events table; never renumber.
enum class Kind : int { kJob = 1, kSweep = 2 };

// One record (a job or a sweep) as the backend stores it.
struct Row {
  std::string id;
  std::string tenant;
  // Empty: none (stored as NULL, so it never collides).
  std::string client_request_id;
  int state = 0;
  int64_t create_micros = 0;
  // Read: the authoritative column. Ignored on writes.
  int64_t last_sequence = 0;
  // Serialized spec (FineTuneJob / SweepSpec) and record (Job / Sweep).
  std::string spec;
  std::string record;
  // Jobs only, written at Create for the shared queue's claims (issue
  // 12.2): FineTuneJob.priority, .device and the slots it takes at once.
  int priority = 0;
  std::string device;
  int slots = 1;
};

// A record to create together with its first event (sequence 1).
struct NewRow {
  Kind kind;
  Row row;
  std::string first_event;
};

// A directory (or s3:// prefix) an output will be written to, and who will
// write it. A claim is live while its owner is not a FAILED or CANCELLED job
// (a sweep's claim stays live). No two live claims are nested: equal, or
// one inside the other by whole '/'-separated components ("/a/bc" is not
// inside "/a/b").
struct OutputClaim {
  std::string path;    // canonical absolute directory, or s3:// key
  std::string owner;   // job or sweep id
  std::string tenant;  // the owner's tenant
};

// Issue 12.2, PostgreSQL only: replicas share one queue. A replica claims a
// QUEUED job and holds its lease (owner, epoch, expiry) while it runs it,
// renewing it; likewise a RUNNING sweep while it drives it. The epoch moves
// on at every claim, takeover and release, so a write fenced with an older
// epoch (a replica that was paused or cut off while another took the
// resource over) is refused.
struct Fence {
  // The write is refused (ABORTED, nothing written) unless the resource's
  // lease epoch is this one.
  int64_t epoch = 0;
  // Once written, the lease ends (owner cleared, epoch + 1), so the job can
  // be claimed again (it was re-queued) or never is (it ended).
  bool release = false;
};

// A lease a replica holds on a job or a sweep.
struct ResourceLease {
  std::string id;
  int64_t epoch = 0;
  // Takeovers: who held the lease that expired (empty: nobody).
  std::string previous_owner;
  // Someone asked to cancel it (RequestCancel).
  bool cancel_requested = false;
};

// What a replica's idle slots can run now (Backend::ClaimJob).
struct ClaimRequest {
  std::string owner;
  int64_t now_micros = 0;
  int64_t expires_micros = 0;
  int idle_cpu_slots = 0;
  int idle_gpu_slots = 0;
  // The replica's GPU devices ("cuda:0", ...): a job asking for one of
  // them, or for "cuda", may take a GPU slot.
  std::vector<std::string> gpu_devices;
  // Per tenant: jobs leased and unexpired at most; 0: no limit.
  int max_running_per_tenant = 0;
  // Non-empty: only this job (Cancel takes a queued job this way).
  std::string only_id;
};

// A notification from another replica (Backend::Listen).
struct Signal {
  enum class Type {
    kEvent,    // (kind, id) has a new event `sequence`, written by `origin`
    kQueued,   // a job became claimable
    kCancel,   // job `id`: its owner should stop it
    kResync,   // the listening connection was lost and is back: some
               // notifications may have been missed
  };
  Type type = Type::kEvent;
  Kind kind = Kind::kJob;
  std::string id;
  int64_t sequence = 0;
  std::string origin;
};

struct RowQuery {
  // Bit s set: rows in state s. 0: every state.
  int64_t state_mask = 0;
  // Only this tenant's rows when set.
  std::optional<std::string> tenant;
  // Rows strictly after this (create_micros, id) in newest-first order.
  std::optional<std::pair<int64_t, std::string>> after;
  int limit = 50;
};

// Row.state of a QUEUED job (v1::JOB_STATE_QUEUED; store.cc checks).
inline constexpr int kQueuedJobState = 1;

// Admission limits counted in Backend::Create's transaction; 0: none.
struct QueueLimits {
  int64_t total = 0;       // QUEUED jobs in the store
  int64_t per_tenant = 0;  // QUEUED jobs of the new rows' tenant
};
// Which limit kept new rows out, and how many QUEUED jobs (the store's, or
// the tenant's) there are without them.
struct QueueFull {
  bool tenant = false;
  int64_t queued = 0;
};

// Which of `limits` the store's QUEUED jobs (`queued`, the tenant's
// `tenant_queued`), counted with the new `rows`, exceed; nullopt if none.
inline std::optional<QueueFull> OverLimits(const QueueLimits& limits, int64_t queued,
                                           int64_t tenant_queued, const std::vector<NewRow>& rows) {
  int64_t adding = 0;
  for (const NewRow& r : rows) adding += r.kind == Kind::kJob && r.row.state == kQueuedJobState;
  if (limits.total > 0 && queued > limits.total) return QueueFull{false, queued - adding};
  if (limits.per_tenant > 0 && tenant_queued > limits.per_tenant) {
    return QueueFull{true, tenant_queued - adding};
  }
  return std::nullopt;
}

class Backend {
 public:
  virtual ~Backend() = default;

  struct CreateOutcome {
    bool created = false;
    // When !created and output_conflict is unset: the id of the existing
    // resource of rows[0]'s kind with rows[0]'s (tenant, client_request_id).
    std::string existing_id;
    // When !created: the live claim nested with one of `claims`.
    std::optional<OutputClaim> output_conflict;
    // When !created because of `limits`.
    std::optional<QueueFull> queue_full;
  };
  // Inserts every row and its first event, and takes every claim, in one
  // transaction. When rows[0] has a client_request_id its (kind, tenant)
  // already used, nothing is written (existing_id). When a claim is nested
  // with a live claim (one taken earlier, or an earlier one of `claims`),
  // nothing is written (output_conflict). A dead claim of the same path is
  // replaced. When the store, or rows[0]'s tenant, would have more QUEUED
  // jobs with the new ones than `limits` allow, nothing is written
  // (queue_full); counted in the transaction. On PostgreSQL the tenant's
  // count is taken under a lock per tenant held to the commit, so replicas
  // admitting at once cannot both pass it; the store's is not (concurrent
  // admissions may each let one more in). ALREADY_EXISTS when an id is
  // taken.
  virtual absl::StatusOr<CreateOutcome> Create(const std::vector<NewRow>& rows,
                                               const std::vector<OutputClaim>& claims,
                                               const QueueLimits& limits) = 0;

  // The live claims nested with `path` (equal, inside it, or containing it),
  // ordered by path.
  virtual absl::StatusOr<std::vector<OutputClaim>> LiveClaimsNestedWith(const std::string& path) = 0;

  // nullopt when there is no such row.
  virtual absl::StatusOr<std::optional<Row>> Get(Kind kind, const std::string& id) = 0;
  // Id of the (kind, tenant) row with this client_request_id; empty if none.
  virtual absl::StatusOr<std::string> FindByRequestId(Kind kind, const std::string& tenant,
                                                      const std::string& request_id) = 0;
  // Newest first: create_micros, then id, descending.
  virtual absl::StatusOr<std::vector<Row>> List(Kind kind, const RowQuery& query) = 0;
  // Rows in any state of `state_mask`, oldest first.
  virtual absl::StatusOr<std::vector<Row>> InStates(Kind kind, int64_t state_mask) = 0;
  // Per state: how many rows, and the oldest one's create_micros.
  struct StateCount {
    int64_t rows = 0;
    int64_t oldest_create_micros = 0;
  };
  virtual absl::StatusOr<std::map<int, StateCount>> CountByState(Kind kind) = 0;

  // Replaces state and record (not last_sequence). NOT_FOUND if missing.
  virtual absl::Status Update(Kind kind, const Row& row) = 0;

  // Appends an event with sequence last_sequence + 1; `event(sequence)`
  // returns its bytes. With `updated`, also replaces the row's state and
  // record, in the same transaction. Returns the sequence. NOT_FOUND if the
  // resource does not exist.
  // With `fence` (shared queue only): refused as Fence says, and releases
  // the lease when asked.
  virtual absl::StatusOr<int64_t> Append(Kind kind, const std::string& id,
                                         absl::FunctionRef<std::string(int64_t)> event,
                                         const Row* updated, const Fence* fence = nullptr) = 0;

  // Events with sequence > after, ascending, at most `limit` (<= 0: all), as
  // (sequence, bytes). Empty for an unknown resource.
  virtual absl::StatusOr<std::vector<std::pair<int64_t, std::string>>> ReadEvents(
      Kind kind, const std::string& id, int64_t after, int limit) = 0;

  // OK when the engine answers now (one round trip for a server reached over
  // the network). An embedded engine has nothing to reach: OK.
  virtual absl::Status Ping() { return absl::OkStatus(); }

  // A committed write that needs new space (a page's worth) and leaves no
  // trace, so that Store can tell when an engine that refused writes (disk
  // full, read-only, connection lost) accepts them again. OK when it could
  // write. The default says UNIMPLEMENTED (the store then relies on its
  // next real write).
  virtual absl::Status ProbeWrite() {
    return absl::UnimplementedError("job store: this backend has no write probe");
  }

  // --- The shared queue (issue 12.2; PostgreSQL). The defaults say
  // UNIMPLEMENTED: an embedded engine serves one process, whose scheduler
  // is the queue.

  // Whether the methods below work.
  virtual bool shared_queue() const { return false; }
  // Takes the lease of the first QUEUED job (priority, then age) that the
  // request's idle slots fit and whose lease is free or expired, skipping
  // rows other replicas are claiming (SKIP LOCKED). nullopt: none.
  virtual absl::StatusOr<std::optional<ResourceLease>> ClaimJob(const ClaimRequest& request) {
    return Unshared();
  }
  // Extends the lease to `expires_micros`. False: the epoch moved on (the
  // lease was lost). `cancel_requested` reports a pending RequestCancel.
  virtual absl::StatusOr<bool> RenewLease(Kind kind, const std::string& id, int64_t epoch,
                                          int64_t expires_micros, bool* cancel_requested) {
    return Unshared();
  }
  // Takes the leases of the resources of `kind` in `state` that nobody
  // holds or whose lease expired before now_micros (their replica died or
  // was cut off), bumping their epochs and skipping rows other replicas are
  // taking: RUNNING jobs to re-queue (with a releasing Fence), RUNNING
  // sweeps to drive.
  virtual absl::StatusOr<std::vector<ResourceLease>> TakeFreeLeases(Kind kind,
                                                               const std::string& owner,
                                                               int state, int64_t now_micros,
                                                               int64_t expires_micros) {
    return Unshared();
  }
  // At a replica's start: the leases `owner` still holds belong to its
  // previous process, which is gone (the caller guarantees one live process
  // per owner name). Its claimed, unstarted jobs and its sweeps are
  // released (other replicas, or this one, claim them at once); its RUNNING
  // jobs' leases are taken over (epoch bumped, expiring at `expires_micros`)
  // and returned, for the caller to re-queue.
  virtual absl::StatusOr<std::vector<ResourceLease>> TakeOverPreviousProcess(
      const std::string& owner, int64_t expires_micros) {
    return Unshared();
  }
  // Ends a lease without a state change (a claimed job this replica will
  // not start, a sweep it stops driving). False: the epoch had moved on.
  virtual absl::StatusOr<bool> ReleaseLease(Kind kind, const std::string& id, int64_t epoch) {
    return Unshared();
  }
  // Marks a resource in one of `unfinished_state_mask`'s states (bit s:
  // state s) for cancelling and tells its owner (kCancel).
  virtual absl::Status RequestCancel(Kind kind, const std::string& id,
                                     int64_t unfinished_state_mask) {
    return Unshared();
  }
  // Jobs `owner` holds that were asked to cancel.
  virtual absl::StatusOr<std::vector<std::string>> PendingCancels(const std::string& owner) {
    return Unshared();
  }
  // Calls `on_signal` (on a thread of the backend's) for every notification
  // other replicas' writes send, and kResync after a lost connection is
  // back, until the backend is destroyed. At most one listener.
  virtual absl::Status Listen(std::function<void(const Signal&)> on_signal) { return Unshared(); }
  // Stops the listener (no more calls once it returns). Idempotent.
  virtual void StopListening() {}

 private:
  static absl::Status Unshared() {
    return absl::UnimplementedError("job store: this engine has no shared queue");
  }
};

}  // namespace freezetune::store

#endif  // FREEZETUNE_SERVER_STORE_BACKEND_H_
