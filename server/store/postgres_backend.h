// The PostgreSQL Backend (backend.h), through libpq: the store for several
// replicas sharing one database. Same data model and semantics as the SQLite
// backend (sqlite_backend.h); the tests run one suite against both.
//
// Schema versions live in a schema_version table and are applied in order at
// Open(), each in its own transaction together with its version bump, while
// the opening connection holds a session-level pg_advisory_lock: replicas
// starting together migrate one after the other, and each later one finds
// the schema current. Version 1 is the unified store (jobs, sweeps, one
// events table), as SQLite's version 2; version 2 adds output claims, as
// SQLite's version 3. A database whose version is newer than this binary
// knows is refused (FAILED_PRECONDITION).
//
// Replicas (issue 12.2): any number of servers share one database and one
// queue. Version 3 gives jobs a lease (backend.h: Fence, ClaimJob): a claim
// takes the first fitting QUEUED job with SELECT ... FOR UPDATE SKIP LOCKED,
// so replicas claiming at once never take the same job nor wait for each
// other; every fenced write re-checks the epoch under the row lock its
// sequence bump takes. Writes announce themselves with NOTIFY (delivered at
// commit): each event on freezetune_events, each claimable job on
// freezetune_queue, each cancel request on freezetune_cancel; Listen()
// holds a connection of its own that LISTENs to all three.
//
// Concurrency across connections and replicas: Append bumps the resource's
// last_sequence with UPDATE ... RETURNING in the event's transaction (the row
// lock orders concurrent appenders, so sequences stay gapless); Create's
// idempotency on (tenant, client_request_id) is the table's UNIQUE
// constraint (INSERT ... ON CONFLICT DO NOTHING), so two replicas racing with
// the same request id create one resource. Output claims are checked and
// taken under a transaction-level advisory lock, so replicas cannot both take
// nested claims (SQLite gets the same from BEGIN IMMEDIATE). Ids and tenants
// compare bytewise (COLLATE "C"), as in SQLite, so listing order and page
// cursors agree.
//
// Every statement is prepared with $n parameters; nothing from a caller is
// ever spliced into SQL text.
//
// Errors: UNAVAILABLE when the server cannot be reached or the connection
// broke mid-call (nothing is retried: a failed call may or may not have
// committed only when COMMIT itself failed); ALREADY_EXISTS for a taken id;
// INVALID_ARGUMENT for text holding a NUL byte (PostgreSQL text cannot);
// INTERNAL otherwise. A pooled connection that the server closed meanwhile
// (restart, pg_terminate_backend) is replaced before it is used. Messages
// never carry the password.
//
// Thread safety: every method may be called from any thread. A small pool of
// connections (one per concurrent call, up to pool_size) serves them.
#ifndef FREEZETUNE_SERVER_STORE_POSTGRES_BACKEND_H_
#define FREEZETUNE_SERVER_STORE_POSTGRES_BACKEND_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/store/backend.h"

namespace freezetune::store {

struct PostgresOptions {
  // A libpq connection URI: postgresql://user[:password]@host[:port]/db[?k=v&...]
  // (postgres:// too). Keywords in the URI win over the defaults below.
  std::string uri;
  // Most connections open at once; each concurrent call uses one.
  int pool_size = 4;
  // Seconds libpq waits to connect (connect_timeout), unless the URI says.
  int connect_timeout_s = 10;
  // This replica's name in the NOTIFY payloads of its writes (Signal.origin).
  std::string origin;
};

// True for a string that selects PostgreSQL (postgresql:// or postgres://).
bool IsPostgresUri(const std::string& uri);

// OK when libpq parses `uri` as a connection URI (nothing is contacted);
// otherwise INVALID_ARGUMENT naming `field` with libpq's reason.
absl::Status ValidatePostgresUri(const std::string& uri, const std::string& field);

// `uri` fit for logs: postgresql://user@host:port/db, without the password or
// any other query parameter. "postgresql://(unparsable)" for a bad one.
std::string RedactPostgresUri(const std::string& uri);

// The newest schema version this binary writes.
int PostgresSchemaVersion();

// Connects, migrates the schema under the advisory lock, and prepares.
absl::StatusOr<std::unique_ptr<Backend>> OpenPostgresBackend(const PostgresOptions& options);

}  // namespace freezetune::store

#endif  // FREEZETUNE_SERVER_STORE_POSTGRES_BACKEND_H_
