#!/usr/bin/python3
"""Writes deploy/k8s/components/monitoring/prometheusrule.yaml from
deploy/prometheus/freezetune.rules.yml, so the Prometheus Operator and a plain
Prometheus load the same rules. Run it after editing the rules file:

    /usr/bin/python3 tests/deploy/sync_prometheusrule.py

k8s_render_test.py fails when the rendered PrometheusRule's groups differ
from the rules file."""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SRC = os.path.join(ROOT, "deploy/prometheus/freezetune.rules.yml")
DST = os.path.join(ROOT, "deploy/k8s/components/monitoring/prometheusrule.yaml")

HEADER = """\
# GENERATED from deploy/prometheus/freezetune.rules.yml by
# tests/deploy/sync_prometheusrule.py: edit the rules file, then rerun it.
# Prometheus Operators select rules by label (kube-prometheus-stack's default
# ruleSelector wants release: <helm release>); add that label in an overlay.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: freezetune
spec:
"""


def main():
    with open(SRC) as f:
        lines = f.read().splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("groups:"))
    body = "\n".join(("  " + l) if l.strip() else "" for l in lines[start:])
    with open(DST, "w") as f:
        f.write(HEADER + body + "\n")


if __name__ == "__main__":
    main()
