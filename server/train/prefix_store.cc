// See prefix_store.h.
#include "server/train/prefix_store.h"

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"

namespace freezetune::train {

bool PrefixEntry::Gather(const std::vector<int64_t>& indices, at::Tensor& out) const {
  absl::MutexLock lock(&mu_);
  for (int64_t idx : indices) {
    if (!rows_[idx].defined()) return false;
  }
  for (size_t r = 0; r < indices.size(); ++r) {
    const at::Tensor& row = rows_[indices[r]];
    out[static_cast<int64_t>(r)].narrow(0, 0, row.size(0)).copy_(row);
  }
  return true;
}

void PrefixEntry::Put(const std::vector<int64_t>& indices, const std::vector<int64_t>& lengths,
                      const at::Tensor& hidden) {
  const int64_t row_bytes = hidden.size(2) * static_cast<int64_t>(hidden.element_size());
  absl::MutexLock lock(&mu_);
  for (size_t r = 0; r < indices.size(); ++r) {
    at::Tensor& slot = rows_[indices[r]];
    if (slot.defined()) continue;
    if (!store_->Reserve(this, lengths[r] * row_bytes)) return;
    slot = hidden[static_cast<int64_t>(r)].narrow(0, 0, lengths[r]).clone();
  }
}

std::shared_ptr<PrefixEntry> PrefixStore::Open(const std::string& key, int64_t num_examples,
                                               bool* created) {
  absl::MutexLock lock(&mu_);
  if (created != nullptr) *created = false;
  auto it = index_.find(key);
  if (it != index_.end()) {
    lru_.splice(lru_.begin(), lru_, it->second);
    return it->second->entry;
  }
  if (created != nullptr) *created = true;
  lru_.push_front(Slot{key, std::make_shared<PrefixEntry>(this, num_examples), 0});
  index_[key] = lru_.begin();
  return lru_.front().entry;
}

std::shared_ptr<PrefixEntry> PrefixStore::Find(const std::string& key) {
  absl::MutexLock lock(&mu_);
  auto it = index_.find(key);
  if (it == index_.end()) return nullptr;
  lru_.splice(lru_.begin(), lru_, it->second);
  return it->second->entry;
}

int64_t PrefixStore::bytes() const {
  absl::MutexLock lock(&mu_);
  return bytes_;
}

int64_t PrefixStore::stored_bytes_total() const {
  absl::MutexLock lock(&mu_);
  return stored_total_;
}

void PrefixStore::DropUnlessHeld(const std::string& key) {
  absl::MutexLock lock(&mu_);
  auto it = index_.find(key);
  if (it == index_.end() || it->second->entry.use_count() > 1) return;
  bytes_ -= it->second->bytes;
  lru_.erase(it->second);
  index_.erase(it);
}

bool PrefixStore::Reserve(const PrefixEntry* requester, int64_t n) {
  absl::MutexLock lock(&mu_);
  // An entry only the store holds has no trainer inside Gather or Put (both
  // need a reference, and handing one out takes mu_), so it can go.
  for (auto it = lru_.end(); bytes_ + n > max_bytes_ && it != lru_.begin();) {
    --it;
    if (it->entry.get() == requester || it->entry.use_count() > 1) continue;
    bytes_ -= it->bytes;
    index_.erase(it->key);
    it = lru_.erase(it);
  }
  if (bytes_ + n > max_bytes_) return false;
  bytes_ += n;
  stored_total_ += n;
  for (Slot& slot : lru_) {
    if (slot.entry.get() == requester) {
      slot.bytes += n;
      break;
    }
  }
  return true;
}

PrefixKey& PrefixKey::Add(const std::string& part) {
  absl::StrAppend(&key_, part.size(), ":", part, ";");
  return *this;
}

PrefixKey& PrefixKey::Add(uint64_t part) {
  absl::StrAppend(&key_, part, ";");
  return *this;
}

}  // namespace freezetune::train
