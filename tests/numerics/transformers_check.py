#!/usr/bin/env python3
"""Checks freezetune's output against Hugging Face transformers itself.

Needs `transformers` and `tokenizers` (not in Debian 12; run where they are
installed, e.g. the GPU machine). For each model directory given:
  1. AutoModelForSequenceClassification.from_pretrained(dir) loads it with no
     missing or unexpected keys, and config.id2label round-trips;
  2. BertTokenizerFast.from_pretrained(dir) encodes the input sentences to the
     same ids freezetune-model tokenize produced;
  3. its logits (eval mode, F32) match freezetune-model predict's within
     --atol, on CPU and, when available, on CUDA.
Inputs per model: DIR/../<name>.inputs.jsonl ({"text", "text_pair"?}),
<name>.tokens.jsonl and <name>.predict.jsonl written by freezetune-model.
Prints a JSON summary and exits non-zero on any mismatch.
"""
import argparse
import json
import sys

import torch
from transformers import AutoModelForSequenceClassification, BertTokenizerFast


def check(model_dir, inputs, tokens, predictions, atol):
    report = {"model": model_dir}
    model, info = AutoModelForSequenceClassification.from_pretrained(model_dir, output_loading_info=True)
    report["loading_info"] = {k: sorted(v) if isinstance(v, (list, set)) else str(v) for k, v in info.items()}
    problems = [f"{k}: {v}" for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")]
    tok = BertTokenizerFast.from_pretrained(model_dir)
    id_mismatches = 0
    for row, ours in zip(inputs, tokens):
        enc = tok(row["text"], row.get("text_pair"))
        if enc["input_ids"] != ours["ids"] or enc["token_type_ids"] != ours["type_ids"]:
            id_mismatches += 1
    report["token_id_mismatches"] = id_mismatches
    if id_mismatches:
        problems.append(f"{id_mismatches} tokenization mismatches")
    model.eval()
    ours = torch.tensor([p["logits"] for p in predictions], dtype=torch.float32)
    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        m = model.to(device)
        theirs = []
        with torch.no_grad():
            for row in inputs:
                # predict truncates (longest first) to max_position_embeddings.
                enc = tok(row["text"], row.get("text_pair"), return_tensors="pt", truncation="longest_first",
                          max_length=model.config.max_position_embeddings).to(device)
                theirs.append(m(**enc).logits[0].float().cpu())
        diff = (torch.stack(theirs) - ours).abs().max().item()
        report[f"max_abs_logit_diff_{device}"] = diff
        if diff > atol:
            problems.append(f"{device}: max |logit diff| {diff:.3g} > {atol}")
        labels = [model.config.id2label[int(i)] for i in torch.stack(theirs).argmax(-1)]
        label_mismatches = sum(a != p["label"] for a, p in zip(labels, predictions))
        report[f"label_mismatches_{device}"] = label_mismatches
        if label_mismatches:
            problems.append(f"{device}: {label_mismatches} predicted labels differ")
    report["problems"] = problems
    return report


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--case", action="append", required=True,
                    help="MODEL_DIR:INPUTS.jsonl:TOKENS.jsonl:PREDICT.jsonl")
    ap.add_argument("--atol", type=float, default=1e-4)
    args = ap.parse_args()
    torch.manual_seed(0)
    reports = []
    for case in args.case:
        model_dir, inputs, tokens, predictions = case.split(":")
        load = lambda p: [json.loads(line) for line in open(p)]
        reports.append(check(model_dir, load(inputs), load(tokens), load(predictions), args.atol))
    print(json.dumps({"transformers": __import__("transformers").__version__,
                      "torch": torch.__version__, "reports": reports}, indent=1))
    sys.exit(1 if any(r["problems"] for r in reports) else 0)


if __name__ == "__main__":
    main()
