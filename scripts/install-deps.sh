#!/usr/bin/env bash
# Installs every Debian package pkv's build, tests, benchmarks and tools use, if missing.
# Idempotent: does nothing (and needs no network) when all are present.
set -euo pipefail
pkgs=(
  meson ninja-build pkg-config g++ clang libclang-rt-14-dev python3
  libboost-dev libboost-atomic-dev
  libgtest-dev libgmock-dev libbenchmark-dev librapidcheck-dev
  gnuplot-nox valgrind
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
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
