"""Dropout whose mask is cheap on a CPU.

``torch.nn.functional.dropout`` on a CPU draws a Bernoulli per element from the Mersenne Twister
(``bernoulli_``, about 7-9 ns an element on one core here), which made dropout about a third of
the demo ReactFace's forward pass. Here the mask is a keyed integer hash of the element index
(``reactfast.reference.dropout``): one 64-bit seed is drawn from torch's generator per call, and
the C++ kernel computes the mask and the scaled output in one vectorised pass; the backward reads
the one-byte mask kept by the forward.

- ``cpp``: float32 CPU tensors.
- ``reference``: any dtype and device (the same mask, built with torch integer ops).
- On CUDA tensors, by default, ``torch.nn.functional.dropout`` (torch's fused Philox kernel; a
  different stream of masks).
- Under ``torch.compile``: on CPU float32 the same C++ kernel as one opaque custom op
  (``reactfast::hashed_dropout``; its key drawn inside the graph, so masks differ from eager calls'
  unless ``seed`` is given). torch's own dropout there draws a random number per element (on a CPU
  the largest of its mask kernels alone took 34 ms of the compiled ReactFace training step's
  180-200 ms); the hash written in torch ops made inductor's code generation take over 10 minutes.
  Elsewhere under compile, torch's dropout.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from reactfast import _backend
from reactfast.ops._checks import check_dropout_args
from reactfast.reference import dropout as _ref

IMPLEMENTED = ("cpp", "reference")
_backend.register_op("dropout", IMPLEMENTED)
_CPP_OK = _backend.backend_status("cpp", "cpu", "dropout")[0]      # read once: compiled graphs branch on it


def _cpp_forward(x: torch.Tensor, p: float, seed: int):
    """The C++ kernel's scaled output and one-byte keep mask for float32 CPU ``x``."""
    out = _backend.empty(x.shape, torch.float32, x.device)
    keep = _backend.empty(x.shape, torch.bool, x.device)
    key0, key1 = _ref.split_seed(seed)
    _backend.native().dropout_fwd_cpu(x.contiguous(), out, keep, x.numel(), _ref.threshold(p), key0, key1,
                                      1.0 / (1.0 - p))
    return out, keep


class _Dropout(torch.autograd.Function):
    """A plain autograd.Function, not a custom op: its dispatch costs a fraction of one, and this
    runs dozens of times per training step (compiled graphs call a custom op instead)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float, seed: int, name: str):
        scale = 1.0 / (1.0 - p)
        if name == "cpp":
            out, keep = _cpp_forward(x, p, seed)
        else:
            keep = _ref.keep_mask(x.shape, p, seed, x.device)
            out = torch.where(keep, x * scale, torch.zeros((), dtype=x.dtype, device=x.device))
        ctx.save_for_backward(keep)
        ctx.scale, ctx.name = scale, name
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        if ctx.name == "cpp" and grad.dtype == torch.float32:
            grad = grad.contiguous()
            dx = _backend.empty(grad.shape, torch.float32, grad.device)
            _backend.native().dropout_bwd_cpu(grad, keep, dx, grad.numel(), ctx.scale)
        else:
            dx = torch.where(keep, grad * ctx.scale, torch.zeros((), dtype=grad.dtype, device=grad.device))
        return dx, None, None, None


@torch.library.custom_op("reactfast::hashed_dropout", mutates_args=())
def _hashed_dropout(x: torch.Tensor, p: float, key: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Compiled graphs on CPU float32: the C++ kernel as one opaque call, keyed by a 0-d int64 tensor
    (the seed's 64 bits), returning the output and the mask its backward reads."""
    return _cpp_forward(x, p, int(key) & ((1 << 64) - 1))


@_hashed_dropout.register_fake
def _(x, p, key):
    return torch.empty_like(x), torch.empty_like(x, dtype=torch.bool)


def _hashed_setup(ctx, inputs, output):
    ctx.save_for_backward(output[1])
    ctx.scale = 1.0 / (1.0 - inputs[1])


def _hashed_backward(ctx, grad, _grad_keep):
    (keep,) = ctx.saved_tensors
    return torch.where(keep, grad * ctx.scale, torch.zeros((), dtype=grad.dtype, device=grad.device)), None, None


_hashed_dropout.register_autograd(_hashed_backward, setup_context=_hashed_setup)


def _compiled_dropout(x: torch.Tensor, p: float, seed: Optional[int]) -> torch.Tensor:
    """Inside torch.compile: on CPU float32 the hashed mask as one opaque C++ call (traced into the
    graph, torch's own dropout there draws a random number per element, and the hash written in
    torch ops made the compiler's code generation take many minutes); elsewhere torch's dropout."""
    if x.device.type != "cpu" or x.dtype != torch.float32 or not _CPP_OK:
        return F.dropout(x, p, True)
    if seed is None:
        key = torch.randint(-2 ** 63, 2 ** 63 - 1, (), dtype=torch.int64)
    else:
        seed &= (1 << 64) - 1
        key = torch.tensor(seed - (1 << 64) if seed >= 1 << 63 else seed, dtype=torch.int64)
    return _hashed_dropout(x, float(p), key)[0]


def fused_route(op: str, x: torch.Tensor, p: float, backend: Optional[str], implemented, cpp_ok: bool,
                inputs_ok: bool = True, inputs: str = "x", kernels_of=()) -> str:
    """Where a call of an op with dropout fused into C++ kernels (``add_layer_norm``,
    ``gelu_dropout``, ``feed_forward``) goes: ``"cpp"`` for float32 CPU ``x`` outside torch.compile
    with p < 1 (and ``inputs_ok``, the op's other tensors alike), unless REACTFAST_BACKEND names
    another backend for ``op`` or for an op in ``kernels_of`` (those whose kernels this op calls);
    ``"reference"`` when ``backend`` or REACTFAST_BACKEND asks for it for ``op``; else
    ``"composite"`` (the op written over the unfused ops, which then follow their own settings).
    ``backend="cpp"`` where the kernel cannot take the call raises, naming ``inputs``."""
    fast = (backend != "reference" and cpp_ok and p < 1.0 and not torch.compiler.is_compiling()
            and x.device.type == "cpu" and x.dtype == torch.float32 and inputs_ok)
    if backend == "cpp" and not fast:
        _backend.select(op, x.device, implemented, backend)      # raises when cpp cannot run here at all
        raise ValueError(f"backend 'cpp' takes float32 CPU tensors ({inputs}) outside torch.compile and p < 1, "
                         f"got x {x.dtype} on {x.device}, p {p}")
    if backend == "cpp":
        return "cpp"
    forced = _backend.forced_backend(op) if backend is None else None
    if fast and forced in (None, "cpp") and (forced == "cpp" or all(
            _backend.forced_backend(other) in (None, "cpp") for other in kernels_of)):
        return "cpp"
    return "reference" if "reference" in (backend, forced) else "composite"


def draw_seed(generator: Optional[torch.Generator] = None) -> int:
    """One 63-bit seed from ``generator`` (default: torch's global CPU generator)."""
    return int(torch.empty((), dtype=torch.int64).random_(generator=generator))


def dropout(x: torch.Tensor, p: float, training: bool = True, seed: Optional[int] = None,
            generator: Optional[torch.Generator] = None, backend: Optional[str] = None) -> torch.Tensor:
    """Zero each element of ``x`` with probability ``p`` and scale the rest by 1 / (1 - p).

    Args:
        x: float tensor, any shape.
        p: drop probability in [0, 1].
        training: when False (or p == 0) ``x`` is returned as is.
        seed: the call's 64-bit key (the same seed gives the same mask on every device); default
            one draw from ``generator`` (torch's global CPU generator when None), so
            ``torch.manual_seed`` makes training reproducible as with ``nn.Dropout``.
        backend: ``"cpp"`` or ``"reference"``; default ``cpp`` for float32 CPU tensors, the
            reference for other CPU dtypes and for seeded CUDA calls, torch's own dropout for
            unseeded CUDA calls; inside ``torch.compile`` the C++ kernel as a custom op on CPU
            float32, torch's dropout otherwise.

    Returns:
        A tensor of x's shape and dtype (contiguous when dropped), differentiable.

    Example:
        >>> y = dropout(torch.randn(8, 32, 64), 0.1)
    """
    check_dropout_args(x, p, seed, backend, IMPLEMENTED, training)
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    if torch.compiler.is_compiling():
        return _compiled_dropout(x, p, seed)
    if backend is None and seed is None and x.is_cuda:
        return F.dropout(x, p, True)
    if seed is None:
        seed = draw_seed(generator)
    if backend is None and x.dtype != torch.float32:
        backend = "reference"
    name = _backend.select("dropout", x.device, IMPLEMENTED, backend)
    if name == "cpp" and x.dtype != torch.float32:
        raise ValueError(f"backend 'cpp' takes float32 tensors, got x of dtype {x.dtype}")
    return _Dropout.apply(x.contiguous(), float(p), seed, name)
