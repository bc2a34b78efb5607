#!/usr/bin/python3
"""The masked-LM head against an independent float64 reference (Debian's torch).

Writes a BertForMaskedLM directory by hand (the encoder of a freezetune-model
init checkpoint, redrawn at a scale where every operation matters, no pooler
or classifier, and a random cls.predictions.transform / cls.predictions.bias;
no decoder tensor, as transformers saves the tied decoder), then checks that
`freezetune-model predict` on SST-2 dev sentences with words replaced by
[MASK] gives, at every [MASK], the reference's
    logits = LayerNorm(gelu(h W_t^T + b_t)) E^T + bias
(E = bert.embeddings.word_embeddings.weight, the tied decoder): the same
argmax, and max logit and logsumexp within 1e-4. With --model DIR the
directory checked is DIR instead (a masked-LM job's output, as written),
read with transformers' key names: the decoder must not be stored, the pooler
and classifier must be absent, and config.json must name BertForMaskedLM.

Exit status 0 on success, 1 on mismatch, 77 (ctest SKIP) without torch.
"""
import argparse
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
try:
    import torch
    import bert_numerics_test as ref
except ImportError as e:  # pragma: no cover
    print(f"SKIP: {e}")
    sys.exit(77)

TOL = 1e-4


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tool", required=True)
    ap.add_argument("--shared", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--model", help="check this BertForMaskedLM directory instead of a hand-made one")
    args = ap.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    os.makedirs(args.workdir)
    if args.model:
        mlm = args.model
        cfg = json.load(open(os.path.join(mlm, "config.json")))
        w = {k: t.double() for k, t in ref.read_safetensors(os.path.join(mlm, "model.safetensors")).items()}
        assert cfg["architectures"] == ["BertForMaskedLM"], cfg.get("architectures")
        assert "id2label" not in cfg, cfg
        stray = [k for k in w if k.startswith(("bert.pooler.", "classifier.", "cls.predictions.decoder"))]
        assert not stray, stray
        check(args, mlm, cfg, w)
        return
    init = os.path.join(args.workdir, "init")
    ref.run([args.tool, "init", "--out", init, "--vocab",
             os.path.join(args.shared, "data", "bert-base-uncased-vocab.txt"), "--layers", "2",
             "--hidden", "64", "--heads", "4", "--intermediate", "128", "--max-position", "128",
             "--seed", "3"])
    base = ref.read_safetensors(os.path.join(init, "model.safetensors"))
    gen = torch.Generator().manual_seed(99)
    w = {}
    for name, t in base.items():
        if name.startswith(("bert.pooler.", "classifier.")):
            continue
        if "LayerNorm.weight" in name:
            w[name] = 1.0 + 0.3 * torch.randn(t.shape, generator=gen, dtype=torch.float64)
        else:
            w[name] = 0.15 * torch.randn(t.shape, generator=gen, dtype=torch.float64)
    h = base["bert.pooler.dense.weight"].shape[0]
    v = base["bert.embeddings.word_embeddings.weight"].shape[0]
    w["cls.predictions.bias"] = 0.5 * torch.randn((v,), generator=gen, dtype=torch.float64)
    w["cls.predictions.transform.dense.weight"] = 0.2 * torch.randn((h, h), generator=gen, dtype=torch.float64)
    w["cls.predictions.transform.dense.bias"] = 0.2 * torch.randn((h,), generator=gen, dtype=torch.float64)
    w["cls.predictions.transform.LayerNorm.weight"] = 1.0 + 0.3 * torch.randn((h,), generator=gen,
                                                                           dtype=torch.float64)
    w["cls.predictions.transform.LayerNorm.bias"] = 0.2 * torch.randn((h,), generator=gen, dtype=torch.float64)
    w = {k: t.float().double() for k, t in w.items()}

    mlm = os.path.join(args.workdir, "mlm")
    os.makedirs(mlm)
    for f in ("vocab.txt", "tokenizer_config.json"):
        shutil.copy(os.path.join(init, f), mlm)
    cfg = json.load(open(os.path.join(init, "config.json")))
    cfg["architectures"] = ["BertForMaskedLM"]
    cfg.pop("id2label", None)
    cfg.pop("label2id", None)
    json.dump(cfg, open(os.path.join(mlm, "config.json"), "w"))
    ref.write_safetensors(os.path.join(mlm, "model.safetensors"), sorted(w.items()))
    check(args, mlm, cfg, w)


def check(args, mlm, cfg, w):
    """Compares `freezetune-model predict` on `mlm` with the reference on `w`; exits."""
    lines = []
    with open(os.path.join(args.shared, "data", "sst2", "dev.tsv"), encoding="utf-8") as f:
        next(f)
        for i, line in enumerate(f):
            words = line.split("\t")[0].split()
            for j in range(1 + i % 3, len(words), 4):
                words[j] = "[MASK]"
            lines.append(" ".join(words))
            if len(lines) == args.n:
                break
    examples = "".join(json.dumps({"text": s}) + "\n" for s in lines)
    input_path = os.path.join(args.workdir, "input.jsonl")
    with open(input_path, "w") as f:
        f.write(examples)
    encodings = [json.loads(l) for l in ref.run([args.tool, "tokenize", "--model", mlm], stdin=examples).splitlines()]
    got = [json.loads(l) for l in ref.run([args.tool, "predict", "--model", mlm, "--input", input_path]).splitlines()]
    assert len(got) == len(lines), len(got)

    e = w["bert.embeddings.word_embeddings.weight"]
    n_masks, max_diff, argmax_mismatch = 0, 0.0, 0
    for enc, out in zip(encodings, got):
        hidden = ref.reference_hidden(w, cfg, enc["ids"], enc["type_ids"])
        positions = [j for j, t in enumerate(enc["tokens"]) if t == "[MASK]"]
        assert [m["position"] for m in out["masked"]] == positions, (positions, out)
        for m in out["masked"]:
            x = hidden[m["position"]]
            t = x @ w["cls.predictions.transform.dense.weight"].T + w["cls.predictions.transform.dense.bias"]
            t = ref.activation(cfg["hidden_act"], t)
            t = ref.layer_norm(t, w["cls.predictions.transform.LayerNorm.weight"],
                               w["cls.predictions.transform.LayerNorm.bias"], cfg["layer_norm_eps"])
            logits = t @ e.T + w["cls.predictions.bias"]
            top2 = logits.topk(2).values
            if int(logits.argmax()) != m["argmax"] and float(top2[0] - top2[1]) > TOL:
                argmax_mismatch += 1
            max_diff = max(max_diff, abs(float(logits.max()) - m["max_logit"]),
                           abs(float(torch.logsumexp(logits, 0)) - m["logsumexp"]))
            n_masks += 1
    ok = n_masks > 0 and max_diff <= TOL and argmax_mismatch == 0
    print(f"{len(lines)} sentences, {n_masks} [MASK] positions: max abs diff of max logit and "
          f"logsumexp vs float64 reference {max_diff:.3e} (tol {TOL}), argmax mismatches "
          f"{argmax_mismatch} {'ok' if ok else 'FAIL'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
