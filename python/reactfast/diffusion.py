"""DDIM for the diffusion generators (PerFRDiff, ReactDiff): schedules, the training-noise helper,
timestep spacing, and a batched sampler over many windows and samples at once (SPEC 3.3).

PerFRDiff: ``DDIMScheduler(1000, "cosine", prediction="x0", clip=1.0)``, 50 steps leading, eta 0,
guidance 7.5. ReactDiff: ``DDIMScheduler(20, "cosine", prediction="eps", clip=1.0)``, 20 steps.
"""

from __future__ import annotations

import dataclasses
import math
import weakref
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch

from reactfast import _backend
from reactfast.ops._checks import check_backend, check_bool, check_choice, check_device, check_int, check_real
from reactfast.ops.ddim import IMPLEMENTED as DDIM_BACKENDS
from reactfast.ops.ddim import ddim_step
from reactfast.reference.ddim import PREDICTIONS

__all__ = ["DDIMScheduler", "Denoiser", "PREDICTIONS", "SAMPLE_AUTOCAST", "SCHEDULES", "SPACINGS", "SamplerGraph",
           "SamplerGraphs", "autocast_denoiser", "autocast_dtype", "betas_for", "capture_cuda_graph", "clear_graphs",
           "sample"]

SCHEDULES = ("linear", "cosine")
SPACINGS = ("leading", "trailing")


def betas_for(schedule: str, num_train_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02,
              cosine_s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """float64 betas: linear in [beta_start, beta_end], or cosine (Nichol & Dhariwal) clipped at max_beta."""
    check_int("num_train_steps", num_train_steps)
    check_choice("schedule", schedule, SCHEDULES)
    for name, value in (("beta_start", beta_start), ("beta_end", beta_end), ("cosine_s", cosine_s),
                        ("max_beta", max_beta)):
        check_real(name, value, minimum=None)   # a number: the ranges below name the schedule's rule
    if schedule == "linear" and not 0.0 < beta_start <= beta_end < 1.0:
        # A beta outside (0, 1) gives alpha_bar outside (0, 1]: NaN samples from the first step.
        raise ValueError(f"the linear schedule needs 0 < beta_start <= beta_end < 1, got beta_start {beta_start} "
                         f"and beta_end {beta_end}")
    if schedule == "cosine" and not (cosine_s >= 0.0 and 0.0 < max_beta < 1.0):
        raise ValueError(f"the cosine schedule needs cosine_s >= 0 and max_beta in (0, 1), got {cosine_s} and "
                         f"{max_beta}")
    if schedule == "linear":
        return torch.linspace(beta_start, beta_end, num_train_steps, dtype=torch.float64)

    def f(t):   # the cosine schedule's alpha_bar
        return math.cos((t / num_train_steps + cosine_s) / (1 + cosine_s) * math.pi / 2) ** 2
    return torch.tensor([min(1 - f(i + 1) / f(i), max_beta) for i in range(num_train_steps)], dtype=torch.float64)


class DDIMScheduler:
    """Noise schedule and DDIM update.

    Args:
        num_train_steps: diffusion steps T used in training.
        schedule: ``"linear"`` or ``"cosine"``.
        prediction: what the denoiser predicts: ``"eps"``, ``"x0"`` or ``"v"``.
        spacing: sampling timesteps ``"leading"`` (0, r, 2r, ... reversed) or ``"trailing"``
            (T - 1, T - 1 - r, ...), r = T // steps.
        eta: DDIM stochasticity (0 = deterministic).
        clip: clamp predicted x0 to [-clip, clip]; None disables.
        final_alpha_one: the last step's alpha_bar_prev is 1 (True) or alpha_bar[0] (False).
        eps_from_clipped: re-derive eps from the clamped x0 instead of the model output.
    """

    def __init__(self, num_train_steps: int = 1000, schedule: str = "cosine", prediction: str = "eps",
                 spacing: str = "leading", eta: float = 0.0, clip: Optional[float] = 1.0,
                 final_alpha_one: bool = True, eps_from_clipped: bool = False, beta_start: float = 1e-4,
                 beta_end: float = 0.02, cosine_s: float = 0.008):
        check_int("num_train_steps", num_train_steps)
        check_choice("prediction", prediction, PREDICTIONS)
        check_choice("spacing", spacing, SPACINGS)
        check_bool("final_alpha_one", final_alpha_one)
        check_bool("eps_from_clipped", eps_from_clipped)
        check_real("eta", eta)
        # A negative clip made clamp's bounds cross (every x0 became clip itself); a NaN one made x0 NaN.
        check_real("clip", clip, strict=True, none_ok=True)
        self.num_train_steps, self.schedule, self.prediction = num_train_steps, schedule, prediction
        self.spacing, self.eta, self.clip = spacing, float(eta), clip
        self.final_alpha_one, self.eps_from_clipped = final_alpha_one, eps_from_clipped
        self.betas = betas_for(schedule, num_train_steps, beta_start, beta_end, cosine_s)
        self.alphas_cumprod = torch.cumprod(1.0 - self.betas, 0)
        self.final_alpha = 1.0 if final_alpha_one else float(self.alphas_cumprod[0])

    def _check_t(self, t: torch.Tensor, name: str = "t") -> torch.Tensor:
        if not isinstance(t, torch.Tensor):
            t = torch.as_tensor(t)
        if t.is_floating_point():
            raise TypeError(f"{name} must hold integer timesteps, got dtype {t.dtype}")
        # The range is read back only where the host may (not for CUDA tensors: a training step
        # stays free of synchronisations; a bad timestep there fails the device's index check).
        if t.numel() and _backend.host_checks_allowed(t) and (int(t.min()) < 0 or int(t.max()) >= self.num_train_steps):
            raise ValueError(f"{name} must lie in [0, {self.num_train_steps}), got [{int(t.min())}, {int(t.max())}]")
        return t.long()

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) noise, t per sample (B,)."""
        if noise.shape != x0.shape:
            raise ValueError(f"noise must have x0's shape {tuple(x0.shape)}, got {tuple(noise.shape)}")
        t = self._check_t(t).to(x0.device)
        if t.dim() != 1 or t.numel() != x0.shape[0]:
            raise ValueError(f"t must hold one timestep per sample ({x0.shape[0]}), got shape {tuple(t.shape)}")
        ab = self.alphas_cumprod.to(x0.device)[t].reshape((-1,) + (1,) * (x0.dim() - 1))
        return (ab.sqrt() * x0.double() + (1 - ab).sqrt() * noise.double()).to(x0.dtype)

    def config_key(self) -> tuple:
        """What determines the sampling loop, hashable (the key of a captured loop)."""
        return (self.num_train_steps, self.schedule, self.prediction, self.spacing, self.eta, self.clip,
                self.final_alpha_one, self.eps_from_clipped, tuple(self.betas.tolist()))

    def timesteps(self, steps: int) -> torch.Tensor:
        """The sampling timesteps, descending (leading, 1000 train steps, 50 steps: 980, 960, ..., 0)."""
        if not isinstance(steps, int) or not 1 <= steps <= self.num_train_steps:
            raise ValueError(f"steps must be an int in [1, {self.num_train_steps}], got {steps!r}")
        ratio = self.num_train_steps // steps
        if self.spacing == "leading":
            ts = torch.arange(steps, dtype=torch.int64) * ratio
            return ts.flip(0)
        return torch.round(torch.arange(self.num_train_steps, 0, -self.num_train_steps / steps,
                                        dtype=torch.float64)).long() - 1

    def previous(self, t: torch.Tensor, steps: int) -> torch.Tensor:
        """t_prev = t - T // steps (negative: the final step)."""
        return t - self.num_train_steps // steps

    def step_coefficients(self, t: torch.Tensor, t_prev: torch.Tensor, eta: Optional[float] = None) -> torch.Tensor:
        """(B, 5) float32 per-sample coefficients of the DDIM update; t_prev < 0 marks the final step."""
        t = self._check_t(t)
        if t_prev.shape != t.shape:
            raise ValueError(f"t_prev must have t's shape {tuple(t.shape)}, got {tuple(t_prev.shape)}")
        # Read back only where the host may, as _check_t (DDIMScheduler.step on CUDA tensors, or
        # under a capture, reads nothing).
        if _backend.host_checks_allowed(t) and bool((t_prev >= t).any()):
            raise ValueError("t_prev must be smaller than t for every sample")
        eta = self.eta if eta is None else eta
        ac = self.alphas_cumprod.to(t.device)
        ab_t = ac[t]
        ab_prev = torch.where(t_prev >= 0, ac[t_prev.clamp(min=0)], torch.full_like(ab_t, self.final_alpha))
        sigma = eta * torch.sqrt((1 - ab_prev) / (1 - ab_t)) * torch.sqrt(1 - ab_t / ab_prev)
        c_dir = torch.sqrt(torch.clamp(1 - ab_prev - sigma ** 2, min=0.0))
        return torch.stack([ab_t.sqrt(), (1 - ab_t).sqrt(), ab_prev.sqrt(), c_dir, sigma], 1).float()

    def step(self, model_output: torch.Tensor, t: torch.Tensor, x_t: torch.Tensor, t_prev: torch.Tensor,
             uncond_output: Optional[torch.Tensor] = None, guidance_scale: float = 1.0,
             noise: Optional[torch.Tensor] = None, backend: Optional[str] = None):
        """(x_prev, x0) for samples at per-sample timesteps t -> t_prev (fused kernel on CUDA)."""
        coef = self.step_coefficients(t.to(x_t.device), t_prev.to(x_t.device))
        if self.eta > 0 and noise is None:
            raise ValueError("eta > 0 needs noise")
        return ddim_step(x_t, model_output, coef, self.prediction, uncond_output, guidance_scale,
                         noise if self.eta > 0 else None, self.clip, self.eps_from_clipped, backend)


Denoiser = Callable[[torch.Tensor, torch.Tensor, Optional[torch.Tensor]], torch.Tensor]

# The denoiser's precision while sampling: "auto" is bf16 autocast on CUDA (tensor cores) and none
# elsewhere; "off" none; "bfloat16" / "float16" autocast on any device. The DDIM steps stay in the
# sampler's dtype.
SAMPLE_AUTOCAST = ("auto", "off", "bfloat16", "float16")


def autocast_dtype(mode: str, device) -> Optional[torch.dtype]:
    """The autocast dtype that ``mode`` (one of SAMPLE_AUTOCAST) gives on ``device``, or None."""
    if mode not in SAMPLE_AUTOCAST:
        raise ValueError(f"sample_autocast must be one of {SAMPLE_AUTOCAST}, got {mode!r}")
    if mode == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else None
    return None if mode == "off" else getattr(torch, mode)


def autocast_denoiser(denoiser: Denoiser, mode: str, device) -> Denoiser:
    """``denoiser`` run under autocast as ``mode`` says on ``device``, its output returned in the
    dtype of x_t (the DDIM arithmetic stays in the sampler's precision); its ``reset`` kept."""
    dtype = autocast_dtype(mode, device)
    if dtype is None:
        return denoiser
    device_type = torch.device(device).type

    def run(x, t, cond):
        with torch.autocast(device_type, dtype=dtype):
            out = denoiser(x, t, cond)
        return out.to(x.dtype)

    if hasattr(denoiser, "reset"):
        run.reset = denoiser.reset
    return run


def _check_shape(shape) -> tuple:
    if isinstance(shape, torch.Size):
        shape = tuple(shape)
    if (not isinstance(shape, (tuple, list)) or not shape
            or any(not isinstance(s, (int, np.integer)) or isinstance(s, bool) or s < 1 for s in shape)):
        raise ValueError(f"shape must be a non-empty tuple of positive ints, got {shape!r}")
    return tuple(int(s) for s in shape)


def _expand_null_cond(null_cond: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """``null_cond`` broadcast to ``cond``'s shape, or a ValueError naming it."""
    try:
        return null_cond.expand_as(cond)
    except RuntimeError:
        raise ValueError(f"null_cond must broadcast to cond's shape {tuple(cond.shape)}, got "
                         f"{tuple(null_cond.shape)}") from None


def _draw_noise(shape, steps: int, scheduler: "DDIMScheduler", generator, device, dtype, noise=None):
    """(x_T, per-step eta noises or None), drawn as every sampling path draws them."""
    noise_device = generator.device if generator is not None else device
    if noise is not None:
        if tuple(noise.shape) != tuple(shape):
            raise ValueError(f"noise must have shape {tuple(shape)}, got {tuple(noise.shape)}")
        x = noise.to(device=device, dtype=dtype)
    else:
        x = torch.randn(tuple(shape), generator=generator, dtype=dtype, device=noise_device).to(device)
    noises = None
    if scheduler.eta > 0:
        noises = torch.randn((steps,) + tuple(shape), generator=generator, dtype=dtype,
                             device=noise_device).to(device)
    return x, noises


def _loop(denoiser: Denoiser, scheduler: "DDIMScheduler", steps: int, B: int, guided: bool, scale: float,
          backend: Optional[str], device):
    """run(x_T, cond (B, ...) or [cond, null_cond] (2B, ...) when guided, eta noises) -> x0.

    Every step's timesteps and coefficients are validated and computed here, once: ``run`` does no
    host synchronisation and allocates nothing that depends on values, so it can be captured in a
    CUDA graph."""
    ts = scheduler.timesteps(steps)
    t_prev = scheduler.previous(ts, steps)
    coefs = scheduler.step_coefficients(ts, t_prev)[:, None].expand(len(ts), B, 5).contiguous().to(device)
    t_rows = ts[:, None].expand(len(ts), B).contiguous().to(device)
    t_both = torch.cat([t_rows, t_rows], 1) if guided else t_rows
    eps_noise = scheduler.eta > 0

    def one_step(i: int, x: torch.Tensor, cond, noises) -> torch.Tensor:
        if guided:
            out = denoiser(torch.cat([x, x]), t_both[i], cond)
            out_c, out_u = out[:B], out[B:]
        else:
            out_c, out_u = denoiser(x, t_rows[i], cond), None
        return ddim_step(x, out_c, coefs[i], scheduler.prediction, out_u, scale,
                         noises[i] if eps_noise else None, scheduler.clip, scheduler.eps_from_clipped, backend)[0]

    def run(x: torch.Tensor, cond, noises, order=None) -> torch.Tensor:
        for i in (range(len(ts)) if order is None else order):
            x = one_step(i, x, cond, noises)
        return x

    run.steps = len(ts)
    return run


def capture_cuda_graph(fn: Callable[[], torch.Tensor], device) -> tuple:
    """(replay, out): ``fn`` run once on a side stream (allocations, Triton autotuning), then
    captured on a CUDA graph whose replay rewrites ``out`` from the same input buffers. ``device``
    is made the current device for the capture and each replay (a capture records the current
    device's stream; a model on cuda:1 would otherwise be captured on nothing).

    ``replay`` holds ``fn``, and with it every tensor ``fn`` reads that was made before the capture
    (a sampling loop's timesteps and coefficients): the graph reads their memory at each replay, and
    freed, that memory goes to the next allocation (on an H100 the replays then returned NaN or wrong
    samples)."""
    device = torch.device(device)
    with torch.cuda.device(device):
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            fn()
        torch.cuda.current_stream(device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = fn()

    def replay():
        with torch.cuda.device(device):
            graph.replay()

    replay.recorded = fn
    return replay, out


class SamplerGraph:
    """A DDIM sampling loop (every step of a batch, guidance, eta noise) captured once on a CUDA
    graph and replayed for new initial noise and conditions: one launch per call instead of several
    per step, and no Python in the loop.

    Args:
        denoiser: ``denoiser(x_t, t, cond) -> output``, graph-capturable (no host synchronisation,
            no shapes that depend on values). Its parameters are read where they are at capture:
            update them in place (an optimiser does), never replace them. A denoiser that keeps
            values across the steps of one run (a condition cache) has a ``reset()`` method,
            called at the start of each recorded run so the graph recomputes them.
        shape: (B, ...) of the samples.
        cond: an example condition (B, ...) fixing its shape and dtype, or None for none.
        scheduler, steps, guidance_scale, dtype, backend: as :func:`sample`.
        device: a CUDA device.
        capture: how the loop is recorded (default :func:`capture_cuda_graph`): a function
            ``capture(fn, device) -> (replay, out)``. The tests pass one that re-runs ``fn`` on
            replay, to check on a CPU that the loop reads only the graph's input buffers.

    ``graph(cond, noise=None, generator=None, null_cond=None)`` returns x0 like :func:`sample`
    with the same arguments (a new tensor each call).
    """

    def __init__(self, denoiser: Denoiser, shape: Sequence[int], cond: Optional[torch.Tensor] = None,
                 scheduler: Optional[DDIMScheduler] = None, steps: int = 50, guidance_scale: Optional[float] = None,
                 device: Union[str, torch.device] = "cuda", dtype: torch.dtype = torch.float32,
                 backend: Optional[str] = None, capture: Optional[Callable] = None):
        self.shape = _check_shape(shape)
        self.scheduler = scheduler or DDIMScheduler()
        self.device = torch.device(device)
        if capture is None and self.device.type != "cuda":
            raise ValueError(f"device: a CUDA graph needs a CUDA device, got {self.device}")
        if guidance_scale is not None and cond is None:
            raise ValueError("classifier-free guidance needs a cond")
        if cond is not None and cond.shape[0] != self.shape[0]:
            raise ValueError(f"cond must have batch size {self.shape[0]}, got shape {tuple(cond.shape)}")
        self.steps, self.guidance_scale, self.dtype = steps, guidance_scale, dtype
        self.cond_shape = None if cond is None else tuple(cond.shape)
        self.cond_dtype = None if cond is None else cond.dtype
        B = self.shape[0]
        guided = guidance_scale is not None
        run = _loop(denoiser, self.scheduler, steps, B, guided, guidance_scale or 1.0, backend, self.device)
        # The graph's input buffers: x_T, the condition (with the null condition behind it when
        # guided) and the eta noises.
        self._x = torch.zeros(self.shape, dtype=dtype, device=self.device)
        self._cond = None
        if cond is not None:
            rows = (2 * B if guided else B,) + self.cond_shape[1:]
            self._cond = torch.zeros(rows, dtype=cond.dtype, device=self.device)
        self._noises = None
        if self.scheduler.eta > 0:
            self._noises = torch.zeros((run.steps,) + self.shape, dtype=dtype, device=self.device)
        reset = getattr(denoiser, "reset", None)

        def record():
            if reset is not None:  # per-run values (a condition cache) recomputed inside the run
                reset()
            return run(self._x, self._cond, self._noises)

        # The loop's timestep and coefficient tensors live as long as the graph that reads them.
        self._record = record
        self._replay, self._out = (capture or capture_cuda_graph)(record, self.device)

    @torch.no_grad()
    def __call__(self, cond: Optional[torch.Tensor] = None, noise: Optional[torch.Tensor] = None,
                 generator: Optional[torch.Generator] = None,
                 null_cond: Optional[torch.Tensor] = None) -> torch.Tensor:
        if (cond is None) != (self.cond_shape is None) or (cond is not None and tuple(cond.shape) != self.cond_shape):
            raise ValueError(f"cond must have the captured shape {self.cond_shape}, got "
                             f"{None if cond is None else tuple(cond.shape)}")
        x, noises = _draw_noise(self.shape, self.steps, self.scheduler, generator, self.device, self.dtype, noise)
        self._x.copy_(x)
        if cond is not None:
            B = self.shape[0]
            self._cond[:B].copy_(cond)
            if self.guidance_scale is not None:
                if null_cond is None:
                    self._cond[B:].zero_()
                else:
                    self._cond[B:].copy_(_expand_null_cond(null_cond, cond))
        if noises is not None:
            self._noises.copy_(noises)
        self._replay()
        return self._out.clone()


def clone_tree(value):
    """A copy of a nest of tensors in dicts, tuples, lists and dataclasses (other leaves shared):
    the input or output buffers of a captured graph."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: clone_tree(getattr(value, f.name))
                                             for f in dataclasses.fields(value) if f.init})
    if isinstance(value, dict):
        return {k: clone_tree(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(clone_tree(v) for v in value)
    return value


def copy_tree(dst, src) -> None:
    """Copy the tensors of ``src`` into the same-shaped nest ``dst`` (see :func:`clone_tree`)."""
    if isinstance(dst, torch.Tensor):
        dst.copy_(src)
    elif dataclasses.is_dataclass(dst) and not isinstance(dst, type):
        for f in dataclasses.fields(dst):
            copy_tree(getattr(dst, f.name), getattr(src, f.name))
    elif isinstance(dst, dict):
        for k in dst:
            copy_tree(dst[k], src[k])
    elif isinstance(dst, (tuple, list)):
        for d, v in zip(dst, src):
            copy_tree(d, v)


def tree_signature(value):
    """The shapes, dtypes and devices of the tensors in a nest of dicts, tuples, lists and
    dataclasses, as :func:`clone_tree` walks it (a hashable cache key)."""
    if isinstance(value, torch.Tensor):
        return (tuple(value.shape), value.dtype, str(value.device))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value).__qualname__,) + tuple((f.name, tree_signature(getattr(value, f.name)))
                                                   for f in dataclasses.fields(value))
    if isinstance(value, dict):
        return tuple((k, tree_signature(v)) for k, v in sorted(value.items()))
    if isinstance(value, (tuple, list)):
        return tuple(tree_signature(v) for v in value)
    return value


class SamplerGraphs:
    """A generator's captured sampling loops, one per shape and settings (the key its caller
    builds), each with buffers for the extra tensors its denoiser reads (PerFRDiff's per-listener
    shifts), copied in before every replay. Dropped, not copied, when the model is copied or
    pickled (a CUDA graph belongs to its process and its parameters' memory)."""

    def __init__(self):
        self._graphs = {}

    def __reduce__(self):
        return (SamplerGraphs, ())

    def __len__(self) -> int:
        return len(self._graphs)

    def clear(self) -> None:
        self._graphs.clear()

    def sample(self, key, make_denoiser: Callable[[object], Denoiser], extra, shape, cond, scheduler, steps: int,
               noise: torch.Tensor, dtype: torch.dtype, backend: Optional[str], capture=None) -> torch.Tensor:
        """x0 for ``noise`` and ``cond`` from the loop captured for ``key`` (captured now when new,
        with ``make_denoiser(buffers of extra)``)."""
        key = (key, tree_signature(extra))
        entry = self._graphs.get(key)
        if entry is None:
            buffers = clone_tree(extra)
            graph = SamplerGraph(make_denoiser(buffers), shape, cond, scheduler, steps, None, noise.device, dtype,
                                 backend, capture)
            entry = self._graphs[key] = (graph, buffers)
        graph, buffers = entry
        copy_tree(buffers, extra)
        return graph(cond, noise=noise)


# Captured sampling loops of sample(cuda_graph=True), per denoiser (dropped with it) and per
# shape and settings.
_GRAPHS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def clear_graphs() -> None:
    """Free every sampling loop that ``sample(..., cuda_graph=True)`` captured and kept."""
    _GRAPHS.clear()


def _cached_graph(denoiser, key, make) -> SamplerGraph:
    try:
        graphs = _GRAPHS.setdefault(denoiser, {})
    except TypeError:  # a denoiser that cannot be weakly referenced: captured for this call only
        return make()
    if key not in graphs:
        graphs[key] = make()
    return graphs[key]


@torch.no_grad()
def sample(denoiser: Denoiser, shape: Sequence[int], cond: Optional[torch.Tensor] = None,
           scheduler: Optional[DDIMScheduler] = None, steps: int = 50, guidance_scale: Optional[float] = None,
           null_cond: Optional[torch.Tensor] = None, generator: Optional[torch.Generator] = None,
           device: Union[str, torch.device, None] = None, dtype: torch.dtype = torch.float32,
           progress: bool = False, cuda_graph: bool = False, backend: Optional[str] = None,
           noise: Optional[torch.Tensor] = None) -> torch.Tensor:
    """DDIM sampling of a whole batch (all samples x windows at once).

    Args:
        denoiser: ``denoiser(x_t, t, cond) -> output`` with t a (B,) long tensor.
        shape: (B, ...) of the samples.
        cond: condition batch (B, ...) or None.
        scheduler: the DDIMScheduler (default: cosine, 1000 train steps, eps prediction).
        steps: sampling steps.
        guidance_scale: classifier-free guidance scale; the denoiser then runs once on the
            concatenated [cond, null_cond] batch per step. ``null_cond`` defaults to zeros.
        generator: makes the initial noise (and eta noise) deterministic.
        progress: tqdm progress bar.
        cuda_graph: run the loop on a CUDA graph (CUDA only; the denoiser must be graph-capturable).
            The first call for a denoiser object, shape and settings captures a
            :class:`SamplerGraph` and keeps it; later calls with the same denoiser object replay
            it (pass the same object, not a new closure each call; ``clear_graphs()`` frees them).
        noise: the initial x_T of shape ``shape`` (default: drawn from ``generator``).

    Returns:
        x0 of shape ``shape``.
    """
    if not callable(denoiser):
        raise TypeError(f"denoiser must be callable as denoiser(x_t, t, cond), got {type(denoiser).__name__}")
    if scheduler is not None and not isinstance(scheduler, DDIMScheduler):
        raise TypeError(f"scheduler must be a DDIMScheduler or None, got {type(scheduler).__name__}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    check_bool("progress", progress)
    check_bool("cuda_graph", cuda_graph)   # "no" asked for a graph before
    # Checked before the first denoiser call (a bad scale or backend failed in the first DDIM step).
    guidance_scale = check_real("guidance_scale", guidance_scale, minimum=None, none_ok=True)
    check_backend(backend, DDIM_BACKENDS)
    for name, t in (("cond", cond), ("null_cond", null_cond), ("noise", noise)):
        if t is not None and not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor or None, got {type(t).__name__}")
    scheduler = scheduler or DDIMScheduler()
    shape = _check_shape(shape)
    if device is not None:
        device = check_device("device", device)
    device = device if device is not None else (cond.device if cond is not None else torch.device("cpu"))
    if cond is not None and cond.shape[0] != shape[0]:
        raise ValueError(f"cond must have batch size {shape[0]}, got shape {tuple(cond.shape)}")
    guided = guidance_scale is not None
    if guided and cond is None:
        raise ValueError("classifier-free guidance needs a cond")
    if guided and null_cond is not None:
        null_cond = _expand_null_cond(null_cond, cond)   # named here, before the first denoiser call
    if cuda_graph:
        if device.type != "cuda":
            raise ValueError("cuda_graph=True needs CUDA tensors")
        key = (shape, None if cond is None else (tuple(cond.shape), cond.dtype), scheduler.config_key(), steps,
               guidance_scale, str(device), dtype, backend)
        graph = _cached_graph(denoiser, key, lambda: SamplerGraph(denoiser, shape, cond, scheduler, steps,
                                                                  guidance_scale, device, dtype, backend))
        return graph(cond, noise, generator, null_cond)
    if guided:
        null_cond = torch.zeros_like(cond) if null_cond is None else null_cond
    x, noises = _draw_noise(shape, steps, scheduler, generator, device, dtype, noise)
    run = _loop(denoiser, scheduler, steps, shape[0], guided, guidance_scale or 1.0, backend, device)
    order = None
    if progress:
        from tqdm.auto import tqdm

        order = tqdm(range(run.steps), desc="DDIM", leave=False, disable=None)
    return run(x, torch.cat([cond, null_cond]) if guided else cond, noises, order)
