// Outputs of a frozen prefix (embeddings + the first k encoder layers), per
// example, shared by every trainer in the process: across the epochs of one
// job, and across jobs, e.g. the trials of a freeze-depth sweep, where a
// trial that freezes k layers starts from what a trial freezing fewer layers
// already computed.
//
// An entry is found by a key that names everything its values depend on, so
// a hit is never stale: the frozen weights (their content digests), the
// model configuration that shapes the computation, the dataset's token ids,
// the depth and the device. PrefixKey builds it.
//
// Memory: the store holds at most `max_bytes` of hidden states in total.
// Entries that no trainer holds are evicted least recently used first when
// room is needed; rows that do not fit are not stored (the caller recomputes
// them). Values are computed in eval mode and may differ from a fresh
// computation in the last float bits (batch shapes differ).
//
// Thread safety: every method may be called from any thread.
#ifndef FREEZETUNE_SERVER_TRAIN_PREFIX_STORE_H_
#define FREEZETUNE_SERVER_TRAIN_PREFIX_STORE_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"

namespace freezetune::train {

class PrefixStore;

// Hidden states after the prefix for every example of one dataset.
class PrefixEntry {
 public:
  PrefixEntry(PrefixStore* store, int64_t num_examples) : store_(store), rows_(num_examples) {}

  // When every example of `indices` is stored: copies them into `out`
  // ([indices.size(), T, H], zero-filled by the caller; row r gets example
  // indices[r]'s [length, H] values at the front) and returns true.
  bool Gather(const std::vector<int64_t>& indices, at::Tensor& out) const;
  // Stores hidden[r, :lengths[r]] for example indices[r], for rows not yet
  // stored, while the store's budget allows.
  void Put(const std::vector<int64_t>& indices, const std::vector<int64_t>& lengths,
           const at::Tensor& hidden);

 private:
  friend class PrefixStore;
  PrefixStore* const store_;
  mutable absl::Mutex mu_;
  std::vector<at::Tensor> rows_ ABSL_GUARDED_BY(mu_);
};

class PrefixStore {
 public:
  explicit PrefixStore(int64_t max_bytes) : max_bytes_(max_bytes) {}
  PrefixStore(const PrefixStore&) = delete;
  PrefixStore& operator=(const PrefixStore&) = delete;

  // The entry for `key`, created empty if missing (then *created is set
  // when given). num_examples must be the dataset's size (it is part of what
  // the key names).
  std::shared_ptr<PrefixEntry> Open(const std::string& key, int64_t num_examples,
                                    bool* created = nullptr);
  // The entry for `key` if one exists, else null.
  std::shared_ptr<PrefixEntry> Find(const std::string& key);

  // Removes `key`'s entry unless a trainer other than the caller holds it
  // (the caller must have dropped its own reference first). A job that
  // shares nothing calls it when it ends, so its rows do not outlive it.
  void DropUnlessHeld(const std::string& key);

  int64_t max_bytes() const { return max_bytes_; }
  int64_t bytes() const;
  // Bytes ever stored (never decreases): tells a job that stored nothing
  // from one whose rows were dropped.
  int64_t stored_bytes_total() const;

 private:
  friend class PrefixEntry;
  // Reserves `n` bytes for `requester`, evicting unheld entries (never the
  // requester) when needed; false when they do not fit.
  bool Reserve(const PrefixEntry* requester, int64_t n);

  const int64_t max_bytes_;
  mutable absl::Mutex mu_;
  int64_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t stored_total_ ABSL_GUARDED_BY(mu_) = 0;
  struct Slot {
    std::string key;
    std::shared_ptr<PrefixEntry> entry;
    int64_t bytes = 0;
  };
  // Most recently used at the front.
  std::list<Slot> lru_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::list<Slot>::iterator> index_ ABSL_GUARDED_BY(mu_);
};

// Builds a key: each part is appended with a separator.
class PrefixKey {
 public:
  PrefixKey& Add(const std::string& part);
  PrefixKey& Add(uint64_t part);
  const std::string& str() const { return key_; }

 private:
  std::string key_;
};

}  // namespace freezetune::train

#endif  // FREEZETUNE_SERVER_TRAIN_PREFIX_STORE_H_
