#include "server/notify/notifier.h"

#include <google/protobuf/util/json_util.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/notify/signature.h"

namespace freezetune::notify {
namespace {

bool IsEnded(v1::JobState s) {
  return s == v1::JOB_STATE_SUCCEEDED || s == v1::JOB_STATE_FAILED ||
         s == v1::JOB_STATE_CANCELLED;
}

bool IsEnded(v1::SweepState s) {
  return s == v1::SWEEP_STATE_SUCCEEDED || s == v1::SWEEP_STATE_FAILED ||
         s == v1::SWEEP_STATE_CANCELLED;
}

// How many pending notifications the worker looks at per pass.
constexpr int kBatch = 64;

}  // namespace

absl::Time NextAttempt(const NotifierOptions& options, int attempts, absl::Time now) {
  absl::Duration d = options.initial_backoff;
  for (int i = 1; i < attempts && d < options.max_backoff; ++i) d *= 2;
  return now + std::min(d, options.max_backoff);
}

absl::Status ValidateNotify(const v1::Notify& notify, const std::string& tenant,
                            const NotifierOptions& options, const std::string& field) {
  if (notify.url().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".url: required when ", field,
                                                   " is set"));
  }
  if (notify.url().size() > 2048) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".url: longer than 2048 characters"));
  }
  absl::Status url = data::CheckCallbackUrl(notify.url(), options.uris, field + ".url");
  if (!url.ok()) return url;
  if (!options.secrets.For(tenant).has_value()) {
    return absl::FailedPreconditionError(absl::StrCat(
        field, ": this server has no callback secret for tenant '", tenant,
        "' (--notify_secret_file), so it cannot sign callbacks"));
  }
  return absl::OkStatus();
}

Notifier::Notifier(NotificationStore* store, NotifierOptions options)
    : store_(store), options_(std::move(options)) {}

Notifier::~Notifier() { Stop(); }

void Notifier::Start() { worker_ = std::thread([this] { Run(); }); }

void Notifier::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (worker_.joinable()) worker_.join();
}

absl::Status Notifier::JobEnded(const v1::Job& job) {
  if (!job.spec().has_notify() || !IsEnded(job.state())) return absl::OkStatus();
  return Enqueue(job.id(), "job.ended", job.tenant(), job.spec().notify().url(), job.end_time(),
                 job);
}

absl::Status Notifier::SweepEnded(const v1::Sweep& sweep) {
  if (!sweep.spec().has_notify() || !IsEnded(sweep.state())) return absl::OkStatus();
  return Enqueue(sweep.id(), "sweep.ended", sweep.tenant(), sweep.spec().notify().url(),
                 sweep.end_time(), sweep);
}

absl::Status Notifier::Enqueue(const std::string& id, const std::string& event,
                               const std::string& tenant, const std::string& url,
                               const google::protobuf::Timestamp& end_time,
                               const google::protobuf::Message& record) {
  const absl::Time now = absl::Now();
  // A resource found at start that ended longer ago than its callbacks may
  // be retried owes nothing any more.
  if (end_time.seconds() != 0 && absl::FromUnixSeconds(end_time.seconds()) < now - options_.max_age) {
    return absl::OkStatus();
  }
  Notification n;
  n.id = id;
  n.event = event;
  n.tenant = tenant;
  n.url = url;
  google::protobuf::util::JsonPrintOptions json;
  json.add_whitespace = false;
  if (auto s = google::protobuf::util::MessageToJsonString(record, &n.payload, json); !s.ok()) {
    return absl::InternalError(absl::StrCat("notify ", id, ": ", s.ToString()));
  }
  n.created = n.next_attempt = now;
  absl::StatusOr<bool> inserted = store_->PutNotification(n);
  if (!inserted.ok()) return inserted.status();
  if (!*inserted) return absl::OkStatus();
  absl::MutexLock lock(&mu_);
  wake_ = true;
  return absl::OkStatus();
}

void Notifier::Attempt(Notification& n) {
  const absl::Time now = absl::Now();
  ++n.attempts;
  std::optional<std::string> secret = options_.secrets.For(n.tenant);
  absl::Status result;
  if (!secret) {
    result = absl::FailedPreconditionError(
        absl::StrCat("no callback secret for tenant '", n.tenant, "'"));
  } else {
    const int64_t ts = absl::ToUnixSeconds(now);
    const std::vector<std::string> headers = {
        "Content-Type: application/json",
        absl::StrCat("X-Freezetune-Event: ", n.event),
        absl::StrCat("X-Freezetune-Delivery: ", n.id),
        absl::StrCat("X-Freezetune-Attempt: ", n.attempts),
        absl::StrCat("X-Freezetune-Timestamp: ", ts),
        absl::StrCat("X-Freezetune-Signature: ", SignatureHeader(*secret, ts, n.payload)),
        "User-Agent: freezetune-notify"};
    absl::StatusOr<int> status =
        data::PostCallback(n.url, n.payload, headers, options_.uris, "notify.url");
    if (!status.ok()) {
      result = status.status();
    } else if (*status < 200 || *status >= 300) {
      result = absl::UnavailableError(absl::StrCat("HTTP ", *status));
    }
  }
  if (options_.hooks.attempt) options_.hooks.attempt(result.ok());
  if (result.ok()) {
    n.state = Notification::kDelivered;
    n.last_error.clear();
    return;
  }
  n.last_error = std::string(result.message());
  n.next_attempt = NextAttempt(options_, n.attempts, now);
  if (n.next_attempt - n.created > options_.max_age) {
    n.state = Notification::kAbandoned;
    if (options_.hooks.abandoned) options_.hooks.abandoned();
  }
  if (options_.hooks.log) {
    options_.hooks.log(n, n.state == Notification::kAbandoned ? "callback abandoned"
                                                               : "callback attempt failed");
  }
}

void Notifier::Run() {
  absl::Time next_prune = absl::InfinitePast();
  while (true) {
    const absl::Time start = absl::Now();
    absl::Time wake_at = start + absl::Seconds(60);
    if (start >= next_prune) {
      // Finished rows are kept a while for inspection, then dropped.
      store_->Prune(start - 2 * options_.max_age).IgnoreError();
      next_prune = start + absl::Hours(1);
    }
    absl::StatusOr<std::vector<Notification>> pending = store_->PendingNotifications(kBatch);
    if (pending.ok()) {
      for (Notification& n : *pending) {
        {
          absl::MutexLock lock(&mu_);
          if (stop_) return;
        }
        if (n.next_attempt > absl::Now()) {
          wake_at = std::min(wake_at, n.next_attempt);
          continue;
        }
        Attempt(n);
        // If this write fails the attempt repeats later: at least once.
        store_->UpdateNotification(n).IgnoreError();
        if (n.state == Notification::kPending) wake_at = std::min(wake_at, n.next_attempt);
      }
    } else {
      wake_at = absl::Now() + absl::Seconds(5);  // the store will be back
    }
    if (options_.hooks.pending) {
      absl::StatusOr<int64_t> count = store_->CountPending();
      if (count.ok()) options_.hooks.pending(*count);
    }
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithDeadline(absl::Condition(this, &Notifier::StopOrWake), wake_at);
    if (stop_) return;
    wake_ = false;
  }
}

}  // namespace freezetune::notify
