#!/usr/bin/env python3
"""The GPU benchmark's reference side (issue 13): Hugging Face transformers'
BertForSequenceClassification trained by a plain PyTorch loop (AdamW,
autocast, the same synthetic batches, shapes and steps as
tests/bench/gpu_bench.cc), so that the two can be compared in one run on one
GPU. Needs torch and transformers (the GPU machine has both).

    gpu_hf_bench.py [--device cuda] [--layers 12 --hidden 768 --heads 12
        --intermediate 3072] [--seq 128] [--batch 32] [--steps 20]
        [--epochs 3] [--precisions bf16] [--modes full,bottom6,head_only]
        [--json FILE]

Modes: full fine-tuning; bottomN (embeddings + first N layers frozen:
requires_grad False, those modules in eval mode); head_only (everything but
the classifier frozen; transformers has no prefix cache, so the frozen
encoder runs forward every step). The last epoch's samples/s is reported,
and torch.cuda.max_memory_allocated as the peak.
"""
import argparse
import json
import time

import torch
from transformers import BertConfig, BertForSequenceClassification


def synthetic(n, seq, gen):
    ids = torch.randint(1000, 29000, (n, seq), generator=gen)
    ids[:, 0] = 101
    ids[:, -1] = 102
    labels = torch.randint(0, 2, (n,), generator=gen)
    return ids, labels


def run(args, precision, mode, device):
    torch.manual_seed(42)
    config = BertConfig(vocab_size=30522, hidden_size=args.hidden, num_hidden_layers=args.layers,
                        num_attention_heads=args.heads, intermediate_size=args.intermediate,
                        max_position_embeddings=512, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0, num_labels=2)
    model = BertForSequenceClassification(config).to(device)
    frozen_modules = []
    if mode == "head_only":
        for name, p in model.named_parameters():
            p.requires_grad = name.startswith("classifier.")
        frozen_modules = [model.bert]
    elif mode.startswith("bottom"):
        n = int(mode[len("bottom"):])
        frozen_modules = [model.bert.embeddings] + list(model.bert.encoder.layer[:n])
        for m in frozen_modules:
            for p in m.parameters():
                p.requires_grad = False
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-5, weight_decay=0.01)
    gen = torch.Generator().manual_seed(7)
    ids, labels = synthetic(args.steps * args.batch, args.seq, gen)
    ids, labels = ids.to(device), labels.to(device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]
    scaler = torch.cuda.amp.GradScaler() if precision == "fp16" else None
    model.train()
    for m in frozen_modules:
        m.eval()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rates = []
    for _ in range(args.epochs):
        start = time.perf_counter()
        for s in range(args.steps):
            b = slice(s * args.batch, (s + 1) * args.batch)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                logits = model(input_ids=ids[b]).logits
            loss = torch.nn.functional.cross_entropy(logits.float(), labels[b])
            if scaler:
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(trainable, 1.0)
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trainable, 1.0)
                opt.step()
            opt.zero_grad(set_to_none=True)
            loss.item()  # the same per-step sync freezetune's loop has
        rates.append(args.steps * args.batch / (time.perf_counter() - start))
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    return {"precision": precision, "mode": mode, "samples_per_second": rates[-1],
            "epoch_samples_per_second": rates, "peak_device_memory_bytes": peak,
            "trainable_parameters": sum(p.numel() for p in trainable)}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cuda")
    for name, default in [("layers", 12), ("hidden", 768), ("heads", 12), ("intermediate", 3072),
                          ("seq", 128), ("batch", 32), ("steps", 20), ("epochs", 3)]:
        ap.add_argument("--" + name, type=int, default=default)
    ap.add_argument("--precisions", default="bf16")
    ap.add_argument("--modes", default="full,bottom6,head_only")
    ap.add_argument("--json")
    args = ap.parse_args()
    device = torch.device(args.device)
    import transformers
    out = {"device": args.device, "torch_version": torch.__version__,
           "transformers_version": transformers.__version__, "runs": []}
    for precision in args.precisions.split(","):
        for mode in args.modes.split(","):
            r = run(args, precision, mode, device)
            print(f"{precision:5} {mode:10} {r['samples_per_second']:10.1f} samples/s  "
                  f"peak {r['peak_device_memory_bytes'] / 2**30:.2f} GiB", flush=True)
            out["runs"].append(r)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
