#include "client/src/cli_args.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"

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
      {"json", nullptr, false, "the same as -o json"},
      {"o", "FORMAT", false,
       "output: table (default), json (one JSON object per line, protobuf JSON mapping), "
       "name (ids only) or wide (more columns); report: FILE.svg or FILE.html"},
      {"timeout", "SECONDS", false, "deadline of each unary call (default 30)"},
      {"help", nullptr, false, "show help"},
      {"version", nullptr, false, "print the version and exit"},
      // Job specification (submit) and freeze spec (submit, plan).
      {"file", "FILE", false,
       "JSON FineTuneJob (plan: PlanFreezeRequest, FineTuneJob or "
       "FreezeSpec); flags override its fields"},
      {"model", "URI", false, "Hugging Face BERT directory (or a delta output, with --base-model)"},
      {"base-model", "URI", false, "the full model a delta --model applies to"},
      {"train", "URI", false, "training data (.jsonl, .csv, .tsv, .label; --task mlm: also .txt)"},
      {"validation", "URI", false, "validation data"},
      {"format", "jsonl|csv|tsv|trec|text", false,
       "dataset format (default: from the file extension)"},
      {"text-field", "NAME", false, "field/column of the first text"},
      {"text-pair-field", "NAME", false, "field/column of the second text"},
      {"label-field", "NAME", false, "field/column of the label"},
      {"labels", "A,B,...", false, "class names in id order"},
      {"num-labels", "N", false,
       "number of classes; 1: regression (default: from --labels or the training data)"},
      {"task", "classification|mlm", false,
       "classification (default), or mlm: continued pretraining with masked language "
       "modelling on unlabelled text; the output is a BertForMaskedLM"},
      {"mask-prob", "X", false, "--task mlm: fraction of tokens predicted, in (0, 1) (default 0.15)"},
      {"whole-word-masking", nullptr, false, "--task mlm: mask whole words, not single word pieces"},
      {"freeze", "head-only|bottom:N|bias-only|none", false,
       "freeze recipe (bias-only: BitFit, biases and the head train)"},
      {"rule", "freeze:RE|train:RE[@LR_SCALE]", true,
       "ordered freeze rule, full RE2 match on parameter names (repeatable; "
       "replaces the file's rules)"},
      {"frozen-eval-mode", "true|false", false,
       "run fully frozen modules without dropout (default: true for head-only, else false)"},
      {"layerwise-lr-decay", "X", false, "layer-wise LR decay in (0, 1] (default 1: none)"},
      {"lora-targets", "RE", false,
       "LoRA on the Linear layers whose module names fully match RE, e.g. "
       "'bert\\.encoder\\.layer\\.\\d+\\.attention\\.self\\.(query|value)'"},
      {"lora-rank", "N", false, "LoRA rank (default 8 with --lora-targets)"},
      {"lora-alpha", "X", false, "LoRA alpha; scaling alpha/rank (default: the rank)"},
      {"lora-dropout", "X", false, "dropout on the LoRA input in [0, 1)"},
      {"lora-save", "RE", true,
       "module trained in full and saved with the adapter (repeatable; default: classifier)"},
      {"output-format", "full|peft-adapter|delta", false,
       "full: Hugging Face model, LoRA merged (default); peft-adapter: a PEFT adapter directory; "
       "delta: only the changed tensors, pinned to the base by SHA-256"},
      {"epochs", "N", false, "passes over the training data (default 3)"},
      {"batch-size", "N", false, "examples per micro-batch (default 32)"},
      {"lr", "X", false, "peak learning rate (default 5e-5)"},
      {"weight-decay", "X", false, "AdamW weight decay (default 0.01)"},
      {"warmup-ratio", "X", false, "fraction of steps in warmup (default 0)"},
      {"lr-schedule", "linear|cosine|constant", false, "LR schedule after warmup (default linear)"},
      {"max-seq-length", "N", false,
       "token limit per example (default 128, or the model's max positions if fewer)"},
      {"seed", "N", false, "random seed (default 42)"},
      {"log-every", "N", false, "TrainMetrics event every N steps (default 10)"},
      {"eval-every", "N", false, "evaluate every N steps (default 0: at each epoch end)"},
      {"grad-accum", "N", false, "micro-batches per optimizer step (default 1)"},
      {"max-grad-norm", "X", false, "gradient clipping norm, 0: off (default 1.0)"},
      {"checkpoint-every", "N", false, "checkpoint every N steps (default 0: off)"},
      {"early-stopping", "N", false, "patience in evaluations (default 0: off)"},
      {"selection-metric", "NAME", false,
       "accuracy, macro_f1, mcc, loss; regression: pearson, spearman, mse, loss "
       "(default accuracy; regression: loss)"},
      {"validation-split", "X", false,
       "held-out fraction without --validation (default 0.1)"},
      {"output", "URI", false,
       "output directory (default: the server's data dir, outputs/JOB_ID)"},
      {"device", "cpu|cuda|cuda:N", false, "device (default cpu)"},
      {"precision", "fp32|bf16|fp16", false,
       "compute precision: bf16/fp16 autocast with float32 master weights; fp16 needs CUDA "
       "(default fp32)"},
      {"tf32", "true|false", false, "TF32 matmuls on GPUs (default true)"},
      {"output-dtype", "f32|f16|bf16", false,
       "dtype of the output weights (default: the input checkpoint's)"},
      {"data-parallel", "N", false,
       "train on N data-parallel ranks, one slot each; batch size is per rank (default 1)"},
      {"request-id", "ID", false, "idempotency key (makes retries safe)"},
      {"name", "TEXT", false, "display name"},
      {"priority", "N", false, "higher runs first (default 0)"},
      {"notify-url", "URL", false,
       "POST the final job (sweep) here, signed, when it ends (see docs/calling-freezetune.md)"},
      {"watch", nullptr, false, "follow the job after submitting it"},
      // sweep
      {"depths", "N,N,...,head-only", false,
       "freeze depths to try (N: embeddings + first N layers; head-only)"},
      {"lrs", "LR,LR,...", false,
       "learning rates to try with every depth (default: --lr only)"},
      {"lora-ranks", "R,R,...", false,
       "LoRA ranks to try with every LoRA candidate (--lora-targets; default: --lora-rank)"},
      {"sweep-metric", "NAME", false,
       "metric that picks the sweep's winner (default: --selection-metric)"},
      {"rungs", "STEP,STEP,...", false,
       "successive halving: judge trials at these steps (evaluations must land on them)"},
      {"reduction-factor", "N", false, "successive halving: keep the top 1/N at a rung (2)"},
      // watch
      {"after", "SEQ", false, "only events after this sequence (default 0: all)"},
      {"wait", nullptr, false, "block until the job (or sweep) has ended"},
      // list
      {"state", "S1,S2", false,
       "only these states (list: queued,running,succeeded,failed,cancelled; "
       "sweep-list: running,succeeded,failed,cancelled)"},
      {"limit", "N", false, "at most N items (default 0: all)"},
      {"page-size", "N", false, "items per page of the List call (default: the server's, 50)"},
  };
  return *flags;
}

const std::vector<std::string>& GlobalFlags() {
  static const auto* g = new std::vector<std::string>{
      "server", "token", "tls", "ca-cert", "cert", "key", "o", "json", "timeout",
      "help", "version"};
  return *g;
}

namespace {

std::vector<std::string> FreezeFlags() {
  return {"freeze", "rule", "frozen-eval-mode", "layerwise-lr-decay",
          "lora-targets", "lora-rank", "lora-alpha", "lora-dropout", "lora-save",
          "labels", "num-labels", "task", "mask-prob", "whole-word-masking", "model", "file"};
}

std::vector<std::string> SubmitFlags() {
  std::vector<std::string> f = FreezeFlags();
  for (const char* n :
       {"base-model", "train", "validation", "format", "text-field", "text-pair-field",
        "label-field", "epochs", "batch-size", "lr", "weight-decay",
        "warmup-ratio", "lr-schedule", "max-seq-length", "seed", "log-every",
        "eval-every", "grad-accum", "max-grad-norm", "checkpoint-every",
        "early-stopping", "selection-metric", "validation-split", "output",
        "output-format", "device", "precision", "tf32", "output-dtype", "data-parallel",
        "request-id", "name", "priority", "notify-url", "watch"}) {
    f.push_back(n);
  }
  return f;
}

std::vector<std::string> SweepFlags() {
  std::vector<std::string> f = SubmitFlags();
  f.push_back("depths");
  f.push_back("lrs");
  f.push_back("lora-ranks");
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

// Edit distance counting an insertion, deletion, substitution or swap of
// two adjacent characters as one edit (optimal string alignment), so that
// "lsit" is one edit from "list".
size_t EditDistance(absl::string_view a, absl::string_view b) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1,
                          d[i - 1][j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.size()][b.size()];
}

}  // namespace

std::string DidYouMean(absl::string_view input, const std::vector<std::string>& candidates,
                       absl::string_view prefix) {
  // Close enough: at most a third of the word wrong (and at least 1 edit
  // allowed), or the input is a prefix of exactly one candidate.
  const std::string* best = nullptr;
  size_t best_distance = std::max<size_t>(1, input.size() / 3) + 1;
  const std::string* only_prefix = nullptr;
  int prefixed = 0;
  for (const std::string& c : candidates) {
    const size_t d = EditDistance(input, c);
    if (d < best_distance) {
      best_distance = d;
      best = &c;
    }
    if (input.size() >= 2 && absl::StartsWith(c, input)) {
      only_prefix = &c;
      ++prefixed;
    }
  }
  if (best == nullptr && prefixed == 1) best = only_prefix;
  if (best == nullptr) return "";
  return absl::StrCat("; did you mean '", prefix, *best, "'?");
}

const std::vector<CommandDef>& Commands() {
  static const auto* cmds = new std::vector<CommandDef>{
      {"submit", "", "validate and queue a fine-tuning job", SubmitFlags(),
       {"freezetune submit --watch --model file://$PWD/model --train file://$PWD/train.tsv "
        "--validation file://$PWD/dev.tsv --freeze bottom:1 --epochs 2",
        "JOB=$(freezetune submit -f client/examples/head_only.json --model file:///m "
        "--train file:///t.tsv -o name)"}},
      {"watch", "JOB", "follow a job's events until it finishes (Ctrl-C detaches)", {"after"},
       {"freezetune watch job-0f3a9c2e71b4", "freezetune watch job-0f3a9c2e71b4 --after 40 -o json"}},
      {"get", "JOB", "show one job", {},
       {"freezetune get job-0f3a9c2e71b4", "freezetune get job-0f3a9c2e71b4 -o json"}},
      {"list", "", "list jobs, newest first", {"state", "limit", "page-size"},
       {"freezetune list --state running,queued", "freezetune list --limit 5 -o wide"}},
      {"cancel", "JOB", "cancel a queued or running job", {"wait"},
       {"freezetune cancel job-0f3a9c2e71b4", "freezetune cancel job-0f3a9c2e71b4 --wait"}},
      {"plan", "", "preview a freeze spec against a model (dry run)", FreezeFlags(),
       {"freezetune plan --model file://$PWD/model --freeze bottom:2",
        "freezetune plan --model file://$PWD/model --rule 'freeze:bert\\.embeddings\\..*' -o name"}},
      {"sweep", "", "try several freeze depths, one job each, and pick the best", SweepFlags(),
       {"freezetune sweep --watch --depths 0,1,2,head-only --model file://$PWD/model "
        "--train file://$PWD/train.tsv --validation file://$PWD/dev.tsv",
        "freezetune sweep --depths 0,2,4 --lrs 1e-4,1e-3 --rungs 100,200 --eval-every 100 "
        "-f job.json"}},
      {"sweep-get", "SWEEP", "show one sweep's table", {},
       {"freezetune sweep-get sweep-1c2d3e4f5a6b", "freezetune sweep-get sweep-1c2d3e4f5a6b -o json"}},
      {"sweep-cancel", "SWEEP", "cancel a sweep and its unfinished trials", {"wait"},
       {"freezetune sweep-cancel sweep-1c2d3e4f5a6b",
        "freezetune sweep-cancel sweep-1c2d3e4f5a6b --wait"}},
      {"sweep-watch", "SWEEP", "follow a sweep's table until it ends (Ctrl-C detaches)", {"after"},
       {"freezetune sweep-watch sweep-1c2d3e4f5a6b",
        "freezetune sweep-watch sweep-1c2d3e4f5a6b --after 3 -o json"}},
      {"sweep-list", "", "list sweeps, newest first", {"state", "limit", "page-size"},
       {"freezetune sweep-list --state running", "freezetune sweep-list -o name"}},
      {"report", "JOB|SWEEP", "draw training curves (SVG or HTML, no JavaScript)", {},
       {"freezetune report job-0f3a9c2e71b4 -o curves.svg",
        "freezetune report sweep-1c2d3e4f5a6b -o sweep.html"}},
      {"completion", "bash", "print a shell completion script", {},
       {"source <(freezetune completion bash)",
        "freezetune completion bash > /etc/bash_completion.d/freezetune"}},
      {"version", "", "print the version", {}, {"freezetune version", "freezetune --version"}},
      {"help", "[COMMAND]", "show help", {}, {"freezetune help submit", "freezetune list --help"}},
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
    } else if (absl::StartsWith(a, "-o")) {
      // kubectl style: -o json, -o=json, -ojson.
      name = "o";
      if (a.size() > 2) value = std::string(absl::StripPrefix(a.substr(2), "="));
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag '", a, "'"));
    }
    const FlagDef* def = FindFlag(name);
    if (def == nullptr) {
      std::vector<std::string> names;
      for (const FlagDef& f : AllFlags()) names.push_back(f.name);
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown flag '--", name, "'", DidYouMean(name, names, "--")));
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
      std::vector<std::string> names;
      for (const CommandDef& c : Commands()) names.push_back(c.name);
      std::string hint = DidYouMean(out.command, names, "");
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown command '", out.command, "'", hint.empty() ? " (see 'freezetune help')" : hint));
    }
    for (const auto& [k, v] : out.flags) {
      if (!Contains(GlobalFlags(), k) && !Contains(cmd->flags, k)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "'", out.command, "' does not take --", k, DidYouMean(k, cmd->flags, "--"),
            " (see 'freezetune help ", out.command, "')"));
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
    std::string left = absl::StrCat(std::string(f->name).size() == 1 ? "-" : "--", f->name);
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
                    cmd->summary, "\n");
    if (!cmd->flags.empty()) {
      absl::StrAppend(&out, "\nflags:\n");
      AppendFlagHelp(&out, cmd->flags);
    }
    absl::StrAppend(&out, "\nglobal flags:\n");
    AppendFlagHelp(&out, GlobalFlags());
    absl::StrAppend(&out, "\nexamples:\n");
    for (const std::string& e : cmd->examples) absl::StrAppend(&out, "  ", e, "\n");
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
                  "\nexamples:\n"
                  "  freezetune submit --watch --model file://$PWD/model --train file://$PWD/train.tsv\n"
                  "  freezetune list --state running -o wide\n"
                  "\n'freezetune help COMMAND' lists a command's flags, defaults and examples.\n"
                  "Exit status: 0 on success (for submit --watch and watch: "
                  "the job SUCCEEDED), 1 on failure, 2 on a usage error, 130 after "
                  "Ctrl-C (the job keeps running).\n");
  return out;
}

std::string BashCompletion() {
  // Generated from the same tables the parser uses, so it cannot drift.
  std::string commands, value_flags, switch_flags;
  for (const CommandDef& c : Commands()) absl::StrAppend(&commands, c.name, " ");
  for (const FlagDef& f : AllFlags()) {
    const std::string dash = std::string(f.name).size() == 1 ? "-" : "--";
    absl::StrAppend(f.value_name ? &value_flags : &switch_flags, dash, f.name, " ");
  }
  std::string per_command;
  for (const CommandDef& c : Commands()) {
    std::string flags;
    for (const std::string& f : c.flags) absl::StrAppend(&flags, "--", f, " ");
    absl::StrAppend(&per_command, "    ", c.name, ") flags=\"", flags, "\" ;;\n");
  }
  std::string globals;
  for (const std::string& f : GlobalFlags()) {
    absl::StrAppend(&globals, f.size() == 1 ? "-" : "--", f, " ");
  }
  return absl::StrCat(R"(# bash completion for freezetune; load with: source <(freezetune completion bash)
_freezetune() {
  local cur prev cmd="" i w flags
  cur="${COMP_WORDS[COMP_CWORD]}"
  prev="${COMP_WORDS[COMP_CWORD-1]}"
  local value_flags=" )", value_flags, R"(-f "
  for ((i = 1; i < COMP_CWORD; i++)); do
    w="${COMP_WORDS[i]}"
    if [[ "$value_flags" == *" $w "* && "$w" != *=* ]]; then ((i++)); continue; fi
    [[ "$w" == -* ]] && continue
    cmd="$w"; break
  done
  case "$prev" in
    -o) COMPREPLY=($(compgen -W "table json name wide" -- "$cur")); return ;;
    --state) COMPREPLY=($(compgen -W "queued running succeeded failed cancelled" -- "$cur")); return ;;
    --freeze) COMPREPLY=($(compgen -W "head-only bottom: none" -- "$cur")); return ;;
    --format) COMPREPLY=($(compgen -W "jsonl csv tsv trec" -- "$cur")); return ;;
    --lr-schedule) COMPREPLY=($(compgen -W "linear cosine constant" -- "$cur")); return ;;
    --device) COMPREPLY=($(compgen -W "cpu cuda" -- "$cur")); return ;;
    -f|--file|--ca-cert|--cert|--key) COMPREPLY=($(compgen -f -- "$cur")); return ;;
  esac
  if [[ "$value_flags" == *" $prev "* ]]; then return; fi
  if [[ -z "$cmd" ]]; then
    if [[ "$cur" == -* ]]; then
      COMPREPLY=($(compgen -W ")", globals, R"(" -- "$cur"))
    else
      COMPREPLY=($(compgen -W ")", commands, R"(" -- "$cur"))
    fi
    return
  fi
  case "$cmd" in
)", per_command, R"(    completion) COMPREPLY=($(compgen -W "bash" -- "$cur")); return ;;
    help) COMPREPLY=($(compgen -W ")", commands, R"(" -- "$cur")); return ;;
    *) flags="" ;;
  esac
  if [[ "$cur" == -* ]]; then
    COMPREPLY=($(compgen -W "$flags )", globals, R"(" -- "$cur"))
  fi
}
complete -F _freezetune freezetune
)");
}

}  // namespace freezetune::cli
