#!/usr/bin/python3
"""Tables and ratios from the JSON lines tests/bench/run.sh collects.

Usage: summarize.py RESULTS.jsonl. Each line carries "bench" (steps, cache,
memory, memory_rss, acceptance, acceptance_pytorch) and "side" (cpp or
pytorch). Medians over rounds, so one disturbed round does not decide.
"""
import json
import statistics
import sys

RECIPES = ["full", "bottom_half", "head_only"]


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def main():
    rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    by = lambda **kw: [r for r in rows if all(r.get(k) == v for k, v in kw.items())]

    steps = by(bench="steps")
    if steps:
        r0 = steps[0]
        print(f"\n## Step time ({r0.get('batch_size')} x <= {r0.get('max_len', 64)} tokens, "
              f"{r0['steps']} steps, first {r0['warmup_steps_skipped']} skipped; "
              f"median over {len(by(bench='steps', side='cpp', recipe='full'))} rounds; "
              f"threads cpp={r0['threads']})")
        print(f"| recipe | trainable | C++ ms/step | PyTorch ms/step | C++/PyTorch time | C++ ex/s | PyTorch ex/s |")
        print("|---|---|---|---|---|---|---|")
        t = {}
        for recipe in RECIPES:
            c = med([r["median_step_seconds"] for r in by(bench="steps", side="cpp", recipe=recipe)])
            p = med([r["median_step_seconds"] for r in by(bench="steps", side="pytorch", recipe=recipe)])
            t[recipe] = (c, p)
            tr = by(bench="steps", side="cpp", recipe=recipe)
            b = r0["batch_size"]
            print(f"| {recipe} | {tr[0]['trainable_parameters'] if tr else '?'} | {c*1e3:.1f} | {p*1e3:.1f} | "
                  f"{c/p:.2f} | {b/c:.0f} | {b/p:.0f} |")
        c_full, p_full = t["full"]
        print(f"\nbottom_half/full step time: C++ {t['bottom_half'][0]/c_full:.2f}, "
              f"PyTorch {t['bottom_half'][1]/p_full:.2f} (goal <= 0.75)")
        print(f"head_only/full step time:   C++ {t['head_only'][0]/c_full:.2f}, "
              f"PyTorch {t['head_only'][1]/p_full:.2f}")

    cache = by(bench="cache")
    if cache:
        print("\n## Head-only, epochs 2-3 (sum of step times, median over rounds)")
        print("| run | epoch 1 s | epochs 2+ s | cache hits |")
        print("|---|---|---|---|")
        res = {}
        for name, sel in [("C++ no cache", dict(side="cpp", cache_bytes=0)),
                          ("C++ prefix cache", dict(side="cpp")),
                          ("PyTorch", dict(side="pytorch"))]:
            rs = [r for r in by(bench="cache", **sel)
                  if name != "C++ prefix cache" or r.get("cache_bytes", 0) > 0]
            e1 = med([r["epoch_seconds"][0] for r in rs])
            e2 = med([sum(r["epoch_seconds"][1:]) for r in rs])
            res[name] = e2
            hits = rs[0].get("prefix_cache_hits", "-") if rs else "-"
            print(f"| {name} | {e1:.3f} | {e2:.3f} | {hits} |")
        print(f"\nepoch 2+ speed-up from the cache: {res['C++ no cache']/res['C++ prefix cache']:.1f}x "
              f"(goal >= 10x); vs PyTorch: {res['PyTorch']/res['C++ prefix cache']:.1f}x")

    mem = by(bench="memory")
    if mem:
        print("\n## Memory (one process per recipe and side)")
        print("| recipe | C++ VmHWM MiB (counting alloc) | C++ VmHWM MiB (plain) | C++ model+optimizer MiB | "
              "C++ activation peak MiB | PyTorch VmHWM MiB | PyTorch autograd-saved MiB |")
        print("|---|---|---|---|---|---|---|")
        act, saved = {}, {}
        for recipe in RECIPES:
            c = (by(bench="memory", side="cpp", recipe=recipe) or [{}])[0]
            c2 = (by(bench="memory_rss", side="cpp", recipe=recipe) or [{}])[0]
            p = (by(bench="memory", side="pytorch", recipe=recipe) or [{}])[0]
            act[recipe] = c.get("activation_peak_bytes", float("nan"))
            saved[recipe] = p.get("saved_bytes_max", float("nan"))
            mib = lambda v: v / 2**20
            print(f"| {recipe} | {c.get('vm_hwm_kb', 0)/1024:.0f} | {c2.get('vm_hwm_kb', 0)/1024:.0f} | "
                  f"{mib(c.get('live_bytes_step_end', 0)):.1f} | {mib(act[recipe]):.1f} | "
                  f"{p.get('vm_hwm_kb', 0)/1024:.0f} | {mib(saved[recipe]):.1f} |")
        print(f"\nhead_only/full activation memory: C++ {act['head_only']/act['full']:.2f}, "
              f"PyTorch saved {saved['head_only']/saved['full']:.2f} (goal <= 0.4); "
              f"bottom_half/full: C++ {act['bottom_half']/act['full']:.2f}, "
              f"PyTorch saved {saved['bottom_half']/saved['full']:.2f}")

    acc = by(bench="acceptance") + by(bench="acceptance_pytorch")
    if acc:
        print("\n## Real-data acceptance (2 layers, hidden 128, from scratch)")
        print("| run | epochs | batch | lr | trainable | steps | wall s | train s | best acc (step) | final acc |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in acc:
            if r.get("side") == "pytorch":
                a = r["dev_accuracy"]
                print(f"| {r.get('name', 'pytorch')} (plain PyTorch loop) | {r['epochs']} | {r['batch_size']} | {r['lr']} | "
                      f"{r['trainable_parameters']} | {r['steps']} | {r.get('wall_seconds', 0):.0f} | "
                      f"{r['train_seconds']:.0f} | {max(a):.4f} | {a[-1]:.4f} |")
            else:
                print(f"| {r['name']} | {r['epochs']} | {r['batch_size']} | {r['learning_rate']:g} | "
                      f"{r['trainable_parameters']} | {r['steps']} | {r['wall_seconds']:.0f} | "
                      f"{r['train_seconds']:.0f} | {r['best_accuracy']:.4f} ({r['best_step']}) | "
                      f"{r['final_accuracy']:.4f} |")


if __name__ == "__main__":
    main()
