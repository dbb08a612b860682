#!/usr/bin/env bash
# make test-gpu: on a machine with a GPU and no network (torch, triton, nvcc, cmake, ninja,
# scikit-build-core and pybind11 preinstalled), build reactfast with its CUDA kernels for the
# local GPU, run the whole test suite and the GPU benchmarks, and print a short table last.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
REPORT=${REPORT:-gpu_report}
rm -rf "$REPORT" && mkdir -p "$REPORT"
start=$(date +%s)

arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '. ')
if [ -z "$arch" ]; then
  echo "make test-gpu: nvidia-smi finds no GPU; this target needs one (make test runs the CPU suite)" >&2
  exit 2
fi
echo "[test-gpu] building with REACTFAST_CUDA=ON for sm_$arch"
if ! REACTFAST_CUDA=ON REACTFAST_CUDA_ARCHITECTURES="$arch" \
    "$PYTHON" -m pip install --no-build-isolation --no-deps --quiet . >"$REPORT/build.log" 2>&1; then
  tail -40 "$REPORT/build.log"
  echo "make test-gpu: the CUDA build failed (log: $REPORT/build.log)" >&2
  exit 1
fi
"$PYTHON" -m reactfast.env_report | tee "$REPORT/env.txt"

# Outside the source tree, so that the installed package (with its compiled extension) is tested.
"$PYTHON" -m pytest tests -q --maxfail=50 -p no:cacheprovider --junitxml="$REPORT/tests.xml" \
  -o junit_family=xunit1 2>&1 | tail -30
REACTFAST_BENCH_JSON="$PWD/$REPORT/bench.jsonl" "$PYTHON" -m pytest bench -m gpu -q -p no:cacheprovider \
  --junitxml="$REPORT/bench.xml" 2>&1 | tail -40
echo "[test-gpu] $(( $(date +%s) - start )) s in all"
"$PYTHON" tools/gpu_report.py "$REPORT"
