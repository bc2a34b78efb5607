// Completion callbacks (Notify in freezetune.proto): when a job or sweep
// with `notify` set ends, its final record is queued durably and a worker
// thread POSTs it, signed with the tenant's secret, retrying with
// exponential backoff until it is delivered (a 2xx answer) or max_age has
// passed since it was queued (then it is abandoned).
//
// Durability: a notification is written to the NotificationStore (one row
// per ended resource, keyed by its id) before any attempt, and every attempt
// is recorded there, so a restart resumes it (at least once: an attempt
// whose row update is lost is made again; receivers deduplicate on
// X-Freezetune-Delivery). The owner reconciles at start by calling
// JobEnded/SweepEnded for every ended resource (rows that exist are left
// alone), which covers a crash between a terminal event and its row.
//
// Delivery is serial: one worker, one POST at a time (each bounded by
// options.uris.http_timeout_seconds), soonest due first.
//
// Thread safety: JobEnded/SweepEnded may be called from any thread, before
// or after Start() (they write the row and wake the worker); the worker is
// the only thread that sends. Stop() joins it.
#ifndef FREEZETUNE_SERVER_NOTIFY_NOTIFIER_H_
#define FREEZETUNE_SERVER_NOTIFY_NOTIFIER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "freezetune/v1/freezetune.pb.h"
#include "server/data/uri.h"
#include "server/notify/secrets.h"

namespace freezetune::notify {

// One queued callback, as the store keeps it.
struct Notification {
  enum State : int { kPending = 0, kDelivered = 1, kAbandoned = 2 };
  std::string id;           // the job or sweep id (one notification each)
  std::string event;        // "job.ended" or "sweep.ended"
  std::string tenant;
  std::string url;
  std::string payload;      // the final Job / Sweep, protobuf JSON mapping
  int attempts = 0;
  absl::Time created;
  absl::Time next_attempt;
  State state = kPending;
  std::string last_error;   // of the last failed attempt
};

// Where notifications are kept (sqlite_queue.h). Thread-safe.
class NotificationStore {
 public:
  virtual ~NotificationStore() = default;
  // Inserts unless a notification with this id exists; true when inserted.
  virtual absl::StatusOr<bool> PutNotification(const Notification& n) = 0;
  // Pending notifications, soonest next_attempt first, at most `limit`.
  virtual absl::StatusOr<std::vector<Notification>> PendingNotifications(int limit) = 0;
  virtual absl::StatusOr<int64_t> CountPending() = 0;
  // Replaces attempts, next_attempt, state and last_error.
  virtual absl::Status UpdateNotification(const Notification& n) = 0;
  // Deletes delivered and abandoned notifications created before `before`.
  virtual absl::Status Prune(absl::Time before) = 0;
};

// What the notifier reports (metrics, log lines); null members are skipped.
struct NotifierHooks {
  std::function<void(bool delivered)> attempt;  // every POST attempt
  std::function<void()> abandoned;              // gave up after max_age
  std::function<void(int64_t)> pending;         // pending notifications now
  // A failed attempt or an abandoned notification, with the reason.
  std::function<void(const Notification&, absl::string_view what)> log;
};

struct NotifierOptions {
  Secrets secrets;
  data::UriOptions uris;  // allow_http, allow_private_http, http_timeout_seconds
  absl::Duration initial_backoff = absl::Seconds(30);
  absl::Duration max_backoff = absl::Hours(1);
  absl::Duration max_age = absl::Hours(24);
  NotifierHooks hooks;
};

// When attempt number `attempts` (1-based) failed: the time of the next one,
// initial_backoff * 2^(attempts-1) capped at max_backoff after `now`.
absl::Time NextAttempt(const NotifierOptions& options, int attempts, absl::Time now);

// Submit-time checks of a Notify (field: "job.notify" / "sweep.notify"):
// the URL (data::CheckCallbackUrl; INVALID_ARGUMENT "<field>.url: ...") and
// that the tenant has a secret (FAILED_PRECONDITION "<field>: ...").
absl::Status ValidateNotify(const v1::Notify& notify, const std::string& tenant,
                            const NotifierOptions& options, const std::string& field);

class Notifier {
 public:
  // `store` is not owned and must outlive the notifier.
  Notifier(NotificationStore* store, NotifierOptions options);
  ~Notifier();  // Stop()s
  Notifier(const Notifier&) = delete;
  Notifier& operator=(const Notifier&) = delete;

  const NotifierOptions& options() const { return options_; }

  // Starts the worker. Call once.
  void Start();
  // Joins the worker (an attempt in flight finishes first). Idempotent.
  void Stop();

  // Queue the callback of an ended job / sweep. Nothing when notify is
  // unset, the state is not terminal, or it ended more than max_age ago.
  absl::Status JobEnded(const v1::Job& job);
  absl::Status SweepEnded(const v1::Sweep& sweep);

 private:
  absl::Status Enqueue(const std::string& id, const std::string& event,
                       const std::string& tenant, const std::string& url,
                       const google::protobuf::Timestamp& end_time,
                       const google::protobuf::Message& record);
  void Run();
  // One attempt; updates `n` (attempts, state, next_attempt, last_error).
  void Attempt(Notification& n);
  bool StopOrWake() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_ || wake_; }

  NotificationStore* const store_;
  const NotifierOptions options_;
  mutable absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool wake_ ABSL_GUARDED_BY(mu_) = false;
  std::thread worker_;
};

}  // namespace freezetune::notify

#endif  // FREEZETUNE_SERVER_NOTIFY_NOTIFIER_H_
