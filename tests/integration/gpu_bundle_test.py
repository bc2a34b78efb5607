#!/usr/bin/env python3
"""Tests scripts/gpu/bundle.sh and the first stages of scripts/gpu/check.sh
as far as this (CPU-only) machine allows: everything but the GPU itself.

    gpu_bundle_test.py SOURCE_DIR WORK_DIR [--targets "freezetune ..."]

1. bundle.sh downloads the Debian packages into WORK_DIR/bundle (a second
   run reuses them) and writes the manifest.
2. check.sh --stages unpack,configure,build runs inside a private mount
   namespace (unshare -m) in which this machine's own copies of the bundled
   packages' build files are hidden: their headers, CMake and pkg-config
   files, unversioned .so links, static libraries and programs (protoc,
   grpc_cpp_plugin, pkg-config). The versioned shared libraries stay (cmake
   itself needs libcurl and OpenSSL), as they would on a machine whose
   system has some of them. So the configure and build can only succeed
   through the unpacked prefix, as on the bare GPU machine; LibTorch is
   Debian's CPU one (/usr/lib/x86_64-linux-gnu/cmake/Torch).
3. Checks: every stage ok in summary.json; CMake found gRPC, Abseil,
   Protobuf, pkg-config and sleef.h in the prefix (and at::vec's AVX-512
   headers compiled with it); the built CLI loads libgrpc++,
   libprotobuf and Abseil from the prefix (DT_RPATH) with nothing missing,
   and runs.
Needs root (mount namespaces), apt and network access to the Debian archive
(as CI has: it installs packages the same way).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

LIBDIR = "/usr/lib/x86_64-linux-gnu"
# Directories whose bundled build files are hidden, and what counts as one.
# Programs in /usr/bin are covered one by one instead (cmake finds its own
# files through its real path, so /usr/bin cannot become a tree of links).
SHADOWED = ["/usr/include", LIBDIR, "/usr/share/pkgconfig", "/usr/share/cmake"]


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def is_build_file(path):
    if path.startswith("/usr/include/") or path.startswith("/usr/bin/"):
        return True
    if "/cmake/" in path or path.endswith(".pc") or path.endswith(".a"):
        return True
    return path.startswith(LIBDIR + "/") and path.endswith(".so")


def bundled_build_files(manifest):
    packages = [line.split("\t")[0] for line in open(manifest) if line.strip() and not line.startswith("#")]
    hidden = set()
    for pkg in packages:
        listed = subprocess.run(["dpkg", "-L", pkg], capture_output=True, text=True)
        if listed.returncode != 0:
            continue  # not installed here
        for path in listed.stdout.splitlines():
            # /lib/... and /usr/lib/... are the same files (merged /usr).
            if path.startswith("/lib/"):
                path = "/usr" + path
            if is_build_file(path) and (os.path.isfile(path) or os.path.islink(path)):
                hidden.add(os.path.normpath(path))
    return hidden


def build_shadow(orig, shadow, hidden_under):
    """Mirrors directory `orig` into `shadow` with symlinks, leaving out the
    paths in hidden_under (absolute paths below the real directory)."""
    os.makedirs(shadow, exist_ok=True)
    real = orig["real"]
    for name in os.listdir(orig["view"]):
        real_path = os.path.join(real, name)
        view_path = os.path.join(orig["view"], name)
        if real_path in hidden_under["files"]:
            continue
        if real_path in hidden_under["dirs"] and os.path.isdir(view_path) and not os.path.islink(view_path):
            build_shadow({"real": real_path, "view": view_path}, os.path.join(shadow, name), hidden_under)
        else:
            os.symlink(view_path, os.path.join(shadow, name))


def inner(args):
    """Runs inside the mount namespace: hide, then run check.sh."""
    hidden = set(json.load(open(args.hidden)))
    ns = os.path.join(args.work, "ns")
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", ns], check=True)
    for i, top in enumerate(SHADOWED):
        if not os.path.isdir(top):
            continue
        under = [h for h in hidden if h.startswith(top + "/")]
        if not under:
            continue
        dirs = set()
        for h in under:
            d = os.path.dirname(h)
            while d.startswith(top):
                dirs.add(d)
                d = os.path.dirname(d)
        view = os.path.join(ns, f"orig{i}")
        os.makedirs(view)
        subprocess.run(["mount", "--bind", top, view], check=True)
        shadow = os.path.join(ns, f"shadow{i}")
        build_shadow({"real": top, "view": view}, shadow, {"files": set(under), "dirs": dirs})
        subprocess.run(["mount", "--bind", shadow, top], check=True)
    blank = os.path.join(ns, "not-executable")
    open(blank, "w").close()
    os.chmod(blank, 0o644)
    for program in sorted(h for h in hidden if h.startswith("/usr/bin/")):
        if os.path.isfile(program):
            subprocess.run(["mount", "--bind", blank, program], check=True)
    for probe in ["/usr/include/grpcpp/grpcpp.h", "/usr/include/google/protobuf/message.h",
                  LIBDIR + "/cmake/grpc/gRPCConfig.cmake", "/usr/bin/protoc", "/usr/include/absl/base/config.h"]:
        if os.path.exists(probe) and (not probe.startswith("/usr/bin/") or os.access(probe, os.X_OK)):
            fail(f"{probe} is still visible in the namespace")
    env = dict(os.environ, PYTHON="/usr/bin/python3")
    cmd = [os.path.join(args.source, "scripts/gpu/check.sh"), args.results,
           "--bundle", os.path.join(args.work, "bundle"), "--work", os.path.join(args.work, "check"),
           "--torch-dir", LIBDIR + "/cmake/Torch", "--stages", "unpack,configure,build",
           "--targets", args.targets, "--jobs", "2"]
    return subprocess.run(cmd, env=env).returncode


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("source")
    ap.add_argument("work")
    ap.add_argument("--targets", default="freezetune")
    ap.add_argument("--inner", action="store_true")
    ap.add_argument("--hidden")
    ap.add_argument("--results")
    args = ap.parse_args()
    args.source = os.path.abspath(args.source)
    args.work = os.path.abspath(args.work)
    if args.inner:
        sys.exit(inner(args))
    if os.geteuid() != 0:
        fail("needs root (mount namespaces)")

    os.makedirs(args.work, exist_ok=True)
    bundle = os.path.join(args.work, "bundle")
    subprocess.run([os.path.join(args.source, "scripts/gpu/bundle.sh"), bundle], check=True)
    manifest = os.path.join(bundle, "manifest.tsv")
    rows = [l for l in open(manifest) if l.strip() and not l.startswith("#")]
    names = {r.split("\t")[0] for r in rows}
    for must in ["libgrpc++-dev", "protobuf-compiler-grpc", "libabsl-dev", "prometheus-cpp-dev", "libre2-dev",
                 "libutf8proc-dev", "libsqlite3-dev", "nlohmann-json3-dev", "libc-ares2", "libcivetweb1",
                 "pkgconf", "libgloo-dev", "libsleef-dev"]:
        if must not in names:
            fail(f"the bundle lacks {must}")
    for never in ["libc6", "libstdc++6", "libgcc-s1"]:
        if never in names:
            fail(f"the bundle carries {never}, which must come from the machine")
    total = sum(int(r.split("\t")[3]) for r in rows)
    print(f"bundle: {len(rows)} packages, {total / 2**20:.1f} MiB")

    hidden = sorted(bundled_build_files(manifest))
    if len(hidden) < 100:
        fail(f"only {len(hidden)} build files to hide: are the packages installed here?")
    hidden_file = os.path.join(args.work, "hidden.json")
    json.dump(hidden, open(hidden_file, "w"))
    results = os.path.join(args.work, "results")
    shutil.rmtree(results, ignore_errors=True)
    os.makedirs(os.path.join(args.work, "ns"), exist_ok=True)
    rc = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, os.path.abspath(__file__),
                         args.source, args.work, "--inner", "--hidden", hidden_file, "--results", results,
                         "--targets", args.targets]).returncode
    summary = json.load(open(os.path.join(results, "summary.json")))
    print(json.dumps(summary, indent=1))
    if rc != 0 or not summary["ok"] or [s["stage"] for s in summary["stages"]] != ["unpack", "configure", "build"]:
        fail(f"check.sh failed (rc {rc})")

    prefix = os.path.join(args.work, "check", "prefix")
    facts = summary["facts"]
    for key in ["cmake_gRPC_DIR", "cmake_absl_DIR", "cmake_Protobuf_INCLUDE_DIR", "cmake_PKG_CONFIG_EXECUTABLE"]:
        if not facts.get(key, "").startswith(prefix):
            fail(f"{key} = {facts.get(key)!r} is not in the prefix")
    if not facts.get("cmake_FREEZETUNE_SLEEF_INCLUDE_DIR", "").startswith(prefix) \
            or facts.get("cmake_FREEZETUNE_ADAMW_VECTORIZED") != "1":
        fail("the vector AdamW kernels were not configured with the prefix's sleef.h: "
             f"{facts.get('cmake_FREEZETUNE_SLEEF_INCLUDE_DIR')!r}, {facts.get('cmake_FREEZETUNE_ADAMW_VECTORIZED')!r}")
    if facts.get("torch_cxx11_abi_cmake") != "1":
        fail(f"Debian's LibTorch ABI read as {facts.get('torch_cxx11_abi_cmake')!r}, expected 1")

    cli = os.path.join(args.work, "check", "build", "client", "src", "freezetune")
    ldd = subprocess.run(["ldd", cli], capture_output=True, text=True, check=True).stdout
    if "not found" in ldd:
        fail(f"unresolved libraries:\n{ldd}")
    for lib in ["libgrpc++.so", "libprotobuf.so", "libabsl_"]:
        lines = [l for l in ldd.splitlines() if lib in l]
        if not lines or any(prefix not in l for l in lines):
            fail(f"{lib} does not load from the prefix:\n" + "\n".join(lines))
    dyn = subprocess.run(["readelf", "-d", cli], capture_output=True, text=True, check=True).stdout
    if "(RPATH)" not in dyn or prefix not in dyn:
        fail(f"the CLI has no DT_RPATH to the prefix:\n{dyn}")
    out = subprocess.run([cli, "--help"], capture_output=True, text=True)
    if out.returncode != 0 or "submit" not in out.stdout + out.stderr:
        fail(f"the CLI built against the prefix does not run: {out.returncode} {out.stderr[:500]}")
    print("OK: bundle, unpack, configure and build against the prefix")


if __name__ == "__main__":
    main()
