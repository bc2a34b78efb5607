// Runs the built `freezetune` binary (popen) against a real gRPC server in
// this process, backed by the scriptable fake service: checks what a user or
// a script sees: JSON lines, tables, one-line errors and exit codes.
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "absl/strings/str_split.h"
#include "tests/unit/client_fake_server.h"

namespace freezetune {
namespace {

using ::freezetune::testing::FakeFineTuneService;
using ::freezetune::testing::FakeServer;
using ::freezetune::testing::SimpleLog;
using ::freezetune::testing::WatchScript;

struct RunResult {
  int exit_code = -1;
  std::string out;
  std::string err;
  std::vector<std::string> lines;  // non-empty stdout lines
};

std::string Binary() {
  return std::string(FREEZETUNE_BINARY_DIR) + "/client/src/freezetune";
}

// Runs a shell command; stderr goes to a temp file.
RunResult RunShell(const std::string& command) {
  char err_path[] = "/tmp/freezetune_cli_test_XXXXXX";
  int fd = mkstemp(err_path);
  close(fd);
  std::string cmd = absl::StrCat(command, " 2>", err_path);
  RunResult r;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream in(err_path);
  std::stringstream ss;
  ss << in.rdbuf();
  r.err = ss.str();
  unlink(err_path);
  for (absl::string_view line : absl::StrSplit(r.out, '\n', absl::SkipEmpty())) {
    r.lines.emplace_back(line);
  }
  return r;
}

// `env freezetune args`, without the user's FREEZETUNE_* settings.
RunResult RunCli(const std::string& args, const std::string& env = "") {
  return RunShell(absl::StrCat("env -u FREEZETUNE_SERVER -u FREEZETUNE_TOKEN ",
                               env, " ", Binary(), " ", args));
}

// The same under a pseudo-terminal (util-linux `script`), so that the CLI
// sees a TTY on stdout; the pty merges stderr into the output. Returns
// exit_code -2 when `script` is missing.
// `columns` > 0 sets the terminal's width first (stty cols).
RunResult RunCliTty(const std::string& args, int columns = 0) {
  if (access("/usr/bin/script", X_OK) != 0) return RunResult{-2, "", "", {}};
  return RunShell(absl::StrCat(
      "env -u FREEZETUNE_SERVER -u FREEZETUNE_TOKEN /usr/bin/script -qec '",
      columns > 0 ? absl::StrCat("stty cols ", columns, "; ") : "", Binary(), " ", args,
      "' /dev/null"));
}

template <typename Msg>
Msg ParseJson(const std::string& line) {
  Msg m;
  auto s = google::protobuf::util::JsonStringToMessage(line, &m);
  EXPECT_TRUE(s.ok()) << s.ToString() << " in: " << line;
  return m;
}

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(access(Binary().c_str(), X_OK), 0) << Binary() << " not built";
    server_ = std::make_unique<FakeServer>(&service_);
    ASSERT_TRUE(server_->ok());
    server_flag_ = "--server " + server_->target();
  }

  FakeFineTuneService service_;
  std::unique_ptr<FakeServer> server_;
  std::string server_flag_;
};

TEST_F(CliTest, WatchJsonLinesParseAndFailedJobExitsNonZero) {
  v1::Job job;
  job.set_id("job-abc");
  job.set_error_message("step 12: non-finite loss");
  service_.AddJob(job);
  service_.SetEvents("job-abc", SimpleLog("job-abc", 4, v1::JOB_STATE_FAILED,
                                          "step 12: non-finite loss"));
  RunResult r = RunCli(server_flag_ + " watch job-abc --json");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "freezetune: job job-abc FAILED: step 12: non-finite loss\n");
  ASSERT_EQ(r.lines.size(), 7u) << r.out;
  for (size_t i = 0; i < r.lines.size(); ++i) {
    v1::JobEvent e = ParseJson<v1::JobEvent>(r.lines[i]);
    EXPECT_EQ(e.sequence(), static_cast<int64_t>(i + 1));
    EXPECT_EQ(e.job_id(), "job-abc");
  }
  EXPECT_EQ(ParseJson<v1::JobEvent>(r.lines[3]).train().step(), 20);
}

TEST_F(CliTest, WatchWithoutTtyPrintsJsonAndSucceeds) {
  service_.SetEvents("job-ok", SimpleLog("job-ok", 3, v1::JOB_STATE_SUCCEEDED));
  // The stream drops twice; the CLI output still has each event once.
  service_.ScriptWatch({{2, grpc::StatusCode::UNAVAILABLE},
                        {1, grpc::StatusCode::UNAVAILABLE}});
  RunResult r = RunCli(server_flag_ + " watch job-ok");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  ASSERT_EQ(r.lines.size(), 6u) << r.out;
  for (size_t i = 0; i < r.lines.size(); ++i) {
    EXPECT_EQ(ParseJson<v1::JobEvent>(r.lines[i]).sequence(),
              static_cast<int64_t>(i + 1));
  }
  EXPECT_EQ(service_.WatchAfterSequences(), (std::vector<int64_t>{0, 2, 3}));
}

TEST_F(CliTest, WatchAfterSkipsEarlierEvents) {
  service_.SetEvents("job-ok", SimpleLog("job-ok", 3, v1::JOB_STATE_SUCCEEDED));
  RunResult r = RunCli(server_flag_ + " watch job-ok --after=4 --json");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  ASSERT_EQ(r.lines.size(), 2u);
  EXPECT_EQ(ParseJson<v1::JobEvent>(r.lines[0]).sequence(), 5);
}

TEST_F(CliTest, WatchOnATtyDrawsProgressAndASummary) {
  v1::Job job;
  job.set_id("job-t");
  v1::JobResult* res = job.mutable_result();
  res->set_steps(30);
  res->set_total_parameters(4000);
  res->set_trainable_parameters(1000);
  res->set_frozen_weights_verified(true);
  res->set_output_uri("file:///out/job-t");
  service_.AddJob(job);
  service_.SetEvents("job-t", SimpleLog("job-t", 3, v1::JOB_STATE_SUCCEEDED));
  RunResult r = RunCliTty(server_flag_ + " watch job-t");
  if (r.exit_code == -2) GTEST_SKIP() << "no /usr/bin/script for a pty";
  EXPECT_EQ(r.exit_code, 0) << r.out;
  // The bar is redrawn in place, ending at 30/30.
  EXPECT_NE(r.out.find("\r\033[K[###-------] 10/30 33%"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("\r\033[K[##########] 30/30 100%"), std::string::npos);
  EXPECT_NE(r.out.find("job-t SUCCEEDED"), std::string::npos);
  EXPECT_NE(r.out.find("1,000 trainable / 4,000 total (25.00%)"),
            std::string::npos);
  EXPECT_NE(r.out.find("frozen weights verified  yes"), std::string::npos);
  EXPECT_EQ(r.out.find("{\""), std::string::npos) << "no JSON on a TTY";
}

TEST_F(CliTest, ProgressLineFitsANarrowTerminalAndSummaryHasSparklines) {
  v1::Job job;
  job.set_id("job-n");
  job.set_state(v1::JOB_STATE_SUCCEEDED);
  job.mutable_result()->set_steps(30);
  service_.AddJob(job);
  service_.SetEvents("job-n", SimpleLog("job-n", 3, v1::JOB_STATE_SUCCEEDED));
  RunResult r = RunCliTty(server_flag_ + " watch job-n", 32);
  if (r.exit_code == -2) GTEST_SKIP() << "no /usr/bin/script for a pty";
  EXPECT_EQ(r.exit_code, 0) << r.out;
  // Every redraw of the progress line fits in 31 columns (one spare).
  int redraws = 0;
  for (absl::string_view part : absl::StrSplit(r.out, "\r\033[K")) {
    absl::string_view line = part.substr(0, part.find_first_of("\r\n"));
    if (line.find("/30") == absl::string_view::npos) continue;
    ++redraws;
    EXPECT_LE(line.size(), 31u) << line;
  }
  EXPECT_GE(redraws, 3) << r.out;
  EXPECT_NE(r.out.find("train loss"), std::string::npos) << r.out;
}

TEST_F(CliTest, CancelledJobExitsNonZero) {
  service_.SetEvents("job-c", SimpleLog("job-c", 1, v1::JOB_STATE_CANCELLED));
  RunResult r = RunCli(server_flag_ + " watch job-c");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "freezetune: job job-c CANCELLED\n");
}

TEST_F(CliTest, SubmitBuildsTheJobFromFlags) {
  RunResult r = RunCli(server_flag_ +
                    " submit --model file:///m --train file:///t.tsv"
                    " --validation=file:///v.tsv --format tsv"
                    " --text-field sentence --labels neg,pos --freeze bottom:2"
                    " --rule 'train:bert\\.pooler\\..*@0.5'"
                    " --rule 'freeze:.*LayerNorm.*' --epochs 2 --lr 3e-5"
                    " --batch-size 16 --seed 7 --request-id r1 --name demo"
                    " --priority 3",
                    "FREEZETUNE_TOKEN=tok123");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "job-1\n");  // not a TTY: just the id, for scripts
  std::vector<v1::FineTuneJob> sent = service_.Submitted();
  ASSERT_EQ(sent.size(), 1u);
  const v1::FineTuneJob& j = sent[0];
  EXPECT_EQ(j.model_uri(), "file:///m");
  EXPECT_EQ(j.train().uri(), "file:///t.tsv");
  EXPECT_EQ(j.train().format(), v1::DATASET_FORMAT_TSV);
  EXPECT_EQ(j.validation().format(), v1::DATASET_FORMAT_TSV);
  EXPECT_EQ(j.validation().text_field(), "sentence");
  EXPECT_EQ(j.task().label_names_size(), 2);
  EXPECT_EQ(j.freeze().bottom().num_layers(), 2);
  ASSERT_EQ(j.freeze().rules_size(), 2);
  EXPECT_EQ(j.freeze().rules(0).pattern(), "bert\\.pooler\\..*");
  EXPECT_EQ(j.freeze().rules(0).action(), v1::FREEZE_ACTION_TRAIN);
  EXPECT_FLOAT_EQ(j.freeze().rules(0).lr_scale(), 0.5f);
  EXPECT_EQ(j.freeze().rules(1).action(), v1::FREEZE_ACTION_FREEZE);
  EXPECT_FALSE(j.freeze().rules(1).has_lr_scale());
  EXPECT_EQ(j.hyperparameters().epochs(), 2);
  EXPECT_FLOAT_EQ(j.hyperparameters().learning_rate(), 3e-5f);
  EXPECT_EQ(j.hyperparameters().seed(), 7);
  EXPECT_EQ(j.client_request_id(), "r1");
  EXPECT_EQ(j.display_name(), "demo");
  EXPECT_EQ(j.priority(), 3);
  EXPECT_EQ(service_.AuthHeaders(), (std::vector<std::string>{"Bearer tok123"}));
}

TEST_F(CliTest, SubmitFileWithFlagOverrides) {
  std::string file =
      std::string(FREEZETUNE_SOURCE_DIR) + "/client/examples/bottom2.json";
  RunResult r = RunCli(server_flag_ + " submit -f " + file +
                    " --model file:///m --train file:///t.tsv --epochs 5"
                    " --freeze head-only --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_EQ(r.lines.size(), 1u);
  v1::Job job = ParseJson<v1::Job>(r.lines[0]);
  EXPECT_EQ(job.id(), "job-1");
  ASSERT_EQ(service_.Submitted().size(), 1u);
  const v1::FineTuneJob j = service_.Submitted()[0];
  EXPECT_EQ(j.hyperparameters().epochs(), 5);           // flag wins
  EXPECT_EQ(j.hyperparameters().batch_size(), 32);      // from the file
  EXPECT_EQ(j.train().format(), v1::DATASET_FORMAT_TSV);  // from the file
  EXPECT_EQ(j.train().uri(), "file:///t.tsv");
  EXPECT_TRUE(j.freeze().has_head_only());              // recipe replaced
  EXPECT_EQ(j.display_name(), "sst2-bottom-2");
}

TEST_F(CliTest, SubmitWatchFollowsTheNewJob) {
  service_.set_log_for_submitted(SimpleLog("", 2, v1::JOB_STATE_SUCCEEDED));
  RunResult r = RunCli(server_flag_ +
                    " submit --model file:///m --train file:///t.tsv --watch");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  ASSERT_EQ(r.lines.size(), 5u) << r.out;
  EXPECT_EQ(ParseJson<v1::JobEvent>(r.lines.back()).state_change().state(),
            v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(ParseJson<v1::JobEvent>(r.lines[0]).job_id(), "job-1");
}

TEST_F(CliTest, SubmitRejectedShowsServerError) {
  service_.FailNext("SubmitJob", 1, grpc::StatusCode::INVALID_ARGUMENT,
                    "job.train.uri: file not found");
  RunResult r = RunCli(server_flag_ + " submit --model file:///m --train file:///x");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err,
            "freezetune: INVALID_ARGUMENT: --train (job.train.uri): file not found\n");
}

TEST_F(CliTest, UsageErrorsExitTwo) {
  RunResult bad_flag = RunCli(server_flag_ + " list --bogus");
  EXPECT_EQ(bad_flag.exit_code, 2);
  EXPECT_EQ(bad_flag.err, "freezetune: unknown flag '--bogus'\n");
  RunResult typo = RunCli(server_flag_ + " lst");
  EXPECT_EQ(typo.exit_code, 2);
  EXPECT_EQ(typo.err, "freezetune: unknown command 'lst'; did you mean 'list'?\n");
  RunResult flag_typo = RunCli(server_flag_ + " submit --epoch 3");
  EXPECT_EQ(flag_typo.err, "freezetune: unknown flag '--epoch'; did you mean '--epochs'?\n");
  RunResult bad_rule = RunCli(server_flag_ + " submit --rule nope");
  EXPECT_EQ(bad_rule.exit_code, 2);
  RunResult help = RunCli("help submit");
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.out.find("--request-id"), std::string::npos);
  EXPECT_EQ(service_.Calls("SubmitJob"), 0);
}

TEST_F(CliTest, UnreachableServerIsOneLineAndNonZero) {
  int port = server_->port();
  server_->Shutdown();
  RunResult r = RunCli(absl::StrCat("--server 127.0.0.1:", port, " get job-1"));
  EXPECT_EQ(r.exit_code, 1);
  const std::string prefix =
      absl::StrCat("freezetune: cannot reach 127.0.0.1:", port, ": ");
  EXPECT_EQ(r.err.substr(0, prefix.size()), prefix) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1);
}

TEST_F(CliTest, ServerFromEnvironment) {
  service_.SetEvents("job-1", SimpleLog("job-1", 1, v1::JOB_STATE_SUCCEEDED));
  RunResult r = RunCli("get job-1 --json", "FREEZETUNE_SERVER=" + server_->target());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  ASSERT_EQ(r.lines.size(), 1u);
  EXPECT_EQ(ParseJson<v1::Job>(r.lines[0]).state(), v1::JOB_STATE_SUCCEEDED);
}

TEST_F(CliTest, GetListCancel) {
  for (const char* name : {"a", "b", "c"}) {
    ASSERT_EQ(RunCli(absl::StrCat(server_flag_, " submit --model file:///m --name ",
                               name))
                  .exit_code,
              0);
  }
  RunResult list = RunCli(server_flag_ + " list --json --page-size 2");
  ASSERT_EQ(list.exit_code, 0) << list.err;
  ASSERT_EQ(list.lines.size(), 3u);
  EXPECT_EQ(ParseJson<v1::Job>(list.lines[0]).spec().display_name(), "c");
  EXPECT_EQ(service_.Calls("ListJobs"), 2);

  // -o name: ids only, newest first; the same table piped as on a terminal.
  RunResult names = RunCli(server_flag_ + " list -o name");
  EXPECT_EQ(names.out, "job-3\njob-2\njob-1\n");
  RunResult wide = RunCli(server_flag_ + " list -owide --limit 1");
  ASSERT_EQ(wide.lines.size(), 2u) << wide.out;
  EXPECT_NE(wide.lines[0].find("DURATION"), std::string::npos);
  RunResult bad = RunCli(server_flag_ + " list -o yaml");
  EXPECT_EQ(bad.exit_code, 2);

  RunResult table = RunCli(server_flag_ + " list --limit 2");
  ASSERT_EQ(table.exit_code, 0) << table.err;
  ASSERT_EQ(table.lines.size(), 3u) << table.out;  // header + 2 rows
  EXPECT_EQ(table.lines[0].substr(0, 2), "ID");
  EXPECT_NE(table.lines[1].find("QUEUED"), std::string::npos);

  RunResult cancel = RunCli(server_flag_ + " cancel job-2");
  EXPECT_EQ(cancel.exit_code, 0) << cancel.err;
  EXPECT_EQ(cancel.out, "cancelled job-2 (was QUEUED)\n");
  RunResult again = RunCli(server_flag_ + " cancel job-2");
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_EQ(again.err,
            "freezetune: FAILED_PRECONDITION: job job-2 already finished\n");

  RunResult cancelled = RunCli(server_flag_ + " list --state cancelled --json");
  ASSERT_EQ(cancelled.lines.size(), 1u);
  EXPECT_EQ(ParseJson<v1::Job>(cancelled.lines[0]).id(), "job-2");

  RunResult get = RunCli(server_flag_ + " get job-3");
  EXPECT_EQ(get.exit_code, 0);
  bool name_row = false;
  for (const std::string& l : get.lines) {
    name_row |= l.rfind("name ", 0) == 0 && l.back() == 'c';
  }
  EXPECT_TRUE(name_row) << get.out;
  RunResult missing = RunCli(server_flag_ + " get job-9");
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_EQ(missing.err, "freezetune: NOT_FOUND: job job-9 not found\n");
}

TEST_F(CliTest, PlanPrintsTableAndTotals) {
  v1::PlanFreezeResponse plan;
  auto add = [&](const char* name, std::vector<int64_t> shape, bool train,
                 const char* by) {
    v1::ParameterPlan* p = plan.add_parameters();
    p->set_name(name);
    int64_t numel = 1;
    for (int64_t d : shape) {
      p->add_shape(d);
      numel *= d;
    }
    p->set_numel(numel);
    p->set_trainable(train);
    p->set_decided_by(by);
    p->set_lr_scale(train ? 1.f : 0.f);
  };
  add("bert.embeddings.word_embeddings.weight", {30522, 64}, false,
      "bottom(2)");
  add("classifier.weight", {2, 64}, true, "default");
  plan.set_total_parameters(30522 * 64 + 128);
  plan.set_trainable_parameters(128);
  plan.set_frozen_parameters(30522 * 64);
  plan.set_num_layers(2);
  plan.set_frozen_prefix_layers(2);
  service_.set_plan(plan);

  RunResult r = RunCli(server_flag_ +
                    " plan --model file:///m --freeze bottom:2"
                    " --rule 'train:classifier\\..*@2'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("bert.embeddings.word_embeddings.weight  [30522, 64]  "
                       "1,953,408  frozen  bottom(2)"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("trainable 128 / 1,953,536 parameters (0.01%)"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("frozen_prefix_layers 2"), std::string::npos);
  std::vector<v1::PlanFreezeRequest> reqs = service_.PlanRequests();
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].model_uri(), "file:///m");
  EXPECT_EQ(reqs[0].freeze().bottom().num_layers(), 2);
  EXPECT_FLOAT_EQ(reqs[0].freeze().rules(0).lr_scale(), 2.f);

  RunResult json = RunCli(server_flag_ + " plan --model file:///m --json");
  ASSERT_EQ(json.lines.size(), 1u);
  EXPECT_EQ(ParseJson<v1::PlanFreezeResponse>(json.lines[0]).parameters_size(),
            2);
}

}  // namespace
}  // namespace freezetune
