"""Calling reactfast._C with tensors: raw pointers, sizes and the current CUDA stream."""

from __future__ import annotations

import torch

from reactfast import _backend


def stream_of(t: torch.Tensor) -> int:
    return torch.cuda.current_stream(t.device).cuda_stream if t.is_cuda else 0


def call(name: str, *args):
    """Call ``reactfast._C.<name>`` with tensors replaced by their data pointers."""
    fn = getattr(_backend.native(), name)
    return fn(*[a.data_ptr() if isinstance(a, torch.Tensor) else a for a in args])
