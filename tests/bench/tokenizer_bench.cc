// Tokenizer throughput on real data: SST-2 dev sentences and RTE dev pairs,
// reported as sentences (items) per second and input MB per second.
#include <cstdlib>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "benchmark/benchmark.h"
#include "server/model/tokenizer.h"

namespace freezetune::model {
namespace {

std::string Shared() {
  const char* env = std::getenv("FREEZETUNE_SOURCE_DIR");
  return std::string(env != nullptr ? env : FREEZETUNE_SOURCE_DIR) + "/../shared/data";
}

// GLUE TSV: header line, tab-separated, no quote processing.
std::vector<std::vector<std::string>> ReadTsv(const std::string& path) {
  std::vector<std::vector<std::string>> rows;
  std::ifstream in(path);
  std::string line;
  bool header = true;
  while (std::getline(in, line)) {
    if (header) {
      header = false;
      continue;
    }
    std::vector<std::string> cols;
    size_t start = 0;
    for (size_t tab; (tab = line.find('\t', start)) != std::string::npos; start = tab + 1) {
      cols.push_back(line.substr(start, tab - start));
    }
    cols.push_back(line.substr(start));
    rows.push_back(std::move(cols));
  }
  return rows;
}

const WordPieceTokenizer& Tokenizer() {
  static const WordPieceTokenizer* tok = [] {
    auto t = WordPieceTokenizer::FromVocabFile(Shared() + "/bert-base-uncased-vocab.txt", true);
    if (!t.ok()) std::abort();
    return new WordPieceTokenizer(std::move(t).value());
  }();
  return *tok;
}

const std::vector<std::string>& Sst2() {
  static const auto* v = [] {
    auto* out = new std::vector<std::string>;
    for (auto& row : ReadTsv(Shared() + "/sst2/dev.tsv")) out->push_back(row.at(0));
    return out;
  }();
  return *v;
}

const std::vector<std::pair<std::string, std::string>>& RtePairs() {
  static const auto* v = [] {
    auto* out = new std::vector<std::pair<std::string, std::string>>;
    for (auto& row : ReadTsv(Shared() + "/rte/dev.tsv")) out->emplace_back(row.at(1), row.at(2));
    return out;
  }();
  return *v;
}

void BM_LoadVocab(benchmark::State& state) {
  for (auto _ : state) {
    auto t = WordPieceTokenizer::FromVocabFile(Shared() + "/bert-base-uncased-vocab.txt", true);
    benchmark::DoNotOptimize(t);
  }
}
BENCHMARK(BM_LoadVocab)->Unit(benchmark::kMillisecond);

void BM_EncodeSst2Dev(benchmark::State& state) {
  const auto& tok = Tokenizer();
  const auto& data = Sst2();
  int64_t bytes = 0;
  for (const auto& s : data) bytes += static_cast<int64_t>(s.size());
  for (auto _ : state) {
    for (const auto& s : data) benchmark::DoNotOptimize(tok.Encode(s));
  }
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(data.size()));
  state.SetBytesProcessed(state.iterations() * bytes);
}
BENCHMARK(BM_EncodeSst2Dev)->Unit(benchmark::kMillisecond);

void BM_EncodeRteDevPairs(benchmark::State& state) {
  const auto& tok = Tokenizer();
  const auto& data = RtePairs();
  const int max_length = static_cast<int>(state.range(0));
  int64_t bytes = 0;
  for (const auto& p : data) bytes += static_cast<int64_t>(p.first.size() + p.second.size());
  for (auto _ : state) {
    for (const auto& p : data) {
      benchmark::DoNotOptimize(tok.Encode(p.first, std::string_view(p.second), max_length));
    }
  }
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(data.size()));
  state.SetBytesProcessed(state.iterations() * bytes);
}
BENCHMARK(BM_EncodeRteDevPairs)->Arg(0)->Arg(128)->Unit(benchmark::kMillisecond);

// Non-ASCII heavy input exercises the utf8proc path (NFD, Mn, lowercase).
void BM_EncodeAccentedText(benchmark::State& state) {
  const auto& tok = Tokenizer();
  std::string text;
  for (int i = 0; i < 40; ++i) text += "Ça dépend: Émile a réservé l'hôtel à Zürich pour 3 nuits. ";
  for (auto _ : state) benchmark::DoNotOptimize(tok.Encode(text));
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(text.size()));
}
BENCHMARK(BM_EncodeAccentedText)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace freezetune::model
