#!/usr/bin/env bash
# Runs `cargo test --offline` for the crate against a meson build's libpkv.
# Usage: run_cargo_test.sh CARGO CRATE_DIR TARGET_DIR LIB_DIR INCLUDE_DIR
# Meson's 'rust' protocol reads lines "test NAME ... RESULT" (exactly four words): doctest names
# contain spaces ("src/lib.rs - f (line 3)"), so such lines are rewritten with '_' for spaces.
# Meson 1.0's rust protocol ignores the exit status (a build failure would count as skipped), so a
# failing cargo run, or one that ran no test, adds the line "test cargo_exit_status ... FAILED".
set -uo pipefail
cargo=$1 crate=$2
export CARGO_TARGET_DIR=$3 PKV_LIB_DIR=$4 PKV_INCLUDE_DIR=$5
cd "$crate" || exit 1
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$cargo" test --offline 2>&1 | awk '
  $1 == "test" && $2 != "result:" && NF > 4 && $(NF-1) == "..." {
    name = $2; for (i = 3; i <= NF - 2; i++) name = name "_" $i
    print "test " name " ... " $NF; next
  }
  { print }' | tee "$out"
rc=${PIPESTATUS[0]}
if [ "$rc" -ne 0 ] || ! grep -q '^test .* \.\.\. ok$' "$out"; then
  echo "test cargo_exit_status ... FAILED"
  [ "$rc" -ne 0 ] || rc=1
fi
exit "$rc"
