"""Argument validation shared by the public ops: errors name the argument."""

from __future__ import annotations

import math
import numbers
import os
from typing import Optional, Sequence

import numpy as np
import torch


def check_int(name: str, value, minimum: int = 1) -> int:
    """``value`` as an int if it is an integer (a Python or numpy one, not a bool) >= ``minimum``,
    else a ValueError naming ``name``."""
    if not isinstance(value, numbers.Integral) or isinstance(value, (bool, np.bool_)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def check_seed(name: str, value) -> int:
    """A random seed: an int in [0, 2**32), the range numpy and torch both take."""
    if not isinstance(value, numbers.Integral) or isinstance(value, (bool, np.bool_)) or not 0 <= value < 2 ** 32:
        raise ValueError(f"{name} must be an int in [0, 2**32), got {value!r}")
    return int(value)


def check_path(name: str, value, must: str) -> str:
    """``value`` as a str if it is a path (a str or os.PathLike), else a TypeError: "``name`` must
    ``must`` (a str or os.PathLike)". An int reached os.path functions as a file descriptor, other
    values their "expected str, bytes or os.PathLike object"."""
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must {must} (a str or os.PathLike), got {type(value).__name__}")
    return os.fspath(value)


def check_indices(name: str, values, n: int) -> np.ndarray:
    """Indices into n rows as an int64 array in the order given: integers in [0, n), else a
    ValueError naming ``name`` (a float was cut to an integer, -1 took the last row)."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ValueError(f"{name} must be a list of integer row indices, got {values!r:.80}")
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    given = np.asarray(list(values) if not isinstance(values, np.ndarray) else values)
    if given.ndim != 1 or (given.size and given.dtype.kind not in "iu") or given.dtype == np.bool_:
        raise ValueError(f"{name} must be a list of integer row indices, got {values!r:.80}")
    bad = given[(given < 0) | (given >= n)]
    if bad.size:
        raise ValueError(f"{name} must lie in [0, {n}), got {bad[:5].tolist()}")
    return given.astype(np.int64)


def check_bool(name: str, value) -> bool:
    """``value`` as a bool if it is one (Python's or numpy's), else a ValueError naming ``name``: a
    string such as "no" or "False" would otherwise count as true."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be a bool, got {value!r}")
    return bool(value)


def check_choice(name: str, value, choices: Sequence[str]) -> str:
    """``value`` if it is one of the strings ``choices``, else a ValueError naming ``name`` (an array
    or tensor tested with ``in`` raised numpy's or torch's "truth value ... ambiguous" instead)."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def check_device(name: str, value) -> torch.device:
    """``value`` as a torch.device (a str such as "cuda:1", or a device), else a ValueError naming
    ``name`` (torch's own errors, such as "Device index must not be negative", name nothing)."""
    try:
        return torch.device(value)
    except (RuntimeError, TypeError):
        raise ValueError(f"{name} must be a torch device (cpu, cuda, cuda:N), got {value!r}") from None


def check_real(name: str, value, minimum: Optional[float] = 0.0, strict: bool = False, none_ok: bool = False):
    """``value`` as a float if it is a finite real number (not a bool) >= ``minimum`` (> with
    ``strict``; any finite number with ``minimum=None``), None with ``none_ok``; else a ValueError
    naming ``name`` (NaN passes a check written ``value < 0``)."""
    if value is None and none_ok:
        return None
    ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and math.isfinite(value)
    if ok and minimum is not None:
        ok = value > minimum if strict else value >= minimum
    if not ok:
        bound = "" if minimum is None else f" {'>' if strict else '>='} {minimum:g}"
        raise ValueError(f"{name} must be {'None or ' if none_ok else ''}a finite number{bound}, got {value!r}")
    return float(value)


def check_tensor(name: str, x, ndim: Optional[int] = None, dtypes: Optional[Sequence[torch.dtype]] = None,
                 finite: bool = False, nonempty: bool = True) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if ndim is not None and x.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    if dtypes is not None and x.dtype not in dtypes:
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"{name} must have dtype in ({names}), got {str(x.dtype).replace('torch.', '')}")
    if nonempty and x.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}")
    if finite and x.is_floating_point() and x.numel() and not torch.compiler.is_compiling() and not all_finite(x):
        raise ValueError(f"{name} contains NaN or Inf")
    return x


def all_finite(x: torch.Tensor) -> bool:
    """Whether a non-empty floating-point tensor holds no NaN or Inf, from one reduction with no
    temporary of x's size (``isfinite(x).all()`` makes a bool copy: 12-20 ms against 0.9 ms on 9 M
    floats, 2 CPU cores): aminmax propagates NaN, and an Inf is one of the extremes."""
    return bool(torch.isfinite(torch.stack(torch.aminmax(x))).all())


def check_backend(backend, implemented: Sequence[str]) -> Optional[str]:
    """An op's ``backend`` argument: None or one of ``implemented`` (an array tested with ``in``
    raised "truth value ... ambiguous" instead)."""
    if backend is not None and (not isinstance(backend, str) or backend not in implemented):
        raise ValueError(f"backend must be one of {tuple(implemented)} or None, got {backend!r}")
    return backend


def check_dropout_args(x, p, seed, backend: Optional[str], implemented: Sequence[str], training=True,
                       p_name: str = "p", seed_name: str = "seed") -> torch.Tensor:
    """The arguments the dropout-bearing ops (dropout, add_layer_norm, gelu_dropout, feed_forward)
    share: x a floating-point tensor of fewer than 2^32 elements (the mask hashes 32-bit element
    indices), p a probability, seed None or an int, backend None or one of ``implemented``,
    training a bool (``p_name`` and ``seed_name``: the names the caller gives them)."""
    check_bool("training", training)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got "
                        f"{x.dtype if isinstance(x, torch.Tensor) else type(x).__name__}")
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise ValueError(f"{p_name} must be a probability in [0, 1], got {p!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"{seed_name} must be an int, got {type(seed).__name__}")
    check_backend(backend, implemented)
    if x.numel() >= 2 ** 32:
        raise ValueError(f"x must have fewer than 2^32 elements, got {x.numel()}")
    return x


def check_same_device(**tensors: torch.Tensor) -> torch.device:
    devices = {name: t.device for name, t in tensors.items()}
    first = next(iter(devices.values()))
    for name, dev in devices.items():
        if dev != first:
            desc = ", ".join(f"{n} on {d}" for n, d in devices.items())
            raise ValueError(f"{name} must be on the same device as the other inputs ({desc})")
    return first


def check_candidates(name: str, candidates, num_queries: int, num_targets: int):
    """A CSR candidate list: (offset (M + 1,), index (K,)) int64 tensors; query m's candidates are
    index[offset[m]:offset[m + 1]], each in [0, num_targets), at least one per query."""
    if not (isinstance(candidates, (tuple, list)) and len(candidates) == 2
            and all(isinstance(c, torch.Tensor) for c in candidates)):
        raise TypeError(f"{name} must be a CSR pair (offset, index) of int64 tensors; "
                        "reactfast.metrics.candidates.from_lists builds one from index lists")
    offset, index = candidates
    for part, t in (("offset", offset), ("index", index)):
        if t.dtype != torch.int64 or t.dim() != 1:
            raise TypeError(f"{name}: {part} must be a 1-d int64 tensor, got {t.dtype} of shape {tuple(t.shape)}")
    if offset.numel() != num_queries + 1:
        raise ValueError(f"{name} must describe {num_queries} queries (offset of {num_queries + 1}), "
                         f"got offset of {offset.numel()}")
    counts = offset[1:] - offset[:-1]
    if int(offset[0]) != 0 or int(offset[-1]) != index.numel() or bool((counts < 0).any()):
        raise ValueError(f"{name}: offset must rise from 0 to len(index) ({index.numel()})")
    if bool((counts == 0).any()):
        empty = torch.nonzero(counts == 0)[:10, 0].tolist()
        raise ValueError(f"{name}: queries {empty} have no candidate")
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= num_targets):
        raise ValueError(f"{name}: indices must lie in [0, {num_targets}), got range "
                         f"[{int(index.min())}, {int(index.max())}]")
    return offset.contiguous(), index.contiguous()


def check_precision(precision) -> str:
    """The ``precision`` argument of the ops with matrix products on the Triton path."""
    from reactfast.kernels import PRECISIONS

    return check_choice("precision", precision, PRECISIONS)


def autocast_enabled(device_type: str) -> bool:
    """Whether autocast is on for ``device_type``; False for device types autocast does not know (the
    meta device, on which the tests trace the models for device mismatches), where torch's query raises.
    A set, not ``torch.amp.is_autocast_available``: torch.compile (torch 2.11) cannot trace that."""
    return device_type in _AUTOCAST_DEVICE_TYPES and torch.is_autocast_enabled(device_type)


# The device types torch's autocast knows (torch.amp.is_autocast_available answers True for these).
_AUTOCAST_DEVICE_TYPES = frozenset({"cpu", "cuda", "xpu", "mps", "hpu", "xla", "ipu", "mtia", "maia",
                                    "privateuseone"})


def autocast_inputs(device_type: str, *tensors):
    """``tensors`` cast to the autocast dtype when autocast is on for ``device_type`` (floating tensors
    only; None and others as given), as autocast casts a matmul's inputs: the custom ops are opaque
    to autocast, so their public wrappers call this."""
    if not autocast_enabled(device_type):
        return tensors
    dtype = torch.get_autocast_dtype(device_type)
    return tuple(t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t for t in tensors)
