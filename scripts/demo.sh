#!/usr/bin/env bash
# The main job on embedded defaults: start freezetune-server on loopback (SQLite
# job store and data directory under var/demo), create a small BERT checkpoint
# in Hugging Face format with the real bert-base-uncased vocab, fine-tune it on
# an SST-2 slice (dev as validation), then fine-tune the result again with
# "freeze embeddings + first layer",
# stream progress, print the summary and the output path, draw the stage-2
# training curves (freezetune report -> var/demo/report.html and .svg), stop
# the server. Uses only files in this repo (tests/fixtures/data), not ../shared.
#
# Environment: BUILD_DIR (default build); DEMO_DIR (default var/demo);
# DEMO_TRAIN_LINES (default: all 10,000 training sentences; the demo's test
# uses fewer).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
ROOT=$PWD
DEMO=${DEMO_DIR:-$ROOT/var/demo}
DATA=$ROOT/tests/fixtures/data
SERVER_BIN=$BUILD_DIR/server/freezetune-server
MODEL_BIN=$BUILD_DIR/server/model/freezetune-model
CLI_BIN=$BUILD_DIR/client/src/freezetune
for b in "$SERVER_BIN" "$MODEL_BIN" "$CLI_BIN"; do
  [ -x "$b" ] || { echo "demo: $b is missing; run 'make build' first" >&2; exit 1; }
done

rm -rf "$DEMO" && mkdir -p "$DEMO"
TRAIN=$DATA/sst2/train_first10000.tsv
if [ -n "${DEMO_TRAIN_LINES:-}" ]; then
  head -n "$((DEMO_TRAIN_LINES + 1))" "$TRAIN" >"$DEMO/train.tsv"  # + the header
  TRAIN=$DEMO/train.tsv
fi

echo "==> Creating a small BERT (2 layers, hidden 128) in Hugging Face format"
"$MODEL_BIN" init --out "$DEMO/model" --vocab "$DATA/bert-base-uncased-vocab.txt" \
  --layers 2 --hidden 128 --heads 2 --intermediate 512 --max-position 128 --num-labels 2 --seed 7

echo "==> Starting freezetune-server on loopback"
"$SERVER_BIN" --listen 127.0.0.1:0 --port_file "$DEMO/server.port" \
  --metrics_listen 127.0.0.1:0 --data_dir "$DEMO/server" --data_roots "$ROOT,$DEMO" \
  >"$DEMO/server.log" 2>&1 &
server_pid=$!
stop_server() {
  if kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" && wait "$server_pid" || true
    echo "==> Server stopped (log: ${DEMO#$ROOT/}/server.log)"
  fi
}
trap stop_server EXIT
for _ in $(seq 1 100); do
  [ -s "$DEMO/server.port" ] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$DEMO/server.log" >&2; exit 1; }
  sleep 0.1
done
[ -s "$DEMO/server.port" ] || { echo "demo: server did not start" >&2; cat "$DEMO/server.log" >&2; exit 1; }
SERVER=127.0.0.1:$(cat "$DEMO/server.port")
grep -m1 -i blas "$DEMO/server.log" || true

# No pretrained BERT can be downloaded here, so stage 1 stands in for
# pretraining: two epochs of full fine-tuning from random weights. Stage 2 is
# the recipe itself, on that checkpoint: embeddings and layer 0 frozen.
# Prints the job id (-o name), then follows it (a progress bar on a
# terminal, JSON lines when piped; Ctrl-C detaches and leaves it running).
finetune() {  # NAME FREEZE EPOCHS MODEL_DIR OUTPUT_DIR
  local job
  job=$("$CLI_BIN" --server "$SERVER" submit -o name --name "$1" --freeze "$2" --epochs "$3" \
    --model "file://$4" --output "file://$5" \
    --train "file://$TRAIN" \
    --validation "file://$DATA/sst2/dev.tsv" \
    --batch-size 32 --lr 1e-3 --max-seq-length 64 --warmup-ratio 0.1 \
    --eval-every 100 --log-every 5)
  echo "$job" >"$DEMO/$(basename "$5").job"
  echo "submitted $job"
  "$CLI_BIN" --server "$SERVER" watch "$job"
}

echo "==> Stage 1: full fine-tuning from random weights (stands in for pretraining)"
finetune "demo stage 1: sst2, full" none 2 "$DEMO/model" "$DEMO/stage1"

echo "==> Stage 2: SST-2 ($(($(wc -l <"$TRAIN") - 1)) train sentences, 872 dev), embeddings + first layer frozen"
"$CLI_BIN" --server "$SERVER" plan --model "file://$DEMO/stage1" --freeze bottom:1 | grep -E "^(trainable|layers) "
finetune "demo stage 2: sst2, freeze embeddings + first layer" bottom:1 1 "$DEMO/stage1" "$DEMO/output"

echo "==> Output written to ${DEMO#$ROOT/}/output:"
ls -1 "$DEMO/output"

echo "==> Training curves of stage 2 (SVG and a self-contained HTML page; open either in a browser)"
"$CLI_BIN" --server "$SERVER" report "$(cat "$DEMO/output.job")" -o "$DEMO/report.svg"
"$CLI_BIN" --server "$SERVER" report "$(cat "$DEMO/output.job")" -o "$DEMO/report.html"
