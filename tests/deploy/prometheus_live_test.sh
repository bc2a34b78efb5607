#!/usr/bin/env bash
# Live test of the monitoring side: a real freezetune-server on loopback runs a
# real fine-tuning job submitted with the freezetune CLI, a real Prometheus
# scrapes it every 500ms with the alert rules loaded, and then:
#   - promtool check metrics passes on a scrape taken while the job runs, and
#     that scrape has the job's loss gauge;
#   - docker/grpc_health_check.py (the images' HEALTHCHECK) passes;
#   - through Prometheus' HTTP API (prometheus_live_check.py): the target is
#     up, freezetune_train_steps_total > 0, the job's loss gauge was scraped
#     while it ran (range query), every PromQL expression of the dashboard and
#     the rules parses and evaluates, every dashboard panel returns data, the
#     rules load and evaluate without error, and no alert fires.
#
#   prometheus_live_test.sh SERVER_BIN MODEL_BIN CLI_BIN [REPO_ROOT]
#
# Needs prometheus, promtool and /usr/bin/python3 (scripts/debian-packages.txt).
# Every wait is bounded; both daemons are killed on exit. Logs are printed on
# failure.
set -euo pipefail
SERVER_BIN=${1:?usage: prometheus_live_test.sh SERVER_BIN MODEL_BIN CLI_BIN [REPO_ROOT]}
MODEL_BIN=${2:?}
CLI_BIN=${3:?}
ROOT=$(cd "${4:-$(dirname "$0")/../..}" && pwd)
PY=/usr/bin/python3
for b in "$SERVER_BIN" "$MODEL_BIN" "$CLI_BIN"; do
  [ -x "$b" ] || { echo "FAIL: $b is not an executable" >&2; exit 1; }
done
for t in prometheus promtool; do
  command -v "$t" >/dev/null || { echo "FAIL: $t not found (Debian package prometheus)" >&2; exit 1; }
done

T=$(mktemp -d "${TMPDIR:-/tmp}/freezetune-prom-live.XXXXXX")
server_pid=""
prom_pid=""
cli_pid=""
ok=0
cleanup() {
  for pid in "$cli_pid" "$prom_pid" "$server_pid"; do
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "$cli_pid" "$prom_pid" "$server_pid"; do
    if [ -n "$pid" ]; then
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  if [ "$ok" != 1 ]; then
    for log in server.log prometheus.log cli.log; do
      [ -f "$T/$log" ] && { echo "----- $log (last 40 lines)" >&2; tail -n 40 "$T/$log" >&2; }
    done
  fi
  rm -rf "$T"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
t0=$(date +%s)
elapsed() { echo "$(( $(date +%s) - t0 ))s"; }

# Two free loopback ports: the server's metrics and Prometheus' web API (the
# gRPC port is the server's own choice, read back from --port_file).
read -r METRICS_PORT PROM_PORT < <("$PY" - <<'PY'
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
for s in socks:
    s.close()
PY
)
METRICS_URL=http://127.0.0.1:$METRICS_PORT/metrics
PROM_URL=http://127.0.0.1:$PROM_PORT

# A tiny BERT with the real vocab, and a small sentiment-like dataset big
# enough that the job runs for several scrapes.
"$MODEL_BIN" init --out "$T/model" --vocab "$ROOT/tests/fixtures/data/bert-base-uncased-vocab.txt" \
  --layers 2 --hidden 32 --heads 2 --intermediate 64 >"$T/model.log" 2>&1 \
  || { cat "$T/model.log" >&2; fail "freezetune-model init"; }
"$PY" - "$T" <<'PY'
import json, random, sys
rng = random.Random(7)
good = "good great fine lovely superb wonderful pleasant brilliant".split()
bad = "bad awful poor dull terrible boring weak dreadful".split()
filler = "the movie plot was acting story film and a very quite really".split()
def line(label):
    words = rng.sample(filler, 6) + rng.sample(good if label else bad, 2)
    rng.shuffle(words)
    return json.dumps({"text": " ".join(words), "label": label})
for name, n in (("train.jsonl", 4000), ("validation.jsonl", 200)):
    with open(f"{sys.argv[1]}/{name}", "w") as f:
        for i in range(n):
            f.write(line(i % 2) + "\n")
PY

# The server.
"$SERVER_BIN" --listen 127.0.0.1:0 --port_file "$T/grpc.port" \
  --metrics_listen "127.0.0.1:$METRICS_PORT" --data_dir "$T/server" --data_roots "$T" \
  --cpu_slots 1 --threads 1 >"$T/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 150); do
  [ -s "$T/grpc.port" ] && break
  kill -0 "$server_pid" 2>/dev/null || fail "freezetune-server exited at start"
  sleep 0.1
done
[ -s "$T/grpc.port" ] || fail "freezetune-server wrote no --port_file in 15s"
SERVER=127.0.0.1:$(cat "$T/grpc.port")
"$PY" "$ROOT/docker/grpc_health_check.py" "$SERVER" \
  || fail "docker/grpc_health_check.py: the server is not SERVING"
"$PY" "$ROOT/docker/grpc_health_check.py" --service freezetune.v1.FineTuneService "$SERVER" \
  || fail "docker/grpc_health_check.py: freezetune.v1.FineTuneService is not SERVING"
echo "server on $SERVER, metrics on :$METRICS_PORT ($(elapsed))"

# Prometheus, scraping every 500ms, with the real alert rules.
cat >"$T/prometheus.yml" <<YML
global:
  scrape_interval: 500ms
  scrape_timeout: 400ms
  evaluation_interval: 500ms
rule_files:
  - $ROOT/deploy/prometheus/freezetune.rules.yml
scrape_configs:
  - job_name: freezetune
    static_configs:
      - targets: ["127.0.0.1:$METRICS_PORT"]
YML
promtool check config "$T/prometheus.yml" >/dev/null || fail "promtool check config"
prometheus --config.file="$T/prometheus.yml" --storage.tsdb.path="$T/tsdb" \
  --web.listen-address="127.0.0.1:$PROM_PORT" --log.level=warn >"$T/prometheus.log" 2>&1 &
prom_pid=$!
"$PY" - "$PROM_URL" <<'PY' || fail "Prometheus did not scrape the server (up == 1) within 20s"
import json, sys, time, urllib.parse, urllib.request
url = sys.argv[1]
deadline = time.time() + 20
while time.time() < deadline:
    try:
        q = urllib.parse.urlencode({"query": 'up{job="freezetune"} == 1'})
        with urllib.request.urlopen(f"{url}/api/v1/query?{q}", timeout=2) as r:
            if json.load(r)["data"]["result"]:
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.2)
sys.exit(1)
PY
start_ts=$("$PY" -c 'import time; print(time.time() - 5)')
echo "prometheus on :$PROM_PORT scraping ($(elapsed))"

# A client error for the gRPC error panels: GetJob of an unknown job is NOT_FOUND.
if "$CLI_BIN" --server "$SERVER" get no-such-job >"$T/notfound.log" 2>&1; then
  fail "freezetune get no-such-job succeeded"
fi

# The job, watched by the CLI in the background while we scrape.
timeout 90 "$CLI_BIN" --server "$SERVER" submit --watch --name "prometheus live test" \
  --model "file://$T/model" --train "file://$T/train.jsonl" \
  --validation "file://$T/validation.jsonl" --freeze bottom:1 \
  --epochs 2 --batch-size 8 --max-seq-length 16 --lr 1e-3 --log-every 5 --eval-every 50 \
  --output "file://$T/output" >"$T/cli.log" 2>&1 &
cli_pid=$!

# While it runs: a scrape with the job's loss gauge, linted by promtool.
"$PY" - "$METRICS_URL" "$T/running.prom" <<'PY' || fail "no scrape of /metrics showed freezetune_job_train_loss while the job ran (40s)"
import sys, time, urllib.request
url, out = sys.argv[1], sys.argv[2]
deadline = time.time() + 40
while time.time() < deadline:
    with urllib.request.urlopen(url, timeout=2) as r:
        body = r.read().decode()
    if any(l.startswith("freezetune_job_train_loss{") for l in body.splitlines()):
        open(out, "w").write(body)
        sys.exit(0)
    time.sleep(0.1)
sys.exit(1)
PY
promtool check metrics <"$T/running.prom" >"$T/promtool-metrics.log" 2>&1 \
  || { cat "$T/promtool-metrics.log" >&2; fail "promtool check metrics found problems in a live scrape"; }
echo "promtool check metrics passes on a live scrape with a running job ($(elapsed))"

# Exit 0 means the job SUCCEEDED (the CLI's contract).
cli_rc=0
wait "$cli_pid" || cli_rc=$?
cli_pid=""
[ "$cli_rc" = 0 ] || { cat "$T/cli.log" >&2; fail "freezetune submit --watch exited $cli_rc (job not SUCCEEDED)"; }
echo "job finished ($(elapsed))"

# The final scrape after the job, then the checks through Prometheus' API.
"$PY" "$ROOT/tests/deploy/prometheus_live_check.py" "$PROM_URL" "$start_ts" "$ROOT"
ok=1
echo "PASS ($(elapsed))"
