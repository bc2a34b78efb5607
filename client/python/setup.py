"""Build hooks for the freezetune wheel (metadata is in pyproject.toml).

- version: the CMake project version (../../CMakeLists.txt), so the SDK, the
  CLI and the server report the same one;
- build_py: also generates freezetune/v1 (the gRPC stubs and .pyi type
  stubs) from ../../proto into the build directory (build_stubs.py).
"""
import os
import re
import sys

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import build_stubs  # noqa: E402


def cmake_version():
    path = os.path.join(HERE, "..", "..", "CMakeLists.txt")
    with open(path) as f:
        m = re.search(r"project\(\s*freezetune\s+VERSION\s+([0-9.]+)", f.read())
    if not m:
        raise RuntimeError("freezetune: no project(freezetune VERSION x.y.z) in " + path)
    return m.group(1)


class BuildPyWithStubs(build_py):
    def run(self):
        super().run()
        if not self.dry_run:
            build_stubs.generate(self.build_lib)


setup(version=cmake_version(), cmdclass={"build_py": BuildPyWithStubs})
