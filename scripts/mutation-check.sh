#!/usr/bin/env bash
# Shows that pkv's checks can fail: builds the library with a defect planted on purpose and
# expects the named tests to FAIL. Exits 0 only if every mutant is caught.
#   aba: the shared free list's ABA tag never changes  -> deterministic-schedule pool test
#   cow: append never copies a shared partly filled block -> cache unit/MT tests, RapidCheck model
#   stale_hash: a reclaimed cached block stays findable -> prefix-caching unit tests, RapidCheck
#     model (pkv-stress catches it too: wrong-hit cookies; not run here, -Dstress=false)
set -uo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
caught_all=0

# mutant  test-executables...
check() {
  local mutant=$1; shift
  local dir=build-mut-$mutant
  if [ ! -f "$dir/build.ninja" ]; then
    meson setup "$dir" -Dbuildtype=release -Dmutation="$mutant" -Dbench=false -Dsim=false \
      -Dstress=false >"$dir.setup.log" 2>&1 || { cat "$dir.setup.log"; caught_all=1; return; }
  fi
  local targets=()
  for t in "$@"; do targets+=("$t"); done
  if ! meson compile -C "$dir" -j "$jobs" "${targets[@]}" >"$dir.compile.log" 2>&1; then
    tail -20 "$dir.compile.log"; echo "mutation $mutant: BUILD FAILED"; caught_all=1; return
  fi
  local caught=()
  for t in "$@"; do
    # Bounded: a mutant may also make a test hang (a thread stuck on a broken invariant).
    if ! timeout 300 "$dir/$t" --gtest_brief=1 >"$dir.$(basename "$t").log" 2>&1; then
      caught+=("$(basename "$t"): $(grep -m1 -E '^\[  FAILED  \] [A-Za-z]' "$dir.$(basename "$t").log" | sed 's/\[  FAILED  \] //; s/ (.*//')")
    fi
  done
  if [ ${#caught[@]} -eq 0 ]; then
    echo "mutation $mutant: NOT CAUGHT by $*"; caught_all=1
  else
    echo "mutation $mutant: caught by ${#caught[@]} of $# test programs:"
    printf '  %s\n' "${caught[@]}"
  fi
}

check aba tests/dsched/test_dsched_pool
check cow tests/test_cache tests/test_cache_mt tests/model/pkv-test-model-rc
check stale_hash tests/test_prefix_cache tests/model/pkv-test-model-rc
exit $caught_all
