"""Which compute backends exist here, and which one an op uses.

Backends, fastest first:

- ``cuda``: the CUDA kernels compiled into ``reactfast._C`` (CUDA tensors only).
- ``triton``: the Triton kernels in ``reactfast.kernels`` (CUDA tensors; CPU tensors only
  when ``TRITON_INTERPRET=1`` is set before the kernels are imported, which is slow and meant
  for tests).
- ``cpp``: the OpenMP kernels compiled into ``reactfast._C`` (CPU tensors only).
- ``sdpa``: a composition over torch's fused ``scaled_dot_product_attention`` (any device; the
  biased attention's CPU path).
- ``reference``: the pure-PyTorch implementations in ``reactfast.reference`` (any device).

Automatic choice: CUDA tensor -> cuda, triton, sdpa, reference; CPU tensor -> cpp, sdpa, reference
(restricted to the backends the op implements). Falling back from the preferred backend is
logged once per op. ``REACTFAST_BACKEND`` forces a choice, either for every op
(``REACTFAST_BACKEND=reference``) or per op (``REACTFAST_BACKEND=dtw:cpp,frame_diff:triton``);
a forced backend that the op lacks or that cannot run here raises ``RuntimeError``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import os
from typing import Dict, Optional, Sequence, Tuple

import torch

logger = logging.getLogger("reactfast")

BACKENDS = ("cuda", "triton", "cpp", "sdpa", "reference")
_AUTO_ORDER = {"cuda": ("cuda", "triton", "sdpa", "reference"), "cpu": ("cpp", "sdpa", "reference")}
_logged: set = set()
_requirements: dict = {}
_implemented: Dict[str, Tuple[str, ...]] = {}


def register_requirement(op: str, backend: str, status) -> None:
    """Make ``backend`` usable for ``op`` only where ``status()`` returns (True, _): for kernels that
    need more than the backend itself (an instruction set, say). ``status`` is called once."""
    _requirements[(op, backend)] = functools.lru_cache(maxsize=None)(status)


def log_fallback(op: str, backend: str, reason: str) -> None:
    """Log, once per (op, backend), that ``op`` does not use ``backend`` and why."""
    if (op, backend) not in _logged:
        _logged.add((op, backend))
        logger.warning("reactfast: %s falls back from %s: %s", op, backend, reason)


@functools.lru_cache(maxsize=None)
def _native_import() -> Tuple[object, str]:
    try:
        return importlib.import_module("reactfast._C"), "ok"
    except ImportError as exc:  # not built, or built for another Python/ABI
        return None, f"reactfast._C could not be imported: {exc}"


def native():
    """The compiled extension module ``reactfast._C``; raises if it is not importable."""
    module, reason = _native_import()
    if module is None:
        raise RuntimeError(reason)
    return module


@functools.lru_cache(maxsize=None)
def cpp_status() -> Tuple[bool, str]:
    module, reason = _native_import()
    return module is not None, reason


@functools.lru_cache(maxsize=None)
def cuda_status() -> Tuple[bool, str]:
    """Whether the CUDA kernels of ``reactfast._C`` can run here, and why not."""
    module, reason = _native_import()
    if module is None:
        return False, reason
    if not module.compiled_with_cuda:
        return False, "reactfast._C was built without CUDA kernels (REACTFAST_CUDA=OFF or nvcc not found)"
    ok, reason = module.cuda_status()
    return bool(ok), str(reason)


def triton_interpret() -> bool:
    """Whether the Triton kernels were imported for the interpreter (TRITON_INTERPRET=1 at import)."""
    from reactfast import kernels

    return kernels.INTERPRET


def triton_status(device_type: str = "cuda") -> Tuple[bool, str]:
    from reactfast import kernels

    if not kernels.AVAILABLE:
        return False, kernels.REASON
    if device_type == "cuda":
        if kernels.INTERPRET:
            return False, "the Triton kernels were imported for the interpreter (TRITON_INTERPRET=1): CPU tensors only"
        if not torch.cuda.is_available():
            return False, "torch sees no CUDA device"
        return True, "ok"
    if device_type == "cpu":
        if kernels.INTERPRET:
            return True, "ok (TRITON_INTERPRET=1, interpreter on CPU)"
        return False, "Triton runs CPU tensors only with TRITON_INTERPRET=1 set before reactfast is imported"
    return False, f"Triton does not run on device type {device_type!r}"


def cuda_stream(t: torch.Tensor) -> int:
    """The current CUDA stream of ``t``'s device as an int (0 for CPU tensors), for ``reactfast._C``."""
    return torch.cuda.current_stream(t.device).cuda_stream if t.is_cuda else 0


def device_guard(t: torch.Tensor):
    """A context in which ``t``'s CUDA device is the current one. Triton kernels, the native CUDA
    kernels and CUDA graph captures run on the current device, which need not be the tensors' (a
    model on cuda:1; torchrun processes whose device was never set): every launch of the package's
    own kernels is made under it. Nothing for CPU tensors or when the device is current already."""
    if t.is_cuda and t.device.index != torch.cuda.current_device():
        return torch.cuda.device(t.device)
    return contextlib.nullcontext()


_poison = os.environ.get("REACTFAST_POISON", "0") not in ("", "0")


_graph_safe = 0


@contextlib.contextmanager
def graph_safe():
    """Run ops as inside a CUDA graph capture, on any device: checks that would read tensor values
    on the host (a synchronisation, which a capture forbids) are skipped; out-of-range offsets are
    clamped on the device instead, as they always are for CUDA tensors. ``StreamRunner(graph=True)``
    captures under it; the tests run CPU steps under it to prove a step never reads back a value."""
    global _graph_safe
    _graph_safe += 1
    try:
        yield
    finally:
        _graph_safe -= 1


def host_checks_allowed(t: Optional[torch.Tensor] = None) -> bool:
    """Whether a check may read values of ``t`` on the host now: not for CUDA tensors, not while
    compiling, not under :func:`graph_safe`."""
    return not (_graph_safe or torch.compiler.is_compiling() or (t is not None and t.is_cuda))


def poison_outputs(enabled: bool) -> bool:
    """Fill every kernel output buffer with NaN (integers: -1) before the kernel writes it, so a test
    catches elements a kernel leaves unwritten. Returns the previous setting. Off by default
    (``REACTFAST_POISON=1`` turns it on at import)."""
    global _poison
    previous, _poison = _poison, bool(enabled)
    return previous


def empty(shape, dtype: torch.dtype, device) -> torch.Tensor:
    """An output buffer for a kernel to fill (poisoned when :func:`poison_outputs` is on)."""
    if not _poison:
        return torch.empty(shape, dtype=dtype, device=device)
    fill = float("nan") if dtype.is_floating_point else -1
    return torch.full(shape, fill, dtype=dtype, device=device)


def backend_status(backend: str, device_type: str, op: Optional[str] = None) -> Tuple[bool, str]:
    """(usable, reason) for ``backend`` on tensors of ``device_type`` (for ``op``, when given)."""
    if op is not None and (op, backend) in _requirements:
        ok, reason = _general_status(backend, device_type)
        return _requirements[(op, backend)]() if ok else (ok, reason)
    return _general_status(backend, device_type)


def _general_status(backend: str, device_type: str) -> Tuple[bool, str]:
    if backend in ("reference", "sdpa"):
        if device_type == "cuda" and not torch.cuda.is_available():
            return False, "torch sees no CUDA device"
        return True, "ok"
    if backend == "cpp":
        if device_type != "cpu":
            return False, f"the C++ backend runs CPU tensors, got a {device_type} tensor"
        return cpp_status()
    if backend == "cuda":
        if device_type != "cuda":
            return False, f"the CUDA backend runs CUDA tensors, got a {device_type} tensor"
        return cuda_status()
    if backend == "triton":
        return triton_status(device_type)
    raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")


def parse_spec(spec: Optional[str]) -> Tuple[Optional[str], Dict[str, str]]:
    """A backend spec as ``REACTFAST_BACKEND`` takes it: one name for every op (``"reference"``),
    names per op (``"dtw:cpp,biased_attention:triton"``), or both. Returns (default, {op: name}), a
    fresh dict each call."""
    if spec is not None and not isinstance(spec, str):
        raise TypeError(f"backend must be a backend name or a spec such as 'dtw:cpp,ccc:reference' (a string), got "
                        f"{type(spec).__name__}")
    default, per_op = _parse_spec(spec or "")
    return default, dict(per_op)


_parsed_specs: Dict[str, Tuple[Optional[str], Tuple[Tuple[str, str], ...]]] = {}


def _parse_spec(spec: str) -> Tuple[Optional[str], Tuple[Tuple[str, str], ...]]:
    """:func:`parse_spec`, cached by the spec string: every op call reads REACTFAST_BACKEND. A dict,
    not ``functools.lru_cache``: torch.compile traces the ops' calls here and warned of the cache
    wrapper it skips at every compiled model (``reactfast train --compile``)."""
    parsed = _parsed_specs.get(spec)
    if parsed is None:
        if len(_parsed_specs) >= 64:
            _parsed_specs.clear()
        parsed = _parsed_specs[spec] = _parse_spec_uncached(spec)
    return parsed


def _parse_spec_uncached(spec: str) -> Tuple[Optional[str], Tuple[Tuple[str, str], ...]]:
    default, per_op = None, {}
    for part in (spec or "").split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, value = part.partition(":")
        if sep:
            per_op[name.strip()] = _checked_name(value.strip())
        else:
            default = _checked_name(name)
    return default, tuple(per_op.items())


def _checked_name(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"backend spec names unknown backend {name!r}; expected one of {BACKENDS}")
    return name


def check_spec_ops(spec: Optional[str]) -> None:
    """Every op a spec names is a registered op family that implements the backend named for it."""
    _, per_op = parse_spec(spec)
    if per_op:
        import reactfast.ops  # noqa: F401 (the op families register their backends as they load)
    for op, name in per_op.items():
        if op not in _implemented:
            raise ValueError(f"backend spec names unknown op {op!r}; the ops: {', '.join(sorted(_implemented))}")
        if name not in _implemented[op]:
            raise ValueError(f"{op} has no {name!r} backend; its backends: {', '.join(_implemented[op])}")


def forced_backend(op: str) -> Optional[str]:
    """The backend ``REACTFAST_BACKEND`` forces for ``op``, or None."""
    default, per_op = _parse_spec(os.environ.get("REACTFAST_BACKEND", ""))
    return next((name for key, name in per_op if key == op), default)


def register_op(op: str, implemented: Sequence[str]) -> None:
    """Record the backends an op family implements (for :func:`for_op`)."""
    _implemented[op] = tuple(implemented)


def for_op(spec: Optional[str], op: str) -> Optional[str]:
    """The backend a caller's spec (``backend=`` of a model, a metric suite, the command line) asks of
    ``op``: its per-op name if the spec names one (a forced choice), else the spec's single name if
    ``op`` implements it, else None (automatic)."""
    if spec is None:
        return None
    default, per_op = parse_spec(spec)   # (its type checked there)
    if op in per_op:
        return per_op[op]
    return default if default in _implemented.get(op, BACKENDS) else None


def select(op: str, device: torch.device, implemented: Sequence[str], backend: Optional[str] = None) -> str:
    """Pick the backend for one call of ``op`` on tensors on ``device``.

    Args:
        op: the op family's stem (``"dtw"``, ``"frame_diff"`` ...).
        device: where the inputs live.
        implemented: backends this op has.
        backend: an explicit choice from the caller; overrides ``REACTFAST_BACKEND``.
    """
    device_type = torch.device(device).type
    chosen = backend if backend is not None else forced_backend(op)
    if chosen is not None:
        if not isinstance(chosen, str) or chosen not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {chosen!r}")
        if chosen not in implemented:
            raise RuntimeError(f"{op}: backend {chosen!r} was forced but {op} implements only {tuple(implemented)}")
        ok, reason = backend_status(chosen, device_type, op)
        if not ok:
            raise RuntimeError(f"{op}: backend {chosen!r} was forced but cannot run: {reason}")
        return chosen
    order = [b for b in _AUTO_ORDER.get(device_type, ("reference",)) if b in implemented]
    if not order:
        order = ["reference"]
    for i, name in enumerate(order):
        ok, reason = backend_status(name, device_type, op)
        if ok:
            return name
        if i == 0:
            log_fallback(op, name, f"on {device_type} tensors: {reason}")
    return "reference"


def needs_grad(*inputs: Optional[torch.Tensor]) -> bool:
    """Whether autograd would need a gradient from a call on ``inputs``: grad mode on and one of
    them requiring grad."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs)


def for_values(op: str, backend: Optional[str], *inputs: torch.Tensor) -> Optional[str]:
    """``backend`` for a call of a metric op, whose kernels compute values only (no backward): it
    raises where autograd would need a gradient (grad mode on and an input that requires grad) from
    anything but the reference named by the caller or ``REACTFAST_BACKEND``. A kernel's result
    carries no graph, so a loss term built on it would train silently without its gradient; the
    reference is differentiable, though not everywhere finite (a constant series makes CCC's and
    TLCC's gradients NaN), so it runs only when asked for."""
    if not needs_grad(*inputs):
        return backend
    chosen = backend if backend is not None else forced_backend(op)
    if chosen != "reference":
        raise RuntimeError(f"{op}: the inputs require grad, but its kernels compute values only (no backward): "
                           f"detach the inputs or call it under torch.no_grad() to evaluate, or pass "
                           f"backend='reference' to differentiate its reference")
    return backend


def check_forced(spec: Optional[str], ops: Optional[Sequence[str]], device) -> None:
    """Raise now, before any work, where a backend forced for one of ``ops`` (default: every op
    family) per op or by name in ``spec``, else by ``REACTFAST_BACKEND``, cannot run on ``device``:
    a pipeline of several ops (the metric suite, the demo's training, sampling and scoring) then
    fails before its first op, not after the finished work of the others. Ops left to the automatic
    choice are not checked (they fall back, as :func:`select` logs)."""
    if ops is None:
        import reactfast.ops  # noqa: F401 (the op families register their backends as they load)
        ops = sorted(_implemented)
    for op in ops:
        chosen = for_op(spec, op)
        if chosen is not None or forced_backend(op) is not None:
            select(op, device, _implemented[op], chosen)


def summary() -> dict:
    """What each backend can do here, for env reports and bug reports."""
    rows = {}
    for device_type in ("cpu", "cuda"):
        for name in BACKENDS:
            rows[f"{name}/{device_type}"] = backend_status(name, device_type)
    return rows


def resolve_device(spec: Optional[str] = "auto") -> torch.device:
    """The torch device a ``--device`` value names: ``auto`` (CUDA when available, under torchrun the
    process's ``LOCAL_RANK`` GPU), ``cpu``, ``cuda`` or ``cuda:N``; a clear error for one that is
    not available here."""
    spec = (spec or "auto").strip()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {spec!r}") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {spec!r}")
    if not torch.cuda.is_available():
        raise ValueError(f"device {spec!r} is not available: torch sees no CUDA device "
                         f"(torch {torch.__version__}, built with CUDA {torch.version.cuda})")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ValueError(f"device {spec!r} is not available: torch sees {count} CUDA device(s)")
    return torch.device("cuda", device.index if device.index is not None else torch.cuda.current_device())


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"
