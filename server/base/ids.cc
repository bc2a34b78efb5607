#include "server/base/ids.h"

#include <cstdint>

#include "absl/base/const_init.h"
#include "absl/random/random.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"

namespace freezetune::base {

std::string NewId(absl::string_view prefix) {
  static absl::Mutex mu(absl::kConstInit);
  static absl::BitGen* gen = new absl::BitGen();
  uint64_t bits = 0;
  {
    absl::MutexLock lock(&mu);
    bits = absl::Uniform<uint64_t>(*gen);
  }
  return absl::StrFormat("%s-%012x", prefix, bits & 0xffffffffffffULL);
}

}  // namespace freezetune::base
