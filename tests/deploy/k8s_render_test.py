#!/usr/bin/python3
"""Renders every kustomize tree under deploy/k8s with `kubectl kustomize` and
checks the objects that come out (no cluster needed).

    /usr/bin/python3 tests/deploy/k8s_render_test.py [REPO_ROOT]

Exits non-zero and lists every problem found."""
import os
import re
import subprocess
import sys

import yaml

ROOT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                       os.path.join(os.path.dirname(__file__), "..", ".."))
K8S = os.path.join(ROOT, "deploy", "k8s")
RULES = os.path.join(ROOT, "deploy", "prometheus", "freezetune.rules.yml")

REQUIRED_LABELS = {
    "app.kubernetes.io/name": "freezetune",
    "app.kubernetes.io/instance": "freezetune",
    "app.kubernetes.io/component": None,
    "app.kubernetes.io/part-of": "freezetune",
    "app.kubernetes.io/version": None,
    "app.kubernetes.io/managed-by": "kustomize",
}
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
# Flags the server is intended to get (deploy/README.md); every other flag the
# Deployment passes must be an ABSL_FLAG of server/main.cc.
INTENDED_FLAGS = {"--auth_token_file", "--tls_cert", "--tls_key", "--tls_client_ca",
                  "--drain_grace_period"}
CLUSTER_SCOPED = {"Namespace"}

problems = []


def fail(where, msg):
    problems.append(f"{where}: {msg}")


def render(path):
    out = subprocess.run(["kubectl", "kustomize", path], capture_output=True, text=True)
    if out.returncode != 0:
        fail(path, f"kubectl kustomize failed: {out.stderr.strip()}")
        return []
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def server_flags():
    path = os.path.join(ROOT, "server", "main.cc")
    if not os.path.exists(path):
        fail("server/main.cc", "missing: cannot check the Deployment's flags")
        return set()
    with open(path) as f:
        return set(re.findall(r"ABSL_FLAG\(\s*[\w:<>]+\s*,\s*(\w+)\s*,", f.read()))


def duration_seconds(text):
    m = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", text or "")
    if not m or not text:
        return None
    return int(m.group(1) or 0) * 60 + int(m.group(2) or 0)


def selector_matches(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def check_labels(where, meta):
    labels = (meta or {}).get("labels") or {}
    for key, want in REQUIRED_LABELS.items():
        if key not in labels:
            fail(where, f"label {key} missing")
        elif want is not None and labels[key] != want:
            fail(where, f"label {key}={labels[key]!r}, want {want!r}")


def check_image(where, image):
    name = image.split("@")[0]
    last = name.rsplit("/", 1)[-1]
    if "@sha256:" in image:
        return
    if ":" not in last:
        fail(where, f"image {image!r} has no tag (that means :latest)")
    elif last.endswith(":latest"):
        fail(where, f"image {image!r} uses :latest")


def check_tree(tree, docs, *, overlay):
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
        name = f"{tree} {d['kind']}/{d['metadata'].get('name')}"
        check_labels(name, d["metadata"])
        if overlay and d["kind"] not in CLUSTER_SCOPED and d["metadata"].get("namespace") != "freezetune":
            fail(name, f"namespace is {d['metadata'].get('namespace')!r}, want 'freezetune'")

    def one(kind):
        items = by_kind.get(kind, [])
        if len(items) != 1:
            fail(tree, f"want exactly one {kind}, got {len(items)}")
            return None
        return items[0]

    # The ha overlay runs several replicas on a shared store: no volume of
    # its own (a ReadWriteOnce PVC would pin the Deployment to one pod).
    ha = tree.endswith("/ha")
    dep, svc, cm = one("Deployment"), one("Service"), one("ConfigMap")
    sa, netpol = one("ServiceAccount"), one("NetworkPolicy")
    secret = next((d for d in by_kind.get("Secret", [])
                   if d["metadata"]["name"] == "freezetune-secrets"), None)
    if secret is None:
        fail(tree, "no Secret freezetune-secrets")
    if ha:
        pvc = {}
        if by_kind.get("PersistentVolumeClaim"):
            fail(tree, "the ha overlay must not deploy a PersistentVolumeClaim")
    else:
        pvc = one("PersistentVolumeClaim")
    if not all([dep, svc, cm, sa, netpol, secret]) or pvc is None:
        return
    where = f"{tree} Deployment"
    flags = cm.get("data") or {}
    pod = dep["spec"]["template"]["spec"]
    tmpl_labels = dep["spec"]["template"]["metadata"].get("labels") or {}
    check_labels(f"{where} pod template", dep["spec"]["template"]["metadata"])
    if not selector_matches(dep["spec"]["selector"].get("matchLabels"), tmpl_labels):
        fail(where, "selector does not match the pod template labels")
    containers = pod.get("containers") or []
    server = next((c for c in containers if c["name"] == "server"), None)
    if server is None:
        fail(where, "no container named 'server'")
        return

    # Image and flags.
    for c in containers + (pod.get("initContainers") or []):
        check_image(f"{where} container {c['name']}", c.get("image", ""))
    refs = [r.get("configMapRef", {}).get("name") for r in server.get("envFrom") or []]
    if cm["metadata"]["name"] not in refs:
        fail(where, f"envFrom does not reference the ConfigMap {cm['metadata']['name']}")
    args = server.get("args") or []
    env = {e["name"]: e for e in server.get("env") or []}
    used = set()
    for a in args:
        if not a.startswith("--"):
            fail(where, f"arg {a!r} is not a --flag")
        for var in re.findall(r"\$\((\w+)\)", a):
            used.add(var)
            if var not in flags and var not in env:
                fail(where, f"arg {a!r} uses $({var}), which neither the ConfigMap nor env defines")
    for key in flags:
        if key not in used:
            fail(where, f"ConfigMap key {key} is not passed to any flag")
    flag_names = {a.split("=")[0] for a in args}
    defined = server_flags()
    for f in sorted(flag_names):
        if f[2:] not in defined and f not in INTENDED_FLAGS:
            fail(where, f"{f} is neither a flag of server/main.cc nor one of the intended flags")
    for f in ("--listen", "--metrics_listen", "--data_dir", "--auth_token_file", "--tls_cert",
              "--tls_key", "--tls_client_ca", "--drain_grace_period"):
        if f not in flag_names:
            fail(where, f"flag {f} is not passed")

    # Ports.
    ports = {p.get("name"): p["containerPort"] for p in server.get("ports") or []}
    if set(ports) != {"grpc", "metrics"}:
        fail(where, f"container ports are {sorted(map(str, ports))}, want grpc and metrics")
    listen = flags.get("FREEZETUNE_LISTEN", "")
    if ports.get("grpc") and not listen.endswith(f":{ports['grpc']}"):
        fail(where, f"--listen {listen!r} is not on the grpc containerPort {ports.get('grpc')}")
    mlisten = flags.get("FREEZETUNE_METRICS_LISTEN", "")
    if ports.get("metrics") and not mlisten.endswith(f":{ports['metrics']}"):
        fail(where, f"--metrics_listen {mlisten!r} is not on the metrics containerPort")
    if listen.startswith("127.") or mlisten.startswith("127."):
        fail(where, "server listens on loopback: unreachable from the Service and kubelet")

    # Probes: native gRPC on the grpc port, overall health.
    for probe in PROBES:
        p = server.get(probe)
        if not p:
            fail(where, f"{probe} missing")
            continue
        other = [k for k in ("httpGet", "tcpSocket", "exec") if k in p]
        if other or "grpc" not in p:
            fail(where, f"{probe} is {other or 'not grpc'}, want a grpc probe")
            continue
        port = p["grpc"].get("port")
        if port not in (ports.get("grpc"), "grpc"):
            fail(where, f"{probe} probes port {port!r}, not the grpc port {ports.get('grpc')}")
        if p["grpc"].get("service", "") != "":
            fail(where, f"{probe} checks service {p['grpc']['service']!r}, want '' (overall health)")

    # Graceful shutdown.
    grace = pod.get("terminationGracePeriodSeconds")
    drain = duration_seconds(flags.get("FREEZETUNE_DRAIN_GRACE_PERIOD"))
    if drain is None:
        fail(where, f"cannot parse drain grace period {flags.get('FREEZETUNE_DRAIN_GRACE_PERIOD')!r}")
    elif grace is None or grace < drain + 2:
        # The server exits at most 1 s after --drain_grace_period (its
        # backstop, server/main.cc); 1 s more for the process to end.
        fail(where, f"terminationGracePeriodSeconds {grace} must be at least the drain period "
                    f"{drain}s + 2s (the server exits at most 1 s after it)")

    # Resources.
    res = server.get("resources") or {}
    for kind in ("requests", "limits"):
        for r in ("cpu", "memory"):
            if r not in (res.get(kind) or {}):
                fail(where, f"resources.{kind}.{r} missing")

    # Security.
    psc, csc = pod.get("securityContext") or {}, server.get("securityContext") or {}
    if not (psc.get("runAsNonRoot") or csc.get("runAsNonRoot")):
        fail(where, "runAsNonRoot is not set")
    uid = csc.get("runAsUser", psc.get("runAsUser"))
    if uid is None or uid == 0:
        fail(where, f"runAsUser is {uid!r}, want a non-zero uid")
    if csc.get("readOnlyRootFilesystem") is not True:
        fail(where, "readOnlyRootFilesystem is not true")
    if csc.get("allowPrivilegeEscalation") is not False:
        fail(where, "allowPrivilegeEscalation is not false")
    if "ALL" not in ((csc.get("capabilities") or {}).get("drop") or []):
        fail(where, "capabilities do not drop ALL")
    if pod.get("automountServiceAccountToken") is not False and sa.get("automountServiceAccountToken") is not False:
        fail(where, "the service account token is mounted")
    if sa.get("automountServiceAccountToken") is not False:
        fail(f"{tree} ServiceAccount", "automountServiceAccountToken is not false")
    if pod.get("serviceAccountName") != sa["metadata"]["name"]:
        fail(where, f"serviceAccountName {pod.get('serviceAccountName')!r} is not the ServiceAccount")

    # Volumes: PVC at the data dir, the Secret read-only, an emptyDir /tmp.
    vols = {v["name"]: v for v in pod.get("volumes") or []}
    mounts = {m["mountPath"]: m for m in server.get("volumeMounts") or []}

    def mounted(path):
        m = mounts.get(path)
        return (m, vols.get(m["name"])) if m else (None, None)

    m, v = mounted(flags.get("FREEZETUNE_DATA_DIR"))
    if ha:
        if not v or "emptyDir" not in v or "persistentVolumeClaim" in v:
            fail(where, "--data_dir is not an emptyDir (scratch) in the ha overlay")
    elif not v or (v.get("persistentVolumeClaim") or {}).get("claimName") != pvc["metadata"]["name"]:
        fail(where, f"the PVC {pvc['metadata']['name']} is not mounted at --data_dir "
                    f"{flags.get('FREEZETUNE_DATA_DIR')!r}")
    elif m.get("readOnly"):
        fail(where, "the data volume is mounted read-only")
    secret_mounts = [(p, mm) for p, mm in mounts.items()
                     if (vols.get(mm["name"], {}).get("secret") or {}).get("secretName") == secret["metadata"]["name"]]
    if not secret_mounts:
        fail(where, f"the Secret {secret['metadata']['name']} is not mounted")
    for path, mm in secret_mounts:
        if not mm.get("readOnly"):
            fail(where, f"the Secret is mounted read-write at {path}")
    secret_keys = set((secret.get("data") or {})) | set((secret.get("stringData") or {}))
    for key in ("FREEZETUNE_AUTH_TOKEN_FILE", "FREEZETUNE_TLS_CERT", "FREEZETUNE_TLS_KEY",
                "FREEZETUNE_TLS_CLIENT_CA"):
        path = flags.get(key, "")
        if not path:
            continue
        if not any(path.startswith(p.rstrip("/") + "/") and path[len(p.rstrip("/")) + 1:] in secret_keys
                   for p, _ in secret_mounts):
            fail(where, f"{key}={path!r} is not a key of the mounted Secret")
    m, v = mounted("/tmp")
    if not v or "emptyDir" not in v:
        fail(where, "no emptyDir mounted at /tmp")

    # Service: named ports that reach the container's named ports.
    where_s = f"{tree} Service"
    sports = {p.get("name"): p for p in svc["spec"].get("ports") or []}
    for name in ("grpc", "metrics"):
        p = sports.get(name)
        if not p:
            fail(where_s, f"no port named {name}")
        elif p.get("targetPort") not in (name, ports.get(name)):
            fail(where_s, f"port {name} targets {p.get('targetPort')!r}, not the container port {name}")
    if not svc["spec"].get("selector") or not selector_matches(svc["spec"]["selector"], tmpl_labels):
        fail(where_s, "selector does not match the pods")

    # NetworkPolicy.
    where_n = f"{tree} NetworkPolicy"
    ns = netpol["spec"]
    if not selector_matches(ns["podSelector"].get("matchLabels"), tmpl_labels) or not ns["podSelector"].get("matchLabels"):
        fail(where_n, "podSelector does not select the server pods")
    if set(ns.get("policyTypes") or []) != {"Ingress", "Egress"}:
        fail(where_n, f"policyTypes {ns.get('policyTypes')}, want Ingress and Egress")
    ingress_ports = {}
    for rule in ns.get("ingress") or []:
        for p in rule.get("ports") or []:
            ingress_ports.setdefault(p["port"], []).append(rule.get("from") or [])
    for name in ("grpc", "metrics"):
        if name not in ingress_ports and ports.get(name) not in ingress_ports:
            fail(where_n, f"no ingress rule for the {name} port")
    for froms in ingress_ports.get("metrics", []) + ingress_ports.get(ports.get("metrics"), []):
        if not froms or any("namespaceSelector" not in f or not (f["namespaceSelector"].get("matchLabels")) for f in froms):
            fail(where_n, "metrics ingress is not limited to the monitoring namespace")
    for froms in ingress_ports.get("grpc", []) + ingress_ports.get(ports.get("grpc"), []):
        if not froms:
            fail(where_n, "grpc ingress is open to every source")
    egress_ports = set()
    for rule in ns.get("egress") or []:
        if not rule.get("ports"):
            fail(where_n, "an egress rule allows every port")
        for p in rule.get("ports") or []:
            egress_ports.add((p["port"], p.get("protocol", "TCP")))
    # The egress must be exactly what the flags let the server reach: DNS,
    # 443 when http(s) URIs are allowed, 80 when plain http:// is too, and
    # PostgreSQL (5432) for the ha overlay's shared job store.
    def flag_true(key, default):
        return str(flags.get(key, default)).strip().lower() in ("true", "1", "yes")
    allow_http = flag_true("FREEZETUNE_ALLOW_HTTP", "true")
    allow_plain = allow_http and flag_true("FREEZETUNE_ALLOW_PLAIN_HTTP", "true")
    want = {(53, "UDP"), (53, "TCP")}
    if allow_http:
        want.add((443, "TCP"))
    if allow_plain:
        want.add((80, "TCP"))
    if ha:
        want.add((5432, "TCP"))
    if egress_ports != want:
        fail(where_n, f"egress ports {sorted(egress_ports)} disagree with --allow_http="
                      f"{str(allow_http).lower()} --allow_plain_http={str(allow_plain).lower()}"
                      + (" and the shared PostgreSQL" if ha else "") + f": want {sorted(want)}")

    if ha:
        check_ha(tree, dep, server, env, flags, flag_names, by_kind, tmpl_labels)

    # GPU or not.
    limits = res.get("limits") or {}
    gpu = tree.endswith("gpu")
    if gpu:
        if int(str(limits.get("nvidia.com/gpu", "0"))) < 1:
            fail(where, "GPU overlay does not limit nvidia.com/gpu")
        if not any(t.get("key") == "nvidia.com/gpu" for t in pod.get("tolerations") or []):
            fail(where, "GPU overlay has no nvidia.com/gpu toleration")
        if not pod.get("nodeSelector"):
            fail(where, "GPU overlay has no nodeSelector")
        if "cuda" not in server.get("image", ""):
            fail(where, f"GPU overlay image {server.get('image')!r} is not the CUDA image")
    elif "nvidia.com/gpu" in limits or "nvidia.com/gpu" in (res.get("requests") or {}):
        fail(where, "a CPU tree asks for nvidia.com/gpu")

    # Monitoring (overlays include the component).
    if overlay:
        smon, rule = one("ServiceMonitor"), one("PrometheusRule")
        if smon:
            if smon["apiVersion"] != "monitoring.coreos.com/v1":
                fail(tree, f"ServiceMonitor apiVersion {smon['apiVersion']}")
            if not selector_matches(smon["spec"]["selector"].get("matchLabels"), svc["metadata"]["labels"]):
                fail(tree, "ServiceMonitor does not select the Service")
            for ep in smon["spec"].get("endpoints") or []:
                if ep.get("port") != "metrics":
                    fail(tree, f"ServiceMonitor scrapes port {ep.get('port')!r}, not 'metrics'")
        if rule:
            with open(RULES) as f:
                want = yaml.safe_load(f)["groups"]
            if rule["spec"].get("groups") != want:
                fail(tree, "PrometheusRule differs from deploy/prometheus/freezetune.rules.yml; "
                           "run /usr/bin/python3 tests/deploy/sync_prometheusrule.py")


def check_ha(tree, dep, server, env, flags, flag_names, by_kind, tmpl_labels):
    """Several replicas on one shared job store and object storage."""
    where = f"{tree} Deployment"
    spec = dep["spec"]
    if (spec.get("replicas") or 1) < 3:
        fail(where, f"replicas {spec.get('replicas')}, want at least 3")
    strategy = spec.get("strategy") or {}
    if strategy.get("type") != "RollingUpdate":
        fail(where, f"strategy {strategy.get('type')!r}, want RollingUpdate")
    elif str((strategy.get("rollingUpdate") or {}).get("maxUnavailable", "25%")) not in ("0", "0%"):
        fail(where, "rollingUpdate.maxUnavailable is not 0: a rollout would drop below the replicas")
    for f in ("--job_store", "--checkpoint_uri"):
        if f not in flag_names:
            fail(where, f"flag {f} is not passed")
    if not flags.get("FREEZETUNE_CHECKPOINT_URI", "").startswith("s3://"):
        fail(where, "FREEZETUNE_CHECKPOINT_URI is not an s3:// URI: replicas could not resume each other's jobs")
    secrets = {d["metadata"]["name"]: d for d in by_kind.get("Secret", [])}
    for var in ("FREEZETUNE_JOB_STORE", "PGPASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        ref = ((env.get(var) or {}).get("valueFrom") or {}).get("secretKeyRef")
        if not ref:
            fail(where, f"{var} does not come from a Secret (secretKeyRef)")
            continue
        s = secrets.get(ref.get("name"))
        keys = set(((s or {}).get("data") or {})) | set(((s or {}).get("stringData") or {}))
        if ref.get("key") not in keys:
            fail(where, f"{var} refers to {ref.get('name')}/{ref.get('key')}, which the rendered Secrets lack")
        if var in flags:
            fail(where, f"{var} is also in the ConfigMap: credentials belong in the Secret")
    pdbs = by_kind.get("PodDisruptionBudget", [])
    if len(pdbs) != 1:
        fail(tree, f"want exactly one PodDisruptionBudget, got {len(pdbs)}")
    else:
        pdb = pdbs[0]["spec"]
        if not selector_matches((pdb.get("selector") or {}).get("matchLabels"), tmpl_labels) \
                or not (pdb.get("selector") or {}).get("matchLabels"):
            fail(tree, "PodDisruptionBudget does not select the server pods")
        if "maxUnavailable" not in pdb and "minAvailable" not in pdb:
            fail(tree, "PodDisruptionBudget sets neither maxUnavailable nor minAvailable")
    hpas = by_kind.get("HorizontalPodAutoscaler", [])
    if len(hpas) != 1:
        fail(tree, f"want exactly one HorizontalPodAutoscaler, got {len(hpas)}")
    else:
        hpa = hpas[0]
        if hpa["apiVersion"] != "autoscaling/v2":
            fail(tree, f"HorizontalPodAutoscaler apiVersion {hpa['apiVersion']}, want autoscaling/v2")
        target = hpa["spec"].get("scaleTargetRef") or {}
        if target.get("kind") != "Deployment" or target.get("name") != dep["metadata"]["name"]:
            fail(tree, f"HorizontalPodAutoscaler scales {target}, not the Deployment")
        if (hpa["spec"].get("minReplicas") or 1) < (spec.get("replicas") or 1):
            fail(tree, "HorizontalPodAutoscaler minReplicas is below the Deployment's replicas")
        external = [m["external"]["metric"]["name"] for m in hpa["spec"].get("metrics") or []
                    if m.get("type") == "External"]
        if external != ["freezetune_queue_depth"]:
            fail(tree, f"HorizontalPodAutoscaler external metrics {external}, want [freezetune_queue_depth]")
        metrics_src = os.path.join(ROOT, "server", "metrics", "metrics.cc")
        with open(metrics_src) as f:
            if '"freezetune_queue_depth"' not in f.read():
                fail(tree, "the HPA's metric freezetune_queue_depth is not exported by server/metrics")


def main():
    trees = [("base", False)]
    for name in sorted(os.listdir(os.path.join(K8S, "overlays"))):
        trees.append((f"overlays/{name}", True))
    if {"overlays/cpu", "overlays/gpu"} - {t for t, _ in trees}:
        fail("deploy/k8s", "overlays cpu and gpu must exist")
    for tree, overlay in trees:
        docs = render(os.path.join(K8S, tree))
        if docs:
            check_tree(tree, docs, overlay=overlay)
            print(f"rendered {tree}: {len(docs)} objects")
    if problems:
        print(f"\n{len(problems)} problem(s):", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    print("all kustomize trees render and pass the checks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
