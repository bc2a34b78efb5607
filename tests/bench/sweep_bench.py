#!/usr/bin/python3
"""Freeze-depth sweep vs the same jobs run one after another (issue 8).

Usage: sweep_bench.py SERVER_BIN MODEL_BIN SOURCE_DIR [--train-examples N]
       [--epochs E] [--hidden H]

Starts freezetune-server (one CPU slot) on 127.0.0.1:0, makes a 4-layer BERT
with the bert-base-uncased vocab, and on SST-2 (the first N sentences of
tests/fixtures/data/sst2/train_first10000.tsv; dev.tsv for validation) runs
  1. five jobs, depths {0, 1, 2, 3} and head-only, one after another, and
  2. one sweep over the same five candidates,
with the same hyperparameters, in this one process run. Prints both wall
times, the ratio sweep/sequential, and the sweep's table (Markdown).
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
args = p.parse_args()

from freezetune import Client  # noqa: E402

d = tempfile.mkdtemp(prefix="ft_sweep_bench_")
vocab = os.path.join(args.source_dir, "tests/fixtures/data/bert-base-uncased-vocab.txt")
subprocess.run([args.model_bin, "init", "--out", d + "/model", "--vocab", vocab, "--layers", "4",
                "--hidden", str(args.hidden), "--heads", "2", "--intermediate", str(args.hidden * 4),
                "--max-position", "128", "--seed", "7"], check=True, capture_output=True)
sst2 = os.path.join(args.source_dir, "tests/fixtures/data/sst2")
with open(sst2 + "/train_first10000.tsv") as src, open(d + "/train.tsv", "w") as dst:
    for i, line in enumerate(src):
        if i > args.train_examples:
            break
        dst.write(line)
shutil.copy(sst2 + "/dev.tsv", d + "/dev.tsv")

port_file = d + "/port"
log = open(d + "/server.log", "w")
server = subprocess.Popen([args.server_bin, "--listen=127.0.0.1:0", "--port_file=" + port_file,
                           "--metrics_listen=127.0.0.1:0", "--data_dir=" + d + "/server",
                           "--data_roots=" + d, "--cpu_slots=1"], stdout=log, stderr=subprocess.STDOUT)
deadline = time.time() + 60
while not (os.path.exists(port_file) and open(port_file).read().endswith("\n")):
    if server.poll() is not None or time.time() > deadline:
        sys.exit("server did not start: " + open(d + "/server.log").read())
    time.sleep(0.05)
client = Client("127.0.0.1:" + open(port_file).read().strip(), timeout=120)

template = {"modelUri": "file://" + d + "/model", "train": {"uri": "file://" + d + "/train.tsv"},
            "validation": {"uri": "file://" + d + "/dev.tsv"},
            "hyperparameters": {"epochs": args.epochs, "batchSize": 32, "learningRate": 1e-4,
                                "maxSeqLength": 64, "logEverySteps": 50}}
freezes = [{"bottom": {"numLayers": n}} for n in range(4)] + [{"headOnly": {}}]

try:
    t0 = time.monotonic()
    for f in freezes:
        job = client.submit(dict(template, freeze=f))
        for _ in client.watch(job.id):
            pass
        state = client.get(job.id).state
        if state != 3:
            sys.exit("job %s ended in state %d" % (job.id, state))
    sequential = time.monotonic() - t0

    t0 = time.monotonic()
    sweep = client.submit_sweep({"job": template, "freezeDepths": [0, 1, 2, 3], "includeHeadOnly": True})
    for _ in client.watch_sweep(sweep.id):
        pass
    swept = time.monotonic() - t0
    sweep = client.get_sweep(sweep.id)

    print("| candidate | frozen depth | trainable params | best %s | step | wall s | state |"
          % sweep.selection_metric)
    print("|---|---|---|---|---|---|---|")
    for i, t in enumerate(sweep.trials):
        mark = " (winner)" if i == sweep.winner_index else ""
        print("| %s%s | %d | %d | %.4f | %d | %.1f | %s |" % (
            t.label, mark, t.frozen_depth, t.trainable_parameters, t.best_metric, t.best_step,
            t.wall_seconds, {3: "finished", 4: "stopped early", 5: "failed", 6: "cancelled"}.get(t.state, str(t.state))))
    print()
    print("sequential five jobs: %.1f s; sweep: %.1f s; ratio sweep/sequential = %.2f"
          % (sequential, swept, swept / sequential))
finally:
    client.close()
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=60)
    log.close()
    shutil.rmtree(d, ignore_errors=True)
