#include "client/src/cli_args.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace freezetune::cli {

const std::vector<FlagDef>& AllFlags() {
  static const auto* flags = new std::vector<FlagDef>{
      // Global.
      {"server", "HOST:PORT", false,
       "server address (default $FREEZETUNE_SERVER, else 127.0.0.1:50051)"},
      {"token", "TOKEN", false, "bearer token (default $FREEZETUNE_TOKEN)"},
      {"tls", nullptr, false, "connect with TLS"},
      {"ca-cert", "FILE", false, "PEM CA bundle for --tls (default: system)"},
      {"cert", "FILE", false, "PEM client certificate for mutual TLS"},
      {"key", "FILE", false, "PEM client key for mutual TLS"},
      {"json", nullptr, false, "print JSON lines (protobuf JSON mapping)"},
      {"timeout", "SECONDS", false, "deadline of each unary call (default 30)"},
      {"help", nullptr, false, "show help"},
      // Job specification (submit) and freeze spec (submit, plan).
      {"file", "FILE", false,
       "JSON FineTuneJob (plan: PlanFreezeRequest, FineTuneJob or "
       "FreezeSpec); flags override its fields"},
      {"model", "URI", false, "Hugging Face BERT directory"},
      {"train", "URI", false, "training data (.jsonl, .csv, .tsv, .label)"},
      {"validation", "URI", false, "validation data"},
      {"format", "jsonl|csv|tsv|trec", false,
       "dataset format (default: from the extension)"},
      {"text-field", "NAME", false, "field/column of the first text"},
      {"text-pair-field", "NAME", false, "field/column of the second text"},
      {"label-field", "NAME", false, "field/column of the label"},
      {"labels", "A,B,...", false, "class names in id order"},
      {"num-labels", "N", false, "number of classes (1: regression)"},
      {"freeze", "head-only|bottom:N|none", false, "freeze recipe"},
      {"rule", "freeze:RE|train:RE[@LR_SCALE]", true,
       "ordered freeze rule, full RE2 match on parameter names (repeatable; "
       "replaces the file's rules)"},
      {"frozen-eval-mode", "true|false", false,
       "run fully frozen modules without dropout"},
      {"layerwise-lr-decay", "X", false, "layer-wise LR decay in (0, 1]"},
      {"epochs", "N", false, "passes over the training data"},
      {"batch-size", "N", false, "examples per micro-batch"},
      {"lr", "X", false, "peak learning rate"},
      {"weight-decay", "X", false, "AdamW weight decay"},
      {"warmup-ratio", "X", false, "fraction of steps in warmup"},
      {"lr-schedule", "linear|cosine|constant", false, "LR schedule"},
      {"max-seq-length", "N", false, "token limit per example"},
      {"seed", "N", false, "random seed"},
      {"log-every", "N", false, "TrainMetrics event every N steps"},
      {"eval-every", "N", false, "evaluate every N steps (0: each epoch)"},
      {"grad-accum", "N", false, "micro-batches per optimizer step"},
      {"max-grad-norm", "X", false, "gradient clipping norm (0: off)"},
      {"checkpoint-every", "N", false, "checkpoint every N steps"},
      {"early-stopping", "N", false, "patience in evaluations (0: off)"},
      {"selection-metric", "NAME", false, "accuracy, macro_f1, mcc, loss, ..."},
      {"validation-split", "X", false, "held-out fraction without --validation"},
      {"output", "URI", false, "output directory"},
      {"device", "cpu|cuda|cuda:N", false, "device"},
      {"request-id", "ID", false, "idempotency key (makes retries safe)"},
      {"name", "TEXT", false, "display name"},
      {"priority", "N", false, "higher runs first"},
      {"watch", nullptr, false, "follow the job after submitting it"},
      // sweep
      {"depths", "N,N,...,head-only", false,
       "freeze depths to try (N: embeddings + first N layers; head-only)"},
      {"sweep-metric", "NAME", false,
       "metric that picks the sweep's winner (default: --selection-metric)"},
      {"rungs", "STEP,STEP,...", false,
       "successive halving: judge trials at these steps (evaluations must land on them)"},
      {"reduction-factor", "N", false, "successive halving: keep the top 1/N at a rung (2)"},
      // watch
      {"after", "SEQ", false, "only events after this sequence"},
      // list
      {"state", "S1,S2", false,
       "only these states (list: queued,running,succeeded,failed,cancelled; "
       "sweep-list: running,succeeded,failed,cancelled)"},
      {"limit", "N", false, "at most N items"},
      {"page-size", "N", false, "items per page of the List call"},
  };
  return *flags;
}

const std::vector<std::string>& GlobalFlags() {
  static const auto* g = new std::vector<std::string>{
      "server", "token", "tls", "ca-cert", "cert", "key", "json", "timeout",
      "help"};
  return *g;
}

namespace {

std::vector<std::string> FreezeFlags() {
  return {"freeze", "rule", "frozen-eval-mode", "layerwise-lr-decay",
          "labels", "num-labels", "model", "file"};
}

std::vector<std::string> SubmitFlags() {
  std::vector<std::string> f = FreezeFlags();
  for (const char* n :
       {"train", "validation", "format", "text-field", "text-pair-field",
        "label-field", "epochs", "batch-size", "lr", "weight-decay",
        "warmup-ratio", "lr-schedule", "max-seq-length", "seed", "log-every",
        "eval-every", "grad-accum", "max-grad-norm", "checkpoint-every",
        "early-stopping", "selection-metric", "validation-split", "output",
        "device", "request-id", "name", "priority", "watch"}) {
    f.push_back(n);
  }
  return f;
}

std::vector<std::string> SweepFlags() {
  std::vector<std::string> f = SubmitFlags();
  f.push_back("depths");
  f.push_back("sweep-metric");
  f.push_back("rungs");
  f.push_back("reduction-factor");
  return f;
}

const FlagDef* FindFlag(absl::string_view name) {
  for (const FlagDef& f : AllFlags()) {
    if (name == f.name) return &f;
  }
  return nullptr;
}

bool Contains(const std::vector<std::string>& v, absl::string_view s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

}  // namespace

const std::vector<CommandDef>& Commands() {
  static const auto* cmds = new std::vector<CommandDef>{
      {"submit", "", "validate and queue a fine-tuning job", SubmitFlags()},
      {"watch", "JOB", "follow a job's events until it finishes", {"after"}},
      {"get", "JOB", "show one job", {}},
      {"list", "", "list jobs, newest first", {"state", "limit", "page-size"}},
      {"cancel", "JOB", "cancel a queued or running job", {}},
      {"plan", "", "preview a freeze spec against a model (dry run)",
       FreezeFlags()},
      {"sweep", "", "try several freeze depths, one job each, and pick the best",
       SweepFlags()},
      {"sweep-get", "SWEEP", "show one sweep's table", {}},
      {"sweep-cancel", "SWEEP", "cancel a sweep and its trials", {}},
      {"sweep-watch", "SWEEP", "follow a sweep's table until it ends", {"after"}},
      {"sweep-list", "", "list sweeps, newest first", {"state", "limit", "page-size"}},
      {"help", "[COMMAND]", "show help", {}},
  };
  return *cmds;
}

const CommandDef* FindCommand(absl::string_view name) {
  for (const CommandDef& c : Commands()) {
    if (name == c.name) return &c;
  }
  return nullptr;
}

bool ParsedArgs::Has(absl::string_view name) const {
  for (const auto& [k, v] : flags) {
    if (k == name) return true;
  }
  return false;
}

std::optional<std::string> ParsedArgs::Get(absl::string_view name) const {
  std::optional<std::string> out;
  for (const auto& [k, v] : flags) {
    if (k == name) out = v;
  }
  return out;
}

std::vector<std::string> ParsedArgs::GetAll(absl::string_view name) const {
  std::vector<std::string> out;
  for (const auto& [k, v] : flags) {
    if (k == name) out.push_back(v);
  }
  return out;
}

bool ParsedArgs::Bool(absl::string_view name) const {
  std::optional<std::string> v = Get(name);
  if (!v) return false;
  std::string l = absl::AsciiStrToLower(*v);
  return l == "true" || l == "1" || l == "yes";
}

absl::StatusOr<ParsedArgs> ParseArgs(const std::vector<std::string>& argv) {
  ParsedArgs out;
  bool flags_done = false;
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    const bool is_flag = !flags_done && a.size() > 1 && a[0] == '-';
    if (!is_flag) {
      if (out.command.empty()) {
        out.command = a;
      } else {
        out.positional.push_back(a);
      }
      continue;
    }
    if (a == "--") {
      flags_done = true;
      continue;
    }
    std::string name;
    std::optional<std::string> value;
    if (absl::StartsWith(a, "--")) {
      name = a.substr(2);
      size_t eq = name.find('=');
      if (eq != std::string::npos) {
        value = name.substr(eq + 1);
        name.resize(eq);
      }
    } else if (a == "-f") {
      name = "file";
    } else if (a == "-h") {
      name = "help";
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag '", a, "'"));
    }
    const FlagDef* def = FindFlag(name);
    if (def == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown flag '--", name, "'"));
    }
    if (def->value_name == nullptr) {
      if (!value) value = "true";
      std::string l = absl::AsciiStrToLower(*value);
      if (l != "true" && l != "false" && l != "1" && l != "0" && l != "yes" &&
          l != "no") {
        return absl::InvalidArgumentError(absl::StrCat(
            "--", name, " is a switch; got '", *value, "'"));
      }
    } else if (!value) {
      if (i + 1 >= argv.size()) {
        return absl::InvalidArgumentError(
            absl::StrCat("--", name, " needs a value (", def->value_name, ")"));
      }
      value = argv[++i];
    }
    if (!def->repeatable && out.Has(name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", name, " given more than once"));
    }
    out.flags.emplace_back(name, *value);
  }
  if (!out.command.empty()) {
    const CommandDef* cmd = FindCommand(out.command);
    if (cmd == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown command '", out.command, "' (see 'freezetune help')"));
    }
    for (const auto& [k, v] : out.flags) {
      if (!Contains(GlobalFlags(), k) && !Contains(cmd->flags, k)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "'", out.command, "' does not take --", k));
      }
    }
  }
  return out;
}

namespace {

void AppendFlagHelp(std::string* out, const std::vector<std::string>& names) {
  for (const std::string& n : names) {
    const FlagDef* f = FindFlag(n);
    if (f == nullptr) continue;
    std::string left = absl::StrCat("--", f->name);
    if (f->value_name != nullptr) absl::StrAppend(&left, " ", f->value_name);
    if (left.size() > 34) {
      absl::StrAppendFormat(out, "  %s\n  %-34s %s\n", left, "", f->help);
    } else {
      absl::StrAppendFormat(out, "  %-34s %s\n", left, f->help);
    }
  }
}

}  // namespace

std::string UsageText(absl::string_view command) {
  std::string out;
  const CommandDef* cmd = command.empty() ? nullptr : FindCommand(command);
  if (cmd != nullptr && command != "help") {
    absl::StrAppend(&out, "usage: freezetune ", cmd->name,
                    *cmd->args ? " " : "", cmd->args, " [flags]\n\n",
                    cmd->summary, "\n\nflags:\n");
    AppendFlagHelp(&out, cmd->flags);
    absl::StrAppend(&out, "\nglobal flags:\n");
    AppendFlagHelp(&out, GlobalFlags());
    return out;
  }
  absl::StrAppend(&out,
                  "usage: freezetune [global flags] COMMAND [flags] [args]\n\n"
                  "commands:\n");
  for (const CommandDef& c : Commands()) {
    std::string left = absl::StrCat(c.name, *c.args ? " " : "", c.args);
    absl::StrAppendFormat(&out, "  %-16s %s\n", left, c.summary);
  }
  absl::StrAppend(&out, "\nglobal flags:\n");
  AppendFlagHelp(&out, GlobalFlags());
  absl::StrAppend(&out,
                  "\n'freezetune help COMMAND' lists a command's flags.\n"
                  "Exit status: 0 on success (for submit --watch and watch: "
                  "the job SUCCEEDED), 1 on failure, 2 on a usage error.\n");
  return out;
}

}  // namespace freezetune::cli
