#!/usr/bin/python3
"""WatchSweep delivery latency: sweep event recorded -> event at the client.

Usage: sweep_watch_latency.py SERVER_BIN MODEL_BIN SOURCE_DIR [--rounds N]

Starts freezetune-server on 127.0.0.1:0 with a tiny 2-layer model, then N
times submits a sweep over depths {0, 1, 2, head-only} (128 examples, 2
epochs, an evaluation every 4 steps) and follows it with watch_sweep. For
every event stamped after the stream opened, latency = receipt time -
SweepEvent.time (stamped when SweepManager emits it; same machine, same
clock). Prints n, p50, mean, p90 and max in ms. Run it against two server
binaries to compare them. Needs PYTHONPATH=client/python:<build>/python.
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time

p = argparse.ArgumentParser()
p.add_argument("server_bin")
p.add_argument("model_bin")
p.add_argument("source_dir")
p.add_argument("--rounds", type=int, default=3)
args = p.parse_args()

from freezetune import Client  # noqa: E402

d = tempfile.mkdtemp(prefix="ft_sweep_watch_")
vocab = os.path.join(args.source_dir, "tests/fixtures/data/bert-base-uncased-vocab.txt")
subprocess.run([args.model_bin, "init", "--out", d + "/model", "--vocab", vocab, "--layers", "2",
                "--hidden", "32", "--heads", "2", "--intermediate", "64", "--max-position", "64"],
               check=True, capture_output=True)
with open(d + "/train.jsonl", "w") as f:
    for _ in range(64):
        f.write(json.dumps({"text": "a great movie", "label": 1}) + "\n")
        f.write(json.dumps({"text": "an awful movie", "label": 0}) + "\n")
port_file = d + "/port"
log = open(d + "/server.log", "w")
server = subprocess.Popen([args.server_bin, "--listen=127.0.0.1:0", "--port_file=" + port_file,
                           "--metrics_listen=", "--data_dir=" + d + "/server", "--data_roots=" + d,
                           "--threads=1"], stdout=log, stderr=subprocess.STDOUT)
deadline = time.time() + 60
while not (os.path.exists(port_file) and open(port_file).read().endswith("\n")):
    if server.poll() is not None or time.time() > deadline:
        raise SystemExit("server did not start; see " + d + "/server.log")
    time.sleep(0.05)
client = Client("127.0.0.1:" + open(port_file).read().strip())
latencies_ms = []
try:
    for _ in range(args.rounds):
        job = {"modelUri": "file://" + d + "/model", "train": {"uri": d + "/train.jsonl"},
               "hyperparameters": {"epochs": 2, "batchSize": 8, "maxSeqLength": 16,
                                   "logEverySteps": 1, "evalEverySteps": 4, "learningRate": 1e-3,
                                   "validationSplit": 0.25}}
        sweep = client.submit_sweep({"job": job, "freezeDepths": [0, 1, 2], "includeHeadOnly": True})
        opened = time.time()
        for event in client.watch_sweep(sweep.id):
            received = time.time()
            stamped = event.time.seconds + event.time.nanos / 1e9
            if stamped > opened:  # live, not replayed
                latencies_ms.append((received - stamped) * 1000)
finally:
    client.close()
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=30)
    log.close()
    shutil.rmtree(d)
latencies_ms.sort()
n = len(latencies_ms)
print("n=%d p50=%.1f ms mean=%.1f ms p90=%.1f ms max=%.1f ms" % (
    n, latencies_ms[n // 2], statistics.mean(latencies_ms), latencies_ms[int(n * 0.9)],
    latencies_ms[-1]))
