#!/usr/bin/env bash
# sim/paper_fig15.sh — memory saved by sharing, pkv-sim beside Kwon et al. (SOSP 2023) Fig. 15.
#
#   sim/paper_fig15.sh [path/to/pkv-sim] [extra pkv-sim flags...]
#
# Runs pkv-sim for parallel sampling (--n K) and beam search (--beam-width K), K = 2..6, on the
# Alpaca- and ShareGPT-shaped workloads (one worker, so every run is deterministic for its seed)
# and prints a markdown table beside the ranges the paper reports for 2 to 6 outputs / beams.
set -euo pipefail
sim=${1:-build/sim/pkv-sim}
shift || true
if [[ ! -x $sim ]]; then
  echo "paper_fig15.sh: no pkv-sim at '$sim' (build it, or pass its path)" >&2
  exit 2
fi

saved() {  # dataset mode k -> memory_saved_by_sharing_percent with one decimal
  local json
  json=$("$sim" --dataset "$1" "--$2" "$3" --workers 1 --json --quiet "${@:4}")
  sed -n 's/.*"memory_saved_by_sharing_percent": \([0-9.eE+-]*\).*/\1/p' <<<"$json" |
    awk '{ printf "%.1f%%", $1 }'
}

declare -A paper=(
  [alpaca-n]="6.1% – 9.8%" [alpaca-beam-width]="37.6% – 55.2%"
  [sharegpt-n]="16.2% – 30.5%" [sharegpt-beam-width]="44.3% – 66.3%"
)
declare -A label=([n]="parallel sampling" [beam-width]="beam search")

echo "| dataset | sharing | K=2 | K=3 | K=4 | K=5 | K=6 | paper, K=2 – 6 |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"
for ds in alpaca sharegpt; do
  for mode in n beam-width; do
    row="| $ds | ${label[$mode]} |"
    for k in 2 3 4 5 6; do
      row+=" $(saved "$ds" "$mode" "$k" "$@") |"
    done
    echo "$row ${paper[$ds-$mode]} |"
  done
done
