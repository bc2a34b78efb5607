#!/usr/bin/env python3
"""Resident memory and speed of one masked-LM job under each allocator.

    mlm_memory_bench.py SERVER_BIN MODEL_BIN DATA_DIR [--steps N] [--rounds R]

A masked-LM job's biggest temporaries, the [masked tokens, vocab] logits and
their gradients, change size every step (the number of masked tokens
varies). With the server's malloc thresholds (base/malloc_tuning.h) glibc
keeps freed blocks for reuse, so the resident set grows during such a job,
and it is given back when the job ends. This benchmark shows how big that
growth is, whether it is a leak, and what the other allocators trade for it.

Each configuration runs one MLM job (a 2-layer, hidden-128 BERT with the
bert-base-uncased vocab; SST-2 sentences, batch 64, max length 64) on a
fresh real server, sampling its VmRSS every 0.25 s:
  glibc-tuned   the default: the server's own mallopt thresholds
  glibc         glibc's defaults (MALLOC_TOP_PAD_ set, which turns the
                server's tuning off without changing glibc's behaviour)
  jemalloc, tcmalloc  LD_PRELOAD, where installed (the server leaves them
                untuned)
Configurations alternate within each round, so that a busy machine slows
them alike; compare rows of one run. Prints a table: wall seconds, RSS at
10/50/90% of the job, peak RSS, and RSS after the job ended.

Needs /usr/bin/python3 with grpcio and PYTHONPATH holding client/python and
<build>/python (tests/bench/run.sh mlm-memory sets it).
"""
import argparse
import os
import random
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_server import Server, run_job  # noqa: E402

LIBDIR = "/usr/lib/x86_64-linux-gnu"
CONFIGS = [("glibc-tuned", {}),
           ("glibc", {"MALLOC_TOP_PAD_": "131072"}),
           ("jemalloc", {"LD_PRELOAD": LIBDIR + "/libjemalloc.so.2"}),
           ("tcmalloc", {"LD_PRELOAD": LIBDIR + "/libtcmalloc_minimal.so.4"})]


def rss_mib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def log_field(path, key):
    """The value of a "  key: value" line of the server's start-up log."""
    with open(path) as f:
        return next((l.split(":", 1)[1].strip() for l in f if l.strip().startswith(key + ":")), "?")


def cpu_model():
    with open("/proc/cpuinfo") as f:
        return next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "?")


def run_config(name, env, args, work, model):
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        srv = Server(args.server_bin, work, "%s.%d" % (name, time.monotonic_ns()), [work],
                     flags=["--cpu_slots=1"])
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    samples, done = [], threading.Event()

    def sample():
        while not done.is_set():
            samples.append(rss_mib(srv.proc.pid))
            done.wait(0.25)

    sampler = threading.Thread(target=sample)
    sampler.start()
    spec = {"modelUri": "file://" + model, "task": {"type": "TASK_TYPE_MASKED_LM"},
            "train": {"uri": "file://" + work + "/train.txt"},
            "validation": {"uri": "file://" + work + "/val.txt"},
            "outputUri": "file://" + os.path.join(work, "out.%d" % time.monotonic_ns()),
            "hyperparameters": {"epochs": 1, "batchSize": 64, "learningRate": 5e-4,
                                "maxSeqLength": 64, "logEverySteps": 50, "seed": 1}}
    try:
        secs, _ = run_job(srv, spec)
        done.set()
        sampler.join()
        time.sleep(0.5)  # the job's end releases the cached memory
        after = rss_mib(srv.proc.pid)
        malloc, blas_core = (log_field(srv.log_path, k) for k in ("malloc", "blas_core"))
    finally:
        done.set()
        srv.close()
    n = len(samples)
    at = [samples[min(n - 1, int(n * f))] for f in (0.1, 0.5, 0.9)]
    return {"config": name, "seconds": secs, "rss": at, "peak": max(samples), "after": after,
            "malloc": malloc, "blas_core": blas_core}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("server_bin")
    p.add_argument("model_bin")
    p.add_argument("data_dir")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    work = tempfile.mkdtemp(prefix="ft_mlm_memory_")
    model = work + "/model"
    subprocess.run([args.model_bin, "init", "--out", model, "--vocab",
                    args.data_dir + "/bert-base-uncased-vocab.txt", "--layers", "2", "--hidden", "128",
                    "--heads", "2", "--intermediate", "512", "--max-position", "128", "--seed", "7"],
                   check=True, capture_output=True)
    with open(args.data_dir + "/sst2/train.tsv", encoding="utf-8") as f:
        lines = [row.split("\t")[0] for row in f.read().splitlines()[1:]]
    random.Random(0).shuffle(lines)
    with open(work + "/train.txt", "w", encoding="utf-8") as f:
        f.write("\n".join(lines[1000:1000 + 64 * args.steps]) + "\n")
    with open(work + "/val.txt", "w", encoding="utf-8") as f:
        f.write("\n".join(lines[:500]) + "\n")
    configs = [(n, e) for n, e in CONFIGS if "LD_PRELOAD" not in e or os.path.exists(e["LD_PRELOAD"])]
    print("MLM job: %d steps of 64 SST-2 sentences; %s" % (args.steps, cpu_model()), flush=True)
    print("| round | allocator | wall s | RSS MiB at 10 / 50 / 90% | peak RSS MiB | RSS after the job MiB |")
    print("|---|---|---|---|---|---|")
    blas_cores = set()
    for r in range(1, args.rounds + 1):
        for name, env in configs:
            row = run_config(name, env, args, work, model)
            blas_cores.add(row["blas_core"])
            print("| %d | %s (%s) | %.1f | %.0f / %.0f / %.0f | %.0f | %.0f |" % (
                r, name, row["malloc"], row["seconds"], *row["rss"], row["peak"], row["after"]),
                flush=True)
    print("OpenBLAS core: " + ", ".join(sorted(blas_cores)))
    subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
