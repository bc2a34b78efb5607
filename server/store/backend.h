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

struct RowQuery {
  // Bit s set: rows in state s. 0: every state.
  int64_t state_mask = 0;
  // Only this tenant's rows when set.
  std::optional<std::string> tenant;
  // Rows strictly after this (create_micros, id) in newest-first order.
  std::optional<std::pair<int64_t, std::string>> after;
  int limit = 50;
};

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
  };
  // Inserts every row and its first event, and takes every claim, in one
  // transaction. When rows[0] has a client_request_id its (kind, tenant)
  // already used, nothing is written (existing_id). When a claim is nested
  // with a live claim (one taken earlier, or an earlier one of `claims`),
  // nothing is written (output_conflict). A dead claim of the same path is
  // replaced. ALREADY_EXISTS when an id is taken.
  virtual absl::StatusOr<CreateOutcome> Create(const std::vector<NewRow>& rows,
                                               const std::vector<OutputClaim>& claims) = 0;

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
  virtual absl::StatusOr<std::map<int, int64_t>> CountByState(Kind kind) = 0;

  // Replaces state and record (not last_sequence). NOT_FOUND if missing.
  virtual absl::Status Update(Kind kind, const Row& row) = 0;

  // Appends an event with sequence last_sequence + 1; `event(sequence)`
  // returns its bytes. With `updated`, also replaces the row's state and
  // record, in the same transaction. Returns the sequence. NOT_FOUND if the
  // resource does not exist.
  virtual absl::StatusOr<int64_t> Append(Kind kind, const std::string& id,
                                         absl::FunctionRef<std::string(int64_t)> event,
                                         const Row* updated) = 0;

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
};

}  // namespace freezetune::store

#endif  // FREEZETUNE_SERVER_STORE_BACKEND_H_
