#!/usr/bin/env bash
# Installs every Debian package pkv's build, tests, benchmarks, bindings and tools use, if missing.
# Idempotent: does nothing (and needs no network) when all are present.
set -euo pipefail
pkgs=(
  meson ninja-build pkg-config g++ clang libclang-rt-14-dev python3
  libboost-dev libboost-atomic-dev
  libgtest-dev libgmock-dev libbenchmark-dev librapidcheck-dev
  gnuplot-nox valgrind
  libcli11-dev libxxhash-dev libssl-dev libhiredis-dev redis-server nlohmann-json3-dev
  pybind11-dev python3-pybind11 python3-dev python3-pytest python3-numpy
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# The Rust bindings build with `cargo --offline` (std only): a machine without a Rust toolchain on
# PATH gets Debian's cargo and rustc.
command -v cargo >/dev/null 2>&1 || missing+=(cargo rustc)
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#pkgs[@]} packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
