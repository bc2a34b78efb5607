// The durable job store: jobs and their event logs in one SQLite file (WAL
// mode, synchronous=NORMAL), so that queued and running jobs survive a
// restart and a watcher can replay any job's events from any sequence.
//
// Records are the API's proto messages, serialized: jobs.job holds a v1::Job,
// events.event a v1::JobEvent. A few fields are copied into columns for
// indexing (tenant, client_request_id, state, create_time, last_sequence).
// The last_sequence column is authoritative: every read overwrites
// Job.last_sequence from it, so a job written from a stale copy can never move
// the event counter backwards.
//
// Output claims: every job (and sweep) claims the canonical directory its
// output will be written to, in the output_claims table of the same file. A
// claim is live while its owner is not a FAILED or CANCELLED job (a sweep's
// claim, whose owner is not in the jobs table, stays live). No two live
// claims are nested (equal, or one inside the other): the check and the
// insert are one transaction, so two submits racing for one directory, in
// this process or across a restart, cannot both win.
//
// Thread safety: every method may be called from any thread. One connection
// guarded by a mutex serializes all access; each method is one transaction.
#ifndef FREEZETUNE_SERVER_JOBS_JOB_STORE_H_
#define FREEZETUNE_SERVER_JOBS_JOB_STORE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "freezetune/v1/freezetune.pb.h"

struct sqlite3;
struct sqlite3_stmt;

namespace freezetune::jobs {

struct JobStoreOptions {
  // SQLite file; created (with its tables) if missing. ":memory:" works for
  // throwaway stores.
  std::string path;
  // How long a statement waits for a lock held by another connection.
  int busy_timeout_ms = 5000;
};

struct ListJobsQuery {
  // Empty lists every state.
  std::vector<v1::JobState> states;
  // Only this tenant's jobs when set.
  std::optional<std::string> tenant;
  // <= 0 means 50; values above 500 are clamped to 500.
  int page_size = 0;
  // Opaque cursor from a previous page; empty for the first page.
  std::string page_token;
};

// A directory an output will be written to, and who will write it.
struct OutputClaim {
  std::string path;    // canonical absolute directory
  std::string owner;   // job or sweep id
  std::string tenant;  // the owner's tenant
};

class JobStore {
 public:
  static constexpr int kDefaultPageSize = 50;
  static constexpr int kMaxPageSize = 500;

  static absl::StatusOr<std::unique_ptr<JobStore>> Open(const JobStoreOptions& options);
  ~JobStore();
  JobStore(const JobStore&) = delete;
  JobStore& operator=(const JobStore&) = delete;

  struct CreateResult {
    v1::Job job;
    // False when an existing job with the same (tenant, client_request_id)
    // was returned instead, or when `output_conflict` is set.
    bool created = false;
    // The live claim that kept the job's output claim from being taken;
    // nothing was written.
    std::optional<OutputClaim> output_conflict;
  };
  // Inserts `job` (id, tenant, spec and create_time must be set) together
  // with `first_event`, which becomes sequence 1, in one transaction. When
  // job.spec.client_request_id is non-empty and the tenant already has a job
  // with that id, nothing is written and the existing job is returned.
  // With `output`, the job also claims that directory in the same
  // transaction; a live claim nested with it is returned as
  // output_conflict and nothing is written. ALREADY_EXISTS if job.id is
  // taken.
  absl::StatusOr<CreateResult> CreateJob(const v1::Job& job, const v1::JobEvent& first_event,
                                         const OutputClaim* output = nullptr);

  // Takes `claim` unless a live claim is nested with it (equal, inside it,
  // or containing it); that claim is returned instead and nothing is
  // written. A dead claim of the same path is replaced.
  absl::StatusOr<std::optional<OutputClaim>> ClaimOutput(const OutputClaim& claim);

  // The live claims nested with canonical `path` (equal, inside it, or
  // containing it).
  absl::StatusOr<std::vector<OutputClaim>> LiveClaimsNestedWith(const std::string& path);

  // The tenant's job with this client_request_id, if any.
  absl::StatusOr<std::optional<v1::Job>> FindByClientRequestId(const std::string& tenant,
                                                               const std::string& request_id);

  // NOT_FOUND "job <id> not found".
  absl::StatusOr<v1::Job> GetJob(const std::string& job_id);

  // Newest first (create_time, then id, descending). INVALID_ARGUMENT
  // "page_token: ..." for a token this store did not produce.
  absl::StatusOr<v1::ListJobsResponse> ListJobs(const ListJobsQuery& query);

  // Every job in one of `states`, oldest first (used at startup to re-queue).
  absl::StatusOr<std::vector<v1::Job>> JobsInStates(const std::vector<v1::JobState>& states);

  // Number of jobs per state (for the jobs-by-state gauge at startup).
  absl::StatusOr<std::map<v1::JobState, int64_t>> CountByState();

  // Replaces the stored job (state and blob); last_sequence is not touched.
  // NOT_FOUND if the job does not exist.
  absl::Status UpdateJob(const v1::Job& job);

  // Appends `event` to the job's log with the next sequence number (and sets
  // event.job_id; event.time if unset), in the same transaction that bumps
  // jobs.last_sequence and, when `updated_job` is given, replaces the job
  // record (so a state change and its event are written atomically). Returns
  // the event as stored. NOT_FOUND if the job does not exist.
  absl::StatusOr<v1::JobEvent> AppendEvent(const std::string& job_id, v1::JobEvent event,
                                           const v1::Job* updated_job = nullptr);

  // Events with sequence > after_sequence, ascending, at most `limit`
  // (<= 0: no limit). Empty for an unknown job.
  absl::StatusOr<std::vector<v1::JobEvent>> ReadEvents(const std::string& job_id,
                                                       int64_t after_sequence, int limit);

 private:
  explicit JobStore(sqlite3* db);
  absl::Status Prepare();
  absl::Status Exec(const char* sql) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<v1::Job> GetJobLocked(const std::string& job_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status UpdateJobLocked(const v1::Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Id of the tenant's job with this request id; empty if none.
  absl::StatusOr<std::string> FindIdLocked(const std::string& tenant, const std::string& request_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status SqlError(const char* what) const;
  absl::StatusOr<std::vector<OutputClaim>> LiveClaimsLocked(const std::string& path)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status InsertClaimLocked(const OutputClaim& claim) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  sqlite3* db_ ABSL_GUARDED_BY(mu_) = nullptr;
  // Prepared statements, finalized in the destructor.
  sqlite3_stmt* insert_job_ ABSL_GUARDED_BY(mu_) = nullptr;
  sqlite3_stmt* find_by_request_id_ ABSL_GUARDED_BY(mu_) = nullptr;
  sqlite3_stmt* get_job_ ABSL_GUARDED_BY(mu_) = nullptr;
  sqlite3_stmt* update_job_ ABSL_GUARDED_BY(mu_) = nullptr;
  sqlite3_stmt* bump_sequence_ ABSL_GUARDED_BY(mu_) = nullptr;
  sqlite3_stmt* insert_event_ ABSL_GUARDED_BY(mu_) = nullptr;
  sqlite3_stmt* read_events_ ABSL_GUARDED_BY(mu_) = nullptr;
  sqlite3_stmt* list_jobs_ ABSL_GUARDED_BY(mu_) = nullptr;
  sqlite3_stmt* jobs_in_states_ ABSL_GUARDED_BY(mu_) = nullptr;
  sqlite3_stmt* count_by_state_ ABSL_GUARDED_BY(mu_) = nullptr;
  sqlite3_stmt* live_claims_ ABSL_GUARDED_BY(mu_) = nullptr;
  sqlite3_stmt* insert_claim_ ABSL_GUARDED_BY(mu_) = nullptr;
};

// Microseconds since the Unix epoch of a proto timestamp, and back.
int64_t ToMicros(const google::protobuf::Timestamp& t);
google::protobuf::Timestamp FromMicros(int64_t micros);
google::protobuf::Timestamp NowTimestamp();

bool IsTerminal(v1::JobState state);

}  // namespace freezetune::jobs

#endif  // FREEZETUNE_SERVER_JOBS_JOB_STORE_H_
