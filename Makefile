# Set-up is part of every target: a virtual environment in .venv, the build tools, torch==2.13.0
# (the local CPU wheel; never plain `torch`), then reactfast itself; the targets that run
# tests or benchmarks add the test extra (pytest, hypothesis, triton for the interpreter, ...),
# which the demo does not need (about 20 s of a fresh clone's set-up on 2 cores). pip installs with
# --no-compile and tools/precompile.py byte-compiles only the modules that are imported: pip
# compiles every file of torch and its dependencies, most never imported (about 25 s on 2 cores).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.reactfast-deps
TEST_STAMP := $(VENV)/.reactfast-test-deps
# The CUDA kernels are compiled only where a GPU is visible (nvidia-smi lists one): elsewhere they
# cannot run, and compiling them is about 10 s of a fresh clone's set-up on 2 cores (the suite's
# tests/test_build.py still compiles every CUDA source wherever nvcc is). REACTFAST_CUDA (ON, OFF,
# AUTO) in the environment wins; `make test-gpu` always builds them.
REACTFAST_CUDA ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo AUTO || echo OFF)
export REACTFAST_CUDA

.PHONY: demo test test-gpu bench install env clean

demo: install
	$(VENV)/bin/reactfast demo

test: install $(TEST_STAMP)
	$(PY) -m pytest tests -q

# On a GPU machine with no network: builds with the CUDA kernels for the local GPU (system python3,
# no virtual environment), runs the whole suite and the GPU benchmarks, prints a table last.
test-gpu:
	bash tools/test_gpu.sh

bench: install $(TEST_STAMP)
	$(PY) -m pytest bench -q

env: install
	$(PY) -m reactfast.env_report

install: $(STAMP)
	$(PY) -m pip install --no-build-isolation --no-deps --quiet .

# The extension (torch-free C++) builds into a wheel while torch installs: the build keeps both
# cores busy, pip's unpacking of torch mostly one. Then the wheel installs with its dependencies,
# torch already there.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --no-compile "scikit-build-core>=0.10" "pybind11>=2.12" ninja
	rm -rf build/wheel
	$(PY) -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir build/wheel . & \
	  $(PY) -m pip install --quiet --no-compile torch==2.13.0; torch=$$?; wait $$!; wheel=$$?; \
	  test $$torch -eq 0 -a $$wheel -eq 0
	$(PY) -m pip install --quiet --no-compile build/wheel/reactfast-*.whl
	$(PY) tools/precompile.py --walk reactfast --skip reactfast.bench matplotlib.pyplot tqdm.auto
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --no-compile --no-build-isolation ".[test]"
	$(PY) tools/precompile.py --walk reactfast --skip reactfast.bench pytest hypothesis triton torch._dynamo torch._inductor.compile_fx \
		torch.distributed torch.distributed.run
	touch $(TEST_STAMP)

clean:
	rm -rf build dist $(VENV)
