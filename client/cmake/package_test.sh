#!/bin/sh
# Installs the client component of a build tree into a scratch prefix, then
# configures, builds and runs client/cmake/consumer against it with
# find_package(freezetune CONFIG): proves the installed package is usable from
# outside the tree. Needs the client targets built (freezetune, freezetune_client).
# usage: package_test.sh BUILD_DIR SOURCE_DIR SCRATCH_DIR
set -eu
build=$1 src=$2 scratch=$3
rm -rf "$scratch"
mkdir -p "$scratch"
cmake --install "$build" --prefix "$scratch/prefix" --component client
launcher=""
if command -v ccache >/dev/null 2>&1; then
  launcher="-DCMAKE_CXX_COMPILER_LAUNCHER=ccache"
fi
cmake -S "$src/client/cmake/consumer" -B "$scratch/build" \
  -DCMAKE_PREFIX_PATH="$scratch/prefix" $launcher
cmake --build "$scratch/build"
"$scratch/build/consumer"
"$scratch/prefix/bin/freezetune" help >/dev/null
echo "package test: ok"
