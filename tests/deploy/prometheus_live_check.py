#!/usr/bin/python3
"""The Prometheus half of prometheus_live_test.sh: queries a live Prometheus
that has scraped a freezetune-server through a finished job.

    prometheus_live_check.py PROM_URL START_UNIX_TIME REPO_ROOT

Checks, each of which fails the test:
  - the job's success reached Prometheus, and freezetune_train_steps_total > 0;
  - freezetune_job_train_loss{job_id} was scraped while the job ran (range
    query over the test, at least two points: a curve);
  - every dashboard and rule expression evaluates (status success), Grafana
    variables replaced as in promql_check_test.py;
  - every dashboard panel query returns data over the test's time range,
    except a query whose metrics are all in deploy/prometheus/pending-metrics.txt:
    that metric must then be absent from Prometheus (once the server exports
    it, this fails until the name leaves the pending list);
  - the rule group loaded and every rule evaluated with health "ok";
  - no alert is firing after a healthy run."""
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

PROM, START, ROOT = sys.argv[1], float(sys.argv[2]), sys.argv[3]
sys.path.insert(0, os.path.join(ROOT, "tests", "deploy"))
import promql_check_test as pc  # noqa: E402

problems = []


def api(path, **params):
    url = f"{PROM}/api/v1/{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:  # 400/422 carry the PromQL error as JSON
        return json.load(e)


def instant(q):
    return api("query", query=q)


def wait_for(q, seconds):
    deadline = time.time() + seconds
    while time.time() < deadline:
        r = instant(q)
        if r.get("status") == "success" and r["data"]["result"]:
            return True
        time.sleep(0.25)
    return False


def main():
    if not wait_for('freezetune_jobs_finished_total{job="freezetune", state="succeeded"} >= 1', 10):
        problems.append("freezetune_jobs_finished_total{state=\"succeeded\"} never reached 1 in Prometheus")
    time.sleep(1.5)  # a few more scrapes and rule evaluations
    end = time.time()
    rng = dict(start=f"{START:.3f}", end=f"{end:.3f}", step="0.5")

    r = instant("freezetune_train_steps_total > 0")
    if r.get("status") != "success" or not r["data"]["result"]:
        problems.append(f"freezetune_train_steps_total > 0 returned nothing: {r}")

    r = api("query_range", query="freezetune_job_train_loss", **rng)
    series = r.get("data", {}).get("result", []) if r.get("status") == "success" else []
    if not series:
        problems.append("freezetune_job_train_loss was never scraped while the job ran")
    for s in series:
        if not s["metric"].get("job_id"):
            problems.append(f"freezetune_job_train_loss series without job_id: {s['metric']}")
        if len(s["values"]) < 2:
            problems.append(f"freezetune_job_train_loss{{job_id={s['metric'].get('job_id')}}} has "
                            f"{len(s['values'])} point(s), want a curve")
    print(f"loss series scraped: {[(s['metric'].get('job_id'), len(s['values'])) for s in series]}")

    dash, rules = pc.load_all(ROOT)
    pending = pc.read_pending(os.path.join(ROOT, "deploy", "prometheus", "pending-metrics.txt"))
    checked = absent = 0
    for where, expr, is_panel in pc.dashboard_exprs(dash) + pc.rule_exprs(rules):
        r = api("query_range", query=expr, **rng)
        if r.get("status") != "success":
            problems.append(f"{where}: {r.get('errorType')}: {r.get('error')}\n    {expr}")
            continue
        if not is_panel and not where.startswith("variable"):
            continue
        names = pc.metric_names(expr)
        if names and names <= pending:
            for n in sorted(names):
                got = instant(f'count({{__name__="{n}"}})')
                if got.get("data", {}).get("result"):
                    problems.append(f"{where}: {n} is exported now; delete it from "
                                    "deploy/prometheus/pending-metrics.txt so its panel is checked")
            absent += 1
            continue
        if not r["data"]["result"]:
            problems.append(f"{where} returned no data over the test\n    {expr}")
        checked += 1
    print(f"{checked} dashboard queries returned data; {absent} wait for pending metrics "
          f"({sorted(pending)}), which Prometheus has no series of")

    r = api("rules")
    groups = {g["name"]: g for g in r.get("data", {}).get("groups", [])}
    want = sum(len(g["rules"]) for g in rules["groups"])
    got_rules = [rule for g in groups.values() for rule in g["rules"]]
    if len(got_rules) != want:
        problems.append(f"Prometheus loaded {len(got_rules)} rules, the file has {want}")
    for rule in got_rules:
        if rule.get("health") != "ok":
            problems.append(f"rule {rule.get('name')}: health {rule.get('health')}: {rule.get('lastError')}")

    r = api("alerts")
    firing = [a for a in r.get("data", {}).get("alerts", []) if a.get("state") == "firing"]
    for a in firing:
        problems.append(f"alert firing after a healthy run: {a['labels']}")

    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    print(f"Prometheus checks pass: {len(got_rules)} rules healthy, no alert firing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
