#!/usr/bin/python3
"""Freeze-depth sweep vs the same jobs run one after another (issue 8).

Usage: sweep_bench.py SERVER_BIN MODEL_BIN SOURCE_DIR [--train-examples N]
       [--epochs E] [--hidden H] [--rungs S,S,...] [--lr LR]

Makes a 4-layer BERT with the bert-base-uncased vocab and stands in for
pretraining (no pretrained weights can be downloaded here) with a full
fine-tune on sentences N+1..10000 of tests/fixtures/data/sst2/
train_first10000.tsv, so that the freeze depths differ in accuracy. Then, on
the first N sentences (dev.tsv for validation), runs the five candidates
depths {0, 1, 2, 3} and head-only five ways, each phase on a fresh
freezetune-server with default flags (two CPU slots sharing the cores: a job
running alone gets both threads, two jobs one each) so that no phase
inherits another's stored frozen-prefix outputs:
  separate    each job on a server of its own, one after another: N
              independent runs, nothing shared between them;
  one-server  the five jobs one after another on one server (they share
              tokenization and frozen-prefix outputs through the process-wide
              stores, as any jobs on the same model and data do);
  sweep       one sweep over the five candidates;
  halving     the same sweep with successive halving at --rungs;
  one slot    the sweep on a server with one CPU slot (--cpu_slots=1): trials
              one at a time, so only the shared work counts.
Every phase uses the same specs (the sweep's: depth candidates with
frozen_eval_mode on) and hyperparameters. Times run from submit to the last
job's end (server start-up excluded). Prints the times, the ratios to
`separate` and `one-server`, and the sweep tables (Markdown).
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

p = argparse.ArgumentParser()
p.add_argument("server_bin")
p.add_argument("model_bin")
p.add_argument("source_dir")
p.add_argument("--train-examples", type=int, default=2000)
p.add_argument("--epochs", type=int, default=1)
p.add_argument("--hidden", type=int, default=128)
p.add_argument("--rungs", default="20,40")
p.add_argument("--lr", type=float, default=5e-4)
args = p.parse_args()

from freezetune import Client  # noqa: E402

d = tempfile.mkdtemp(prefix="ft_sweep_bench_")
vocab = os.path.join(args.source_dir, "tests/fixtures/data/bert-base-uncased-vocab.txt")
subprocess.run([args.model_bin, "init", "--out", d + "/model", "--vocab", vocab, "--layers", "4",
                "--hidden", str(args.hidden), "--heads", "2", "--intermediate", str(args.hidden * 4),
                "--max-position", "128", "--seed", "7"], check=True, capture_output=True)
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
freezes = [{"bottom": {"numLayers": n}, "frozenEvalMode": True} for n in range(4)] + [{"headOnly": {}}]
sweep_spec = {"job": template, "freezeDepths": [0, 1, 2, 3], "includeHeadOnly": True}
STATES = {3: "finished", 4: "stopped early", 5: "failed", 6: "cancelled", 7: "pruned"}


class Server:
    def __init__(self, name, flags=()):
        self.dir = os.path.join(d, name)
        os.makedirs(self.dir)
        port_file = self.dir + "/port"
        self.log = open(self.dir + "/server.log", "w")
        self.proc = subprocess.Popen(
            [args.server_bin, "--listen=127.0.0.1:0", "--port_file=" + port_file,
             "--metrics_listen=127.0.0.1:0", "--data_dir=" + self.dir + "/data",
             "--data_roots=" + d] + list(flags), stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while not (os.path.exists(port_file) and open(port_file).read().endswith("\n")):
            if self.proc.poll() is not None or time.time() > deadline:
                sys.exit("server did not start: " + open(self.dir + "/server.log").read())
            time.sleep(0.05)
        self.client = Client("127.0.0.1:" + open(port_file).read().strip(), timeout=120)

    def close(self):
        self.client.close()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        self.log.close()


def run_job(server, freeze):
    """Submits one job and watches it to its end; returns the seconds taken."""
    t0 = time.monotonic()
    job = server.client.submit(dict(template, freeze=freeze))
    for _ in server.client.watch(job.id):
        pass
    elapsed = time.monotonic() - t0
    state = server.client.get(job.id).state
    if state != 3:
        sys.exit("job %s ended in state %d" % (job.id, state))
    return elapsed


def run_sweep(server, spec):
    t0 = time.monotonic()
    sweep = server.client.submit_sweep(spec)
    for _ in server.client.watch_sweep(sweep.id):
        pass
    elapsed = time.monotonic() - t0
    return elapsed, server.client.get_sweep(sweep.id)


def print_table(sweep):
    print("| candidate | frozen depth | trainable params | best %s | step | wall s | state |"
          % sweep.selection_metric)
    print("|---|---|---|---|---|---|---|")
    for i, t in enumerate(sweep.trials):
        mark = " (winner)" if i == sweep.winner_index else ""
        state = STATES.get(t.state, str(t.state))
        if t.state == 7:
            state += " at step %d" % t.pruned_at_step
        print("| %s%s | %d | %d | %.4f | %d | %.1f | %s |" % (
            t.label, mark, t.frozen_depth, t.trainable_parameters, t.best_metric, t.best_step,
            t.wall_seconds, state))
    print()


try:
    server = Server("pretrain")
    try:
        pretrain = server.client.submit(
            {"modelUri": "file://" + d + "/model", "train": {"uri": "file://" + d + "/pretrain.tsv"},
             "validation": {"uri": "file://" + d + "/dev.tsv"}, "outputUri": "file://" + d + "/pretrained",
             "hyperparameters": {"epochs": 1, "batchSize": 32, "learningRate": 1e-3, "maxSeqLength": 64}})
        for _ in server.client.watch(pretrain.id):
            pass
        pretrained = server.client.get(pretrain.id)
        if pretrained.state != 3:
            sys.exit("pretraining ended in state %d" % pretrained.state)
        print("stand-in pretraining: dev accuracy %.4f\n" % pretrained.result.best_eval.accuracy)
    finally:
        server.close()

    separate = 0.0
    for i, f in enumerate(freezes):
        server = Server("separate%d" % i)
        try:
            separate += run_job(server, f)
        finally:
            server.close()

    server = Server("one_server")
    try:
        one_server = sum(run_job(server, f) for f in freezes)
    finally:
        server.close()

    server = Server("sweep")
    try:
        swept, sweep = run_sweep(server, sweep_spec)
    finally:
        server.close()

    rungs = [int(s) for s in args.rungs.split(",") if s]
    server = Server("halving")
    try:
        halved, halving = run_sweep(server, dict(sweep_spec, successiveHalving={"rungSteps": rungs}))
    finally:
        server.close()

    server = Server("one_slot", ("--cpu_slots=1",))
    try:
        one_slot, _ = run_sweep(server, sweep_spec)
    finally:
        server.close()

    print("sweep table:\n")
    print_table(sweep)
    print("sweep with successive halving (rungs %s, factor 2):\n" % args.rungs)
    print_table(halving)
    print("| run | seconds | / separate | / one-server |")
    print("|---|---|---|---|")
    for name, secs in (("separate (5 servers)", separate), ("one-server (5 jobs)", one_server),
                       ("sweep", swept), ("sweep + halving", halved),
                       ("sweep, one CPU slot", one_slot)):
        print("| %s | %.1f | %.2f | %.2f |" % (name, secs, secs / separate, secs / one_server))
finally:
    shutil.rmtree(d, ignore_errors=True)
