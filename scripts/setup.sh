#!/usr/bin/env bash
# Installs the Debian packages freezetune needs (scripts/debian-packages.txt),
# makes sure libblas.so.3 is OpenBLAS, then configures and builds.
#   scripts/setup.sh              install (as root) + configure + build everything
#   scripts/setup.sh --no-build   install only
#   scripts/setup.sh TARGET...    install + configure + build only these targets
#                                 (make demo: the server, the model tool, the CLI)
# Not root and something missing: prints the exact apt-get line and exits 1.
# Environment (used by docker/*.Dockerfile):
#   FREEZETUNE_SKIP_PACKAGES="a b"  leave these names of the list out (the CUDA
#                                   image brings its own LibTorch; runtime
#                                   stages leave out compilers and test tools)
#   FREEZETUNE_CMAKE_ARGS="-D..."   extra arguments for the cmake configure step
#                                   (e.g. -DTorch_DIR=/opt/libtorch/share/cmake/Torch)
set -euo pipefail
cd "$(dirname "$0")/.."

# A line is "package" or "package unless-command:NAME": the latter is skipped
# when NAME is already on PATH (e.g. a kubectl from another source, which
# Debian's kubernetes-client would conflict with).
missing=()
while read -r pkg condition; do
  [ -n "$pkg" ] || continue
  case " ${FREEZETUNE_SKIP_PACKAGES:-} " in *" $pkg "*) continue ;; esac
  case "$condition" in
    unless-command:*) command -v "${condition#unless-command:}" >/dev/null && continue ;;
  esac
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done < <(sed -e 's/#.*//' scripts/debian-packages.txt)

if [ "${#missing[@]}" -gt 0 ]; then
  cmd="apt-get install -y --no-install-recommends ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "freezetune: missing Debian packages. Run as root:" >&2
    echo "  apt-get update && $cmd" >&2
    exit 1
  fi
  echo "freezetune: installing ${#missing[@]} Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $cmd
fi

# Debian's libtorch links libblas.so.3; the alternative must point at OpenBLAS.
blas=$(readlink -f /etc/alternatives/libblas.so.3-x86_64-linux-gnu 2>/dev/null || true)
case "$blas" in
  *openblas*) ;;
  *)
    if [ "$(id -u)" -eq 0 ] && [ -e /usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3 ]; then
      update-alternatives --set libblas.so.3-x86_64-linux-gnu /usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3
    else
      echo "freezetune: warning: libblas.so.3 is '$blas', not OpenBLAS; training will be ~10x slower" >&2
    fi ;;
esac

[ "${1:-}" = "--no-build" ] && exit 0

BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}
# shellcheck disable=SC2086  # FREEZETUNE_CMAKE_ARGS is a list of words
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo ${FREEZETUNE_CMAKE_ARGS:-} >/dev/null
# shellcheck disable=SC2046  # one --target per argument
cmake --build "$BUILD_DIR" -j"$JOBS" $(for t in "$@"; do printf -- '--target %s ' "$t"; done)
