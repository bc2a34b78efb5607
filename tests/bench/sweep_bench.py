#!/usr/bin/python3
"""Freeze-depth (and learning-rate) sweep vs the same jobs run one after
another (issues 8 and 16).

Usage: sweep_bench.py SERVER_BIN MODEL_BIN SOURCE_DIR [--train-examples N]
       [--epochs E] [--hidden H] [--rungs S,S,...] [--lr LR] [--lrs LR,LR,...]
       [--model DIR] [--phases P,P,...] [--results FILE.jsonl]

Makes a 4-layer BERT with the bert-base-uncased vocab and stands in for
pretraining (no pretrained weights can be downloaded here) with a full
fine-tune on sentences N+1..10000 of tests/fixtures/data/sst2/
train_first10000.tsv, so that the freeze depths differ in accuracy; or, with
--model, uses that model directory as it is (e.g. recipes_bench.py's
MLM-pretrained one) and skips the stand-in. Then, on the first N sentences
(dev.tsv for validation), runs the candidates: depths {0, 1, 2, 3} and
head-only, each at every learning rate of --lrs (default: --lr alone), so
5 x len(lrs) jobs, in these phases (--phases; default all), each on a fresh
freezetune-server with default flags (two CPU slots sharing the cores: a job
running alone gets both threads, two jobs one each) so that no phase
inherits another's stored frozen-prefix outputs:
  separate    each job on a server of its own, one after another: N
              independent runs, nothing shared between them;
  one-server  the jobs one after another on one server (they share
              tokenization and frozen-prefix outputs through the process-wide
              stores, as any jobs on the same model and data do);
  sweep       one sweep over the candidates (SweepSpec.learning_rates);
  halving     the same sweep with successive halving at --rungs;
  one-slot    the sweep on a server with one CPU slot (--cpu_slots=1): trials
              one at a time, so only the shared work counts.
Every phase uses the same specs (the sweep's: depth candidates with
frozen_eval_mode on) and hyperparameters. Times run from submit to the last
job's end (server start-up excluded). Prints the times, the ratios to
`separate` and `one-server` (those that ran), the sweep tables and the winner
of each phase (Markdown): the best validation accuracy, ties to fewer
trainable parameters, then to the earlier candidate, as the sweep picks it.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_server import Server, run_job, run_sweep  # noqa: E402

PHASES = ("separate", "one-server", "sweep", "halving", "one-slot")
p = argparse.ArgumentParser()
p.add_argument("server_bin")
p.add_argument("model_bin")
p.add_argument("source_dir")
p.add_argument("--train-examples", type=int, default=2000)
p.add_argument("--epochs", type=int, default=1)
p.add_argument("--hidden", type=int, default=128)
p.add_argument("--rungs", default="20,40")
p.add_argument("--lr", type=float, default=5e-4)
p.add_argument("--lrs", default="", help="comma-separated learning rates crossed with the depths")
p.add_argument("--model", default="", help="an existing model directory; skips the stand-in")
p.add_argument("--phases", default=",".join(PHASES))
p.add_argument("--results", default="", help="append one JSON line per phase here")
args = p.parse_args()
phases = [s for s in args.phases.split(",") if s]
for ph in phases:
    if ph not in PHASES:
        sys.exit("unknown phase %r (known: %s)" % (ph, ", ".join(PHASES)))
lrs = [float(s) for s in args.lrs.split(",") if s]

d = tempfile.mkdtemp(prefix="ft_sweep_bench_")
sst2 = os.path.join(args.source_dir, "tests/fixtures/data/sst2")
with open(sst2 + "/train_first10000.tsv") as src:
    header, *lines = src.read().splitlines(keepends=True)
with open(d + "/train.tsv", "w") as dst:
    dst.writelines([header] + lines[:args.train_examples])
with open(d + "/pretrain.tsv", "w") as dst:
    dst.writelines([header] + lines[args.train_examples:])
shutil.copy(sst2 + "/dev.tsv", d + "/dev.tsv")

template = {"modelUri": "file://" + d + "/pretrained", "train": {"uri": "file://" + d + "/train.tsv"},
            "validation": {"uri": "file://" + d + "/dev.tsv"},
            "hyperparameters": {"epochs": args.epochs, "batchSize": 32, "learningRate": args.lr,
                                "maxSeqLength": 64, "logEverySteps": 50, "evalEverySteps": 20}}
# The specs a sweep gives its trials: depth candidates run their frozen layers
# in eval mode (see SweepSpec.freeze_depths), so the separate jobs do too.
# Candidate order as the sweep expands it: each freeze candidate at every
# learning rate in turn.
freezes = [("depth=%d" % n, {"bottom": {"numLayers": n}, "frozenEvalMode": True}) for n in range(4)]
freezes.append(("head-only", {"headOnly": {}}))
candidates = [(label + (" lr=%g" % lr if lrs else ""), f, lr if lrs else args.lr)
              for label, f in freezes for lr in (lrs or [args.lr])]
sweep_spec = {"job": template, "freezeDepths": [0, 1, 2, 3], "includeHeadOnly": True}
if lrs:
    sweep_spec["learningRates"] = lrs
STATES = {3: "finished", 4: "stopped early", 5: "failed", 6: "cancelled", 7: "pruned"}


def server(name, flags=()):
    return Server(args.server_bin, d, name, [d], flags)


def job_spec(freeze, lr):
    hp = dict(template["hyperparameters"], learningRate=lr)
    return dict(template, freeze=freeze, hyperparameters=hp)


def winner(rows):
    """rows: (label, best accuracy, trainable) in candidate order; as PickSweepWinner."""
    best = None
    for row in rows:
        if best is None or row[1] > best[1] or (row[1] == best[1] and row[2] < best[2]):
            best = row
    return best


def run_jobs(name, one_server=None):
    """Runs every candidate as a job, on one_server or each on a fresh
    server; prints their table; returns (seconds, winner row)."""
    total, rows = 0.0, []
    print("%s:\n\n| candidate | trainable params | best accuracy | step | wall s |" % name)
    print("|---|---|---|---|---|")
    for i, (label, f, lr) in enumerate(candidates):
        srv = one_server or server("separate%d" % i)
        try:
            secs, job = run_job(srv, job_spec(f, lr))
        finally:
            if srv is not one_server:
                srv.close()
        total += secs
        best = job.result.best_eval
        rows.append((label, best.accuracy, job.result.trainable_parameters))
        print("| %s | %d | %.4f | %d | %.1f |" % (label, rows[-1][2], best.accuracy, best.step, secs),
              flush=True)
    print()
    return total, winner(rows)


def print_table(sweep):
    print("| candidate | frozen depth | lr | trainable params | best %s | step | wall s | state |"
          % sweep.selection_metric)
    print("|---|---|---|---|---|---|---|---|")
    for i, t in enumerate(sweep.trials):
        mark = " (winner)" if i == sweep.winner_index else ""
        state = STATES.get(t.state, str(t.state))
        if t.state == 7:
            state += " at step %d" % t.pruned_at_step
        print("| %s%s | %d | %g | %d | %.4f | %d | %.1f | %s |" % (
            t.label, mark, t.frozen_depth, t.learning_rate, t.trainable_parameters, t.best_metric,
            t.best_step, t.wall_seconds, state))
    print()


def sweep_winner(sweep):
    t = sweep.trials[sweep.winner_index] if sweep.winner_index >= 0 else None
    return (t.label, t.best_metric, t.trainable_parameters) if t else ("none", 0.0, 0)


times, winners, tables = {}, {}, []
try:
    if args.model:
        shutil.copytree(args.model, d + "/pretrained")
        print("model: %s (as given)\n" % args.model)
    else:
        vocab = os.path.join(args.source_dir, "tests/fixtures/data/bert-base-uncased-vocab.txt")
        subprocess.run([args.model_bin, "init", "--out", d + "/model", "--vocab", vocab, "--layers", "4",
                        "--hidden", str(args.hidden), "--heads", "2", "--intermediate",
                        str(args.hidden * 4), "--max-position", "128", "--seed", "7"],
                       check=True, capture_output=True)
        srv = server("pretrain")
        try:
            _, pretrained = run_job(srv, {
                "modelUri": "file://" + d + "/model", "train": {"uri": "file://" + d + "/pretrain.tsv"},
                "validation": {"uri": "file://" + d + "/dev.tsv"},
                "outputUri": "file://" + d + "/pretrained",
                "hyperparameters": {"epochs": 1, "batchSize": 32, "learningRate": 1e-3,
                                    "maxSeqLength": 64}})
            print("stand-in pretraining: dev accuracy %.4f\n" % pretrained.result.best_eval.accuracy)
        finally:
            srv.close()

    if "separate" in phases:
        times["separate"], winners["separate"] = run_jobs("separate jobs")
    if "one-server" in phases:
        shared = server("one_server")
        try:
            times["one-server"], winners["one-server"] = run_jobs("one-server jobs", shared)
        finally:
            shared.close()
    rungs = [int(s) for s in args.rungs.split(",") if s]
    for ph, name, spec, flags in (
            ("sweep", "sweep", sweep_spec, ()),
            ("halving", "sweep + halving",
             dict(sweep_spec, successiveHalving={"rungSteps": rungs}), ()),
            ("one-slot", "sweep, one CPU slot", sweep_spec, ("--cpu_slots=1",))):
        if ph not in phases:
            continue
        srv = server(ph, flags)
        try:
            times[ph], sweep = run_sweep(srv, spec)
        finally:
            srv.close()
        winners[ph] = sweep_winner(sweep)
        if ph != "one-slot":
            tables.append((name, sweep))

    for name, sweep in tables:
        print("%s%s:\n" % (name, " (rungs %s, factor 2)" % args.rungs if "halving" in name else ""))
        print_table(sweep)
    names = {"separate": "separate (%d servers)" % len(candidates),
             "one-server": "one-server (%d jobs)" % len(candidates), "sweep": "sweep",
             "halving": "sweep + halving", "one-slot": "sweep, one CPU slot"}
    refs = [r for r in ("separate", "one-server") if r in times]
    print("| run | seconds | %swinner | best accuracy |" % "".join("/ %s | " % r for r in refs))
    print("|---|---|%s---|---|" % ("---|" * len(refs)))
    for ph in PHASES:
        if ph in times:
            print("| %s | %.1f | %s%s | %.4f |" % (
                names[ph], times[ph], "".join("%.2f | " % (times[ph] / times[r]) for r in refs),
                winners[ph][0], winners[ph][1]))
    if args.results:
        with open(args.results, "a") as out:
            for ph in PHASES:
                if ph in times:
                    out.write(json.dumps({"bench": "sweep", "phase": ph, "seconds": times[ph],
                                          "candidates": len(candidates), "lrs": lrs,
                                          "winner": winners[ph][0],
                                          "winner_accuracy": winners[ph][1],
                                          "model": args.model or "stand-in"}) + "\n")
finally:
    shutil.rmtree(d, ignore_errors=True)
