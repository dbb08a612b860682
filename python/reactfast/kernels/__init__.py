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
