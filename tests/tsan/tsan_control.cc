// Controls for the TSan build's absl::Mutex shim (absl_mutex_tsan.cc):
//   tsan_control locked   every way the code base synchronizes through
//                         absl (Mutex, MutexLock, Await, LockWhen, CondVar,
//                         Notification): must run clean;
//   tsan_control race     the same counter written once without the lock:
//                         TSan must report it, or the shim hides races.
#include <cstring>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

namespace {

absl::Mutex mu;
int counter = 0;  // guarded by mu (except in "race")

int Locked() {
  std::thread a([] {
    for (int i = 0; i < 10000; ++i) {
      absl::MutexLock l(&mu);
      ++counter;
    }
  });
  std::thread b([] {
    for (int i = 0; i < 10000; ++i) {
      absl::MutexLock l(&mu);
      ++counter;
    }
  });
  a.join();
  b.join();
  // Await and LockWhen evaluate their conditions inside the library.
  bool ready = false;
  std::thread setter([&] {
    absl::MutexLock l(&mu);
    counter += 1;
    ready = true;
  });
  {
    absl::MutexLock l(&mu);
    mu.Await(absl::Condition(&ready));
    counter += 1;
  }
  setter.join();
  ready = false;
  std::thread setter2([&] {
    absl::MutexLock l(&mu);
    ready = true;
  });
  mu.LockWhen(absl::Condition(&ready));
  counter += 1;
  mu.Unlock();
  setter2.join();
  // CondVar with a timeout, and a Notification carrying plain data.
  absl::CondVar cv;
  bool signalled = false;
  std::thread signaller([&] {
    absl::MutexLock l(&mu);
    signalled = true;
    cv.Signal();
  });
  {
    absl::MutexLock l(&mu);
    while (!signalled) cv.WaitWithTimeout(&mu, absl::Seconds(10));
  }
  signaller.join();
  int payload = 0;
  absl::Notification done;
  std::thread notifier([&] {
    payload = 42;
    done.Notify();
  });
  done.WaitForNotification();
  const int seen = payload;
  notifier.join();
  return counter == 20003 && seen == 42 ? 0 : 1;
}

int Race() {
  std::thread a([] {
    for (int i = 0; i < 1000; ++i) {
      absl::MutexLock l(&mu);
      ++counter;
    }
  });
  std::thread b([] {
    for (int i = 0; i < 1000; ++i) ++counter;  // no lock
  });
  a.join();
  b.join();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::strcmp(argv[1], "locked") == 0) return Locked();
  if (argc == 2 && std::strcmp(argv[1], "race") == 0) return Race();
  return 2;
}
