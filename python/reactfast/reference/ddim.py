"""Reference DDIM step (SPEC 3.3), elementwise over a batch with per-sample timesteps.

Per-sample coefficients come from ``reactfast.diffusion.DDIMScheduler.step_coefficients``;
this function is the arithmetic the fused kernel must reproduce.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

PREDICTIONS = ("eps", "x0", "v")


def ddim_step(x_t: torch.Tensor, out_cond: torch.Tensor, coef: torch.Tensor, prediction: str = "eps",
              out_uncond: Optional[torch.Tensor] = None, guidance_scale: float = 1.0,
              noise: Optional[torch.Tensor] = None, clip: Optional[float] = None,
              eps_from_clipped: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """One DDIM update.

    Args:
        x_t: (B, ...) current samples.
        out_cond: model output (B, ...); with ``out_uncond`` the guided output is
            out_uncond + guidance_scale (out_cond - out_uncond).
        coef: (B, 5) float: sqrt(ab_t), sqrt(1 - ab_t), sqrt(ab_prev), sqrt(1 - ab_prev - sigma^2), sigma.
        prediction: what the model predicts, ``"eps"``, ``"x0"`` or ``"v"``.
        noise: (B, ...) z for eta > 0 (ignored where sigma = 0).
        clip: clamp x0 to [-clip, clip].
        eps_from_clipped: re-derive eps from the clamped x0 (default: from the model output).

    Returns:
        (x_prev, x0) in x_t's dtype.
    """
    shape = (-1,) + (1,) * (x_t.dim() - 1)
    work = torch.promote_types(x_t.dtype, torch.float32)   # float32, or float64 for float64 inputs
    a_t, s_t, a_prev, c_dir, sigma = (coef[:, i].to(work).reshape(shape) for i in range(5))
    x = x_t.to(work)
    out = out_cond.to(work)
    if out_uncond is not None:
        u = out_uncond.to(work)
        out = u + guidance_scale * (out - u)
    if prediction == "eps":
        eps = out
        x0 = (x - s_t * eps) / a_t
    elif prediction == "x0":
        x0 = out
        eps = (x - a_t * x0) / s_t
    elif prediction == "v":
        x0 = a_t * x - s_t * out
        eps = a_t * out + s_t * x
    else:
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
    if clip is not None:
        x0 = x0.clamp(-clip, clip)
        if eps_from_clipped:
            eps = (x - a_t * x0) / s_t
    x_prev = a_prev * x0 + c_dir * eps
    if noise is not None:
        x_prev = x_prev + sigma * noise.to(work)
    return x_prev.to(x_t.dtype), x0.to(x_t.dtype)
