"""DDIM for the diffusion generators (PerFRDiff, ReactDiff): schedules, the training-noise helper,
timestep spacing, and a batched sampler over many windows and samples at once (SPEC 3.3).

PerFRDiff: ``DDIMScheduler(1000, "cosine", prediction="x0", clip=1.0)``, 50 steps leading, eta 0,
guidance 7.5. ReactDiff: ``DDIMScheduler(20, "cosine", prediction="eps", clip=1.0)``, 20 steps.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Union

import torch

from reactfast.ops.ddim import ddim_step
from reactfast.reference.ddim import PREDICTIONS

SCHEDULES = ("linear", "cosine")
SPACINGS = ("leading", "trailing")


def betas_for(schedule: str, num_train_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02,
              cosine_s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """float64 betas: linear in [beta_start, beta_end], or cosine (Nichol & Dhariwal) clipped at max_beta."""
    if schedule == "linear":
        return torch.linspace(beta_start, beta_end, num_train_steps, dtype=torch.float64)
    if schedule == "cosine":
        def f(t):
            return math.cos((t / num_train_steps + cosine_s) / (1 + cosine_s) * math.pi / 2) ** 2
        return torch.tensor([min(1 - f(i + 1) / f(i), max_beta) for i in range(num_train_steps)], dtype=torch.float64)
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")


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
        if not isinstance(num_train_steps, int) or num_train_steps < 1:
            raise ValueError(f"num_train_steps must be an int >= 1, got {num_train_steps!r}")
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        if spacing not in SPACINGS:
            raise ValueError(f"spacing must be one of {SPACINGS}, got {spacing!r}")
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
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
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.num_train_steps):
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
        if bool((t_prev >= t).any()):
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
        cuda_graph: capture the denoising loop in a CUDA graph and replay it (CUDA only; the
            denoiser must be graph-capturable).
        noise: the initial x_T of shape ``shape`` (default: drawn from ``generator``).

    Returns:
        x0 of shape ``shape``.
    """
    scheduler = scheduler or DDIMScheduler()
    if not shape or any(int(s) < 1 for s in shape):
        raise ValueError(f"shape must be non-empty with positive sizes, got {tuple(shape)}")
    device = torch.device(device) if device is not None else (cond.device if cond is not None else torch.device("cpu"))
    if cond is not None and cond.shape[0] != shape[0]:
        raise ValueError(f"cond must have batch size {shape[0]}, got shape {tuple(cond.shape)}")
    guided = guidance_scale is not None
    if guided and cond is None:
        raise ValueError("classifier-free guidance needs a cond")
    if guided:
        null_cond = torch.zeros_like(cond) if null_cond is None else null_cond.expand_as(cond)
    ts = scheduler.timesteps(steps)
    B = shape[0]
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
    both = torch.cat([cond, null_cond]) if guided else cond
    # Every step's timesteps and coefficients, validated and computed once up front: the loop below
    # does no host synchronisation, so it can be captured in a CUDA graph.
    t_prev = scheduler.previous(ts, steps)
    coefs = scheduler.step_coefficients(ts, t_prev)[:, None].expand(len(ts), B, 5).contiguous().to(device)
    t_rows = ts[:, None].expand(len(ts), B).contiguous().to(device)
    t_both = torch.cat([t_rows, t_rows], 1) if guided else t_rows
    scale = guidance_scale or 1.0
    eps_noise = scheduler.eta > 0

    def one_step(i: int, x: torch.Tensor) -> torch.Tensor:
        if guided:
            out = denoiser(torch.cat([x, x]), t_both[i], both)
            out_c, out_u = out[:B], out[B:]
        else:
            out_c, out_u = denoiser(x, t_rows[i], cond), None
        return ddim_step(x, out_c, coefs[i], scheduler.prediction, out_u, scale,
                         noises[i] if eps_noise else None, scheduler.clip, scheduler.eps_from_clipped, backend)[0]

    if cuda_graph:
        if device.type != "cuda":
            raise ValueError("cuda_graph=True needs CUDA tensors")
        static_x = x.clone()
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            y = static_x
            for i in range(len(ts)):  # warm-up outside the graph (allocations, autotuning)
                y = one_step(i, y)
        torch.cuda.current_stream(device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            y = static_x
            for i in range(len(ts)):
                y = one_step(i, y)
        static_x.copy_(x)
        graph.replay()
        return y.clone()

    order = range(len(ts))
    if progress:
        from tqdm.auto import tqdm

        order = tqdm(order, desc="DDIM", leave=False, disable=None)
    for i in order:
        x = one_step(i, x)
    return x
