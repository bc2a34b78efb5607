#include "server/notify/sqlite_queue.h"

#include <sqlite3.h>

#include "absl/strings/str_cat.h"

namespace freezetune::notify {
namespace {

constexpr char kSchema[] =
    "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
    "CREATE TABLE IF NOT EXISTS notifications("
    "  id TEXT PRIMARY KEY, event TEXT NOT NULL, tenant TEXT NOT NULL, url TEXT NOT NULL,"
    "  payload BLOB NOT NULL, attempts INTEGER NOT NULL, created_micros INTEGER NOT NULL,"
    "  next_attempt_micros INTEGER NOT NULL, state INTEGER NOT NULL, last_error TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS notifications_due ON notifications(state, next_attempt_micros);";

constexpr char kColumns[] =
    "id, event, tenant, url, payload, attempts, created_micros, next_attempt_micros, state, "
    "last_error";

// Finalizes a statement when it goes out of scope.
struct Statement {
  sqlite3_stmt* stmt = nullptr;
  ~Statement() { sqlite3_finalize(stmt); }
};

void BindText(sqlite3_stmt* stmt, int i, const std::string& s) {
  sqlite3_bind_text(stmt, i, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
}

// Prepares `sql` into `s`.
absl::Status Prepare(sqlite3* db, const std::string& sql, Statement& s) {
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &s.stmt, nullptr) == SQLITE_OK) {
    return absl::OkStatus();
  }
  return absl::InternalError(absl::StrCat("notification queue: prepare: ", sqlite3_errmsg(db)));
}

std::string Text(sqlite3_stmt* stmt, int i) {
  const void* p = sqlite3_column_blob(stmt, i);
  return p == nullptr ? std::string()
                      : std::string(static_cast<const char*>(p), sqlite3_column_bytes(stmt, i));
}

}  // namespace

absl::StatusOr<std::unique_ptr<SqliteQueue>> SqliteQueue::Open(const std::string& path) {
  sqlite3* db = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &db,
                                 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                                 nullptr);
  if (rc != SQLITE_OK) {
    std::string why = db != nullptr ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return absl::UnavailableError(absl::StrCat("notification queue: cannot open ", path, ": ", why));
  }
  sqlite3_busy_timeout(db, 5000);
  char* err = nullptr;
  if (sqlite3_exec(db, kSchema, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string why = err != nullptr ? err : "error";
    sqlite3_free(err);
    sqlite3_close(db);
    return absl::UnavailableError(absl::StrCat("notification queue: ", path, ": ", why));
  }
  return std::unique_ptr<SqliteQueue>(new SqliteQueue(db));
}

SqliteQueue::~SqliteQueue() { sqlite3_close(db_); }

absl::Status SqliteQueue::Check(int rc, const char* what) const {
  if (rc == SQLITE_OK || rc == SQLITE_DONE || rc == SQLITE_ROW) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("notification queue: ", what, ": ", sqlite3_errmsg(db_)));
}

absl::StatusOr<bool> SqliteQueue::PutNotification(const Notification& n) {
  absl::MutexLock lock(&mu_);
  Statement s;
  const std::string sql = absl::StrCat("INSERT OR IGNORE INTO notifications(", kColumns,
                                       ") VALUES(?,?,?,?,?,?,?,?,?,?)");
  if (absl::Status st = Prepare(db_, sql, s); !st.ok()) return st;
  BindText(s.stmt, 1, n.id);
  BindText(s.stmt, 2, n.event);
  BindText(s.stmt, 3, n.tenant);
  BindText(s.stmt, 4, n.url);
  sqlite3_bind_blob(s.stmt, 5, n.payload.data(), static_cast<int>(n.payload.size()),
                    SQLITE_TRANSIENT);
  sqlite3_bind_int(s.stmt, 6, n.attempts);
  sqlite3_bind_int64(s.stmt, 7, absl::ToUnixMicros(n.created));
  sqlite3_bind_int64(s.stmt, 8, absl::ToUnixMicros(n.next_attempt));
  sqlite3_bind_int(s.stmt, 9, n.state);
  BindText(s.stmt, 10, n.last_error);
  if (absl::Status st = Check(sqlite3_step(s.stmt), "insert"); !st.ok()) return st;
  return sqlite3_changes(db_) > 0;
}

absl::StatusOr<std::vector<Notification>> SqliteQueue::Select(const char* where, int limit) {
  absl::MutexLock lock(&mu_);
  Statement s;
  const std::string sql = absl::StrCat("SELECT ", kColumns, " FROM notifications ", where,
                                       " LIMIT ", limit);
  if (absl::Status st = Prepare(db_, sql, s); !st.ok()) return st;
  std::vector<Notification> out;
  int rc;
  while ((rc = sqlite3_step(s.stmt)) == SQLITE_ROW) {
    Notification n;
    n.id = Text(s.stmt, 0);
    n.event = Text(s.stmt, 1);
    n.tenant = Text(s.stmt, 2);
    n.url = Text(s.stmt, 3);
    n.payload = Text(s.stmt, 4);
    n.attempts = sqlite3_column_int(s.stmt, 5);
    n.created = absl::FromUnixMicros(sqlite3_column_int64(s.stmt, 6));
    n.next_attempt = absl::FromUnixMicros(sqlite3_column_int64(s.stmt, 7));
    n.state = static_cast<Notification::State>(sqlite3_column_int(s.stmt, 8));
    n.last_error = Text(s.stmt, 9);
    out.push_back(std::move(n));
  }
  if (absl::Status st = Check(rc, "select"); !st.ok()) return st;
  return out;
}

absl::StatusOr<std::vector<Notification>> SqliteQueue::PendingNotifications(int limit) {
  return Select("WHERE state = 0 ORDER BY next_attempt_micros, id", limit);
}

absl::StatusOr<std::vector<Notification>> SqliteQueue::All() {
  return Select("ORDER BY id", -1);
}

absl::StatusOr<int64_t> SqliteQueue::CountPending() {
  absl::MutexLock lock(&mu_);
  Statement s;
  if (absl::Status st = Prepare(db_, "SELECT COUNT(*) FROM notifications WHERE state = 0", s);
      !st.ok()) {
    return st;
  }
  const int rc = sqlite3_step(s.stmt);
  if (rc != SQLITE_ROW) return Check(rc == SQLITE_DONE ? SQLITE_ERROR : rc, "count");
  return sqlite3_column_int64(s.stmt, 0);
}

absl::Status SqliteQueue::UpdateNotification(const Notification& n) {
  absl::MutexLock lock(&mu_);
  Statement s;
  if (absl::Status st = Prepare(db_,
                                "UPDATE notifications SET attempts = ?, next_attempt_micros = ?, "
                                "state = ?, last_error = ? WHERE id = ?",
                                s);
      !st.ok()) {
    return st;
  }
  sqlite3_bind_int(s.stmt, 1, n.attempts);
  sqlite3_bind_int64(s.stmt, 2, absl::ToUnixMicros(n.next_attempt));
  sqlite3_bind_int(s.stmt, 3, n.state);
  BindText(s.stmt, 4, n.last_error);
  BindText(s.stmt, 5, n.id);
  if (absl::Status st = Check(sqlite3_step(s.stmt), "update"); !st.ok()) return st;
  if (sqlite3_changes(db_) == 0) {
    return absl::NotFoundError(absl::StrCat("notification ", n.id, " not found"));
  }
  return absl::OkStatus();
}

absl::Status SqliteQueue::Prune(absl::Time before) {
  absl::MutexLock lock(&mu_);
  Statement s;
  if (absl::Status st = Prepare(db_,
                                "DELETE FROM notifications WHERE state != 0 AND "
                                "created_micros < ?",
                                s);
      !st.ok()) {
    return st;
  }
  sqlite3_bind_int64(s.stmt, 1, absl::ToUnixMicros(before));
  return Check(sqlite3_step(s.stmt), "prune");
}

}  // namespace freezetune::notify
