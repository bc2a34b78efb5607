// Tests for the torch-free part of server/data/dataset.h: every reader on
// hand-written edge cases and on the real GLUE/TREC files in shared/data,
// and label-space resolution and mapping.
#include "server/data/dataset.h"

#include <fstream>
#include <random>
#include <sstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/data/dataset_internal.h"

namespace freezetune::data {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

std::string Msg(const absl::Status& s) { return std::string(s.message()); }

v1::DatasetSpec Spec(const std::string& uri, v1::DatasetFormat format = v1::DATASET_FORMAT_UNSPECIFIED) {
  v1::DatasetSpec spec;
  spec.set_uri(uri);
  spec.set_format(format);
  return spec;
}

std::string SharedData(const std::string& rel) {
  return std::string(FREEZETUNE_SOURCE_DIR) + "/../shared/data/" + rel;
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// --- format resolution ------------------------------------------------------

TEST(FormatTest, ByExtensionOrExplicit) {
  EXPECT_EQ(*internal::ResolveFormat(Spec("/d/a.jsonl"), "f"), v1::DATASET_FORMAT_JSONL);
  EXPECT_EQ(*internal::ResolveFormat(Spec("/d/a.JSON"), "f"), v1::DATASET_FORMAT_JSONL);
  EXPECT_EQ(*internal::ResolveFormat(Spec("/d/a.csv"), "f"), v1::DATASET_FORMAT_CSV);
  EXPECT_EQ(*internal::ResolveFormat(Spec("https://h/x.tsv?sig=1"), "f"), v1::DATASET_FORMAT_TSV);
  EXPECT_EQ(*internal::ResolveFormat(Spec("/d/train_5500.label"), "f"), v1::DATASET_FORMAT_TREC);
  EXPECT_EQ(*internal::ResolveFormat(Spec("/d/a.txt", v1::DATASET_FORMAT_CSV), "f"),
            v1::DATASET_FORMAT_CSV);
  auto bad = internal::ResolveFormat(Spec("/d.x/data"), "job.train");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(Msg(bad.status()), ::testing::StartsWith("job.train.format: "));
}

// --- JSONL ----------------------------------------------------------------------

TEST(JsonlTest, ParsesStringAndIntegerLabelsAndPairs) {
  const std::string content =
      "\xEF\xBB\xBF{\"text\": \"a\", \"text_pair\": \"b\", \"label\": 1}\n"
      "\n"
      "{\"text\": \"c \\u00e9\", \"text_pair\": \"d\", \"label\": \"pos\"}\r\n"
      "   \n";
  auto r = ParseDataset(content, Spec("/x.jsonl"), "job.train");
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ((*r)[0].text, "a");
  EXPECT_EQ((*r)[0].text_pair, "b");
  EXPECT_EQ((*r)[0].label, "1");
  EXPECT_EQ((*r)[0].line, 1);
  EXPECT_EQ((*r)[1].text, "c \xC3\xA9");
  EXPECT_EQ((*r)[1].label, "pos");
  EXPECT_EQ((*r)[1].line, 3);
}

TEST(JsonlTest, DefaultFieldsComeFromFirstRecordAndCanBeOverridden) {
  auto r = ParseDataset("{\"sentence1\": \"p\", \"sentence2\": \"h\", \"label\": \"x\"}\n",
                        Spec("/x.jsonl"), "job.train");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)[0].text, "p");
  EXPECT_EQ((*r)[0].text_pair, "h");

  v1::DatasetSpec spec = Spec("/x.jsonl");
  spec.set_text_field("q");
  spec.set_label_field("y");
  auto s = ParseDataset("{\"q\": \"hi\", \"y\": 2.5, \"text\": \"ignored\"}\n", spec, "job.train");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ((*s)[0].text, "hi");
  EXPECT_FALSE((*s)[0].text_pair.has_value());
  EXPECT_EQ((*s)[0].label, "2.5");
}

TEST(JsonlTest, ErrorsNameLineAndReasonWithoutContent) {
  const std::string secret = "PRIVATE-SENTENCE";
  auto missing = ParseDataset("{\"text\": \"a\", \"label\": 0}\n{\"text\": \"" + secret + "\"}\n",
                              Spec("/x.jsonl"), "job.train");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(Msg(missing.status()), "job.train: line 2: missing field \"label\"");

  auto invalid = ParseDataset("{\"text\": \"a\", \"label\": 0}\n\n{\"text\": \"" + secret + "\", ",
                              Spec("/x.jsonl"), "job.train");
  ASSERT_FALSE(invalid.ok());
  EXPECT_THAT(Msg(invalid.status()), ::testing::StartsWith("job.train: line 3: invalid JSON (at byte"));
  EXPECT_THAT(Msg(invalid.status()), Not(HasSubstr(secret)));

  auto not_object = ParseDataset("[1, 2]\n", Spec("/x.jsonl"), "job.train");
  ASSERT_FALSE(not_object.ok());
  EXPECT_EQ(Msg(not_object.status()), "job.train: line 1: expected a JSON object");

  auto bad_type = ParseDataset("{\"text\": 5, \"label\": 0}\n", Spec("/x.jsonl"), "job.train");
  ASSERT_FALSE(bad_type.ok());
  EXPECT_EQ(Msg(bad_type.status()), "job.train: line 1: field \"text\" must be a string");

  auto bool_label = ParseDataset("{\"text\": \"a\", \"label\": true}\n", Spec("/x.jsonl"), "job.train");
  EXPECT_FALSE(bool_label.ok());

  auto no_text = ParseDataset("{\"body\": \"a\", \"label\": 0}\n", Spec("/x.jsonl"), "job.train");
  ASSERT_FALSE(no_text.ok());
  EXPECT_THAT(Msg(no_text.status()), HasSubstr("set text_field"));

  auto empty = ParseDataset("\n\n", Spec("/x.jsonl"), "job.validation");
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(Msg(empty.status()), "job.validation: no examples");
}

TEST(JsonlTest, ExplicitFieldMissingFromFirstRecordNamesSpecField) {
  v1::DatasetSpec spec = Spec("/x.jsonl");
  spec.set_text_pair_field("hypothesis");
  auto r = ParseDataset("{\"text\": \"a\", \"label\": 0}\n", spec, "job.train");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(Msg(r.status()), ::testing::StartsWith("job.train.text_pair_field: \"hypothesis\""));
}

// --- CSV ------------------------------------------------------------------------

TEST(CsvTest, Rfc4180QuotingEscapesNewlinesAndCrlf) {
  const std::string content =
      "text,label\r\n"
      "\"hello, world\",pos\r\n"
      "\"she said \"\"hi\"\"\",neg\r\n"
      "\"two\r\nlines\",pos\r\n"
      "plain,neg";  // no final newline
  auto r = ParseDataset(content, Spec("/x.csv"), "job.train");
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 4u);
  auto spaced = ParseDataset("text , label\r\na,1\r\n", Spec("/x.csv"), "job.train");
  ASSERT_TRUE(spaced.ok()) << spaced.status();
  EXPECT_EQ((*spaced)[0].label, "1");
  EXPECT_EQ((*r)[0].text, "hello, world");
  EXPECT_EQ((*r)[0].line, 2);
  EXPECT_EQ((*r)[1].text, "she said \"hi\"");
  EXPECT_EQ((*r)[2].text, "two\r\nlines");
  EXPECT_EQ((*r)[3].text, "plain");
  EXPECT_EQ((*r)[3].label, "neg");
  EXPECT_EQ((*r)[3].line, 6);  // the quoted newline advanced the line count
}

TEST(CsvTest, ColumnCountAndQuotingErrors) {
  auto extra = ParseDataset("text,label\na,1\nb,1,oops\n", Spec("/x.csv"), "job.train");
  ASSERT_FALSE(extra.ok());
  EXPECT_EQ(Msg(extra.status()), "job.train: line 3: expected 2 columns, got 3");

  auto unterminated = ParseDataset("text,label\n\"never closed,1\n", Spec("/x.csv"), "job.train");
  ASSERT_FALSE(unterminated.ok());
  EXPECT_EQ(Msg(unterminated.status()), "job.train: line 2: unterminated quoted field");

  auto after_quote = ParseDataset("text,label\n\"a\"b,1\n", Spec("/x.csv"), "job.train");
  ASSERT_FALSE(after_quote.ok());
  EXPECT_THAT(Msg(after_quote.status()), HasSubstr("line 2: unexpected character"));

  auto header_only = ParseDataset("text,label\n", Spec("/x.csv"), "job.train");
  ASSERT_FALSE(header_only.ok());
  EXPECT_EQ(Msg(header_only.status()), "job.train: no examples (only a header)");

  auto no_label = ParseDataset("text,y\na,1\n", Spec("/x.csv"), "job.train");
  ASSERT_FALSE(no_label.ok());
  EXPECT_THAT(Msg(no_label.status()), HasSubstr("no \"label\" field in the header"));

  auto empty_label = ParseDataset("text,label\na, \n", Spec("/x.csv"), "job.train");
  ASSERT_FALSE(empty_label.ok());
  EXPECT_EQ(Msg(empty_label.status()), "job.train: line 2: empty \"label\"");
}

TEST(CsvTest, RecordsAndEmptyFields) {
  std::vector<std::vector<std::string>> records;
  std::vector<int64_t> lines;
  auto st = internal::ForEachCsvRecord("a,,\"\"\n\nb,c,\n", "f",
                                       [&](int64_t line, std::vector<std::string> f) {
                                         lines.push_back(line);
                                         records.push_back(std::move(f));
                                         return absl::OkStatus();
                                       });
  ASSERT_TRUE(st.ok()) << st;
  ASSERT_EQ(records.size(), 2u);
  EXPECT_THAT(records[0], ElementsAre("a", "", ""));
  EXPECT_THAT(records[1], ElementsAre("b", "c", ""));
  EXPECT_THAT(lines, ElementsAre(1, 3));
}

// --- TSV ------------------------------------------------------------------------

TEST(TsvTest, NoQuoteProcessingTrailingCrAndBlankLastLine) {
  const std::string content =
      "index\tsentence1\tsentence2\tlabel\r\n"
      "0\t\"Quoted,\" he said\tx \"y\tentailment\r\n"
      "1\ta\tb\tnot_entailment\n"
      "\n";
  auto r = ParseDataset(content, Spec("/rte.tsv"), "job.train");
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ((*r)[0].text, "\"Quoted,\" he said");
  EXPECT_EQ((*r)[0].text_pair, "x \"y");
  EXPECT_EQ((*r)[0].label, "entailment");
  EXPECT_EQ((*r)[1].label, "not_entailment");
  EXPECT_EQ((*r)[1].line, 3);
}

TEST(TsvTest, ErrorsWithLineNumbers) {
  auto bom = ParseDataset("\xEF\xBB\xBFsentence\tlabel\na\t0\n", Spec("/x.tsv"), "job.train");
  ASSERT_TRUE(bom.ok()) << bom.status();
  EXPECT_EQ((*bom)[0].text, "a");
  auto r = ParseDataset("sentence\tlabel\na\t0\nb\t1\textra\n", Spec("/x.tsv"), "job.train");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(Msg(r.status()), "job.train: line 3: expected 2 columns, got 3");
  auto empty = ParseDataset("", Spec("/x.tsv"), "job.train");
  ASSERT_FALSE(empty.ok());
  EXPECT_THAT(Msg(empty.status()), HasSubstr("no examples"));
  auto dup = ParseDataset("label\tlabel\n", Spec("/x.tsv"), "job.train");
  ASSERT_FALSE(dup.ok());
  EXPECT_THAT(Msg(dup.status()), HasSubstr("duplicate column \"label\""));
  auto unlabeled = ParseDataset(Slurp(SharedData("sst2/test.tsv")), Spec("/test.tsv"), "job.train");
  ASSERT_FALSE(unlabeled.ok());
  EXPECT_THAT(Msg(unlabeled.status()), HasSubstr("no \"label\" field"));
}

TEST(TsvTest, RealSst2AndRte) {
  auto sst = ParseDataset(Slurp(SharedData("sst2/dev.tsv")), Spec("/dev.tsv"), "job.validation");
  ASSERT_TRUE(sst.ok()) << sst.status();
  EXPECT_EQ(sst->size(), 872u);
  EXPECT_EQ(sst->front().text, "it 's a charming and often affecting journey . ");
  EXPECT_FALSE(sst->front().text_pair.has_value());

  auto rte = ParseDataset(Slurp(SharedData("rte/train.tsv")), Spec("/train.tsv"), "job.train");
  ASSERT_TRUE(rte.ok()) << rte.status();
  EXPECT_EQ(rte->size(), 2490u);
  int entail = 0;
  for (const RawExample& ex : *rte) {
    ASSERT_TRUE(ex.text_pair.has_value());
    entail += ex.label == "entailment";
  }
  EXPECT_EQ(entail, 1249);
  auto space = ResolveLabelSpace(v1::TaskSpec(), *rte, "job.train");
  ASSERT_TRUE(space.ok()) << space.status();
  EXPECT_THAT(space->names, ElementsAre("entailment", "not_entailment"));
}

// --- TREC -----------------------------------------------------------------------

TEST(TrecTest, Latin1CoarseLabelsAndText) {
  auto r = ParseDataset("NUM:dist How far ?\nENTY:cremat sister\xF0" "city ?\n", Spec("/t.label"),
                        "job.train");
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ((*r)[0].label, "NUM");
  EXPECT_EQ((*r)[0].text, "How far ?");
  EXPECT_EQ((*r)[1].text, "sister\xC3\xB0" "city ?");
  auto bad = ParseDataset("NUM:dist ok\nno-colon here\n", Spec("/t.label"), "job.train");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(Msg(bad.status()), "job.train: line 2: expected \"COARSE:fine question\"");
  EXPECT_EQ(internal::Latin1ToUtf8("a\xE9\xFF"), "a\xC3\xA9\xC3\xBF");
}

TEST(TrecTest, RealTrainFile) {
  auto r = ParseDataset(Slurp(SharedData("trec/train_5500.label")), Spec("/train_5500.label"),
                        "job.train");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->size(), 5452u);
  EXPECT_NE((*r)[65].text.find("sister\xC3\xB0" "city"), std::string::npos);
  auto space = ResolveLabelSpace(v1::TaskSpec(), *r, "job.train");
  ASSERT_TRUE(space.ok()) << space.status();
  EXPECT_THAT(space->names, ElementsAre("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"));
  auto mapped = MapLabels(*r, *space, "job.train");
  ASSERT_TRUE(mapped.ok());
  std::vector<int> counts(6);
  for (int64_t id : mapped->ids) counts[static_cast<size_t>(id)]++;
  EXPECT_THAT(counts, ElementsAre(86, 1162, 1250, 1223, 835, 896));
}

// --- robustness -------------------------------------------------------------------

// Random mutations of valid files, in every format: parsing never crashes,
// every error starts with the field path, and no error quotes the text
// (each text contains a marker that must never appear in a message).
TEST(RobustnessTest, MutatedInputsGiveFieldErrorsWithoutContent) {
  const std::string mark = "ZQXMARK";
  const std::vector<std::pair<std::string, std::string>> seeds = {
      {"/a.jsonl", "{\"text\": \"" + mark + " a\", \"text_pair\": \"" + mark +
                       "\", \"label\": 1}\n{\"text\": \"" + mark + "\", \"text_pair\": \"b\", "
                       "\"label\": \"x\"}\n"},
      {"/a.csv", "text,label\n\"" + mark + ", \"\"q\"\"\",pos\r\n" + mark + " b,neg\n"},
      {"/a.tsv", "sentence1\tsentence2\tlabel\n" + mark + "\t\"" + mark + "\t0\n"},
      {"/a.label", "NUM:dist " + mark + " far ?\nLOC:city " + mark + "\xE9 ?\n"},
  };
  const std::string alphabet = "\"\\,\t\n\r{}[]:: a1\xC3\xFF";
  std::mt19937_64 rng(1234);
  int errors = 0, oks = 0;
  for (const auto& [uri, seed] : seeds) {
    for (int iter = 0; iter < 1500; ++iter) {
      std::string s = seed;
      const int edits = 1 + static_cast<int>(rng() % 4);
      for (int e = 0; e < edits; ++e) {
        const size_t pos = rng() % (s.size() + 1);
        const char c = alphabet[rng() % alphabet.size()];
        switch (rng() % 3) {
          case 0: s.insert(pos, 1, c); break;
          case 1: if (pos < s.size()) s.erase(pos, 1); break;
          default: if (pos < s.size()) s[pos] = c; break;
        }
      }
      auto r = ParseDataset(s, Spec(uri), "job.train");
      if (r.ok()) {
        ++oks;
        continue;
      }
      ++errors;
      const std::string m = Msg(r.status());
      ASSERT_TRUE(m.rfind("job.train", 0) == 0) << m;
      ASSERT_EQ(m.find("ZQX"), std::string::npos) << m;
      ASSERT_EQ(m.find("MARK"), std::string::npos) << m;
    }
  }
  EXPECT_GT(errors, 100);
  EXPECT_GT(oks, 100);
}

// --- label space ----------------------------------------------------------------

std::vector<RawExample> Labels(std::initializer_list<const char*> labels) {
  std::vector<RawExample> out;
  int64_t line = 1;
  for (const char* l : labels) out.push_back(RawExample{"t", std::nullopt, l, ++line});
  return out;
}

// --- unlabelled text (masked LM) ---------------------------------------------

TEST(UnlabelledTest, PlainTextOneExamplePerNonBlankLine) {
  EXPECT_EQ(*internal::ResolveFormat(Spec("/d/corpus.txt"), "f"), v1::DATASET_FORMAT_TEXT);
  auto rows = ParseDataset("\xEF\xBB\xBF" "first line\n\n  second line  \r\n\t\nthird\n",
                           Spec("/d/c.txt"), "job.train", /*labelled=*/false);
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 3u);
  EXPECT_EQ((*rows)[0].text, "first line");
  EXPECT_EQ((*rows)[1].text, "second line");
  EXPECT_EQ((*rows)[1].line, 3);
  EXPECT_EQ((*rows)[2].label, "");
  EXPECT_FALSE((*rows)[2].text_pair.has_value());
  // A classification job cannot read plain text.
  auto labelled = ParseDataset("a\n", Spec("/d/c.txt"), "job.train");
  ASSERT_FALSE(labelled.ok());
  EXPECT_THAT(Msg(labelled.status()), ::testing::StartsWith("job.train.format: plain text"));
  EXPECT_FALSE(ParseDataset("\n \n", Spec("/d/c.txt"), "job.train", false).ok());
}

TEST(UnlabelledTest, ColumnFormatsWithoutALabelColumn) {
  auto tsv = ParseDataset("sentence1\tsentence2\nA b.\tC d.\n", Spec("/d/x.tsv"), "f", false);
  ASSERT_TRUE(tsv.ok()) << tsv.status();
  EXPECT_EQ((*tsv)[0].text, "A b.");
  EXPECT_EQ((*tsv)[0].text_pair, "C d.");
  auto jsonl = ParseDataset("{\"text\": \"x\"}\n{\"text\": \"y\", \"label\": 3}\n", Spec("/d/x.jsonl"),
                            "f", false);
  ASSERT_TRUE(jsonl.ok()) << jsonl.status();
  EXPECT_EQ((*jsonl)[1].label, "");  // a label column is simply ignored
  auto csv = ParseDataset("text\n\"q, r\"\n", Spec("/d/x.csv"), "f", false);
  ASSERT_TRUE(csv.ok()) << csv.status();
  EXPECT_EQ((*csv)[0].text, "q, r");
  // Labelled parsing still requires the label column.
  EXPECT_FALSE(ParseDataset("text\nx\n", Spec("/d/x.csv"), "f").ok());
  LabelSpace none;
  EXPECT_TRUE(none.unlabelled());
  auto mapped = MapLabels(*jsonl, none, "f");
  ASSERT_TRUE(mapped.ok());
  EXPECT_TRUE(mapped->ids.empty() && mapped->targets.empty());
}

TEST(LabelSpaceTest, IntegerLabelsBecomeZeroToMax) {
  auto s = ResolveLabelSpace(v1::TaskSpec(), Labels({"0", "2", "1", "2"}), "job.train");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_THAT(s->names, ElementsAre("0", "1", "2"));
  EXPECT_FALSE(s->regression);
  EXPECT_EQ(s->num_labels(), 3);
  auto m = MapLabels(Labels({"0", "2", "1"}), *s, "job.train");
  ASSERT_TRUE(m.ok());
  EXPECT_THAT(m->ids, ElementsAre(0, 2, 1));
}

TEST(LabelSpaceTest, NumLabelsBoundsIntegerLabels) {
  v1::TaskSpec task;
  task.set_num_labels(2);
  auto s = ResolveLabelSpace(task, Labels({"0", "1", "0", "1", "0", "1", "0", "7"}), "job.train");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(Msg(s.status()), "job.train: line 9: label 7 out of range [0, 2)");
  task.set_num_labels(4);
  auto ok = ResolveLabelSpace(task, Labels({"0", "1"}), "job.train");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_THAT(ok->names, ElementsAre("0", "1", "2", "3"));
}

TEST(LabelSpaceTest, StringLabelsSortedAndNamesMapStringsAndIntegers) {
  auto s = ResolveLabelSpace(v1::TaskSpec(), Labels({"pos", "neg", "pos"}), "job.train");
  ASSERT_TRUE(s.ok());
  EXPECT_THAT(s->names, ElementsAre("neg", "pos"));

  v1::TaskSpec task;
  task.add_label_names("negative");
  task.add_label_names("positive");
  auto named = ResolveLabelSpace(task, Labels({"positive", "1", "0"}), "job.train");
  ASSERT_TRUE(named.ok()) << named.status();
  auto m = MapLabels(Labels({"positive", "1", "0", "negative"}), *named, "job.train");
  ASSERT_TRUE(m.ok());
  EXPECT_THAT(m->ids, ElementsAre(1, 1, 0, 0));
  auto unknown = MapLabels(Labels({"neutral"}), *named, "job.validation");
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(Msg(unknown.status()),
            "job.validation: line 2: label \"neutral\" is not one of the 2 known labels");
  task.set_num_labels(3);
  EXPECT_FALSE(ResolveLabelSpace(task, Labels({"positive"}), "job.train").ok());
}

TEST(LabelSpaceTest, RegressionAndDegenerateCases) {
  v1::TaskSpec task;
  task.set_num_labels(1);
  auto s = ResolveLabelSpace(task, Labels({"0.5", "3", "-1.25"}), "job.train");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_TRUE(s->regression);
  EXPECT_EQ(s->num_labels(), 1);
  auto m = MapLabels(Labels({"0.5", "3", "-1.25"}), *s, "job.train");
  ASSERT_TRUE(m.ok());
  EXPECT_THAT(m->targets, ElementsAre(0.5f, 3.0f, -1.25f));
  auto nan = ResolveLabelSpace(task, Labels({"0.5", "abc"}), "job.train");
  ASSERT_FALSE(nan.ok());
  EXPECT_THAT(Msg(nan.status()), HasSubstr("line 3: label is not a finite number"));
  // Finite as a double, infinite as the float32 target (issue 14 item 6).
  auto over = ResolveLabelSpace(task, Labels({"0.5", "1e39"}), "job.train");
  ASSERT_FALSE(over.ok());
  EXPECT_THAT(Msg(over.status()),
              ::testing::StartsWith("job.train: line 3: label 1e39 does not fit in float32"));
  EXPECT_TRUE(ResolveLabelSpace(task, Labels({"0.5", "-3.4e38"}), "job.train").ok());

  auto one = ResolveLabelSpace(v1::TaskSpec(), Labels({"a", "a"}), "job.train");
  ASSERT_FALSE(one.ok());
  EXPECT_THAT(Msg(one.status()), HasSubstr("only one distinct label"));
  auto negative = ResolveLabelSpace(v1::TaskSpec(), Labels({"0", "-1"}), "job.train");
  ASSERT_FALSE(negative.ok());
  EXPECT_THAT(Msg(negative.status()), ::testing::StartsWith("job.train: line 3: label -1 is negative"));
  // Listing the labels as names makes -1/1 labels usable.
  v1::TaskSpec named;
  named.add_label_names("-1");
  named.add_label_names("1");
  auto pm = ResolveLabelSpace(named, Labels({"1", "-1"}), "job.train");
  ASSERT_TRUE(pm.ok()) << pm.status();
  EXPECT_THAT(MapLabels(Labels({"1", "-1"}), *pm, "job.train")->ids, ElementsAre(1, 0));
  auto huge = ResolveLabelSpace(v1::TaskSpec(), Labels({"0", "1000000"}), "job.train");
  ASSERT_FALSE(huge.ok());
  EXPECT_THAT(Msg(huge.status()), HasSubstr("num_labels to 1"));
}

}  // namespace
}  // namespace freezetune::data
