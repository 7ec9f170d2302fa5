#!/usr/bin/env bash
# Instructions per scheduler step of bench_python.py's workloads, pkv against the pure-Python
# design, counted by callgrind (repeatable whatever the machine's load): for each workload and
# manager, I(N steps) - I(0 steps), divided by N. About 4 minutes.
# Usage: bench/python/callgrind.sh [BUILD_DIR]   (default build-release)
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build-release}
export PYTHONPATH=$build/bindings/python
count() {  # workload:manager steps -> instructions
  valgrind --tool=callgrind --callgrind-out-file=/dev/null /usr/bin/python3 \
    bench/python/bench_python.py --one "$1" --steps "$2" 2>&1 | awk '/refs:/ {gsub(",", "", $4); print $4}'
}
declare -A per_step
for one in decode:batch decode:per-token decode:python decode-loop:batch decode-loop:python \
           prefill:batch prefill:python; do
  n=400; [ "${one%%:*}" = prefill ] && n=2000
  per_step[$one]=$(( ($(count "$one" "$n") - $(count "$one" 0)) / n ))
done
echo "instructions per scheduler step (callgrind), 1 thread"
for wl in decode decode-loop prefill; do
  py=${per_step[$wl:python]}
  for m in batch per-token python; do
    v=${per_step[$wl:$m]:-}
    [ -n "$v" ] || continue
    if [ "$m" = python ]; then ratio=""; else ratio=$(awk -v a="$py" -v b="$v" 'BEGIN {printf "  %.1fx", a / b}'); fi
    printf "  %-12s %-10s %9d%s\n" "$wl" "$m" "$v" "$ratio"
  done
done
