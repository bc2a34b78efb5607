// Makes Debian's absl::Mutex visible to ThreadSanitizer.
//
// Debian's libabsl_synchronization.so is not built with TSan, so its lock and
// unlock (atomics and futexes inside the library) create no happens-before
// edge that TSan can see, and every ABSL_GUARDED_BY field would be reported
// as racing. This file, linked into each test binary of the TSan build
// (FREEZETUNE_SANITIZE=thread) and exported with -rdynamic, interposes the
// library's public entry points: each forwards to the real function
// (dlsym(RTLD_NEXT)) and tells TSan what it did with the __tsan_mutex_*
// annotations, exactly as Abseil does itself when it is built with TSan.
// Calls from inside the library (absl::Notification) and from gRPC go through
// the PLT and so reach these definitions too.
//
// Only the functions that the others funnel into are wrapped: Await* all end
// in AwaitCommon, CondVar::Wait* in WaitCommon, *WithTimeout in *WithDeadline,
// so no call is annotated twice. Awaits and condition-variable waits release
// and re-acquire the mutex; they are annotated as an unlock and a lock.
// Conditions are wrapped so that each evaluation (which the library makes
// with the mutex held, possibly on the unlocking thread) acquires first.
#include <dlfcn.h>
#include <sanitizer/tsan_interface.h>

#include <atomic>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"

#define FT_STR_INNER(x) #x
#define FT_STR(x) FT_STR_INNER(x)

namespace {

// The real definition of absl::<ns>::<suffix>, e.g. "5Mutex4LockEv" (a
// const member function's name starts "_ZNK").
void* Real(const char* suffix, bool const_member = false) {
  const std::string ns = FT_STR(ABSL_OPTION_INLINE_NAMESPACE_NAME);
  const std::string name = std::string(const_member ? "_ZNK4absl" : "_ZN4absl") +
                           std::to_string(ns.size()) + ns + suffix;
  void* fn = ::dlsym(RTLD_NEXT, name.c_str());
  if (fn == nullptr) {
    std::fprintf(stderr, "absl_mutex_tsan: %s not found\n", name.c_str());
    std::abort();
  }
  return fn;
}

template <typename Fn>
Fn RealFn(const char* suffix, bool const_member = false) {
  return reinterpret_cast<Fn>(Real(suffix, const_member));
}

// The test binary's own code (linker-provided bounds of its text).
extern "C" char __executable_start;
extern "C" char etext;
bool FromThisExecutable(const void* return_address) {
  const char* p = static_cast<const char*>(return_address);
  return p >= &__executable_start && p < &etext;
}

void AnnotateUnlock(void* mu) {
  __tsan_mutex_pre_unlock(mu, 0);
  __tsan_mutex_post_unlock(mu, 0);
}

void AnnotateLock(void* mu) {
  __tsan_mutex_pre_lock(mu, 0);
  __tsan_mutex_post_lock(mu, 0, 0);
}

// The library evaluates a condition with the mutex really held but outside
// what the wrappers annotate: before the waiter's own acquisition is
// annotated, or on another thread inside its Unlock (after that thread's
// release is annotated), reading the waiter's condition object on the
// waiter's stack. So each evaluation acquires the mutex's clock first and
// releases into it after, and the waiter, whose lock annotation comes later,
// is ordered after every evaluation of its condition.
struct AcquiringCondition {
  const absl::Condition* cond;
  void* mu;
  static bool Eval(AcquiringCondition* self) {
    __tsan_acquire(self->mu);
    const bool result = self->cond->Eval();
    __tsan_release(self->mu);
    return result;
  }
};

}  // namespace

namespace absl {
ABSL_NAMESPACE_BEGIN

using synchronization_internal::KernelTimeout;

Mutex::~Mutex() {
  static auto real = RealFn<void (*)(Mutex*)>("5MutexD1Ev");
  const bool ours = FromThisExecutable(__builtin_return_address(0));
  real(this);
  // Only for our own mutexes: gRPC destroys its internal ones after a
  // reference count (atomics TSan cannot see) reached zero, which would
  // read as a destroy racing with the last unlock. Heap memory is reset by
  // TSan's free() anyway; this keeps "destroy of a locked mutex" checks for
  // the code under test.
  if (ours) __tsan_mutex_destroy(this, 0);
}

void Mutex::Lock() {
  static auto real = RealFn<void (*)(Mutex*)>("5Mutex4LockEv");
  __tsan_mutex_pre_lock(this, 0);
  real(this);
  __tsan_mutex_post_lock(this, 0, 0);
}

void Mutex::Unlock() {
  static auto real = RealFn<void (*)(Mutex*)>("5Mutex6UnlockEv");
  __tsan_mutex_pre_unlock(this, 0);
  real(this);
  __tsan_mutex_post_unlock(this, 0);
}

bool Mutex::TryLock() {
  static auto real = RealFn<bool (*)(Mutex*)>("5Mutex7TryLockEv");
  __tsan_mutex_pre_lock(this, __tsan_mutex_try_lock);
  const bool locked = real(this);
  __tsan_mutex_post_lock(
      this, __tsan_mutex_try_lock | (locked ? 0 : __tsan_mutex_try_lock_failed), 0);
  return locked;
}

void Mutex::ReaderLock() {
  static auto real = RealFn<void (*)(Mutex*)>("5Mutex10ReaderLockEv");
  __tsan_mutex_pre_lock(this, __tsan_mutex_read_lock);
  real(this);
  __tsan_mutex_post_lock(this, __tsan_mutex_read_lock, 0);
}

void Mutex::ReaderUnlock() {
  static auto real = RealFn<void (*)(Mutex*)>("5Mutex12ReaderUnlockEv");
  __tsan_mutex_pre_unlock(this, __tsan_mutex_read_lock);
  real(this);
  __tsan_mutex_post_unlock(this, __tsan_mutex_read_lock);
}

bool Mutex::ReaderTryLock() {
  static auto real = RealFn<bool (*)(Mutex*)>("5Mutex13ReaderTryLockEv");
  const unsigned flags = __tsan_mutex_read_lock | __tsan_mutex_try_lock;
  __tsan_mutex_pre_lock(this, flags);
  const bool locked = real(this);
  __tsan_mutex_post_lock(this, flags | (locked ? 0 : __tsan_mutex_try_lock_failed), 0);
  return locked;
}

void Mutex::LockWhen(const Condition& cond) {
  static auto real = RealFn<void (*)(Mutex*, const Condition&)>("5Mutex8LockWhenERKNS0_9ConditionE");
  AcquiringCondition acquiring{&cond, this};
  __tsan_mutex_pre_lock(this, 0);
  real(this, Condition(&AcquiringCondition::Eval, &acquiring));
  __tsan_mutex_post_lock(this, 0, 0);
}

bool Mutex::LockWhenWithDeadline(const Condition& cond, absl::Time deadline) {
  static auto real = RealFn<bool (*)(Mutex*, const Condition&, absl::Time)>(
      "5Mutex20LockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  AcquiringCondition acquiring{&cond, this};
  __tsan_mutex_pre_lock(this, 0);
  const bool result = real(this, Condition(&AcquiringCondition::Eval, &acquiring), deadline);
  __tsan_mutex_post_lock(this, 0, 0);
  return result;
}

void Mutex::ReaderLockWhen(const Condition& cond) {
  static auto real =
      RealFn<void (*)(Mutex*, const Condition&)>("5Mutex14ReaderLockWhenERKNS0_9ConditionE");
  AcquiringCondition acquiring{&cond, this};
  __tsan_mutex_pre_lock(this, __tsan_mutex_read_lock);
  real(this, Condition(&AcquiringCondition::Eval, &acquiring));
  __tsan_mutex_post_lock(this, __tsan_mutex_read_lock, 0);
}

bool Mutex::ReaderLockWhenWithDeadline(const Condition& cond, absl::Time deadline) {
  static auto real = RealFn<bool (*)(Mutex*, const Condition&, absl::Time)>(
      "5Mutex26ReaderLockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  AcquiringCondition acquiring{&cond, this};
  __tsan_mutex_pre_lock(this, __tsan_mutex_read_lock);
  const bool result = real(this, Condition(&AcquiringCondition::Eval, &acquiring), deadline);
  __tsan_mutex_post_lock(this, __tsan_mutex_read_lock, 0);
  return result;
}

bool Mutex::AwaitCommon(const Condition& cond, KernelTimeout t) {
  static auto real = RealFn<bool (*)(Mutex*, const Condition&, KernelTimeout)>(
      "5Mutex11AwaitCommonERKNS0_9ConditionENS0_24synchronization_internal13KernelTimeoutE");
  AcquiringCondition acquiring{&cond, this};
  AnnotateUnlock(this);
  const bool result = real(this, Condition(&AcquiringCondition::Eval, &acquiring), t);
  AnnotateLock(this);
  return result;
}

bool CondVar::WaitCommon(Mutex* mutex, KernelTimeout t) {
  static auto real = RealFn<bool (*)(CondVar*, Mutex*, KernelTimeout)>(
      "7CondVar10WaitCommonEPNS0_5MutexENS0_24synchronization_internal13KernelTimeoutE");
  AnnotateUnlock(mutex);
  const bool result = real(this, mutex, t);
  AnnotateLock(mutex);
  return result;
}

// Notification: Notify() stores the flag inside the library (a release TSan
// cannot see) and HasBeenNotified() loads it inline in our code, and
// WaitForNotification() returns without locking when the flag is already
// set. Notify releases on the flag's address first; the waits acquire it
// after.
namespace {
struct NotificationLayout {  // absl::Notification's members, in order
  Mutex mutex;
  std::atomic<bool> notified_yet;
};
static_assert(sizeof(NotificationLayout) == sizeof(Notification), "Notification layout changed");
void* FlagOf(const Notification* n) {
  return reinterpret_cast<char*>(const_cast<Notification*>(n)) +
         offsetof(NotificationLayout, notified_yet);
}
}  // namespace

void Notification::Notify() {
  static auto real = RealFn<void (*)(Notification*)>("12Notification6NotifyEv");
  __tsan_release(FlagOf(this));
  real(this);
}

void Notification::WaitForNotification() const {
  static auto real = RealFn<void (*)(const Notification*)>("12Notification19WaitForNotificationEv", true);
  real(this);
  __tsan_acquire(FlagOf(this));
}

bool Notification::WaitForNotificationWithTimeout(absl::Duration timeout) const {
  static auto real = RealFn<bool (*)(const Notification*, absl::Duration)>(
      "12Notification30WaitForNotificationWithTimeoutENS0_8DurationE", true);
  const bool notified = real(this, timeout);
  if (notified) __tsan_acquire(FlagOf(this));
  return notified;
}

bool Notification::WaitForNotificationWithDeadline(absl::Time deadline) const {
  static auto real = RealFn<bool (*)(const Notification*, absl::Time)>(
      "12Notification31WaitForNotificationWithDeadlineENS0_4TimeE", true);
  const bool notified = real(this, deadline);
  if (notified) __tsan_acquire(FlagOf(this));
  return notified;
}

ABSL_NAMESPACE_END
}  // namespace absl
