#!/usr/bin/env bash
# Runs every pkv test: the whole meson suite in a release build, under ThreadSanitizer with g++
# and with clang, and under AddressSanitizer + UndefinedBehaviorSanitizer; the pool's tests with
# -Ddebug_locked_freelist=true (build-lockedlist); then a bounded libFuzzer
# run (PKV_FUZZ_SECONDS, default 60) and the mutation check (planted defects must be caught). Ends with one summary line
# "total: N passed, N failed, N skipped". Installs missing Debian packages first.
# Usage: scripts/test.sh
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh || exit 1

export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 history_size=4"
export ASAN_OPTIONS="detect_leaks=1 abort_on_error=1 strict_string_checks=1"
export UBSAN_OPTIONS="halt_on_error=1 print_stacktrace=1"
jobs=$(nproc)
status=0
logs=()

# name  meson options...   (TARGETS / TESTS: build and run only these; default everything)
run_build() {
  local dir=$1; shift
  echo "=== $dir: meson setup $*"
  if [ ! -f "$dir/build.ninja" ]; then
    meson setup "$dir" "$@" >"$dir.setup.log" 2>&1 || { cat "$dir.setup.log"; status=1; return; }
  else
    meson configure "$dir" "$@" >/dev/null 2>&1 || true
  fi
  # shellcheck disable=SC2086  # TARGETS and TESTS are word lists
  if ! meson compile -C "$dir" -j "$jobs" ${TARGETS:-} >"$dir.compile.log" 2>&1; then
    grep -E "error|Error" -A5 "$dir.compile.log" | head -60
    echo "=== $dir: BUILD FAILED"; status=1; return
  fi
  # shellcheck disable=SC2086
  if ! meson test -C "$dir" --print-errorlogs --num-processes "$jobs" ${TESTS:-} \
      >"$dir.test.log" 2>&1; then
    status=1
    echo "=== $dir: TESTS FAILED"
    # Which ones, and their own words (GoogleTest's failure lines, a seed to rerun with), so a
    # failure on a machine we cannot log into can be reproduced from this output alone.
    grep -E "^ *[0-9]+/[0-9]+ .*(FAIL|TIMEOUT|ERROR)" "$dir.test.log" | head -20
    grep -hE "\[  FAILED  \]|Failure$|pkv-stress: seed=|error:|ERROR:|SUMMARY:" \
      "$dir/meson-logs/testlog.txt" | head -40
  fi
  tail -n 9 "$dir.test.log"
  logs+=("$dir/meson-logs/testlog.junit.xml")
}

# The release build also builds the Python module and runs the pytest and cargo test suites
# (bindings/); the C ABI test (tests/c) runs in every build, sanitizers included.
run_build build-release -Dbuildtype=release -Dpython=true -Drust=true
echo "=== build-release: the bindings' own runners (C ABI TAP, pytest, cargo test)"
grep -hE "^# C ABI tests: |^=+ .*(passed|failed|error).* in [0-9.]+s.* =+$|^test result: " \
  build-release/meson-logs/testlog.txt
run_build build-tsan -Dbuildtype=debugoptimized -Db_sanitize=thread -Db_lundef=false -Dbench=false
run_build build-asan -Dbuildtype=debugoptimized -Db_sanitize=address,undefined -Db_lundef=false -Dexpensive_checks=true \
  -Dbench=false
CC=clang CXX=clang++ run_build build-tsan-clang -Dbuildtype=debugoptimized -Db_sanitize=thread \
  -Db_lundef=false -Dbench=false -Dsim=false
# The pool's tests with its shared free stack behind a lock: a failure that only the lock-free
# build shows is then pinned to the lock-free stack (and one that both show is elsewhere).
TARGETS="tests/test_block_pool tests/test_block_pool_mt tests/dsched/test_dsched_pool" \
  TESTS="block_pool block_pool_mt dsched_pool" \
  run_build build-lockedlist -Dbuildtype=release -Ddebug_locked_freelist=true -Dbench=false \
  -Dsim=false -Dstress=false

echo "=== fuzz: libFuzzer (clang, ASan+UBSan) against the reference model, bounded time"
fuzz_result="0 passed, 1 failed"
if [ ! -f build-fuzz/build.ninja ]; then
  CXX=clang++ meson setup build-fuzz -Dfuzz=true -Dtests=false -Dstress=false -Dbench=false \
    -Dsim=false -Dbuildtype=debugoptimized -Db_ndebug=false >build-fuzz.setup.log 2>&1 ||
    cat build-fuzz.setup.log
fi
if meson compile -C build-fuzz fuzz/pkv-fuzz-cache >build-fuzz.compile.log 2>&1; then
  fuzz_corpus=$(mktemp -d)
  if build-fuzz/fuzz/pkv-fuzz-cache "$fuzz_corpus" fuzz/corpus -max_total_time="${PKV_FUZZ_SECONDS:-60}" \
      -max_len=512 -timeout=10 -print_final_stats=1 >build-fuzz.run.log 2>&1; then
    fuzz_result="1 passed, 0 failed"
  else
    status=1
  fi
  grep -E "stat::number_of_executed_units|stat::new_units_added|ERROR|SUMMARY" build-fuzz.run.log | head -5
  rm -rf "$fuzz_corpus"
else
  tail -20 build-fuzz.compile.log; status=1
fi

echo "=== mutation check: planted defects must make the checks fail"
if bash scripts/mutation-check.sh; then
  mutation="1 passed, 0 failed"
else
  mutation="0 passed, 1 failed"; status=1
fi

echo "=== summary (GoogleTest cases and other meson tests, all builds)"
python3 scripts/summarize-tests.py "fuzz run=$fuzz_result" "mutation check=$mutation" \
  "${logs[@]}" || status=1
exit $status
