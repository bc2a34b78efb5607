#!/usr/bin/env python3
"""gpu_bench on the CPU with a tiny model (ctest gpu_bench_smoke): it must run
fp32 and bf16 in every mode and write JSON with a positive rate for each.

    gpu_bench_smoke.py GPU_BENCH OUT.json
"""
import json
import subprocess
import sys

bench, out = sys.argv[1], sys.argv[2]
subprocess.run([bench, "--device", "cpu", "--layers", "2", "--hidden", "32", "--heads", "2",
                "--intermediate", "64", "--seq", "32", "--batch", "8", "--steps", "3", "--epochs", "2",
                "--precisions", "fp32,bf16", "--modes", "full,bottom1,head_only", "--json", out],
               check=True)
runs = json.load(open(out))["runs"]
assert [(r["precision"], r["mode"]) for r in runs] == [
    (p, m) for p in ("fp32", "bf16") for m in ("full", "bottom1", "head_only")], runs
for r in runs:
    assert r["samples_per_second"] > 0, r
    assert len(r["epoch_samples_per_second"]) == 2, r
    assert ("mfu_vs_bf16_matmul" in r) == (r["mode"] != "head_only"), r
print("ok:", ", ".join(f"{r['precision']}/{r['mode']} {r['samples_per_second']:.0f}/s" for r in runs))
