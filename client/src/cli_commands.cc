#include "client/src/cli_commands.h"

#include <algorithm>
#include <atomic>
#include <memory>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "client/src/cli_args.h"
#include "client/src/cli_format.h"
#include "client/src/cli_job_flags.h"
#include "client/src/cli_report.h"
#include "freezetune/client.h"
#include "freezetune/version.h"

namespace freezetune::cli {
namespace {

constexpr int kOk = 0;
constexpr int kFailed = 1;
constexpr int kUsage = 2;

// -o: what a command prints. kDefault: the command's own default.
enum class Output { kDefault, kTable, kJson, kName, kWide };

struct Ctx {
  const ParsedArgs& args;
  const Client& client;
  std::ostream& out;
  std::ostream& err;
  const CliEnv& env;
  Output output;
  bool tty;

  bool json() const { return output == Output::kJson; }
  bool name() const { return output == Output::kName; }
  bool wide() const { return output == Output::kWide; }
};

// "--max-seq-length (job.hyperparameters.max_seq_length): must be ..." when
// an INVALID_ARGUMENT message starts with a field path a CLI flag sets.
std::string WithFlagHint(absl::string_view message) {
  const size_t colon = message.find(": ");
  if (colon == absl::string_view::npos) return std::string(message);
  absl::string_view path = message.substr(0, colon);
  std::string flag = FlagForField(path);
  if (flag.empty()) return std::string(message);
  return absl::StrCat("--", flag, " (", path, ")", message.substr(colon));
}

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
    case absl::StatusCode::kInvalidArgument:
      return absl::StrCat("INVALID_ARGUMENT: ", WithFlagHint(s.message()));
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

// -o (or --json) checked against what the command prints.
absl::StatusOr<Output> ParseOutput(const ParsedArgs& args, const std::vector<Output>& allowed) {
  Output o = Output::kDefault;
  std::optional<std::string> v = args.Get("o");
  if (args.Bool("json")) {
    if (v && *v != "json") return absl::InvalidArgumentError("--json conflicts with -o " + *v);
    o = Output::kJson;
  } else if (v) {
    const std::string l = absl::AsciiStrToLower(*v);
    if (l == "table") o = Output::kTable;
    else if (l == "json") o = Output::kJson;
    else if (l == "name") o = Output::kName;
    else if (l == "wide") o = Output::kWide;
    else o = Output::kDefault;
    if (o == Output::kDefault ||
        std::find(allowed.begin(), allowed.end(), o) == allowed.end()) {
      std::vector<std::string> names;
      for (Output a : allowed) {
        names.push_back(a == Output::kTable ? "table"
                        : a == Output::kJson ? "json"
                        : a == Output::kName ? "name" : "wide");
      }
      return absl::InvalidArgumentError(absl::StrCat(
          "-o: '", args.command, "' prints ", absl::StrJoin(names, ", "), "; got '", *v, "'"));
    }
  }
  return o;
}

const std::vector<Output> kResourceOutputs = {Output::kTable, Output::kJson, Output::kName,
                                              Output::kWide};
const std::vector<Output> kStreamOutputs = {Output::kTable, Output::kJson};

// Ctrl-C while following: say how to pick it up again, and exit 130.
void ArmInterrupt(const Ctx& c, const std::string& what, const std::string& id,
                  const std::shared_ptr<std::atomic<int64_t>>& last_sequence) {
  if (!c.env.on_interrupt) return;
  const bool sweep = what == "sweep";
  c.env.on_interrupt([=] {
    return absl::StrCat("detached; ", id, " keeps running. Follow: freezetune ",
                        sweep ? "sweep-watch " : "watch ", id, " --after ",
                        last_sequence->load(), ". Stop: freezetune ",
                        sweep ? "sweep-cancel " : "cancel ", id);
  });
}

// Follows a job to its end; see the exit-status contract in the header.
int FollowJob(const Ctx& c, const std::string& job_id, int64_t after) {
  EventPrinter::Mode mode = EventPrinter::Mode::kTty;
  if (c.json() || (c.output == Output::kDefault && !c.tty)) {
    mode = EventPrinter::Mode::kJson;
  } else if (!c.tty) {
    mode = EventPrinter::Mode::kText;
  }
  EventPrinter printer(c.out, mode, c.env.columns);
  auto last = std::make_shared<std::atomic<int64_t>>(after);
  ArmInterrupt(c, "job", job_id, last);
  absl::Status st = c.client.Watch(job_id, after, [&](const v1::JobEvent& e) {
    printer.OnEvent(e);
    last->store(e.sequence());
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
    if (mode != EventPrinter::Mode::kJson) {
      c.out << "\n" << FormatSummary(*job, printer.curves());
    }
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

absl::StatusOr<std::string> OneIdArg(const ParsedArgs& args, absl::string_view what) {
  if (args.positional.size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(args.command, ": expected one ", what, " id"));
  }
  return args.positional[0];
}

absl::Status NoPositional(const ParsedArgs& args) {
  if (args.positional.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(args.command, " takes no positional arguments (got '", args.positional[0],
                   "')"));
}

absl::StatusOr<int64_t> AfterFlag(const ParsedArgs& args) {
  int64_t after = 0;
  if (std::optional<std::string> a = args.Get("after")) {
    if (!absl::SimpleAtoi(*a, &after) || after < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--after: expected a sequence >= 0, got '", *a, "'"));
    }
  }
  return after;
}

int CmdSubmit(const Ctx& c) {
  if (absl::Status s = NoPositional(c.args); !s.ok()) return Usage(c.err, s);
  absl::StatusOr<v1::FineTuneJob> spec = BuildJob(c.args);
  if (!spec.ok()) return Usage(c.err, spec.status());
  absl::StatusOr<v1::Job> job = c.client.Submit(*spec);
  if (!job.ok()) return Fail(c, job.status());
  if (!c.args.Bool("watch")) {
    if (c.json()) {
      c.out << ToJsonLine(*job) << "\n";
    } else if (c.name() || (c.output == Output::kDefault && !c.tty)) {
      c.out << job->id() << "\n";  // for JOB=$(freezetune submit ...)
    } else {
      c.out << "submitted " << job->id() << " (" << StateName(job->state())
            << "); follow it with: freezetune watch " << job->id() << "\n";
    }
    return kOk;
  }
  if (!c.json() && (c.tty || c.output != Output::kDefault)) {
    c.out << "submitted " << job->id() << " (" << StateName(job->state()) << ")\n";
  }
  return FollowJob(c, job->id(), 0);
}

int CmdWatch(const Ctx& c) {
  absl::StatusOr<std::string> id = OneIdArg(c.args, "JOB");
  if (!id.ok()) return Usage(c.err, id.status());
  absl::StatusOr<int64_t> after = AfterFlag(c.args);
  if (!after.ok()) return Usage(c.err, after.status());
  return FollowJob(c, *id, *after);
}

int CmdGet(const Ctx& c) {
  absl::StatusOr<std::string> id = OneIdArg(c.args, "JOB");
  if (!id.ok()) return Usage(c.err, id.status());
  absl::StatusOr<v1::Job> job = c.client.Get(*id);
  if (!job.ok()) return Fail(c, job.status());
  if (c.json()) {
    c.out << ToJsonLine(*job) << "\n";
  } else if (c.name()) {
    c.out << job->id() << "\n";
  } else {
    c.out << FormatJobDetails(*job);
    if (c.wide()) c.out << "spec  " << ToJsonLine(job->spec()) << "\n";
  }
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

// Jobs newest first, the same whether or not stdout is a terminal.
int CmdList(const Ctx& c) {
  if (absl::Status s = NoPositional(c.args); !s.ok()) return Usage(c.err, s);
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
    if (c.json()) {
      c.out << ToJsonLine(job) << "\n";
    } else if (c.name()) {
      c.out << job.id() << "\n";
    } else {
      jobs.push_back(job);
    }
  }
  if (!it.status().ok()) return Fail(c, it.status());
  if (!c.json() && !c.name()) {
    c.out << (jobs.empty() ? "no jobs\n" : FormatJobList(jobs, absl::Now(), c.wide()));
  }
  return kOk;
}

// "cancelling job-X (was RUNNING)"; with --wait, then blocks until the job
// has ended and says how.
int CmdCancel(const Ctx& c) {
  absl::StatusOr<std::string> id = OneIdArg(c.args, "JOB");
  if (!id.ok()) return Usage(c.err, id.status());
  absl::StatusOr<v1::Job> before = c.client.Get(*id);
  if (!before.ok()) return Fail(c, before.status());
  absl::StatusOr<v1::Job> job = c.client.Cancel(*id);
  if (!job.ok()) return Fail(c, job.status());
  if (c.json()) {
    c.out << ToJsonLine(*job) << "\n";
  } else if (c.name()) {
    c.out << job->id() << "\n";
  } else {
    c.out << (IsTerminal(job->state()) ? "cancelled " : "cancelling ") << job->id() << " (was "
          << StateName(before->state()) << ")\n";
  }
  c.out << std::flush;
  if (!c.args.Bool("wait") || IsTerminal(job->state())) return kOk;
  absl::Status st = c.client.Watch(*id, job->last_sequence(),
                                   [](const v1::JobEvent&) { return true; });
  if (!st.ok()) return Fail(c, st);
  absl::StatusOr<v1::Job> after = c.client.Get(*id);
  if (!after.ok()) return Fail(c, after.status());
  if (!c.json() && !c.name()) c.out << after->id() << " " << StateName(after->state()) << "\n";
  return IsTerminal(after->state()) ? kOk : kFailed;
}

int CmdPlan(const Ctx& c) {
  if (absl::Status s = NoPositional(c.args); !s.ok()) return Usage(c.err, s);
  absl::StatusOr<v1::PlanFreezeRequest> req = BuildPlanRequest(c.args);
  if (!req.ok()) return Usage(c.err, req.status());
  absl::StatusOr<v1::PlanFreezeResponse> plan = c.client.PlanFreeze(*req);
  if (!plan.ok()) return Fail(c, plan.status());
  if (c.json()) {
    c.out << ToJsonLine(*plan) << "\n";
  } else if (c.name()) {
    // The parameters that will train, one per line.
    for (const v1::ParameterPlan& p : plan->parameters()) {
      if (p.trainable()) c.out << p.name() << "\n";
    }
  } else {
    c.out << FormatPlan(*plan);
  }
  return kOk;
}

// Prints a sweep as -o asks.
void PrintSweep(const Ctx& c, const v1::Sweep& sweep) {
  if (c.json()) {
    c.out << ToJsonLine(sweep) << "\n";
  } else if (c.name()) {
    c.out << sweep.id() << "\n";
  } else {
    c.out << FormatSweepTable(sweep);
  }
}

// Follows a sweep to its end: JSON lines with -o json (the default when
// piped), else the table, redrawn in place on a terminal (reprinted when
// not). 0 only when the sweep SUCCEEDED.
int FollowSweep(const Ctx& c, const std::string& sweep_id, int64_t after) {
  const bool json = c.json() || (c.output == Output::kDefault && !c.tty);
  absl::StatusOr<v1::Sweep> current = c.client.GetSweep(sweep_id);
  if (!current.ok()) return Fail(c, current.status());
  v1::Sweep sweep = *current;
  auto last = std::make_shared<std::atomic<int64_t>>(after);
  ArmInterrupt(c, "sweep", sweep_id, last);
  int shown_lines = 0;  // lines of the table on screen, to redraw over
  absl::Status st = c.client.WatchSweep(sweep_id, after, [&](const v1::SweepEvent& e) {
    last->store(e.sequence());
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
    const std::string table = FormatSweepTable(sweep);
    if (c.tty) {
      // Back to the table's first line and clear to the end of the screen.
      if (shown_lines > 0) c.out << "\033[" << shown_lines << "F\033[J";
      shown_lines = static_cast<int>(std::count(table.begin(), table.end(), '\n'));
      c.out << table << std::flush;
    } else {
      c.out << "\n" << table << std::flush;
    }
    return true;
  });
  if (!st.ok()) return Fail(c, st);
  if (sweep.state() == v1::SWEEP_STATE_SUCCEEDED) return kOk;
  c.err << "freezetune: sweep " << sweep_id << " " << StateName(sweep.state())
        << (sweep.error_message().empty() ? "" : ": ") << sweep.error_message() << "\n";
  return kFailed;
}

int CmdSweep(const Ctx& c) {
  if (absl::Status s = NoPositional(c.args); !s.ok()) return Usage(c.err, s);
  absl::StatusOr<v1::FineTuneJob> job = BuildJob(c.args);
  if (!job.ok()) return Usage(c.err, job.status());
  // A LoRA block (--lora-targets or -f) is one more candidate, after the
  // depths: "freeze the bottom N" against "LoRA on the attention".
  const bool lora_candidate = job->freeze().has_lora();
  std::optional<std::string> depths = c.args.Get("depths");
  if (!depths.has_value() && !lora_candidate) {
    return Usage(c.err, absl::InvalidArgumentError(
                            "sweep: --depths required, e.g. --depths 0,1,2,head-only"));
  }
  v1::SweepSpec spec;
  *spec.mutable_job() = *job;
  if (lora_candidate) *spec.add_specs() = job->freeze();
  spec.mutable_job()->clear_freeze();
  spec.set_output_uri(job->output_uri());
  spec.mutable_job()->clear_output_uri();
  // The sweep calls back when it ends; its trials do not.
  if (job->has_notify()) *spec.mutable_notify() = job->notify();
  spec.mutable_job()->clear_notify();
  spec.set_display_name(job->display_name());
  spec.set_selection_metric(c.args.Get("sweep-metric").value_or(""));
  for (absl::string_view part :
       absl::StrSplit(depths.value_or(""), ',', absl::SkipWhitespace())) {
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
  // Range and duplicate checks are the server's (errors name the field).
  for (absl::string_view part :
       absl::StrSplit(c.args.Get("lrs").value_or(""), ',', absl::SkipWhitespace())) {
    float lr;
    if (!absl::SimpleAtof(absl::StripAsciiWhitespace(part), &lr)) {
      return Usage(c.err, absl::InvalidArgumentError(
                              absl::StrCat("--lrs: expected numbers LR,LR,..., got '", part, "'")));
    }
    spec.add_learning_rates(lr);
  }
  for (absl::string_view part :
       absl::StrSplit(c.args.Get("lora-ranks").value_or(""), ',', absl::SkipWhitespace())) {
    int rank;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(part), &rank)) {
      return Usage(c.err, absl::InvalidArgumentError(
                              absl::StrCat("--lora-ranks: expected integers R,R,..., got '", part,
                                           "'")));
    }
    spec.add_lora_ranks(rank);
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
    if (c.output == Output::kDefault && !c.tty) {
      c.out << sweep->id() << "\n";
      return kOk;
    }
    PrintSweep(c, *sweep);
    if (!c.json() && !c.name()) {
      c.out << "follow it with: freezetune sweep-watch " << sweep->id() << "\n";
    }
    return kOk;
  }
  return FollowSweep(c, sweep->id(), 0);
}

int CmdSweepGet(const Ctx& c) {
  absl::StatusOr<std::string> id = OneIdArg(c.args, "SWEEP");
  if (!id.ok()) return Usage(c.err, id.status());
  absl::StatusOr<v1::Sweep> sweep = c.client.GetSweep(*id);
  if (!sweep.ok()) return Fail(c, sweep.status());
  PrintSweep(c, *sweep);
  return kOk;
}

// "cancelling sweep-X (was RUNNING)"; --wait blocks until it has ended.
int CmdSweepCancel(const Ctx& c) {
  absl::StatusOr<std::string> id = OneIdArg(c.args, "SWEEP");
  if (!id.ok()) return Usage(c.err, id.status());
  absl::StatusOr<v1::Sweep> before = c.client.GetSweep(*id);
  if (!before.ok()) return Fail(c, before.status());
  absl::StatusOr<v1::Sweep> sweep = c.client.CancelSweep(*id);
  if (!sweep.ok()) return Fail(c, sweep.status());
  const bool ended = sweep->state() != v1::SWEEP_STATE_RUNNING;
  if (c.json() || c.name()) {
    PrintSweep(c, *sweep);
  } else {
    c.out << (ended ? "cancelled " : "cancelling ") << sweep->id() << " (was "
          << StateName(before->state()) << ")\n";
  }
  c.out << std::flush;
  if (!c.args.Bool("wait") || ended) return kOk;
  v1::SweepState state = sweep->state();
  absl::Status st = c.client.WatchSweep(*id, sweep->last_sequence(), [&](const v1::SweepEvent& e) {
    if (e.has_result()) state = e.result().state();
    return true;
  });
  if (!st.ok()) return Fail(c, st);
  if (!c.json() && !c.name()) c.out << *id << " " << StateName(state) << "\n";
  return state != v1::SWEEP_STATE_RUNNING ? kOk : kFailed;
}

int CmdSweepWatch(const Ctx& c) {
  absl::StatusOr<std::string> id = OneIdArg(c.args, "SWEEP");
  if (!id.ok()) return Usage(c.err, id.status());
  absl::StatusOr<int64_t> after = AfterFlag(c.args);
  if (!after.ok()) return Usage(c.err, after.status());
  return FollowSweep(c, *id, *after);
}

// Sweeps newest first, the same whether or not stdout is a terminal.
int CmdSweepList(const Ctx& c) {
  if (absl::Status s = NoPositional(c.args); !s.ok()) return Usage(c.err, s);
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
  if (c.json() || c.name()) {
    for (const v1::Sweep& sweep : *sweeps) PrintSweep(c, sweep);
  } else {
    c.out << (sweeps->empty() ? "no sweeps\n" : FormatSweepList(*sweeps, absl::Now(), c.wide()));
  }
  return kOk;
}

int CmdReport(const Ctx& c) {
  absl::StatusOr<std::string> id = OneIdArg(c.args, "JOB or SWEEP");
  if (!id.ok()) return Usage(c.err, id.status());
  std::string path = c.args.Get("o").value_or(absl::StrCat(*id, ".html"));
  if (!absl::EndsWith(path, ".svg") && !absl::EndsWith(path, ".html")) {
    return Usage(c.err, absl::InvalidArgumentError(
                            absl::StrCat("report: -o takes FILE.svg or FILE.html, got '", path,
                                         "'")));
  }
  absl::Status st = WriteReport(c.client, *id, path);
  if (!st.ok()) return Fail(c, st);
  c.out << "wrote " << path << "\n";
  return kOk;
}

// --server http://host:port and https://host:port (TLS) are accepted too.
void ApplyServer(const std::string& flag, ClientOptions* opts) {
  absl::string_view server = flag;
  for (auto [scheme, tls] : {std::pair<const char*, bool>{"http://", false}, {"https://", true}}) {
    if (absl::ConsumePrefix(&server, scheme)) {
      if (tls) opts->tls = true;
      while (absl::ConsumeSuffix(&server, "/")) {
      }
    }
  }
  opts->target = std::string(server);
}

}  // namespace

int RunCli(const std::vector<std::string>& argv, const CliEnv& env,
           std::ostream& out, std::ostream& err) {
  absl::StatusOr<ParsedArgs> parsed = ParseArgs(argv);
  if (!parsed.ok()) return Usage(err, parsed.status());
  const ParsedArgs& args = *parsed;
  if (args.Bool("version") || args.command == "version") {
    out << "freezetune " << FREEZETUNE_VERSION << "\n";
    return kOk;
  }
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
  if (args.command == "completion") {
    if (args.positional.size() != 1 || args.positional[0] != "bash") {
      return Usage(err, absl::InvalidArgumentError("completion: expected 'bash'"));
    }
    out << BashCompletion();
    return kOk;
  }

  const bool resource_command = args.command != "watch" && args.command != "sweep-watch" &&
                                args.command != "report";
  Output output = Output::kDefault;
  if (args.command != "report") {
    absl::StatusOr<Output> o =
        ParseOutput(args, resource_command && !args.Bool("watch") ? kResourceOutputs
                                                                 : kStreamOutputs);
    if (!o.ok()) return Usage(err, o.status());
    output = *o;
  }

  ClientOptions opts;
  ApplyServer(args.Get("server").value_or(env.server.empty() ? opts.target : env.server), &opts);
  opts.token = args.Get("token").value_or(env.token);
  if (args.Bool("tls")) opts.tls = true;
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
  Ctx c{args, **client, out, err, env, output, env.stdout_is_tty};
  if (args.command == "submit") return CmdSubmit(c);
  if (args.command == "watch") return CmdWatch(c);
  if (args.command == "get") return CmdGet(c);
  if (args.command == "list") return CmdList(c);
  if (args.command == "cancel") return CmdCancel(c);
  if (args.command == "plan") return CmdPlan(c);
  if (args.command == "sweep") return CmdSweep(c);
  if (args.command == "sweep-get") return CmdSweepGet(c);
  if (args.command == "sweep-cancel") return CmdSweepCancel(c);
  if (args.command == "sweep-watch") return CmdSweepWatch(c);
  if (args.command == "sweep-list") return CmdSweepList(c);
  if (args.command == "report") return CmdReport(c);
  return Usage(err, absl::InvalidArgumentError(
                        absl::StrCat("unknown command '", args.command, "'")));
}

}  // namespace freezetune::cli
