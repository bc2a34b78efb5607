#!/usr/bin/python3
"""Contract test for the freezetune-model tool (other programs script it):
init output layout, inspect (--json, --freeze-spec), tokenize against the
Hugging Face golden file, predict batching invariance, and exit statuses with
one-line errors. Standard library only."""
import argparse
import json
import os
import shutil
import subprocess
import sys

FAILURES = []


def check(cond, what):
    if not cond:
        FAILURES.append(what)
        print(f"FAIL: {what}")


def run(tool, *args, stdin=None):
    r = subprocess.run([tool, *args], input=stdin, capture_output=True, text=True)
    return r.returncode, r.stdout, r.stderr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tool", required=True)
    ap.add_argument("--shared", required=True)
    ap.add_argument("--workdir", required=True)
    args = ap.parse_args()
    tool = args.tool
    shutil.rmtree(args.workdir, ignore_errors=True)
    os.makedirs(args.workdir)
    vocab = os.path.join(args.shared, "data", "bert-base-uncased-vocab.txt")
    model = os.path.join(args.workdir, "m")

    # init with defaults: 2 layers, hidden 128, 2 heads, intermediate 512.
    rc, out, err = run(tool, "init", "--out", model, "--vocab", vocab)
    check(rc == 0, f"init rc {rc}: {err}")
    files = sorted(os.listdir(model))
    check(files == ["config.json", "model.safetensors", "tokenizer_config.json", "vocab.txt"],
          f"init files {files}")
    cfg = json.load(open(os.path.join(model, "config.json")))
    for key, want in (("num_hidden_layers", 2), ("hidden_size", 128), ("num_attention_heads", 2),
                      ("intermediate_size", 512), ("max_position_embeddings", 512),
                      ("vocab_size", 30522), ("model_type", "bert"),
                      ("architectures", ["BertForSequenceClassification"]),
                      ("id2label", {"0": "LABEL_0", "1": "LABEL_1"})):
        check(cfg.get(key) == want, f"config {key} = {cfg.get(key)!r}, want {want!r}")

    # Same seed, same weights; another seed, other weights.
    rc, _, _ = run(tool, "init", "--out", model + "_same", "--vocab", vocab)
    rc2, _, _ = run(tool, "init", "--out", model + "_other", "--vocab", vocab, "--seed", "1")
    same = open(os.path.join(model, "model.safetensors"), "rb").read()
    check(same == open(os.path.join(model + "_same", "model.safetensors"), "rb").read(),
          "init is not reproducible for a fixed seed")
    check(same != open(os.path.join(model + "_other", "model.safetensors"), "rb").read(),
          "init ignores --seed")

    # inspect --json
    rc, out, err = run(tool, "inspect", "--model", model, "--json")
    check(rc == 0, f"inspect rc {rc}: {err}")
    info = json.loads(out)
    params = info["parameters"]
    check(len(params) == 5 + 16 * 2 + 4, f"inspect lists {len(params)} parameters")
    check(params[0]["name"] == "bert.embeddings.word_embeddings.weight", params[0]["name"])
    check(params[-1]["name"] == "classifier.bias", params[-1]["name"])
    total = sum(p["numel"] for p in params)
    check(info["total_parameters"] == total, "total_parameters != sum of numel")
    check(info["trainable_parameters"] == total, "without a spec everything trains")
    check(all(p["dtype"] == "F32" for p in params), "dtype column")
    rc, out, _ = run(tool, "inspect", "--model", model)
    check(rc == 0 and out.strip().splitlines()[-1].startswith(f"total {total} parameters"),
          f"inspect text totals: {out.strip().splitlines()[-1:]}")

    # inspect --freeze-spec (protobuf JSON mapping of freezetune.v1.FreezeSpec)
    spec = os.path.join(args.workdir, "head_only.json")
    json.dump({"headOnly": {}}, open(spec, "w"))
    rc, out, err = run(tool, "inspect", "--model", model, "--freeze-spec", spec, "--json")
    if rc == 0:
        info = json.loads(out)
        trainable = [p["name"] for p in info["parameters"] if p["trainable"]]
        check(trainable == ["classifier.weight", "classifier.bias"], f"head_only trains {trainable}")
        check(info["trainable_parameters"] == 128 * 2 + 2, "head_only trainable count")
    else:
        check("UNIMPLEMENTED" in err or "no freeze-plan compiler" in err,
              f"inspect --freeze-spec rc {rc}: {err}")
    bad_spec = os.path.join(args.workdir, "bad.json")
    json.dump({"rules": [{"pattern": "bert\\.nothing\\..*", "action": "FREEZE_ACTION_FREEZE"}]},
              open(bad_spec, "w"))
    rc, out, err = run(tool, "inspect", "--model", model, "--freeze-spec", bad_spec)
    check(rc == 1 and err.count("\n") == 1, f"rule matching nothing: rc {rc}, stderr {err!r}")

    # tokenize: RTE pairs against the Hugging Face golden file.
    golden = [json.loads(l) for l in
              open(os.path.join(args.shared, "golden", "tokenizer", "rte-dev.golden.jsonl"))][:40]
    stdin = "".join(json.dumps({"text": g["text"], "text_pair": g.get("text_pair")}) + "\n"
                    for g in golden)
    rc, out, err = run(tool, "tokenize", "--model", model, stdin=stdin)
    check(rc == 0, f"tokenize rc {rc}: {err}")
    lines = [json.loads(l) for l in out.splitlines()]
    check(len(lines) == len(golden), f"tokenize emitted {len(lines)} lines")
    mismatched = sum(1 for g, l in zip(golden, lines)
                     if (g["ids"], g["type_ids"], g["tokens"]) != (l["ids"], l["type_ids"], l["tokens"]))
    check(mismatched == 0, f"tokenize differs from golden on {mismatched} of {len(golden)} pairs")
    check(list(lines[0].keys()) == ["ids", "type_ids", "tokens"], f"key order {list(lines[0])}")
    rc, out, _ = run(tool, "tokenize", "--model", model, "--max-length", "8", stdin=stdin)
    check(rc == 0 and all(len(json.loads(l)["ids"]) <= 8 for l in out.splitlines()),
          "--max-length not applied")

    # predict: batch size must not change the logits (padding is masked).
    inp = os.path.join(args.workdir, "in.jsonl")
    with open(inp, "w") as f:
        for g in golden[:12]:
            f.write(json.dumps({"text": g["text"], "text_pair": g.get("text_pair")}) + "\n")
        f.write("\n")  # blank lines are skipped
    results = {}
    for bs in ("1", "5"):
        rc, out, err = run(tool, "predict", "--model", model, "--input", inp, "--batch-size", bs)
        check(rc == 0, f"predict rc {rc}: {err}")
        results[bs] = [json.loads(l) for l in out.splitlines()]
    check(len(results["1"]) == 12, f"predict emitted {len(results['1'])} lines")
    diff = max(abs(a - b) for r1, r5 in zip(results["1"], results["5"])
               for a, b in zip(r1["logits"], r5["logits"]))
    check(diff < 1e-5, f"batch size changes logits by {diff}")
    check(all(r["label"] in ("LABEL_0", "LABEL_1") and len(r["logits"]) == 2 for r in results["1"]),
          "predict output shape")

    # Errors: non-zero exit, one line on stderr.
    with open(os.path.join(args.workdir, "bad.jsonl"), "w") as f:
        f.write('{"text": "ok"}\n[1, 2]\n')
    corrupt = os.path.join(args.workdir, "corrupt")
    shutil.copytree(model, corrupt)
    with open(os.path.join(corrupt, "model.safetensors"), "r+b") as f:
        f.truncate(1000)
    cases = [
        ((), 2, "usage"),
        (("frobnicate",), 2, "unknown command"),
        (("predict", "--input", inp), 2, "--model: required"),
        (("init", "--out", model + "_x", "--vocab", vocab, "--layers", "two"), 2, "--layers: not an integer"),
        (("inspect", "--model", model, "--bogus"), 2, "unknown flag --bogus"),
        (("predict", "--model", "/nonexistent", "--input", inp), 1, "/nonexistent"),
        (("predict", "--model", model, "--input", os.path.join(args.workdir, "bad.jsonl")), 1,
         "bad.jsonl:2: not a JSON object"),
        (("predict", "--model", corrupt, "--input", inp), 1, "model.safetensors"),
        (("init", "--out", model + "_y", "--vocab", vocab, "--hidden", "64", "--heads", "3"), 1,
         "num_attention_heads: must divide hidden_size (64 % 3 != 0)"),
    ]
    for argv, want_rc, want_msg in cases:
        rc, _, err = run(tool, *argv)
        check(rc == want_rc and want_msg in err and err.count("\n") == 1,
              f"{' '.join(argv) or '(no args)'}: rc {rc} (want {want_rc}), stderr {err!r}")

    print("ok" if not FAILURES else f"{len(FAILURES)} failure(s)")
    sys.exit(1 if FAILURES else 0)


if __name__ == "__main__":
    main()
