// The embedded Backend (backend.h): one SQLite file in WAL mode with
// synchronous=NORMAL (durable across process crashes, the case that matters
// for a single-node server, at a fraction of FULL's fsync cost).
//
// Schema versions live in a schema_version table and are applied in order at
// Open(), each in its own transaction together with its version bump:
//   1  jobs(... job BLOB) and events(job_id, sequence, event): the schema of
//      servers before the unified store (they marked it PRAGMA user_version
//      = 1 and had no schema_version table; such a file is version 1).
//   2  one store for jobs and sweeps: jobs.job renamed to record, a sweeps
//      table with the same columns, and ONE events table keyed by (kind,
//      resource_id, sequence), filled from the old job events. A legacy
//      sweeps.db (SweepStore before version 2) found at
//      `legacy_sweeps_path` is imported in the same transaction and then
//      renamed to <path>.imported.
//   3  output_claims(path, owner, tenant) (issue 14.1).
// A file whose version is newer than this binary knows is refused
// (FAILED_PRECONDITION), never silently downgraded.
//
// Thread safety: every method may be called from any thread. One connection
// guarded by a mutex serializes all access.
#ifndef FREEZETUNE_SERVER_STORE_SQLITE_BACKEND_H_
#define FREEZETUNE_SERVER_STORE_SQLITE_BACKEND_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/store/backend.h"

namespace freezetune::store {

struct SqliteOptions {
  // The database file; created (with its tables) if missing. ":memory:"
  // works for throwaway stores.
  std::string path;
  // A pre-version-2 sweeps.db to import once; ignored when missing or empty.
  std::string legacy_sweeps_path;
  // How long a statement waits for a lock held by another connection.
  int busy_timeout_ms = 5000;
  // PRAGMA max_page_count of the connection: the file may not grow beyond
  // this many pages (writes then fail with SQLITE_FULL, "database or disk is
  // full", exactly as on a full disk). 0: SQLite's default (no cap).
  int64_t max_page_count = 0;
};

// The newest schema version this binary writes.
int SqliteSchemaVersion();

absl::StatusOr<std::unique_ptr<Backend>> OpenSqliteBackend(const SqliteOptions& options);

}  // namespace freezetune::store

#endif  // FREEZETUNE_SERVER_STORE_SQLITE_BACKEND_H_
