// Freeze sweeps against the real freezetune-server binary (2-layer model,
// tiny dataset): a sweep over depths {0, 1, 2, head-only} finishes; every
// trial is a visible job linked by sweep_id; the table has one row per
// candidate with PlanFreeze's trainable counts; the winner is the best metric
// with ties to fewer trainable parameters; sweep.json and the winner's model
// are in the output directory; WatchSweep streams gapless events and
// resumes; cancelling a sweep cancels its trials; a depth beyond the model's
// layers is INVALID_ARGUMENT naming sweep.freeze_depths[i]; ListSweeps (and
// `freezetune sweep-list`) pages newest first, filters by state and names a
// bad page_token.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <thread>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "client/src/cli_commands.h"
#include "freezetune/client.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/real_server_client_test.h"

namespace freezetune {
namespace {

namespace fs = std::filesystem;

int64_t Micros(const google::protobuf::Timestamp& t) {
  return t.seconds() * 1'000'000 + t.nanos() / 1000;
}

class SweepE2ETest : public testing::RealServerClientTest {
 protected:
  static v1::SweepSpec Spec(const std::string& dataset, int epochs) {
    v1::SweepSpec spec;
    *spec.mutable_job() = Job(dataset, epochs);
    spec.mutable_job()->clear_freeze();
    spec.add_freeze_depths(0);
    spec.add_freeze_depths(1);
    spec.add_freeze_depths(2);
    spec.set_include_head_only(true);
    return spec;
  }
};

TEST_F(SweepE2ETest, DepthSweepFinishesWithTableWinnerAndOutput) {
  v1::SweepSpec spec = Spec("small.jsonl", 2);
  spec.set_output_uri("file://" + *dir_ + "/sweep-out");
  auto sweep = client_->SubmitSweep(spec);
  ASSERT_TRUE(sweep.ok()) << sweep.status();
  EXPECT_EQ(sweep->id().rfind("sweep-", 0), 0u) << sweep->id();
  EXPECT_EQ(sweep->state(), v1::SWEEP_STATE_RUNNING);
  ASSERT_EQ(sweep->trials_size(), 4);
  EXPECT_EQ(sweep->selection_metric(), "accuracy");
  EXPECT_FALSE(sweep->lower_is_better());

  // Trainable counts equal PlanFreeze's for the same spec.
  for (int i = 0; i < 4; ++i) {
    v1::PlanFreezeRequest plan;
    plan.set_model_uri(*model_uri_);
    *plan.mutable_freeze() = sweep->trials(i).freeze();
    auto planned = client_->PlanFreeze(plan);
    ASSERT_TRUE(planned.ok()) << planned.status();
    EXPECT_EQ(sweep->trials(i).trainable_parameters(), planned->trainable_parameters()) << i;
  }
  EXPECT_EQ(sweep->trials(3).label(), "head-only");
  EXPECT_EQ(sweep->trials(3).frozen_depth(), 2);
  EXPECT_GT(sweep->trials(0).trainable_parameters(), sweep->trials(1).trainable_parameters());
  EXPECT_GT(sweep->trials(1).trainable_parameters(), sweep->trials(2).trainable_parameters());

  // Watch to the end: gapless sequences, the last event is the result.
  std::vector<v1::SweepEvent> events;
  absl::Status watched = client_->WatchSweep(sweep->id(), 0, [&](const v1::SweepEvent& e) {
    events.push_back(e);
    return true;
  });
  ASSERT_TRUE(watched.ok()) << watched;
  ASSERT_GE(events.size(), 5u);
  int trial_updates = 0;
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].sequence(), static_cast<int64_t>(i + 1));
    trial_updates += events[i].has_trial();
  }
  EXPECT_GE(trial_updates, 4);
  ASSERT_TRUE(events.back().has_result());

  auto done = client_->GetSweep(sweep->id());
  ASSERT_TRUE(done.ok()) << done.status();
  ASSERT_EQ(done->state(), v1::SWEEP_STATE_SUCCEEDED) << done->error_message();
  EXPECT_EQ(done->last_sequence(), static_cast<int64_t>(events.size()));

  // Every trial is a normal job linked to the sweep.
  for (const v1::SweepTrial& t : done->trials()) {
    auto job = client_->Get(t.job_id());
    ASSERT_TRUE(job.ok()) << job.status();
    EXPECT_EQ(job->sweep_id(), sweep->id());
    EXPECT_EQ(job->state(), v1::JOB_STATE_SUCCEEDED);
    EXPECT_EQ(job->spec().freeze().SerializeAsString(), t.freeze().SerializeAsString());
    EXPECT_TRUE(t.state() == v1::TRIAL_STATE_FINISHED || t.state() == v1::TRIAL_STATE_STOPPED_EARLY);
    EXPECT_TRUE(t.has_best());
    EXPECT_GT(t.wall_seconds(), 0);
    EXPECT_EQ(job->result().trainable_parameters(), t.trainable_parameters());
  }

  // Winner: the highest accuracy, ties to fewer trainable parameters.
  int expected = -1;
  for (int i = 0; i < done->trials_size(); ++i) {
    const v1::SweepTrial& t = done->trials(i);
    if (expected < 0) { expected = i; continue; }
    const v1::SweepTrial& w = done->trials(expected);
    if (t.best_metric() > w.best_metric() ||
        (t.best_metric() == w.best_metric() &&
         t.trainable_parameters() < w.trainable_parameters())) {
      expected = i;
    }
  }
  EXPECT_EQ(done->winner_index(), expected);

  // The winner's model and sweep.json are in the output directory.
  const std::string out = *dir_ + "/sweep-out";
  EXPECT_TRUE(fs::exists(out + "/model.safetensors"));
  EXPECT_TRUE(fs::exists(out + "/config.json"));
  EXPECT_TRUE(fs::exists(out + "/freeze_plan.json"));
  std::ifstream in(out + "/sweep.json");
  ASSERT_TRUE(in.good());
  nlohmann::json table = nlohmann::json::parse(in);
  EXPECT_EQ(table["id"], sweep->id());
  EXPECT_EQ(table["trials"].size(), 4u);
  EXPECT_EQ(table["winner_index"], expected);

  // Resuming after k replays exactly k+1..N.
  const int64_t k = static_cast<int64_t>(events.size()) / 2;
  std::vector<v1::SweepEvent> resumed;
  watched = client_->WatchSweep(sweep->id(), k, [&](const v1::SweepEvent& e) {
    resumed.push_back(e);
    return true;
  });
  ASSERT_TRUE(watched.ok()) << watched;
  ASSERT_EQ(resumed.size(), events.size() - k);
  for (size_t i = 0; i < resumed.size(); ++i) {
    EXPECT_EQ(resumed[i].SerializeAsString(), events[k + i].SerializeAsString());
  }

  // A finished sweep cannot be cancelled.
  auto again = client_->CancelSweep(sweep->id());
  EXPECT_EQ(again.status().code(), absl::StatusCode::kFailedPrecondition) << again.status();
}

TEST_F(SweepE2ETest, CancelSweepCancelsItsTrials) {
  auto sweep = client_->SubmitSweep(Spec("large.jsonl", 50));
  ASSERT_TRUE(sweep.ok()) << sweep.status();
  auto cancelled = client_->CancelSweep(sweep->id());
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_EQ(cancelled->state(), v1::SWEEP_STATE_CANCELLED);
  for (const v1::SweepTrial& t : cancelled->trials()) {
    // A running trial stops within a step; wait for it.
    v1::JobState state = v1::JOB_STATE_UNSPECIFIED;
    for (int i = 0; i < 300; ++i) {
      auto job = client_->Get(t.job_id());
      ASSERT_TRUE(job.ok()) << job.status();
      state = job->state();
      if (IsTerminal(state)) break;
      usleep(100 * 1000);
    }
    EXPECT_EQ(state, v1::JOB_STATE_CANCELLED) << t.label();
  }
  std::vector<v1::SweepEvent> events;
  absl::Status watched = client_->WatchSweep(sweep->id(), 0, [&](const v1::SweepEvent& e) {
    events.push_back(e);
    return true;
  });
  ASSERT_TRUE(watched.ok()) << watched;
  ASSERT_FALSE(events.empty());
  ASSERT_TRUE(events.back().has_result());
  EXPECT_EQ(events.back().result().state(), v1::SWEEP_STATE_CANCELLED);
}

TEST_F(SweepE2ETest, BadCandidateIsInvalidArgumentNamingIt) {
  auto before = client_->ListAll();
  ASSERT_TRUE(before.ok()) << before.status();
  v1::SweepSpec spec = Spec("small.jsonl", 1);
  spec.add_freeze_depths(3);  // the model has 2 layers
  auto sweep = client_->SubmitSweep(spec);
  ASSERT_EQ(sweep.status().code(), absl::StatusCode::kInvalidArgument) << sweep.status();
  EXPECT_NE(sweep.status().message().find("sweep.freeze_depths[3]"), std::string::npos)
      << sweep.status();
  // No trial was submitted.
  auto after = client_->ListAll();
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->size(), before->size());

  v1::SweepSpec one = Spec("small.jsonl", 1);
  one.clear_freeze_depths();
  auto single = client_->SubmitSweep(one);
  EXPECT_EQ(single.status().code(), absl::StatusCode::kInvalidArgument) << single.status();
}

TEST_F(SweepE2ETest, CliSweepPrintsJsonLinesWhenPipedAndATableOnATerminal) {
  const std::string server = "127.0.0.1:" + std::to_string(server_->port());
  const std::vector<std::string> common = {
      "--server", server, "sweep", "--depths", "1,head-only", "--model", *model_uri_,
      "--train", "file://" + *dir_ + "/small.jsonl", "--epochs", "1", "--batch-size", "8",
      "--max-seq-length", "16", "--lr", "1e-3", "--validation-split", "0.25", "--watch"};
  std::ostringstream out, err;
  cli::CliEnv env;
  int rc = cli::RunCli(common, env, out, err);
  EXPECT_EQ(rc, 0) << err.str();
  std::istringstream lines(out.str());
  std::string line, last;
  int n = 0;
  while (std::getline(lines, line)) {
    nlohmann::json j = nlohmann::json::parse(line);  // throws on a non-JSON line
    EXPECT_EQ(j["sequence"], std::to_string(++n));
    last = line;
  }
  ASSERT_GT(n, 0);
  nlohmann::json final_event = nlohmann::json::parse(last);
  ASSERT_TRUE(final_event.contains("result")) << last;
  EXPECT_EQ(final_event["result"]["state"], "SWEEP_STATE_SUCCEEDED");
  EXPECT_EQ(final_event["result"]["trials"].size(), 2u);

  // On a terminal: the table, the winner marked with '*'.
  std::ostringstream tty_out, tty_err;
  env.stdout_is_tty = true;
  rc = cli::RunCli(common, env, tty_out, tty_err);
  EXPECT_EQ(rc, 0) << tty_err.str();
  EXPECT_NE(tty_out.str().find("candidate"), std::string::npos) << tty_out.str();
  EXPECT_NE(tty_out.str().find("head-only"), std::string::npos) << tty_out.str();
  EXPECT_NE(tty_out.str().find("winner: "), std::string::npos) << tty_out.str();
  EXPECT_NE(tty_out.str().find("\n* "), std::string::npos) << tty_out.str();

  // A bad depth is a usage error before anything is sent.
  std::ostringstream bad_out, bad_err;
  rc = cli::RunCli({"--server", server, "sweep", "--depths", "1,x", "--model", *model_uri_,
                    "--train", "file://" + *dir_ + "/small.jsonl"},
                   env, bad_out, bad_err);
  EXPECT_EQ(rc, 2);
  EXPECT_NE(bad_err.str().find("--depths"), std::string::npos) << bad_err.str();
}

TEST_F(SweepE2ETest, CliSweepWithRungsRunsSuccessiveHalving) {
  const std::string server = "127.0.0.1:" + std::to_string(server_->port());
  const std::vector<std::string> job = {
      "--model", *model_uri_, "--train", "file://" + *dir_ + "/small.jsonl", "--epochs", "1",
      "--batch-size", "4", "--max-seq-length", "16", "--lr", "1e-3", "--validation-split",
      "0.25", "--eval-every", "1", "--json"};
  auto cli = [&](std::vector<std::string> args, std::string* out, std::string* err) {
    args.insert(args.end(), job.begin(), job.end());
    std::ostringstream o, e;
    cli::CliEnv env;
    const int rc = cli::RunCli(args, env, o, e);
    *out = o.str();
    *err = e.str();
    return rc;
  };
  std::string out, err;
  // The first trial to reach a rung always goes on, so at least one
  // finishes; whether the other is pruned depends on the metrics.
  ASSERT_EQ(cli({"--server", server, "sweep", "--depths", "1,head-only", "--rungs", "1,2"}, &out,
                &err),
            0)
      << err;
  nlohmann::json sweep = nlohmann::json::parse(out.substr(0, out.find('\n')));
  EXPECT_EQ(sweep["spec"]["successiveHalving"]["rungSteps"], nlohmann::json({"1", "2"})) << out;
  auto done = client_->GetSweep(sweep["id"].get<std::string>());
  ASSERT_TRUE(done.ok()) << done.status();
  for (int i = 0; i < 300 && done->state() == v1::SWEEP_STATE_RUNNING; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    done = client_->GetSweep(sweep["id"].get<std::string>());
    ASSERT_TRUE(done.ok()) << done.status();
  }
  ASSERT_EQ(done->state(), v1::SWEEP_STATE_SUCCEEDED) << done->error_message();
  int finished = 0;
  for (const v1::SweepTrial& t : done->trials()) {
    if (t.state() == v1::TRIAL_STATE_PRUNED) {
      EXPECT_GT(t.pruned_at_step(), 0);
      // The pruned job stops within a step, maybe after the sweep ended.
      v1::JobState state = v1::JOB_STATE_UNSPECIFIED;
      for (int i = 0; i < 300 && !IsTerminal(state); ++i) {
        state = client_->Get(t.job_id())->state();
        if (!IsTerminal(state)) std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      EXPECT_EQ(state, v1::JOB_STATE_CANCELLED);
    } else {
      EXPECT_EQ(t.state(), v1::TRIAL_STATE_FINISHED) << t.label();
      ++finished;
    }
  }
  EXPECT_GE(finished, 1);

  // Bad schedules: caught by the CLI, or by the server naming the field.
  EXPECT_EQ(cli({"--server", server, "sweep", "--depths", "1,head-only", "--rungs", "1,x"}, &out,
                &err),
            2);
  EXPECT_NE(err.find("--rungs"), std::string::npos) << err;
  EXPECT_EQ(cli({"--server", server, "sweep", "--depths", "1,head-only", "--reduction-factor",
                 "3"},
                &out, &err),
            2);
  EXPECT_NE(err.find("--reduction-factor needs --rungs"), std::string::npos) << err;
  EXPECT_NE(cli({"--server", server, "sweep", "--depths", "1,head-only", "--rungs", "5,3"}, &out,
                &err),
            0);
  EXPECT_NE(err.find("sweep.successive_halving.rung_steps[1]"), std::string::npos) << err;
}

// `freezetune sweep --lrs ... --lora-ranks ...`: the depth and the LoRA
// candidate (from --lora-targets) crossed with the ranks and the rates, one
// row and one job per (candidate, rank, rate), each job trained with its
// row's rate and rank.
TEST_F(SweepE2ETest, CliSweepCrossesLearningRatesAndLoraRanks) {
  const std::string server = "127.0.0.1:" + std::to_string(server_->port());
  std::vector<std::string> args = {
      "--server", server, "sweep", "--depths", "1", "--lora-targets",
      "bert\\.encoder\\.layer\\.\\d+\\.attention\\.self\\.(query|value)", "--lora-ranks", "2,4",
      "--lrs", "1e-3,3e-3", "--model", *model_uri_, "--train",
      "file://" + *dir_ + "/small.jsonl", "--epochs", "1", "--batch-size", "8",
      "--max-seq-length", "16", "--validation-split", "0.25", "--json"};
  std::ostringstream out, err;
  cli::CliEnv env;
  ASSERT_EQ(cli::RunCli(args, env, out, err), 0) << err.str();
  nlohmann::json submitted = nlohmann::json::parse(out.str().substr(0, out.str().find('\n')));
  const std::string id = submitted["id"].get<std::string>();
  auto done = client_->GetSweep(id);
  ASSERT_TRUE(done.ok()) << done.status();
  for (int i = 0; i < 600 && done->state() == v1::SWEEP_STATE_RUNNING; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    done = client_->GetSweep(id);
    ASSERT_TRUE(done.ok()) << done.status();
  }
  ASSERT_EQ(done->state(), v1::SWEEP_STATE_SUCCEEDED) << done->error_message();
  const std::vector<std::string> labels = {"depth=1 lr=0.001",       "depth=1 lr=0.003",
                                           "spec[0] r=2 lr=0.001", "spec[0] r=2 lr=0.003",
                                           "spec[0] r=4 lr=0.001", "spec[0] r=4 lr=0.003"};
  ASSERT_EQ(done->trials_size(), static_cast<int>(labels.size()));
  for (int i = 0; i < done->trials_size(); ++i) {
    const v1::SweepTrial& t = done->trials(i);
    EXPECT_EQ(t.label(), labels[i]);
    EXPECT_FLOAT_EQ(t.learning_rate(), i % 2 == 0 ? 1e-3f : 3e-3f) << t.label();
    EXPECT_EQ(t.lora_rank(), i < 2 ? 0 : (i < 4 ? 2 : 4)) << t.label();
    auto job = client_->Get(t.job_id());
    ASSERT_TRUE(job.ok()) << job.status();
    EXPECT_EQ(job->state(), v1::JOB_STATE_SUCCEEDED) << t.label() << ": " << job->error_message();
    EXPECT_FLOAT_EQ(job->spec().hyperparameters().learning_rate(), t.learning_rate());
    EXPECT_EQ(job->spec().freeze().lora().rank(), t.lora_rank());
  }
  // A higher rank trains more adapter parameters; the rate changes none.
  EXPECT_EQ(done->trials(2).trainable_parameters(), done->trials(3).trainable_parameters());
  EXPECT_LT(done->trials(2).trainable_parameters(), done->trials(4).trainable_parameters());
  EXPECT_GE(done->winner_index(), 0);

  // Bad rates are caught by the CLI or named by the server.
  std::ostringstream bad_out, bad_err;
  args = {"--server", server, "sweep", "--depths", "1,head-only", "--lrs", "1e-3,fast",
          "--model", *model_uri_, "--train", "file://" + *dir_ + "/small.jsonl"};
  EXPECT_EQ(cli::RunCli(args, env, bad_out, bad_err), 2);
  EXPECT_NE(bad_err.str().find("--lrs"), std::string::npos) << bad_err.str();
  args[6] = "1e-3,1e-3";
  std::ostringstream dup_out, dup_err;
  EXPECT_NE(cli::RunCli(args, env, dup_out, dup_err), 0);
  EXPECT_NE(dup_err.str().find("learning_rates[1]"), std::string::npos) << dup_err.str();
  args[4] = "1";
  args[5] = "--lora-ranks";
  args[6] = "4";
  std::ostringstream rank_out, rank_err;
  EXPECT_NE(cli::RunCli(args, env, rank_out, rank_err), 0);
  EXPECT_NE(rank_err.str().find("lora_ranks"), std::string::npos) << rank_err.str();
}

// ListSweeps through the client library and the CLI: newest first over two
// pages, the state filter, and a bad page_token named in the error. Other
// tests of this suite share the server, so checks are about our sweeps'
// order among everything listed.
TEST_F(SweepE2ETest, ListSweepsPagesNewestFirstAndFiltersByState) {
  std::vector<std::string> ids;  // submit order; the last stays RUNNING
  for (int i = 0; i < 3; ++i) {
    v1::SweepSpec spec = Spec("large.jsonl", 50);
    spec.clear_freeze_depths();
    spec.add_freeze_depths(1);
    spec.set_include_head_only(true);
    auto sweep = client_->SubmitSweep(spec);
    ASSERT_TRUE(sweep.ok()) << sweep.status();
    ids.push_back(sweep->id());
    if (i < 2) {
      ASSERT_TRUE(client_->CancelSweep(sweep->id()).ok());
    }
  }

  // Two per page, by hand: at least two pages, the last without a token.
  std::vector<v1::Sweep> walked;
  v1::ListSweepsRequest request;
  request.set_page_size(2);
  int pages = 0;
  while (true) {
    auto page = client_->ListSweepsPage(request);
    ASSERT_TRUE(page.ok()) << page.status();
    ++pages;
    EXPECT_LE(page->sweeps_size(), 2);
    for (const v1::Sweep& s : page->sweeps()) walked.push_back(s);
    if (page->next_page_token().empty()) break;
    ASSERT_LT(pages, 100) << "page tokens do not advance";
    request.set_page_token(page->next_page_token());
  }
  EXPECT_GE(pages, 2);
  std::vector<std::string> ours;  // our sweeps in listed order
  for (size_t i = 0; i < walked.size(); ++i) {
    if (i > 0) {
      EXPECT_GE(Micros(walked[i - 1].create_time()), Micros(walked[i].create_time()))
          << "not newest first at " << i;
    }
    for (const std::string& id : ids) {
      if (walked[i].id() == id) ours.push_back(id);
    }
  }
  EXPECT_EQ(ours, std::vector<std::string>(ids.rbegin(), ids.rend()));
  // The client's page-following listing agrees with the walk.
  auto all = client_->ListSweeps({}, 2);
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), walked.size());
  for (size_t i = 0; i < walked.size(); ++i) EXPECT_EQ((*all)[i].id(), walked[i].id());
  auto limited = client_->ListSweeps({}, 2, 3);
  ASSERT_TRUE(limited.ok()) << limited.status();
  EXPECT_EQ(limited->size(), 3u);

  auto running = client_->ListSweeps({v1::SWEEP_STATE_RUNNING});
  ASSERT_TRUE(running.ok()) << running.status();
  auto cancelled = client_->ListSweeps({v1::SWEEP_STATE_CANCELLED});
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  auto has = [](const std::vector<v1::Sweep>& v, const std::string& id) {
    for (const v1::Sweep& s : v) {
      if (s.id() == id) return true;
    }
    return false;
  };
  for (const v1::Sweep& s : *running) EXPECT_EQ(s.state(), v1::SWEEP_STATE_RUNNING) << s.id();
  for (const v1::Sweep& s : *cancelled) EXPECT_EQ(s.state(), v1::SWEEP_STATE_CANCELLED) << s.id();
  EXPECT_TRUE(has(*running, ids[2]));
  EXPECT_FALSE(has(*running, ids[0]));
  EXPECT_TRUE(has(*cancelled, ids[0]));
  EXPECT_TRUE(has(*cancelled, ids[1]));
  EXPECT_FALSE(has(*cancelled, ids[2]));

  v1::ListSweepsRequest bad;
  bad.set_page_token("not-a-token");
  auto refused = client_->ListSweepsPage(bad);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << refused.status();
  EXPECT_NE(refused.status().message().find("page_token"), std::string::npos) << refused.status();

  // The CLI: JSON lines with -o json; the same table piped as on a terminal.
  const std::string server = "127.0.0.1:" + std::to_string(server_->port());
  cli::CliEnv env;
  std::ostringstream out, err;
  int rc = cli::RunCli({"--server", server, "sweep-list", "--state", "cancelled", "--page-size",
                        "1", "-o", "json"},
                       env, out, err);
  EXPECT_EQ(rc, 0) << err.str();
  std::istringstream lines(out.str());
  std::string line;
  std::vector<std::string> listed;
  while (std::getline(lines, line)) {
    nlohmann::json j = nlohmann::json::parse(line);  // throws on a non-JSON line
    EXPECT_EQ(j["state"], "SWEEP_STATE_CANCELLED") << line;
    listed.push_back(j["id"]);
  }
  EXPECT_NE(std::find(listed.begin(), listed.end(), ids[0]), listed.end()) << out.str();
  EXPECT_EQ(std::find(listed.begin(), listed.end(), ids[2]), listed.end()) << out.str();

  env.stdout_is_tty = true;
  std::ostringstream tty_out, tty_err;
  rc = cli::RunCli({"--server", server, "sweep-list", "--limit", "1"}, env, tty_out, tty_err);
  EXPECT_EQ(rc, 0) << tty_err.str();
  for (const char* column : {"ID", "STATE", "TRIALS", "WINNER", "BEST", "CREATED"}) {
    EXPECT_NE(tty_out.str().find(column), std::string::npos) << column << "\n" << tty_out.str();
  }
  EXPECT_NE(tty_out.str().find(ids[2] + "  RUNNING"), std::string::npos) << tty_out.str();
  EXPECT_NE(tty_out.str().find("/2"), std::string::npos) << tty_out.str();
  env.stdout_is_tty = false;
  std::ostringstream piped_out, piped_err;
  rc = cli::RunCli({"--server", server, "sweep-list", "--limit", "1"}, env, piped_out, piped_err);
  EXPECT_EQ(rc, 0) << piped_err.str();
  EXPECT_EQ(piped_out.str().substr(0, piped_out.str().find('\n')),
            tty_out.str().substr(0, tty_out.str().find('\n')));
  EXPECT_NE(piped_out.str().find(ids[2] + "  RUNNING"), std::string::npos) << piped_out.str();

  std::ostringstream bad_out, bad_err;
  rc = cli::RunCli({"--server", server, "sweep-list", "--state", "queued"}, env, bad_out, bad_err);
  EXPECT_EQ(rc, 2);
  EXPECT_NE(bad_err.str().find("--state"), std::string::npos) << bad_err.str();

  ASSERT_TRUE(client_->CancelSweep(ids[2]).ok());
}

}  // namespace
}  // namespace freezetune
