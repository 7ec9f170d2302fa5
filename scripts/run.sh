#!/usr/bin/env bash
# The main job: installs missing Debian packages, builds pkv (release), and runs pkv-sim, the
# multithreaded continuous-batching scheduler simulator, with its embedded defaults.
# Extra arguments go to pkv-sim (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
if [ ! -f build-release/build.ninja ]; then
  meson setup build-release -Dbuildtype=release >/dev/null
fi
meson compile -C build-release sim/pkv-sim >/dev/null  # just what the main job needs
exec build-release/sim/pkv-sim "$@"
