// The CLI's pure pieces: progress/eval/table formatting, EventPrinter, the
// argv parser, job flags, and the example job files.
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "client/src/cli_args.h"
#include "client/src/cli_format.h"
#include "client/src/cli_job_flags.h"

namespace freezetune::cli {
namespace {

TEST(FormatTest, ProgressBar) {
  EXPECT_EQ(FormatProgressBar(120, 300, absl::Seconds(42), 0.5312f, 4.1e-5f,
                              812.f),
            "[####------] 120/300 40% ETA 0:42 loss 0.5312 lr 4.1e-05 812 "
            "samples/s");
  EXPECT_EQ(FormatProgressBar(300, 300, absl::ZeroDuration(), 0.25f, 0.f, 0.f),
            "[##########] 300/300 100% ETA 0:00 loss 0.2500 lr 0 0 samples/s");
  // Unknown total, no ETA yet.
  EXPECT_EQ(FormatProgressBar(5, 0, std::nullopt, 1.f, 1e-3f, 10.4f, 4),
            "[----] 5/? loss 1.0000 lr 0.001 10 samples/s");
  // A step past the total does not overflow the bar.
  EXPECT_EQ(FormatProgressBar(350, 300, std::nullopt, 1.f, 1e-3f, 1.f, 4)
                .substr(0, 6),
            "[####]");
}

TEST(FormatTest, ProgressBarFitsTheTerminal) {
  auto bar = [](int columns) {
    return FormatProgressBar(120, 300, absl::Seconds(42), 0.5312f, 4.1e-5f, 812.f, 10, columns);
  };
  EXPECT_EQ(bar(200), "[####------] 120/300 40% ETA 0:42 loss 0.5312 lr 4.1e-05 812 samples/s");
  // Fields go first (samples/s, lr, ETA, percent, loss), then the bar shrinks.
  EXPECT_EQ(bar(60), "[####------] 120/300 40% ETA 0:42 loss 0.5312 lr 4.1e-05");
  EXPECT_EQ(bar(50), "[####------] 120/300 40% ETA 0:42 loss 0.5312");
  EXPECT_EQ(bar(40), "[####------] 120/300 40% loss 0.5312");
  EXPECT_EQ(bar(24), "[####------] 120/300");
  EXPECT_EQ(bar(16), "[##----] 120/300");
  EXPECT_EQ(bar(10), "120/300");
  for (int columns = 5; columns <= 90; ++columns) {
    EXPECT_LE(static_cast<int>(bar(columns).size()), columns) << columns;
  }
}

TEST(FormatTest, Sparkline) {
  EXPECT_EQ(Sparkline({}), "");
  EXPECT_EQ(Sparkline({3, 2, 1, 0}), "\u2588\u2586\u2583\u2581");
  EXPECT_EQ(Sparkline({1, 1}), "\u2584\u2584");
  // More values than cells: averaged into `width` cells, rising stays rising.
  std::vector<double> rising;
  for (int i = 0; i < 100; ++i) rising.push_back(i);
  const std::string line = Sparkline(rising, 10);
  EXPECT_EQ(line.size(), 10u * 3);  // ten 3-byte UTF-8 blocks
  EXPECT_EQ(line.substr(0, 3), "\u2581");
  EXPECT_EQ(line.substr(27), "\u2588");
}

TEST(FormatTest, AgeAndShortStateNames) {
  google::protobuf::Timestamp ts;
  const absl::Time now = absl::FromUnixSeconds(1700000000);
  EXPECT_EQ(FormatAge(ts, now), "-");
  ts.set_seconds(1700000000 - 2);
  EXPECT_EQ(FormatAge(ts, now), "just now");
  ts.set_seconds(1700000000 - 42);
  EXPECT_EQ(FormatAge(ts, now), "42s ago");
  ts.set_seconds(1700000000 - 300);
  EXPECT_EQ(FormatAge(ts, now), "5m ago");
  ts.set_seconds(1700000000 - 3 * 3600);
  EXPECT_EQ(FormatAge(ts, now), "3h ago");
  ts.set_seconds(1700000000 - 3 * 86400);
  EXPECT_EQ(FormatAge(ts, now), "3d ago");
  EXPECT_EQ(StateName(v1::SWEEP_STATE_SUCCEEDED), "SUCCEEDED");
  EXPECT_EQ(StateName(v1::TRIAL_STATE_STOPPED_EARLY), "STOPPED_EARLY");
}

TEST(FormatTest, ClockCountTimestamp) {
  EXPECT_EQ(FormatClock(absl::Seconds(42)), "0:42");
  EXPECT_EQ(FormatClock(absl::Seconds(725)), "12:05");
  EXPECT_EQ(FormatClock(absl::Seconds(3723)), "1:02:03");
  EXPECT_EQ(FormatClock(absl::Seconds(-5)), "0:00");
  EXPECT_EQ(FormatCount(0), "0");
  EXPECT_EQ(FormatCount(999), "999");
  EXPECT_EQ(FormatCount(1000), "1,000");
  EXPECT_EQ(FormatCount(109482240), "109,482,240");
  EXPECT_EQ(FormatCount(-1234567), "-1,234,567");
  google::protobuf::Timestamp ts;
  EXPECT_EQ(FormatTimestamp(ts), "-");
  ts.set_seconds(1700000000);
  EXPECT_EQ(FormatTimestamp(ts), "2023-11-14 22:13:20 UTC");
  EXPECT_EQ(StateName(v1::JOB_STATE_RUNNING), "RUNNING");
}

TEST(FormatTest, EtaFromObservedRate) {
  EtaEstimator eta;
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  EXPECT_FALSE(eta.Eta(100).has_value());
  eta.Observe(10, t0);
  EXPECT_FALSE(eta.Eta(100).has_value());  // one point gives no rate
  eta.Observe(20, t0 + absl::Seconds(10));
  ASSERT_TRUE(eta.Eta(100).has_value());
  EXPECT_EQ(*eta.Eta(100), absl::Seconds(80));  // 1 step/s, 80 left
  eta.Observe(60, t0 + absl::Seconds(20));     // now 2.5 steps/s
  EXPECT_EQ(*eta.Eta(100), absl::Seconds(16));
  EXPECT_EQ(*eta.Eta(50), absl::ZeroDuration());
}

TEST(FormatTest, EvalLine) {
  v1::EvalMetrics m;
  m.set_step(100);
  m.set_epoch(1.f);
  m.set_loss(0.48f);
  m.set_accuracy(0.781f);
  m.set_macro_f1(0.779f);
  EXPECT_EQ(FormatEvalLine(m),
            "eval step 100 epoch 1.00: loss 0.48 acc 0.781 macro-F1 0.779");
  m.set_mcc(0.5625f);
  EXPECT_EQ(FormatEvalLine(m),
            "eval step 100 epoch 1.00: loss 0.48 acc 0.781 macro-F1 0.779 mcc "
            "0.562");
  v1::EvalMetrics r;
  r.set_step(5);
  r.set_loss(0.25f);
  r.set_mse(0.25f);
  r.set_pearson(0.9f);
  r.set_spearman(0.875f);
  EXPECT_EQ(FormatEvalLine(r),
            "eval step 5 epoch 0.00: loss 0.25 mse 0.25 pearson 0.900 spearman "
            "0.875");
}

TEST(FormatTest, TableAlignsColumns) {
  EXPECT_EQ(FormatTable({{"ID", "STATE"}, {"job-1", "RUNNING"}, {"j", ""}}),
            "ID     STATE\njob-1  RUNNING\nj\n");
}

TEST(FormatTest, SummaryOfASucceededJob) {
  v1::Job job;
  job.set_state(v1::JOB_STATE_SUCCEEDED);
  v1::JobResult* r = job.mutable_result();
  r->set_steps(300);
  r->set_selection_metric("accuracy");
  r->mutable_best_eval()->set_step(200);
  r->mutable_best_eval()->set_epoch(2.f);
  r->mutable_best_eval()->set_loss(0.41f);
  r->mutable_best_eval()->set_accuracy(0.812f);
  r->mutable_best_eval()->set_macro_f1(0.809f);
  r->set_total_parameters(4000);
  r->set_trainable_parameters(1000);
  r->set_frozen_weights_verified(true);
  r->set_train_seconds(83.4);
  r->set_output_uri("file:///out/job-1");
  EXPECT_EQ(FormatSummary(job),
            "state                    SUCCEEDED\n"
            "steps                    300\n"
            "best eval                step 200 epoch 2.00: loss 0.41 acc 0.812 "
            "macro-F1 0.809 (by accuracy)\n"
            "parameters               1,000 trainable / 4,000 total (25.00%)\n"
            "frozen weights verified  yes (bit-identical)\n"
            "train time               1:23\n"
            "output                   file:///out/job-1\n");
  v1::Job failed;
  failed.set_state(v1::JOB_STATE_FAILED);
  failed.set_error_message("step 12: non-finite loss");
  EXPECT_EQ(FormatSummary(failed),
            "state  FAILED\nerror  step 12: non-finite loss\n");
}

TEST(FormatTest, SummaryHasLossAndMetricSparklines) {
  v1::Job job;
  job.set_state(v1::JOB_STATE_SUCCEEDED);
  job.mutable_result()->set_selection_metric("accuracy");
  Curves curves;
  curves.loss = {0.7, 0.6, 0.5, 0.4};
  for (float acc : {0.5f, 0.6f, 0.8f}) {
    v1::EvalMetrics e;
    e.set_accuracy(acc);
    curves.evals.push_back(e);
  }
  const std::string summary = FormatSummary(job, curves);
  EXPECT_NE(summary.find("train loss               \u2588\u2586\u2583\u2581 0.7 -> 0.4"),
            std::string::npos) << summary;
  EXPECT_NE(summary.find("eval accuracy            \u2581\u2583\u2588 0.5 -> 0.8"),
            std::string::npos) << summary;
}

TEST(FormatTest, JobListTable) {
  v1::Job j;
  j.set_id("job-1");
  j.set_state(v1::JOB_STATE_RUNNING);
  j.mutable_spec()->set_display_name("demo");
  j.mutable_progress()->set_step(120);
  j.mutable_progress()->set_total_steps(300);
  j.mutable_create_time()->set_seconds(1700000000);
  const absl::Time now = absl::FromUnixSeconds(1700000000 + 300);
  EXPECT_EQ(FormatJobList({j}, now),
            "ID     STATE    NAME  PROGRESS     CREATED\n"
            "job-1  RUNNING  demo  120/300 40%  5m ago\n");
  j.mutable_start_time()->set_seconds(1700000000 + 60);
  j.set_sweep_id("sweep-1");
  EXPECT_EQ(FormatJobList({j}, now, /*wide=*/true),
            "ID     STATE    NAME  PROGRESS     CREATED  BEST  SWEEP    TENANT  STARTED"
            "                  DURATION  OUTPUT\n"
            "job-1  RUNNING  demo  120/300 40%  5m ago   -     sweep-1  -       "
            "2023-11-14 22:14:20 UTC  4:00      -\n");
}

TEST(FormatTest, SweepListTable) {
  auto trial = [](const char* label, v1::TrialState state, bool has_best, double best) {
    v1::SweepTrial t;
    t.set_label(label);
    t.set_state(state);
    t.set_has_best(has_best);
    t.set_best_metric(best);
    return t;
  };
  // Running: 1 of 3 ended, best so far 0.8 (higher is better), no winner.
  v1::Sweep running;
  running.set_id("sweep-1");
  running.set_state(v1::SWEEP_STATE_RUNNING);
  running.set_selection_metric("accuracy");
  running.set_winner_index(-1);
  running.mutable_create_time()->set_seconds(1700000000);
  *running.add_trials() = trial("depth=0", v1::TRIAL_STATE_FINISHED, true, 0.7);
  *running.add_trials() = trial("depth=1", v1::TRIAL_STATE_RUNNING, true, 0.8);
  *running.add_trials() = trial("head-only", v1::TRIAL_STATE_PENDING, false, 0);
  // Succeeded, lower is better: the winner's metric, not the minimum of
  // the others (here the winner is also the minimum).
  v1::Sweep done;
  done.set_id("sweep-2");
  done.set_state(v1::SWEEP_STATE_SUCCEEDED);
  done.set_selection_metric("loss");
  done.set_lower_is_better(true);
  done.set_winner_index(1);
  done.mutable_create_time()->set_seconds(1700000100);
  *done.add_trials() = trial("depth=0", v1::TRIAL_STATE_FINISHED, true, 0.5);
  *done.add_trials() = trial("depth=2", v1::TRIAL_STATE_STOPPED_EARLY, true, 0.25);
  // Nothing evaluated yet.
  v1::Sweep fresh;
  fresh.set_id("sweep-3");
  fresh.set_state(v1::SWEEP_STATE_CANCELLED);
  fresh.set_winner_index(-1);
  *fresh.add_trials() = trial("depth=0", v1::TRIAL_STATE_CANCELLED, false, 0);
  *fresh.add_trials() = trial("depth=1", v1::TRIAL_STATE_PRUNED, false, 0);
  EXPECT_EQ(FormatSweepList({running, done, fresh}, absl::FromUnixSeconds(1700007200)),
            "ID       STATE      TRIALS  WINNER   BEST             CREATED\n"
            "sweep-1  RUNNING    1/3     -        accuracy 0.8000  2h ago\n"
            "sweep-2  SUCCEEDED  2/2     depth=2  loss 0.2500      118m ago\n"
            "sweep-3  CANCELLED  2/2     -        -                -\n");
}

v1::JobEvent Train(int64_t seq, int64_t step, int64_t t) {
  v1::JobEvent e;
  e.set_job_id("job-1");
  e.set_sequence(seq);
  e.mutable_time()->set_seconds(t);
  e.mutable_train()->set_step(step);
  e.mutable_train()->set_total_steps(100);
  e.mutable_train()->set_loss(0.5f);
  e.mutable_train()->set_learning_rate(1e-4f);
  e.mutable_train()->set_samples_per_second(100.f);
  return e;
}

TEST(EventPrinterTest, TtyRedrawsBarAndPrintsOtherEventsOnTheirOwnLine) {
  std::ostringstream out;
  EventPrinter p(out, EventPrinter::Mode::kTty);
  p.OnEvent(Train(1, 10, 1000));
  p.OnEvent(Train(2, 20, 1010));
  v1::JobEvent eval;
  eval.set_sequence(3);
  eval.mutable_eval()->set_step(20);
  eval.mutable_eval()->set_epoch(0.2f);
  eval.mutable_eval()->set_loss(0.5f);
  eval.mutable_eval()->set_accuracy(0.75f);
  eval.mutable_eval()->set_macro_f1(0.7f);
  p.OnEvent(eval);
  v1::JobEvent done;
  done.set_job_id("job-1");
  done.set_sequence(4);
  done.mutable_state_change()->set_state(v1::JOB_STATE_SUCCEEDED);
  p.OnEvent(done);
  p.Finish();
  const std::string bar2 =
      "[##--------] 20/100 20% ETA 1:20 loss 0.5000 lr 0.0001 100 samples/s";
  EXPECT_EQ(out.str(),
            "\r\033[K[#---------] 10/100 10% loss 0.5000 lr 0.0001 100 "
            "samples/s"
            "\r\033[K" + bar2 +
            "\r\033[Keval step 20 epoch 0.20: loss 0.5 acc 0.750 macro-F1 "
            "0.700\n" + bar2 +
            "\r\033[Kjob-1 SUCCEEDED\n" + bar2 + "\n");
  EXPECT_EQ(p.last_state(), v1::JOB_STATE_SUCCEEDED);
}

TEST(EventPrinterTest, JsonModeIsOneParsableLinePerEvent) {
  std::ostringstream out;
  EventPrinter p(out, EventPrinter::Mode::kJson);
  p.OnEvent(Train(1, 10, 1000));
  v1::JobEvent notice;
  notice.set_sequence(2);
  notice.mutable_notice()->set_message("newly initialised: classifier.weight");
  p.OnEvent(notice);
  v1::JobEvent failed;
  failed.set_sequence(3);
  failed.mutable_state_change()->set_state(v1::JOB_STATE_FAILED);
  failed.mutable_state_change()->set_message("boom");
  p.OnEvent(failed);
  p.Finish();
  std::vector<std::string> lines =
      absl::StrSplit(out.str(), '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 3u);
  for (size_t i = 0; i < lines.size(); ++i) {
    v1::JobEvent e;
    ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(lines[i], &e).ok())
        << lines[i];
    EXPECT_EQ(e.sequence(), static_cast<int64_t>(i + 1));
  }
  EXPECT_EQ(p.last_state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(p.last_message(), "boom");
}

TEST(ArgsTest, ParsesCommandFlagsAndPositionals) {
  absl::StatusOr<ParsedArgs> a =
      ParseArgs({"--server", "h:1", "watch", "job-1", "--after=3", "--json"});
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->command, "watch");
  EXPECT_EQ(a->positional, std::vector<std::string>{"job-1"});
  EXPECT_EQ(a->Get("server"), "h:1");
  EXPECT_EQ(a->Get("after"), "3");
  EXPECT_TRUE(a->Bool("json"));
  EXPECT_FALSE(a->Bool("tls"));

  absl::StatusOr<ParsedArgs> s = ParseArgs(
      {"submit", "-f", "x.json", "--rule", "freeze:a", "--rule=train:b"});
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->Get("file"), "x.json");
  EXPECT_EQ(s->GetAll("rule"), (std::vector<std::string>{"freeze:a", "train:b"}));
}

TEST(ArgsTest, RejectsMistakes) {
  EXPECT_FALSE(ParseArgs({"list", "--nope"}).ok());
  EXPECT_FALSE(ParseArgs({"list", "--limit"}).ok());            // no value
  EXPECT_FALSE(ParseArgs({"list", "--limit", "1", "--limit", "2"}).ok());
  EXPECT_FALSE(ParseArgs({"list", "--model", "m"}).ok());       // wrong command
  EXPECT_FALSE(ParseArgs({"list", "--json=maybe"}).ok());
  EXPECT_FALSE(ParseArgs({"frobnicate"}).ok());
  EXPECT_TRUE(ParseArgs({"help"}).ok());
  EXPECT_NE(UsageText().find("submit"), std::string::npos);
  EXPECT_NE(UsageText("plan").find("--rule"), std::string::npos);
}

TEST(ArgsTest, HelpShowsDefaultsAndTwoExamplesPerCommand) {
  for (const CommandDef& c : Commands()) {
    EXPECT_EQ(c.examples.size(), 2u) << c.name;
    if (std::string(c.name) == "help") continue;  // `help help` is the overview
    const std::string help = UsageText(c.name);
    EXPECT_NE(help.find("\nexamples:\n  " + c.examples[0] + "\n  " + c.examples[1] + "\n"),
              std::string::npos)
        << help;
  }
  // Every flag that takes a value and has a default says what it is.
  for (const char* flag : {"epochs", "batch-size", "lr", "weight-decay", "warmup-ratio",
                           "lr-schedule", "max-seq-length", "seed", "log-every", "eval-every",
                           "grad-accum", "max-grad-norm", "checkpoint-every", "early-stopping",
                           "selection-metric", "validation-split", "device", "priority",
                           "limit", "page-size", "timeout", "server", "after"}) {
    bool found = false;
    for (const FlagDef& f : AllFlags()) {
      if (std::string(f.name) != flag) continue;
      found = true;
      EXPECT_NE(std::string(f.help).find("default"), std::string::npos) << flag;
    }
    EXPECT_TRUE(found) << flag;
  }
  EXPECT_EQ(DidYouMean("sweep-lst", {"sweep-list", "sweep-get"}, ""),
            "; did you mean 'sweep-list'?");
  EXPECT_EQ(DidYouMean("xyz", {"list", "get"}, ""), "");
  EXPECT_EQ(FlagForField("job.hyperparameters.max_seq_length"), "max-seq-length");
  EXPECT_EQ(FlagForField("job.freeze.rules[3].pattern"), "rule");
  EXPECT_EQ(FlagForField("job.validation.text_field"), "text-field");
  EXPECT_EQ(FlagForField("sweep.job.hyperparameters.epochs"), "epochs");
  EXPECT_EQ(FlagForField("job.nothing"), "");
}

TEST(ArgsTest, ShortOutputFlagForms) {
  for (const char* form : {"-o", "-o=", "-o"}) {
    std::vector<std::string> argv = {"list"};
    if (std::string(form) == "-o=") {
      argv.push_back("-o=wide");
    } else {
      argv.push_back(form);
      argv.push_back("wide");
    }
    absl::StatusOr<ParsedArgs> a = ParseArgs(argv);
    ASSERT_TRUE(a.ok()) << a.status();
    EXPECT_EQ(a->Get("o"), "wide");
  }
  absl::StatusOr<ParsedArgs> joined = ParseArgs({"list", "-ojson"});
  ASSERT_TRUE(joined.ok());
  EXPECT_EQ(joined->Get("o"), "json");
}

TEST(JobFlagsTest, ParseRule) {
  absl::StatusOr<v1::FreezeRule> r = ParseRule("train:bert\\.pooler\\..*@0.5");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->action(), v1::FREEZE_ACTION_TRAIN);
  EXPECT_EQ(r->pattern(), "bert\\.pooler\\..*");
  EXPECT_FLOAT_EQ(r->lr_scale(), 0.5f);
  absl::StatusOr<v1::FreezeRule> at = ParseRule("freeze:a@b");
  ASSERT_TRUE(at.ok());
  EXPECT_EQ(at->pattern(), "a@b");  // '@' not followed by a number is pattern
  EXPECT_FALSE(at->has_lr_scale());
  EXPECT_FALSE(ParseRule("freeze:x@0.5").ok());  // lr_scale on a frozen rule
  EXPECT_FALSE(ParseRule("train:").ok());
  EXPECT_FALSE(ParseRule("thaw:x").ok());
}

TEST(JobFlagsTest, LoraFlagsAndOutputFormat) {
  absl::StatusOr<ParsedArgs> a = ParseArgs(
      {"submit", "--lora-targets", ".*\\.(query|value)", "--lora-rank", "4", "--lora-alpha", "16",
       "--lora-dropout", "0.1", "--lora-save", "classifier", "--lora-save", "bert\\.pooler",
       "--output-format", "peft-adapter"});
  ASSERT_TRUE(a.ok()) << a.status();
  absl::StatusOr<v1::FineTuneJob> job = BuildJob(*a);
  ASSERT_TRUE(job.ok()) << job.status();
  const v1::LoraSpec& lora = job->freeze().lora();
  EXPECT_EQ(lora.target_modules(), ".*\\.(query|value)");
  EXPECT_EQ(lora.rank(), 4);
  EXPECT_FLOAT_EQ(lora.alpha(), 16.0f);
  EXPECT_FLOAT_EQ(lora.dropout(), 0.1f);
  ASSERT_EQ(lora.modules_to_save_size(), 2);
  EXPECT_EQ(lora.modules_to_save(1), "bert\\.pooler");
  EXPECT_EQ(job->output_format(), v1::OUTPUT_FORMAT_PEFT_ADAPTER);

  absl::StatusOr<ParsedArgs> defaults = ParseArgs({"plan", "--model", "m", "--lora-targets", "x"});
  ASSERT_TRUE(defaults.ok()) << defaults.status();
  absl::StatusOr<v1::PlanFreezeRequest> plan = BuildPlanRequest(*defaults);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->freeze().lora().rank(), 8);
  EXPECT_FALSE(plan->freeze().lora().has_alpha());

  absl::StatusOr<ParsedArgs> orphan = ParseArgs({"submit", "--lora-rank", "4"});
  ASSERT_TRUE(orphan.ok());
  EXPECT_FALSE(BuildJob(*orphan).ok());
  absl::StatusOr<ParsedArgs> bad = ParseArgs({"submit", "--output-format", "onnx"});
  ASSERT_TRUE(bad.ok());
  EXPECT_FALSE(BuildJob(*bad).ok());
}

TEST(JobFlagsTest, MaskedLmTaskFlags) {
  absl::StatusOr<ParsedArgs> a = ParseArgs(
      {"submit", "--task", "mlm", "--mask-prob", "0.2", "--whole-word-masking", "--train",
       "corpus.txt", "--format", "text"});
  ASSERT_TRUE(a.ok()) << a.status();
  absl::StatusOr<v1::FineTuneJob> job = BuildJob(*a);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->task().type(), v1::TASK_TYPE_MASKED_LM);
  EXPECT_FLOAT_EQ(job->task().masked_lm().mask_probability(), 0.2f);
  EXPECT_TRUE(job->task().masked_lm().whole_word_masking());
  EXPECT_EQ(job->train().format(), v1::DATASET_FORMAT_TEXT);

  absl::StatusOr<ParsedArgs> plain = ParseArgs({"plan", "--model", "m", "--task", "mlm"});
  ASSERT_TRUE(plain.ok()) << plain.status();
  absl::StatusOr<v1::PlanFreezeRequest> plan = BuildPlanRequest(*plain);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->task().type(), v1::TASK_TYPE_MASKED_LM);
  EXPECT_FALSE(plan->task().has_masked_lm());  // server defaults apply

  absl::StatusOr<ParsedArgs> bad = ParseArgs({"submit", "--task", "ner"});
  ASSERT_TRUE(bad.ok());
  EXPECT_TRUE(absl::StartsWith(BuildJob(*bad).status().message(), "--task: "));
  absl::StatusOr<ParsedArgs> prob = ParseArgs({"submit", "--mask-prob", "lots"});
  ASSERT_TRUE(prob.ok());
  EXPECT_FALSE(BuildJob(*prob).ok());
  EXPECT_EQ(FlagForField("job.task.masked_lm.mask_probability"), "mask-prob");
  EXPECT_EQ(FlagForField("job.task"), "task");
}

TEST(JobFlagsTest, DeltaOutputAndBaseModel) {
  absl::StatusOr<ParsedArgs> a = ParseArgs(
      {"submit", "--model", "file:///d/delta", "--base-model", "file:///d/base", "--output-format",
       "delta"});
  ASSERT_TRUE(a.ok()) << a.status();
  absl::StatusOr<v1::FineTuneJob> job = BuildJob(*a);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->base_model_uri(), "file:///d/base");
  EXPECT_EQ(job->output_format(), v1::OUTPUT_FORMAT_DELTA);
  EXPECT_EQ(FlagForField("job.base_model_uri"), "base-model");
}

TEST(JobFlagsTest, RecipesAndStates) {
  v1::FreezeSpec spec;
  ASSERT_TRUE(ApplyFreezeRecipe("bottom:3", &spec).ok());
  EXPECT_EQ(spec.bottom().num_layers(), 3);
  ASSERT_TRUE(ApplyFreezeRecipe("head-only", &spec).ok());
  EXPECT_TRUE(spec.has_head_only());
  ASSERT_TRUE(ApplyFreezeRecipe("bias-only", &spec).ok());
  EXPECT_TRUE(spec.has_bias_only());
  ASSERT_TRUE(ApplyFreezeRecipe("none", &spec).ok());
  EXPECT_EQ(spec.recipe_case(), v1::FreezeSpec::RECIPE_NOT_SET);
  EXPECT_FALSE(ApplyFreezeRecipe("bottom:-1", &spec).ok());
  EXPECT_FALSE(ApplyFreezeRecipe("top:2", &spec).ok());

  absl::StatusOr<std::vector<v1::JobState>> st =
      ParseStates("running, Queued,JOB_STATE_FAILED");
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_EQ(*st, (std::vector<v1::JobState>{v1::JOB_STATE_RUNNING,
                                             v1::JOB_STATE_QUEUED,
                                             v1::JOB_STATE_FAILED}));
  EXPECT_FALSE(ParseStates("runing").ok());
  EXPECT_FALSE(ParseStates("unspecified").ok());

  absl::StatusOr<std::vector<v1::SweepState>> sweep_states =
      ParseSweepStates("running, Cancelled,SWEEP_STATE_FAILED");
  ASSERT_TRUE(sweep_states.ok()) << sweep_states.status();
  EXPECT_EQ(*sweep_states, (std::vector<v1::SweepState>{v1::SWEEP_STATE_RUNNING,
                                                        v1::SWEEP_STATE_CANCELLED,
                                                        v1::SWEEP_STATE_FAILED}));
  absl::Status queued = ParseSweepStates("queued").status();
  EXPECT_FALSE(queued.ok());
  EXPECT_NE(queued.message().find("--state"), std::string::npos) << queued;
  EXPECT_FALSE(ParseSweepStates("unspecified").ok());
}

TEST(JobFlagsTest, NumbersAreChecked) {
  absl::StatusOr<ParsedArgs> a = ParseArgs({"submit", "--epochs", "three"});
  ASSERT_TRUE(a.ok());
  absl::StatusOr<v1::FineTuneJob> job = BuildJob(*a);
  EXPECT_EQ(job.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(job.status().message(), "--epochs: expected an integer, got 'three'");
}

TEST(JobFlagsTest, PlanAcceptsAJobFile) {
  const std::string file =
      std::string(FREEZETUNE_SOURCE_DIR) + "/client/examples/regex_rules.json";
  absl::StatusOr<ParsedArgs> a =
      ParseArgs({"plan", "-f", file, "--model", "file:///m"});
  ASSERT_TRUE(a.ok());
  absl::StatusOr<v1::PlanFreezeRequest> req = BuildPlanRequest(*a);
  ASSERT_TRUE(req.ok()) << req.status();
  EXPECT_EQ(req->model_uri(), "file:///m");
  EXPECT_EQ(req->freeze().rules_size(), 3);
  EXPECT_EQ(req->task().num_labels(), 2);
  absl::StatusOr<ParsedArgs> no_model = ParseArgs({"plan"});
  EXPECT_FALSE(BuildPlanRequest(*no_model).ok());
}

TEST(ExamplesTest, EveryExampleJobParses) {
  const std::filesystem::path dir =
      std::filesystem::path(FREEZETUNE_SOURCE_DIR) / "client" / "examples";
  int parsed = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".json") continue;
    v1::FineTuneJob job;
    absl::Status s = ReadJsonFile(entry.path().string(), &job);
    ASSERT_TRUE(s.ok()) << s;
    EXPECT_EQ(job.train().format(), v1::DATASET_FORMAT_TSV) << entry.path();
    EXPECT_EQ(job.train().text_field(), "sentence") << entry.path();
    EXPECT_TRUE(job.model_uri().empty()) << "flags supply the model";
    EXPECT_TRUE(job.has_freeze()) << entry.path();
    ++parsed;
  }
  EXPECT_EQ(parsed, 5);
}

}  // namespace
}  // namespace freezetune::cli
