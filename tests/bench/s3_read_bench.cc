// S3 read throughput vs a local file: a ~100 MB GLUE-style TSV (SST-2's
// first 10,000 training sentences repeated) read through data::ReadUri from
// a local path and from s3:// on s3rver (loopback), rounds alternating; then
// the same through data::LoadDataset (read + parse). Prints MB/s per round,
// medians and the S3/local ratio (target >= 0.5 on loopback).
//
//   build/tests/freezetune_s3_read_bench [MB] [rounds]   (default 100 3)
//
// Needs s3rver in the build dir (the s3_test_server target).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "server/data/dataset.h"
#include "server/data/s3_client.h"
#include "server/data/uri.h"
#include "tests/s3server/s3_test_server.h"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  using namespace freezetune;
  const int64_t mb = argc > 1 ? std::atoll(argv[1]) : 100;
  const int rounds = argc > 2 ? std::atoi(argv[2]) : 3;

  std::ifstream in(std::string(FREEZETUNE_SOURCE_DIR) +
                   "/tests/fixtures/data/sst2/train_first10000.tsv");
  std::stringstream slurp;
  slurp << in.rdbuf();
  const std::string sst2 = slurp.str();
  const std::string header = sst2.substr(0, sst2.find('\n') + 1);
  const std::string rows = sst2.substr(header.size());
  std::string content = header;
  while (static_cast<int64_t>(content.size()) < mb * 1000 * 1000) content += rows;

  const fs::path dir = fs::temp_directory_path() / "ft_s3_bench";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string local = (dir / "train.tsv").string();
  std::ofstream(local, std::ios::binary) << content;

  testing::S3TestServer server({"bench"});
  if (!server.ok()) {
    std::fprintf(stderr, "s3rver did not start: %s\n", server.startup_output().c_str());
    return 1;
  }
  data::UriOptions options;
  options.max_bytes = int64_t{2} << 30;
  options.s3.endpoint_url = server.endpoint();
  options.s3.path_style = true;
  options.s3.access_key_id = "S3RVER";
  options.s3.secret_access_key = "S3RVER";
  const data::S3Client client(options.s3);
  auto t0 = Clock::now();
  auto parts = client.PutFile({"bench", "data/train.tsv"}, local, "bench");
  if (!parts.ok()) {
    std::fprintf(stderr, "upload: %s\n", std::string(parts.status().message()).c_str());
    return 1;
  }
  const double upload_s = std::chrono::duration<double>(Clock::now() - t0).count();
  const double size_mb = static_cast<double>(content.size()) / 1e6;
  std::printf("dataset %.1f MB, %zu bytes; upload %.2f s (%d parts, %.0f MB/s)\n", size_mb,
              content.size(), upload_s, *parts, size_mb / upload_s);

  (void)data::ReadUri(local, options, "warm");  // page cache, both sides
  (void)data::ReadUri("s3://bench/data/train.tsv", options, "warm");
  std::vector<double> read_local, read_s3, load_local, load_s3;
  v1::DatasetSpec spec;
  for (int r = 0; r < rounds; ++r) {
    for (const bool s3 : {false, true}) {
      const std::string uri = s3 ? "s3://bench/data/train.tsv" : local;
      auto start = Clock::now();
      auto got = data::ReadUri(uri, options, "bench");
      const double read_s = std::chrono::duration<double>(Clock::now() - start).count();
      if (!got.ok() || got->size() != content.size()) {
        std::fprintf(stderr, "read %s failed\n", uri.c_str());
        return 1;
      }
      spec.set_uri(uri);
      start = Clock::now();
      auto examples = data::LoadDataset(spec, options, "bench");
      const double load_s = std::chrono::duration<double>(Clock::now() - start).count();
      if (!examples.ok()) {
        std::fprintf(stderr, "load %s: %s\n", uri.c_str(),
                     std::string(examples.status().message()).c_str());
        return 1;
      }
      (s3 ? read_s3 : read_local).push_back(size_mb / read_s);
      (s3 ? load_s3 : load_local).push_back(size_mb / load_s);
      std::printf("round %d %-5s ReadUri %7.1f MB/s  LoadDataset %6.1f MB/s (%zu examples)\n", r + 1,
                  s3 ? "s3" : "local", size_mb / read_s, size_mb / load_s, examples->size());
    }
  }
  std::printf("median ReadUri: local %.1f MB/s, s3 %.1f MB/s, s3/local %.2fx\n",
              Median(read_local), Median(read_s3), Median(read_s3) / Median(read_local));
  std::printf("median LoadDataset: local %.1f MB/s, s3 %.1f MB/s, s3/local %.2fx\n",
              Median(load_local), Median(load_s3), Median(load_s3) / Median(load_local));
  fs::remove_all(dir);
  return 0;
}
