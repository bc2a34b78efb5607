#!/usr/bin/env python3
"""Puts gpu_bench (freezetune) and gpu_hf_bench.py (transformers) results of
one run side by side: per (precision, mode) samples/s of each, the ratio
freezetune / transformers, peak memory of each, and freezetune's model FLOP
utilisation against the bf16 matmul rate measured in the same run. Targets
(issue 13): ratio >= 1.2 and MFU >= 0.35 for full fine-tuning in bf16.

    gpu_bench_report.py FREEZETUNE.json HF.json   (prints JSON)
"""
import json
import sys


def main():
    ours = json.load(open(sys.argv[1]))
    theirs = json.load(open(sys.argv[2]))
    hf = {(r["precision"], r["mode"]): r for r in theirs["runs"]}
    rows = []
    for r in ours["runs"]:
        key = (r["precision"], r["mode"])
        row = {"precision": key[0], "mode": key[1],
               "freezetune_samples_per_second": r["samples_per_second"],
               "freezetune_peak_bytes": r["peak_device_memory_bytes"],
               "mfu_vs_bf16_matmul": r.get("mfu_vs_bf16_matmul")}
        if key in hf:
            row["hf_samples_per_second"] = hf[key]["samples_per_second"]
            row["hf_peak_bytes"] = hf[key]["peak_device_memory_bytes"]
            if hf[key]["samples_per_second"] > 0:
                row["ratio"] = r["samples_per_second"] / hf[key]["samples_per_second"]
        rows.append(row)
    full = next((r for r in rows if r["precision"] == "bf16" and r["mode"] == "full"), None)
    targets = {}
    if full is not None:
        targets = {"ratio_at_least_1.2": full.get("ratio", 0) >= 1.2,
                   "mfu_at_least_0.35": (full.get("mfu_vs_bf16_matmul") or 0) >= 0.35}
    print(json.dumps({"matmul_bf16_tflops": ours["matmul_bf16_flops"] / 1e12,
                      "torch": theirs.get("torch_version"),
                      "transformers": theirs.get("transformers_version"),
                      "rows": rows, "targets": targets}, indent=1))


if __name__ == "__main__":
    main()
