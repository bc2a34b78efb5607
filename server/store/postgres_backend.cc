#include "server/store/postgres_backend.h"

#include <libpq-fe.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <deque>
#include <functional>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "server/base/log.h"
#include "server/common/status_macros.h"

namespace freezetune::store {
namespace {

// pg_advisory_lock key held while migrating ("ftstore" + 01), and the
// transaction-level one that serializes taking output claims (+ 02).
constexpr int64_t kMigrationLockKey = 0x6674'7374'6f72'6501;
constexpr int64_t kClaimsLockKey = 0x6674'7374'6f72'6502;
// Transaction-level: serializes job claims while a per-tenant running limit
// is counted (+ 04; 03 was the one-server lock of servers before 12.2).
constexpr int64_t kTenantClaimLockKey = 0x6674'7374'6f72'6504;

// NOTIFY channels (Backend::Listen): a resource's new event
// ("kind|sequence|origin|id"), a job that became claimable (""), a job to
// cancel ("id").
constexpr char kEventsChannel[] = "freezetune_events";
constexpr char kQueueChannel[] = "freezetune_queue";
constexpr char kCancelChannel[] = "freezetune_cancel";

// Version 1: the unified store (as SQLite's version 2). Ids and tenants
// compare bytewise (COLLATE "C"), as SQLite does.
constexpr const char* kSchemaV1 = R"sql(
CREATE TABLE jobs(
  id TEXT COLLATE "C" PRIMARY KEY,
  tenant TEXT COLLATE "C" NOT NULL,
  client_request_id TEXT COLLATE "C",    -- NULL when the client gave none
  state INTEGER NOT NULL,
  create_time BIGINT NOT NULL,           -- microseconds since the epoch
  last_sequence BIGINT NOT NULL DEFAULT 0,
  spec BYTEA NOT NULL,                   -- serialized freezetune.v1.FineTuneJob
  record BYTEA NOT NULL,                 -- serialized freezetune.v1.Job
  UNIQUE(tenant, client_request_id));
CREATE INDEX jobs_by_create_time ON jobs(create_time DESC, id DESC);
CREATE TABLE sweeps(
  id TEXT COLLATE "C" PRIMARY KEY,
  tenant TEXT COLLATE "C" NOT NULL,
  client_request_id TEXT COLLATE "C",
  state INTEGER NOT NULL,
  create_time BIGINT NOT NULL,
  last_sequence BIGINT NOT NULL DEFAULT 0,
  spec BYTEA NOT NULL,                   -- serialized freezetune.v1.SweepSpec
  record BYTEA NOT NULL,                 -- serialized freezetune.v1.Sweep
  UNIQUE(tenant, client_request_id));
CREATE INDEX sweeps_by_create_time ON sweeps(create_time DESC, id DESC);
CREATE TABLE events(
  kind SMALLINT NOT NULL,                -- 1 job, 2 sweep
  resource_id TEXT COLLATE "C" NOT NULL,
  sequence BIGINT NOT NULL,
  event BYTEA NOT NULL,                  -- serialized JobEvent / SweepEvent
  PRIMARY KEY(kind, resource_id, sequence));
)sql";

// Version 2: output claims (as SQLite's version 3).
constexpr const char* kSchemaV2 = R"sql(
CREATE TABLE output_claims(
  path TEXT COLLATE "C" PRIMARY KEY,     -- canonical output directory or s3:// key
  owner TEXT COLLATE "C" NOT NULL,       -- job or sweep id
  tenant TEXT COLLATE "C" NOT NULL);
)sql";

// Version 3: the shared queue (issue 12.2). What a job claim filters and
// orders on, copied from the spec at insert (rows of version 2 take the
// defaults: priority 0, any device, one slot), and, for jobs and sweeps,
// the lease: its owner (NULL: none), its epoch (bumped at every claim,
// takeover and release) and its expiry in microseconds since the epoch;
// cancel_requested asks the owner to stop.
constexpr const char* kSchemaV3 = R"sql(
ALTER TABLE jobs
  ADD COLUMN priority INTEGER NOT NULL DEFAULT 0,
  ADD COLUMN device TEXT COLLATE "C" NOT NULL DEFAULT '',
  ADD COLUMN slots INTEGER NOT NULL DEFAULT 1,
  ADD COLUMN lease_owner TEXT COLLATE "C",
  ADD COLUMN lease_epoch BIGINT NOT NULL DEFAULT 0,
  ADD COLUMN lease_expires BIGINT NOT NULL DEFAULT 0,
  ADD COLUMN cancel_requested BOOLEAN NOT NULL DEFAULT false;
CREATE INDEX jobs_claimable ON jobs(priority DESC, create_time, id) WHERE state = 1;
CREATE INDEX jobs_leased ON jobs(lease_owner) WHERE lease_owner IS NOT NULL;
ALTER TABLE sweeps
  ADD COLUMN lease_owner TEXT COLLATE "C",
  ADD COLUMN lease_epoch BIGINT NOT NULL DEFAULT 0,
  ADD COLUMN lease_expires BIGINT NOT NULL DEFAULT 0,
  ADD COLUMN cancel_requested BOOLEAN NOT NULL DEFAULT false;
)sql";

// kMigrations[v - 1] takes the schema from version v - 1 to v.
constexpr const char* kMigrations[] = {kSchemaV1, kSchemaV2, kSchemaV3};
constexpr int kSchemaVersion = sizeof(kMigrations) / sizeof(kMigrations[0]);

const char* Table(Kind kind) { return kind == Kind::kJob ? "jobs" : "sweeps"; }
const char* Noun(Kind kind) { return kind == Kind::kJob ? "job " : "sweep "; }

// The columns every row query selects, in Row order.
constexpr char kRowColumns[] =
    "id, tenant, client_request_id, state, create_time, last_sequence, spec, record";

// Statement names, prefixed with the table for per-kind ones.
enum class Stmt {
  kInsert,
  kFind,
  kGet,
  kUpdate,
  kBump,
  kList,
  kInStates,
  kCount,
  kRelease,
  kRenew,
  kRequestCancel,
  kTakeFree,
};

struct StatementText {
  Stmt stmt;
  const char* name;
  const char* sql;  // {T}: the table, {C}: kRowColumns
};

constexpr StatementText kPerKind[] = {
    {Stmt::kInsert, "insert",
     "INSERT INTO {T}({C}) VALUES($1, $2, $3, $4::integer, $5::bigint, 1, $6, $7) "
     "ON CONFLICT (tenant, client_request_id) DO NOTHING"},
    {Stmt::kFind, "find", "SELECT id FROM {T} WHERE tenant = $1 AND client_request_id = $2"},
    {Stmt::kGet, "get", "SELECT {C} FROM {T} WHERE id = $1"},
    {Stmt::kUpdate, "update", "UPDATE {T} SET state = $2::integer, record = $3 WHERE id = $1"},
    {Stmt::kBump, "bump",
     "UPDATE {T} SET last_sequence = last_sequence + 1 WHERE id = $1 "
     "RETURNING last_sequence, lease_epoch"},
    {Stmt::kList, "list",
     "SELECT {C} FROM {T} "
     "WHERE ($1::bigint = 0 OR ((1::bigint << state) & $1::bigint) <> 0) "
     "AND ($2::text IS NULL OR tenant = $2::text) "
     "AND ($3::bigint IS NULL OR create_time < $3::bigint "
     "     OR (create_time = $3::bigint AND id < $4::text)) "
     "ORDER BY create_time DESC, id DESC LIMIT $5::integer"},
    {Stmt::kInStates, "in_states",
     "SELECT {C} FROM {T} WHERE ((1::bigint << state) & $1::bigint) <> 0 "
     "ORDER BY create_time ASC, id ASC"},
    {Stmt::kCount, "count", "SELECT state, COUNT(*), MIN(create_time) FROM {T} GROUP BY state"},
    // Ends the lease; returns the state so that a re-queued job is announced.
    {Stmt::kRelease, "release",
     "UPDATE {T} SET lease_owner = NULL, lease_epoch = lease_epoch + 1 "
     "WHERE id = $1 AND lease_epoch = $2::bigint RETURNING state"},
    {Stmt::kRenew, "renew",
     "UPDATE {T} SET lease_expires = $3::bigint WHERE id = $1 AND lease_epoch = $2::bigint "
     "AND lease_owner IS NOT NULL RETURNING cancel_requested"},
    {Stmt::kRequestCancel, "request_cancel",
     "UPDATE {T} SET cancel_requested = true WHERE id = $1 "
     "AND ((1::bigint << state) & $2::bigint) <> 0"},
    // Rows in state $4 with no lease (a new sweep; a job left RUNNING by a
    // server before leases) or an expired one.
    {Stmt::kTakeFree, "take_free",
     "UPDATE {T} t SET lease_owner = $1, lease_epoch = t.lease_epoch + 1, "
     "lease_expires = $3::bigint FROM (SELECT id, lease_owner FROM {T} "
     "WHERE state = $4::integer AND (lease_owner IS NULL OR lease_expires < $2::bigint) "
     "FOR UPDATE SKIP LOCKED) old "
     "WHERE t.id = old.id RETURNING t.id, t.lease_epoch, old.lease_owner, t.cancel_requested"},
};

// --- The shared queue (jobs only) ---
// Insert with the claim columns.
constexpr char kInsertJob[] = "insert_job";
constexpr char kInsertJobSql[] =
    "INSERT INTO jobs(id, tenant, client_request_id, state, create_time, last_sequence, spec, "
    "record, priority, device, slots) VALUES($1, $2, $3, $4::integer, $5::bigint, 1, $6, $7, "
    "$8::integer, $9, $10::integer) ON CONFLICT (tenant, client_request_id) DO NOTHING";
// $1 owner, $2 now, $3 expiry, $4/$5 idle CPU/GPU slots, $6 the GPU devices
// (comma-separated), $7 running limit per tenant (0: none), $8 one job's id
// (NULL: any; the slot filter is then skipped). "Running" for the limit:
// leased and unexpired, which a claimed job not yet started also is.
constexpr char kClaim[] = "claim";
constexpr char kClaimSql[] =
    "WITH candidate AS (SELECT c.id FROM jobs c "
    "  WHERE c.state = 1 AND (c.lease_owner IS NULL OR c.lease_expires < $2::bigint) "
    "  AND ($8::text IS NULL OR c.id = $8::text) "
    "  AND ($8::text IS NOT NULL "
    "       OR (c.device IN ('', 'cpu') AND c.slots <= $4::integer) "
    "       OR ((c.device IN ('', 'cuda') OR c.device = ANY(string_to_array($6::text, ','))) "
    "           AND c.slots <= $5::integer)) "
    "  AND ($7::integer = 0 OR (SELECT COUNT(*) FROM jobs r WHERE r.tenant = c.tenant "
    "       AND r.state IN (1, 2) AND r.lease_owner IS NOT NULL "
    "       AND r.lease_expires >= $2::bigint) < $7::integer) "
    "  ORDER BY c.priority DESC, c.create_time, c.id LIMIT 1 FOR UPDATE SKIP LOCKED) "
    "UPDATE jobs j SET lease_owner = $1, lease_epoch = j.lease_epoch + 1, "
    "lease_expires = $3::bigint FROM candidate WHERE j.id = candidate.id "
    "RETURNING j.id, j.lease_epoch, j.cancel_requested";
// A restarted replica's previous process: its unstarted claims released,
// its RUNNING jobs taken over.
constexpr char kReleaseOwnQueued[] = "release_own_queued";
constexpr char kReleaseOwnQueuedSql[] =
    "UPDATE jobs SET lease_owner = NULL, lease_epoch = lease_epoch + 1 "
    "WHERE lease_owner = $1 AND state = 1";
constexpr char kReleaseOwnSweeps[] = "release_own_sweeps";
constexpr char kReleaseOwnSweepsSql[] =
    "UPDATE sweeps SET lease_owner = NULL, lease_epoch = lease_epoch + 1 WHERE lease_owner = $1";
constexpr char kTakeOwnRunning[] = "take_own_running";
constexpr char kTakeOwnRunningSql[] =
    "UPDATE jobs SET lease_epoch = lease_epoch + 1, lease_expires = $2::bigint "
    "WHERE lease_owner = $1 AND state = 2 RETURNING id, lease_epoch, lease_owner, cancel_requested";
constexpr char kPendingCancels[] = "pending_cancels";
constexpr char kPendingCancelsSql[] =
    "SELECT id FROM jobs WHERE lease_owner = $1 AND cancel_requested AND state IN (1, 2)";
constexpr char kNotify[] = "notify";
constexpr char kNotifySql[] = "SELECT pg_notify($1, $2)";

constexpr char kInsertEvent[] = "insert_event";
constexpr char kInsertEventSql[] =
    "INSERT INTO events(kind, resource_id, sequence, event) VALUES($1::smallint, $2, $3::bigint, $4)";
// The same, announcing it (NOTIFY channel $5, payload $6) in one round
// trip: this is every training event's write.
constexpr char kInsertEventNotify[] = "insert_event_notify";
constexpr char kInsertEventNotifySql[] =
    "WITH inserted AS (INSERT INTO events(kind, resource_id, sequence, event) "
    "VALUES($1::smallint, $2, $3::bigint, $4) RETURNING 1) "
    "SELECT pg_notify($5, $6) FROM inserted";
// Nested: equal, $1 inside the claim, or the claim inside $1 (whole
// components). Live: not owned by a FAILED (4) or CANCELLED (5) job.
constexpr char kLiveClaims[] = "live_claims";
constexpr char kLiveClaimsSql[] =
    "SELECT c.path, c.owner, c.tenant FROM output_claims c LEFT JOIN jobs j ON j.id = c.owner "
    "WHERE (c.path = $1::text OR substr($1::text, 1, length(c.path) + 1) = c.path || '/' "
    "OR substr(c.path, 1, length($1::text) + 1) = $1::text || '/') "
    "AND (j.id IS NULL OR j.state NOT IN (4, 5)) ORDER BY c.path";
// A dead claim of the same path is replaced.
constexpr char kInsertClaim[] = "insert_claim";
constexpr char kInsertClaimSql[] =
    "INSERT INTO output_claims(path, owner, tenant) VALUES($1, $2, $3) "
    "ON CONFLICT (path) DO UPDATE SET owner = EXCLUDED.owner, tenant = EXCLUDED.tenant";
constexpr char kAdvisoryXactLock[] = "advisory_xact_lock";
constexpr char kAdvisoryXactLockSql[] = "SELECT pg_advisory_xact_lock($1::bigint)";
// A tenant's admissions under --max_queued_per_tenant, one at a time: the
// two-int key space ("ftqu", the tenant's hash) is apart from the bigint one.
constexpr char kTenantQueueLock[] = "tenant_queue_lock";
constexpr char kTenantQueueLockSql[] =
    "SELECT pg_advisory_xact_lock(x'66747175'::integer, hashtext($1))";
constexpr char kCountQueued[] = "count_queued";
constexpr char kCountQueuedSql[] =
    "SELECT COUNT(*), COUNT(*) FILTER (WHERE tenant = $1) FROM jobs WHERE state = 1";
constexpr char kReadEvents[] = "read_events";
constexpr char kReadEventsSql[] =
    "SELECT sequence, event FROM events WHERE kind = $1::smallint AND resource_id = $2 "
    "AND sequence > $3::bigint ORDER BY sequence ASC LIMIT $4::bigint";

std::string StatementName(Kind kind, Stmt stmt) {
  for (const StatementText& s : kPerKind) {
    if (s.stmt == stmt) return absl::StrCat(Table(kind), "_", s.name);
  }
  return "";
}

struct ResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using Result = std::unique_ptr<PGresult, ResultDeleter>;

std::string Trimmed(const char* message) {
  return std::string(absl::StripTrailingAsciiWhitespace(message != nullptr ? message : ""));
}

// A status for a failed call on `conn` (`result` may be null).
absl::Status PgError(PGconn* conn, const PGresult* result, absl::string_view what) {
  const char* sqlstate = result != nullptr ? PQresultErrorField(result, PG_DIAG_SQLSTATE) : nullptr;
  const std::string state = sqlstate != nullptr ? sqlstate : "";
  std::string message = result != nullptr ? Trimmed(PQresultErrorMessage(result)) : "";
  if (message.empty()) message = Trimmed(PQerrorMessage(conn));
  const std::string text = absl::StrCat("job store: ", what, ": ", message);
  // Class 08: connection exceptions; 57P01-03: the server is shutting down
  // or starting.
  if (PQstatus(conn) == CONNECTION_BAD || absl::StartsWith(state, "08") ||
      absl::StartsWith(state, "57P")) {
    return absl::UnavailableError(text);
  }
  if (state == "40001" || state == "40P01") return absl::AbortedError(text);
  return absl::InternalError(text);
}

// Statement parameters. Integers travel as text, bytes (BYTEA) as binary;
// text must hold no NUL byte (PostgreSQL text cannot), which is refused
// rather than silently truncated.
class Params {
 public:
  Params& Text(const std::string& text) {
    if (text.find('\0') != std::string::npos) {
      error_ = absl::InvalidArgumentError("job store: text contains a NUL byte");
    }
    return Add(text.data(), static_cast<int>(text.size()), 0);
  }
  Params& OptionalText(const std::string& text) { return text.empty() ? Null() : Text(text); }
  Params& Int(int64_t value) {
    const std::string& s = storage_.emplace_back(absl::StrCat(value));
    return Add(s.data(), static_cast<int>(s.size()), 0);
  }
  Params& Bytes(const std::string& bytes) {
    return Add(bytes.data(), static_cast<int>(bytes.size()), 1);
  }
  Params& Null() { return Add(nullptr, 0, 0); }

  const absl::Status& error() const { return error_; }
  int size() const { return static_cast<int>(values_.size()); }
  const char* const* values() const { return values_.data(); }
  const int* lengths() const { return lengths_.data(); }
  const int* formats() const { return formats_.data(); }

 private:
  Params& Add(const char* data, int length, int format) {
    values_.push_back(data);
    lengths_.push_back(length);
    formats_.push_back(format);
    return *this;
  }

  absl::Status error_;
  std::deque<std::string> storage_;  // stable addresses for Int()'s text
  std::vector<const char*> values_;
  std::vector<int> lengths_;
  std::vector<int> formats_;
};

// Binary-format result cells.
int64_t CellInt(const PGresult* r, int row, int column) {
  const auto* p = reinterpret_cast<const unsigned char*>(PQgetvalue(r, row, column));
  const int length = PQgetlength(r, row, column);
  uint64_t v = 0;
  for (int i = 0; i < length; ++i) v = (v << 8) | p[i];
  switch (length) {
    case 2: return static_cast<int16_t>(v);
    case 4: return static_cast<int32_t>(v);
    default: return static_cast<int64_t>(v);
  }
}

std::string CellBytes(const PGresult* r, int row, int column) {
  return std::string(PQgetvalue(r, row, column), static_cast<size_t>(PQgetlength(r, row, column)));
}

Row ReadRow(const PGresult* r, int i) {
  Row row;
  row.id = CellBytes(r, i, 0);
  row.tenant = CellBytes(r, i, 1);
  row.client_request_id = CellBytes(r, i, 2);  // NULL reads as empty
  row.state = static_cast<int>(CellInt(r, i, 3));
  row.create_micros = CellInt(r, i, 4);
  row.last_sequence = CellInt(r, i, 5);
  row.spec = CellBytes(r, i, 6);
  row.record = CellBytes(r, i, 7);
  return row;
}

// One connection and whether this backend's statements are prepared on it.
struct Conn {
  PGconn* pg = nullptr;
  bool prepared = false;
};

class PostgresBackend;

// Whether an idle pooled connection is still usable. An idle connection has
// nothing to read unless the server closed it (a restart, an administrator's
// pg_terminate_backend, idle timeouts): a non-blocking peek sees EOF, or the
// server's FATAL message, before any statement is wasted on it.
bool StillOpen(PGconn* pg) {
  if (PQstatus(pg) != CONNECTION_OK) return false;
  const int fd = PQsocket(pg);
  if (fd < 0) return false;
  char byte;
  const ssize_t n = recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

// A connection borrowed from the pool for one call; given back on scope exit
// (or closed, when it broke).
class Lease {
 public:
  Lease(PostgresBackend* owner, Conn conn) : owner_(owner), conn_(conn) {}
  ~Lease();
  Lease(Lease&& other) noexcept
      : owner_(other.owner_), conn_(other.conn_), discard_(other.discard_) {
    other.owner_ = nullptr;
  }
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;

  PGconn* pg() const { return conn_.pg; }
  bool prepared() const { return conn_.prepared; }
  void set_prepared() { conn_.prepared = true; }
  // Closes the connection instead of pooling it.
  void Discard() { discard_ = true; }
  // SQLSTATE of the last failed statement ("" if none failed).
  const std::string& last_sqlstate() const { return last_sqlstate_; }

  // Runs a prepared statement; binary results. OK statuses only for
  // PGRES_COMMAND_OK / PGRES_TUPLES_OK.
  absl::StatusOr<Result> Run(const std::string& name, const Params& params, const char* what) {
    FT_RETURN_IF_ERROR(params.error());
    Result r(PQexecPrepared(conn_.pg, name.c_str(), params.size(), params.values(),
                            params.lengths(), params.formats(), 1));
    return Check(std::move(r), what);
  }
  // Runs SQL with no parameters (transaction control, DDL).
  absl::Status Exec(const char* sql, const char* what) {
    return Check(Result(PQexec(conn_.pg, sql)), what).status();
  }
  // Runs SQL with parameters, unprepared (migrations); binary results.
  absl::StatusOr<Result> ExecParams(const char* sql, const Params& params, const char* what) {
    FT_RETURN_IF_ERROR(params.error());
    Result r(PQexecParams(conn_.pg, sql, params.size(), nullptr, params.values(), params.lengths(),
                          params.formats(), 1));
    return Check(std::move(r), what);
  }

  // BEGIN; and ROLLBACK unless Commit() ran, when the transaction ends.
  absl::Status Begin() {
    FT_RETURN_IF_ERROR(Exec("BEGIN", "begin"));
    in_transaction_ = true;
    return absl::OkStatus();
  }
  absl::Status Commit() {
    in_transaction_ = false;
    return Exec("COMMIT", "commit");
  }
  void Rollback() {
    if (!in_transaction_) return;
    in_transaction_ = false;
    Result r(PQexec(conn_.pg, "ROLLBACK"));
  }

 private:
  absl::StatusOr<Result> Check(Result r, const char* what) {
    const ExecStatusType status = r != nullptr ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
    if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) return r;
    const char* sqlstate = r != nullptr ? PQresultErrorField(r.get(), PG_DIAG_SQLSTATE) : nullptr;
    last_sqlstate_ = sqlstate != nullptr ? sqlstate : "";
    return PgError(conn_.pg, r.get(), what);
  }

  PostgresBackend* owner_;
  Conn conn_;
  bool discard_ = false;
  bool in_transaction_ = false;
  std::string last_sqlstate_;
};

class PostgresBackend final : public Backend {
 public:
  explicit PostgresBackend(PostgresOptions options) : options_(std::move(options)) {}
  ~PostgresBackend() override {
    StopListening();
    absl::MutexLock lock(&mu_);
    for (Conn& c : idle_) PQfinish(c.pg);
    idle_.clear();
  }

  absl::Status Init();

  absl::StatusOr<CreateOutcome> Create(const std::vector<NewRow>& rows,
                                       const std::vector<OutputClaim>& claims,
                                       const QueueLimits& limits) override;
  absl::StatusOr<std::vector<OutputClaim>> LiveClaimsNestedWith(const std::string& path) override;
  absl::StatusOr<std::optional<Row>> Get(Kind kind, const std::string& id) override;
  absl::StatusOr<std::string> FindByRequestId(Kind kind, const std::string& tenant,
                                              const std::string& request_id) override;
  absl::StatusOr<std::vector<Row>> List(Kind kind, const RowQuery& query) override;
  absl::StatusOr<std::vector<Row>> InStates(Kind kind, int64_t state_mask) override;
  absl::StatusOr<std::map<int, StateCount>> CountByState(Kind kind) override;
  absl::Status Update(Kind kind, const Row& row) override;
  absl::StatusOr<int64_t> Append(Kind kind, const std::string& id,
                                 absl::FunctionRef<std::string(int64_t)> event,
                                 const Row* updated, const Fence* fence) override;
  absl::StatusOr<std::vector<std::pair<int64_t, std::string>>> ReadEvents(
      Kind kind, const std::string& id, int64_t after, int limit) override;
  absl::Status Ping() override;

  bool shared_queue() const override { return true; }
  absl::StatusOr<std::optional<ResourceLease>> ClaimJob(const ClaimRequest& request) override;
  absl::StatusOr<bool> RenewLease(Kind kind, const std::string& id, int64_t epoch,
                                  int64_t expires_micros, bool* cancel_requested) override;
  absl::StatusOr<std::vector<ResourceLease>> TakeFreeLeases(Kind kind, const std::string& owner,
                                                           int state, int64_t now_micros,
                                                           int64_t expires_micros) override;
  absl::StatusOr<bool> ReleaseLease(Kind kind, const std::string& id, int64_t epoch) override;
  absl::StatusOr<std::vector<ResourceLease>> TakeOverPreviousProcess(
      const std::string& owner, int64_t expires_micros) override;
  absl::Status RequestCancel(Kind kind, const std::string& id,
                             int64_t unfinished_state_mask) override;
  absl::StatusOr<std::vector<std::string>> PendingCancels(const std::string& owner) override;
  absl::Status Listen(std::function<void(const Signal&)> on_signal) override;
  void StopListening() override {
    if (!listener_.joinable()) return;
    if (!listen_stop_.HasBeenNotified()) listen_stop_.Notify();
    listener_.join();
  }

  // Pool: a connection for one call, opened (and prepared) on demand.
  absl::StatusOr<Lease> Acquire(bool prepare = true);
  void Release(Conn conn, bool discard);

 private:
  bool CanAcquire() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !idle_.empty() || open_ < options_.pool_size;
  }
  absl::StatusOr<PGconn*> Connect();
  absl::Status PrepareAll(PGconn* pg);
  absl::Status Migrate();
  // NOTIFY on `channel`, delivered when the lease's transaction commits.
  static absl::Status Notify(Lease& lease, const char* channel, const std::string& payload);
  // A connection that LISTENs to every channel; nullptr if it cannot.
  PGconn* ConnectListener();
  // Owns `pg` (LISTENing); reconnects when it breaks.
  void ListenLoop(PGconn* pg, std::function<void(const Signal&)> on_signal);
  absl::Status UpdateWith(Lease& lease, Kind kind, const Row& row);
  absl::StatusOr<std::vector<OutputClaim>> LiveClaims(Lease& lease, const std::string& path);
  // Inserts rows[i] and its first event. False (nothing more done) when
  // ON CONFLICT found its (tenant, client_request_id) taken.
  absl::StatusOr<bool> InsertNew(Lease& lease, const NewRow& r);
  absl::StatusOr<std::vector<Row>> Rows(Lease& lease, const std::string& name,
                                        const Params& params, const char* what);

  const PostgresOptions options_;
  absl::Mutex mu_;
  std::vector<Conn> idle_ ABSL_GUARDED_BY(mu_);
  // Connections open, idle or leased.
  int open_ ABSL_GUARDED_BY(mu_) = 0;
  // Listen()'s thread and its stop signal.
  absl::Notification listen_stop_;
  std::thread listener_;
};

Lease::~Lease() {
  if (owner_ == nullptr) return;
  Rollback();
  owner_->Release(conn_, discard_);
}

absl::StatusOr<PGconn*> PostgresBackend::Connect() {
  // Defaults first: keywords in the URI (expanded from dbname) override them.
  const std::string timeout = absl::StrCat(options_.connect_timeout_s);
  // application_name names this host (a pod's name) in pg_stat_activity and
  // in the error a second server gets.
  char host[64] = {};
  gethostname(host, sizeof(host) - 1);
  const std::string application = absl::StrCat("freezetune-server@", host).substr(0, 63);
  // TCP keepalives after 30 s idle, 3 probes 10 s apart: a database host
  // that vanished (no RST) fails a call in about a minute, not the kernel's
  // two hours.
  const char* keys[] = {"connect_timeout",    "application_name",    "keepalives_idle",
                        "keepalives_interval", "keepalives_count",    "dbname",
                        nullptr};
  const char* values[] = {timeout.c_str(), application.c_str(), "30", "10", "3",
                          options_.uri.c_str(), nullptr};
  PGconn* pg = PQconnectdbParams(keys, values, /*expand_dbname=*/1);
  if (pg == nullptr) return absl::ResourceExhaustedError("job store: libpq is out of memory");
  if (PQstatus(pg) != CONNECTION_OK) {
    absl::Status status = absl::UnavailableError(
        absl::StrCat("job store: cannot connect to ", RedactPostgresUri(options_.uri), ": ",
                     Trimmed(PQerrorMessage(pg))));
    PQfinish(pg);
    return status;
  }
  // NOTICEs ("relation ... already exists, skipping") are not errors and
  // would otherwise go to stderr unformatted.
  PQsetNoticeProcessor(pg, [](void*, const char*) {}, nullptr);
  return pg;
}

absl::Status PostgresBackend::PrepareAll(PGconn* pg) {
  auto prepare = [pg](const std::string& name, const std::string& sql) -> absl::Status {
    Result r(PQprepare(pg, name.c_str(), sql.c_str(), 0, nullptr));
    if (r == nullptr || PQresultStatus(r.get()) != PGRES_COMMAND_OK) {
      return PgError(pg, r.get(), absl::StrCat("prepare ", name));
    }
    return absl::OkStatus();
  };
  for (Kind kind : {Kind::kJob, Kind::kSweep}) {
    for (const StatementText& s : kPerKind) {
      FT_RETURN_IF_ERROR(prepare(
          StatementName(kind, s.stmt),
          absl::StrReplaceAll(s.sql, {{"{T}", Table(kind)}, {"{C}", kRowColumns}})));
    }
  }
  FT_RETURN_IF_ERROR(prepare(kInsertEvent, kInsertEventSql));
  FT_RETURN_IF_ERROR(prepare(kInsertEventNotify, kInsertEventNotifySql));
  FT_RETURN_IF_ERROR(prepare(kLiveClaims, kLiveClaimsSql));
  FT_RETURN_IF_ERROR(prepare(kInsertClaim, kInsertClaimSql));
  FT_RETURN_IF_ERROR(prepare(kAdvisoryXactLock, kAdvisoryXactLockSql));
  FT_RETURN_IF_ERROR(prepare(kTenantQueueLock, kTenantQueueLockSql));
  FT_RETURN_IF_ERROR(prepare(kCountQueued, kCountQueuedSql));
  for (const auto& [name, sql] :
       {std::pair{kInsertJob, kInsertJobSql}, {kClaim, kClaimSql},
        {kReleaseOwnQueued, kReleaseOwnQueuedSql}, {kReleaseOwnSweeps, kReleaseOwnSweepsSql},
        {kTakeOwnRunning, kTakeOwnRunningSql},
        {kPendingCancels, kPendingCancelsSql}, {kNotify, kNotifySql}}) {
    FT_RETURN_IF_ERROR(prepare(name, sql));
  }
  return prepare(kReadEvents, kReadEventsSql);
}

absl::StatusOr<Lease> PostgresBackend::Acquire(bool prepare) {
  Conn conn;
  {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(this, &PostgresBackend::CanAcquire));
    if (!idle_.empty()) {
      conn = idle_.back();
      idle_.pop_back();
    } else {
      ++open_;
    }
  }
  if (conn.pg != nullptr && !StillOpen(conn.pg)) {
    PQfinish(conn.pg);
    conn = Conn{};
  }
  if (conn.pg == nullptr) {
    absl::StatusOr<PGconn*> pg = Connect();
    if (!pg.ok()) {
      absl::MutexLock lock(&mu_);
      --open_;
      return pg.status();
    }
    conn.pg = *pg;
  }
  Lease lease(this, conn);
  if (prepare && !lease.prepared()) {
    if (absl::Status s = PrepareAll(lease.pg()); !s.ok()) {
      lease.Discard();  // some statements may exist on it: start afresh
      return s;
    }
    lease.set_prepared();
  }
  return lease;
}

void PostgresBackend::Release(Conn conn, bool discard) {
  // A broken connection, or one left inside a transaction, is closed; the
  // next call opens a fresh one.
  if (discard || PQstatus(conn.pg) != CONNECTION_OK ||
      PQtransactionStatus(conn.pg) != PQTRANS_IDLE) {
    PQfinish(conn.pg);
    absl::MutexLock lock(&mu_);
    --open_;
    return;
  }
  absl::MutexLock lock(&mu_);
  idle_.push_back(conn);
}

absl::Status PostgresBackend::Migrate() {
  FT_ASSIGN_OR_RETURN(Lease lease, Acquire(/*prepare=*/false));
  // Session-level: held across the per-version transactions below, released
  // at the end (or by the server if this connection dies).
  FT_RETURN_IF_ERROR(lease.ExecParams("SELECT pg_advisory_lock($1::bigint)",
                                      Params().Int(kMigrationLockKey), "schema lock")
                         .status());
  auto migrate = [&]() -> absl::Status {
    FT_RETURN_IF_ERROR(lease.Exec(
        "CREATE TABLE IF NOT EXISTS schema_version(version INTEGER NOT NULL)", "schema version"));
    FT_ASSIGN_OR_RETURN(Result r, lease.ExecParams("SELECT version FROM schema_version",
                                                   Params(), "schema version"));
    int version = 0;
    if (PQntuples(r.get()) == 0) {
      FT_RETURN_IF_ERROR(
          lease.Exec("INSERT INTO schema_version(version) VALUES(0)", "schema version"));
    } else {
      version = static_cast<int>(CellInt(r.get(), 0, 0));
    }
    const int initial = version;
    if (version > kSchemaVersion) {
      return absl::FailedPreconditionError(absl::StrCat(
          "job store: ", RedactPostgresUri(options_.uri), " has schema version ", version,
          ", newer than this server's (", kSchemaVersion, "); run a newer freezetune-server"));
    }
    while (version < kSchemaVersion) {
      const int next = version + 1;
      const char* sql = kMigrations[version];
      absl::Status status = lease.Begin();
      if (status.ok()) status = lease.Exec(sql, "migrate");
      if (status.ok()) {
        status = lease.ExecParams("UPDATE schema_version SET version = $1::integer",
                                  Params().Int(next), "schema version")
                     .status();
      }
      if (status.ok()) status = lease.Commit();
      if (!status.ok()) {
        lease.Rollback();
        return absl::Status(status.code(),
                            absl::StrCat("job store: migrating ", RedactPostgresUri(options_.uri),
                                         " to schema version ", next, ": ", status.message()));
      }
      version = next;
    }
    if (version != initial) {
      base::Log(base::LogLevel::kInfo,
                initial == 0 ? "store schema created" : "store schema migrated", {},
                {{"store", RedactPostgresUri(options_.uri)},
                 {"schema_version", absl::StrCat(initial, " -> ", version)}});
    }
    return absl::OkStatus();
  };
  absl::Status status = migrate();
  absl::Status unlocked = lease.ExecParams("SELECT pg_advisory_unlock($1::bigint)",
                                           Params().Int(kMigrationLockKey), "schema unlock")
                              .status();
  return status.ok() ? unlocked : status;
}

absl::Status PostgresBackend::Init() {
  if (options_.pool_size < 1) {
    return absl::InvalidArgumentError("job store: pool_size must be at least 1");
  }
  FT_RETURN_IF_ERROR(Migrate());
  // Proves the statements prepare against the migrated schema now, not at
  // the first request.
  return Acquire().status();
}

absl::StatusOr<std::vector<Row>> PostgresBackend::Rows(Lease& lease, const std::string& name,
                                                       const Params& params, const char* what) {
  FT_ASSIGN_OR_RETURN(Result r, lease.Run(name, params, what));
  std::vector<Row> rows;
  rows.reserve(PQntuples(r.get()));
  for (int i = 0; i < PQntuples(r.get()); ++i) rows.push_back(ReadRow(r.get(), i));
  return rows;
}

absl::StatusOr<std::vector<OutputClaim>> PostgresBackend::LiveClaims(Lease& lease,
                                                                   const std::string& path) {
  FT_ASSIGN_OR_RETURN(Result r, lease.Run(kLiveClaims, Params().Text(path), "read output claims"));
  std::vector<OutputClaim> claims;
  for (int i = 0; i < PQntuples(r.get()); ++i) {
    claims.push_back({CellBytes(r.get(), i, 0), CellBytes(r.get(), i, 1), CellBytes(r.get(), i, 2)});
  }
  return claims;
}

absl::StatusOr<std::vector<OutputClaim>> PostgresBackend::LiveClaimsNestedWith(
    const std::string& path) {
  FT_ASSIGN_OR_RETURN(Lease lease, Acquire());
  return LiveClaims(lease, path);
}

absl::StatusOr<bool> PostgresBackend::InsertNew(Lease& lease, const NewRow& r) {
  Params insert;
  insert.Text(r.row.id)
      .Text(r.row.tenant)
      .OptionalText(r.row.client_request_id)
      .Int(r.row.state)
      .Int(r.row.create_micros)
      .Bytes(r.row.spec)
      .Bytes(r.row.record);
  const bool job = r.kind == Kind::kJob;
  if (job) insert.Int(r.row.priority).Text(r.row.device).Int(r.row.slots);
  absl::StatusOr<Result> inserted =
      lease.Run(job ? kInsertJob : StatementName(r.kind, Stmt::kInsert), insert, "insert");
  if (!inserted.ok()) {
    // unique_violation: ON CONFLICT covers (tenant, client_request_id), so
    // this is the primary key: the id is taken.
    if (lease.last_sqlstate() == "23505") {
      return absl::AlreadyExistsError(absl::StrCat(Noun(r.kind), r.row.id, " already exists"));
    }
    return inserted.status();
  }
  // ON CONFLICT: (tenant, client_request_id) is taken, possibly by a
  // transaction that committed while this one waited.
  if (std::strcmp(PQcmdTuples(inserted->get()), "0") == 0) return false;
  FT_RETURN_IF_ERROR(lease
                         .Run(kInsertEvent,
                              Params()
                                  .Int(static_cast<int>(r.kind))
                                  .Text(r.row.id)
                                  .Int(1)
                                  .Bytes(r.first_event),
                              "insert event")
                         .status());
  if (job && r.row.state == 1) FT_RETURN_IF_ERROR(Notify(lease, kQueueChannel, ""));
  return true;
}

absl::StatusOr<Backend::CreateOutcome> PostgresBackend::Create(
    const std::vector<NewRow>& rows, const std::vector<OutputClaim>& claims,
    const QueueLimits& limits) {
  if (rows.empty()) return absl::InvalidArgumentError("job store: nothing to create");
  for (const OutputClaim& claim : claims) {
    if (claim.path.empty() || claim.owner.empty()) {
      return absl::InvalidArgumentError("job store: output claim needs a path and an owner");
    }
  }
  FT_ASSIGN_OR_RETURN(Lease lease, Acquire());
  FT_RETURN_IF_ERROR(lease.Begin());
  if (!claims.empty()) {
    // Claims are checked, then taken: replicas doing so at once would both
    // see no nested claim. Held until this transaction ends.
    FT_RETURN_IF_ERROR(lease
                           .Run(kAdvisoryXactLock, Params().Int(kClaimsLockKey),
                                "output claims lock")
                           .status());
  }
  // rows[0] first: a retry with a used client_request_id gets the existing
  // resource, not a conflict with its own earlier claim.
  FT_ASSIGN_OR_RETURN(bool inserted, InsertNew(lease, rows.front()));
  if (!inserted) {
    lease.Rollback();
    const Row& first = rows.front().row;
    FT_ASSIGN_OR_RETURN(Result found,
                        lease.Run(StatementName(rows.front().kind, Stmt::kFind),
                                  Params().Text(first.tenant).Text(first.client_request_id),
                                  "find by client_request_id"));
    if (PQntuples(found.get()) == 0) {
      return absl::AbortedError("job store: client_request_id conflict with a vanished row");
    }
    return CreateOutcome{false, CellBytes(found.get(), 0, 0), std::nullopt, std::nullopt};
  }
  for (const OutputClaim& claim : claims) {
    FT_ASSIGN_OR_RETURN(std::vector<OutputClaim> live, LiveClaims(lease, claim.path));
    if (!live.empty()) {
      lease.Rollback();
      return CreateOutcome{false, "", live.front(), std::nullopt};
    }
    FT_RETURN_IF_ERROR(lease
                           .Run(kInsertClaim,
                                Params().Text(claim.path).Text(claim.owner).Text(claim.tenant),
                                "insert output claim")
                           .status());
  }
  for (size_t i = 1; i < rows.size(); ++i) {
    FT_ASSIGN_OR_RETURN(bool more, InsertNew(lease, rows[i]));
    if (!more) {
      return absl::AlreadyExistsError(
          absl::StrCat(Noun(rows[i].kind), rows[i].row.id, ": client_request_id already used"));
    }
  }
  if (limits.total > 0 || limits.per_tenant > 0) {
    // A tenant's admissions one at a time, the lock held to the commit, so
    // that each counts every earlier one: its limit is exact. The whole
    // queue's is counted without a lock (one lock for every submit cost 0.7x
    // of a burst's submit rate on 3 replicas): admissions at the same moment
    // may each let one more in.
    const std::string& tenant = rows.front().row.tenant;
    if (limits.per_tenant > 0) {
      FT_RETURN_IF_ERROR(
          lease.Run(kTenantQueueLock, Params().Text(tenant), "tenant queue lock").status());
    }
    FT_ASSIGN_OR_RETURN(Result counted,
                        lease.Run(kCountQueued, Params().Text(tenant), "count the queued jobs"));
    // The new ones included.
    if (std::optional<QueueFull> full = OverLimits(limits, CellInt(counted.get(), 0, 0),
                                                   CellInt(counted.get(), 0, 1), rows)) {
      lease.Rollback();
      return CreateOutcome{false, "", std::nullopt, full};
    }
  }
  FT_RETURN_IF_ERROR(lease.Commit());
  return CreateOutcome{true, "", std::nullopt, std::nullopt};
}

absl::StatusOr<std::optional<Row>> PostgresBackend::Get(Kind kind, const std::string& id) {
  FT_ASSIGN_OR_RETURN(Lease lease, Acquire());
  FT_ASSIGN_OR_RETURN(std::vector<Row> rows,
                      Rows(lease, StatementName(kind, Stmt::kGet), Params().Text(id), "get"));
  if (rows.empty()) return std::optional<Row>();
  return std::optional<Row>(std::move(rows.front()));
}

absl::StatusOr<std::string> PostgresBackend::FindByRequestId(Kind kind, const std::string& tenant,
                                                             const std::string& request_id) {
  FT_ASSIGN_OR_RETURN(Lease lease, Acquire());
  FT_ASSIGN_OR_RETURN(Result r, lease.Run(StatementName(kind, Stmt::kFind),
                                          Params().Text(tenant).Text(request_id),
                                          "find by client_request_id"));
  if (PQntuples(r.get()) == 0) return std::string();
  return CellBytes(r.get(), 0, 0);
}

absl::StatusOr<std::vector<Row>> PostgresBackend::List(Kind kind, const RowQuery& query) {
  Params params;
  params.Int(query.state_mask);
  if (query.tenant.has_value()) {
    params.Text(*query.tenant);
  } else {
    params.Null();
  }
  if (query.after.has_value()) {
    params.Int(query.after->first).Text(query.after->second);
  } else {
    params.Null().Null();
  }
  params.Int(query.limit);
  FT_ASSIGN_OR_RETURN(Lease lease, Acquire());
  return Rows(lease, StatementName(kind, Stmt::kList), params, "list");
}

absl::StatusOr<std::vector<Row>> PostgresBackend::InStates(Kind kind, int64_t state_mask) {
  FT_ASSIGN_OR_RETURN(Lease lease, Acquire());
  return Rows(lease, StatementName(kind, Stmt::kInStates), Params().Int(state_mask),
              "rows in states");
}

absl::StatusOr<std::map<int, Backend::StateCount>> PostgresBackend::CountByState(Kind kind) {
  FT_ASSIGN_OR_RETURN(Lease lease, Acquire());
  FT_ASSIGN_OR_RETURN(Result r,
                      lease.Run(StatementName(kind, Stmt::kCount), Params(), "count by state"));
  std::map<int, StateCount> counts;
  for (int i = 0; i < PQntuples(r.get()); ++i) {
    counts[static_cast<int>(CellInt(r.get(), i, 0))] = {CellInt(r.get(), i, 1),
                                                        CellInt(r.get(), i, 2)};
  }
  return counts;
}

absl::Status PostgresBackend::UpdateWith(Lease& lease, Kind kind, const Row& row) {
  FT_ASSIGN_OR_RETURN(Result r, lease.Run(StatementName(kind, Stmt::kUpdate),
                                          Params().Text(row.id).Int(row.state).Bytes(row.record),
                                          "update"));
  if (std::strcmp(PQcmdTuples(r.get()), "0") == 0) {
    return absl::NotFoundError(absl::StrCat(Noun(kind), row.id, " not found"));
  }
  return absl::OkStatus();
}

absl::Status PostgresBackend::Update(Kind kind, const Row& row) {
  FT_ASSIGN_OR_RETURN(Lease lease, Acquire());
  return UpdateWith(lease, kind, row);
}

absl::StatusOr<int64_t> PostgresBackend::Append(Kind kind, const std::string& id,
                                                absl::FunctionRef<std::string(int64_t)> event,
                                                const Row* updated, const Fence* fence) {
  FT_ASSIGN_OR_RETURN(Lease lease, Acquire());
  FT_RETURN_IF_ERROR(lease.Begin());
  // The row lock taken here orders concurrent appenders (and lease changes)
  // until the commit.
  FT_ASSIGN_OR_RETURN(Result bumped, lease.Run(StatementName(kind, Stmt::kBump),
                                               Params().Text(id), "bump sequence"));
  if (PQntuples(bumped.get()) == 0) {
    return absl::NotFoundError(absl::StrCat(Noun(kind), id, " not found"));
  }
  const int64_t sequence = CellInt(bumped.get(), 0, 0);
  if (fence != nullptr && CellInt(bumped.get(), 0, 1) != fence->epoch) {
    return absl::AbortedError(absl::StrCat(
        "job store: ", Noun(kind), id, ": lease epoch ", fence->epoch,
        " was superseded by epoch ", CellInt(bumped.get(), 0, 1),
        " (another replica took it over); nothing written"));
  }
  const std::string payload =
      absl::StrCat(static_cast<int>(kind), "|", sequence, "|", options_.origin, "|", id);
  FT_RETURN_IF_ERROR(lease
                         .Run(kInsertEventNotify,
                              Params()
                                  .Int(static_cast<int>(kind))
                                  .Text(id)
                                  .Int(sequence)
                                  .Bytes(event(sequence))
                                  .Text(kEventsChannel)
                                  .Text(payload),
                              "insert event")
                         .status());
  if (updated != nullptr) FT_RETURN_IF_ERROR(UpdateWith(lease, kind, *updated));
  if (fence != nullptr && fence->release) {
    FT_ASSIGN_OR_RETURN(Result released,
                        lease.Run(StatementName(kind, Stmt::kRelease),
                                  Params().Text(id).Int(fence->epoch), "release lease"));
    if (kind == Kind::kJob && PQntuples(released.get()) == 1 &&
        CellInt(released.get(), 0, 0) == 1) {
      FT_RETURN_IF_ERROR(Notify(lease, kQueueChannel, ""));
    }
  }
  FT_RETURN_IF_ERROR(lease.Commit());
  return sequence;
}

absl::StatusOr<std::vector<std::pair<int64_t, std::string>>> PostgresBackend::ReadEvents(
    Kind kind, const std::string& id, int64_t after, int limit) {
  Params params;
  params.Int(static_cast<int>(kind)).Text(id).Int(after);
  if (limit > 0) {
    params.Int(limit);
  } else {
    params.Null();  // LIMIT NULL: all
  }
  FT_ASSIGN_OR_RETURN(Lease lease, Acquire());
  FT_ASSIGN_OR_RETURN(Result r, lease.Run(kReadEvents, params, "read events"));
  std::vector<std::pair<int64_t, std::string>> events;
  events.reserve(PQntuples(r.get()));
  for (int i = 0; i < PQntuples(r.get()); ++i) {
    events.emplace_back(CellInt(r.get(), i, 0), CellBytes(r.get(), i, 1));
  }
  return events;
}

absl::Status PostgresBackend::Notify(Lease& lease, const char* channel,
                                     const std::string& payload) {
  return lease.Run(kNotify, Params().Text(channel).Text(payload), "notify").status();
}

absl::StatusOr<std::optional<ResourceLease>> PostgresBackend::ClaimJob(const ClaimRequest& request) {
  // Params keeps pointers: the text must outlive it.
  const std::string gpu_devices = absl::StrJoin(request.gpu_devices, ",");
  Params params;
  params.Text(request.owner)
      .Int(request.now_micros)
      .Int(request.expires_micros)
      .Int(request.idle_cpu_slots)
      .Int(request.idle_gpu_slots)
      .Text(gpu_devices)
      .Int(request.max_running_per_tenant)
      .OptionalText(request.only_id);
  FT_ASSIGN_OR_RETURN(Lease lease, Acquire());
  FT_RETURN_IF_ERROR(lease.Begin());
  if (request.max_running_per_tenant > 0) {
    // Two replicas counting a tenant's running jobs at once would both see
    // room for one more.
    FT_RETURN_IF_ERROR(
        lease.Run(kAdvisoryXactLock, Params().Int(kTenantClaimLockKey), "claim lock").status());
  }
  FT_ASSIGN_OR_RETURN(Result r, lease.Run(kClaim, params, "claim a job"));
  FT_RETURN_IF_ERROR(lease.Commit());
  if (PQntuples(r.get()) == 0) return std::optional<ResourceLease>();
  ResourceLease claimed;
  claimed.id = CellBytes(r.get(), 0, 0);
  claimed.epoch = CellInt(r.get(), 0, 1);
  claimed.cancel_requested = CellInt(r.get(), 0, 2) != 0;
  return std::optional<ResourceLease>(std::move(claimed));
}

absl::StatusOr<bool> PostgresBackend::RenewLease(Kind kind, const std::string& id,
                                                 int64_t epoch, int64_t expires_micros,
                                                 bool* cancel_requested) {
  FT_ASSIGN_OR_RETURN(Lease lease, Acquire());
  FT_ASSIGN_OR_RETURN(Result r, lease.Run(StatementName(kind, Stmt::kRenew),
                                          Params().Text(id).Int(epoch).Int(expires_micros),
                                          "renew lease"));
  if (PQntuples(r.get()) == 0) return false;
  if (cancel_requested != nullptr) *cancel_requested = CellInt(r.get(), 0, 0) != 0;
  return true;
}

// The rows of a claim or takeover: id, epoch, previous owner, cancel_requested.
std::vector<ResourceLease> ReadLeases(const PGresult* r) {
  std::vector<ResourceLease> leases;
  for (int i = 0; i < PQntuples(r); ++i) {
    ResourceLease t;
    t.id = CellBytes(r, i, 0);
    t.epoch = CellInt(r, i, 1);
    t.previous_owner = CellBytes(r, i, 2);
    t.cancel_requested = CellInt(r, i, 3) != 0;
    leases.push_back(std::move(t));
  }
  return leases;
}

absl::StatusOr<std::vector<ResourceLease>> PostgresBackend::TakeFreeLeases(
    Kind kind, const std::string& owner, int state, int64_t now_micros, int64_t expires_micros) {
  FT_ASSIGN_OR_RETURN(Lease lease, Acquire());
  FT_ASSIGN_OR_RETURN(
      Result r,
      lease.Run(StatementName(kind, Stmt::kTakeFree),
                Params().Text(owner).Int(now_micros).Int(expires_micros).Int(state),
                "take free leases"));
  return ReadLeases(r.get());
}

absl::StatusOr<bool> PostgresBackend::ReleaseLease(Kind kind, const std::string& id,
                                                   int64_t epoch) {
  FT_ASSIGN_OR_RETURN(Lease lease, Acquire());
  FT_RETURN_IF_ERROR(lease.Begin());
  FT_ASSIGN_OR_RETURN(Result r, lease.Run(StatementName(kind, Stmt::kRelease),
                                          Params().Text(id).Int(epoch), "release lease"));
  const bool released = PQntuples(r.get()) == 1;
  if (kind == Kind::kJob && released && CellInt(r.get(), 0, 0) == 1) {
    FT_RETURN_IF_ERROR(Notify(lease, kQueueChannel, ""));
  }
  FT_RETURN_IF_ERROR(lease.Commit());
  return released;
}

absl::StatusOr<std::vector<ResourceLease>> PostgresBackend::TakeOverPreviousProcess(
    const std::string& owner, int64_t expires_micros) {
  FT_ASSIGN_OR_RETURN(Lease lease, Acquire());
  FT_RETURN_IF_ERROR(lease.Begin());
  FT_ASSIGN_OR_RETURN(Result released, lease.Run(kReleaseOwnQueued, Params().Text(owner),
                                                 "release the previous process's claims"));
  if (std::strcmp(PQcmdTuples(released.get()), "0") != 0) {
    FT_RETURN_IF_ERROR(Notify(lease, kQueueChannel, ""));
  }
  FT_RETURN_IF_ERROR(lease.Run(kReleaseOwnSweeps, Params().Text(owner),
                               "release the previous process's sweeps")
                         .status());
  FT_ASSIGN_OR_RETURN(Result taken,
                      lease.Run(kTakeOwnRunning, Params().Text(owner).Int(expires_micros),
                                "take over the previous process's jobs"));
  FT_RETURN_IF_ERROR(lease.Commit());
  return ReadLeases(taken.get());
}

absl::Status PostgresBackend::RequestCancel(Kind kind, const std::string& id,
                                            int64_t unfinished_state_mask) {
  FT_ASSIGN_OR_RETURN(Lease lease, Acquire());
  FT_RETURN_IF_ERROR(lease.Begin());
  FT_RETURN_IF_ERROR(lease.Run(StatementName(kind, Stmt::kRequestCancel),
                               Params().Text(id).Int(unfinished_state_mask), "request cancel")
                         .status());
  FT_RETURN_IF_ERROR(Notify(lease, kCancelChannel, id));
  return lease.Commit();
}

absl::StatusOr<std::vector<std::string>> PostgresBackend::PendingCancels(
    const std::string& owner) {
  FT_ASSIGN_OR_RETURN(Lease lease, Acquire());
  FT_ASSIGN_OR_RETURN(Result r,
                      lease.Run(kPendingCancels, Params().Text(owner), "pending cancels"));
  std::vector<std::string> ids;
  for (int i = 0; i < PQntuples(r.get()); ++i) ids.push_back(CellBytes(r.get(), i, 0));
  return ids;
}

PGconn* PostgresBackend::ConnectListener() {
  absl::StatusOr<PGconn*> pg = Connect();
  if (!pg.ok()) return nullptr;
  const std::string sql =
      absl::StrCat("LISTEN ", kEventsChannel, "; LISTEN ", kQueueChannel, "; LISTEN ",
                   kCancelChannel);
  Result r(PQexec(*pg, sql.c_str()));
  if (r == nullptr || PQresultStatus(r.get()) != PGRES_COMMAND_OK) {
    PQfinish(*pg);
    return nullptr;
  }
  return *pg;
}

absl::Status PostgresBackend::Listen(std::function<void(const Signal&)> on_signal) {
  if (listener_.joinable()) return absl::FailedPreconditionError("job store: already listening");
  PGconn* first = ConnectListener();
  if (first == nullptr) {
    return absl::UnavailableError(absl::StrCat("job store: cannot LISTEN on ",
                                               RedactPostgresUri(options_.uri)));
  }
  // Listening from now on: whatever commits after Listen returns is heard.
  listener_ = std::thread(
      [this, first, on_signal = std::move(on_signal)] { ListenLoop(first, on_signal); });
  return absl::OkStatus();
}

// Parses a payload of kEventsChannel; false for a malformed one.
bool ParseEventPayload(const std::string& payload, Signal* signal) {
  std::vector<std::string> parts = absl::StrSplit(payload, absl::MaxSplits('|', 3));
  int kind = 0;
  if (parts.size() != 4 || !absl::SimpleAtoi(parts[0], &kind) ||
      (kind != static_cast<int>(Kind::kJob) && kind != static_cast<int>(Kind::kSweep)) ||
      !absl::SimpleAtoi(parts[1], &signal->sequence)) {
    return false;
  }
  signal->kind = static_cast<Kind>(kind);
  signal->origin = std::move(parts[2]);
  signal->id = std::move(parts[3]);
  return true;
}

void PostgresBackend::ListenLoop(PGconn* pg, std::function<void(const Signal&)> on_signal) {
  while (!listen_stop_.HasBeenNotified()) {
    if (pg == nullptr || PQstatus(pg) != CONNECTION_OK) {
      if (pg != nullptr) PQfinish(pg);
      pg = nullptr;
      if (listen_stop_.WaitForNotificationWithTimeout(absl::Seconds(1))) break;
      pg = ConnectListener();
      // Whatever was announced while no connection listened is lost.
      if (pg != nullptr) {
        Signal resync;
        resync.type = Signal::Type::kResync;
        on_signal(resync);
      }
      continue;
    }
    pollfd fd{PQsocket(pg), POLLIN, 0};
    if (::poll(&fd, 1, /*timeout_ms=*/200) <= 0) continue;
    if (PQconsumeInput(pg) == 0) continue;  // broken: reconnects above
    while (PGnotify* n = PQnotifies(pg)) {
      Signal signal;
      const absl::string_view channel = n->relname;
      if (channel == kEventsChannel) {
        if (!ParseEventPayload(n->extra, &signal)) signal.type = Signal::Type::kResync;
      } else if (channel == kQueueChannel) {
        signal.type = Signal::Type::kQueued;
      } else {
        signal.type = Signal::Type::kCancel;
        signal.id = n->extra;
      }
      PQfreemem(n);
      on_signal(signal);
    }
  }
  if (pg != nullptr) PQfinish(pg);
}

absl::Status PostgresBackend::Ping() {
  FT_ASSIGN_OR_RETURN(Lease lease, Acquire());
  return lease.Exec("SELECT 1", "ping");
}

// The password of a URI's userinfo ("user:password@"), if any; to scrub
// libpq messages about a URI it could not parse.
std::string UriPassword(const std::string& uri) {
  const size_t scheme = uri.find("://");
  if (scheme == std::string::npos) return "";
  const size_t start = scheme + 3;
  const size_t end = uri.find_first_of("/?", start);
  const std::string authority = uri.substr(start, end == std::string::npos ? end : end - start);
  const size_t at = authority.rfind('@');
  if (at == std::string::npos) return "";
  const size_t colon = authority.find(':');
  if (colon == std::string::npos || colon > at) return "";
  return authority.substr(colon + 1, at - colon - 1);
}

}  // namespace

bool IsPostgresUri(const std::string& uri) {
  return absl::StartsWith(uri, "postgresql://") || absl::StartsWith(uri, "postgres://");
}

absl::Status ValidatePostgresUri(const std::string& uri, const std::string& field) {
  if (!IsPostgresUri(uri)) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": expected a postgresql:// URI"));
  }
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(uri.c_str(), &error);
  if (options == nullptr) {
    std::string reason = Trimmed(error != nullptr ? error : "out of memory");
    PQfreemem(error);
    const std::string password = UriPassword(uri);
    if (!password.empty()) reason = absl::StrReplaceAll(reason, {{password, "***"}});
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": not a valid PostgreSQL connection URI: ", reason));
  }
  PQconninfoFree(options);
  return absl::OkStatus();
}

std::string RedactPostgresUri(const std::string& uri) {
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(uri.c_str(), &error);
  PQfreemem(error);
  if (options == nullptr || !IsPostgresUri(uri)) {
    if (options != nullptr) PQconninfoFree(options);
    return "postgresql://(unparsable)";
  }
  std::string user, host, port, dbname;
  for (PQconninfoOption* o = options; o->keyword != nullptr; ++o) {
    if (o->val == nullptr) continue;
    const absl::string_view key = o->keyword;
    if (key == "user") user = o->val;
    if (key == "host") host = o->val;
    if (key == "port") port = o->val;
    if (key == "dbname") dbname = o->val;
  }
  PQconninfoFree(options);
  return absl::StrCat("postgresql://", user, user.empty() ? "" : "@", host, port.empty() ? "" : ":",
                      port, "/", dbname);
}

int PostgresSchemaVersion() { return kSchemaVersion; }

absl::StatusOr<std::unique_ptr<Backend>> OpenPostgresBackend(const PostgresOptions& options) {
  FT_RETURN_IF_ERROR(ValidatePostgresUri(options.uri, "job store"));
  auto backend = std::make_unique<PostgresBackend>(options);
  FT_RETURN_IF_ERROR(backend->Init());
  return std::unique_ptr<Backend>(std::move(backend));
}

}  // namespace freezetune::store
