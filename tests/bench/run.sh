#!/usr/bin/env bash
# Runs the training benchmarks side by side with plain PyTorch and prints the
# result tables and ratios (tests/bench/README.md explains each number).
#
#   tests/bench/run.sh [steps] [cache] [headrss] [memory] [bertbase] [allocator] [e2e] [acceptance]
#                      [recipes] [mlm-memory]   (default: steps cache memory)
#
# Two PyTorch references run alternating with the C++ side: "pytorch" as a
# user runs it (OpenBLAS's own core, glibc malloc defaults) and
# "pytorch_tuned", given the BLAS core and malloc thresholds the product's
# start-up tuning picked (base/process_tuning.h), so that the comparison of
# the code itself stays honest. OMP_WAIT_POLICY is PASSIVE for every side
# (see below).
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
#   BERT_THREADS  thread counts of the bertbase section (default "1 2")
#   BERT_STEPS    steps per bertbase run (default 4, the first left out)
#   RECIPES_ARGS  extra recipes_bench.py arguments (smaller sizes, --work DIR
#              to keep the models and outputs, --sweep-lrs "" to skip the sweep)
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

# The recipes section runs the real server and the Python client instead.
NEEDED=("$MODEL_TOOL")
for s in "${SECTIONS[@]}"; do
  case "$s" in
    recipes|mlm-memory) NEEDED+=("$BUILD/server/freezetune-server" "$BUILD/python/freezetune/v1/freezetune_pb2.py") ;;
    *) NEEDED+=("$BIN/freezetune_train_vs_pytorch") ;;
  esac
done
for f in "${NEEDED[@]}"; do
  [[ -e "$f" ]] || { echo "run.sh: $f missing; build the 'benchmarks' target first (recipes: freezetune-server, freezetune_python_stubs)" >&2; exit 1; }
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
# tag BENCH [SIDE]: adds "bench" (and "side") to each JSON line of stdin.
tag() { "$PY" -c 'import json,sys; t=sys.argv[1]; side=sys.argv[2] if len(sys.argv)>2 else ""
for l in sys.stdin:
    if l.strip():
        d=json.loads(l); d["bench"]=t
        if side: d["side"]=side
        print(json.dumps(d))' "$@" >> "$RESULTS"; }

# What the product's start-up tuning picks here (the same TuneProcess as the
# server), and the environment that gives plain PyTorch the same: the core
# (only when the selection changed it) and the malloc thresholds.
SYSTEM_JSON="$("$MODEL_TOOL" system --json)"
sysfield() { "$PY" -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$SYSTEM_JSON" "$1"; }
TUNED_ENV=(GLIBC_TUNABLES=glibc.malloc.mmap_threshold=268435456:glibc.malloc.trim_threshold=1073741824)
[[ "$(sysfield blas_core_changed)" == no ]] || TUNED_ENV+=(OPENBLAS_CORETYPE="$(sysfield blas_core)")
echo "# cpu: $(sysfield cpu); blas core $(sysfield blas_core) ($(sysfield blas_core_decision))"
echo "# pytorch_tuned environment: ${TUNED_ENV[*]}"
# pyb_tuned: pytorch_baseline.py with the product's BLAS core and malloc settings.
pyb_tuned() { env "${TUNED_ENV[@]}" "$PY" "$ROOT/tests/bench/pytorch_baseline.py" --threads "$THREADS" "$@"; }

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
      pyb_tuned --model "$WORK/model4" --train "$WORK/steps/train.jsonl" \
        --plan "$WORK/steps/plan.json" --recipes "$recipe" --batch-size "$BATCH" \
        | tag steps pytorch_tuned
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

if has headrss; then
  # Head-only, 1 epoch, 512 MiB prefix-cache budget: the cache filled as
  # before the fill-only-when-hit policy (--cache-shared), the policy (no
  # fill: nothing can hit it), and the cache off; peak RSS and time, one
  # process each, alternating.
  slice $(( STEPS * BATCH )) "$WORK/steps.tsv"
  for round in $(seq "$REPEATS"); do
    for mode in shared policy off; do
      case "$mode" in
        shared) extra=(--cache-bytes $(( 512 << 20 )) --cache-shared) ;;
        policy) extra=(--cache-bytes $(( 512 << 20 ))) ;;
        off) extra=(--cache-bytes 0) ;;
      esac
      cpp --model "$WORK/model4" --train "$WORK/steps.tsv" --recipe head_only --steps "$STEPS" \
        --batch "$BATCH" "${extra[@]}" | tag headrss "$mode"
    done
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

if has bertbase; then
  # BERT-base shape (12 layers, hidden 768, 12 heads, FFN 3072; 110M
  # parameters, random weights), full fine-tuning, batch 8 x 128 tokens
  # (SST-2 sentences joined until they pass 128 tokens, then truncated), at
  # 1 and 2 threads: C++, PyTorch, PyTorch tuned, alternating. The C++ side
  # first measures the sgemm peak on the model's shapes (--sgemm-peak).
  "$MODEL_TOOL" init --out "$WORK/bertbase" --vocab "$DATA/bert-base-uncased-vocab.txt" \
    --layers 12 --hidden 768 --heads 12 --intermediate 3072 --max-position 512 >/dev/null
  BERT_STEPS="${BERT_STEPS:-4}"
  "$PY" - "$DATA/sst2/train.tsv" "$WORK/long.tsv" $(( BERT_STEPS * 8 )) <<'PYEOF'
import sys
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = [l.rstrip("\n").split("\t") for l in open(src)][1:]
with open(dst, "w") as out:
    out.write("sentence\tlabel\n")
    for i in range(n):
        words = []
        j = i * 40
        while len(words) < 200:  # about 1.3 tokens per word: well past 128
            words += rows[j % len(rows)][0].split()
            j += 1
        out.write(" ".join(words) + "\t" + rows[i][1] + "\n")
PYEOF
  for threads in ${BERT_THREADS:-1 2}; do
    "$BIN/freezetune_train_vs_pytorch" --threads "$threads" --max-len 128 --model "$WORK/bertbase" \
      --train "$WORK/long.tsv" --steps "$BERT_STEPS" --batch 8 --dump "$WORK/bert" --dump-only
    for round in $(seq "${BERT_REPEATS:-2}"); do
      OMP_NUM_THREADS=$threads "$BIN/freezetune_train_vs_pytorch" --threads "$threads" --max-len 128 \
        --model "$WORK/bertbase" --train "$WORK/long.tsv" --steps "$BERT_STEPS" --batch 8 \
        --warmup 1 --sgemm-peak | tag bertbase
      OMP_NUM_THREADS=$threads "$PY" "$ROOT/tests/bench/pytorch_baseline.py" --threads "$threads" \
        --model "$WORK/bertbase" --train "$WORK/bert/train.jsonl" --plan "$WORK/bert/plan.json" \
        --recipes full --batch-size 8 --warmup-steps 1 | tag bertbase
      OMP_NUM_THREADS=$threads env "${TUNED_ENV[@]}" "$PY" "$ROOT/tests/bench/pytorch_baseline.py" \
        --threads "$threads" --model "$WORK/bertbase" --train "$WORK/bert/train.jsonl" \
        --plan "$WORK/bert/plan.json" --recipes full --batch-size 8 --warmup-steps 1 \
        | tag bertbase pytorch_tuned
    done
  done
fi

if has allocator; then
  # The C++ full recipe (4 layers, STEPS x BATCH) and 3 BERT-base steps under
  # each allocator: glibc defaults, glibc with the product's thresholds
  # (mallopt, the default), jemalloc and tcmalloc (LD_PRELOAD, when
  # installed). Kernel (system) CPU time, wall time and peak RSS.
  slice $(( STEPS * BATCH )) "$WORK/steps.tsv"
  [[ -d "$WORK/bertbase" ]] || "$MODEL_TOOL" init --out "$WORK/bertbase" \
    --vocab "$DATA/bert-base-uncased-vocab.txt" --layers 12 --hidden 768 --heads 12 \
    --intermediate 3072 --max-position 512 >/dev/null
  [[ -f "$WORK/long.tsv" ]] || { echo "run.sh: allocator needs the bertbase section first" >&2; exit 1; }
  LIBDIR=/usr/lib/x86_64-linux-gnu
  for round in $(seq "$REPEATS"); do
    for alloc in glibc mallopt jemalloc tcmalloc; do
      pre=() extra=()
      case "$alloc" in
        glibc) extra=(--no-malloc-tuning) ;;
        jemalloc) [[ -f $LIBDIR/libjemalloc.so.2 ]] || continue; pre=(LD_PRELOAD=$LIBDIR/libjemalloc.so.2) ;;
        tcmalloc) [[ -f $LIBDIR/libtcmalloc_minimal.so.4 ]] || continue
                  pre=(LD_PRELOAD=$LIBDIR/libtcmalloc_minimal.so.4) ;;
      esac
      env "${pre[@]}" "$BIN/freezetune_train_vs_pytorch" "${extra[@]}" --threads "$THREADS" \
        --max-len "$MAXLEN" --model "$WORK/model4" --train "$WORK/steps.tsv" --recipe full \
        --steps "$STEPS" --batch "$BATCH" | tag allocator "$alloc"
      env "${pre[@]}" "$BIN/freezetune_train_vs_pytorch" "${extra[@]}" --threads "$THREADS" \
        --max-len 128 --model "$WORK/bertbase" --train "$WORK/long.tsv" --steps 3 --batch 8 \
        --warmup 1 | tag allocator_bertbase "$alloc"
    done
  done
fi

if has e2e; then
  # SST-2, 1 epoch, 2 layers x 128, 1 thread, end to end: a freezetune-server
  # (--threads 1) and the CLI submitting jobs/sst2_full.json, timed from
  # submit to SUCCEEDED; against the plain PyTorch loop (its own shuffled
  # batches, as a user writes it; the same tokens) with defaults and tuned.
  "$MODEL_TOOL" init --out "$WORK/model2" --vocab "$DATA/bert-base-uncased-vocab.txt" \
    --layers 2 --hidden 128 --heads 2 --intermediate 512 --max-position 128 >/dev/null
  CLI="$BUILD/client/src/freezetune"
  sed -e "s|@DATA@|$DATA|g" -e "s|@MODEL@|$WORK/model2|g" "$ROOT/tests/bench/jobs/sst2_full.json" \
    > "$WORK/sst2_e2e.json"
  cpp --model "$WORK/model2" --train "$DATA/sst2/train.tsv" --steps 1000000 --batch 64 \
    --dump "$WORK/e2e" --dump-only
  cpp --model "$WORK/model2" --train "$DATA/sst2/dev.tsv" --steps 1000000 --batch 64 \
    --dump "$WORK/e2e.dev" --dump-only
  e2e_cpp() {
    rm -rf "$WORK/srv" "$WORK/port"
    "$BUILD/server/freezetune-server" --listen=127.0.0.1:0 --port_file="$WORK/port" \
      --metrics_listen= --data_dir="$WORK/srv" --data_roots="$WORK,$DATA" --threads 1 \
      --cpu_slots 1 > "$WORK/srv.log" 2>&1 &
    local pid=$!
    for _ in $(seq 600); do [[ -s "$WORK/port" ]] && break; sleep 0.1; done
    local start; start=$(date +%s.%N)
    "$CLI" --server "127.0.0.1:$(cat "$WORK/port")" submit --watch -f "$WORK/sst2_e2e.json" \
      > "$WORK/e2e_events.jsonl"
    local end; end=$(date +%s.%N)
    local hwm; hwm=$(grep VmHWM "/proc/$pid/status" | awk '{print $2}')
    # The server's user and system CPU time (clock ticks), start-up included.
    local cpu; cpu=$(awk '{print $14, $15}' "/proc/$pid/stat")
    kill -TERM "$pid"; wait "$pid" || true
    "$PY" - "$WORK/e2e_events.jsonl" "$start" "$end" "$hwm" $cpu "$(getconf CLK_TCK)" <<'PYEOF' | tag e2e cpp
import json, sys
acc = [json.loads(l)["eval"].get("accuracy", 0) for l in open(sys.argv[1]) if '"eval"' in l]
tck = float(sys.argv[7])
print(json.dumps({"wall_seconds": float(sys.argv[3]) - float(sys.argv[2]), "threads": 1,
                  "dev_accuracy": acc, "vm_hwm_kb": int(sys.argv[4] or 0),
                  "process_user_seconds": int(sys.argv[5]) / tck,
                  "process_sys_seconds": int(sys.argv[6]) / tck}))
PYEOF
  }
  e2e_py() {  # side, env...
    local side=$1; shift
    local start; start=$(date +%s.%N)
    env "$@" "$PY" "$ROOT/tests/bench/pytorch_baseline.py" --threads 1 --model "$WORK/model2" \
      --train "$WORK/e2e/train.jsonl" --dev "$WORK/e2e.dev/train.jsonl" --recipes full \
      --epochs 1 --batch-size 64 --lr 1e-3 --schedule linear --warmup-ratio 0.1 --seed 42 \
      | "$PY" -c 'import json,sys,time; d=json.loads(sys.stdin.read()); d["wall_seconds"]=time.time()-float(sys.argv[1]); print(json.dumps(d))' "$start" \
      | tag e2e "$side"
  }
  for round in $(seq "${E2E_REPEATS:-1}"); do
    OMP_NUM_THREADS=1 e2e_cpp
    OMP_NUM_THREADS=1 e2e_py pytorch
    OMP_NUM_THREADS=1 e2e_py pytorch_tuned "${TUNED_ENV[@]}"
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

if has recipes; then
  # Issue 16 (tests/bench/RECIPES.md): MLM pretraining of a 4-layer, hidden-256
  # BERT on the SST-2 + TREC + RTE training text, every freeze and adapter
  # recipe on TREC and SST-2 from the pretrained and the random model, then
  # the 3 learning rates x 5 depths sweep against the same 15 jobs run
  # separately. All through freezetune-server and the Python client. About
  # an hour on 2 shared cores; prints its own tables.
  # shellcheck disable=SC2086  # RECIPES_ARGS is a list of words
  PYTHONPATH="$ROOT/client/python:$BUILD/python${PYTHONPATH:+:$PYTHONPATH}" "$PY" \
    "$ROOT/tests/bench/recipes_bench.py" "$BUILD/server/freezetune-server" "$MODEL_TOOL" "$DATA" \
    --work "$WORK/recipes" --results "$RESULTS" ${RECIPES_ARGS:-}
fi

if has mlm-memory; then
  # A masked-LM job's resident set under glibc with and without the server's
  # malloc tuning, jemalloc and tcmalloc, alternating (RECIPES.md, "MLM
  # memory"). About 5 minutes; prints its own table.
  PYTHONPATH="$ROOT/client/python:$BUILD/python${PYTHONPATH:+:$PYTHONPATH}" "$PY" \
    "$ROOT/tests/bench/mlm_memory_bench.py" "$BUILD/server/freezetune-server" "$MODEL_TOOL" "$DATA"
fi

"$PY" "$ROOT/tests/bench/summarize.py" "$RESULTS"
