#!/usr/bin/env bash
# Fails unless README.md's usage example is exactly examples/readme_example.cpp's marked part,
# so the example users copy is the one the test suite compiles and runs.
set -euo pipefail
root=${1:-.}
want=$(sed -n '/BEGIN README EXAMPLE/,/END README EXAMPLE/p' "$root/examples/readme_example.cpp" | sed '1d;$d')
have=$(sed -n '/<!-- BEGIN README EXAMPLE -->/,/<!-- END README EXAMPLE -->/p' "$root/README.md" | sed '1,2d' | sed '$d' | sed '$d')
if [ "$want" != "$have" ]; then
  echo "README.md's example differs from examples/readme_example.cpp:" >&2
  diff <(echo "$want") <(echo "$have") >&2 || true
  exit 1
fi
echo "README example in sync"
