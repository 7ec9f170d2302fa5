#!/usr/bin/env bash
# scripts/bench-report.sh — build the benchmarks (release), run the whole suite, write the report.
#
#   scripts/bench-report.sh [--quick] [--no-callgrind] [--filter REGEX]
#
# Steps (each prints what it does):
#   1. meson setup/compile build-bench (buildtype=release, tests/stress/sim off) -> pkv-bench,
#      pkv-memory
#   2. pkv-bench with --benchmark_repetitions=$REPS (default 3) and random interleaving
#      -> bench/results.json (Google Benchmark JSON, every repetition kept)
#   3. pkv-memory -> bench/memory.json (bytes per block / per sequence, peak RSS)
#   4. scripts/bench-callgrind.sh -> bench/callgrind.tsv (instructions per op, 1 thread)
#   5. scripts/bench-report.py -> bench/RESULTS.md + bench/throughput.png
#
# Environment: BUILD_DIR (default build-bench), REPS (3), MIN_TIME (0.3 s per repetition).
# --quick: REPS=1, MIN_TIME=0.05, no callgrind (a smoke run of the pipeline, ~1 minute).
# A full run takes about 6-8 minutes on a 2-core machine.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build=${BUILD_DIR:-build-bench}
reps=${REPS:-3}
min_time=${MIN_TIME:-0.3}
callgrind=1
filter=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) reps=1; min_time=0.05; callgrind=0 ;;
    --no-callgrind) callgrind=0 ;;
    --filter) filter=$2; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "bench-report: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

step() { printf '\n==> %s\n' "$*" >&2; }

step "build ($build, release)"
if [ ! -f "$build/build.ninja" ]; then
  meson setup "$build" -Dbuildtype=release -Db_ndebug=true -Dbench=true -Dtests=false \
    -Dstress=false -Dsim=false
fi
meson compile -C "$build" pkv-bench pkv-memory
bench="$build/bench/pkv-bench"
memory="$build/bench/pkv-memory"

step "pkv-bench: $reps repetitions x ${min_time}s (nproc=$(nproc), load: $(cut -d' ' -f1-3 /proc/loadavg))"
args=(--benchmark_repetitions="$reps" --benchmark_min_time="$min_time"
      --benchmark_enable_random_interleaving=true
      --benchmark_out=bench/results.json --benchmark_out_format=json
      --benchmark_counters_tabular=false)
[ -n "$filter" ] && args+=(--benchmark_filter="$filter")
start=$(date +%s)
"$bench" "${args[@]}" --benchmark_display_aggregates_only=true >&2
echo "pkv-bench: $(( $(date +%s) - start )) s" >&2

step "pkv-memory"
"$memory" > bench/memory.json
cat bench/memory.json >&2

cg_arg=()
if [ "$callgrind" = 1 ]; then
  if command -v valgrind >/dev/null; then
    step "callgrind (instructions per op, 1 thread)"
    CALLGRIND_FILTER=${filter:-.} scripts/bench-callgrind.sh "$bench" bench/callgrind.tsv
    cg_arg=(--callgrind bench/callgrind.tsv)
  else
    echo "bench-report: valgrind not installed; no instruction counts" >&2
  fi
elif [ -f bench/callgrind.tsv ]; then
  cg_arg=(--callgrind bench/callgrind.tsv)  # keep the last counts
fi

step "report"
cmd="scripts/bench-report.sh"
[ "$reps" != 3 ] || [ "$min_time" != 0.3 ] && cmd="REPS=$reps MIN_TIME=$min_time $cmd"
[ "$callgrind" = 0 ] && cmd="$cmd --no-callgrind"
[ -n "$filter" ] && cmd="$cmd --filter '$filter'"
python3 scripts/bench-report.py --results bench/results.json "${cg_arg[@]}" \
  --memory bench/memory.json --out bench/RESULTS.md --plot bench/throughput.png \
  --command "$cmd" --repetitions "$reps" --min-time "$min_time"
echo "bench-report: done in $(( $(date +%s) - start )) s -> bench/RESULTS.md, bench/throughput.png" >&2
