#!/usr/bin/python3
"""LoRA numerics against an independent float64 reference (Debian's torch).

The reference reads a PEFT adapter directory the way PEFT names things
(adapter_config.json: r, lora_alpha, target_modules as a full-match regex;
adapter_model.safetensors keys "base_model.model.<module>.lora_A.weight",
".lora_B.weight", "base_model.model.<param>" for modules_to_save and
"...<module>.base_layer.bias" inside an adapted layer) and computes
    y = x W^T + b + (lora_alpha / r) * (x A^T) B^T
unmerged, in float64, with the BERT of bert_numerics_test.py. It checks, on
SST-2 dev sentences, that:
  * `freezetune-model predict --adapter` (base + adapter, unmerged) and
  * `freezetune-model merge-adapter` followed by `predict` (merged weights)
both match the reference within 1e-4, and that the adapter moves the logits
(so the check can fail). The adapter is either written here (random A, B,
head and one base-layer bias: --adapter not given) or one a freezetune job
wrote (--adapter DIR --base DIR, used by the end-to-end test).

Exit status 0 on success, 1 on mismatch, 77 (ctest SKIP) without torch.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
try:
    import torch
    import bert_numerics_test as ref
except ImportError as e:  # pragma: no cover
    print(f"SKIP: {e}")
    sys.exit(77)

TOL = 1e-4
PREFIX = "base_model.model."


def read_adapter(adapter_dir):
    """(config, {module: (A, B, scaling)}, {param name: tensor}) in PEFT's layout."""
    config = json.load(open(os.path.join(adapter_dir, "adapter_config.json")))
    assert config["peft_type"] == "LORA", config
    scaling = config["lora_alpha"] / config["r"]
    tensors = ref.read_safetensors(os.path.join(adapter_dir, "adapter_model.safetensors"))
    a, b, params = {}, {}, {}
    for key, t in tensors.items():
        assert key.startswith(PREFIX), key
        name = key[len(PREFIX):]
        m = re.fullmatch(r"(.*)\.lora_([AB])\.weight", name)
        if m:
            (a if m.group(2) == "A" else b)[m.group(1)] = t
        else:
            params[name.replace(".base_layer.", ".")] = t
    assert a.keys() == b.keys(), (sorted(a), sorted(b))
    return config, {m: (a[m], b[m], scaling) for m in a}, params


def lora_linear(w, adapters):
    def lin(x, p):
        y = x @ w[p + ".weight"].T + w[p + ".bias"]
        if p in adapters:
            a, b, s = adapters[p]
            y = y + (x @ a.T) @ b.T * s
        return y
    return lin


def write_random_adapter(path, base_w, cfg, gen):
    """A PEFT adapter as PEFT would save it, with every part non-trivial."""
    os.makedirs(path)
    pattern = r"bert\.encoder\.layer\.\d+\.attention\.self\.(query|value)|.*\.intermediate\.dense"
    modules = sorted({n[:-len(".weight")] for n in base_w
                      if n.endswith(".weight") and re.fullmatch(pattern, n[:-len(".weight")])})
    assert len(modules) == 3 * cfg["num_hidden_layers"], modules
    r, alpha = 4, 12.0
    tensors = []
    for m in modules:
        out_f, in_f = base_w[m + ".weight"].shape
        tensors.append((PREFIX + m + ".lora_A.weight",
                        (torch.rand((r, in_f), generator=gen, dtype=torch.float64) - 0.5) * 0.4))
        tensors.append((PREFIX + m + ".lora_B.weight",
                        0.1 * torch.randn((out_f, r), generator=gen, dtype=torch.float64)))
    for n in ("classifier.weight", "classifier.bias"):
        tensors.append((PREFIX + n, 0.2 * torch.randn(base_w[n].shape, generator=gen, dtype=torch.float64)))
    # A bias trained outside modules_to_save, inside an adapted layer.
    q = modules[0]
    tensors.append((PREFIX + q + ".base_layer.bias",
                    0.2 * torch.randn(base_w[q + ".bias"].shape, generator=gen, dtype=torch.float64)))
    tensors = [(n, t.float().double()) for n, t in tensors]
    ref.write_safetensors(os.path.join(path, "adapter_model.safetensors"), tensors)
    json.dump({"peft_type": "LORA", "task_type": "SEQ_CLS", "r": r, "lora_alpha": alpha,
               "lora_dropout": 0.0, "target_modules": pattern, "modules_to_save": ["classifier"],
               "bias": "all", "base_model_name_or_path": "unused"},
              open(os.path.join(path, "adapter_config.json"), "w"))


def make_base(tool, shared, workdir, gen):
    base = os.path.join(workdir, "base")
    ref.run([tool, "init", "--out", base, "--vocab",
             os.path.join(shared, "data", "bert-base-uncased-vocab.txt"), "--layers", "2",
             "--hidden", "64", "--heads", "4", "--intermediate", "128", "--max-position", "128",
             "--num-labels", "3", "--seed", "5"])
    init = ref.read_safetensors(os.path.join(base, "model.safetensors"))
    # As in bert_numerics_test: a scale where every operation moves the output.
    w = {}
    for name, t in init.items():
        if "LayerNorm.weight" in name:
            w[name] = 1.0 + 0.3 * torch.randn(t.shape, generator=gen, dtype=torch.float64)
        else:
            w[name] = 0.15 * torch.randn(t.shape, generator=gen, dtype=torch.float64)
    w = {k: v.float().double() for k, v in w.items()}
    ref.write_safetensors(os.path.join(base, "model.safetensors"), [(n, w[n]) for n in init])
    return base


def check(tool, base, adapter, workdir, sentences, max_length, min_effect):
    cfg = json.load(open(os.path.join(base, "config.json")))
    base_w = ref.read_safetensors(os.path.join(base, "model.safetensors"))
    base_w = {(k if k.startswith(("bert.", "classifier.")) else "bert." + k): v for k, v in base_w.items()}
    config, adapters, params = read_adapter(adapter)
    w = dict(base_w)
    for name, t in params.items():
        assert name in w and w[name].shape == t.shape, name
        w[name] = t
    examples = "".join(json.dumps({"text": s}) + "\n" for s in sentences)
    input_path = os.path.join(workdir, "input.jsonl")
    with open(input_path, "w") as f:
        f.write(examples)
    encodings = [json.loads(l) for l in ref.run(
        [tool, "tokenize", "--model", base, "--max-length", str(max_length)], stdin=examples).splitlines()]
    merged = os.path.join(workdir, "merged")
    shutil.rmtree(merged, ignore_errors=True)
    ref.run([tool, "merge-adapter", "--model", base, "--adapter", adapter, "--out", merged])
    runs = {
        "base+adapter (unmerged)": ref.run([tool, "predict", "--model", base, "--adapter", adapter,
                                            "--input", input_path, "--batch-size", "16",
                                            "--max-length", str(max_length)]).splitlines(),
        "merged": ref.run([tool, "predict", "--model", merged, "--input", input_path,
                           "--batch-size", "16", "--max-length", str(max_length)]).splitlines(),
    }
    lin = lora_linear(w, adapters)
    refs = [ref.reference_logits(w, cfg, e["ids"], e["type_ids"], linear=lin) for e in encodings]
    # Without the adapters (base weights + saved head) the logits must differ.
    plain = [ref.reference_logits(w, cfg, e["ids"], e["type_ids"]) for e in encodings]
    effect = max((r - p).abs().max().item() for r, p in zip(refs, plain))
    ok = effect > min_effect
    print(f"adapter: {len(adapters)} LoRA layers (r={config['r']}, alpha={config['lora_alpha']}), "
          f"{len(params)} saved base tensors; largest logit change the adapters make {effect:.3e}")
    for variant, lines in runs.items():
        assert len(lines) == len(sentences), (variant, len(lines))
        diff = max((torch.tensor(json.loads(l)["logits"], dtype=torch.float64) - r).abs().max().item()
                   for l, r in zip(lines, refs))
        status = "ok" if diff <= TOL else "FAIL"
        ok = ok and status == "ok"
        print(f"{variant}: {len(lines)} sentences, max abs diff vs float64 reference {diff:.3e} "
              f"(tol {TOL}) {status}")
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tool", required=True, help="path to freezetune-model")
    ap.add_argument("--shared", required=True, help="the shared data dir (../shared)")
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--base", help="base model dir of --adapter")
    ap.add_argument("--adapter", help="a PEFT adapter dir written by a freezetune job")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--max-length", type=int, default=64)
    args = ap.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    os.makedirs(args.workdir)
    gen = torch.Generator().manual_seed(4321)
    if args.adapter:
        base, adapter = args.base, args.adapter
    else:
        base = make_base(args.tool, args.shared, args.workdir, gen)
        adapter = os.path.join(args.workdir, "adapter")
        write_random_adapter(adapter, ref.read_safetensors(os.path.join(base, "model.safetensors")),
                             json.load(open(os.path.join(base, "config.json"))), gen)
    sentences = []
    with open(os.path.join(args.shared, "data", "sst2", "dev.tsv"), encoding="utf-8") as f:
        next(f)
        for line in f:
            sentences.append(line.rstrip("\n").split("\t")[0])
            if len(sentences) == args.n:
                break
    # A random adapter must move the logits well beyond the tolerance; a
    # trained one only has to have moved them at all (B left zero).
    min_effect = 0.0 if args.adapter else 100 * TOL
    sys.exit(0 if check(args.tool, base, adapter, args.workdir, sentences, args.max_length,
                        min_effect) else 1)


if __name__ == "__main__":
    main()
