#!/usr/bin/env bash
# Runs the training benchmarks side by side with plain PyTorch and prints the
# result tables and ratios (tests/bench/README.md explains each number).
#
#   tests/bench/run.sh [steps] [cache] [memory] [acceptance]   (default: steps cache memory)
#
# Needs the `benchmarks` target built in $BUILD_DIR (default build; `make
# bench` does both) and /usr/bin/python3 with python3-torch. Environment:
#   BUILD_DIR  build directory (relative to the repo root or absolute)
#   FREEZETUNE_DATA_DIR  vocab + datasets (default <repo>/../shared/data)
#   THREADS    intra-op threads on both sides (default 2)
#   STEPS BATCH REPEATS  step benchmark size (default 40 steps of 32, 3 rounds)
#   MEM_BATCH  batch size of the memory runs (default 128)
#   RESULTS    where the raw JSON lines go (default a temporary file)
#   ACCEPTANCE_JOBS, ACCEPTANCE_PYTORCH  subsets of the acceptance runs
#              (job names under jobs/; "sst2 trec")
#   ACCEPTANCE_SEED  seed of the acceptance runs on both sides (default: the
#              job file's, 42; PyTorch 42); names get a _seedN suffix
# Timings on a shared machine are noisy: rows of one run are comparable, and
# the C++ and PyTorch runs of each recipe alternate, round after round.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BUILD="${BUILD_DIR:-build}"
[[ "$BUILD" = /* ]] || BUILD="$ROOT/$BUILD"
BIN="$BUILD/tests"
MODEL_TOOL="$BUILD/server/model/freezetune-model"
PY=/usr/bin/python3
DATA="${FREEZETUNE_DATA_DIR:-$ROOT/../shared/data}"
THREADS="${THREADS:-2}"
STEPS="${STEPS:-40}"
BATCH="${BATCH:-32}"
REPEATS="${REPEATS:-3}"
MEM_BATCH="${MEM_BATCH:-128}"
MAXLEN=64
SECTIONS=("$@")
[[ ${#SECTIONS[@]} -gt 0 ]] || SECTIONS=(steps cache memory)

for f in "$BIN/freezetune_train_vs_pytorch" "$MODEL_TOOL"; do
  [[ -x "$f" ]] || { echo "run.sh: $f missing; build the 'benchmarks' target first" >&2; exit 1; }
done
[[ -f "$DATA/sst2/train.tsv" ]] || { echo "run.sh: no SST-2 under $DATA" >&2; exit 1; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/freezetune-bench.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
RESULTS="${RESULTS:-$WORK/results.jsonl}"
: > "$RESULTS"
# Same thread count on both sides: at::set_num_threads / torch.set_num_threads
# from --threads, and OpenMP (which OpenBLAS-openmp also follows) from here.
export OMP_NUM_THREADS="$THREADS"
# Idle OpenMP threads sleep instead of spinning. On a machine whose 2 cores
# are shared (load above 2), spinning workers and barriers that wait for a
# descheduled thread made 2-thread steps 7-10x slower than 1-thread ones
# (measured with python3-torch, 2026-11-26); PASSIVE removes that on both
# sides alike. Set OMP_WAIT_POLICY in the environment to override.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"

echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)," \
  "libblas.so.3 -> $(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 2>/dev/null || echo '?')," \
  "threads $THREADS, OMP_WAIT_POLICY=$OMP_WAIT_POLICY"

has() { local s; for s in "${SECTIONS[@]}"; do [[ "$s" == "$1" ]] && return 0; done; return 1; }
cpp() { "$BIN/freezetune_train_vs_pytorch" --threads "$THREADS" --max-len "$MAXLEN" "$@"; }
pyb() { "$PY" "$ROOT/tests/bench/pytorch_baseline.py" --threads "$THREADS" "$@"; }
tag() { "$PY" -c 'import json,sys; t=sys.argv[1]
for l in sys.stdin:
    if l.strip(): d=json.loads(l); d["bench"]=t; print(json.dumps(d))' "$1" >> "$RESULTS"; }

# The model of the timing benchmarks: 4 layers, hidden 128, 2 heads.
"$MODEL_TOOL" init --out "$WORK/model4" --vocab "$DATA/bert-base-uncased-vocab.txt" \
  --layers 4 --hidden 128 --heads 2 --intermediate 512 --max-position 128 >/dev/null

# The first N SST-2 training sentences, tokenized once by the product and
# handed to PyTorch with the Trainer's own batch plan: equal batches.
slice() { head -n "$(( $1 + 1 ))" "$DATA/sst2/train.tsv" > "$2"; }

if has steps; then
  slice $(( STEPS * BATCH )) "$WORK/steps.tsv"
  cpp --model "$WORK/model4" --train "$WORK/steps.tsv" --steps "$STEPS" --batch "$BATCH" \
    --dump "$WORK/steps" --dump-only
  for round in $(seq "$REPEATS"); do
    for recipe in full bottom_half head_only; do
      cpp --model "$WORK/model4" --train "$WORK/steps.tsv" --recipe "$recipe" --steps "$STEPS" \
        --batch "$BATCH" | tag steps
      pyb --model "$WORK/model4" --train "$WORK/steps/train.jsonl" --plan "$WORK/steps/plan.json" \
        --recipes "$recipe" --batch-size "$BATCH" | tag steps
    done
  done
fi

if has cache; then
  # Head-only for 3 epochs, frozen-prefix cache off and on (PyTorch: no cache).
  slice $(( STEPS * BATCH )) "$WORK/steps.tsv"
  cpp --model "$WORK/model4" --train "$WORK/steps.tsv" --steps "$STEPS" --batch "$BATCH" \
    --epochs 3 --dump "$WORK/cache" --dump-only
  for round in $(seq "$REPEATS"); do
    for bytes in 0 $(( 512 << 20 )); do
      cpp --model "$WORK/model4" --train "$WORK/steps.tsv" --recipe head_only --steps "$STEPS" \
        --batch "$BATCH" --epochs 3 --cache-bytes "$bytes" | tag cache
    done
    pyb --model "$WORK/model4" --train "$WORK/cache/train.jsonl" --plan "$WORK/cache/plan.json" \
      --recipes head_only --batch-size "$BATCH" | tag cache
  done
fi

if has memory; then
  # One process per recipe (VmHWM is per process), larger batches so that
  # activations dominate; C++ counts live tensor bytes, PyTorch counts what
  # autograd saves.
  MEM_STEPS=6
  slice $(( MEM_STEPS * MEM_BATCH )) "$WORK/mem.tsv"
  cpp --model "$WORK/model4" --train "$WORK/mem.tsv" --steps "$MEM_STEPS" --batch "$MEM_BATCH" \
    --dump "$WORK/mem" --dump-only
  for recipe in full bottom_half head_only; do
    cpp --model "$WORK/model4" --train "$WORK/mem.tsv" --recipe "$recipe" --steps "$MEM_STEPS" \
      --batch "$MEM_BATCH" --warmup 1 --count-memory | tag memory
    cpp --model "$WORK/model4" --train "$WORK/mem.tsv" --recipe "$recipe" --steps "$MEM_STEPS" \
      --batch "$MEM_BATCH" --warmup 1 | tag memory_rss
    pyb --model "$WORK/model4" --train "$WORK/mem/train.jsonl" --plan "$WORK/mem/plan.json" \
      --recipes "$recipe" --batch-size "$MEM_BATCH" --warmup-steps 1 --saved-bytes | tag memory
  done
fi

if has acceptance; then
  [[ -x "$BIN/freezetune_acceptance" ]] || { echo "run.sh: freezetune_acceptance missing" >&2; exit 1; }
  # 2 layers, hidden 128, trained from scratch (no pretrained weights here).
  "$MODEL_TOOL" init --out "$WORK/model2" --vocab "$DATA/bert-base-uncased-vocab.txt" \
    --layers 2 --hidden 128 --heads 2 --intermediate 512 --max-position 128 >/dev/null
  for job in ${ACCEPTANCE_JOBS:-sst2_full sst2_bottom_half sst2_head_only sst2_head_only_lr1e-2 trec trec_no_bucketing}; do
    "$BIN/freezetune_acceptance" "$ROOT/tests/bench/jobs/$job.json" --model "$WORK/model2" \
      --data "$DATA" --threads "$THREADS" \
      ${ACCEPTANCE_SEED:+--seed "$ACCEPTANCE_SEED" --name "${job}_seed$ACCEPTANCE_SEED"} \
      2>"$WORK/$job.log" | tag acceptance
    grep eval "$WORK/$job.log" >&2 || true
  done
  # The same budget in plain PyTorch, full fine-tuning: the same tokens (the
  # product's encoding, dumped), epochs, batch size, LR, warmup and linear
  # decay as jobs/sst2_full.json and jobs/trec.json; a plain shuffled loop
  # (no length bucketing), evaluated after each epoch.
  pyjob() {  # name train-file dev-file epochs batch
    cpp --model "$WORK/model2" --train "$2" --steps 1000000 --batch "$5" --dump "$WORK/$1" --dump-only
    cpp --model "$WORK/model2" --train "$3" --steps 1000000 --batch "$5" --dump "$WORK/$1.dev" --dump-only
    pyb --model "$WORK/model2" --train "$WORK/$1/train.jsonl" --dev "$WORK/$1.dev/train.jsonl" \
      --recipes full --epochs "$4" --batch-size "$5" --lr 1e-3 --schedule linear --warmup-ratio 0.1 \
      --seed "${ACCEPTANCE_SEED:-42}" \
      | "$PY" -c 'import json,sys,time; d=json.loads(sys.stdin.read()); d["name"]=sys.argv[2]; d["wall_seconds"]=time.time()-float(sys.argv[1]); print(json.dumps(d))' \
        "$(date +%s.%N)" "pytorch_$1${ACCEPTANCE_SEED:+_seed$ACCEPTANCE_SEED}" | tag acceptance_pytorch
  }
  for job in ${ACCEPTANCE_PYTORCH:-sst2 trec}; do
    case "$job" in
      sst2) pyjob sst2 "$DATA/sst2/train.tsv" "$DATA/sst2/dev.tsv" 1 64 ;;
      trec) pyjob trec "$DATA/trec/train_5500.label" "$DATA/trec/TREC_10.label" 10 32 ;;
    esac
  done
fi

"$PY" "$ROOT/tests/bench/summarize.py" "$RESULTS"
