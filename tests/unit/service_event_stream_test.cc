// EventStreamReactor against a scripted EventSource, on a real gRPC server on
// 127.0.0.1:0 (a FineTuneService whose WatchJob serves that source): the
// source's Read, which may wait for the store, runs without the reactor's
// lock, so a notification arriving meanwhile neither blocks nor is lost.
#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "freezetune/v1/freezetune.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/service/event_stream_reactor.h"

namespace freezetune::service {
namespace {

v1::JobEvent Event(int64_t sequence, bool final = false) {
  v1::JobEvent e;
  e.set_sequence(sequence);
  if (final) e.mutable_state_change()->set_state(v1::JOB_STATE_SUCCEEDED);
  return e;
}

// Events appended by the test; Read number `block_read` waits for `gate`.
class ScriptedSource final : public EventSource<v1::JobEvent> {
 public:
  struct Shared {
    absl::Mutex mu;
    std::vector<v1::JobEvent> events ABSL_GUARDED_BY(mu);
    std::function<void()> on_new ABSL_GUARDED_BY(mu);
    int reads ABSL_GUARDED_BY(mu) = 0;
    int block_read = 2;
    absl::Notification in_blocked_read;
    absl::Notification gate;
  };
  explicit ScriptedSource(Shared* shared) : shared_(shared) {}
  SubscriptionId Subscribe(std::function<void()> on_new) override {
    absl::MutexLock lock(&shared_->mu);
    shared_->on_new = std::move(on_new);
    return 1;
  }
  void Unsubscribe(SubscriptionId) override {
    absl::MutexLock lock(&shared_->mu);
    shared_->on_new = nullptr;
  }
  // Like a store read: a snapshot, then (for the blocked read) a wait
  // before it is returned.
  absl::StatusOr<std::vector<v1::JobEvent>> Read(int64_t after, int limit) override {
    int read;
    std::vector<v1::JobEvent> out;
    {
      absl::MutexLock lock(&shared_->mu);
      read = ++shared_->reads;
      for (const v1::JobEvent& e : shared_->events) {
        if (e.sequence() > after && static_cast<int>(out.size()) < limit) out.push_back(e);
      }
    }
    if (read == shared_->block_read) {
      shared_->in_blocked_read.Notify();
      shared_->gate.WaitForNotification();
    }
    return out;
  }
  bool IsFinal(const v1::JobEvent& event) const override { return event.has_state_change(); }
  bool Drained() const override { return false; }

 private:
  Shared* const shared_;
};

class ScriptedService final : public v1::FineTuneService::CallbackService {
 public:
  explicit ScriptedService(ScriptedSource::Shared* shared) : shared_(shared) {}
  grpc::ServerWriteReactor<v1::JobEvent>* WatchJob(grpc::CallbackServerContext*,
                                                   const v1::WatchJobRequest* request) override {
    auto* reactor = new EventStreamReactor<v1::JobEvent>(
        std::make_unique<ScriptedSource>(shared_), nullptr, "WatchJob", absl::Now(),
        request->after_sequence());
    reactor->Begin(absl::OkStatus(), /*ended=*/false);
    return reactor;
  }

 private:
  ScriptedSource::Shared* const shared_;
};

TEST(EventStreamReactorTest, ANotificationDuringAReadNeitherBlocksNorIsLost) {
  ScriptedSource::Shared shared;
  {
    absl::MutexLock lock(&shared.mu);
    shared.events.push_back(Event(1));
  }
  ScriptedService service(&shared);
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  auto stub = v1::FineTuneService::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));

  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto reader = stub->WatchJob(&context, v1::WatchJobRequest());
  v1::JobEvent event;
  ASSERT_TRUE(reader->Read(&event));
  EXPECT_EQ(event.sequence(), 1);
  // After event 1 is written the reactor reads again (read 2), finds
  // nothing, and is held there, as a slow store read would be.
  ASSERT_TRUE(shared.in_blocked_read.WaitForNotificationWithTimeout(absl::Seconds(30)));

  // Meanwhile the subject publishes event 2 and notifies. The notification
  // must return at once (before the fix it waited on the reactor's mutex,
  // held across the read) ...
  std::function<void()> notify;
  {
    absl::MutexLock lock(&shared.mu);
    shared.events.push_back(Event(2, /*final=*/true));
    notify = shared.on_new;
  }
  ASSERT_TRUE(notify);
  absl::Notification notified;
  std::thread notifier([&] {
    notify();
    notified.Notify();
  });
  const bool returned = notified.WaitForNotificationWithTimeout(absl::Seconds(5));
  shared.gate.Notify();  // release the read either way, so the test ends
  notifier.join();
  EXPECT_TRUE(returned) << "the notification blocked behind the source's Read";

  // ... and not be lost: the read that was in flight returns its snapshot,
  // taken before event 2, so only a read after the notification finds it.
  ASSERT_TRUE(reader->Read(&event));
  EXPECT_EQ(event.sequence(), 2);
  EXPECT_FALSE(reader->Read(&event));
  EXPECT_TRUE(reader->Finish().ok());
  server->Shutdown();
}

}  // namespace
}  // namespace freezetune::service
