"""Test set-up. TRITON_INTERPRET must be set before any Triton kernel module is imported, so
that every Triton kernel runs (through the interpreter, on CPU tensors) where CUDA is absent."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from reactfast import _backend  # noqa: E402

HAS_CUDA = torch.cuda.is_available()


def devices():
    return ["cpu", "cuda"] if HAS_CUDA else ["cpu"]


def usable_backends(op_implemented, device):
    """The backends of an op that can run on ``device`` here."""
    device_type = torch.device(device).type
    return [b for b in op_implemented if _backend.backend_status(b, device_type)[0]]


@pytest.fixture(autouse=True)
def _no_forced_backend(monkeypatch):
    monkeypatch.delenv("REACTFAST_BACKEND", raising=False)
