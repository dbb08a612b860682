#!/usr/bin/env bash
# Build reactfast as it stood at an earlier commit (default 05b808a: the package the CPU training
# issue measured, before its work) into a folder of its own, for bench_train.py's same-run
# comparison with the current step:
#   tools/build_baseline.sh /tmp/reactfast-baseline
#   REACTFAST_BASELINE_PKG=/tmp/reactfast-baseline .venv/bin/python -m pytest bench/bench_train.py -k baseline
# Needs the git history (a full clone) and the build tools of the current set-up; nothing is
# downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-/tmp/reactfast-baseline}
commit=${2:-05b808a}
PYTHON=${PYTHON:-.venv/bin/python}
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
git archive "$commit" | tar -x -C "$src"
rm -rf "$dir"
"$PYTHON" -m pip install --quiet --no-build-isolation --no-deps --target "$dir" "$src"
echo "reactfast at $commit built into $dir"
