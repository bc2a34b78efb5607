#!/usr/bin/python3
"""Static checks of docker/*.Dockerfile and .dockerignore (no Docker engine here).

    /usr/bin/python3 tests/deploy/dockerfile_test.py [REPO_ROOT]

For each Dockerfile:
  - multi-stage, the last stage named "runtime", no :latest or untagged base;
  - Debian packages only through scripts/setup.sh reading
    scripts/debian-packages.txt: no apt-get/apt/dpkg -i/pip in any RUN, and
    every stage that runs setup.sh has COPY'd both files first;
  - the build is setup.sh itself (no cmake configure/build of its own), and
    every FREEZETUNE_SKIP_PACKAGES name is on the list (a typo would skip
    nothing);
  - the runtime stage exposes the gRPC and metrics ports that the Kubernetes
    Deployment uses, listens on them on 0.0.0.0, runs as a numeric non-root
    user equal to the Deployment's runAsUser, and has a HEALTHCHECK whose
    script is copied into the image;
  - cuda.Dockerfile: an nvidia/cuda base, build args LIBTORCH_URL,
    LIBTORCH_VERSION and CUDA_VERSION, -DTorch_DIR, libtorch-dev and
    python3-torch left out.
And .dockerignore keeps local builds and .git out and the sources in."""
import fnmatch
import os
import re
import shlex
import sys

import yaml

ROOT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                       os.path.join(os.path.dirname(__file__), "..", ".."))
problems = []


def fail(where, msg):
    problems.append(f"{where}: {msg}")


def instructions(path):
    """[(INSTRUCTION, text)] with continuations joined and comments dropped."""
    out, buf = [], ""
    with open(path) as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not buf and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if buf and line.lstrip().startswith("#"):
                continue
            if line.endswith("\\"):
                buf += line[:-1] + " "
                continue
            buf += line
            word, _, rest = buf.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            buf = ""
    return out


def package_list():
    names = set()
    with open(os.path.join(ROOT, "scripts", "debian-packages.txt")) as f:
        for line in f:
            line = line.split("#", 1)[0].split()
            if line:
                names.add(line[0])
    return names


def k8s_deployment():
    path = os.path.join(ROOT, "deploy", "k8s", "base", "deployment.yaml")
    with open(path) as f:
        dep = yaml.safe_load(f)
    pod = dep["spec"]["template"]["spec"]
    server = next(c for c in pod["containers"] if c["name"] == "server")
    ports = {p["name"]: p["containerPort"] for p in server["ports"]}
    return ports, pod.get("securityContext", {}).get("runAsUser")


def expand(text, args):
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), text)


def check_dockerfile(path, packages, k8s_ports, k8s_uid):
    name = os.path.relpath(path, ROOT)
    ins = instructions(path)
    global_args, stages = {}, []
    for word, rest in ins:
        if word == "ARG" and not stages:
            k, _, v = rest.partition("=")
            global_args[k] = v.strip('"')
        elif word == "FROM":
            parts = rest.split()
            image = expand(parts[0], global_args)
            alias = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append({"image": image, "alias": alias, "ins": [], "args": dict(global_args)})
        elif stages:
            stages[-1]["ins"].append((word, rest))
            if word == "ARG":
                k, _, v = rest.partition("=")
                stages[-1]["args"][k] = v.strip('"')
    if len(stages) < 2:
        fail(name, "not multi-stage")
        return
    if stages[-1]["alias"] != "runtime":
        fail(name, f"last stage is {stages[-1]['alias']!r}, want 'runtime'")
    aliases = {s["alias"] for s in stages}
    for s in stages:
        img = s["image"]
        if img in aliases:
            continue
        last = img.split("@")[0].rsplit("/", 1)[-1]
        if "$" in img:
            fail(name, f"base image {img!r} has an unresolved variable")
        elif "@sha256:" not in img and (":" not in last or last.endswith(":latest")):
            fail(name, f"base image {img!r} is untagged or :latest")

    builds = 0
    for s in stages:
        where = f"{name} stage {s['alias']}"
        copied = set()
        setup_runs = 0
        for word, rest in s["ins"]:
            if word in ("COPY", "ADD"):
                toks = [t for t in shlex.split(rest) if not t.startswith("--")]
                if "--from" in rest:
                    continue
                srcs = toks[:-1]
                if "." in srcs:
                    copied |= {"scripts/setup.sh", "scripts/debian-packages.txt", "docker/grpc_health_check.py"}
                copied |= set(srcs)
            if word != "RUN":
                continue
            cmd = expand(rest, s["args"])
            if re.search(r"\b(apt-get|apt|aptitude)\s+(-\S+\s+)*install\b|\bdpkg\s+-i\b|\bpip3?\s+install\b", cmd):
                fail(where, f"installs packages inline: {rest[:100]}")
            if re.search(r"\bcmake\s+(-S|-B|\.\s|--build)", cmd) or re.search(r"\b(make|ninja)\s+-j", cmd):
                fail(where, f"configures or builds outside scripts/setup.sh: {rest[:100]}")
            if "setup.sh" in cmd:
                setup_runs += 1
                for f_ in ("scripts/setup.sh", "scripts/debian-packages.txt"):
                    if f_ not in copied:
                        fail(where, f"runs setup.sh before copying {f_}")
                if "--no-build" not in cmd:
                    builds += 1
                    if s is stages[-1]:
                        fail(where, "the runtime stage builds")
                for skip in re.findall(r'FREEZETUNE_SKIP_PACKAGES="([^"]*)"', cmd):
                    for pkg in skip.split():
                        if pkg not in packages:
                            fail(where, f"FREEZETUNE_SKIP_PACKAGES names {pkg!r}, which is not in "
                                        "scripts/debian-packages.txt")
        if setup_runs == 0:
            fail(where, "does not install its packages with scripts/setup.sh")
    if builds != 1:
        fail(name, f"{builds} stages build with scripts/setup.sh, want exactly 1")

    runtime = stages[-1]
    rins = runtime["ins"]
    exposed = set()
    for word, rest in rins:
        if word == "EXPOSE":
            exposed |= {int(p.split("/")[0]) for p in rest.split()}
    for port_name, port in k8s_ports.items():
        if port not in exposed:
            fail(name, f"does not EXPOSE the {port_name} port {port} (deploy/k8s)")
    users = [rest for word, rest in rins if word == "USER"]
    if not users:
        fail(name, "runtime stage has no USER (runs as root)")
    else:
        user = users[-1].split(":")[0]
        if user in ("0", "root"):
            fail(name, "runtime stage runs as root")
        elif not user.isdigit():
            fail(name, f"USER {user!r} is not numeric (Kubernetes runAsNonRoot cannot verify it)")
        elif k8s_uid is not None and int(user) != k8s_uid:
            fail(name, f"USER {user} differs from the Deployment's runAsUser {k8s_uid}")
    hcs = [rest for word, rest in rins if word == "HEALTHCHECK"]
    if not hcs or hcs[-1].strip().upper() == "NONE" or "CMD" not in hcs[-1]:
        fail(name, "runtime stage has no HEALTHCHECK")
    elif "grpc_health_check.py" in hcs[-1]:
        build_copies = " ".join(rest for s in stages[:-1] for word, rest in s["ins"] if word == "RUN")
        if "grpc_health_check.py" not in build_copies:
            fail(name, "HEALTHCHECK script is not installed into /opt/freezetune/bin")
        elif not os.path.exists(os.path.join(ROOT, "docker", "grpc_health_check.py")):
            fail(name, "docker/grpc_health_check.py is missing")
        m = re.search(r"127\.0\.0\.1:(\d+)", hcs[-1])
        if not m or int(m.group(1)) != k8s_ports.get("grpc"):
            fail(name, "HEALTHCHECK does not check the grpc port")
    cmdline = " ".join(rest for word, rest in rins if word in ("ENTRYPOINT", "CMD"))
    if "freezetune-server" not in cmdline:
        fail(name, "the entrypoint is not freezetune-server")
    for flag, port_name in (("--listen", "grpc"), ("--metrics_listen", "metrics")):
        if f"{flag}=0.0.0.0:{k8s_ports.get(port_name)}" not in cmdline:
            fail(name, f"{flag} is not 0.0.0.0:{k8s_ports.get(port_name)}")
    return stages


def check_cuda(stages):
    name = "docker/cuda.Dockerfile"
    text = open(os.path.join(ROOT, name)).read()
    if not all(s["image"].startswith("nvidia/cuda:") for s in stages):
        fail(name, f"stages are not on an NVIDIA CUDA base: {[s['image'] for s in stages]}")
    if "-runtime-" not in stages[-1]["image"]:
        fail(name, f"the runtime stage is not a CUDA runtime image: {stages[-1]['image']}")
    for arg in ("LIBTORCH_URL", "LIBTORCH_VERSION", "CUDA_VERSION"):
        if not re.search(rf"^ARG {arg}=", text, re.M):
            fail(name, f"no build arg {arg}")
    if "-DTorch_DIR=" not in text:
        fail(name, "cmake is not given -DTorch_DIR")
    for s in stages:
        skips = " ".join(re.findall(r'SKIP_PACKAGES="([^"]*)"', " ".join(
            f"{k}=\"{v}\"" for k, v in s["args"].items())))
        for pkg in ("libtorch-dev", "python3-torch"):
            if pkg not in skips.split():
                fail(f"{name} stage {s['alias']}", f"does not leave out {pkg}")


def check_dockerignore():
    path = os.path.join(ROOT, ".dockerignore")
    if not os.path.exists(path):
        fail(".dockerignore", "missing")
        return
    pats = [l.strip() for l in open(path) if l.strip() and not l.startswith("#")]

    def ignored(p):
        res = False
        for pat in pats:
            neg = pat.startswith("!")
            pat = pat.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(p, pat) or fnmatch.fnmatch(p.split("/")[0], pat) or \
                    (pat.startswith("**/") and fnmatch.fnmatch(os.path.basename(p), pat[3:])):
                res = not neg
        return res

    for p in (".git", "build", "build-svc", "var"):
        if not ignored(p):
            fail(".dockerignore", f"does not ignore {p}")
    for p in ("CMakeLists.txt", "cmake/FreezetuneTargets.cmake", "scripts/setup.sh",
              "scripts/debian-packages.txt", "server/CMakeLists.txt", "client/CMakeLists.txt",
              "proto/freezetune/v1/freezetune.proto", "docker/grpc_health_check.py"):
        if ignored(p):
            fail(".dockerignore", f"ignores {p}, which the build needs")


def main():
    packages = package_list()
    k8s_ports, k8s_uid = k8s_deployment()
    files = sorted(f for f in os.listdir(os.path.join(ROOT, "docker")) if f.endswith(".Dockerfile"))
    for want in ("cpu.Dockerfile", "cuda.Dockerfile"):
        if want not in files:
            fail("docker", f"{want} is missing")
    for f in files:
        stages = check_dockerfile(os.path.join(ROOT, "docker", f), packages, k8s_ports, k8s_uid)
        if f == "cuda.Dockerfile" and stages:
            check_cuda(stages)
        print(f"checked docker/{f}")
    check_dockerignore()
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    print("Dockerfiles and .dockerignore pass")
    return 0


if __name__ == "__main__":
    sys.exit(main())
