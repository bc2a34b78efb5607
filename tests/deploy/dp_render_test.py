#!/usr/bin/python3
"""Renders deploy/k8s/data-parallel (multi-node data-parallel training of one
job, a design: deploy/README.md) with `kubectl kustomize` and checks that the
objects fit together and fit freezetune-worker (no cluster needed).

    /usr/bin/python3 tests/deploy/dp_render_test.py [REPO_ROOT]

Exits non-zero and lists every problem found."""
import json
import os
import re
import subprocess
import sys

import yaml

ROOT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                       os.path.join(os.path.dirname(__file__), "..", ".."))
TREE = os.path.join(ROOT, "deploy", "k8s", "data-parallel")
problems = []


def fail(msg):
    problems.append(msg)


def main():
    out = subprocess.run(["kubectl", "kustomize", TREE], capture_output=True, text=True)
    if out.returncode != 0:
        print(f"kubectl kustomize failed: {out.stderr}", file=sys.stderr)
        return 1
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
        labels = d["metadata"].get("labels") or {}
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/part-of", "app.kubernetes.io/component"):
            if key not in labels:
                fail(f"{d['kind']}/{d['metadata']['name']}: no label {key}")
    for kind in ("Job", "Service", "NetworkPolicy", "ConfigMap"):
        if len(by_kind.get(kind, [])) != 1:
            fail(f"expected one {kind}, got {len(by_kind.get(kind, []))}")
    if problems:
        return report()
    job, svc, netpol, cm = (by_kind[k][0] for k in ("Job", "Service", "NetworkPolicy", "ConfigMap"))
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    pod_labels = job["spec"]["template"]["metadata"].get("labels") or {}
    container = pod["containers"][0]
    args = dict(a.split("=", 1) for a in container.get("args", []))
    world = int(args.get("--world_size", "0"))

    # The worker accepts every flag the pod passes.
    with open(os.path.join(ROOT, "server", "worker_main.cc")) as f:
        accepted = set(re.findall(r'flag == "(--\w+)"', f.read()))
    for flag in args:
        if flag not in accepted:
            fail(f"freezetune-worker has no flag {flag} (it takes {sorted(accepted)})")
    for flag in ("--task", "--rank", "--world_size", "--store_host", "--store_port", "--store_rank",
                 "--gloo_hostname", "--report"):
        if flag not in args:
            fail(f"the worker needs {flag}")
    if container.get("command") != ["/opt/freezetune/bin/freezetune-worker"]:
        fail(f"command is {container.get('command')}, not the image's freezetune-worker")
    for dockerfile in ("cpu.Dockerfile", "cuda.Dockerfile"):
        with open(os.path.join(ROOT, "docker", dockerfile)) as f:
            if "freezetune-worker" not in f.read():
                fail(f"docker/{dockerfile} does not install freezetune-worker")

    # Indexed Job: one rank per pod, all at once, no retries.
    if spec.get("completionMode") != "Indexed":
        fail("the Job must be Indexed (the index is the rank)")
    if not world or spec.get("completions") != world or spec.get("parallelism") != world:
        fail(f"completions/parallelism {spec.get('completions')}/{spec.get('parallelism')} != world {world}")
    if spec.get("backoffLimit") != 0 or pod.get("restartPolicy") != "Never":
        fail("a dead rank must fail the Job (backoffLimit 0, restartPolicy Never)")
    env = {e["name"]: e for e in container.get("env") or []}
    if args.get("--rank") != "$(JOB_COMPLETION_INDEX)" or \
            env.get("JOB_COMPLETION_INDEX", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") \
            != "metadata.annotations['batch.kubernetes.io/job-completion-index']":
        fail("--rank must come from the completion index annotation")
    if args.get("--gloo_hostname") != "$(POD_IP)" or \
            env.get("POD_IP", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "status.podIP":
        fail("--gloo_hostname must be the pod IP")

    # Rendezvous: rank 0's stable name through the headless Service.
    name = job["metadata"]["name"]
    if pod.get("subdomain") != svc["metadata"]["name"]:
        fail(f"pod subdomain {pod.get('subdomain')} != headless Service {svc['metadata']['name']}")
    if svc["spec"].get("clusterIP") != "None" or not svc["spec"].get("publishNotReadyAddresses"):
        fail("the Service must be headless and publish not-ready addresses")
    if any(pod_labels.get(k) != v for k, v in (svc["spec"].get("selector") or {}).items()):
        fail("the Service does not select the Job's pods")
    if args.get("--store_host") != f"{name}-0.{svc['metadata']['name']}" or args.get("--store_rank") != "0":
        fail(f"--store_host {args.get('--store_host')} is not rank 0's pod name, or rank 0 does not host it")
    store_port = int(args.get("--store_port", "0"))
    svc_ports = {p["name"]: p["port"] for p in svc["spec"].get("ports") or []}
    c_ports = {p["name"]: p["containerPort"] for p in container.get("ports") or []}
    if svc_ports.get("c10d-store") != store_port or c_ports.get("c10d-store") != store_port:
        fail(f"store port {store_port} != Service {svc_ports} / container {c_ports}")

    # The task: mounted from the ConfigMap, one device per rank.
    mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts") or []}
    vols = {v["name"]: v for v in pod.get("volumes") or []}
    task_vol = next((n for n, v in vols.items() if v.get("configMap", {}).get("name") == cm["metadata"]["name"]), None)
    if task_vol is None or not args.get("--task", "").startswith(mounts.get(task_vol, "?") + "/"):
        fail("--task is not a file of the mounted task ConfigMap")
    task = json.loads(cm["data"][os.path.basename(args.get("--task", "task.json"))])
    if len(task["devices"]) != world or task["job"].get("resources", {}).get("dataParallel") != world:
        fail(f"the task has {len(task['devices'])} devices and dataParallel "
             f"{task['job'].get('resources', {}).get('dataParallel')}, the Job {world} ranks")
    if (container.get("resources", {}).get("limits") or {}).get("nvidia.com/gpu") != 1:
        fail("each rank's pod asks for exactly one GPU")

    # NetworkPolicy: ranks reach each other on any port, the report port, DNS.
    sel = netpol["spec"]["podSelector"].get("matchLabels") or {}
    if any(pod_labels.get(k) != v for k, v in sel.items()):
        fail("the NetworkPolicy does not select the Job's pods")
    peers = lambda rules, key: any(any((p.get("podSelector") or {}).get("matchLabels") == sel and not r.get("ports")
                                       for p in r.get(key) or []) for r in rules or [])
    if not peers(netpol["spec"].get("ingress"), "from") or not peers(netpol["spec"].get("egress"), "to"):
        fail("ranks must reach each other on every port (Gloo picks its ports)")
    report_port = int(args.get("--report", ":0").rsplit(":", 1)[1])
    egress_ports = {p.get("port") for r in netpol["spec"].get("egress") or [] for p in r.get("ports") or []}
    for port in (53, report_port):
        if port not in egress_ports:
            fail(f"egress to port {port} is not allowed")
    return report()


def report():
    for p in problems:
        print(f"FAIL: {p}", file=sys.stderr)
    if not problems:
        print("OK: deploy/k8s/data-parallel renders and fits freezetune-worker")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
