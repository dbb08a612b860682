"""Triton kernels of reactfast: one module per op family (``<op>.py``), each with its
``@triton.jit`` kernels and the host launchers that allocate outputs and choose the grid.

The ops in ``reactfast.ops`` import these modules at import time when Triton is installed
(``AVAILABLE``). Triton decides at import whether kernels are compiled for a GPU or run by its
interpreter on CPU tensors: set ``TRITON_INTERPRET=1`` before importing reactfast to use the
interpreter (slow; meant for tests on machines without a GPU). ``INTERPRET`` records the mode the
kernels were imported in.
"""

import os

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")

try:
    import triton  # noqa: F401

    AVAILABLE, REASON = True, "ok"
except ImportError as exc:  # CPU-only torch without triton
    AVAILABLE, REASON = False, f"triton is not installed ({exc}); pip install triton"


def _interpreter_problem(triton_version: str, numpy_version: str):
    """Why Triton's interpreter cannot run the kernels with these versions, or None. Triton 3.6.0's
    interpreter turns loop bounds into ints with ``int()`` of a one-element array, which numpy 2.4
    rejects (a TypeError inside the kernels' loops; numpy 2.2 and 2.3 only warn). Triton 3.7.1 runs
    them under numpy 2.4. Versions before 3.6 are taken to behave as 3.6 (not checked)."""
    def major_minor(version):
        parts = [int("".join(ch for ch in p if ch.isdigit()) or 0) for p in version.split(".")[:2]]
        return tuple(parts + [0] * (2 - len(parts)))

    if major_minor(triton_version) < (3, 7) and major_minor(numpy_version) >= (2, 4):
        return (f"Triton {triton_version}'s interpreter fails under numpy {numpy_version} (int() of a "
                "one-element array, an error since numpy 2.4): install triton>=3.7 (the test pin is "
                "triton==3.7.1) or numpy<2.4")
    return None


if AVAILABLE and INTERPRET:
    import numpy

    _problem = _interpreter_problem(triton.__version__, numpy.__version__)
    if _problem is not None:
        AVAILABLE, REASON = False, _problem

PRECISIONS = ("tf32x3", "tf32", "ieee")


def dot_precision(dtype, precision: str) -> tuple:
    """(upcast, input_precision) of a kernel's ``tl.dot`` calls for inputs of ``dtype``: under the
    interpreter inputs are upcast after loading (its bf16 arithmetic is wrong) and products exact;
    on a GPU float32 takes ``precision``: "tf32x3" (each operand split into two TF32 parts, three
    products on the matrix units: float32 accuracy), "tf32" (one TF32 product: about 1e-3 relative
    error, more after a softmax) or "ieee" (no matrix units); fp16/bf16 ignore the choice."""
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if INTERPRET:
        return True, "ieee"
    return False, precision if dtype == torch.float32 else "tf32"


def autotune_enabled() -> bool:
    """Whether kernels launch with the autotuner's timed pick (REACTFAST_AUTOTUNE unset or 1) or
    with each kernel's first candidate (REACTFAST_AUTOTUNE=0: no tuning runs, so a process that
    meets many shapes compiles one configuration per kernel, not every candidate; the GPU test
    suite runs so and checks every candidate separately)."""
    return os.environ.get("REACTFAST_AUTOTUNE", "1") not in ("", "0")


def length_class(n: int) -> int:
    """Size class of a length for the autotuners' keys: powers of two from 16 to 4096."""
    return min(max(1 << max(n - 1, 0).bit_length(), 16), 4096)


def on_tensor_device(fn):
    """Decorates a kernel entry point so that its launches go to the device of its first tensor
    argument (``_backend.device_guard``): Triton launches on the current device."""
    import functools

    import torch

    from reactfast import _backend

    @functools.wraps(fn)
    def run(*args, **kwargs):
        first = next(a for a in args if isinstance(a, torch.Tensor))
        with _backend.device_guard(first):
            return fn(*args, **kwargs)

    run.on_tensor_device = True
    return run


# (kernel, its compile-time settings) -> index of the first candidate that fits the GPU's resources.
_FITS = {}


def _launch_first_fitting(kernel, grid, args, meta, candidates) -> None:
    """Launch with the first of ``candidates`` (triton.Configs) whose shared memory fits the GPU: a
    kernel's first candidate may not fit every head dim (the autotuner skips such ones itself)."""
    from triton.runtime.errors import OutOfResources

    key = (getattr(kernel, "__name__", None) or id(kernel), tuple(sorted(meta.items())))
    start = _FITS.get(key, 0)
    for i in range(start, len(candidates)):
        c = candidates[i]
        try:
            kernel[grid(c.kwargs)](*args, **meta, **c.kwargs, num_warps=c.num_warps, num_stages=c.num_stages)
        except OutOfResources:
            if i == len(candidates) - 1:
                raise
            continue
        _FITS[key] = i
        return


def launch(kernel, tuned, grid, args, meta, config=None, fixed=None, interpret_config=None) -> None:
    """Run a Triton kernel: with ``config`` (a dict of block sizes, for tests; it may also name
    ``num_warps`` and ``num_stages``) that configuration; under
    ``torch.use_deterministic_algorithms(True)`` or REACTFAST_AUTOTUNE=0 the ``fixed`` triton.Config
    (warps and stages included; or a list of candidates, the first that fits the GPU's shared
    memory taken), not the autotuner's timed pick, which may differ between processes
    and would break bit-exact resume; under the interpreter ``interpret_config``; else the autotuned
    ``tuned``.
    ``grid`` maps a configuration's block sizes to the launch grid."""
    import torch

    deterministic = torch.are_deterministic_algorithms_enabled()
    if config is not None or (INTERPRET and not deterministic):
        cfg = dict(interpret_config if config is None else config)
        kernel[grid(cfg)](*args, **meta, **cfg)
    elif deterministic or not autotune_enabled():
        _launch_first_fitting(kernel, grid, args, meta, fixed if isinstance(fixed, (list, tuple)) else [fixed])
    else:
        tuned[grid](*args, **meta)
