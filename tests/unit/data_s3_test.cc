// Tests for s3:// URIs (server/data/s3_client.h, s3_dirs.h, uri.h) against a
// real S3-protocol server (s3rver) started on loopback by each test, plus a
// one-shot loopback HTTP server for what s3rver cannot do (cut a body short).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/data/s3_client.h"
#include "server/data/s3_dirs.h"
#include "server/data/uri.h"
#include "tests/s3server/s3_test_server.h"

namespace freezetune::data {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::StartsWith;

std::string Msg(const absl::Status& s) { return std::string(s.message()); }

std::string ReadFile(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void WriteFile(const fs::path& p, const std::string& content) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << content;
}

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

class S3Test : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(server_.ok()) << "s3rver did not start: " << server_.startup_output();
    std::string tmpl = (fs::temp_directory_path() / "ft_s3_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    tmp_ = tmpl;
    options_.s3.endpoint_url = server_.endpoint();
    options_.s3.path_style = true;
    options_.s3.access_key_id = "S3RVER";
    options_.s3.secret_access_key = "S3RVER";
    options_.s3.attempts = 1;
    options_.s3_cache_dir = (tmp_ / "cache").string();
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(tmp_, ec);
  }
  S3Client client() const { return S3Client(options_.s3); }
  void Put(const std::string& key, const std::string& body) {
    ASSERT_TRUE(client().Put(S3Location{"bkt", key}, body, "test").ok()) << key;
  }

  freezetune::testing::S3TestServer server_{{"bkt", "other"}};
  fs::path tmp_;
  UriOptions options_;
};

TEST_F(S3Test, ReadsAnObjectThroughReadUri) {
  Put("data/train.tsv", "sentence\tlabel\nok\t1\n");
  auto r = ReadUri("s3://bkt/data/train.tsv", options_, "job.train.uri");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "sentence\tlabel\nok\t1\n");
}

TEST_F(S3Test, KeysWithSpacesAndUnicodeRoundTrip) {
  const std::string key = "dir/my file ü+&=.tsv";
  Put(key, "x");
  auto r = ReadUri("s3://bkt/" + key, options_, "f");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "x");
  auto listed = client().List("bkt", "dir/", "f");
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].key, key);
  EXPECT_EQ((*listed)[0].size, 1);
}

TEST_F(S3Test, MissingObjectAndBucketAreInvalidArgumentNamingTheCode) {
  auto r = ReadUri("s3://bkt/nope.tsv", options_, "job.train.uri");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(r.status()),
              StartsWith("job.train.uri: s3 NoSuchKey for bucket 'bkt', key 'nope.tsv'"));
  auto b = ReadUri("s3://no-such-bucket/x.tsv", options_, "job.validation.uri");
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(b.status()),
              StartsWith("job.validation.uri: s3 NoSuchBucket for bucket 'no-such-bucket'"));
}

TEST_F(S3Test, UnknownAccessKeyIsRefusedWithTheS3Code) {
  Put("k.tsv", "x");
  options_.s3.access_key_id = "NOT-A-KEY";
  auto r = ReadUri("s3://bkt/k.tsv", options_, "job.train.uri");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(r.status()), StartsWith("job.train.uri: s3 InvalidAccessKeyId for bucket 'bkt'"));
  EXPECT_THAT(Msg(r.status()), HasSubstr("HTTP 403"));
}

TEST_F(S3Test, BadUrisAreRefusedBeforeAnyRequest) {
  for (const char* uri : {"s3://Bad_Bucket/k", "s3://bkt", "s3://bkt/", "s3://bkt/a//b",
                          "s3://bkt/a/../b", "s3://ab/k"}) {
    auto r = ReadUri(uri, options_, "job.train.uri");
    ASSERT_FALSE(r.ok()) << uri;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << uri;
    EXPECT_THAT(Msg(r.status()), StartsWith("job.train.uri: ")) << uri;
  }
}

TEST_F(S3Test, SizeCapAppliesToS3Reads) {
  Put("big.tsv", std::string(1000, 'x'));
  options_.max_bytes = 100;
  auto r = ReadUri("s3://bkt/big.tsv", options_, "job.train.uri");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(r.status()), HasSubstr("job.train.uri: response exceeds the limit of 100 bytes"));
  options_.max_bytes = 1000;
  EXPECT_TRUE(ReadUri("s3://bkt/big.tsv", options_, "f").ok());
}

TEST_F(S3Test, LargeFilesUploadInPartsAndStreamBackToAFile) {
  options_.s3.multipart_threshold = 5 << 20;
  options_.s3.part_size = 5 << 20;  // S3's minimum part size
  const std::string content = RandomBytes((12 << 20) + 123, 7);
  WriteFile(tmp_ / "big.bin", content);
  const S3Location at{"bkt", "blobs/big.bin"};
  auto parts = client().PutFile(at, (tmp_ / "big.bin").string(), "f");
  ASSERT_TRUE(parts.ok()) << parts.status();
  EXPECT_EQ(*parts, 3);  // 5 + 5 + 2 MiB, each part accepted by the server
  auto head = client().Head(at, "f");
  ASSERT_TRUE(head.ok()) << head.status();
  EXPECT_EQ(head->size, static_cast<int64_t>(content.size()));
  // Below the threshold: one PUT.
  WriteFile(tmp_ / "small.bin", "abc");
  auto one = client().PutFile(S3Location{"bkt", "blobs/small.bin"}, (tmp_ / "small.bin").string(), "f");
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(*one, 1);
  auto got = client().GetToFile(at, (tmp_ / "back.bin").string(), int64_t{1} << 30, "f");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->size, static_cast<int64_t>(content.size()));
  EXPECT_TRUE(ReadFile(tmp_ / "back.bin") == content);
  // No upload left open.
  auto small = client().List("bkt", "blobs/", "f");
  ASSERT_TRUE(small.ok());
  EXPECT_EQ(small->size(), 2u);
}

TEST_F(S3Test, ModelDirectoryIsStagedAndCachedByETag) {
  Put("models/tiny/config.json", "{\"model_type\": \"bert\"}");
  Put("models/tiny/model.safetensors", RandomBytes(4096, 1));
  Put("models/tiny/vocab.txt", "[PAD]\n[UNK]\n");
  auto dir = StageS3ModelDir("s3://bkt/models/tiny/", options_, "job.model_uri");
  ASSERT_TRUE(dir.ok()) << dir.status();
  EXPECT_EQ(ReadFile(fs::path(*dir) / "vocab.txt"), "[PAD]\n[UNK]\n");
  EXPECT_EQ(ReadFile(fs::path(*dir) / "model.safetensors"), RandomBytes(4096, 1));
  EXPECT_FALSE(fs::exists(fs::path(*dir) / "tokenizer_config.json"));
  auto again = StageS3ModelDir("s3://bkt/models/tiny", options_, "job.model_uri");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *dir);
  // A changed file is a new ETag: staged afresh.
  Put("models/tiny/vocab.txt", "[PAD]\n[UNK]\n[CLS]\n");
  auto changed = StageS3ModelDir("s3://bkt/models/tiny", options_, "job.model_uri");
  ASSERT_TRUE(changed.ok());
  EXPECT_NE(*changed, *dir);
  EXPECT_EQ(ReadFile(fs::path(*changed) / "vocab.txt"), "[PAD]\n[UNK]\n[CLS]\n");
}

TEST_F(S3Test, ModelDirectoryWithAMissingFileNamesIt) {
  Put("models/half/config.json", "{}");
  Put("models/half/model.safetensors", "x");
  auto dir = StageS3ModelDir("s3://bkt/models/half", options_, "job.model_uri");
  ASSERT_FALSE(dir.ok());
  EXPECT_EQ(dir.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(dir.status()), StartsWith("job.model_uri: s3 NotFound for bucket 'bkt', key "
                                            "'models/half/vocab.txt'"));
  // Nothing half-staged is left in the cache.
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(options_.s3_cache_dir, ec)) {
    ADD_FAILURE() << "left in the cache: " << e.path();
  }
}

TEST_F(S3Test, AManifestCannotNameFilesOutsideItsDirectory) {
  Put("models/evil/freezetune.manifest.json",
      "{\"files\": [{\"name\": \"../../etc/passwd\", \"size\": 1}]}");
  auto dir = StageS3ModelDir("s3://bkt/models/evil", options_, "job.model_uri");
  ASSERT_FALSE(dir.ok());
  EXPECT_EQ(dir.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(dir.status()), StartsWith("job.model_uri: manifest "));
  EXPECT_THAT(Msg(dir.status()), HasSubstr("is not plain"));
}

TEST_F(S3Test, OutputIsPublishedWithItsManifestLastAndNeverOverwritten) {
  WriteFile(tmp_ / "out" / "config.json", "{\"a\": 1}");
  WriteFile(tmp_ / "out" / "model.safetensors", RandomBytes(10000, 2));
  WriteFile(tmp_ / "out" / "vocab.txt", "v\n");
  WriteFile(tmp_ / "out" / "runs" / "history.csv", "step,loss\n");
  ASSERT_TRUE(CheckS3OutputFree("s3://bkt/outputs/job1", options_, "job.output_uri").ok());
  auto uri = PublishS3Dir((tmp_ / "out").string(), "s3://bkt/outputs/job1", options_,
                          "job.output_uri", "job1");
  ASSERT_TRUE(uri.ok()) << uri.status();
  EXPECT_EQ(*uri, "s3://bkt/outputs/job1");
  auto listed = client().List("bkt", "outputs/", "f");
  ASSERT_TRUE(listed.ok());
  std::vector<std::string> keys;
  for (const S3Object& o : *listed) keys.push_back(o.key);
  // Only the output and its manifest: the temporary prefix is gone.
  EXPECT_THAT(keys, ::testing::ElementsAre("outputs/job1/config.json",
                                           "outputs/job1/freezetune.manifest.json",
                                           "outputs/job1/model.safetensors",
                                           "outputs/job1/runs/history.csv",
                                           "outputs/job1/vocab.txt"));
  auto manifest = client().Get(S3Location{"bkt", "outputs/job1/freezetune.manifest.json"},
                               1 << 20, "f");
  ASSERT_TRUE(manifest.ok());
  EXPECT_THAT(*manifest, HasSubstr("\"name\": \"model.safetensors\""));
  EXPECT_THAT(*manifest, HasSubstr("\"size\": 10000"));
  EXPECT_THAT(*manifest, HasSubstr("\"owner\": \"job1\""));

  // Submit-time check and publish-time check both refuse; nothing changes.
  auto busy = CheckS3OutputFree("s3://bkt/outputs/job1", options_, "job.output_uri");
  EXPECT_EQ(busy.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(busy), StartsWith("job.output_uri: s3://bkt/outputs/job1 already holds objects"));
  WriteFile(tmp_ / "out" / "vocab.txt", "replaced\n");
  auto again = PublishS3Dir((tmp_ / "out").string(), "s3://bkt/outputs/job1", options_,
                            "job.output_uri", "job2");
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(again.status()), HasSubstr("already holds a published output"));
  auto vocab = client().Get(S3Location{"bkt", "outputs/job1/vocab.txt"}, 1 << 20, "f");
  ASSERT_TRUE(vocab.ok());
  EXPECT_EQ(*vocab, "v\n");
  auto after = client().List("bkt", "outputs/", "f");
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->size(), 5u);

  // The same job publishing again (its earlier run was stopped before
  // recording the first publication) replaces its own output.
  auto rerun = PublishS3Dir((tmp_ / "out").string(), "s3://bkt/outputs/job1", options_,
                            "job.output_uri", "job1");
  ASSERT_TRUE(rerun.ok()) << rerun.status();
  vocab = client().Get(S3Location{"bkt", "outputs/job1/vocab.txt"}, 1 << 20, "f");
  ASSERT_TRUE(vocab.ok());
  EXPECT_EQ(*vocab, "replaced\n");
  WriteFile(tmp_ / "out" / "vocab.txt", "v\n");

  // A sibling prefix sharing the name's start is a different output.
  EXPECT_TRUE(CheckS3OutputFree("s3://bkt/outputs/job", options_, "job.output_uri").ok());

  // The published output reads back as a model directory, by its manifest.
  auto staged = StageS3ModelDir("s3://bkt/outputs/job1", options_, "job.model_uri");
  ASSERT_TRUE(staged.ok()) << staged.status();
  EXPECT_EQ(ReadFile(fs::path(*staged) / "model.safetensors"), RandomBytes(10000, 2));
  EXPECT_EQ(ReadFile(fs::path(*staged) / "runs" / "history.csv"), "step,loss\n");
}

TEST_F(S3Test, CheckpointsUploadPruneAndRestoreTheNewest) {
  const std::string job = "s3://bkt/checkpoints/job-7";
  for (int step : {10, 20, 30}) {
    const fs::path dir = tmp_ / "local" / ("step-0000000000" + std::to_string(step));
    WriteFile(dir / "weights.safetensors", RandomBytes(2000, static_cast<uint32_t>(step)));
    WriteFile(dir / "state.json", "{\"step\": " + std::to_string(step) + "}");
    auto uri = UploadS3Checkpoint(dir.string(), job, options_, /*keep_last=*/2);
    ASSERT_TRUE(uri.ok()) << uri.status();
    EXPECT_EQ(*uri, job + "/step-0000000000" + std::to_string(step));
  }
  auto listed = client().List("bkt", "checkpoints/job-7/", "f");
  ASSERT_TRUE(listed.ok());
  for (const S3Object& o : *listed) {
    EXPECT_THAT(o.key, ::testing::Not(HasSubstr("step-000000000010"))) << "not pruned";
  }
  EXPECT_EQ(listed->size(), 6u);  // 2 steps x (2 files + manifest)

  // Another replica restores into its own (stale) directory.
  const fs::path other = tmp_ / "replica2";
  WriteFile(other / "step-000000000020" / "state.json", "stale");
  WriteFile(other / "step-000000000099.partial" / "state.json", "junk");
  ASSERT_TRUE(RestoreS3Checkpoint(job, other.string(), options_).ok());
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(other)) names.push_back(e.path().filename());
  EXPECT_THAT(names, ::testing::ElementsAre("step-000000000030"));
  EXPECT_EQ(ReadFile(other / "step-000000000030" / "state.json"), "{\"step\": 30}");
  EXPECT_TRUE(ReadFile(other / "step-000000000030" / "weights.safetensors") ==
              RandomBytes(2000, 30));

  // A step without its manifest (an upload cut short) is never restored.
  Put("checkpoints/job-7/step-000000000040/state.json", "{\"step\": 40}");
  ASSERT_TRUE(RestoreS3Checkpoint(job, other.string(), options_).ok());
  EXPECT_TRUE(fs::exists(other / "step-000000000030"));
  EXPECT_FALSE(fs::exists(other / "step-000000000040"));

  ASSERT_TRUE(RemoveS3Prefix(job, options_).ok());
  auto gone = client().List("bkt", "checkpoints/job-7/", "f");
  ASSERT_TRUE(gone.ok());
  EXPECT_TRUE(gone->empty());
  // Nothing remote: the local steps go too, and that is not an error.
  ASSERT_TRUE(RestoreS3Checkpoint(job, other.string(), options_).ok());
  EXPECT_TRUE(fs::is_empty(other));
}

// A server that announces more bytes than it sends, then closes: what a
// connection dropped mid-download looks like.
class TruncatingServer {
 public:
  TruncatingServer() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), len);
    ::listen(fd_, 4);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] {
      const int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      char buf[4096];
      std::string req;
      while (req.find("\r\n\r\n") == std::string::npos) {
        const ssize_t n = ::read(c, buf, sizeof(buf));
        if (n <= 0) break;
        req.append(buf, static_cast<size_t>(n));
      }
      const std::string resp =
          "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nETag: \"x\"\r\n\r\n" + std::string(500, 'a');
      (void)!::write(c, resp.data(), resp.size());
      ::close(c);
    });
  }
  ~TruncatingServer() {
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    thread_.join();
  }
  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }

 private:
  int fd_ = -1;
  int port_ = 0;
  std::thread thread_;
};

TEST_F(S3Test, TruncatedDownloadsFailInsteadOfReturningAShortBody) {
  {
    TruncatingServer cut;
    options_.s3.endpoint_url = cut.endpoint();
    auto r = ReadUri("s3://bkt/train.tsv", options_, "job.train.uri");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
    EXPECT_THAT(Msg(r.status()), StartsWith("job.train.uri: fetch failed: "));
  }
  {
    TruncatingServer cut;
    options_.s3.endpoint_url = cut.endpoint();
    auto r = client().GetToFile(S3Location{"bkt", "m/model.safetensors"},
                                (tmp_ / "partial.bin").string(), 1 << 20, "job.model_uri");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  }
}

}  // namespace
}  // namespace freezetune::data
