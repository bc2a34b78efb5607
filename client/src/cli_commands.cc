#include "client/src/cli_commands.h"

#include <memory>

#include "absl/strings/numbers.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "client/src/cli_args.h"
#include "client/src/cli_format.h"
#include "client/src/cli_job_flags.h"
#include "freezetune/client.h"

namespace freezetune::cli {
namespace {

constexpr int kOk = 0;
constexpr int kFailed = 1;
constexpr int kUsage = 2;

struct Ctx {
  const ParsedArgs& args;
  const Client& client;
  std::ostream& out;
  std::ostream& err;
  bool json;  // --json given
  bool tty;
};

// One line that says what went wrong, phrased for the common cases.
std::string Describe(const absl::Status& s, const std::string& target) {
  switch (s.code()) {
    case absl::StatusCode::kUnavailable:
      return absl::StrCat("cannot reach ", target, ": ", s.message());
    case absl::StatusCode::kDeadlineExceeded:
      return absl::StrCat(target, " did not answer in time: ", s.message());
    case absl::StatusCode::kUnauthenticated:
      return absl::StrCat("not authenticated (--token or $FREEZETUNE_TOKEN): ",
                          s.message());
    default:
      return absl::StrCat(absl::StatusCodeToString(s.code()), ": ",
                          s.message());
  }
}

int Fail(const Ctx& c, const absl::Status& s) {
  c.err << "freezetune: " << Describe(s, c.client.options().target) << "\n";
  return kFailed;
}

int Usage(std::ostream& err, const absl::Status& s) {
  err << "freezetune: " << s.message() << "\n";
  return kUsage;
}

// Follows a job to its end; see the exit-status contract in the header.
int FollowJob(const Ctx& c, const std::string& job_id, int64_t after) {
  const EventPrinter::Mode mode = (c.json || !c.tty)
                                      ? EventPrinter::Mode::kJson
                                      : EventPrinter::Mode::kTty;
  EventPrinter printer(c.out, mode);
  absl::Status st = c.client.Watch(job_id, after, [&](const v1::JobEvent& e) {
    printer.OnEvent(e);
    return true;
  });
  printer.Finish();
  if (!st.ok()) return Fail(c, st);

  v1::JobState state = printer.last_state();
  std::string message = printer.last_message();
  absl::StatusOr<v1::Job> job = c.client.Get(job_id);
  if (job.ok()) {
    state = job->state();
    if (!job->error_message().empty()) message = job->error_message();
    if (mode == EventPrinter::Mode::kTty) c.out << "\n" << FormatSummary(*job);
  }
  if (state == v1::JOB_STATE_SUCCEEDED) return kOk;
  if (!IsTerminal(state)) {
    c.err << "freezetune: watch of job " << job_id << " ended while it is "
          << StateName(state) << "\n";
    return kFailed;
  }
  c.err << "freezetune: job " << job_id << " " << StateName(state)
        << (message.empty() ? "" : ": ") << message << "\n";
  return kFailed;
}

absl::StatusOr<std::string> OneJobArg(const ParsedArgs& args) {
  if (args.positional.size() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(args.command, ": expected one JOB id"));
  }
  return args.positional[0];
}

int CmdSubmit(const Ctx& c) {
  if (!c.args.positional.empty()) {
    return Usage(c.err, absl::InvalidArgumentError(
                            "submit takes no positional arguments"));
  }
  absl::StatusOr<v1::FineTuneJob> spec = BuildJob(c.args);
  if (!spec.ok()) return Usage(c.err, spec.status());
  absl::StatusOr<v1::Job> job = c.client.Submit(*spec);
  if (!job.ok()) return Fail(c, job.status());
  if (!c.args.Bool("watch")) {
    if (c.json) {
      c.out << ToJsonLine(*job) << "\n";
    } else if (c.tty) {
      c.out << "submitted " << job->id() << " (" << StateName(job->state())
            << "); follow it with: freezetune watch " << job->id() << "\n";
    } else {
      c.out << job->id() << "\n";  // for JOB=$(freezetune submit ...)
    }
    return kOk;
  }
  if (!c.json && c.tty) {
    c.out << "submitted " << job->id() << " (" << StateName(job->state())
          << ")\n";
  }
  return FollowJob(c, job->id(), 0);
}

int CmdWatch(const Ctx& c) {
  absl::StatusOr<std::string> id = OneJobArg(c.args);
  if (!id.ok()) return Usage(c.err, id.status());
  int64_t after = 0;
  if (std::optional<std::string> a = c.args.Get("after")) {
    if (!absl::SimpleAtoi(*a, &after) || after < 0) {
      return Usage(c.err, absl::InvalidArgumentError(absl::StrCat(
                              "--after: expected a sequence >= 0, got '", *a,
                              "'")));
    }
  }
  return FollowJob(c, *id, after);
}

int CmdGet(const Ctx& c) {
  absl::StatusOr<std::string> id = OneJobArg(c.args);
  if (!id.ok()) return Usage(c.err, id.status());
  absl::StatusOr<v1::Job> job = c.client.Get(*id);
  if (!job.ok()) return Fail(c, job.status());
  c.out << (c.json ? ToJsonLine(*job) + "\n" : FormatJobDetails(*job));
  return kOk;
}

// --limit and --page-size of the list commands (0 when absent).
absl::Status ParsePaging(const ParsedArgs& args, int* limit, int* page_size) {
  for (auto [flag, target] : {std::pair<const char*, int*>{"limit", limit},
                              {"page-size", page_size}}) {
    std::optional<std::string> v = args.Get(flag);
    if (v && (!absl::SimpleAtoi(*v, target) || *target < 0)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", flag, ": expected a count, got '", *v, "'"));
    }
  }
  return absl::OkStatus();
}

int CmdList(const Ctx& c) {
  if (!c.args.positional.empty()) {
    return Usage(c.err,
                 absl::InvalidArgumentError("list takes no positional arguments"));
  }
  std::vector<v1::JobState> states;
  if (std::optional<std::string> s = c.args.Get("state")) {
    absl::StatusOr<std::vector<v1::JobState>> parsed = ParseStates(*s);
    if (!parsed.ok()) return Usage(c.err, parsed.status());
    states = *std::move(parsed);
  }
  int limit = 0, page_size = 0;
  if (absl::Status s = ParsePaging(c.args, &limit, &page_size); !s.ok()) return Usage(c.err, s);
  JobIterator it = c.client.List(states, page_size, limit);
  std::vector<v1::Job> jobs;
  v1::Job job;
  while (it.Next(&job)) {
    if (c.json) {
      c.out << ToJsonLine(job) << "\n";
    } else {
      jobs.push_back(job);
    }
  }
  if (!it.status().ok()) return Fail(c, it.status());
  if (!c.json) c.out << (jobs.empty() ? "no jobs\n" : FormatJobList(jobs));
  return kOk;
}

int CmdCancel(const Ctx& c) {
  absl::StatusOr<std::string> id = OneJobArg(c.args);
  if (!id.ok()) return Usage(c.err, id.status());
  absl::StatusOr<v1::Job> job = c.client.Cancel(*id);
  if (!job.ok()) return Fail(c, job.status());
  if (c.json) {
    c.out << ToJsonLine(*job) << "\n";
  } else {
    c.out << job->id() << ": " << StateName(job->state()) << "\n";
  }
  return kOk;
}

int CmdPlan(const Ctx& c) {
  if (!c.args.positional.empty()) {
    return Usage(c.err,
                 absl::InvalidArgumentError("plan takes no positional arguments"));
  }
  absl::StatusOr<v1::PlanFreezeRequest> req = BuildPlanRequest(c.args);
  if (!req.ok()) return Usage(c.err, req.status());
  absl::StatusOr<v1::PlanFreezeResponse> plan = c.client.PlanFreeze(*req);
  if (!plan.ok()) return Fail(c, plan.status());
  c.out << (c.json ? ToJsonLine(*plan) + "\n" : FormatPlan(*plan));
  return kOk;
}

// The sweep's table as aligned text, the winner marked with '*'.
std::string FormatSweepTable(const v1::Sweep& sweep) {
  std::string out = absl::StrCat("sweep ", sweep.id(), "  ", v1::SweepState_Name(sweep.state()),
                                 "  metric ", sweep.selection_metric(),
                                 sweep.lower_is_better() ? " (lower is better)" : "", "\n");
  absl::StrAppend(&out, absl::StrFormat("  %-12s %6s %12s %10s %8s %9s  %-14s %s\n", "candidate",
                                        "depth", "trainable", "best", "step", "wall s",
                                        "state", "job"));
  for (int i = 0; i < sweep.trials_size(); ++i) {
    const v1::SweepTrial& t = sweep.trials(i);
    std::string state = v1::TrialState_Name(t.state());
    if (absl::StartsWith(state, "TRIAL_STATE_")) state = state.substr(12);
    if (t.state() == v1::TRIAL_STATE_PRUNED) absl::StrAppend(&state, "@", t.pruned_at_step());
    absl::StrAppend(
        &out, absl::StrFormat("%s %-12s %6d %12d %10s %8s %9.1f  %-14s %s\n",
                              i == sweep.winner_index() ? "*" : " ", t.label(), t.frozen_depth(),
                              t.trainable_parameters(),
                              t.has_best() ? absl::StrFormat("%.4f", t.best_metric()) : "-",
                              t.has_best() ? absl::StrCat(t.best_step()) : "-", t.wall_seconds(),
                              absl::AsciiStrToLower(state), t.job_id()));
  }
  if (sweep.winner_index() >= 0) {
    absl::StrAppend(&out, "winner: ", sweep.trials(sweep.winner_index()).label(), " -> ",
                    sweep.output_uri(), "\n");
  }
  if (!sweep.error_message().empty()) absl::StrAppend(&out, "error: ", sweep.error_message(), "\n");
  return out;
}

// Follows a sweep to its end: JSON lines when piped or --json, else the table
// reprinted whenever it changes. 0 only when the sweep SUCCEEDED.
int FollowSweep(const Ctx& c, const std::string& sweep_id, int64_t after) {
  const bool json = c.json || !c.tty;
  absl::StatusOr<v1::Sweep> current = c.client.GetSweep(sweep_id);
  if (!current.ok()) return Fail(c, current.status());
  v1::Sweep sweep = *current;
  absl::Status st = c.client.WatchSweep(sweep_id, after, [&](const v1::SweepEvent& e) {
    if (json) {
      c.out << ToJsonLine(e) << "\n" << std::flush;
      if (e.has_result()) sweep = e.result();
      return true;
    }
    if (e.has_table()) sweep = e.table();
    if (e.has_result()) sweep = e.result();
    if (e.has_trial() && e.trial().index() < sweep.trials_size()) {
      *sweep.mutable_trials(e.trial().index()) = e.trial().trial();
    }
    c.out << "\n" << FormatSweepTable(sweep) << std::flush;
    return true;
  });
  if (!st.ok()) return Fail(c, st);
  if (sweep.state() == v1::SWEEP_STATE_SUCCEEDED) return kOk;
  c.err << "freezetune: sweep " << sweep_id << " " << v1::SweepState_Name(sweep.state())
        << (sweep.error_message().empty() ? "" : ": ") << sweep.error_message() << "\n";
  return kFailed;
}

int CmdSweep(const Ctx& c) {
  if (!c.args.positional.empty()) {
    return Usage(c.err, absl::InvalidArgumentError("sweep takes no positional arguments"));
  }
  std::optional<std::string> depths = c.args.Get("depths");
  if (!depths.has_value()) {
    return Usage(c.err, absl::InvalidArgumentError(
                            "sweep: --depths required, e.g. --depths 0,1,2,head-only"));
  }
  absl::StatusOr<v1::FineTuneJob> job = BuildJob(c.args);
  if (!job.ok()) return Usage(c.err, job.status());
  v1::SweepSpec spec;
  *spec.mutable_job() = *job;
  spec.mutable_job()->clear_freeze();
  spec.set_output_uri(job->output_uri());
  spec.mutable_job()->clear_output_uri();
  spec.set_display_name(job->display_name());
  spec.set_selection_metric(c.args.Get("sweep-metric").value_or(""));
  for (absl::string_view part : absl::StrSplit(*depths, ',', absl::SkipWhitespace())) {
    part = absl::StripAsciiWhitespace(part);
    int n;
    if (part == "head-only") {
      spec.set_include_head_only(true);
    } else if (absl::SimpleAtoi(part, &n) && n >= 0) {
      spec.add_freeze_depths(n);
    } else {
      return Usage(c.err, absl::InvalidArgumentError(absl::StrCat(
                              "--depths: expected N >= 0 or head-only, got '", part, "'")));
    }
  }
  if (std::optional<std::string> rungs = c.args.Get("rungs"); rungs.has_value()) {
    v1::SuccessiveHalving* halving = spec.mutable_successive_halving();
    for (absl::string_view part : absl::StrSplit(*rungs, ',', absl::SkipWhitespace())) {
      int64_t step;
      if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(part), &step)) {
        return Usage(c.err, absl::InvalidArgumentError(
                                absl::StrCat("--rungs: expected steps N,N,..., got '", part, "'")));
      }
      halving->add_rung_steps(step);
    }
    if (std::optional<std::string> factor = c.args.Get("reduction-factor"); factor.has_value()) {
      int n;
      if (!absl::SimpleAtoi(*factor, &n)) {
        return Usage(c.err, absl::InvalidArgumentError(
                                absl::StrCat("--reduction-factor: expected N, got '", *factor, "'")));
      }
      halving->set_reduction_factor(n);
    }
  } else if (c.args.Get("reduction-factor").has_value()) {
    return Usage(c.err, absl::InvalidArgumentError("--reduction-factor needs --rungs"));
  }
  absl::StatusOr<v1::Sweep> sweep = c.client.SubmitSweep(spec);
  if (!sweep.ok()) return Fail(c, sweep.status());
  if (!c.args.Bool("watch")) {
    if (c.json) {
      c.out << ToJsonLine(*sweep) << "\n";
    } else if (c.tty) {
      c.out << FormatSweepTable(*sweep)
            << "follow it with: freezetune sweep-watch " << sweep->id() << "\n";
    } else {
      c.out << sweep->id() << "\n";
    }
    return kOk;
  }
  return FollowSweep(c, sweep->id(), 0);
}

int CmdSweepGet(const Ctx& c) {
  if (c.args.positional.size() != 1) {
    return Usage(c.err, absl::InvalidArgumentError(absl::StrCat(c.args.command,
                                                                ": expected one SWEEP id")));
  }
  absl::StatusOr<v1::Sweep> sweep = c.args.command == "sweep-cancel"
                                        ? c.client.CancelSweep(c.args.positional[0])
                                        : c.client.GetSweep(c.args.positional[0]);
  if (!sweep.ok()) return Fail(c, sweep.status());
  c.out << (c.json ? ToJsonLine(*sweep) + "\n" : FormatSweepTable(*sweep));
  return kOk;
}

int CmdSweepWatch(const Ctx& c) {
  if (c.args.positional.size() != 1) {
    return Usage(c.err, absl::InvalidArgumentError("sweep-watch: expected one SWEEP id"));
  }
  int64_t after = 0;
  if (std::optional<std::string> a = c.args.Get("after")) {
    if (!absl::SimpleAtoi(*a, &after) || after < 0) {
      return Usage(c.err, absl::InvalidArgumentError(
                              absl::StrCat("--after: expected a sequence >= 0, got '", *a, "'")));
    }
  }
  return FollowSweep(c, c.args.positional[0], after);
}

// Sweeps newest first: a table on a terminal; JSON lines (one Sweep each)
// when stdout is not a terminal or with --json.
int CmdSweepList(const Ctx& c) {
  if (!c.args.positional.empty()) {
    return Usage(c.err, absl::InvalidArgumentError("sweep-list takes no positional arguments"));
  }
  std::vector<v1::SweepState> states;
  if (std::optional<std::string> s = c.args.Get("state")) {
    absl::StatusOr<std::vector<v1::SweepState>> parsed = ParseSweepStates(*s);
    if (!parsed.ok()) return Usage(c.err, parsed.status());
    states = *std::move(parsed);
  }
  int limit = 0, page_size = 0;
  if (absl::Status s = ParsePaging(c.args, &limit, &page_size); !s.ok()) return Usage(c.err, s);
  absl::StatusOr<std::vector<v1::Sweep>> sweeps = c.client.ListSweeps(states, page_size, limit);
  if (!sweeps.ok()) return Fail(c, sweeps.status());
  if (c.json || !c.tty) {
    for (const v1::Sweep& sweep : *sweeps) c.out << ToJsonLine(sweep) << "\n";
  } else {
    c.out << (sweeps->empty() ? "no sweeps\n" : FormatSweepList(*sweeps));
  }
  return kOk;
}

}  // namespace

int RunCli(const std::vector<std::string>& argv, const CliEnv& env,
           std::ostream& out, std::ostream& err) {
  absl::StatusOr<ParsedArgs> parsed = ParseArgs(argv);
  if (!parsed.ok()) return Usage(err, parsed.status());
  const ParsedArgs& args = *parsed;
  if (args.command.empty() || args.command == "help" || args.Bool("help")) {
    std::string topic = args.command == "help" && !args.positional.empty()
                            ? args.positional[0]
                            : args.command;
    if (!topic.empty() && topic != "help" && FindCommand(topic) == nullptr) {
      return Usage(err, absl::InvalidArgumentError(
                            absl::StrCat("unknown command '", topic, "'")));
    }
    // A bare `freezetune` is a usage error; asking for help is not.
    if (args.command.empty() && !args.Bool("help")) {
      err << UsageText();
      return kUsage;
    }
    out << UsageText(topic);
    return kOk;
  }

  ClientOptions opts;
  opts.target = args.Get("server").value_or(
      env.server.empty() ? opts.target : env.server);
  opts.token = args.Get("token").value_or(env.token);
  opts.tls = args.Bool("tls");
  opts.ca_cert_file = args.Get("ca-cert").value_or("");
  opts.client_cert_file = args.Get("cert").value_or("");
  opts.client_key_file = args.Get("key").value_or("");
  if (std::optional<std::string> t = args.Get("timeout")) {
    double secs;
    if (!absl::SimpleAtod(*t, &secs) || secs <= 0) {
      return Usage(err, absl::InvalidArgumentError(absl::StrCat(
                            "--timeout: expected seconds > 0, got '", *t, "'")));
    }
    opts.default_deadline = absl::Seconds(secs);
  }
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(opts);
  if (!client.ok()) {
    err << "freezetune: " << client.status().message() << "\n";
    return kFailed;
  }
  Ctx c{args, **client, out, err, args.Bool("json"), env.stdout_is_tty};
  if (args.command == "submit") return CmdSubmit(c);
  if (args.command == "watch") return CmdWatch(c);
  if (args.command == "get") return CmdGet(c);
  if (args.command == "list") return CmdList(c);
  if (args.command == "cancel") return CmdCancel(c);
  if (args.command == "plan") return CmdPlan(c);
  if (args.command == "sweep") return CmdSweep(c);
  if (args.command == "sweep-get" || args.command == "sweep-cancel") return CmdSweepGet(c);
  if (args.command == "sweep-watch") return CmdSweepWatch(c);
  if (args.command == "sweep-list") return CmdSweepList(c);
  return Usage(err, absl::InvalidArgumentError(
                        absl::StrCat("unknown command '", args.command, "'")));
}

}  // namespace freezetune::cli
