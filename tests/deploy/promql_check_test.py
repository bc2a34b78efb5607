#!/usr/bin/python3
"""Checks every PromQL expression in the Grafana dashboard and the alert rules.

    /usr/bin/python3 tests/deploy/promql_check_test.py [REPO_ROOT]

1. Each expression parses: they are written into a temporary rules file as
   recording rules and `promtool check rules` parses them with Prometheus'
   own PromQL parser (Grafana variables are replaced first, as Grafana would).
2. Each freezetune_* metric they use is exported by server/metrics/metrics.cc
   or listed in deploy/prometheus/pending-metrics.txt (and a listed one is
   not exported yet).
3. The dashboard is well formed: unique panel ids, each panel and target uses
   the ${datasource} variable, every target has a refId and an expression.
The live test (prometheus_live_test.py) imports the extraction helpers."""
import glob
import json
import os
import re
import subprocess
import sys
import tempfile

import yaml

ROOT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                       os.path.join(os.path.dirname(__file__), "..", ".."))
DASHBOARD = os.path.join(ROOT, "deploy", "grafana", "freezetune-dashboard.json")
RULES = os.path.join(ROOT, "deploy", "prometheus", "freezetune.rules.yml")
PENDING = os.path.join(ROOT, "deploy", "prometheus", "pending-metrics.txt")
METRICS_CC = os.path.join(ROOT, "server", "metrics", "metrics.cc")
# Families built outside metrics.cc (server/metrics/notify_metrics.cc, ...).
METRICS_SOURCES = sorted(glob.glob(os.path.join(ROOT, "server", "metrics", "*.cc")))

# What Grafana substitutes; the live test uses the same values.
GRAFANA_VARS = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "1h",
    "instance": ".*",
    "job_id": ".*",
}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def substitute(expr):
    def repl(m):
        name = m.group(1) or m.group(2)
        if name not in GRAFANA_VARS:
            raise ValueError(f"unknown Grafana variable ${name} in {expr!r}")
        return GRAFANA_VARS[name]
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", repl, expr)


def walk_panels(panels):
    for p in panels or []:
        yield p
        yield from walk_panels(p.get("panels"))


def dashboard_exprs(dash):
    """[(where, expr with variables substituted, is_panel)]"""
    out = []
    for p in walk_panels(dash.get("panels")):
        for t in p.get("targets") or []:
            if t.get("expr"):
                out.append((f"panel {p.get('title')!r} target {t.get('refId')}", substitute(t["expr"]), True))
    for v in (dash.get("templating") or {}).get("list") or []:
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        if v.get("type") == "query" and q:
            m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\)\s*", q)
            if m:
                out.append((f"variable {v['name']}", substitute(m.group(1)), False))
            elif not re.fullmatch(r"\s*label_values\(\w+\)\s*", q):
                out.append((f"variable {v['name']}", substitute(q), False))
    return out


def rule_exprs(rules):
    return [(f"rule {r.get('alert') or r.get('record')}", r["expr"], False)
            for g in rules["groups"] for r in g["rules"]]


def load_all(root=ROOT):
    with open(os.path.join(root, "deploy", "grafana", "freezetune-dashboard.json")) as f:
        dash = json.load(f)
    with open(os.path.join(root, "deploy", "prometheus", "freezetune.rules.yml")) as f:
        rules = yaml.safe_load(f)
    return dash, rules


def metric_names(expr):
    names = set()
    for n in re.findall(r"\b(freezetune_[a-z0-9_]+)\b", expr):
        for s in HISTOGRAM_SUFFIXES:
            if n.endswith(s):
                names.add(n[: -len(s)])
                break
        else:
            names.add(n)
    return names


def read_pending(path=PENDING):
    names = set()
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                names.add(line)
    return names


PROTO = os.path.join(ROOT, "proto", "freezetune", "v1", "freezetune.proto")


def streaming_methods(path=PROTO):
    """Names of the server-streaming RPCs (`returns (stream ...)`)."""
    with open(path) as f:
        text = f.read()
    return set(re.findall(r"rpc\s+(\w+)\s*\([^)]*\)\s*returns\s*\(\s*stream\b", text))


def excludes_method(expr, method):
    """True when every selector of expr keeps `method` out: method!="m",
    method!~"re" with re matching m, or method=~"re" / method="x" not
    matching it."""
    selectors = re.findall(r"\{([^}]*)\}", expr)
    if not selectors:
        return False
    for sel in selectors:
        if "freezetune_" in sel:
            continue
        kept_out = False
        for op, value in re.findall(r'method\s*(!=|!~|=~|=)\s*"([^"]*)"', sel):
            if op == "!=" and value == method:
                kept_out = True
            elif op == "!~" and re.fullmatch(value, method):
                kept_out = True
            elif op == "=~" and not re.fullmatch(value, method):
                kept_out = True
            elif op == "=" and value != method:
                kept_out = True
        if not kept_out:
            return False
    return True


def main():
    problems = []
    dash, rules = load_all()
    exprs = dashboard_exprs(dash) + rule_exprs(rules)

    # 1. Parse with promtool.
    doc = {"groups": [{"name": "promql_check", "rules": [
        {"record": f"freezetune:promql_check:{i}", "expr": e} for i, (_, e, _) in enumerate(exprs)]}]}
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        yaml.safe_dump(doc, f)
        tmp = f.name
    try:
        out = subprocess.run(["promtool", "check", "rules", tmp], capture_output=True, text=True)
    finally:
        os.unlink(tmp)
    if out.returncode != 0:
        problems.append("promtool could not parse every expression:\n" + out.stdout + out.stderr)
        # Find the offenders one by one for a useful message.
        for where, e, _ in exprs:
            one = {"groups": [{"name": "one", "rules": [{"record": "freezetune:one", "expr": e}]}]}
            with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
                yaml.safe_dump(one, f)
                t = f.name
            r = subprocess.run(["promtool", "check", "rules", t], capture_output=True, text=True)
            os.unlink(t)
            if r.returncode != 0:
                problems.append(f"  {where}: {e}")
    else:
        print(f"promtool parsed {len(exprs)} expressions "
              f"({sum(1 for x in exprs if x[0].startswith('panel'))} panel targets, "
              f"{sum(1 for x in exprs if x[0].startswith('rule'))} rules)")

    # 2. Metric names against what the server exports.
    if not os.path.exists(METRICS_CC):
        problems.append(f"{METRICS_CC} is missing: cannot tell which metrics the server exports")
    else:
        exported = set()
        for source in METRICS_SOURCES:
            with open(source) as f:
                exported |= set(re.findall(r'\.Name\("(freezetune_[a-z0-9_]+)"\)', f.read()))
        pending = read_pending()
        used = set()
        for where, e, _ in exprs:
            for n in metric_names(e):
                used.add(n)
                if n not in exported and n not in pending:
                    problems.append(f"{where} uses {n}, which no server/metrics/*.cc exports "
                                    f"(and it is not in deploy/prometheus/pending-metrics.txt)")
        for n in sorted(pending & exported):
            problems.append(f"{n} is exported now: delete it from deploy/prometheus/pending-metrics.txt")
        for n in sorted(pending - used):
            problems.append(f"{n} is listed as pending but nothing uses it")
        print(f"{len(used)} metric names used; {len(used & exported)} exported, "
              f"{len(used & pending)} pending: {sorted(used & pending)}")

    # 3. Dashboard structure.
    ids = [p.get("id") for p in walk_panels(dash.get("panels"))]
    if len(ids) != len(set(ids)):
        problems.append(f"duplicate panel ids: {ids}")
    for p in walk_panels(dash.get("panels")):
        if p.get("type") == "row":
            continue
        if (p.get("datasource") or {}).get("uid") != "${datasource}":
            problems.append(f"panel {p.get('title')!r} does not use the ${{datasource}} variable")
        if not p.get("targets"):
            problems.append(f"panel {p.get('title')!r} has no queries")
        refs = [t.get("refId") for t in p.get("targets") or []]
        if len(refs) != len(set(refs)) or not all(refs):
            problems.append(f"panel {p.get('title')!r} has missing or duplicate refIds {refs}")
        for t in p.get("targets") or []:
            if not t.get("expr"):
                problems.append(f"panel {p.get('title')!r} target {t.get('refId')} has no expr")
        g = p.get("gridPos") or {}
        if g.get("x", 0) + g.get("w", 0) > 24 or not g.get("h"):
            problems.append(f"panel {p.get('title')!r} has a bad gridPos {g}")
    for want in ("freezetune_job_train_loss", "freezetune_job_eval_loss", "freezetune_job_eval_accuracy",
                 "freezetune_train_samples_total", "freezetune_queue_depth",
                 "freezetune_queue_oldest_age_seconds", "freezetune_jobs_finished_total",
                 "freezetune_grpc_requests_total", "freezetune_grpc_request_duration_seconds"):
        if not any(want in metric_names(e) for _, e, panel in exprs if panel):
            problems.append(f"no dashboard panel shows {want}")

    # 4. Latency panels of unary calls leave out every server-streaming RPC
    #    of the proto: a stream's duration is how long a client watched.
    streaming = streaming_methods()
    if not streaming:
        problems.append(f"no server-streaming rpc found in {PROTO}")
    for p in walk_panels(dash.get("panels")):
        if "unary" not in (p.get("title") or "").lower():
            continue
        for t in p.get("targets") or []:
            e = t.get("expr") or ""
            if "freezetune_grpc_request_duration_seconds" not in e:
                continue
            for m in sorted(streaming):
                if not excludes_method(e, m):
                    problems.append(f"panel {p.get('title')!r} target {t.get('refId')} counts the "
                                    f"streaming RPC {m}: {e}")

    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    print("all expressions parse and use known metrics; the dashboard is well formed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
