// Tests for EncodeDataset with the real bert-base-uncased vocab and the real
// SST-2 / RTE files: label mapping, truncation and pair segments.
#include <fstream>
#include <sstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/data/dataset.h"

namespace freezetune::data {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string SharedData(const std::string& rel) {
  return std::string(FREEZETUNE_SOURCE_DIR) + "/../shared/data/" + rel;
}

class EncodeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto tok = model::WordPieceTokenizer::FromVocabFile(SharedData("bert-base-uncased-vocab.txt"),
                                                        /*do_lower_case=*/true);
    ASSERT_TRUE(tok.ok()) << tok.status();
    tokenizer_ = new model::WordPieceTokenizer(std::move(*tok));
  }
  static void TearDownTestSuite() { delete tokenizer_; }
  static model::WordPieceTokenizer* tokenizer_;
};
model::WordPieceTokenizer* EncodeTest::tokenizer_ = nullptr;

TEST_F(EncodeTest, SingleTextsWithLabels) {
  std::vector<RawExample> ex = {{"Hello world", std::nullopt, "pos", 2},
                                {"the", std::nullopt, "neg", 3}};
  LabelSpace space{{"neg", "pos"}, false};
  auto enc = EncodeDataset(ex, space, *tokenizer_, 128, "job.train");
  ASSERT_TRUE(enc.ok()) << enc.status();
  ASSERT_EQ(enc->size(), 2);
  EXPECT_THAT(enc->ids[0], ElementsAre(101, 7592, 2088, 102));
  EXPECT_THAT(enc->ids[1], ElementsAre(101, 1996, 102));
  EXPECT_THAT(enc->type_ids[0], ElementsAre(0, 0, 0, 0));
  EXPECT_THAT(enc->label_ids, ElementsAre(1, 0));
  EXPECT_TRUE(enc->targets.empty());
}

TEST_F(EncodeTest, UnknownLabelAndBadMaxLength) {
  std::vector<RawExample> ex = {{"a", std::nullopt, "maybe", 9}};
  LabelSpace space{{"neg", "pos"}, false};
  auto enc = EncodeDataset(ex, space, *tokenizer_, 128, "job.validation");
  ASSERT_FALSE(enc.ok());
  EXPECT_THAT(std::string(enc.status().message()), HasSubstr("job.validation: line 9: label"));
  EXPECT_FALSE(EncodeDataset(ex, space, *tokenizer_, 2, "job.train").ok());
}

TEST_F(EncodeTest, RealRtePairsTruncatedToMaxLength) {
  std::ifstream in(SharedData("rte/dev.tsv"), std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  v1::DatasetSpec spec;
  spec.set_uri("/dev.tsv");
  auto raw = ParseDataset(ss.str(), spec, "job.validation");
  ASSERT_TRUE(raw.ok()) << raw.status();
  auto space = ResolveLabelSpace(v1::TaskSpec(), *raw, "job.validation");
  ASSERT_TRUE(space.ok());
  auto enc = EncodeDataset(*raw, *space, *tokenizer_, 64, "job.validation");
  ASSERT_TRUE(enc.ok()) << enc.status();
  ASSERT_EQ(enc->size(), 277);
  int truncated = 0;
  for (int64_t i = 0; i < enc->size(); ++i) {
    const auto& ids = enc->ids[static_cast<size_t>(i)];
    const auto& types = enc->type_ids[static_cast<size_t>(i)];
    ASSERT_LE(ids.size(), 64u);
    ASSERT_EQ(ids.size(), types.size());
    EXPECT_EQ(ids.front(), 101);
    EXPECT_EQ(ids.back(), 102);
    EXPECT_EQ(types.back(), 1);  // the pair segment ends the example
    truncated += ids.size() == 64u;
  }
  EXPECT_GT(truncated, 0);  // RTE premises are long: some were cut
}

TEST_F(EncodeTest, RegressionTargets) {
  std::vector<RawExample> ex = {{"a", std::nullopt, "0.5", 1}, {"b", std::nullopt, "4", 2}};
  LabelSpace space{{"LABEL_0"}, true};
  auto enc = EncodeDataset(ex, space, *tokenizer_, 16, "job.train");
  ASSERT_TRUE(enc.ok()) << enc.status();
  EXPECT_THAT(enc->targets, ElementsAre(0.5f, 4.0f));
  EXPECT_TRUE(enc->label_ids.empty());
}

}  // namespace
}  // namespace freezetune::data
