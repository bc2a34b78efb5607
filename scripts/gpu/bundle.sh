#!/usr/bin/env bash
# Downloads the Debian 12 packages that a bare CUDA machine (a C++ toolchain,
# CMake, nvcc and PyTorch's LibTorch, but no gRPC, Protobuf, Abseil,
# prometheus-cpp, RE2, utf8proc, SQLite, curl or pkg-config, and no network)
# needs to build freezetune, so that they can be carried there and unpacked by
# scripts/gpu/check.sh. Run it on a Debian 12 machine with apt (this one).
#
#   scripts/gpu/bundle.sh [DIR]        DIR defaults to .gpu-bundle (git-ignored)
#
# What it writes:
#   DIR/debs/*.deb      the packages of scripts/gpu/bundle-packages.txt and
#                       their Depends, minus scripts/gpu/bundle-exclude.txt
#   DIR/manifest.tsv    package, version, architecture, bytes, sha256 per .deb
#                       (check.sh verifies every file against it)
# Files already in DIR/debs with the right checksum are kept, stale ones are
# deleted, so a second run downloads nothing. Exit status 0 only when every
# package is there and verified.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-.gpu-bundle}
lists=scripts/gpu

read_list() { sed -e 's/#.*//' "$1" | awk 'NF'; }

recurse=()
single=()
while read -r pkg flag extra; do
  if [ -n "${extra:-}" ]; then echo "bundle.sh: bad line in bundle-packages.txt: $pkg $flag $extra" >&2; exit 2; fi
  case "${flag:-}" in
    "") recurse+=("$pkg") ;;
    nodeps) single+=("$pkg") ;;
    *) echo "bundle.sh: unknown flag '$flag' for $pkg in bundle-packages.txt" >&2; exit 2 ;;
  esac
done < <(read_list "$lists/bundle-packages.txt")
mapfile -t exclude < <(read_list "$lists/bundle-exclude.txt" | awk '{print $1}')

# A fresh machine has no package lists yet.
if ! apt-cache show "${recurse[0]}" >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "bundle.sh: apt has no package lists; run 'apt-get update' as root first" >&2
    exit 1
  fi
  apt-get update -qq
fi

# The closure over Depends and Pre-Depends (real packages only: virtual ones
# print as <name>), then the nodeps packages, minus the exclusions.
mapfile -t packages < <(
  {
    apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
      --no-replaces --no-enhances "${recurse[@]}" | grep -v -e '^ ' -e '^<'
    printf '%s\n' "${single[@]}"
  } | sort -u | grep -vxF -f <(printf '%s\n' "${exclude[@]}")
)
for pkg in "${exclude[@]}"; do
  if printf '%s\n' "${recurse[@]}" "${single[@]}" | grep -qxF "$pkg"; then
    echo "bundle.sh: $pkg is both wanted and excluded" >&2
    exit 2
  fi
done

mkdir -p "$out/debs"
# 'URI' FILENAME SIZE SHA256:HEX, one line per package.
uris=$(apt-get download --print-uris "${packages[@]}")
if [ "$(printf '%s\n' "$uris" | grep -c .)" -ne "${#packages[@]}" ]; then
  echo "bundle.sh: apt-get printed $(printf '%s\n' "$uris" | grep -c .) URIs for ${#packages[@]} packages" >&2
  exit 1
fi

need=()
declare -A want_sha
while read -r _uri file size hash; do
  sha=${hash#SHA256:}
  want_sha[$file]=$sha
  if [ -f "$out/debs/$file" ] && [ "$(sha256sum "$out/debs/$file" | cut -d' ' -f1)" = "$sha" ]; then
    continue
  fi
  need+=("${file%%_*}")
done <<<"$uris"

if [ "${#need[@]}" -gt 0 ]; then
  echo "bundle.sh: downloading ${#need[@]} of ${#packages[@]} packages into $out/debs"
  # apt-get download writes into the current directory. As root it warns that
  # the _apt user cannot write there; that is harmless.
  (cd "$out/debs" && apt-get download -q "${need[@]}" 2>&1 | grep -v "unsandboxed as root" || true)
fi

# Drop files of packages no longer wanted (or of older versions).
for f in "$out"/debs/*.deb; do
  [ -e "$f" ] || continue
  [ -n "${want_sha[$(basename "$f")]:-}" ] || rm -f "$f"
done

tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
printf '# package\tversion\tarchitecture\tbytes\tsha256\n' >"$tmp"
bad=0
total=0
for file in $(printf '%s\n' "${!want_sha[@]}" | sort); do
  path="$out/debs/$file"
  if [ ! -f "$path" ]; then
    echo "bundle.sh: $file was not downloaded" >&2
    bad=1
    continue
  fi
  sha=$(sha256sum "$path" | cut -d' ' -f1)
  if [ "$sha" != "${want_sha[$file]}" ]; then
    echo "bundle.sh: $file: sha256 $sha, apt says ${want_sha[$file]}" >&2
    bad=1
    continue
  fi
  bytes=$(stat -c %s "$path")
  total=$((total + bytes))
  printf '%s\t%s\t%s\t%s\t%s\n' "$(dpkg-deb -f "$path" Package)" "$(dpkg-deb -f "$path" Version)" \
    "$(dpkg-deb -f "$path" Architecture)" "$bytes" "$sha" >>"$tmp"
done
[ "$bad" -eq 0 ] || exit 1
mv "$tmp" "$out/manifest.tsv"
trap - EXIT
echo "bundle.sh: ${#packages[@]} packages, $((total / 1024 / 1024)) MiB in $out/debs (manifest: $out/manifest.tsv)"
