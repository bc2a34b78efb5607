// One server-streaming reactor for every "replay, then follow" RPC: WatchJob
// (JobEvents) and WatchSweep (SweepEvents). The event type is a template
// parameter; where the events come from is an EventSource (event_sources.h
// has the job and sweep ones).
//
// What the stream does: it sends every event with sequence > after_sequence
// in order, exactly once, first the stored ones, then live ones as the
// source announces them (pushed: no polling), and finishes
//   - OK right after writing the source's final event (IsFinal), or at once
//     when Begin() is told the stream has already ended;
//   - UNAVAILABLE "server shutting down; resume with after_sequence=N" once it
//     has caught up and the source is Drained() (no more events will come
//     from this process);
//   - CANCELLED when the client goes away or a write fails;
//   - with the source's error when a read fails.
//
// Invariants, all under mu_: at most one write in flight (`writing_`);
// Finish is called exactly once (`finished_`), never while a write is in
// flight; one Pump decides at a time (`pumping_`). gRPC calls (StartWrite,
// Finish) and the source's Read are made with mu_ released: Finish may run
// OnDone inline, which deletes the reactor, and Read may wait for the store.
//
// Lifetime: the reactor subscribes to its source in Begin() and unsubscribes
// in OnDone() before deleting itself. The source's contract (after
// Unsubscribe returns, the callback is not running and never runs again)
// is what makes a notification that races with OnDone safe. The subscription
// callback only runs Pump(), which returns at once after Finish.
#ifndef FREEZETUNE_SERVER_SERVICE_EVENT_STREAM_REACTOR_H_
#define FREEZETUNE_SERVER_SERVICE_EVENT_STREAM_REACTOR_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "server/metrics/metrics.h"
#include "server/service/status_mapping.h"

namespace freezetune::service {

// The events of one stream (one job's, one sweep's). Owned by its reactor;
// called from gRPC threads and from the subscription's notifying thread.
template <typename Event>
class EventSource {
 public:
  using SubscriptionId = uint64_t;
  virtual ~EventSource() = default;

  // Registers `on_new`, to run whenever new events may be readable (and when
  // the source becomes Drained()). It must run with no lock held that Read()
  // takes. Events stored before Subscribe returns are readable by Read.
  virtual SubscriptionId Subscribe(std::function<void()> on_new) = 0;
  // After it returns, `on_new` is not running and never runs again.
  virtual void Unsubscribe(SubscriptionId id) = 0;
  // Events with sequence > after, ascending, gapless, at most `limit`.
  virtual absl::StatusOr<std::vector<Event>> Read(int64_t after, int limit) = 0;
  // True for the stream's last event: nothing follows it.
  virtual bool IsFinal(const Event& event) const = 0;
  // True once this process emits no more events for the stream's subject.
  virtual bool Drained() const = 0;
};

template <typename Event>
class EventStreamReactor final : public grpc::ServerWriteReactor<Event> {
 public:
  // Events read per Read() while catching up.
  static constexpr int kBatch = 64;

  // `method` labels the RPC's metrics ("WatchJob"); `metrics` may be null;
  // `start` is when the call arrived. Call Begin() next.
  EventStreamReactor(std::unique_ptr<EventSource<Event>> source, metrics::Metrics* metrics,
                     const char* method, absl::Time start, int64_t after_sequence)
      : source_(std::move(source)), metrics_(metrics), method_(method), start_(start),
        after_(after_sequence) {
    if (metrics_ != nullptr) metrics_->WatchStreamOpened();
  }

  // Finishes with `status` when it is not OK (the request was refused).
  // Otherwise subscribes, then starts sending. `ended`: the caller checked
  // that no event follows after_sequence and none ever will (the subject
  // had ended and after_sequence was its last sequence).
  void Begin(const absl::Status& status, bool ended) {
    if (!status.ok()) {
      FinishNow(ToGrpcStatus(status));
      return;
    }
    // Subscribe before the first read: whatever is stored later is
    // announced, whatever was stored before is read.
    subscription_ = source_->Subscribe([this] { Pump(); });
    {
      absl::MutexLock lock(&mu_);
      subscribed_ = true;
      ended_ = ended;
    }
    Pump();
  }

  void OnWriteDone(bool ok) override {
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) {
        // The client is gone or the call was cancelled.
        pending_finish_ = grpc::Status(grpc::StatusCode::CANCELLED, "stream closed");
      }
    }
    Pump();
  }

  void OnCancel() override {
    {
      absl::MutexLock lock(&mu_);
      if (!pending_finish_.has_value()) {
        pending_finish_ = grpc::Status(grpc::StatusCode::CANCELLED, "watch cancelled");
      }
    }
    Pump();
  }

  void OnDone() override {
    bool subscribed;
    grpc::StatusCode code;
    {
      // Written by whichever thread finished the stream; read under mu_
      // rather than trusting gRPC's hand-off to order it.
      absl::MutexLock lock(&mu_);
      subscribed = subscribed_;
      code = final_code_;
    }
    // Metrics first: once the subscription is gone (what tests wait for),
    // the stream is already counted as closed.
    if (metrics_ != nullptr) {
      metrics_->WatchStreamClosed();
      metrics_->RpcFinished(method_, GrpcCodeName(code),
                            absl::ToDoubleSeconds(absl::Now() - start_));
    }
    if (subscribed) source_->Unsubscribe(subscription_);
    delete this;
  }

 private:

  void FinishNow(const grpc::Status& status) {
    {
      absl::MutexLock lock(&mu_);
      if (finished_) return;
      finished_ = true;
      final_code_ = status.error_code();
    }
    this->Finish(status);
  }

  // Decides the next action under mu_, then performs it unlocked. Runs on
  // gRPC threads (OnWriteDone, OnCancel, Begin) and on the source's
  // notifying thread. One thread pumps at a time (`pumping_`); a Pump that
  // finds another one running only sets `repump_`, so that one decides
  // again instead: no wakeup is lost and none blocks. source_->Read (which
  // may hit the store) runs with mu_ released, as the gRPC calls do.
  void Pump() ABSL_LOCKS_EXCLUDED(mu_) {
    const Event* to_write = nullptr;
    std::optional<grpc::Status> to_finish;
    mu_.Lock();
    if (pumping_) {
      repump_ = true;
      mu_.Unlock();
      return;
    }
    pumping_ = true;
    while (true) {
      repump_ = false;
      if (finished_ || writing_) break;
      if (pending_finish_.has_value()) {
        to_finish = pending_finish_;
        break;
      }
      if (last_written_final_ || (ended_ && buffer_.empty())) {
        to_finish = grpc::Status::OK;
        break;
      }
      if (!buffer_.empty()) {
        current_ = std::move(buffer_.front());
        buffer_.pop_front();
        after_ = current_.sequence();
        last_written_final_ = source_->IsFinal(current_);
        writing_ = true;
        to_write = &current_;
        break;
      }
      // Drained is read before the read: if it was already true, an empty
      // read means no event can follow from this process.
      const int64_t after = after_;
      const bool drained = source_->Drained();
      mu_.Unlock();
      absl::StatusOr<std::vector<Event>> events = source_->Read(after, kBatch);
      mu_.Lock();
      if (!events.ok()) {
        to_finish = ToGrpcStatus(events.status());
        break;
      }
      for (Event& e : *events) buffer_.push_back(std::move(e));
      if (buffer_.empty() && !repump_) {
        if (drained) {
          // Caught up and no more events will come from this process: end
          // now rather than at the drain deadline; the client resumes
          // elsewhere (or after the restart) from after_sequence.
          to_finish = grpc::Status(
              grpc::StatusCode::UNAVAILABLE,
              absl::StrCat("server shutting down; resume with after_sequence=", after_));
        }
        // Otherwise caught up with a live subject: the next notification
        // pumps.
        break;
      }
      // Events to send, or something happened during the read (a
      // notification, a cancel): decide again.
    }
    if (to_finish.has_value()) {
      finished_ = true;
      final_code_ = to_finish->error_code();
    }
    pumping_ = false;
    mu_.Unlock();
    if (to_write != nullptr) {
      this->StartWrite(to_write);
    } else if (to_finish.has_value()) {
      this->Finish(*to_finish);
    }
  }

  const std::unique_ptr<EventSource<Event>> source_;
  metrics::Metrics* const metrics_;
  const char* const method_;
  const absl::Time start_;
  typename EventSource<Event>::SubscriptionId subscription_ = 0;  // written once in Begin

  absl::Mutex mu_;
  int64_t after_ ABSL_GUARDED_BY(mu_);
  bool subscribed_ ABSL_GUARDED_BY(mu_) = false;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool last_written_final_ ABSL_GUARDED_BY(mu_) = false;
  bool pumping_ ABSL_GUARDED_BY(mu_) = false;  // a Pump is deciding (maybe reading)
  bool repump_ ABSL_GUARDED_BY(mu_) = false;   // another Pump came meanwhile
  std::optional<grpc::Status> pending_finish_ ABSL_GUARDED_BY(mu_);
  std::deque<Event> buffer_ ABSL_GUARDED_BY(mu_);
  Event current_ ABSL_GUARDED_BY(mu_);  // the write in flight
  grpc::StatusCode final_code_ ABSL_GUARDED_BY(mu_) = grpc::StatusCode::OK;  // set once, before Finish
};

}  // namespace freezetune::service

#endif  // FREEZETUNE_SERVER_SERVICE_EVENT_STREAM_REACTOR_H_
