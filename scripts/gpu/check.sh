#!/usr/bin/env bash
# The GPU check: builds freezetune on a bare CUDA machine from the Debian
# packages that scripts/gpu/bundle.sh downloaded, then runs everything that
# needs a GPU, and writes the results as JSON into RESULTS_DIR.
#
#   scripts/gpu/check.sh RESULTS_DIR [--bundle DIR] [--work DIR]
#       [--torch-dir DIR] [--stages LIST] [--targets LIST] [--cuda-arch N]
#       [--jobs N]
#
# The machine needs: bash, python3 with PyTorch (its wheel carries LibTorch and
# its CMake config), a C++17 compiler, CMake >= 3.22, nvcc, dpkg-deb; no
# network, no apt. Stages (--stages, comma-separated, default all, in order):
#   unpack       verify every .deb against DIR/manifest.tsv and extract them
#                with dpkg-deb -x into WORK/prefix; fix the .pc files and the
#                absolute symlinks for the new location; wrap protoc,
#                grpc_cpp_plugin and pkg-config so they find their libraries.
#   configure    CMake against the prefix and the machine's LibTorch
#                (python3 -c 'import torch; print(torch.utils.cmake_prefix_path)',
#                or --torch-dir), CUDA architecture --cuda-arch (default 90).
#                Fails before configuring when LibTorch's C++ ABI is not the
#                CXX11 one that Debian's libraries use (see below).
#   build        the targets of --targets (default: server, worker, model
#                tool, CLI, the GPU tests and the GPU benchmark).
#   ctest        ctest -L gpu, with FREEZETUNE_REQUIRE_GPU=1 so that a test
#                that finds no GPU fails instead of skipping.
#   job          a real job through freezetune-server and the freezetune CLI
#                on device cuda, precision bf16; checks that it SUCCEEDED,
#                and scrapes the device memory metrics.
#   conformance  tests/numerics/transformers_check.py (Hugging Face
#                transformers, on CPU and CUDA) over the job's output.
#   bench        tests/bench/gpu_bench (freezetune) and gpu_hf_bench.py
#                (transformers, plain PyTorch loop) on BERT-base, seq 128,
#                batch 32, bf16: full, bottom-6 frozen, head-only; plus the
#                measured bf16 matmul rate for MFU.
# Every stage logs to RESULTS_DIR/logs/<stage>.log; RESULTS_DIR/summary.json
# has per stage ok/seconds/detail and what was found about the toolchain.
# Exit status 0 only when every requested stage passed.
#
# The C++ ABI. Debian 12's gRPC, Protobuf and Abseil are built with
# _GLIBCXX_USE_CXX11_ABI=1, and their headers pass std::string across the
# boundary, so LibTorch must use the same ABI. PyTorch's pip wheels do since
# 2.7 (manylinux_2_28); older ones (and 2.6 CPU wheels) used the pre-CXX11
# ABI. The configure stage reads the ABI from TorchConfig.cmake's
# TORCH_CXX_FLAGS (and torch._C._GLIBCXX_USE_CXX11_ABI) and stops with a clear
# message on a mismatch: mixing the two links but crashes at run time. It also
# records whether LibTorch exports Protobuf symbols or ships Protobuf headers,
# which could clash with Debian's Protobuf 3.21.
#
# Runtime libraries: the binaries are linked with DT_RPATH (not RUNPATH) to
# WORK/prefix/usr/lib/x86_64-linux-gnu, so they and the bundled libraries'
# own dependencies load from the prefix without LD_LIBRARY_PATH, while python
# (transformers) never sees them.
set -euo pipefail
SRC=$(cd "$(dirname "$0")/../.." && pwd)

usage() { sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 1 ] || usage
RESULTS=$1
shift
BUNDLE=$SRC/.gpu-bundle
WORK=$SRC/build-gpu
TORCH_DIR=
STAGES=unpack,configure,build,ctest,job,conformance,bench
TARGETS="freezetune-server freezetune-worker freezetune-model freezetune gpu_trainer_test gpu_bench"
CUDA_ARCH=90
JOBS=$(nproc)
PYTHON=${PYTHON:-python3}
# The job stage's device; cpu only to test the script itself without a GPU.
JOB_DEVICE=${FREEZETUNE_CHECK_JOB_DEVICE:-cuda}
while [ $# -gt 0 ]; do
  case "$1" in
    --bundle) BUNDLE=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --torch-dir) TORCH_DIR=$2; shift 2 ;;
    --stages) STAGES=$2; shift 2 ;;
    --targets) TARGETS=$2; shift 2 ;;
    --cuda-arch) CUDA_ARCH=$2; shift 2 ;;
    --jobs) JOBS=$2; shift 2 ;;
    *) usage ;;
  esac
done
mkdir -p "$RESULTS/logs" "$WORK"
RESULTS=$(cd "$RESULTS" && pwd)
WORK=$(cd "$WORK" && pwd)
BUNDLE=$(cd "$BUNDLE" && pwd)
PREFIX=$WORK/prefix
LIBDIR=$PREFIX/usr/lib/x86_64-linux-gnu
BUILD=$WORK/build
FACTS=$RESULTS/facts.tsv    # key, value: what was found about the machine
STAGELOG=$RESULTS/stages.tsv
: >"$FACTS"
: >"$STAGELOG"

fact() { printf '%s\t%s\n' "$1" "$2" >>"$FACTS"; }
want() { case ",$STAGES," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

write_summary() {
  "$PYTHON" - "$STAGELOG" "$FACTS" "$RESULTS/summary.json" <<'EOF'
import json, sys
stages, facts = [], {}
for line in open(sys.argv[1]):
    name, ok, secs, detail = line.rstrip("\n").split("\t", 3)
    stages.append({"stage": name, "ok": ok == "1", "seconds": float(secs), "detail": detail})
for line in open(sys.argv[2]):
    k, v = line.rstrip("\n").split("\t", 1)
    facts[k] = v
json.dump({"ok": all(s["ok"] for s in stages), "stages": stages, "facts": facts},
          open(sys.argv[3], "w"), indent=1)
EOF
}

failed=0
# run_stage NAME FUNCTION: runs it with its output in logs/NAME.log; a failed
# stage stops the stages after it (they depend on it).
run_stage() {
  local name=$1 fn=$2 start end rc detail
  want "$name" || return 0
  [ "$failed" -eq 0 ] || { printf '%s\t0\t0\tskipped: an earlier stage failed\n' "$name" >>"$STAGELOG"; return 0; }
  echo "== $name" >&2
  start=$(date +%s.%N)
  set +e
  ( set -euo pipefail; "$fn" ) >"$RESULTS/logs/$name.log" 2>&1
  rc=$?
  set -e
  end=$(date +%s.%N)
  detail=$(tail -n 1 "$RESULTS/logs/$name.log" | tr '\t' ' ' | cut -c1-300)
  printf '%s\t%s\t%s\t%s\n' "$name" "$([ $rc -eq 0 ] && echo 1 || echo 0)" \
    "$(awk -v a="$start" -v b="$end" 'BEGIN{printf "%.1f", b-a}')" "$detail" >>"$STAGELOG"
  if [ $rc -ne 0 ]; then
    failed=1
    echo "== $name FAILED (rc $rc); last lines of logs/$name.log:" >&2
    tail -n 30 "$RESULTS/logs/$name.log" >&2
  fi
}

# ---------------------------------------------------------------------------
stage_unpack() {
  [ -f "$BUNDLE/manifest.tsv" ] || { echo "no $BUNDLE/manifest.tsv: run scripts/gpu/bundle.sh first"; return 1; }
  rm -rf "$PREFIX"
  mkdir -p "$PREFIX"
  local n=0
  while IFS=$'\t' read -r pkg version arch bytes sha; do
    case "$pkg" in '#'*|'') continue ;; esac
    local deb
    deb=$(ls "$BUNDLE/debs/${pkg}_"*.deb 2>/dev/null | head -n 1)
    [ -n "$deb" ] || { echo "missing .deb for $pkg"; return 1; }
    [ "$(sha256sum "$deb" | cut -d' ' -f1)" = "$sha" ] || { echo "$deb: checksum mismatch"; return 1; }
    dpkg-deb -x "$deb" "$PREFIX"
    n=$((n + 1))
  done <"$BUNDLE/manifest.tsv"
  # Debian 12 packages still ship some files under /lib; merge them into
  # usr/lib as a merged-/usr system has them.
  if [ -d "$PREFIX/lib" ] && [ ! -L "$PREFIX/lib" ]; then
    mkdir -p "$PREFIX/usr/lib"
    cp -a "$PREFIX/lib/." "$PREFIX/usr/lib/"
    rm -rf "$PREFIX/lib"
    ln -s usr/lib "$PREFIX/lib"
  fi
  # Absolute symlinks (e.g. libz.so -> /lib/x86_64-linux-gnu/libz.so.1.2.13)
  # point into the prefix instead.
  local link target fixed=0
  while IFS= read -r link; do
    target=$(readlink "$link")
    case "$target" in
      /lib/*) target=/usr$target ;;
    esac
    ln -sfn "$PREFIX$target" "$link"
    fixed=$((fixed + 1))
  done < <(find "$PREFIX" -type l -lname '/*')
  # pkg-config files name /usr; make them name the prefix.
  local pc
  while IFS= read -r pc; do
    sed -i -E "s#^((prefix|exec_prefix|libdir|includedir)=)/usr#\1$PREFIX/usr#" "$pc"
  done < <(find "$PREFIX/usr" -name '*.pc')
  # The bundled programs need the bundled libraries.
  mkdir -p "$PREFIX/bin"
  local tool
  for tool in protoc grpc_cpp_plugin pkgconf; do
    [ -x "$PREFIX/usr/bin/$tool" ] || { echo "bundle lacks usr/bin/$tool"; return 1; }
    cat >"$PREFIX/bin/$tool" <<EOF
#!/bin/sh
LD_LIBRARY_PATH="$LIBDIR\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
PKG_CONFIG_LIBDIR="$LIBDIR/pkgconfig:$PREFIX/usr/share/pkgconfig\${PKG_CONFIG_LIBDIR:+:\$PKG_CONFIG_LIBDIR}"
export LD_LIBRARY_PATH PKG_CONFIG_LIBDIR
exec "$PREFIX/usr/bin/$tool" "\$@"
EOF
    chmod +x "$PREFIX/bin/$tool"
  done
  ln -sfn pkgconf "$PREFIX/bin/pkg-config"
  "$PREFIX/bin/protoc" --version
  "$PREFIX/bin/pkg-config" --modversion re2 grpc++ libutf8proc sqlite3 libpq libcurl
  fact bundle_packages "$n"
  fact absolute_symlinks_fixed "$fixed"
  echo "unpacked $n packages into $PREFIX ($fixed absolute symlinks retargeted)"
}

torch_cmake_dir() {
  if [ -n "$TORCH_DIR" ]; then echo "$TORCH_DIR"; return; fi
  local base
  base=$("$PYTHON" -c 'import torch; print(torch.utils.cmake_prefix_path)')
  echo "$base/Torch"
}

stage_configure() {
  local tdir abi pyabi torch_root exported headers
  tdir=$(torch_cmake_dir)
  [ -f "$tdir/TorchConfig.cmake" ] || { echo "no TorchConfig.cmake in $tdir"; return 1; }
  fact torch_cmake_dir "$tdir"
  fact torch_version "$("$PYTHON" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo unknown)"
  fact torch_cuda "$("$PYTHON" -c 'import torch; print(torch.version.cuda)' 2>/dev/null || echo unknown)"
  abi=$(grep -o '_GLIBCXX_USE_CXX11_ABI=[01]' "$tdir/TorchConfig.cmake" | head -n 1 | cut -d= -f2)
  pyabi=$("$PYTHON" -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))' 2>/dev/null || echo unknown)
  fact torch_cxx11_abi_cmake "${abi:-absent}"
  fact torch_cxx11_abi_python "$pyabi"
  if [ "${abi:-1}" != 1 ]; then
    echo "LibTorch at $tdir uses _GLIBCXX_USE_CXX11_ABI=$abi, Debian's gRPC/Protobuf/Abseil use 1:"
    echo "they cannot be linked together. Use a PyTorch >= 2.7 wheel or the cxx11-abi LibTorch zip."
    return 1
  fi
  # Protobuf inside LibTorch: exported symbols would interpose Debian's.
  torch_root=$(cd "$tdir/../../.." && pwd)
  exported=0
  if [ -f "$torch_root/lib/libtorch_cpu.so" ] && command -v nm >/dev/null; then
    exported=$(nm -D --defined-only "$torch_root/lib/libtorch_cpu.so" 2>/dev/null | grep -c '_ZN6google8protobuf' || true)
  fi
  headers=$([ -d "$torch_root/include/google/protobuf" ] && echo yes || echo no)
  fact torch_exported_protobuf_symbols "$exported"
  fact torch_ships_protobuf_headers "$headers"
  echo "LibTorch: $tdir, CXX11 ABI $abi (python: $pyabi), exported protobuf symbols: $exported, protobuf headers: $headers"
  local gen=()
  command -v ninja >/dev/null && gen=(-G Ninja)
  rm -rf "$BUILD"
  # Every build-time lookup goes to the prefix first: CMake configs through
  # CMAKE_PREFIX_PATH, pkg-config through the wrapper, protoc through its
  # wrapper. DT_RPATH makes the runtime lookups go there too.
  TORCH_CUDA_ARCH_LIST="$(echo "$CUDA_ARCH" | sed -E 's/^([0-9]+)([0-9])$/\1.\2/')" \
  cmake -S "$SRC" -B "$BUILD" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$PREFIX/usr" \
    -DTorch_DIR="$tdir" \
    -DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCH" \
    -DProtobuf_PROTOC_EXECUTABLE="$PREFIX/bin/protoc" \
    -DPKG_CONFIG_EXECUTABLE="$PREFIX/bin/pkg-config" \
    -DOPENSSL_ROOT_DIR="$PREFIX/usr" -DZLIB_ROOT="$PREFIX/usr" \
    -DCMAKE_EXE_LINKER_FLAGS="-Wl,--disable-new-dtags -Wl,-rpath,$LIBDIR" \
    -DCMAKE_SHARED_LINKER_FLAGS="-Wl,--disable-new-dtags -Wl,-rpath,$LIBDIR" \
    ${FREEZETUNE_CMAKE_ARGS:-}
  # What CMake found must be the prefix's.
  local key value bad=0
  for key in gRPC_DIR absl_DIR prometheus-cpp_DIR nlohmann_json_DIR Protobuf_INCLUDE_DIR \
             Protobuf_LIBRARY_RELEASE PKG_CONFIG_EXECUTABLE; do
    value=$(grep -E "^$key:" "$BUILD/CMakeCache.txt" | cut -d= -f2- || true)
    fact "cmake_$key" "$value"
    case "$value" in "$PREFIX"*) ;; *) echo "$key is '$value', not under $PREFIX"; bad=1 ;; esac
  done
  # Informational: without a usable sleef.h the fused AdamW keeps its portable loop.
  for key in FREEZETUNE_SLEEF_INCLUDE_DIR FREEZETUNE_ADAMW_VECTORIZED; do
    fact "cmake_$key" "$(grep -E "^$key:" "$BUILD/CMakeCache.txt" | cut -d= -f2- || true)"
  done
  [ "$bad" -eq 0 ]
  echo "configured $BUILD against $PREFIX and $tdir"
}

stage_build() {
  # shellcheck disable=SC2086  # a list of targets
  cmake --build "$BUILD" -j"$JOBS" --target $TARGETS
  # Every bundled library a binary needs must resolve into the prefix, and
  # nothing may be missing.
  local bin missing=0
  for bin in "$BUILD/client/src/freezetune" "$BUILD/server/freezetune-server"; do
    [ -x "$bin" ] || continue
    ldd "$bin" >"$WORK/ldd.txt"
    if grep -q 'not found' "$WORK/ldd.txt"; then
      echo "$bin: unresolved libraries:"; grep 'not found' "$WORK/ldd.txt"; missing=1
    fi
    grep -E 'lib(grpc\+\+|protobuf|absl_)[^ ]* =>' "$WORK/ldd.txt" | grep -v "$PREFIX" && {
      echo "$bin: a bundled library resolves outside $PREFIX"; missing=1; }
  done
  [ "$missing" -eq 0 ]
  echo "built: $TARGETS"
}

stage_ctest() {
  (cd "$BUILD" && FREEZETUNE_REQUIRE_GPU=1 ctest -L gpu --output-on-failure \
     --output-junit "$RESULTS/ctest-gpu.xml" --timeout 300)
  echo "ctest -L gpu passed"
}

# Starts a server on loopback in $1 (data dir); sets SERVER and SERVER_PID.
start_server() {
  local dir=$1
  mkdir -p "$dir"
  # A free port for /metrics (the server has no port file for it).
  "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' \
    >"$dir/metrics_port"
  "$BUILD/server/freezetune-server" --listen 127.0.0.1:0 --port_file "$dir/port" \
    --metrics_listen "127.0.0.1:$(cat "$dir/metrics_port")" \
    --data_dir "$dir/data" --data_roots "$SRC,$WORK" >"$dir/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 300); do
    [ -s "$dir/port" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$dir/server.log"; return 1; }
    sleep 0.1
  done
  SERVER=127.0.0.1:$(cat "$dir/port")
}

stage_job() {
  local dir=$WORK/job
  rm -rf "$dir" && mkdir -p "$dir"
  local data=$SRC/tests/fixtures/data
  "$BUILD/server/model/freezetune-model" init --out "$dir/model" --vocab "$data/bert-base-uncased-vocab.txt" \
    --layers 4 --hidden 256 --heads 4 --intermediate 1024 --max-position 128 --num-labels 2 --seed 7
  start_server "$dir/server"
  trap 'kill -TERM $SERVER_PID 2>/dev/null; wait $SERVER_PID 2>/dev/null || true' RETURN
  "$BUILD/client/src/freezetune" --server "$SERVER" submit --watch --json --name "gpu check" \
    --device "$JOB_DEVICE" --precision bf16 --freeze bottom:1 --epochs 1 \
    --model "file://$dir/model" --output "file://$dir/output" \
    --train "file://$data/sst2/train_first10000.tsv" --validation "file://$data/sst2/dev.tsv" \
    --batch-size 32 --lr 1e-3 --max-seq-length 64 --eval-every 100 --log-every 20 \
    >"$RESULTS/job_events.jsonl" &
  local cli=$! rc
  # The per-job device memory gauges exist while the job runs: scrape then.
  : >"$RESULTS/job_memory_metrics.txt"
  while kill -0 "$cli" 2>/dev/null; do
    "$PYTHON" -c "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:$(cat "$dir/server/metrics_port")/metrics').read().decode())" \
      2>/dev/null | grep -E '^freezetune_job_device_memory_bytes' >>"$RESULTS/job_memory_metrics.txt" || true
    sleep 1
  done
  set +e
  wait "$cli"
  rc=$?
  set -e
  cp "$dir/server/server.log" "$RESULTS/job_server.log"
  [ $rc -eq 0 ] || { echo "the job did not succeed (CLI exit $rc)"; return 1; }
  grep -q "running in slot [0-9]* ($JOB_DEVICE" "$RESULTS/job_events.jsonl" || {
    echo "no event says the job ran on $JOB_DEVICE"; return 1; }
  if [ "$JOB_DEVICE" != cpu ]; then
    grep -q 'kind="peak"' "$RESULTS/job_memory_metrics.txt" || { echo "no device memory metrics were scraped"; return 1; }
  fi
  echo "job on $JOB_DEVICE (bf16) SUCCEEDED; events in job_events.jsonl"
}

stage_conformance() {
  local dir=$WORK/job conf=$WORK/conformance
  rm -rf "$conf" && mkdir -p "$conf"
  [ -d "$dir/output" ] || { echo "no job output (run the job stage)"; return 1; }
  head -n 101 "$SRC/tests/fixtures/data/sst2/dev.tsv" | tail -n 100 \
    | "$PYTHON" -c 'import sys, json
for line in sys.stdin:
    print(json.dumps({"text": line.rstrip("\n").split("\t")[0]}))' >"$conf/trained.inputs.jsonl"
  "$BUILD/server/model/freezetune-model" tokenize --model "$dir/output" <"$conf/trained.inputs.jsonl" >"$conf/trained.tokens.jsonl"
  "$BUILD/server/model/freezetune-model" predict --model "$dir/output" --input "$conf/trained.inputs.jsonl" >"$conf/trained.predict.jsonl"
  "$PYTHON" "$SRC/tests/numerics/transformers_check.py" \
    --case "$dir/output:$conf/trained.inputs.jsonl:$conf/trained.tokens.jsonl:$conf/trained.predict.jsonl" \
    >"$RESULTS/conformance.json"
  echo "transformers conformance passed (conformance.json)"
}

stage_bench() {
  "$BUILD/tests/bench/gpu_bench" --device cuda --json "$RESULTS/bench_freezetune.json"
  "$PYTHON" "$SRC/tests/bench/gpu_hf_bench.py" --device cuda --json "$RESULTS/bench_hf.json"
  "$PYTHON" "$SRC/tests/bench/gpu_bench_report.py" "$RESULTS/bench_freezetune.json" \
    "$RESULTS/bench_hf.json" >"$RESULTS/bench.json"
  cat "$RESULTS/bench.json"
}

run_stage unpack stage_unpack
run_stage configure stage_configure
run_stage build stage_build
run_stage ctest stage_ctest
run_stage job stage_job
run_stage conformance stage_conformance
run_stage bench stage_bench
write_summary
cat "$RESULTS/summary.json"
[ "$failed" -eq 0 ]
