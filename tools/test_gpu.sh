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

# Each pytest run has a time limit (seconds; the whole target must fit in 8 minutes on one H100):
# at the limit it gets SIGINT, stops after the running test and still writes its JUnit report with
# what ran; one that does not stop (a kernel that never returns) is killed 20 s later and the table
# counts the progress line of its log instead. faulthandler dumps the stack of any test that runs
# longer than a minute and a half, so a hang shows where it is.
TEST_LIMIT=${REACTFAST_GPU_TEST_LIMIT:-300}
# The benchmarks' limit (unless set): what is left of 8 minutes after the build and the suite,
# at least 150 s.
run_pytest() {  # name limit args...
  local name=$1 limit=$2
  shift 2
  timeout --signal=INT --kill-after=20 "$limit" "$PYTHON" -m pytest "$@" -p no:cacheprovider \
    -o faulthandler_timeout=90 --junitxml="$REPORT/$name.xml" -o junit_family=xunit1 >"$REPORT/$name.log" 2>&1
  local rc=$?
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then echo "$limit" >"$REPORT/$name.limit"; fi
  tail -40 "$REPORT/$name.log"
}
# The suite is spread over REACTFAST_GPU_TEST_WORKERS processes (default: half the cores,
# at most 8; 1 runs it in one) with pytest-xdist where installed, test by test: much of it is CPU
# work and Triton compilation (Triton's on-disk cache shares compiled kernels between the
# processes), and one file per process left test_biased_attention.py alone at 274 s on an H100
# machine. Each process gets its share of the cores for its CPU threads (torch would start one
# per core in every process and oversubscribe the machine).
cores=$(nproc)
nworkers=${REACTFAST_GPU_TEST_WORKERS:-$(( cores / 2 > 8 ? 8 : (cores / 2 > 1 ? cores / 2 : 1) ))}
workers=()
if [ "$nworkers" -gt 1 ] && "$PYTHON" -c "import xdist" 2>/dev/null; then
  workers=(-n "$nworkers" --dist load)
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( cores / nworkers > 1 ? cores / nworkers : 1 ))}
  echo "[test-gpu] the suite in $nworkers processes of $OMP_NUM_THREADS CPU threads each"
fi
run_pytest tests "$TEST_LIMIT" tests -q --maxfail=50 --durations=15 "${workers[@]}"
left=$(( 480 - ($(date +%s) - start) ))
BENCH_LIMIT=${REACTFAST_GPU_BENCH_LIMIT:-$(( left > 150 ? left : 150 ))}
# The attention benchmark last: each of its cases compiles FlexAttention and tunes the kernels
# (about a minute each on an H100 machine), and it would leave the others no time.
benches=$(ls bench/bench_*.py | grep -v bench_biased_attention.py; echo bench/bench_biased_attention.py)
# shellcheck disable=SC2086
REACTFAST_BENCH_JSON="$PWD/$REPORT/bench.jsonl" OMP_NUM_THREADS=$cores run_pytest bench "$BENCH_LIMIT" $benches \
  -m gpu -q
echo "[test-gpu] $(( $(date +%s) - start )) s in all"
"$PYTHON" tools/gpu_report.py "$REPORT"
