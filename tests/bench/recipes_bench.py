#!/usr/bin/python3
"""Freeze and adapter recipes on an MLM-pretrained vs a random BERT (issue 16).

Usage: recipes_bench.py SERVER_BIN MODEL_BIN DATA_DIR [--work DIR]
       [--results FILE.jsonl] [--pretrain-lines N] [--pretrain-epochs E]
       [--pretrained DIR] [--datasets trec,sst2] [--recipes R,R,...]
       [--inits pretrained,random] [--trec-epochs E] [--sst2-train N] ...

1. `freezetune-model init`: a 4-layer, hidden-256 BERT (4 heads,
   intermediate 1024, 128 positions, seed 7) with the bert-base-uncased vocab
   of DATA_DIR (../shared/data): the "random" model.
2. Pretraining: one masked-LM job (TASK_TYPE_MASKED_LM, 15% masking, 80/10/10)
   from the random model on the unlabelled training text of SST-2 (sentences),
   TREC (questions) and RTE (both sentences of each pair), shuffled with a
   fixed seed; --mlm-val-lines of them are held out as its validation set.
   Its output is the "pretrained" model (no pooler: MLM does not train one,
   so classification jobs on it start with a fresh pooler). --pretrained DIR
   reuses an earlier run's output instead.
3. Fine-tuning: every recipe on TREC (train_5500 -> TREC_10, 6 coarse classes)
   and on SST-2 (the first --sst2-train sentences of train.tsv -> dev.tsv),
   from the pretrained and from the random model, with the same
   hyperparameters and seed. Recipes: full; bottom-N for N = 1..layers
   (embeddings + the first N layers frozen); head-only; BitFit (bias-only);
   LoRA rank 4 and rank 16 on query/value; LoRA rank 8 on every Linear layer
   of the encoder and the pooler. Full, bottom-N use --lr; head-only, BitFit
   and LoRA --lr-light (they want a higher rate).
   Each job (and the pretraining) runs on a fresh freezetune-server with
   default flags, submitted and watched through the Python client, so that
   its wall time (submit to the last event) and the server's peak RSS
   (/proc VmHWM: the whole process, start-up included; the job result's
   peak_device_memory_bytes is CUDA-only) are its own. Outputs: the full
   recipe writes the usual full model; the other freeze recipes a delta
   (OUTPUT_FORMAT_DELTA: only the changed tensors); LoRA a PEFT adapter.
4. The sweep (--sweep-lrs, --sweep-args): sweep_bench.py on the pretrained
   model, depths 0-3 and head-only crossed with the learning rates, a sweep
   with successive halving against the same jobs run separately.

Prints one Markdown table per dataset and appends one JSON line per job to
--results (a job already there with the same dataset, init and recipe is not
run again, so an interrupted run resumes). Accuracy is the final evaluation's
(after the last epoch): TREC_10 is both validation and test set, so the
best-by-accuracy checkpoint would have seen the test labels.
"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_server import Server, dir_bytes, run_job  # noqa: E402

LAYERS, HIDDEN = 4, 256
QV = r"bert\.encoder\.layer\.\d+\.attention\.self\.(query|value)"
ALL_LINEAR = (r"bert\.encoder\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense"
              r"|intermediate\.dense|output\.dense)|bert\.pooler\.dense")


def recipes():
    """(name, FreezeSpec JSON, light lr?, output format) in table order."""
    out = [("full", {}, False, "OUTPUT_FORMAT_FULL")]
    out += [("bottom-%d" % n, {"bottom": {"numLayers": n}}, False, "OUTPUT_FORMAT_DELTA")
            for n in range(1, LAYERS + 1)]
    out += [("head-only", {"headOnly": {}}, True, "OUTPUT_FORMAT_DELTA"),
            ("bitfit", {"biasOnly": {}}, True, "OUTPUT_FORMAT_DELTA"),
            ("lora-qv-r4", {"lora": {"rank": 4, "targetModules": QV}}, True,
             "OUTPUT_FORMAT_PEFT_ADAPTER"),
            ("lora-qv-r16", {"lora": {"rank": 16, "targetModules": QV}}, True,
             "OUTPUT_FORMAT_PEFT_ADAPTER"),
            ("lora-all-r8", {"lora": {"rank": 8, "targetModules": ALL_LINEAR}}, True,
             "OUTPUT_FORMAT_PEFT_ADAPTER")]
    return out


p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
p.add_argument("server_bin")
p.add_argument("model_bin")
p.add_argument("data_dir")
p.add_argument("--work", default="", help="working directory (default: a temporary one, removed)")
p.add_argument("--results", default="", help="JSON lines, appended; existing jobs are skipped")
p.add_argument("--pretrained", default="", help="an earlier pretraining output; skips step 2")
p.add_argument("--pretrain-lines", type=int, default=0, help="0: the whole corpus")
p.add_argument("--pretrain-epochs", type=int, default=1)
p.add_argument("--pretrain-batch", type=int, default=64)
p.add_argument("--pretrain-lr", type=float, default=5e-4)
p.add_argument("--pretrain-evals", type=int, default=4, help="evaluations during pretraining")
p.add_argument("--mlm-val-lines", type=int, default=1000)
p.add_argument("--datasets", default="trec,sst2")
p.add_argument("--inits", default="pretrained,random")
p.add_argument("--recipes", default=",".join(r[0] for r in recipes()))
p.add_argument("--trec-epochs", type=int, default=2)
p.add_argument("--trec-train", type=int, default=0, help="the first N questions; 0: all")
p.add_argument("--sst2-train", type=int, default=6000)
p.add_argument("--sst2-epochs", type=int, default=1)
p.add_argument("--batch", type=int, default=32)
p.add_argument("--max-len", type=int, default=64)
p.add_argument("--lr", type=float, default=3e-4, help="full and bottom-N")
p.add_argument("--lr-light", type=float, default=1e-3, help="head-only, BitFit, LoRA")
p.add_argument("--seed", type=int, default=42)
p.add_argument("--sweep-lrs", default="1e-4,3e-4,1e-3",
               help="then sweep_bench.py on the pretrained model with these learning rates; "
                    "empty: no sweep")
p.add_argument("--sweep-args", default="--train-examples 6000 --rungs 40,100 --phases separate,halving",
               help="further sweep_bench.py arguments")
args = p.parse_args()

work = args.work or tempfile.mkdtemp(prefix="ft_recipes_bench_")
os.makedirs(work, exist_ok=True)
data = os.path.abspath(args.data_dir)
roots = [work, data] + ([os.path.dirname(os.path.abspath(args.pretrained))] if args.pretrained else [])
results = []
if args.results and os.path.exists(args.results):
    with open(args.results) as f:
        results = [json.loads(line) for line in f if line.strip()]


def record(row):
    results.append(row)
    if args.results:
        with open(args.results, "a") as f:
            f.write(json.dumps(row) + "\n")


def done(**key):
    return next((r for r in results if all(r.get(k) == v for k, v in key.items())), None)


def serve(name):
    return Server(args.server_bin, work, name, roots)


def unique(name):
    """A fresh directory name under work (reruns keep earlier outputs)."""
    i = 0
    while os.path.exists(os.path.join(work, "%s.%d" % (name, i))):
        i += 1
    return "%s.%d" % (name, i)


def run(name, spec, **info):
    """One job on a fresh server; records and returns its row."""
    srv = serve(unique("srv_" + name))
    try:
        idle, cpu0 = srv.vm_hwm_bytes(), srv.cpu_seconds()
        events = []
        secs, job = run_job(srv, spec, events)
        hwm, cpu = srv.vm_hwm_bytes(), srv.cpu_seconds() - cpu0
    finally:
        srv.close()
    res = job.result
    out_dir = spec["outputUri"][len("file://"):]
    row = dict(info, bench="recipes", wall_seconds=secs, cpu_seconds=cpu,
               train_seconds=res.train_seconds,
               steps=res.steps, trainable=res.trainable_parameters, total=res.total_parameters,
               frozen_verified=res.frozen_weights_verified, vm_hwm_bytes=hwm,
               idle_vm_hwm_bytes=idle, output_bytes=dir_bytes(out_dir),
               output_format=spec.get("outputFormat", "OUTPUT_FORMAT_FULL"), output=out_dir,
               final_accuracy=res.final_eval.accuracy, best_accuracy=res.best_eval.accuracy,
               final_loss=res.final_eval.loss, final_macro_f1=res.final_eval.macro_f1,
               evals=[{"step": e.eval.step, "loss": e.eval.loss, "accuracy": e.eval.accuracy}
                      for e in events if e.WhichOneof("kind") == "eval"])
    record(row)
    print("%-10s %-10s %-12s acc %.4f (best %.4f) trainable %d  %.0f s (CPU %.0f s)  peak RSS %.0f MiB  "
          "output %d B" % (info.get("dataset", ""), info.get("init", ""), info.get("recipe", ""),
                           row["final_accuracy"], row["best_accuracy"], row["trainable"], secs, cpu,
                           hwm / 2**20, row["output_bytes"]), flush=True)
    return row


def corpus():
    """Training text of SST-2, TREC and RTE, one example per line, shuffled."""
    lines = []
    with open(data + "/sst2/train.tsv", encoding="utf-8") as f:
        lines += [row.split("\t")[0] for row in f.read().splitlines()[1:]]
    with open(data + "/trec/train_5500.label", encoding="latin-1") as f:
        lines += [row.split(" ", 1)[1] for row in f.read().splitlines() if " " in row]
    with open(data + "/rte/train.tsv", encoding="utf-8") as f:
        for row in f.read().splitlines()[1:]:
            lines += row.split("\t")[1:3]
    lines = [" ".join(s.split()) for s in lines]
    lines = [s for s in lines if s]
    random.Random(0).shuffle(lines)
    return lines


def pretrain(random_dir):
    lines = corpus()
    val, train = lines[:args.mlm_val_lines], lines[args.mlm_val_lines:]
    if args.pretrain_lines:
        train = train[:args.pretrain_lines]
    for name, part in (("mlm_train.txt", train), ("mlm_val.txt", val)):
        with open(os.path.join(work, name), "w", encoding="utf-8") as f:
            f.write("\n".join(part) + "\n")
    steps = -(-len(train) // args.pretrain_batch) * args.pretrain_epochs
    out = os.path.join(work, unique("pretrained"))
    spec = {"modelUri": "file://" + random_dir, "task": {"type": "TASK_TYPE_MASKED_LM"},
            "train": {"uri": "file://" + work + "/mlm_train.txt"},
            "validation": {"uri": "file://" + work + "/mlm_val.txt"},
            "outputUri": "file://" + out, "displayName": "recipes bench: MLM pretraining",
            "hyperparameters": {"epochs": args.pretrain_epochs, "batchSize": args.pretrain_batch,
                                "learningRate": args.pretrain_lr, "warmupRatio": 0.05,
                                "maxSeqLength": args.max_len, "seed": args.seed,
                                "logEverySteps": 50,
                                "evalEverySteps": max(1, steps // args.pretrain_evals)}}
    print("pretraining: %d lines (%d held out), %d epochs, %d steps" % (
        len(train), len(val), args.pretrain_epochs, steps), flush=True)
    row = run("pretrain", spec, dataset="mlm", init="random", recipe="mlm-pretrain",
              lr=args.pretrain_lr, epochs=args.pretrain_epochs, train_examples=len(train))
    for e in row["evals"]:
        print("  step %6d  masked-token loss %.3f  accuracy %.4f" % (e["step"], e["loss"],
                                                                      e["accuracy"]))
    return out


def datasets():
    sst2_train = os.path.join(work, "sst2_train.tsv")
    with open(data + "/sst2/train.tsv", encoding="utf-8") as f:
        head = f.read().splitlines(keepends=True)[:args.sst2_train + 1]
    with open(sst2_train, "w", encoding="utf-8") as f:
        f.writelines(head)
    trec_train = data + "/trec/train_5500.label"
    if args.trec_train:
        trec_train = os.path.join(work, "trec_train.label")
        with open(data + "/trec/train_5500.label", "rb") as src, open(trec_train, "wb") as dst:
            dst.writelines(src.readlines()[:args.trec_train])
    with open(trec_train, "rb") as f:
        trec_n = sum(1 for line in f if line.strip())
    return {"trec": (trec_train, data + "/trec/TREC_10.label", args.trec_epochs, trec_n),
            "sst2": (sst2_train, data + "/sst2/dev.tsv", args.sst2_epochs, len(head) - 1)}


def fmt_int(n):
    return "{:,}".format(n)


def print_tables():
    fmt_short = {"OUTPUT_FORMAT_FULL": "full", "OUTPUT_FORMAT_DELTA": "delta",
                 "OUTPUT_FORMAT_PEFT_ADAPTER": "PEFT"}
    pre = done(recipe="mlm-pretrain")
    if pre:
        e = pre["evals"][-1] if pre["evals"] else {"loss": 0, "accuracy": 0}
        print("\nMLM pretraining: %s lines x %d epochs, %d steps, %.0f s (server CPU %.0f s), "
              "peak RSS %.0f MiB, final masked-token loss %.3f, accuracy %.4f" % (
                  fmt_int(pre["train_examples"]), pre["epochs"], pre["steps"], pre["wall_seconds"],
                  pre.get("cpu_seconds", 0), pre["vm_hwm_bytes"] / 2**20, e["loss"], e["accuracy"]))
    for ds in args.datasets.split(","):
        rows = [r for r in results if r.get("dataset") == ds]
        if not rows:
            continue
        first = rows[0]
        print("\n%s: %s train examples, %d epochs, batch %d, max length %d\n" % (
            ds, fmt_int(first["train_examples"]), first["epochs"], args.batch, args.max_len))
        print("| recipe | lr | trainable params | accuracy, pretrained | accuracy, random | "
              "pretrained - random | wall s (pre / rand) | server CPU s (pre / rand) | "
              "peak RSS MiB (pre / rand) | "
              "output (format) |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for name, _, _, _ in recipes():
            pr = done(dataset=ds, init="pretrained", recipe=name)
            rr = done(dataset=ds, init="random", recipe=name)
            if not (pr or rr):
                continue
            any_row = pr or rr
            acc = lambda r: "%.4f" % r["final_accuracy"] if r else "-"  # noqa: E731
            diff = ("%+.1f pt" % (100 * (pr["final_accuracy"] - rr["final_accuracy"]))
                    if pr and rr else "-")
            two = lambda f: " / ".join(f(r) if r else "-" for r in (pr, rr))  # noqa: E731
            out = " / ".join("%s" % fmt_int(r["output_bytes"]) for r in (pr, rr) if r)
            print("| %s | %g | %s | %s | %s | %s | %s | %s | %s | %s B (%s) |" % (
                name, any_row["lr"], fmt_int(any_row["trainable"]), acc(pr), acc(rr), diff,
                two(lambda r: "%.0f" % r["wall_seconds"]),
                two(lambda r: "%.0f" % r.get("cpu_seconds", 0)),
                two(lambda r: "%.0f" % (r["vm_hwm_bytes"] / 2**20)), out,
                fmt_short.get(any_row["output_format"], any_row["output_format"])))


try:
    random_dir = os.path.join(work, "random")
    if not os.path.isdir(random_dir):
        subprocess.run([args.model_bin, "init", "--out", random_dir, "--vocab",
                        data + "/bert-base-uncased-vocab.txt", "--layers", str(LAYERS),
                        "--hidden", str(HIDDEN), "--heads", "4", "--intermediate", str(HIDDEN * 4),
                        "--max-position", "128", "--seed", "7"], check=True, capture_output=True)
    models = {"random": random_dir}
    if "pretrained" in args.inits.split(","):
        earlier = done(recipe="mlm-pretrain")
        if args.pretrained:
            models["pretrained"] = os.path.abspath(args.pretrained)
        elif earlier and os.path.isdir(earlier["output"]):
            models["pretrained"] = earlier["output"]  # resuming: --results has it
        else:
            models["pretrained"] = pretrain(random_dir)
    chosen = args.recipes.split(",")
    for name in chosen:
        if name not in [r[0] for r in recipes()]:
            sys.exit("unknown recipe %r" % name)
    for ds, (train, val, epochs, n) in datasets().items():
        if ds not in args.datasets.split(","):
            continue
        for name, freeze, light, out_format in recipes():
            if name not in chosen:
                continue
            for init in args.inits.split(","):
                if done(dataset=ds, init=init, recipe=name):
                    continue
                lr = args.lr_light if light else args.lr
                out = os.path.join(work, unique("out_%s_%s_%s" % (ds, init, name)))
                run("%s_%s_%s" % (ds, init, name), {
                    "modelUri": "file://" + models[init], "train": {"uri": "file://" + train},
                    "validation": {"uri": "file://" + val}, "freeze": freeze,
                    "outputUri": "file://" + out, "outputFormat": out_format,
                    "displayName": "recipes bench: %s %s %s" % (ds, init, name),
                    "hyperparameters": {"epochs": epochs, "batchSize": args.batch,
                                        "learningRate": lr, "warmupRatio": 0.1,
                                        "maxSeqLength": args.max_len, "seed": args.seed,
                                        "logEverySteps": 100}},
                    dataset=ds, init=init, recipe=name, lr=lr, epochs=epochs, train_examples=n)
    print_tables()
    if args.sweep_lrs and "pretrained" in models:
        print("\nsweep: 5 depths x learning rates %s on the pretrained model\n" % args.sweep_lrs,
              flush=True)
        here = os.path.dirname(os.path.abspath(__file__))
        subprocess.run([sys.executable, os.path.join(here, "sweep_bench.py"), args.server_bin,
                        args.model_bin, os.path.dirname(os.path.dirname(here)), "--model",
                        models["pretrained"], "--lrs", args.sweep_lrs]
                       + (["--results", args.results] if args.results else [])
                       + args.sweep_args.split(), check=True)
finally:
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
