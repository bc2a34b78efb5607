#include "server/store/sqlite_backend.h"

#include <sqlite3.h>

#include <filesystem>
#include <string_view>
#include <system_error>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/synchronization/mutex.h"
#include "freezetune/v1/freezetune.pb.h"
#include "server/base/log.h"
#include "server/common/status_macros.h"
#include "server/store/records.h"

namespace freezetune::store {
namespace {

constexpr int kSchemaVersion = 3;

// Version 1: the schema of servers before the unified store.
constexpr const char* kSchemaV1 = R"sql(
CREATE TABLE IF NOT EXISTS jobs(
  id TEXT PRIMARY KEY,
  tenant TEXT NOT NULL,
  client_request_id TEXT,
  state INTEGER NOT NULL,
  create_time INTEGER NOT NULL,
  last_sequence INTEGER NOT NULL DEFAULT 0,
  spec BLOB NOT NULL,
  job BLOB NOT NULL,
  UNIQUE(tenant, client_request_id));
CREATE INDEX IF NOT EXISTS jobs_by_create_time ON jobs(create_time DESC, id DESC);
CREATE TABLE IF NOT EXISTS events(
  job_id TEXT NOT NULL,
  sequence INTEGER NOT NULL,
  event BLOB NOT NULL,
  PRIMARY KEY(job_id, sequence)) WITHOUT ROWID;
)sql";

// Version 2: jobs and sweeps with the same columns, one events table.
constexpr const char* kSchemaV2 = R"sql(
ALTER TABLE jobs RENAME COLUMN job TO record;
CREATE TABLE sweeps(
  id TEXT PRIMARY KEY,
  tenant TEXT NOT NULL,
  client_request_id TEXT,               -- NULL when the client gave none
  state INTEGER NOT NULL,
  create_time INTEGER NOT NULL,         -- microseconds since the epoch
  last_sequence INTEGER NOT NULL DEFAULT 0,
  spec BLOB NOT NULL,                   -- serialized freezetune.v1.SweepSpec
  record BLOB NOT NULL,                 -- serialized freezetune.v1.Sweep
  UNIQUE(tenant, client_request_id));
CREATE INDEX sweeps_by_create_time ON sweeps(create_time DESC, id DESC);
CREATE TABLE resource_events(
  kind INTEGER NOT NULL,                -- 1 job, 2 sweep
  resource_id TEXT NOT NULL,
  sequence INTEGER NOT NULL,
  event BLOB NOT NULL,                  -- serialized JobEvent / SweepEvent
  PRIMARY KEY(kind, resource_id, sequence)) WITHOUT ROWID;
INSERT INTO resource_events(kind, resource_id, sequence, event)
  SELECT 1, job_id, sequence, event FROM events;
DROP TABLE events;
ALTER TABLE resource_events RENAME TO events;
)sql";

// Version 3: output claims (issue 14.1). IF NOT EXISTS: a file written by a
// server of the harden branch before the unified store already has it.
constexpr const char* kSchemaV3 = R"sql(
CREATE TABLE IF NOT EXISTS output_claims(
  path TEXT PRIMARY KEY,                -- canonical output directory or s3:// key
  owner TEXT NOT NULL,                  -- job or sweep id
  tenant TEXT NOT NULL);
)sql";

const char* Table(Kind kind) { return kind == Kind::kJob ? "jobs" : "sweeps"; }

// Resets a statement and its bindings when a scope ends, so every early
// return leaves the prepared statement reusable.
class StmtScope {
 public:
  explicit StmtScope(sqlite3_stmt* stmt) : stmt_(stmt) {}
  ~StmtScope() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
  StmtScope(const StmtScope&) = delete;
  StmtScope& operator=(const StmtScope&) = delete;

 private:
  sqlite3_stmt* stmt_;
};

void BindText(sqlite3_stmt* stmt, int index, std::string_view text) {
  sqlite3_bind_text(stmt, index, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
}

void BindBlob(sqlite3_stmt* stmt, int index, const std::string& bytes) {
  sqlite3_bind_blob(stmt, index, bytes.data(), static_cast<int>(bytes.size()), SQLITE_TRANSIENT);
}

std::string ColumnBytes(sqlite3_stmt* stmt, int column) {
  const void* data = sqlite3_column_blob(stmt, column);
  int size = sqlite3_column_bytes(stmt, column);
  if (data == nullptr || size <= 0) return std::string();
  return std::string(static_cast<const char*>(data), static_cast<size_t>(size));
}

std::string ColumnText(sqlite3_stmt* stmt, int column) {
  const unsigned char* data = sqlite3_column_text(stmt, column);
  int size = sqlite3_column_bytes(stmt, column);
  if (data == nullptr || size <= 0) return std::string();
  return std::string(reinterpret_cast<const char*>(data), static_cast<size_t>(size));
}

// The columns every row query selects, in Row order.
constexpr char kRowColumns[] =
    "id, tenant, client_request_id, state, create_time, last_sequence, spec, record";

Row ReadRow(sqlite3_stmt* stmt) {
  Row row;
  row.id = ColumnText(stmt, 0);
  row.tenant = ColumnText(stmt, 1);
  row.client_request_id = ColumnText(stmt, 2);
  row.state = sqlite3_column_int(stmt, 3);
  row.create_micros = sqlite3_column_int64(stmt, 4);
  row.last_sequence = sqlite3_column_int64(stmt, 5);
  row.spec = ColumnBytes(stmt, 6);
  row.record = ColumnBytes(stmt, 7);
  return row;
}

class SqliteBackend final : public Backend {
 public:
  explicit SqliteBackend(sqlite3* db) : db_(db) {}
  ~SqliteBackend() override;

  absl::Status Init(const SqliteOptions& options);

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
  absl::Status ProbeWrite() override;

 private:
  // Prepared statements of one kind's table.
  struct Statements {
    sqlite3_stmt* insert = nullptr;
    sqlite3_stmt* find_by_request_id = nullptr;
    sqlite3_stmt* get = nullptr;
    sqlite3_stmt* update = nullptr;
    sqlite3_stmt* bump_sequence = nullptr;
    sqlite3_stmt* list = nullptr;
    sqlite3_stmt* in_states = nullptr;
    sqlite3_stmt* count_by_state = nullptr;
  };

  absl::Status Exec(const char* sql) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status SqlError(const char* what) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<int> ReadVersion() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Migrate(const SqliteOptions& options) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status ImportLegacySweeps() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Prepare() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Statements& S(Kind kind) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return kind == Kind::kJob ? jobs_ : sweeps_;
  }
  absl::Status InsertRow(Kind kind, const Row& row) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status InsertEvent(Kind kind, const std::string& id, int64_t sequence,
                           const std::string& bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status UpdateLocked(Kind kind, const Row& row) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::string> FindLocked(Kind kind, const std::string& tenant,
                                         const std::string& request_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::vector<OutputClaim>> LiveClaimsLocked(const std::string& path)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status InsertClaimLocked(const OutputClaim& claim) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  sqlite3* db_ ABSL_GUARDED_BY(mu_);
  Statements jobs_ ABSL_GUARDED_BY(mu_);
  Statements sweeps_ ABSL_GUARDED_BY(mu_);
  sqlite3_stmt* insert_event_ ABSL_GUARDED_BY(mu_) = nullptr;
  sqlite3_stmt* read_events_ ABSL_GUARDED_BY(mu_) = nullptr;
  sqlite3_stmt* live_claims_ ABSL_GUARDED_BY(mu_) = nullptr;
  sqlite3_stmt* insert_claim_ ABSL_GUARDED_BY(mu_) = nullptr;
  sqlite3_stmt* count_queued_ ABSL_GUARDED_BY(mu_) = nullptr;
};

SqliteBackend::~SqliteBackend() {
  absl::MutexLock lock(&mu_);
  for (Statements* s : {&jobs_, &sweeps_}) {
    for (sqlite3_stmt* stmt : {s->insert, s->find_by_request_id, s->get, s->update,
                               s->bump_sequence, s->list, s->in_states, s->count_by_state}) {
      if (stmt != nullptr) sqlite3_finalize(stmt);
    }
  }
  if (insert_event_ != nullptr) sqlite3_finalize(insert_event_);
  if (read_events_ != nullptr) sqlite3_finalize(read_events_);
  if (live_claims_ != nullptr) sqlite3_finalize(live_claims_);
  if (insert_claim_ != nullptr) sqlite3_finalize(insert_claim_);
  if (count_queued_ != nullptr) sqlite3_finalize(count_queued_);
  sqlite3_close(db_);
}

absl::Status SqliteBackend::SqlError(const char* what) const {
  return absl::InternalError(absl::StrCat("job store: ", what, ": ", sqlite3_errmsg(db_)));
}

absl::Status SqliteBackend::Exec(const char* sql) {
  char* error = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &error) != SQLITE_OK) {
    absl::Status status =
        absl::InternalError(absl::StrCat("job store: ", error != nullptr ? error : "exec failed"));
    sqlite3_free(error);
    return status;
  }
  return absl::OkStatus();
}

absl::StatusOr<int> SqliteBackend::ReadVersion() {
  FT_RETURN_IF_ERROR(Exec("CREATE TABLE IF NOT EXISTS schema_version(version INTEGER NOT NULL)"));
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v2(db_, "SELECT version FROM schema_version", -1, &stmt, nullptr) !=
      SQLITE_OK) {
    return SqlError("schema version");
  }
  int rc = sqlite3_step(stmt);
  std::optional<int> version;
  if (rc == SQLITE_ROW) version = sqlite3_column_int(stmt, 0);
  sqlite3_finalize(stmt);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) return SqlError("schema version");
  if (version.has_value()) return *version;
  // No row: a new file (0), or one from before schema_version (1).
  if (sqlite3_prepare_v2(db_, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'jobs'",
                         -1, &stmt, nullptr) != SQLITE_OK) {
    return SqlError("schema version");
  }
  rc = sqlite3_step(stmt);
  sqlite3_finalize(stmt);
  const int detected = rc == SQLITE_ROW ? 1 : 0;
  FT_RETURN_IF_ERROR(Exec(absl::StrCat("INSERT INTO schema_version(version) VALUES(", detected, ")")
                              .c_str()));
  return detected;
}

absl::Status SqliteBackend::ImportLegacySweeps() {
  sqlite3_stmt* select = nullptr;
  if (sqlite3_prepare_v2(db_, "SELECT record FROM legacy.sweeps", -1, &select, nullptr) !=
      SQLITE_OK) {
    return SqlError("import legacy sweeps");
  }
  sqlite3_stmt* insert = nullptr;
  if (sqlite3_prepare_v2(db_,
                         "INSERT OR IGNORE INTO sweeps(id, tenant, client_request_id, state, "
                         "create_time, last_sequence, spec, record) "
                         "VALUES(?1, ?2, NULL, ?3, ?4, ?5, ?6, ?7)",
                         -1, &insert, nullptr) != SQLITE_OK) {
    sqlite3_finalize(select);
    return SqlError("import legacy sweeps");
  }
  absl::Status status;
  int imported = 0;
  int skipped = 0;
  while (status.ok()) {
    int rc = sqlite3_step(select);
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) {
      status = SqlError("import legacy sweeps");
      break;
    }
    v1::Sweep sweep;
    if (!sweep.ParseFromString(ColumnBytes(select, 0)) || sweep.id().empty()) {
      ++skipped;  // the old server skipped such rows at load too
      continue;
    }
    StmtScope scope(insert);
    BindText(insert, 1, sweep.id());
    BindText(insert, 2, sweep.tenant());
    sqlite3_bind_int(insert, 3, sweep.state());
    sqlite3_bind_int64(insert, 4, ToMicros(sweep.create_time()));
    sqlite3_bind_int64(insert, 5, sweep.last_sequence());
    BindBlob(insert, 6, sweep.spec().SerializeAsString());
    BindBlob(insert, 7, sweep.SerializeAsString());
    if (sqlite3_step(insert) != SQLITE_DONE) status = SqlError("import legacy sweep");
    ++imported;
  }
  sqlite3_finalize(select);
  sqlite3_finalize(insert);
  FT_RETURN_IF_ERROR(status);
  FT_RETURN_IF_ERROR(Exec(
      "INSERT OR IGNORE INTO events(kind, resource_id, sequence, event) "
      "SELECT 2, sweep_id, sequence, event FROM legacy.sweep_events;"
      "UPDATE sweeps SET last_sequence = MAX(last_sequence, (SELECT COALESCE(MAX(sequence), 0) "
      "FROM events WHERE kind = 2 AND resource_id = sweeps.id));"));
  base::Log(base::LogLevel::kInfo, "imported the sweeps of a legacy sweeps.db", {},
            {{"sweeps", absl::StrCat(imported)}, {"unreadable", absl::StrCat(skipped)}});
  return absl::OkStatus();
}

absl::Status SqliteBackend::Migrate(const SqliteOptions& options) {
  FT_ASSIGN_OR_RETURN(int version, ReadVersion());
  const int initial = version;
  if (version > kSchemaVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        "job store: ", options.path, " has schema version ", version,
        ", newer than this server's (", kSchemaVersion, "); run a newer freezetune-server"));
  }
  std::error_code ec;
  const bool legacy = version < 2 && !options.legacy_sweeps_path.empty() &&
                      std::filesystem::is_regular_file(options.legacy_sweeps_path, ec) &&
                      std::filesystem::file_size(options.legacy_sweeps_path, ec) > 0;
  if (legacy) {
    // ATTACH is refused inside a transaction, so it comes first.
    sqlite3_stmt* attach = nullptr;
    if (sqlite3_prepare_v2(db_, "ATTACH DATABASE ?1 AS legacy", -1, &attach, nullptr) !=
        SQLITE_OK) {
      return SqlError("attach legacy sweeps.db");
    }
    BindText(attach, 1, options.legacy_sweeps_path);
    int rc = sqlite3_step(attach);
    sqlite3_finalize(attach);
    if (rc != SQLITE_DONE) return SqlError("attach legacy sweeps.db");
  }
  while (version < kSchemaVersion) {
    const int next = version + 1;
    FT_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
    absl::Status status = Exec(next == 1 ? kSchemaV1 : next == 2 ? kSchemaV2 : kSchemaV3);
    if (status.ok() && next == 2 && legacy) status = ImportLegacySweeps();
    if (status.ok()) {
      status = Exec(absl::StrCat("UPDATE schema_version SET version = ", next).c_str());
    }
    if (status.ok()) status = Exec("COMMIT");
    if (!status.ok()) {
      (void)Exec("ROLLBACK");
      if (legacy) (void)Exec("DETACH DATABASE legacy");
      return absl::Status(status.code(), absl::StrCat("job store: migrating ", options.path,
                                                      " to schema version ", next, ": ",
                                                      status.message()));
    }
    version = next;
  }
  if (version != initial) {
    base::Log(base::LogLevel::kInfo, initial == 0 ? "store schema created" : "store schema migrated", {},
              {{"path", options.path},
               {"schema_version", absl::StrCat(initial, " -> ", version)}});
  }
  if (legacy) {
    FT_RETURN_IF_ERROR(Exec("DETACH DATABASE legacy"));
    // Imported: renamed so that it is never imported twice (a rename that
    // fails only leaves a file the next start ignores: the version is >= 2).
    std::filesystem::rename(options.legacy_sweeps_path, options.legacy_sweeps_path + ".imported",
                            ec);
  }
  return absl::OkStatus();
}

absl::Status SqliteBackend::Prepare() {
  auto prepare = [this](sqlite3_stmt** stmt, const std::string& sql)
                     ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) -> absl::Status {
    if (sqlite3_prepare_v3(db_, sql.c_str(), -1, SQLITE_PREPARE_PERSISTENT, stmt, nullptr) !=
        SQLITE_OK) {
      return SqlError("prepare");
    }
    return absl::OkStatus();
  };
  for (Kind kind : {Kind::kJob, Kind::kSweep}) {
    Statements& s = S(kind);
    auto sql = [kind](const char* text) {
      return absl::StrReplaceAll(text, {{"$T", Table(kind)}, {"$C", kRowColumns}});
    };
    FT_RETURN_IF_ERROR(prepare(&s.insert, sql("INSERT INTO $T($C) "
                                              "VALUES(?1, ?2, ?3, ?4, ?5, 0, ?6, ?7)")));
    FT_RETURN_IF_ERROR(prepare(&s.find_by_request_id,
                               sql("SELECT id FROM $T WHERE tenant = ?1 AND "
                                   "client_request_id = ?2")));
    FT_RETURN_IF_ERROR(prepare(&s.get, sql("SELECT $C FROM $T WHERE id = ?1")));
    FT_RETURN_IF_ERROR(
        prepare(&s.update, sql("UPDATE $T SET state = ?2, record = ?3 WHERE id = ?1")));
    FT_RETURN_IF_ERROR(prepare(&s.bump_sequence,
                               sql("UPDATE $T SET last_sequence = last_sequence + 1 "
                                   "WHERE id = ?1 RETURNING last_sequence")));
    FT_RETURN_IF_ERROR(prepare(
        &s.list, sql("SELECT $C FROM $T "
                     "WHERE (?1 = 0 OR ((1 << state) & ?1) != 0) "
                     "AND (?2 IS NULL OR tenant = ?2) "
                     "AND (?3 IS NULL OR create_time < ?3 OR (create_time = ?3 AND id < ?4)) "
                     "ORDER BY create_time DESC, id DESC LIMIT ?5")));
    FT_RETURN_IF_ERROR(prepare(&s.in_states, sql("SELECT $C FROM $T "
                                                 "WHERE ((1 << state) & ?1) != 0 "
                                                 "ORDER BY create_time ASC, id ASC")));
    FT_RETURN_IF_ERROR(prepare(
        &s.count_by_state, sql("SELECT state, COUNT(*), MIN(create_time) FROM $T GROUP BY state")));
  }
  FT_RETURN_IF_ERROR(prepare(&insert_event_,
                             "INSERT INTO events(kind, resource_id, sequence, event) "
                             "VALUES(?1, ?2, ?3, ?4)"));
  FT_RETURN_IF_ERROR(prepare(&read_events_,
                             "SELECT sequence, event FROM events WHERE kind = ?1 AND "
                             "resource_id = ?2 AND sequence > ?3 ORDER BY sequence ASC LIMIT ?4"));
  // Nested: equal, ?1 inside the claim, or the claim inside ?1 (whole
  // components). Live: not owned by a FAILED (4) or CANCELLED (5) job.
  FT_RETURN_IF_ERROR(prepare(
      &live_claims_,
      "SELECT c.path, c.owner, c.tenant FROM output_claims c LEFT JOIN jobs j ON j.id = c.owner "
      "WHERE (c.path = ?1 OR substr(?1, 1, length(c.path) + 1) = c.path || '/' "
      "OR substr(c.path, 1, length(?1) + 1) = ?1 || '/') "
      "AND (j.id IS NULL OR j.state NOT IN (4, 5)) ORDER BY c.path"));
  FT_RETURN_IF_ERROR(prepare(&insert_claim_,
                             "INSERT OR REPLACE INTO output_claims(path, owner, tenant) "
                             "VALUES(?1, ?2, ?3)"));
  FT_RETURN_IF_ERROR(prepare(&count_queued_,
                             "SELECT COUNT(*), TOTAL(tenant = ?1) FROM jobs WHERE state = 1"));
  return absl::OkStatus();
}

absl::Status SqliteBackend::Init(const SqliteOptions& options) {
  absl::MutexLock lock(&mu_);
  sqlite3_busy_timeout(db_, options.busy_timeout_ms);
  FT_RETURN_IF_ERROR(Exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"));
  if (options.max_page_count > 0) {
    FT_RETURN_IF_ERROR(
        Exec(absl::StrCat("PRAGMA max_page_count = ", options.max_page_count).c_str()));
  }
  FT_RETURN_IF_ERROR(Migrate(options));
  return Prepare();
}

absl::Status SqliteBackend::InsertRow(Kind kind, const Row& row) {
  sqlite3_stmt* stmt = S(kind).insert;
  StmtScope scope(stmt);
  BindText(stmt, 1, row.id);
  BindText(stmt, 2, row.tenant);
  if (row.client_request_id.empty()) {
    sqlite3_bind_null(stmt, 3);
  } else {
    BindText(stmt, 3, row.client_request_id);
  }
  sqlite3_bind_int(stmt, 4, row.state);
  sqlite3_bind_int64(stmt, 5, row.create_micros);
  BindBlob(stmt, 6, row.spec);
  BindBlob(stmt, 7, row.record);
  if (sqlite3_step(stmt) == SQLITE_DONE) return absl::OkStatus();
  if (sqlite3_extended_errcode(db_) == SQLITE_CONSTRAINT_PRIMARYKEY) {
    return absl::AlreadyExistsError(absl::StrCat(kind == Kind::kJob ? "job " : "sweep ", row.id,
                                                 " already exists"));
  }
  return SqlError("insert");
}

absl::Status SqliteBackend::InsertEvent(Kind kind, const std::string& id, int64_t sequence,
                                        const std::string& bytes) {
  StmtScope scope(insert_event_);
  sqlite3_bind_int(insert_event_, 1, static_cast<int>(kind));
  BindText(insert_event_, 2, id);
  sqlite3_bind_int64(insert_event_, 3, sequence);
  BindBlob(insert_event_, 4, bytes);
  if (sqlite3_step(insert_event_) != SQLITE_DONE) return SqlError("insert event");
  return absl::OkStatus();
}

absl::StatusOr<std::string> SqliteBackend::FindLocked(Kind kind, const std::string& tenant,
                                                      const std::string& request_id) {
  sqlite3_stmt* stmt = S(kind).find_by_request_id;
  StmtScope scope(stmt);
  BindText(stmt, 1, tenant);
  BindText(stmt, 2, request_id);
  int rc = sqlite3_step(stmt);
  if (rc == SQLITE_ROW) return ColumnText(stmt, 0);
  if (rc != SQLITE_DONE) return SqlError("find by client_request_id");
  return std::string();
}

absl::StatusOr<std::vector<OutputClaim>> SqliteBackend::LiveClaimsLocked(const std::string& path) {
  StmtScope scope(live_claims_);
  BindText(live_claims_, 1, path);
  std::vector<OutputClaim> claims;
  while (true) {
    int rc = sqlite3_step(live_claims_);
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return SqlError("read output claims");
    claims.push_back({ColumnText(live_claims_, 0), ColumnText(live_claims_, 1),
                      ColumnText(live_claims_, 2)});
  }
  return claims;
}

absl::Status SqliteBackend::InsertClaimLocked(const OutputClaim& claim) {
  StmtScope scope(insert_claim_);
  BindText(insert_claim_, 1, claim.path);
  BindText(insert_claim_, 2, claim.owner);
  BindText(insert_claim_, 3, claim.tenant);
  if (sqlite3_step(insert_claim_) != SQLITE_DONE) return SqlError("insert output claim");
  return absl::OkStatus();
}

absl::StatusOr<std::vector<OutputClaim>> SqliteBackend::LiveClaimsNestedWith(
    const std::string& path) {
  absl::MutexLock lock(&mu_);
  return LiveClaimsLocked(path);
}

absl::StatusOr<Backend::CreateOutcome> SqliteBackend::Create(
    const std::vector<NewRow>& rows, const std::vector<OutputClaim>& claims,
    const QueueLimits& limits) {
  if (rows.empty()) return absl::InvalidArgumentError("job store: nothing to create");
  absl::MutexLock lock(&mu_);
  FT_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  auto fail = [this](absl::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    (void)Exec("ROLLBACK");
    return status;
  };
  const Row& first = rows.front().row;
  if (!first.client_request_id.empty()) {
    absl::StatusOr<std::string> existing =
        FindLocked(rows.front().kind, first.tenant, first.client_request_id);
    if (!existing.ok()) return fail(existing.status());
    if (!existing->empty()) {
      (void)Exec("ROLLBACK");
      return CreateOutcome{false, *std::move(existing), std::nullopt, std::nullopt};
    }
  }
  for (const OutputClaim& claim : claims) {
    if (claim.path.empty() || claim.owner.empty()) {
      return fail(absl::InvalidArgumentError("job store: output claim needs a path and an owner"));
    }
    absl::StatusOr<std::vector<OutputClaim>> live = LiveClaimsLocked(claim.path);
    if (!live.ok()) return fail(live.status());
    if (!live->empty()) {
      (void)Exec("ROLLBACK");
      return CreateOutcome{false, "", live->front(), std::nullopt};
    }
    if (absl::Status s = InsertClaimLocked(claim); !s.ok()) return fail(s);
  }
  for (const NewRow& r : rows) {
    if (absl::Status s = InsertRow(r.kind, r.row); !s.ok()) return fail(s);
    sqlite3_stmt* bump = S(r.kind).bump_sequence;
    {
      StmtScope scope(bump);
      BindText(bump, 1, r.row.id);
      if (sqlite3_step(bump) != SQLITE_ROW) return fail(SqlError("bump sequence"));
    }
    if (absl::Status s = InsertEvent(r.kind, r.row.id, 1, r.first_event); !s.ok()) return fail(s);
  }
  if (limits.total > 0 || limits.per_tenant > 0) {
    StmtScope scope(count_queued_);
    BindText(count_queued_, 1, first.tenant);
    if (sqlite3_step(count_queued_) != SQLITE_ROW) return fail(SqlError("count the queued jobs"));
    // The new ones included.
    if (std::optional<QueueFull> full =
            OverLimits(limits, sqlite3_column_int64(count_queued_, 0),
                       sqlite3_column_int64(count_queued_, 1), rows)) {
      (void)Exec("ROLLBACK");
      return CreateOutcome{false, "", std::nullopt, full};
    }
  }
  if (absl::Status s = Exec("COMMIT"); !s.ok()) return fail(s);
  return CreateOutcome{true, "", std::nullopt, std::nullopt};
}

absl::Status SqliteBackend::ProbeWrite() {
  absl::MutexLock lock(&mu_);
  FT_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  // Kind 0 is no resource's; a 4 KB blob needs a page of its own.
  absl::Status status = Exec(
      "INSERT INTO events(kind, resource_id, sequence, event) VALUES(0, '', 0, zeroblob(4096));"
      "DELETE FROM events WHERE kind = 0;");
  if (status.ok()) status = Exec("COMMIT");
  if (!status.ok()) (void)Exec("ROLLBACK");
  return status;
}

absl::StatusOr<std::optional<Row>> SqliteBackend::Get(Kind kind, const std::string& id) {
  absl::MutexLock lock(&mu_);
  sqlite3_stmt* stmt = S(kind).get;
  StmtScope scope(stmt);
  BindText(stmt, 1, id);
  int rc = sqlite3_step(stmt);
  if (rc == SQLITE_DONE) return std::optional<Row>();
  if (rc != SQLITE_ROW) return SqlError("get");
  return std::optional<Row>(ReadRow(stmt));
}

absl::StatusOr<std::string> SqliteBackend::FindByRequestId(Kind kind, const std::string& tenant,
                                                           const std::string& request_id) {
  absl::MutexLock lock(&mu_);
  return FindLocked(kind, tenant, request_id);
}

absl::StatusOr<std::vector<Row>> SqliteBackend::List(Kind kind, const RowQuery& query) {
  absl::MutexLock lock(&mu_);
  sqlite3_stmt* stmt = S(kind).list;
  StmtScope scope(stmt);
  sqlite3_bind_int64(stmt, 1, query.state_mask);
  if (query.tenant.has_value()) {
    BindText(stmt, 2, *query.tenant);
  } else {
    sqlite3_bind_null(stmt, 2);
  }
  if (query.after.has_value()) {
    sqlite3_bind_int64(stmt, 3, query.after->first);
    BindText(stmt, 4, query.after->second);
  } else {
    sqlite3_bind_null(stmt, 3);
    sqlite3_bind_null(stmt, 4);
  }
  sqlite3_bind_int(stmt, 5, query.limit);
  std::vector<Row> rows;
  while (true) {
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return SqlError("list");
    rows.push_back(ReadRow(stmt));
  }
  return rows;
}

absl::StatusOr<std::vector<Row>> SqliteBackend::InStates(Kind kind, int64_t state_mask) {
  absl::MutexLock lock(&mu_);
  sqlite3_stmt* stmt = S(kind).in_states;
  StmtScope scope(stmt);
  sqlite3_bind_int64(stmt, 1, state_mask);
  std::vector<Row> rows;
  while (true) {
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return SqlError("rows in states");
    rows.push_back(ReadRow(stmt));
  }
  return rows;
}

absl::StatusOr<std::map<int, Backend::StateCount>> SqliteBackend::CountByState(Kind kind) {
  absl::MutexLock lock(&mu_);
  sqlite3_stmt* stmt = S(kind).count_by_state;
  StmtScope scope(stmt);
  std::map<int, StateCount> counts;
  while (true) {
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return SqlError("count by state");
    counts[sqlite3_column_int(stmt, 0)] = {sqlite3_column_int64(stmt, 1), sqlite3_column_int64(stmt, 2)};
  }
  return counts;
}

absl::Status SqliteBackend::UpdateLocked(Kind kind, const Row& row) {
  sqlite3_stmt* stmt = S(kind).update;
  StmtScope scope(stmt);
  BindText(stmt, 1, row.id);
  sqlite3_bind_int(stmt, 2, row.state);
  BindBlob(stmt, 3, row.record);
  if (sqlite3_step(stmt) != SQLITE_DONE) return SqlError("update");
  if (sqlite3_changes(db_) == 0) {
    return absl::NotFoundError(
        absl::StrCat(kind == Kind::kJob ? "job " : "sweep ", row.id, " not found"));
  }
  return absl::OkStatus();
}

absl::Status SqliteBackend::Update(Kind kind, const Row& row) {
  absl::MutexLock lock(&mu_);
  return UpdateLocked(kind, row);
}

absl::StatusOr<int64_t> SqliteBackend::Append(Kind kind, const std::string& id,
                                              absl::FunctionRef<std::string(int64_t)> event,
                                              const Row* updated, const Fence* fence) {
  if (fence != nullptr) {
    return absl::UnimplementedError("job store: SQLite has no leases to fence writes with");
  }
  absl::MutexLock lock(&mu_);
  FT_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  auto fail = [this](absl::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    (void)Exec("ROLLBACK");
    return status;
  };
  int64_t sequence = 0;
  {
    sqlite3_stmt* bump = S(kind).bump_sequence;
    StmtScope scope(bump);
    BindText(bump, 1, id);
    int rc = sqlite3_step(bump);
    if (rc == SQLITE_DONE) {
      return fail(absl::NotFoundError(
          absl::StrCat(kind == Kind::kJob ? "job " : "sweep ", id, " not found")));
    }
    if (rc != SQLITE_ROW) return fail(SqlError("bump sequence"));
    sequence = sqlite3_column_int64(bump, 0);
  }
  if (absl::Status s = InsertEvent(kind, id, sequence, event(sequence)); !s.ok()) return fail(s);
  if (updated != nullptr) {
    if (absl::Status s = UpdateLocked(kind, *updated); !s.ok()) return fail(s);
  }
  if (absl::Status s = Exec("COMMIT"); !s.ok()) return fail(s);
  return sequence;
}

absl::StatusOr<std::vector<std::pair<int64_t, std::string>>> SqliteBackend::ReadEvents(
    Kind kind, const std::string& id, int64_t after, int limit) {
  absl::MutexLock lock(&mu_);
  StmtScope scope(read_events_);
  sqlite3_bind_int(read_events_, 1, static_cast<int>(kind));
  BindText(read_events_, 2, id);
  sqlite3_bind_int64(read_events_, 3, after);
  sqlite3_bind_int(read_events_, 4, limit <= 0 ? -1 : limit);
  std::vector<std::pair<int64_t, std::string>> events;
  while (true) {
    int rc = sqlite3_step(read_events_);
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return SqlError("read events");
    events.emplace_back(sqlite3_column_int64(read_events_, 0), ColumnBytes(read_events_, 1));
  }
  return events;
}

}  // namespace

int SqliteSchemaVersion() { return kSchemaVersion; }

absl::StatusOr<std::unique_ptr<Backend>> OpenSqliteBackend(const SqliteOptions& options) {
  if (options.path.empty()) return absl::InvalidArgumentError("job store: path is empty");
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(options.path.c_str(), &db,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                           nullptr);
  if (rc != SQLITE_OK) {
    std::string message = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close(db);
    return absl::UnavailableError(
        absl::StrCat("job store: cannot open ", options.path, ": ", message));
  }
  auto backend = std::make_unique<SqliteBackend>(db);
  FT_RETURN_IF_ERROR(backend->Init(options));
  return std::unique_ptr<Backend>(std::move(backend));
}

}  // namespace freezetune::store
