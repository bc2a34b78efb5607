#include "server/jobs/job_store.h"

#include <sqlite3.h>

#include <string_view>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/common/status_macros.h"
#include "server/jobs/page_token.h"

namespace freezetune::jobs {
namespace {

// The kind of ListJobs page tokens (page_token.h); "v1" since before sweeps.
constexpr char kJobPageTokenKind[] = "v1";

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS jobs(
  id TEXT PRIMARY KEY,
  tenant TEXT NOT NULL,
  client_request_id TEXT,               -- NULL when the client gave none
  state INTEGER NOT NULL,
  create_time INTEGER NOT NULL,         -- microseconds since the epoch
  last_sequence INTEGER NOT NULL DEFAULT 0,
  spec BLOB NOT NULL,                   -- serialized freezetune.v1.FineTuneJob
  job BLOB NOT NULL,                    -- serialized freezetune.v1.Job
  UNIQUE(tenant, client_request_id));
CREATE INDEX IF NOT EXISTS jobs_by_create_time ON jobs(create_time DESC, id DESC);
CREATE TABLE IF NOT EXISTS events(
  job_id TEXT NOT NULL,
  sequence INTEGER NOT NULL,
  event BLOB NOT NULL,                  -- serialized freezetune.v1.JobEvent
  PRIMARY KEY(job_id, sequence)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS output_claims(
  path TEXT PRIMARY KEY,                -- canonical output directory
  owner TEXT NOT NULL,                  -- job or sweep id
  tenant TEXT NOT NULL);
PRAGMA user_version = 1;
)sql";

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

int64_t StateMask(const std::vector<v1::JobState>& states) {
  int64_t mask = 0;
  for (v1::JobState s : states) {
    if (s >= 0 && s < 62) mask |= int64_t{1} << static_cast<int>(s);
  }
  return mask;
}

}  // namespace

int64_t ToMicros(const google::protobuf::Timestamp& t) {
  return t.seconds() * 1'000'000 + t.nanos() / 1000;
}

google::protobuf::Timestamp FromMicros(int64_t micros) {
  google::protobuf::Timestamp t;
  int64_t seconds = micros / 1'000'000;
  int64_t rest = micros % 1'000'000;
  if (rest < 0) {
    rest += 1'000'000;
    --seconds;
  }
  t.set_seconds(seconds);
  t.set_nanos(static_cast<int32_t>(rest * 1000));
  return t;
}

google::protobuf::Timestamp NowTimestamp() { return FromMicros(absl::ToUnixMicros(absl::Now())); }

bool IsTerminal(v1::JobState state) {
  return state == v1::JOB_STATE_SUCCEEDED || state == v1::JOB_STATE_FAILED ||
         state == v1::JOB_STATE_CANCELLED;
}

JobStore::JobStore(sqlite3* db) : db_(db) {}

JobStore::~JobStore() {
  absl::MutexLock lock(&mu_);
  for (sqlite3_stmt* stmt :
       {insert_job_, find_by_request_id_, get_job_, update_job_, bump_sequence_, insert_event_,
        read_events_, list_jobs_, jobs_in_states_, count_by_state_, live_claims_, insert_claim_}) {
    if (stmt != nullptr) sqlite3_finalize(stmt);
  }
  sqlite3_close(db_);
}

absl::Status JobStore::SqlError(const char* what) const ABSL_NO_THREAD_SAFETY_ANALYSIS {
  return absl::InternalError(absl::StrCat("job store: ", what, ": ", sqlite3_errmsg(db_)));
}

absl::Status JobStore::Exec(const char* sql) {
  char* error = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &error) != SQLITE_OK) {
    absl::Status status =
        absl::InternalError(absl::StrCat("job store: ", error != nullptr ? error : "exec failed"));
    sqlite3_free(error);
    return status;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<JobStore>> JobStore::Open(const JobStoreOptions& options) {
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
  sqlite3_busy_timeout(db, options.busy_timeout_ms);
  std::unique_ptr<JobStore> store(new JobStore(db));
  {
    absl::MutexLock lock(&store->mu_);
    // WAL lets readers proceed during a write; NORMAL sync is durable across
    // process crashes (the case that matters here) at a fraction of FULL's
    // fsync cost.
    FT_RETURN_IF_ERROR(store->Exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                                   "PRAGMA foreign_keys=ON;"));
    FT_RETURN_IF_ERROR(store->Exec(kSchema));
  }
  FT_RETURN_IF_ERROR(store->Prepare());
  return store;
}

absl::Status JobStore::Prepare() {
  absl::MutexLock lock(&mu_);
  struct Entry {
    sqlite3_stmt** stmt;
    const char* sql;
  };
  const Entry entries[] = {
      {&insert_job_,
       "INSERT INTO jobs(id, tenant, client_request_id, state, create_time, last_sequence, spec, "
       "job) VALUES(?1, ?2, ?3, ?4, ?5, 0, ?6, ?7)"},
      {&find_by_request_id_, "SELECT id FROM jobs WHERE tenant = ?1 AND client_request_id = ?2"},
      {&get_job_, "SELECT job, last_sequence FROM jobs WHERE id = ?1"},
      {&update_job_, "UPDATE jobs SET state = ?2, job = ?3 WHERE id = ?1"},
      {&bump_sequence_,
       "UPDATE jobs SET last_sequence = last_sequence + 1 WHERE id = ?1 RETURNING last_sequence"},
      {&insert_event_, "INSERT INTO events(job_id, sequence, event) VALUES(?1, ?2, ?3)"},
      {&read_events_,
       "SELECT event FROM events WHERE job_id = ?1 AND sequence > ?2 ORDER BY sequence ASC "
       "LIMIT ?3"},
      {&list_jobs_,
       "SELECT job, last_sequence, create_time, id FROM jobs "
       "WHERE (?1 = 0 OR ((1 << state) & ?1) != 0) "
       "AND (?2 IS NULL OR tenant = ?2) "
       "AND (?3 IS NULL OR create_time < ?3 OR (create_time = ?3 AND id < ?4)) "
       "ORDER BY create_time DESC, id DESC LIMIT ?5"},
      {&jobs_in_states_,
       "SELECT job, last_sequence FROM jobs WHERE ((1 << state) & ?1) != 0 "
       "ORDER BY create_time ASC, id ASC"},
      {&count_by_state_, "SELECT state, COUNT(*) FROM jobs GROUP BY state"},
      // Nested: equal, ?1 inside the claim, or the claim inside ?1 (whole
      // components: "/a/bc" is not inside "/a/b"). Live: not owned by a
      // FAILED (4) or CANCELLED (5) job.
      {&live_claims_,
       "SELECT c.path, c.owner, c.tenant FROM output_claims c LEFT JOIN jobs j ON j.id = c.owner "
       "WHERE (c.path = ?1 OR substr(?1, 1, length(c.path) + 1) = c.path || '/' "
       "OR substr(c.path, 1, length(?1) + 1) = ?1 || '/') "
       "AND (j.id IS NULL OR j.state NOT IN (4, 5)) ORDER BY c.path"},
      {&insert_claim_, "INSERT OR REPLACE INTO output_claims(path, owner, tenant) VALUES(?1, ?2, ?3)"},
  };
  for (const Entry& e : entries) {
    if (sqlite3_prepare_v3(db_, e.sql, -1, SQLITE_PREPARE_PERSISTENT, e.stmt, nullptr) !=
        SQLITE_OK) {
      return SqlError("prepare");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<OutputClaim>> JobStore::LiveClaimsLocked(const std::string& path) {
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

absl::Status JobStore::InsertClaimLocked(const OutputClaim& claim) {
  StmtScope scope(insert_claim_);
  BindText(insert_claim_, 1, claim.path);
  BindText(insert_claim_, 2, claim.owner);
  BindText(insert_claim_, 3, claim.tenant);
  if (sqlite3_step(insert_claim_) != SQLITE_DONE) return SqlError("insert output claim");
  return absl::OkStatus();
}

absl::StatusOr<std::vector<OutputClaim>> JobStore::LiveClaimsNestedWith(const std::string& path) {
  absl::MutexLock lock(&mu_);
  return LiveClaimsLocked(path);
}

absl::StatusOr<std::optional<OutputClaim>> JobStore::ClaimOutput(const OutputClaim& claim) {
  if (claim.path.empty() || claim.owner.empty()) {
    return absl::InvalidArgumentError("job store: output claim needs a path and an owner");
  }
  absl::MutexLock lock(&mu_);
  FT_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  auto fail = [this](absl::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    (void)Exec("ROLLBACK");
    return status;
  };
  absl::StatusOr<std::vector<OutputClaim>> live = LiveClaimsLocked(claim.path);
  if (!live.ok()) return fail(live.status());
  if (!live->empty()) {
    (void)Exec("ROLLBACK");
    return std::optional<OutputClaim>(live->front());
  }
  if (absl::Status s = InsertClaimLocked(claim); !s.ok()) return fail(s);
  if (absl::Status s = Exec("COMMIT"); !s.ok()) return fail(s);
  return std::optional<OutputClaim>();
}

absl::StatusOr<JobStore::CreateResult> JobStore::CreateJob(const v1::Job& job,
                                                           const v1::JobEvent& first_event,
                                                           const OutputClaim* output) {
  if (job.id().empty()) return absl::InvalidArgumentError("job store: job id is empty");
  absl::MutexLock lock(&mu_);
  FT_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  auto rollback = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { (void)Exec("ROLLBACK"); };

  const std::string& request_id = job.spec().client_request_id();
  if (!request_id.empty()) {
    absl::StatusOr<std::string> existing_id = FindIdLocked(job.tenant(), request_id);
    if (!existing_id.ok()) {
      rollback();
      return existing_id.status();
    }
    if (!existing_id->empty()) {
      absl::StatusOr<v1::Job> existing = GetJobLocked(*existing_id);
      rollback();
      if (!existing.ok()) return existing.status();
      return CreateResult{*std::move(existing), false, std::nullopt};
    }
  }
  if (output != nullptr) {
    absl::StatusOr<std::vector<OutputClaim>> live = LiveClaimsLocked(output->path);
    if (!live.ok()) {
      rollback();
      return live.status();
    }
    if (!live->empty()) {
      rollback();
      return CreateResult{job, false, live->front()};
    }
    if (absl::Status s = InsertClaimLocked(*output); !s.ok()) {
      rollback();
      return s;
    }
  }

  v1::Job stored = job;
  v1::JobEvent event = first_event;
  event.set_job_id(job.id());
  event.set_sequence(1);
  if (!event.has_time()) *event.mutable_time() = NowTimestamp();
  stored.set_last_sequence(1);
  {
    StmtScope scope(insert_job_);
    BindText(insert_job_, 1, job.id());
    BindText(insert_job_, 2, job.tenant());
    if (request_id.empty()) {
      sqlite3_bind_null(insert_job_, 3);
    } else {
      BindText(insert_job_, 3, request_id);
    }
    sqlite3_bind_int(insert_job_, 4, job.state());
    sqlite3_bind_int64(insert_job_, 5, ToMicros(job.create_time()));
    BindBlob(insert_job_, 6, job.spec().SerializeAsString());
    BindBlob(insert_job_, 7, stored.SerializeAsString());
    int rc = sqlite3_step(insert_job_);
    if (rc != SQLITE_DONE) {
      absl::Status status = (sqlite3_extended_errcode(db_) == SQLITE_CONSTRAINT_PRIMARYKEY)
                                ? absl::AlreadyExistsError(absl::StrCat("job ", job.id(),
                                                                        " already exists"))
                                : SqlError("insert job");
      rollback();
      return status;
    }
  }
  {
    StmtScope scope(bump_sequence_);
    BindText(bump_sequence_, 1, job.id());
    if (sqlite3_step(bump_sequence_) != SQLITE_ROW) {
      absl::Status status = SqlError("bump sequence");
      rollback();
      return status;
    }
  }
  {
    StmtScope scope(insert_event_);
    BindText(insert_event_, 1, job.id());
    sqlite3_bind_int64(insert_event_, 2, 1);
    BindBlob(insert_event_, 3, event.SerializeAsString());
    if (sqlite3_step(insert_event_) != SQLITE_DONE) {
      absl::Status status = SqlError("insert event");
      rollback();
      return status;
    }
  }
  absl::Status commit = Exec("COMMIT");
  if (!commit.ok()) {
    rollback();
    return commit;
  }
  return CreateResult{std::move(stored), true, std::nullopt};
}

absl::StatusOr<std::string> JobStore::FindIdLocked(const std::string& tenant,
                                                  const std::string& request_id) {
  StmtScope scope(find_by_request_id_);
  BindText(find_by_request_id_, 1, tenant);
  BindText(find_by_request_id_, 2, request_id);
  int rc = sqlite3_step(find_by_request_id_);
  if (rc == SQLITE_ROW) return ColumnText(find_by_request_id_, 0);
  if (rc != SQLITE_DONE) return SqlError("find by client_request_id");
  return std::string();
}

absl::StatusOr<std::optional<v1::Job>> JobStore::FindByClientRequestId(
    const std::string& tenant, const std::string& request_id) {
  if (request_id.empty()) return std::optional<v1::Job>();
  absl::MutexLock lock(&mu_);
  FT_ASSIGN_OR_RETURN(std::string id, FindIdLocked(tenant, request_id));
  if (id.empty()) return std::optional<v1::Job>();
  FT_ASSIGN_OR_RETURN(v1::Job job, GetJobLocked(id));
  return std::optional<v1::Job>(std::move(job));
}

absl::StatusOr<v1::Job> JobStore::GetJobLocked(const std::string& job_id) {
  StmtScope scope(get_job_);
  BindText(get_job_, 1, job_id);
  int rc = sqlite3_step(get_job_);
  if (rc == SQLITE_DONE) return absl::NotFoundError(absl::StrCat("job ", job_id, " not found"));
  if (rc != SQLITE_ROW) return SqlError("get job");
  v1::Job job;
  if (!job.ParseFromString(ColumnBytes(get_job_, 0))) {
    return absl::DataLossError(absl::StrCat("job store: job ", job_id, " record is corrupt"));
  }
  job.set_last_sequence(sqlite3_column_int64(get_job_, 1));
  return job;
}

absl::StatusOr<v1::Job> JobStore::GetJob(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  return GetJobLocked(job_id);
}

absl::StatusOr<v1::ListJobsResponse> JobStore::ListJobs(const ListJobsQuery& query) {
  int page_size = query.page_size <= 0 ? kDefaultPageSize : query.page_size;
  if (page_size > kMaxPageSize) page_size = kMaxPageSize;
  int64_t cursor_time = 0;
  std::string cursor_id;
  if (!query.page_token.empty()) {
    FT_RETURN_IF_ERROR(
        DecodePageToken(kJobPageTokenKind, query.page_token, &cursor_time, &cursor_id));
  }

  absl::MutexLock lock(&mu_);
  StmtScope scope(list_jobs_);
  sqlite3_bind_int64(list_jobs_, 1, StateMask(query.states));
  if (query.tenant.has_value()) {
    BindText(list_jobs_, 2, *query.tenant);
  } else {
    sqlite3_bind_null(list_jobs_, 2);
  }
  if (!query.page_token.empty()) {
    sqlite3_bind_int64(list_jobs_, 3, cursor_time);
    BindText(list_jobs_, 4, cursor_id);
  } else {
    sqlite3_bind_null(list_jobs_, 3);
    sqlite3_bind_null(list_jobs_, 4);
  }
  // One extra row tells whether another page exists.
  sqlite3_bind_int(list_jobs_, 5, page_size + 1);

  v1::ListJobsResponse response;
  int64_t last_time = 0;
  std::string last_id;
  int rows = 0;
  while (true) {
    int rc = sqlite3_step(list_jobs_);
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return SqlError("list jobs");
    if (++rows > page_size) {
      response.set_next_page_token(EncodePageToken(kJobPageTokenKind, last_time, last_id));
      break;
    }
    v1::Job* job = response.add_jobs();
    if (!job->ParseFromString(ColumnBytes(list_jobs_, 0))) {
      return absl::DataLossError("job store: a job record is corrupt");
    }
    job->set_last_sequence(sqlite3_column_int64(list_jobs_, 1));
    last_time = sqlite3_column_int64(list_jobs_, 2);
    last_id = ColumnText(list_jobs_, 3);
  }
  return response;
}

absl::StatusOr<std::vector<v1::Job>> JobStore::JobsInStates(
    const std::vector<v1::JobState>& states) {
  absl::MutexLock lock(&mu_);
  StmtScope scope(jobs_in_states_);
  sqlite3_bind_int64(jobs_in_states_, 1, StateMask(states));
  std::vector<v1::Job> jobs;
  while (true) {
    int rc = sqlite3_step(jobs_in_states_);
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return SqlError("jobs in states");
    v1::Job job;
    if (!job.ParseFromString(ColumnBytes(jobs_in_states_, 0))) {
      return absl::DataLossError("job store: a job record is corrupt");
    }
    job.set_last_sequence(sqlite3_column_int64(jobs_in_states_, 1));
    jobs.push_back(std::move(job));
  }
  return jobs;
}

absl::StatusOr<std::map<v1::JobState, int64_t>> JobStore::CountByState() {
  absl::MutexLock lock(&mu_);
  StmtScope scope(count_by_state_);
  std::map<v1::JobState, int64_t> counts;
  while (true) {
    int rc = sqlite3_step(count_by_state_);
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return SqlError("count by state");
    int state = sqlite3_column_int(count_by_state_, 0);
    if (v1::JobState_IsValid(state)) {
      counts[static_cast<v1::JobState>(state)] = sqlite3_column_int64(count_by_state_, 1);
    }
  }
  return counts;
}

absl::Status JobStore::UpdateJobLocked(const v1::Job& job) {
  StmtScope scope(update_job_);
  BindText(update_job_, 1, job.id());
  sqlite3_bind_int(update_job_, 2, job.state());
  BindBlob(update_job_, 3, job.SerializeAsString());
  if (sqlite3_step(update_job_) != SQLITE_DONE) return SqlError("update job");
  if (sqlite3_changes(db_) == 0) return absl::NotFoundError(absl::StrCat("job ", job.id(), " not found"));
  return absl::OkStatus();
}

absl::Status JobStore::UpdateJob(const v1::Job& job) {
  absl::MutexLock lock(&mu_);
  return UpdateJobLocked(job);
}

absl::StatusOr<v1::JobEvent> JobStore::AppendEvent(const std::string& job_id, v1::JobEvent event,
                                                   const v1::Job* updated_job) {
  absl::MutexLock lock(&mu_);
  FT_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  auto fail = [this](absl::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    (void)Exec("ROLLBACK");
    return status;
  };
  int64_t sequence = 0;
  {
    StmtScope scope(bump_sequence_);
    BindText(bump_sequence_, 1, job_id);
    int rc = sqlite3_step(bump_sequence_);
    if (rc == SQLITE_DONE) return fail(absl::NotFoundError(absl::StrCat("job ", job_id, " not found")));
    if (rc != SQLITE_ROW) return fail(SqlError("bump sequence"));
    sequence = sqlite3_column_int64(bump_sequence_, 0);
  }
  event.set_job_id(job_id);
  event.set_sequence(sequence);
  if (!event.has_time()) *event.mutable_time() = NowTimestamp();
  {
    StmtScope scope(insert_event_);
    BindText(insert_event_, 1, job_id);
    sqlite3_bind_int64(insert_event_, 2, sequence);
    BindBlob(insert_event_, 3, event.SerializeAsString());
    if (sqlite3_step(insert_event_) != SQLITE_DONE) return fail(SqlError("insert event"));
  }
  if (updated_job != nullptr) {
    v1::Job job = *updated_job;
    job.set_last_sequence(sequence);
    absl::Status status = UpdateJobLocked(job);
    if (!status.ok()) return fail(status);
  }
  absl::Status commit = Exec("COMMIT");
  if (!commit.ok()) return fail(commit);
  return event;
}

absl::StatusOr<std::vector<v1::JobEvent>> JobStore::ReadEvents(const std::string& job_id,
                                                               int64_t after_sequence, int limit) {
  absl::MutexLock lock(&mu_);
  StmtScope scope(read_events_);
  BindText(read_events_, 1, job_id);
  sqlite3_bind_int64(read_events_, 2, after_sequence);
  sqlite3_bind_int(read_events_, 3, limit <= 0 ? -1 : limit);
  std::vector<v1::JobEvent> events;
  while (true) {
    int rc = sqlite3_step(read_events_);
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return SqlError("read events");
    v1::JobEvent event;
    if (!event.ParseFromString(ColumnBytes(read_events_, 0))) {
      return absl::DataLossError(absl::StrCat("job store: an event of job ", job_id, " is corrupt"));
    }
    events.push_back(std::move(event));
  }
  return events;
}

}  // namespace freezetune::jobs
