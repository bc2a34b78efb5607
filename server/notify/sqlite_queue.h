// NotificationStore (notifier.h) in its own SQLite file (the server uses
// <data_dir>/notifications.db): one table, one row per notification keyed
// by the job or sweep id, self-contained so that it does not depend on how
// jobs and sweeps are stored. WAL mode with synchronous=FULL: a row is on
// disk when PutNotification returns.
//
// Thread safety: every method may be called from any thread; one connection
// behind a mutex, each method one statement (or transaction).
#ifndef FREEZETUNE_SERVER_NOTIFY_SQLITE_QUEUE_H_
#define FREEZETUNE_SERVER_NOTIFY_SQLITE_QUEUE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "server/notify/notifier.h"

struct sqlite3;

namespace freezetune::notify {

class SqliteQueue : public NotificationStore {
 public:
  // Opens (or creates) the file and its table. UNAVAILABLE if it cannot.
  static absl::StatusOr<std::unique_ptr<SqliteQueue>> Open(const std::string& path);
  ~SqliteQueue() override;
  SqliteQueue(const SqliteQueue&) = delete;
  SqliteQueue& operator=(const SqliteQueue&) = delete;

  absl::StatusOr<bool> PutNotification(const Notification& n) override;
  absl::StatusOr<std::vector<Notification>> PendingNotifications(int limit) override;
  absl::StatusOr<int64_t> CountPending() override;
  absl::Status UpdateNotification(const Notification& n) override;
  absl::Status Prune(absl::Time before) override;

  // Every notification (any state), by id; for tests and inspection.
  absl::StatusOr<std::vector<Notification>> All();

 private:
  explicit SqliteQueue(sqlite3* db) : db_(db) {}
  absl::Status Check(int rc, const char* what) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::vector<Notification>> Select(const char* where, int limit);

  absl::Mutex mu_;
  sqlite3* const db_;
};

}  // namespace freezetune::notify

#endif  // FREEZETUNE_SERVER_NOTIFY_SQLITE_QUEUE_H_
