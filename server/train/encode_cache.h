// A process-wide cache of tokenized datasets (data::EncodedDataset), keyed
// by the content of everything the encoding depends on, so that jobs over
// the same data (sweep trials, retries, repeated submissions) tokenize once.
//
// The key is 128 bits from two independent 64-bit hashes (absl::Hash and
// MurmurHash64A) of an unambiguous (length-prefixed) serialization of:
//  - the raw examples in order: text, whether there is a pair, the pair
//    text, and the label as written (the file line numbers are not part of
//    it: they only appear in errors, and errors are never cached);
//  - the label space (names in id order, regression flag);
//  - the tokenizer identity (see TokenizerFingerprint);
//  - max_length.
// absl::Hash is seeded per process, which is fine: keys never leave it.
//
// Torch-free. Thread safety: every EncodeCache method may be called from
// many threads at once. Encoding runs outside the lock, so two concurrent
// misses on one key both encode (and the second insert replaces the first);
// the result is the same either way.
#ifndef FREEZETUNE_SERVER_TRAIN_ENCODE_CACHE_H_
#define FREEZETUNE_SERVER_TRAIN_ENCODE_CACHE_H_

#include <cstdint>
#include <list>
#include <memory>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/data/dataset.h"
#include "server/model/tokenizer.h"

namespace freezetune::train {

// Budget of the process-wide cache (EncodeCache::Global()). SST-2 train
// (67k sentences, max_length 128) takes about 10 MiB, so this holds a few
// dozen datasets of that size.
inline constexpr int64_t kDefaultEncodeCacheBytes = int64_t{256} << 20;

struct EncodeKey {
  uint64_t a = 0;  // absl::Hash
  uint64_t b = 0;  // MurmurHash64A
  bool operator==(const EncodeKey& o) const { return a == o.a && b == o.b; }
  bool operator!=(const EncodeKey& o) const { return !(*this == o); }
};

// Identity of a tokenizer's behaviour: its vocab (tokens in id order) and
// its lowercasing. Two tokenizers with equal fingerprints encode alike.
EncodeKey TokenizerFingerprint(const model::WordPieceTokenizer& tokenizer);

// The cache key of EncodeDataset(examples, labels, tokenizer, max_length).
// `tokenizer` is TokenizerFingerprint(tokenizer).
EncodeKey EncodeCacheKey(const std::vector<data::RawExample>& examples,
                         const data::LabelSpace& labels, const EncodeKey& tokenizer,
                         int max_length);

// Heap bytes an EncodedDataset holds (vector capacities plus the inner
// vectors' headers); what the budget counts.
int64_t EncodedBytes(const data::EncodedDataset& dataset);

class EncodeCache {
 public:
  // `max_bytes` bounds the sum of EncodedBytes over the entries; the least
  // recently used entries are evicted to stay within it. A dataset larger
  // than the whole budget is encoded and returned but not kept. 0 disables
  // caching.
  explicit EncodeCache(int64_t max_bytes);
  EncodeCache(const EncodeCache&) = delete;
  EncodeCache& operator=(const EncodeCache&) = delete;

  // The process-wide instance, kDefaultEncodeCacheBytes. Never destroyed.
  static EncodeCache& Global();

  // data::EncodeDataset(examples, labels, tokenizer, max_length, field),
  // from the cache when the key is there. The caller gets its own copy.
  // Failures (a label outside the space, with its line; a bad max_length)
  // are returned exactly as EncodeDataset returns them and are not cached,
  // so an entry never depends on `field`.
  absl::StatusOr<data::EncodedDataset> GetOrEncode(const std::vector<data::RawExample>& examples,
                                                   const data::LabelSpace& labels,
                                                   const model::WordPieceTokenizer& tokenizer,
                                                   int max_length, std::string_view field);

  struct Stats {
    int64_t hits = 0;
    int64_t misses = 0;     // lookups that ran EncodeDataset (failed ones too)
    int64_t evictions = 0;  // entries dropped for the budget
    int64_t entries = 0;
    int64_t bytes = 0;
  };
  Stats stats() const;
  int64_t max_bytes() const { return max_bytes_; }
  // Drops every entry; the counters stay.
  void Clear();

 private:
  struct KeyHash {
    size_t operator()(const EncodeKey& k) const { return static_cast<size_t>(k.a ^ k.b); }
  };
  struct Entry {
    EncodeKey key;
    std::shared_ptr<const data::EncodedDataset> dataset;
    int64_t bytes = 0;
  };
  using Lru = std::list<Entry>;  // front: most recently used

  void InsertLocked(const EncodeKey& key, std::shared_ptr<const data::EncodedDataset> dataset,
                    int64_t bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EraseLocked(Lru::iterator it) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int64_t max_bytes_;
  mutable absl::Mutex mu_;
  Lru lru_ ABSL_GUARDED_BY(mu_);
  std::unordered_map<EncodeKey, Lru::iterator, KeyHash> index_ ABSL_GUARDED_BY(mu_);
  Stats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace freezetune::train

#endif  // FREEZETUNE_SERVER_TRAIN_ENCODE_CACHE_H_
