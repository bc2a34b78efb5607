#!/usr/bin/env python3
"""Generates the freezetune v1 Python stubs from proto/ (the one way they are made).

    build_stubs.py --out DIR [--proto-root DIR] [--protoc PATH] [--plugin PATH]

writes DIR/freezetune/v1/{__init__.py, freezetune_pb2.py, freezetune_pb2.pyi,
freezetune_pb2_grpc.py}. Used by setup.py when a wheel is built and by the
CMake target freezetune_python_stubs (for running from the source tree).

Which compiler: the first of
  1. --protoc/--plugin (or $FREEZETUNE_PROTOC / $FREEZETUNE_GRPC_PYTHON_PLUGIN);
  2. `protoc` and `grpc_python_plugin` on PATH (Debian: protobuf-compiler,
     protobuf-compiler-grpc). Debian's python3-grpc-tools bundles protoc 3.5,
     which rejects proto3 `optional`, so the system protoc comes first;
  3. the grpc_tools package (pip's grpcio-tools), when it is new enough.
The generated code must match the protobuf runtime that imports it: protoc
3.21 goes with python3-protobuf 3.21 (protobuf 4.21 on PyPI), and a recent
grpcio-tools with the protobuf it depends on.
"""
import argparse
import os
import shutil
import subprocess
import sys

PROTO = "freezetune/v1/freezetune.proto"


def default_proto_root():
    """proto/ of the source tree this file sits in (client/python/..)."""
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.normpath(os.path.join(here, "..", "..", "proto"))


def _compilers(protoc, plugin):
    """Candidate commands (argv prefixes) in order of preference."""
    protoc = protoc or os.environ.get("FREEZETUNE_PROTOC") or shutil.which("protoc")
    plugin = (plugin or os.environ.get("FREEZETUNE_GRPC_PYTHON_PLUGIN")
              or shutil.which("grpc_python_plugin"))
    if protoc and plugin:
        yield [protoc, "--plugin=protoc-gen-grpc=" + plugin], "--grpc_out"
    try:
        import grpc_tools  # noqa: F401
        yield [sys.executable, "-m", "grpc_tools.protoc"], "--grpc_python_out"
    except ImportError:
        pass


def generate(out_dir, proto_root=None, protoc=None, plugin=None):
    proto_root = proto_root or default_proto_root()
    if not os.path.isfile(os.path.join(proto_root, PROTO)):
        raise RuntimeError("freezetune: %s not found under %s (build from the source tree: "
                           "pip install ./client/python)" % (PROTO, proto_root))
    pkg = os.path.join(out_dir, "freezetune", "v1")
    os.makedirs(pkg, exist_ok=True)
    errors = []
    for argv, grpc_flag in _compilers(protoc, plugin):
        cmd = argv + ["--proto_path=" + proto_root, "--python_out=" + out_dir,
                      "--pyi_out=" + out_dir, grpc_flag + "=" + out_dir,
                      os.path.join(proto_root, PROTO)]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode == 0:
            with open(os.path.join(pkg, "__init__.py"), "w") as f:
                f.write('"""Generated from proto/freezetune/v1/freezetune.proto."""\n')
            return pkg
        errors.append("%s: %s" % (" ".join(argv[:3]), run.stderr.strip()))
    raise RuntimeError(
        "freezetune: cannot generate the gRPC stubs. Install protoc >= 3.20 with "
        "grpc_python_plugin (Debian: apt-get install protobuf-compiler protobuf-compiler-grpc) "
        "or pip install 'grpcio-tools>=1.49'.\n" + "\n".join(errors))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--proto-root")
    p.add_argument("--protoc")
    p.add_argument("--plugin")
    a = p.parse_args()
    try:
        generate(a.out, a.proto_root, a.protoc, a.plugin)
    except RuntimeError as e:
        sys.exit(str(e))


if __name__ == "__main__":
    main()
