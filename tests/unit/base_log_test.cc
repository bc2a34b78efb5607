// Structured log lines: JSON lines parse, escape what JSON must escape, carry
// job_id only when given; text lines keep the same facts.
#include "server/base/log.h"

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace freezetune::base {
namespace {

TEST(LogTest, JsonLineParsesAndEscapes) {
  const std::string msg = "quote \" backslash \\ newline \n tab \t bell \x07 utf8 \xc3\xa9";
  std::string line = FormatLogLine(LogFormat::kJson, LogLevel::kWarning, msg, "job-000000000001",
                                   {{"slot", "0"}, {"path", "/a \"b\""}});
  EXPECT_EQ(line.find('\n'), std::string::npos);
  nlohmann::json j = nlohmann::json::parse(line);
  EXPECT_EQ(j["msg"], msg);
  EXPECT_EQ(j["level"], "warning");
  EXPECT_EQ(j["job_id"], "job-000000000001");
  EXPECT_EQ(j["slot"], "0");
  EXPECT_EQ(j["path"], "/a \"b\"");
  const std::string time = j["time"];
  EXPECT_EQ(time.size(), std::string("2026-11-26T09:00:00.123456Z").size()) << time;
  EXPECT_EQ(time.back(), 'Z');
}

TEST(LogTest, JobIdOnlyWhenTheLineConcernsAJob) {
  nlohmann::json j = nlohmann::json::parse(FormatLogLine(LogFormat::kJson, LogLevel::kInfo, "hi", "", {}));
  EXPECT_FALSE(j.contains("job_id"));
  EXPECT_EQ(j["level"], "info");
}

TEST(LogTest, TextLine) {
  std::string line = FormatLogLine(LogFormat::kText, LogLevel::kError, "job FAILED", "job-1",
                                   {{"reason", "x"}});
  EXPECT_EQ(line[0], 'E');
  EXPECT_NE(line.find(" job-1 job FAILED reason=x"), std::string::npos) << line;
}

}  // namespace
}  // namespace freezetune::base
