#!/usr/bin/python3
"""Numerical reference test for freezetune-model's BERT.

Builds BertForSequenceClassification independently from torch primitives in
float64 (no transformers, no freezetune code), reads model.safetensors with a
hand-written parser, and checks that `freezetune-model predict` logits on
SST-2 dev sentences match within 1e-4 for:
  * a checkpoint with "bert." prefixes (F32),
  * the same weights without the prefix plus an int64 position_ids buffer
    (as BertModel checkpoints store them),
  * the same weights stored as BF16 (reference uses the rounded weights).
Token ids come from `freezetune-model tokenize`. The reference runs each
sentence alone (no padding), the tool runs padded batches, so the attention
mask is exercised too.

Exit status 0 on success, 1 on mismatch, 77 (ctest SKIP) without torch.
"""
import argparse
import json
import math
import os
import shutil
import struct
import subprocess
import sys

try:
    import numpy as np
    import torch
except ImportError as e:  # pragma: no cover
    print(f"SKIP: {e}")
    sys.exit(77)

TOL = 1e-4


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    data = blob[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        raw = data[begin:end]
        dt = info["dtype"]
        if dt == "F32":
            arr = np.frombuffer(raw, dtype="<f4").astype(np.float64)
        elif dt == "F16":
            arr = np.frombuffer(raw, dtype="<f2").astype(np.float64)
        elif dt == "BF16":
            arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view("<f4").astype(np.float64)
        elif dt == "I64":
            arr = np.frombuffer(raw, dtype="<i8")
        else:
            raise ValueError(f"{path}: {name}: dtype {dt} not handled by the reference")
        out[name] = torch.from_numpy(arr.copy()).reshape(info["shape"])
    return out


def write_safetensors(path, tensors, dtype="F32"):
    """tensors: list of (name, float64 torch tensor or int64 tensor)."""
    header = {"__metadata__": {"format": "pt"}}
    chunks = []
    offset = 0
    for name, t in tensors:
        arr = t.numpy()
        if arr.dtype == np.int64:
            raw, dt = arr.astype("<i8").tobytes(), "I64"
        elif dtype == "F32":
            raw, dt = arr.astype("<f4").tobytes(), "F32"
        elif dtype == "BF16":
            # Round to nearest even, as torch does.
            bits = arr.astype("<f4").view("<u4").astype(np.uint64)
            rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2")
            raw, dt = rounded.tobytes(), "BF16"
        else:
            raise ValueError(dtype)
        header[name] = {"dtype": dt, "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(chunks))


def layer_norm(x, w, b, eps):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * w + b


def activation(name, x):
    if name == "gelu":
        return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    if name == "relu":
        return torch.clamp(x, min=0)
    raise ValueError(name)


def reference_logits(w, cfg, ids, types, linear=None):
    """One unpadded example; w maps HF names with the "bert." prefix.
    `linear(x, module)` replaces every Linear layer when given (LoRA)."""
    lin = linear or (lambda x, p: x @ w[p + ".weight"].T + w[p + ".bias"])  # noqa: E731
    x = reference_hidden(w, cfg, ids, types, linear)
    pooled = torch.tanh(lin(x[0], "bert.pooler.dense"))
    return lin(pooled, "classifier")


def reference_hidden(w, cfg, ids, types, linear=None):
    """The last encoder layer's output [T, H] for one unpadded example."""
    h = cfg["hidden_size"]
    heads = cfg["num_attention_heads"]
    hd = h // heads
    eps = cfg["layer_norm_eps"]
    lin = linear or (lambda x, p: x @ w[p + ".weight"].T + w[p + ".bias"])  # noqa: E731
    t = len(ids)
    ids = torch.tensor(ids)
    types = torch.tensor(types)
    x = (w["bert.embeddings.word_embeddings.weight"][ids]
         + w["bert.embeddings.position_embeddings.weight"][torch.arange(t)]
         + w["bert.embeddings.token_type_embeddings.weight"][types])
    x = layer_norm(x, w["bert.embeddings.LayerNorm.weight"], w["bert.embeddings.LayerNorm.bias"], eps)
    for l in range(cfg["num_hidden_layers"]):
        p = f"bert.encoder.layer.{l}."
        split = lambda y: y.reshape(t, heads, hd).transpose(0, 1)  # noqa: E731
        q = split(lin(x, p + "attention.self.query"))
        k = split(lin(x, p + "attention.self.key"))
        v = split(lin(x, p + "attention.self.value"))
        scores = q @ k.transpose(-1, -2) / math.sqrt(hd)
        scores = scores - scores.max(-1, keepdim=True).values
        probs = torch.exp(scores)
        probs = probs / probs.sum(-1, keepdim=True)
        ctx = (probs @ v).transpose(0, 1).reshape(t, h)
        a = layer_norm(lin(ctx, p + "attention.output.dense") + x,
                       w[p + "attention.output.LayerNorm.weight"],
                       w[p + "attention.output.LayerNorm.bias"], eps)
        inter = activation(cfg["hidden_act"], lin(a, p + "intermediate.dense"))
        x = layer_norm(lin(inter, p + "output.dense") + a,
                       w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps)
    return x


def run(cmd, stdin=None):
    r = subprocess.run(cmd, input=stdin, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"FAIL: {' '.join(cmd)} exited {r.returncode}: {r.stderr.strip()}")
    return r.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tool", required=True, help="path to freezetune-model")
    ap.add_argument("--shared", required=True, help="the shared data dir (../shared)")
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--max-length", type=int, default=128)
    args = ap.parse_args()

    shutil.rmtree(args.workdir, ignore_errors=True)
    os.makedirs(args.workdir)
    base = os.path.join(args.workdir, "prefixed")
    run([args.tool, "init", "--out", base, "--vocab",
         os.path.join(args.shared, "data", "bert-base-uncased-vocab.txt"),
         "--layers", "2", "--hidden", "64", "--heads", "4", "--intermediate", "128",
         "--max-position", "128", "--num-labels", "3", "--seed", "5"])
    cfg = json.load(open(os.path.join(base, "config.json")))
    assert cfg["architectures"] == ["BertForSequenceClassification"], cfg
    init_weights = read_safetensors(os.path.join(base, "model.safetensors"))

    # HF init (std 0.02, LayerNorm 1/0, zero biases) gives near-zero logits
    # that would hide errors; redraw every tensor at a scale where each
    # operation moves the output.
    gen = torch.Generator().manual_seed(1234)
    names = list(init_weights.keys())
    weights = {}
    for name in names:
        t = init_weights[name]
        if "LayerNorm.weight" in name:
            weights[name] = 1.0 + 0.3 * torch.randn(t.shape, generator=gen, dtype=torch.float64)
        else:
            weights[name] = 0.15 * torch.randn(t.shape, generator=gen, dtype=torch.float64)
    # Store exactly what F32 can hold, so the reference uses the same values.
    weights = {k: v.float().double() for k, v in weights.items()}
    write_safetensors(os.path.join(base, "model.safetensors"), [(n, weights[n]) for n in names])

    def clone_dir(name):
        d = os.path.join(args.workdir, name)
        os.makedirs(d)
        for f in ("config.json", "vocab.txt", "tokenizer_config.json"):
            shutil.copy(os.path.join(base, f), d)
        return d

    noprefix = clone_dir("noprefix")
    tensors = [(n[len("bert."):] if n.startswith("bert.") else n, weights[n]) for n in names]
    tensors.append(("embeddings.position_ids", torch.arange(128, dtype=torch.int64).reshape(1, 128)))
    write_safetensors(os.path.join(noprefix, "model.safetensors"), tensors)

    bf16 = clone_dir("bf16")
    write_safetensors(os.path.join(bf16, "model.safetensors"), [(n, weights[n]) for n in names], "BF16")

    # SST-2 dev sentences.
    sentences = []
    with open(os.path.join(args.shared, "data", "sst2", "dev.tsv"), encoding="utf-8") as f:
        next(f)
        for line in f:
            sentences.append(line.rstrip("\n").split("\t")[0])
            if len(sentences) == args.n:
                break
    examples = "".join(json.dumps({"text": s}) + "\n" for s in sentences)
    input_path = os.path.join(args.workdir, "input.jsonl")
    with open(input_path, "w") as f:
        f.write(examples)
    encodings = [json.loads(l) for l in run(
        [args.tool, "tokenize", "--model", base, "--max-length", str(args.max_length)],
        stdin=examples).splitlines()]
    assert len(encodings) == len(sentences), (len(encodings), len(sentences))
    assert encodings[0]["tokens"][0] == "[CLS]" and encodings[0]["tokens"][-1] == "[SEP]"

    id2label = cfg["id2label"]
    ok = True
    for variant, path in (("prefixed/F32", base), ("no-prefix/F32", noprefix), ("prefixed/BF16", bf16)):
        w = read_safetensors(os.path.join(path, "model.safetensors"))
        w = {(k if k.startswith(("bert.", "classifier.")) else "bert." + k): v for k, v in w.items()}
        lines = run([args.tool, "predict", "--model", path, "--input", input_path,
                     "--batch-size", "16", "--max-length", str(args.max_length)]).splitlines()
        assert len(lines) == len(sentences), (variant, len(lines))
        max_diff = 0.0
        max_logit = 0.0
        label_mismatch = 0
        for enc, line in zip(encodings, lines):
            got = json.loads(line)
            ref = reference_logits(w, cfg, enc["ids"], enc["type_ids"])
            diff = (torch.tensor(got["logits"], dtype=torch.float64) - ref).abs().max().item()
            max_diff = max(max_diff, diff)
            max_logit = max(max_logit, ref.abs().max().item())
            if id2label[str(int(torch.tensor(got["logits"]).argmax()))] != got["label"]:
                label_mismatch += 1
        status = "ok" if max_diff <= TOL and label_mismatch == 0 else "FAIL"
        ok = ok and status == "ok"
        print(f"{variant}: {len(lines)} sentences, max |logit| {max_logit:.3f}, "
              f"max abs diff vs float64 reference {max_diff:.3e} (tol {TOL}) {status}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
