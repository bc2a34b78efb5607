#!/usr/bin/python3
"""The reference to beat: the same fine-tuning loop in plain PyTorch.

Builds BERT for sequence classification from torch.nn primitives (Hugging Face
layout), loads a freezetune/Hugging Face model directory's model.safetensors,
reads token ids produced by `freezetune-model tokenize` (so both sides see the
same tokens), and trains with AdamW over the trainable parameters, the way a
careful hand-written loop would: frozen parameters have requires_grad=False
and are left out of the optimizer, and the frozen prefix runs under no_grad.

With --plan it trains on exactly the batches the C++ Trainer used (dumped by
freezetune_train_vs_pytorch --dump), so step times compare like for like.
Prints one JSON line per recipe: step times (mean and median after
--warmup-steps), samples/s, per-epoch seconds and dev accuracy, VmHWM, and
with --saved-bytes the bytes autograd saved for backward (max over steps).
Used by tests/bench/run.sh; not part of the test suite.
"""
import argparse
import json
import math
import random
import resource
import struct
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        t = torch.frombuffer(bytearray(data[base + begin:base + end]), dtype=DTYPES[info["dtype"]])
        out[name] = t.reshape(info["shape"]).float()
    return out


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        h, i = c["hidden_size"], c["intermediate_size"]
        self.heads = c["num_attention_heads"]
        self.q, self.k, self.v = nn.Linear(h, h), nn.Linear(h, h), nn.Linear(h, h)
        self.ao, self.ln1 = nn.Linear(h, h), nn.LayerNorm(h, eps=c["layer_norm_eps"])
        self.inter, self.out = nn.Linear(h, i), nn.Linear(i, h)
        self.ln2 = nn.LayerNorm(h, eps=c["layer_norm_eps"])
        self.drop = nn.Dropout(c["hidden_dropout_prob"])
        self.adrop = nn.Dropout(c["attention_probs_dropout_prob"])

    def forward(self, x, bias):
        b, t, h = x.shape
        d = h // self.heads

        def split(y):
            return y.view(b, t, self.heads, d).transpose(1, 2)
        s = split(self.q(x)) @ split(self.k(x)).transpose(-1, -2) / math.sqrt(d) + bias
        ctx = (self.adrop(s.softmax(-1)) @ split(self.v(x))).transpose(1, 2).reshape(b, t, h)
        x = self.ln1(self.drop(self.ao(ctx)) + x)
        return self.ln2(self.drop(self.out(F.gelu(self.inter(x)))) + x)


class Bert(nn.Module):
    def __init__(self, c, num_labels):
        super().__init__()
        h = c["hidden_size"]
        self.word = nn.Embedding(c["vocab_size"], h)
        self.pos = nn.Embedding(c["max_position_embeddings"], h)
        self.typ = nn.Embedding(c["type_vocab_size"], h)
        self.ln = nn.LayerNorm(h, eps=c["layer_norm_eps"])
        self.drop = nn.Dropout(c["hidden_dropout_prob"])
        self.layers = nn.ModuleList(Layer(c) for _ in range(c["num_hidden_layers"]))
        self.pool = nn.Linear(h, h)
        self.cls = nn.Linear(h, num_labels)

    def load(self, w):
        p = "bert." if "bert.embeddings.word_embeddings.weight" in w else ""
        m = {"word.weight": "embeddings.word_embeddings.weight",
             "pos.weight": "embeddings.position_embeddings.weight",
             "typ.weight": "embeddings.token_type_embeddings.weight",
             "ln.weight": "embeddings.LayerNorm.weight", "ln.bias": "embeddings.LayerNorm.bias",
             "pool.weight": "pooler.dense.weight", "pool.bias": "pooler.dense.bias"}
        names = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
                 "ao": "attention.output.dense", "ln1": "attention.output.LayerNorm",
                 "inter": "intermediate.dense", "out": "output.dense", "ln2": "output.LayerNorm"}
        for i in range(len(self.layers)):
            for ours, theirs in names.items():
                for s in ("weight", "bias"):
                    m[f"layers.{i}.{ours}.{s}"] = f"encoder.layer.{i}.{theirs}.{s}"
        state = {k: w[p + v] for k, v in m.items()}
        if "classifier.weight" in w and w["classifier.weight"].shape == self.cls.weight.shape:
            state["cls.weight"], state["cls.bias"] = w["classifier.weight"], w["classifier.bias"]
        self.load_state_dict(state, strict=False)

    def embed(self, ids, types):
        pos = torch.arange(ids.shape[1]).unsqueeze(0)
        return self.drop(self.ln(self.word(ids) + self.pos(pos) + self.typ(types)))

    def forward(self, ids, types, mask, frozen_prefix):
        bias = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        with torch.set_grad_enabled(frozen_prefix < 0 and torch.is_grad_enabled()):
            x = self.embed(ids, types)
        for i, layer in enumerate(self.layers):
            with torch.set_grad_enabled(i >= frozen_prefix and torch.is_grad_enabled()):
                x = layer(x, bias)
        return self.cls(self.drop(torch.tanh(self.pool(x[:, 0]))))


def collate(rows):
    t = max(len(r["ids"]) for r in rows)
    ids = torch.zeros(len(rows), t, dtype=torch.long)
    types = torch.zeros_like(ids)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        n = len(r["ids"])
        ids[i, :n] = torch.tensor(r["ids"])
        types[i, :n] = torch.tensor(r["type_ids"])
        mask[i, :n] = 1
    return ids, types, mask, torch.tensor([r["label"] for r in rows])


def vm_hwm_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return -1


class SavedBytes:
    """Counts the bytes autograd saves for backward during one forward pass
    (torch.autograd.graph.saved_tensors_hooks), each storage once: the
    activation memory of a training step, without transient buffers.
    Parameters saved by reference (e.g. a Linear's weight) are not counted."""

    def __init__(self, params):
        self.storages = {}
        self.params = {p.data_ptr() for p in params}

    def pack(self, t):
        s = t.untyped_storage() if hasattr(t, "untyped_storage") else t.storage()
        if s.data_ptr() not in self.params:
            self.storages[s.data_ptr()] = s.nbytes()
        return t

    def total(self):
        return sum(self.storages.values())


def evaluate(model, dev, layers):
    model.eval()
    correct = 0
    with torch.no_grad():
        for b in range(0, len(dev), 128):
            ids, types, mask, labels = collate(dev[b:b + 128])
            correct += (model(ids, types, mask, layers).argmax(-1) == labels).sum().item()
    return correct / len(dev)


def run(args, recipe, config, weights, train, dev, plan):
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    num_labels = max(r["label"] for r in train) + 1 if args.num_labels == 0 else args.num_labels
    model = Bert(config, num_labels)
    model.load(weights)
    layers = config["num_hidden_layers"]
    frozen_prefix = {"full": -1, "bottom_half": layers // 2, "head_only": layers}[recipe]
    for name, p in model.named_parameters():
        if recipe == "head_only":
            p.requires_grad = name.startswith("cls.")
        elif frozen_prefix >= 0:
            in_prefix = name.split(".")[0] in ("word", "pos", "typ", "ln") or (
                name.startswith("layers.") and int(name.split(".")[1]) < frozen_prefix)
            p.requires_grad = not in_prefix
    decay = [p for n, p in model.named_parameters() if p.requires_grad and not (n.endswith("bias") or "ln" in n)]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and (n.endswith("bias") or "ln" in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr)
    # Batches: the C++ Trainer's plan when given (identical batches on both
    # sides), else a plain loop's seeded shuffle.
    epochs = len(plan) if plan is not None else args.epochs
    batches_per_epoch = []
    for epoch in range(epochs):
        if plan is not None:
            batches_per_epoch.append(plan[epoch])
        else:
            order = list(range(len(train)))
            random.Random(args.seed + epoch).shuffle(order)
            batches_per_epoch.append([order[b:b + args.batch_size]
                                      for b in range(0, len(order), args.batch_size)])
    total = sum(len(b) for b in batches_per_epoch)
    warmup = math.ceil(args.warmup_ratio * total)

    def factor(step):  # linear warmup, then linear decay to 0 (the product's default)
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor) if args.schedule == "linear" else None
    trainable = [p for p in model.parameters() if p.requires_grad]
    step_times, epoch_seconds, dev_accuracy, saved = [], [], [], []
    usage_before = resource.getrusage(resource.RUSAGE_SELF)
    for epoch in range(epochs):
        model.train()
        if recipe == "head_only":
            # frozen_eval_mode, as the product's head_only default: the frozen
            # encoder and pooler run without dropout; the head keeps its own.
            model.eval()
            model.cls.train()
            model.drop.train()
        epoch_start = time.perf_counter()
        for batch in batches_per_epoch[epoch]:
            start = time.perf_counter()
            ids, types, mask, labels = collate([train[i] for i in batch])
            if args.saved_bytes:
                counter = SavedBytes(model.parameters())
                with torch.autograd.graph.saved_tensors_hooks(counter.pack, lambda t: t):
                    loss = F.cross_entropy(model(ids, types, mask, frozen_prefix), labels)
                saved.append(counter.total())
            else:
                loss = F.cross_entropy(model(ids, types, mask, frozen_prefix), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            opt.step()
            if sched is not None:
                sched.step()
            step_times.append(time.perf_counter() - start)
        epoch_seconds.append(time.perf_counter() - epoch_start)
        if dev:
            dev_accuracy.append(evaluate(model, dev, layers))
    usage_after = resource.getrusage(resource.RUSAGE_SELF)
    skip = min(args.warmup_steps, len(step_times))
    timed = sorted(step_times[skip:]) or [0.0]
    mean_step = sum(step_times[skip:]) / max(1, len(step_times) - skip)
    out = {"side": "pytorch", "recipe": recipe, "threads": torch.get_num_threads(),
           "steps": len(step_times), "warmup_steps_skipped": skip, "epochs": epochs,
           "batch_size": args.batch_size, "lr": args.lr,
           "trainable_parameters": sum(p.numel() for p in trainable),
           "mean_step_seconds": mean_step, "median_step_seconds": timed[len(timed) // 2],
           "samples_per_second": args.batch_size / mean_step if mean_step else 0.0,
           "step_seconds": step_times, "epoch_seconds": epoch_seconds,
           "train_seconds": sum(epoch_seconds), "dev_accuracy": dev_accuracy,
           "vm_hwm_kb": vm_hwm_kb(),
           # CPU time of the training loop (evaluations included) and of the
           # whole process so far (imports, loading): on a loaded machine
           # these are steadier than wall time.
           "train_user_seconds": usage_after.ru_utime - usage_before.ru_utime,
           "train_sys_seconds": usage_after.ru_stime - usage_before.ru_stime,
           "process_user_seconds": usage_after.ru_utime,
           "process_sys_seconds": usage_after.ru_stime}
    if args.saved_bytes:
        out["saved_bytes_max"] = max(saved[skip:] or saved)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", required=True, help="model directory (config.json, model.safetensors)")
    ap.add_argument("--train", required=True, help="JSONL of {ids, type_ids, label}")
    ap.add_argument("--dev", help="JSONL of {ids, type_ids, label}; evaluated after each epoch")
    ap.add_argument("--plan", help="JSON: per epoch, batches of train row indices (the C++ Trainer's plan)")
    ap.add_argument("--recipes", default="full,bottom_half,head_only")
    ap.add_argument("--epochs", type=int, default=1, help="without --plan")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--schedule", choices=["constant", "linear"], default="constant")
    ap.add_argument("--warmup-ratio", type=float, default=0.0)
    ap.add_argument("--num-labels", type=int, default=0, help="0: max label in train + 1")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--warmup-steps", type=int, default=3, help="steps left out of mean/median")
    ap.add_argument("--saved-bytes", action="store_true", help="count what autograd saves per step")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = json.load(open(f"{args.model}/config.json"))
    weights = read_safetensors(f"{args.model}/model.safetensors")
    train = [json.loads(line) for line in open(args.train)]
    dev = [json.loads(line) for line in open(args.dev)] if args.dev else []
    plan = json.load(open(args.plan)) if args.plan else None
    for r in args.recipes.split(","):
        print(json.dumps(run(args, r, config, weights, train, dev, plan)), flush=True)


if __name__ == "__main__":
    main()
