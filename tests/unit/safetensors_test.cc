// safetensors: one test per validation rule (files built byte by byte), and
// torch round trips.
#include "server/model/safetensors.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <string>

#include <ATen/ATen.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/model/safetensors_format.h"

namespace freezetune::model {
namespace {

using ::testing::HasSubstr;

std::string Le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return s;
}

// A file with header `json` and `data_bytes` zero bytes of data.
std::string File(const std::string& json, size_t data_bytes) {
  return Le64(json.size()) + json + std::string(data_bytes, '\0');
}

std::string ErrorOf(const std::string& file) {
  auto h = ParseSafetensors(file);
  EXPECT_FALSE(h.ok()) << "accepted: " << file.substr(8);
  if (h.ok()) return "";
  EXPECT_EQ(h.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(h.status().message());
}

const std::string kOne = R"({"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}})";

TEST(SafetensorsFormatTest, AcceptsValidFile) {
  const std::string json =
      R"({"__metadata__":{"format":"pt"},"b":{"dtype":"F16","shape":[4],"data_offsets":[24,32]},)"
      R"("a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},)"
      R"("e":{"dtype":"F32","shape":[0,5],"data_offsets":[32,32]}})";
  auto h = ParseSafetensors(File(json, 32));
  ASSERT_TRUE(h.ok()) << h.status();
  ASSERT_EQ(h->tensors.size(), 3u);
  EXPECT_EQ(h->tensors[0].name, "a");  // sorted by offset
  EXPECT_EQ(h->tensors[0].shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(h->tensors[1].name, "b");
  EXPECT_EQ(h->tensors[1].dtype, "F16");
  EXPECT_EQ(h->tensors[2].name, "e");
  ASSERT_EQ(h->metadata.size(), 1u);
  EXPECT_EQ(h->metadata[0].second, "pt");
  EXPECT_EQ(h->data_start(), 8 + json.size());
}

TEST(SafetensorsFormatTest, AcceptsEmptyTensorSetAndScalar) {
  EXPECT_TRUE(ParseSafetensors(File("{}", 0)).ok());
  EXPECT_TRUE(ParseSafetensors(File("{}      ", 0)).ok());  // space padding
  auto h = ParseSafetensors(File(R"({"s":{"dtype":"I64","shape":[],"data_offsets":[0,8]}})", 8));
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_TRUE(h->tensors[0].shape.empty());
}

TEST(SafetensorsFormatTest, RejectsFileShorterThanLengthPrefix) {
  EXPECT_THAT(ErrorOf(std::string("\x02\0\0", 3)), HasSubstr("file too short"));
}

TEST(SafetensorsFormatTest, RejectsHeaderOver100MB) {
  EXPECT_THAT(ErrorOf(Le64(100'000'001) + "{}"), HasSubstr("exceeds the limit"));
  EXPECT_THAT(ErrorOf(Le64(UINT64_MAX) + "{}"), HasSubstr("exceeds the limit"));
}

TEST(SafetensorsFormatTest, RejectsHeaderPastEndOfFile) {
  EXPECT_THAT(ErrorOf(Le64(10) + "{}"), HasSubstr("exceeds the 2 bytes"));
}

TEST(SafetensorsFormatTest, RejectsInvalidJson) {
  EXPECT_THAT(ErrorOf(File(R"({"a":{"dtype":"F32")", 0)), HasSubstr("not valid JSON"));
  EXPECT_THAT(ErrorOf(File(std::string("{}\0", 3), 0)), HasSubstr("not valid JSON"));
}

TEST(SafetensorsFormatTest, RejectsInvalidUtf8) {
  std::string json = R"({"a\xff":{"dtype":"F32","shape":[],"data_offsets":[0,4]}})";
  EXPECT_THAT(ErrorOf(File(json, 4)), HasSubstr("not valid JSON/UTF-8"));
}

TEST(SafetensorsFormatTest, RejectsNonObjectHeader) {
  EXPECT_THAT(ErrorOf(File("[1,2]", 0)), HasSubstr("must be a JSON object"));
}

TEST(SafetensorsFormatTest, RejectsDuplicateTensorName) {
  const std::string json = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                           R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})";
  EXPECT_THAT(ErrorOf(File(json, 8)), HasSubstr("duplicate key \"a\""));
}

TEST(SafetensorsFormatTest, RejectsDuplicateFieldInEntry) {
  const std::string json =
      R"({"a":{"dtype":"I64","dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  EXPECT_THAT(ErrorOf(File(json, 4)), HasSubstr("duplicate key \"dtype\""));
}

TEST(SafetensorsFormatTest, RejectsBadMetadata) {
  EXPECT_THAT(ErrorOf(File(R"({"__metadata__":[1]})", 0)),
              HasSubstr("__metadata__ must be an object"));
  EXPECT_THAT(ErrorOf(File(R"({"__metadata__":{"k":1}})", 0)),
              HasSubstr("__metadata__: value of \"k\" must be a string"));
}

TEST(SafetensorsFormatTest, RejectsMissingFields) {
  EXPECT_THAT(ErrorOf(File(R"({"a":{"shape":[1],"data_offsets":[0,4]}})", 4)),
              HasSubstr("tensor \"a\": missing dtype"));
  EXPECT_THAT(ErrorOf(File(R"({"a":{"dtype":"F32","data_offsets":[0,4]}})", 4)),
              HasSubstr("tensor \"a\": missing shape"));
  EXPECT_THAT(ErrorOf(File(R"({"a":{"dtype":"F32","shape":[1]}})", 4)),
              HasSubstr("tensor \"a\": missing data_offsets"));
  EXPECT_THAT(ErrorOf(File(R"({"a":[1]})", 4)), HasSubstr("entry must be an object"));
}

TEST(SafetensorsFormatTest, RejectsUnexpectedField) {
  EXPECT_THAT(
      ErrorOf(File(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}})", 4)),
      HasSubstr("unexpected field \"x\""));
}

TEST(SafetensorsFormatTest, RejectsEmptyName) {
  EXPECT_THAT(ErrorOf(File(R"({"":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 4)),
              HasSubstr("name must not be empty"));
}

TEST(SafetensorsFormatTest, RejectsUnknownDtype) {
  EXPECT_THAT(ErrorOf(File(R"({"a":{"dtype":"Q4","shape":[1],"data_offsets":[0,4]}})", 4)),
              HasSubstr("tensor \"a\": unknown dtype \"Q4\""));
  EXPECT_THAT(ErrorOf(File(R"({"a":{"dtype":7,"shape":[1],"data_offsets":[0,4]}})", 4)),
              HasSubstr("dtype must be a string"));
}

TEST(SafetensorsFormatTest, KnowsAllSafetensorsDtypes) {
  for (const char* d : {"BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16",
                        "I32", "U32", "F32", "F64", "I64", "U64"}) {
    EXPECT_GT(SafetensorsDtypeSize(d), 0u) << d;
  }
  EXPECT_EQ(SafetensorsDtypeSize("f32"), 0u);
  EXPECT_TRUE(IsFloatWeightDtype("BF16"));
  EXPECT_FALSE(IsFloatWeightDtype("F64"));
}

TEST(SafetensorsFormatTest, RejectsNegativeOrNonIntegerShape) {
  EXPECT_THAT(ErrorOf(File(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4)),
              HasSubstr("shape must hold non-negative integers"));
  EXPECT_THAT(ErrorOf(File(R"({"a":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}})", 4)),
              HasSubstr("shape must hold non-negative integers"));
  EXPECT_THAT(ErrorOf(File(R"({"a":{"dtype":"F32","shape":3,"data_offsets":[0,4]}})", 4)),
              HasSubstr("shape must be an array"));
}

TEST(SafetensorsFormatTest, RejectsBadDataOffsets) {
  EXPECT_THAT(ErrorOf(File(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", 4)),
              HasSubstr("data_offsets must be [begin, end]"));
  EXPECT_THAT(ErrorOf(File(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}})", 4)),
              HasSubstr("end 0 < begin 4"));
  EXPECT_THAT(ErrorOf(File(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,-4]}})", 4)),
              HasSubstr("data_offsets must hold non-negative integers"));
}

TEST(SafetensorsFormatTest, RejectsSizeMismatch) {
  EXPECT_THAT(ErrorOf(File(R"({"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}})", 20)),
              HasSubstr("need 24 bytes but data_offsets span 20"));
}

TEST(SafetensorsFormatTest, RejectsShapeOverflow) {
  // 2^32 * 2^32 * 4 wraps to 0 in 64 bits; must not be accepted as 0 bytes.
  EXPECT_THAT(ErrorOf(File(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],)"
                           R"("data_offsets":[0,0]}})",
                           0)),
              HasSubstr("shape size overflows"));
  EXPECT_THAT(ErrorOf(File(R"({"a":{"dtype":"F32","shape":[18446744073709551615],)"
                           R"("data_offsets":[0,0]}})",
                           0)),
              HasSubstr("out of range"));
}

TEST(SafetensorsFormatTest, RejectsGap) {
  const std::string json = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                           R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})";
  EXPECT_THAT(ErrorOf(File(json, 12)), HasSubstr("tensor \"b\": data_offsets begin 8 leaves a gap"));
}

TEST(SafetensorsFormatTest, RejectsNotStartingAtZero) {
  EXPECT_THAT(ErrorOf(File(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8)),
              HasSubstr("leaves a gap (expected 0)"));
}

TEST(SafetensorsFormatTest, RejectsOverlap) {
  const std::string json = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                           R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})";
  EXPECT_THAT(ErrorOf(File(json, 12)), HasSubstr("tensor \"b\": data_offsets begin 4 overlaps"));
  const std::string same = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                           R"("b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  EXPECT_THAT(ErrorOf(File(same, 4)), HasSubstr("overlaps"));
}

TEST(SafetensorsFormatTest, RejectsTrailingBytes) {
  EXPECT_THAT(ErrorOf(File(kOne, 25)), HasSubstr("(trailing bytes)"));
}

TEST(SafetensorsFormatTest, RejectsTruncatedData) {
  EXPECT_THAT(ErrorOf(File(kOne, 23)), HasSubstr("(truncated)"));
}

TEST(SafetensorsFormatTest, ErrorsDoNotEchoHeaderBytes) {
  std::string secret = "TOPSECRET";
  std::string msg = ErrorOf(File("{\"a\": " + secret + "}", 0));
  EXPECT_THAT(msg, ::testing::Not(HasSubstr(secret)));
}

TEST(SafetensorsFormatTest, BuildHeaderRoundTrips) {
  std::vector<SafetensorsTensorInfo> infos(2);
  infos[0].name = "x";
  infos[0].dtype = "F32";
  infos[0].shape = {3};
  infos[1].name = "y";
  infos[1].dtype = "BF16";
  infos[1].shape = {2, 2};
  auto bytes = BuildSafetensorsHeader(infos, {{"format", "pt"}});
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ((bytes->size() - 8) % 8, 0u);
  EXPECT_EQ(infos[1].begin, 12u);
  EXPECT_EQ(infos[1].end, 20u);
  auto h = ParseSafetensors(*bytes + std::string(20, '\0'));
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->tensors[1].name, "y");
  infos[1].name = "x";
  EXPECT_FALSE(BuildSafetensorsHeader(infos, {}).ok());
}

// ---- torch layer -----------------------------------------------------------

std::string TempDir() {
  std::string tmpl = ::testing::TempDir() + "safetensors_XXXXXX";
  char* d = ::mkdtemp(tmpl.data());
  EXPECT_NE(d, nullptr);
  return tmpl;
}

TEST(SafetensorsTest, RoundTripF32IsExact) {
  at::manual_seed(1);
  NamedTensors in = {{"w", at::randn({3, 5})}, {"b", at::randn({5})}, {"s", at::randn({})}};
  const std::string path = TempDir() + "/m.safetensors";
  ASSERT_TRUE(WriteSafetensors(path, in, "F32", {{"format", "pt"}}).ok());
  EXPECT_NE(::access((path + ".tmp").c_str(), F_OK), 0);  // temp file renamed away
  auto got = ReadSafetensors(path);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->source_dtype, "F32");
  ASSERT_EQ(got->tensors.size(), 3u);
  for (size_t i = 0; i < in.size(); ++i) {
    EXPECT_EQ(got->tensors[i].first, in[i].first);
    EXPECT_EQ(got->tensors[i].second.scalar_type(), at::kFloat);
    EXPECT_TRUE(at::equal(got->tensors[i].second, in[i].second)) << in[i].first;
  }
  ASSERT_EQ(got->metadata.size(), 1u);
}

TEST(SafetensorsTest, RoundTripHalfAndBFloat16LoadAsF32) {
  at::manual_seed(2);
  NamedTensors in = {{"w", at::randn({4, 7})}};
  for (const char* dtype : {"F16", "BF16"}) {
    const std::string path = TempDir() + "/m.safetensors";
    ASSERT_TRUE(WriteSafetensors(path, in, dtype).ok());
    struct stat st;
    ASSERT_EQ(::stat(path.c_str(), &st), 0);
    auto header = ReadSafetensorsHeader(path);
    ASSERT_TRUE(header.ok()) << header.status();
    EXPECT_EQ(header->tensors[0].end, 4u * 7 * 2);  // stored at 2 bytes per element
    auto got = ReadSafetensors(path);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->source_dtype, dtype);
    const auto stored = std::string(dtype) == "F16" ? at::kHalf : at::kBFloat16;
    EXPECT_EQ(got->tensors[0].second.scalar_type(), at::kFloat);
    EXPECT_TRUE(at::equal(got->tensors[0].second, in[0].second.to(stored).to(at::kFloat)));
  }
}

TEST(SafetensorsTest, ReadsUnalignedData) {
  // Header of odd length: F32 data starts at an odd address in the mapping.
  const std::string json = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}} )";
  ASSERT_EQ(json.size() % 2, 1u);
  float values[2] = {1.5f, -2.25f};
  std::string file = Le64(json.size()) + json + std::string(reinterpret_cast<char*>(values), 8);
  auto got = ParseSafetensorsTensors(file, "mem");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_FLOAT_EQ(got->tensors[0].second[0].item<float>(), 1.5f);
  EXPECT_FLOAT_EQ(got->tensors[0].second[1].item<float>(), -2.25f);
}

TEST(SafetensorsTest, VisitorSeesZeroCopyViewsInStoredDtype) {
  std::vector<SafetensorsTensorInfo> infos = {{"h", "F16", {2}, 0, 0}, {"f", "F32", {1}, 0, 0}};
  auto header = BuildSafetensorsHeader(infos, {});
  ASSERT_TRUE(header.ok());
  at::Tensor h = at::tensor({1.5f, -3.0f}).to(at::kHalf);
  float f = 0.25f;
  std::string file = *header + std::string(static_cast<const char*>(h.data_ptr()), 4) +
                     std::string(reinterpret_cast<const char*>(&f), 4);
  std::vector<std::string> seen;
  auto visited = VisitSafetensorsBytes(
      file, "mem", {}, [&](const std::string& name, const std::string& dtype, const at::Tensor& v) {
        seen.push_back(name + ":" + dtype);
        const char* want = file.data() + header->size() + (name == "h" ? 0 : 4);
        EXPECT_EQ(static_cast<const char*>(v.data_ptr()), want) << "copied instead of viewed";
        EXPECT_EQ(v.scalar_type(), name == "h" ? at::kHalf : at::kFloat);
        return absl::OkStatus();
      });
  ASSERT_TRUE(visited.ok()) << visited.status();
  EXPECT_EQ(seen, (std::vector<std::string>{"h:F16", "f:F32"}));
  // A visitor error stops the walk and comes back unchanged.
  int calls = 0;
  visited = VisitSafetensorsBytes(file, "mem", {}, [&](const auto&, const auto&, const auto&) {
    ++calls;
    return absl::CancelledError("stop");
  });
  EXPECT_EQ(visited.status(), absl::CancelledError("stop"));
  EXPECT_EQ(calls, 1);
}

TEST(SafetensorsTest, UnsupportedDtypeUnlessSkipped) {
  const std::string json = R"({"ids":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})";
  auto got = ParseSafetensorsTensors(File(json, 8), "m.safetensors");
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().message(),
            "m.safetensors: tensor \"ids\": unsupported dtype I64 (expected F32, F16 or BF16)");
  SafetensorsReadOptions opts;
  opts.skip = [](const std::string& n) { return n == "ids"; };
  got = ParseSafetensorsTensors(File(json, 8), "m.safetensors", opts);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(got->tensors.empty());
  EXPECT_EQ(got->skipped, std::vector<std::string>{"ids"});
}

TEST(SafetensorsTest, ReadErrorsNamePath) {
  auto got = ReadSafetensors("/nonexistent/m.safetensors");
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(got.status().message()), HasSubstr("/nonexistent/m.safetensors"));
  const std::string path = TempDir() + "/bad.safetensors";
  std::ofstream(path, std::ios::binary) << File(kOne, 3);
  got = ReadSafetensors(path);
  ASSERT_FALSE(got.ok());
  EXPECT_THAT(std::string(got.status().message()), HasSubstr(path + ": file length"));
}

TEST(SafetensorsTest, WriteRejectsBadInput) {
  const std::string dir = TempDir();
  EXPECT_FALSE(WriteSafetensors(dir + "/a.safetensors", {{"w", at::ones({2})}}, "I64").ok());
  EXPECT_FALSE(
      WriteSafetensors(dir + "/a.safetensors", {{"w", at::ones({2}, at::kLong)}}, "F32").ok());
  EXPECT_FALSE(WriteSafetensors(dir + "/no/such/dir/a.safetensors", {{"w", at::ones({2})}}).ok());
  EXPECT_NE(::access((dir + "/a.safetensors").c_str(), F_OK), 0);
  EXPECT_NE(::access((dir + "/a.safetensors.tmp").c_str(), F_OK), 0);
}

}  // namespace
}  // namespace freezetune::model
