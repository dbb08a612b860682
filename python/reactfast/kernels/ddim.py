"""Triton fused DDIM step: guidance, x0/eps recovery, clamping and the update in one pass.

Per-sample coefficients (B, 5) = sqrt(ab_t), sqrt(1 - ab_t), sqrt(ab_prev),
sqrt(1 - ab_prev - sigma^2), sigma are loaded once per program; each element of x_t, the model
output(s) and the noise is read once and x_prev and x0 written once. float32 arithmetic.
"""

import triton
import triton.language as tl

from reactfast import _backend
from reactfast.kernels import on_tensor_device


@triton.jit
def _ddim_fwd_kernel(p_x, p_c, p_u, p_z, p_coef, p_xprev, p_x0, N, scale, clip,
                     PRED: tl.constexpr, GUIDED: tl.constexpr, NOISE: tl.constexpr, CLIP: tl.constexpr,
                     EPS_FROM_CLIPPED: tl.constexpr, BLOCK: tl.constexpr):
    i_b = tl.program_id(0).to(tl.int64)
    i_n = tl.program_id(1)
    o_n = i_n * BLOCK + tl.arange(0, BLOCK)
    m_n = o_n < N
    base = i_b * N
    a_t = tl.load(p_coef + i_b * 5)
    s_t = tl.load(p_coef + i_b * 5 + 1)
    a_prev = tl.load(p_coef + i_b * 5 + 2)
    c_dir = tl.load(p_coef + i_b * 5 + 3)
    sigma = tl.load(p_coef + i_b * 5 + 4)
    b_x = tl.load(p_x + base + o_n, mask=m_n, other=0.0).to(tl.float32)
    b_out = tl.load(p_c + base + o_n, mask=m_n, other=0.0).to(tl.float32)
    if GUIDED:
        b_u = tl.load(p_u + base + o_n, mask=m_n, other=0.0).to(tl.float32)
        b_out = b_u + scale * (b_out - b_u)
    if PRED == 0:
        b_eps = b_out
        b_x0 = (b_x - s_t * b_eps) / a_t
    elif PRED == 1:
        b_x0 = b_out
        b_eps = (b_x - a_t * b_x0) / s_t
    else:
        b_x0 = a_t * b_x - s_t * b_out
        b_eps = a_t * b_out + s_t * b_x
    if CLIP:
        b_x0 = tl.minimum(tl.maximum(b_x0, -clip), clip)
        if EPS_FROM_CLIPPED:
            b_eps = (b_x - a_t * b_x0) / s_t
    b_prev = a_prev * b_x0 + c_dir * b_eps
    if NOISE:
        b_prev += sigma * tl.load(p_z + base + o_n, mask=m_n, other=0.0).to(tl.float32)
    tl.store(p_xprev + base + o_n, b_prev.to(p_xprev.dtype.element_ty), mask=m_n)
    tl.store(p_x0 + base + o_n, b_x0.to(p_x0.dtype.element_ty), mask=m_n)


_PRED = {"eps": 0, "x0": 1, "v": 2}


@on_tensor_device
def ddim_fwd(x_t, out_cond, coef, prediction, out_uncond, guidance_scale, noise, clip, eps_from_clipped):
    """All tensors contiguous, (B, ...) with the same shape; coef (B, 5) float32."""
    B = x_t.shape[0]
    N = x_t.numel() // B
    x_prev = _backend.empty(x_t.shape, x_t.dtype, x_t.device)
    x0 = _backend.empty(x_t.shape, x_t.dtype, x_t.device)
    BLOCK = 1024 if x_t.is_cuda else 4096
    grid = (B, triton.cdiv(N, BLOCK))
    _ddim_fwd_kernel[grid](x_t, out_cond, out_uncond if out_uncond is not None else out_cond,
                           noise if noise is not None else x_t, coef, x_prev, x0, N, float(guidance_scale),
                           float(clip) if clip is not None else 0.0, PRED=_PRED[prediction],
                           GUIDED=out_uncond is not None, NOISE=noise is not None, CLIP=clip is not None,
                           EPS_FROM_CLIPPED=bool(eps_from_clipped), BLOCK=BLOCK)
    return x_prev, x0
