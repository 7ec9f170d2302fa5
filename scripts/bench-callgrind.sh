#!/usr/bin/env bash
# scripts/bench-callgrind.sh — instructions per operation of the single-thread workloads, for pkv
# and every baseline, counted by valgrind's callgrind.
#
#   scripts/bench-callgrind.sh [PKV_BENCH] [OUT_TSV]
#     PKV_BENCH  the pkv-bench binary (default build-bench/bench/pkv-bench)
#     OUT_TSV    where to write "name<TAB>instructions<TAB>items<TAB>instructions_per_item"
#                (default bench/callgrind.tsv)
#   CALLGRIND_FILTER=regex  only workloads whose name matches (default: all of the list below)
#
# pkv-bench --callgrind=NAME builds NAME's workload for one thread, runs N warm-up steps, then N
# steps with collection on (CALLGRIND_TOGGLE_COLLECT around the loop; valgrind runs with
# --collect-atstart=no), so setup and warm-up are not counted. One item = one cache/pool call
# (pool workloads: one block acquired and released).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bench=${1:-$root/build-bench/bench/pkv-bench}
out=${2:-$root/bench/callgrind.tsv}
filter=${CALLGRIND_FILTER:-.}

command -v valgrind >/dev/null || { echo "bench-callgrind: valgrind not installed" >&2; exit 1; }
[ -x "$bench" ] || { echo "bench-callgrind: no $bench (build it first)" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# name:iterations (steps). Pool steps are ~30-300 instructions, cache steps ~1e3-1e4, the seed's
# victim scan at 10k sequences ~1e5 per step.
workloads=()
for impl in pkv pkv_nomag boost_lockfree vllm_mutex; do
  workloads+=("BM_pool_alloc_free/single/$impl:200000" "BM_pool_alloc_free/batch16/$impl:20000")
done
for impl in pkv seed_mutex; do
  for w in prefill decode_step beam_fork mixed_scheduler streaming_llm; do
    workloads+=("BM_$w/$impl:3000")
  done
  for s in lru lfu longest_first priority streaming_llm; do
    workloads+=("BM_evict_victim/$s/10000/$impl:200")
  done
  workloads+=("BM_evict_victim/lru/100000/$impl:20")
done
for impl in pkv_batch pkv_affine_batch seed_mutex_batch; do  # the decode-step API (append_batch)
  workloads+=("BM_decode_step/$impl:3000" "BM_mixed_scheduler/$impl:3000")
done
workloads+=("BM_beam_fork/pkv_many:3000")  # fork_many / free_many
# Prefix caching (~1e4-1e5 instructions per allocate + free of a 2,048-token prompt).
for impl in pkv vllm_mutex; do
  for w in prefix_hit prefix_churn match_prefix; do
    for h in xxh3_128 sha256; do workloads+=("BM_$w/$h/$impl:300"); done
  done
done

printf 'name\tinstructions\titems\tinstructions_per_item\n' > "$tmp/out.tsv"
for entry in "${workloads[@]}"; do
  name=${entry%:*}
  iters=${entry##*:}
  [[ "$name" =~ $filter ]] || continue
  cg="$tmp/cg.out"
  log="$tmp/run.log"
  if ! valgrind --tool=callgrind --collect-atstart=no --callgrind-out-file="$cg" \
      "$bench" --callgrind="$name" --iterations="$iters" >"$log" 2>"$tmp/vg.log"; then
    echo "bench-callgrind: $name failed:" >&2
    tail -5 "$tmp/vg.log" >&2
    exit 1
  fi
  items=$(sed -n 's/.*items=\([0-9]*\).*/\1/p' "$log")
  instr=$(awk '/^(totals|summary):/ {print $2; exit}' "$cg")
  per=$(awk -v i="$instr" -v n="$items" 'BEGIN { printf "%.1f", i / n }')
  printf '%s\t%s\t%s\t%s\n' "$name" "$instr" "$items" "$per" >> "$tmp/out.tsv"
  printf '%-50s %10s instr/op\n' "$name" "$per" >&2
  rm -f "$cg"
done
mkdir -p "$(dirname "$out")"
cp "$tmp/out.tsv" "$out"
echo "bench-callgrind: wrote $out" >&2
