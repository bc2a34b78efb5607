// The content-keyed tokenization cache (see encode_cache.h).
#include "server/train/encode_cache.h"

#include <cstring>
#include <iterator>
#include <string>
#include <utility>

#include "absl/hash/hash.h"

namespace freezetune::train {
namespace {

// An unambiguous byte serialization: every variable-length field carries
// its length first, so no two different inputs serialize alike.
class KeyWriter {
 public:
  explicit KeyWriter(std::string_view tag) { Bytes(tag); }
  void U64(uint64_t v) {
    for (int i = 0; i < 8; ++i) out_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
  void Bytes(std::string_view s) {
    U64(s.size());
    out_.append(s.data(), s.size());
  }
  void Key(const EncodeKey& k) {
    U64(k.a);
    U64(k.b);
  }
  void Reserve(size_t n) { out_.reserve(n); }

  EncodeKey Finish() const {
    EncodeKey k;
    k.a = absl::Hash<std::string_view>{}(std::string_view(out_));
    k.b = MurmurHash64A(out_.data(), out_.size(), 0x6672656e636f6465ULL);
    return k;
  }

 private:
  // MurmurHash64A (Austin Appleby, public domain), 8 bytes per round;
  // unrelated to absl::Hash's algorithm, so the two 64-bit halves are
  // independent.
  static uint64_t MurmurHash64A(const char* data, size_t len, uint64_t seed) {
    constexpr uint64_t m = 0xc6a4a7935bd1e995ULL;
    constexpr int r = 47;
    uint64_t h = seed ^ (len * m);
    const char* end = data + (len / 8) * 8;
    for (const char* p = data; p != end; p += 8) {
      uint64_t k;
      std::memcpy(&k, p, 8);
      k *= m;
      k ^= k >> r;
      k *= m;
      h ^= k;
      h *= m;
    }
    const unsigned char* tail = reinterpret_cast<const unsigned char*>(end);
    switch (len & 7) {
      case 7: h ^= uint64_t{tail[6]} << 48; [[fallthrough]];
      case 6: h ^= uint64_t{tail[5]} << 40; [[fallthrough]];
      case 5: h ^= uint64_t{tail[4]} << 32; [[fallthrough]];
      case 4: h ^= uint64_t{tail[3]} << 24; [[fallthrough]];
      case 3: h ^= uint64_t{tail[2]} << 16; [[fallthrough]];
      case 2: h ^= uint64_t{tail[1]} << 8; [[fallthrough]];
      case 1: h ^= uint64_t{tail[0]}; h *= m;
    }
    h ^= h >> r;
    h *= m;
    h ^= h >> r;
    return h;
  }

  std::string out_;
};

}  // namespace

EncodeKey TokenizerFingerprint(const model::WordPieceTokenizer& tokenizer) {
  KeyWriter w("freezetune.tokenizer.v1");
  w.U64(tokenizer.do_lower_case() ? 1 : 0);
  const std::vector<std::string>& tokens = tokenizer.tokens();
  w.U64(tokens.size());
  for (const std::string& t : tokens) w.Bytes(t);
  return w.Finish();
}

EncodeKey EncodeCacheKey(const std::vector<data::RawExample>& examples,
                         const data::LabelSpace& labels, const EncodeKey& tokenizer,
                         int max_length) {
  KeyWriter w("freezetune.encode.v1");
  size_t size = 64;
  for (const data::RawExample& ex : examples) {
    size += 33 + ex.text.size() + ex.label.size() + (ex.text_pair ? ex.text_pair->size() : 0);
  }
  w.Reserve(size + 64 * labels.names.size());
  w.Key(tokenizer);
  w.U64(static_cast<uint64_t>(static_cast<int64_t>(max_length)));
  w.U64(labels.regression ? 1 : 0);
  w.U64(labels.names.size());
  for (const std::string& name : labels.names) w.Bytes(name);
  w.U64(examples.size());
  for (const data::RawExample& ex : examples) {
    w.Bytes(ex.text);
    w.U64(ex.text_pair ? 1 : 0);
    if (ex.text_pair) w.Bytes(*ex.text_pair);
    w.Bytes(ex.label);
  }
  return w.Finish();
}

int64_t EncodedBytes(const data::EncodedDataset& d) {
  int64_t bytes = 0;
  for (const auto* rows : {&d.ids, &d.type_ids}) {
    bytes += static_cast<int64_t>(rows->capacity() * sizeof(std::vector<int32_t>));
    for (const auto& row : *rows) bytes += static_cast<int64_t>(row.capacity() * sizeof(int32_t));
  }
  bytes += static_cast<int64_t>(d.label_ids.capacity() * sizeof(int64_t));
  bytes += static_cast<int64_t>(d.targets.capacity() * sizeof(float));
  return bytes;
}

EncodeCache::EncodeCache(int64_t max_bytes) : max_bytes_(max_bytes < 0 ? 0 : max_bytes) {}

EncodeCache& EncodeCache::Global() {
  static EncodeCache* const cache = new EncodeCache(kDefaultEncodeCacheBytes);
  return *cache;
}

absl::StatusOr<data::EncodedDataset> EncodeCache::GetOrEncode(
    const std::vector<data::RawExample>& examples, const data::LabelSpace& labels,
    const model::WordPieceTokenizer& tokenizer, int max_length, std::string_view field) {
  const EncodeKey key =
      EncodeCacheKey(examples, labels, TokenizerFingerprint(tokenizer), max_length);
  std::shared_ptr<const data::EncodedDataset> found;
  {
    absl::MutexLock lock(&mu_);
    auto it = index_.find(key);
    if (it != index_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second);  // now most recently used
      found = it->second->dataset;
      ++stats_.hits;
    } else {
      ++stats_.misses;
    }
  }
  if (found) return *found;  // copied outside the lock

  absl::StatusOr<data::EncodedDataset> encoded =
      data::EncodeDataset(examples, labels, tokenizer, max_length, field);
  if (!encoded.ok()) return encoded.status();
  // Off, or so large that it would evict everything and still not fit.
  if (max_bytes_ == 0 || EncodedBytes(*encoded) > max_bytes_) return encoded;
  // The entry is a copy (its vectors carry no spare capacity), and the
  // caller gets a copy of the entry, as on a hit.
  auto shared = std::make_shared<const data::EncodedDataset>(*encoded);
  const int64_t bytes = EncodedBytes(*shared);
  {
    absl::MutexLock lock(&mu_);
    InsertLocked(key, shared, bytes);
  }
  return *shared;
}

void EncodeCache::InsertLocked(const EncodeKey& key,
                               std::shared_ptr<const data::EncodedDataset> dataset,
                               int64_t bytes) {
  if (auto it = index_.find(key); it != index_.end()) EraseLocked(it->second);
  while (!lru_.empty() && stats_.bytes + bytes > max_bytes_) {
    EraseLocked(std::prev(lru_.end()));
    ++stats_.evictions;
  }
  lru_.push_front(Entry{key, std::move(dataset), bytes});
  index_[key] = lru_.begin();
  stats_.bytes += bytes;
  ++stats_.entries;
}

void EncodeCache::EraseLocked(Lru::iterator it) {
  stats_.bytes -= it->bytes;
  --stats_.entries;
  index_.erase(it->key);
  lru_.erase(it);
}

EncodeCache::Stats EncodeCache::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

void EncodeCache::Clear() {
  absl::MutexLock lock(&mu_);
  lru_.clear();
  index_.clear();
  stats_.entries = 0;
  stats_.bytes = 0;
}

}  // namespace freezetune::train
