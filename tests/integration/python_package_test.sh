#!/bin/sh
# The Python SDK as users install it: builds the wheel from a copy of the
# source tree with the documented offline command, installs it into a fresh
# venv made from Debian's python3 (--system-site-packages: python3-grpcio,
# python3-protobuf, python3-setuptools, python3-wheel), checks that the
# installed package (not the source tree) is what imports, with its generated
# stubs, .pyi files, py.typed and the CMake project version, then runs the
# end-to-end test (python_client_e2e.py) against the real server with it.
#
# usage: python_package_test.sh PYTHON SERVER_BIN MODEL_BIN SOURCE_DIR WORK_DIR VERSION
set -eu
PY=$1 SERVER=$2 MODEL=$3 SRC=$4 WORK=$5 VERSION=$6
rm -rf "$WORK"
mkdir -p "$WORK/src/client"
cp "$SRC/CMakeLists.txt" "$WORK/src/"
cp -r "$SRC/proto" "$WORK/src/proto"
cp -r "$SRC/client/python" "$WORK/src/client/python"
rm -rf "$WORK/src/client/python/build" "$WORK/src/client/python/"*.egg-info

"$PY" -m venv --system-site-packages "$WORK/venv"
(cd "$WORK/src" && "$WORK/venv/bin/pip" install --no-index --no-build-isolation \
   --disable-pip-version-check -q ./client/python)

cd "$WORK"
"$WORK/venv/bin/python" - "$WORK/venv" "$VERSION" <<'PYEOF'
import os, sys
venv, version = sys.argv[1], sys.argv[2]
import freezetune
from freezetune.v1 import freezetune_pb2, freezetune_pb2_grpc
pkg = os.path.dirname(freezetune.__file__)
assert pkg.startswith(venv), "freezetune imported from %s, not the venv" % pkg
assert freezetune.__version__ == version, (freezetune.__version__, version)
for f in ("py.typed", "v1/freezetune_pb2.pyi", "v1/freezetune_pb2_grpc.py"):
    assert os.path.exists(os.path.join(pkg, f)), f
print("installed freezetune", freezetune.__version__, "at", pkg)
PYEOF
exec "$WORK/venv/bin/python" "$SRC/tests/integration/python_client_e2e.py" "$SERVER" "$MODEL" "$SRC"
