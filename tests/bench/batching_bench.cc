// Measures what length bucketing saves: SST-2 train tokenized with the
// bert-base-uncased vocab at max_len 128, batch 32, padded token slots for a
// plain shuffled plan vs a length-bucketed shuffled plan vs a fully sorted
// (evaluation) plan. Also times reading+parsing and encoding, and encoding
// through the tokenization cache (train::EncodeCache): the first lookup (a
// miss: key hash + encode + insert) and a repeat (a hit: key hash + copy).
#include <chrono>
#include <cstdio>
#include <string>

#include "server/data/batching.h"
#include "server/data/dataset.h"
#include "server/data/uri.h"
#include "server/train/encode_cache.h"

namespace fd = freezetune::data;

namespace {
double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}
}  // namespace

int main(int argc, char** argv) {
  const std::string shared = std::string(FREEZETUNE_SOURCE_DIR) + "/../shared/data/";
  const std::string path = argc > 1 ? argv[1] : shared + "sst2/train.tsv";
  constexpr int kMaxLen = 128;
  constexpr int kBatch = 32;

  auto t0 = std::chrono::steady_clock::now();
  freezetune::v1::DatasetSpec spec;
  spec.set_uri(path);
  auto raw = fd::LoadDataset(spec, fd::UriOptions(), "train");
  if (!raw.ok()) {
    std::fprintf(stderr, "%s\n", std::string(raw.status().message()).c_str());
    return 1;
  }
  const double parse_s = Seconds(t0);
  auto space = fd::ResolveLabelSpace(freezetune::v1::TaskSpec(), *raw, "train");
  auto tok = freezetune::model::WordPieceTokenizer::FromVocabFile(
      shared + "bert-base-uncased-vocab.txt", true);
  if (!space.ok() || !tok.ok()) {
    std::fprintf(stderr, "label space or vocab failed\n");
    return 1;
  }
  t0 = std::chrono::steady_clock::now();
  auto enc = fd::EncodeDataset(*raw, *space, *tok, kMaxLen, "train");
  if (!enc.ok()) {
    std::fprintf(stderr, "%s\n", std::string(enc.status().message()).c_str());
    return 1;
  }
  const double encode_s = Seconds(t0);

  freezetune::train::EncodeCache cache(freezetune::train::kDefaultEncodeCacheBytes);
  t0 = std::chrono::steady_clock::now();
  const auto key = freezetune::train::EncodeCacheKey(
      *raw, *space, freezetune::train::TokenizerFingerprint(*tok), kMaxLen);
  const double key_s = Seconds(t0);
  t0 = std::chrono::steady_clock::now();
  auto miss = cache.GetOrEncode(*raw, *space, *tok, kMaxLen, "train");
  const double miss_s = Seconds(t0);
  t0 = std::chrono::steady_clock::now();
  auto hit = cache.GetOrEncode(*raw, *space, *tok, kMaxLen, "train");
  const double hit_s = Seconds(t0);
  if (!miss.ok() || !hit.ok() || hit->ids != enc->ids || cache.stats().hits != 1) {
    std::fprintf(stderr, "encode cache: wrong result or no hit\n");
    return 1;
  }
  std::printf("encode cache: key %016llx%016llx in %.3f s; first lookup (miss) %.3f s, "
              "repeat (hit) %.3f s, %.1f MiB cached; cold encode / hit = %.0fx\n",
              static_cast<unsigned long long>(key.a), static_cast<unsigned long long>(key.b),
              key_s, miss_s, hit_s, static_cast<double>(cache.stats().bytes) / (1 << 20),
              encode_s / hit_s);

  int64_t real = 0;
  for (const auto& ids : enc->ids) real += static_cast<int64_t>(ids.size());
  std::printf("examples %lld, real tokens %lld (mean %.1f), parse %.3f s, encode %.3f s\n",
              static_cast<long long>(enc->size()), static_cast<long long>(real),
              static_cast<double>(real) / static_cast<double>(enc->size()), parse_s, encode_s);
  std::printf("batch %d, max_len %d; padded slots summed over one epoch:\n", kBatch, kMaxLen);
  std::printf("%-28s %14s %14s %10s\n", "plan", "slots", "pad tokens", "pad share");
  auto row = [&](const char* name, const std::vector<std::vector<int64_t>>& plan) {
    const int64_t slots = fd::PaddedTokens(*enc, plan);
    std::printf("%-28s %14lld %14lld %9.1f%%\n", name, static_cast<long long>(slots),
                static_cast<long long>(slots - real),
                100.0 * static_cast<double>(slots - real) / static_cast<double>(slots));
    return slots;
  };
  const int64_t fixed = static_cast<int64_t>(enc->size()) * kMaxLen;
  std::printf("%-28s %14lld %14lld %9.1f%%\n", "pad to max_len (static)",
              static_cast<long long>(fixed), static_cast<long long>(fixed - real),
              100.0 * static_cast<double>(fixed - real) / static_cast<double>(fixed));
  const int64_t shuffled = row("shuffled, dynamic padding", fd::PlanBatches(*enc, kBatch, 42, 0, true, false));
  const int64_t bucketed = row("shuffled + length buckets", fd::PlanBatches(*enc, kBatch, 42, 0, true, true));
  row("sorted (eval plan)", fd::PlanBatches(*enc, kBatch, 42, 0, false, true));
  std::printf("bucketing: %.2fx fewer token slots than plain shuffling\n",
              static_cast<double>(shuffled) / static_cast<double>(bucketed));
  return 0;
}
