#!/usr/bin/env bash
# scripts/gpu/check.sh's job stage on the CPU, against this build: a bf16 job
# through freezetune-server and the CLI, its events and metrics checked as on
# the GPU machine (FREEZETUNE_CHECK_JOB_DEVICE=cpu), so that the script the
# one GPU run depends on cannot rot between runs.
#
#   gpu_check_job_cpu.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
SRC=$1
BUILD=$(cd "$2" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ft_gpu_check_job.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
ln -s "$BUILD" "$WORK/build"   # check.sh runs WORK/build's binaries
mkdir "$WORK/bundle"           # not used by the job stage
FREEZETUNE_CHECK_JOB_DEVICE=cpu PYTHON=/usr/bin/python3 \
  "$SRC/scripts/gpu/check.sh" "$WORK/results" --work "$WORK" --bundle "$WORK/bundle" --stages job
/usr/bin/python3 - "$WORK/results" <<'PY'
import json, sys
results = sys.argv[1]
summary = json.load(open(results + "/summary.json"))
assert summary["ok"] and [s["stage"] for s in summary["stages"]] == ["job"], summary
events = [json.loads(line) for line in open(results + "/job_events.jsonl") if line.strip()]
states = [e["stateChange"]["state"] for e in events if "stateChange" in e]
assert states and states[-1] == "JOB_STATE_SUCCEEDED", states
assert any("train" in e for e in events), "no training events"
print("OK: check.sh's job stage passed on the CPU:", len(events), "events")
PY
