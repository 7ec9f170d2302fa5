#!/usr/bin/env bash
# Runs the pytest suite against the freshly built module. Called by meson with the gtest protocol:
# meson appends --gtest_output=xml:FILE and reads FILE as JUnit XML, which is what pytest writes.
# Usage: run_pytest.sh PYTHON MODULE_DIR TESTS_DIR SOURCE_ROOT [--gtest_output=xml:FILE]
set -euo pipefail
python=$1 module_dir=$2 tests=$3 root=$4
shift 4
junit=()
for arg in "$@"; do
  case $arg in --gtest_output=xml:*) junit=(--junitxml="$(realpath -m "${arg#--gtest_output=xml:}")") ;; esac
done
export PYTHONPATH="$module_dir${PYTHONPATH:+:$PYTHONPATH}"
export PKV_SOURCE_ROOT="$root"
cd "$module_dir"
exec "$python" -m pytest -p no:cacheprovider -ra "${junit[@]}" "$tests"
