"""Triton FRCorr kernel: for each query, the maximum over its candidates of the dim-mean CCC, with
the argmax, in one program per query (SPEC: REACT's FRCorr; the reference is
``reactfast.reference.ccc``).

Per series (queries and targets alike) the float64 mean and centred sum of squares and the float32
mean, variance and standard deviation are computed once (torch, on the device); the kernel then
streams each candidate pair once, accumulating the float64 centred cross products per dim over
time tiles, and folds Pearson r (NaN -> 0, clipped), the CCC per dim, its mean over dims and the
running maximum (first candidate on ties) in registers. No (pairs, T, D) gather is formed: the
reference path on a GPU gathers every pair.
"""

import torch
import triton
import triton.language as tl

from reactfast import _backend, kernels
from reactfast.kernels import on_tensor_device
from reactfast.reference import ccc as _ref


@triton.jit
def _ccc_max_kernel(p_pred, p_gt, p_off, p_idx, p_pm64, p_pss, p_pm32, p_pv32, p_ps32, p_gm64, p_gss, p_gm32, p_gv32,
                    p_gs32, p_max, p_arg, T, D, BT: tl.constexpr, BD: tl.constexpr):
    m = tl.program_id(0).to(tl.int64)
    o_d = tl.arange(0, BD)
    m_d = o_d < D
    lo = tl.load(p_off + m)
    hi = tl.load(p_off + m + 1)
    pm64 = tl.load(p_pm64 + m * D + o_d, mask=m_d, other=0.0)
    pss = tl.load(p_pss + m * D + o_d, mask=m_d, other=0.0)
    pm32 = tl.load(p_pm32 + m * D + o_d, mask=m_d, other=0.0)
    pv32 = tl.load(p_pv32 + m * D + o_d, mask=m_d, other=0.0)
    ps32 = tl.load(p_ps32 + m * D + o_d, mask=m_d, other=0.0)
    p_q = p_pred + m * T * D
    best = tl.full([], float("-inf"), tl.float64)
    best_j = tl.load(p_idx + lo)
    for c in range(lo, hi):
        j = tl.load(p_idx + c)
        p_g = p_gt + j * T * D
        gm64 = tl.load(p_gm64 + j * D + o_d, mask=m_d, other=0.0)
        sxy = tl.zeros([BD], dtype=tl.float64)
        for t0 in range(0, T, BT):
            o_t = t0 + tl.arange(0, BT)
            m_td = (o_t[:, None] < T) & m_d[None, :]
            offs = o_t[:, None] * D + o_d[None, :]
            q = tl.load(p_q + offs, mask=m_td, other=0.0).to(tl.float64) - pm64[None, :]
            g = tl.load(p_g + offs, mask=m_td, other=0.0).to(tl.float64) - gm64[None, :]
            sxy += tl.sum(tl.where(m_td, q * g, 0.0), 0)
        gss = tl.load(p_gss + j * D + o_d, mask=m_d, other=0.0)
        constant = (gss == 0.0) | (pss == 0.0)
        r = sxy / tl.sqrt(tl.where(constant, 1.0, gss * pss))
        r = tl.where(constant, 0.0, tl.minimum(tl.maximum(r, -1.0), 1.0))
        gm32 = tl.load(p_gm32 + j * D + o_d, mask=m_d, other=0.0)
        gv32 = tl.load(p_gv32 + j * D + o_d, mask=m_d, other=0.0)
        gs32 = tl.load(p_gs32 + j * D + o_d, mask=m_d, other=0.0)
        diff = gm32 - pm32
        per_dim = 2.0 * r * gs32 * ps32 / (gv32 + pv32 + diff * diff + 1e-8)
        value = tl.sum(tl.where(m_d, per_dim, 0.0), 0) / D
        better = value > best
        best_j = tl.where(better, j, best_j)
        best = tl.where(better, value, best)
    tl.store(p_max + m, best)
    tl.store(p_arg + m, best_j)


def series_stats(x: torch.Tensor):
    """Per series and dim of x (N, T, D) float32: the float64 mean and centred sum of squares (the
    reference's two-pass Pearson terms), then the float32 mean, variance and standard deviation of
    :func:`reactfast.reference.ccc.stats32`."""
    x64 = x.double()
    mean = x64.mean(1)
    centred = x64 - mean[:, None]
    return (mean.contiguous(), (centred * centred).sum(1).contiguous(),
            *(t.contiguous() for t in _ref.stats32(x)))


@on_tensor_device
def ccc_max(pred, gt, offset, index, BT=None):
    """pred (M, T, D), gt (G, T, D) float32 contiguous; CSR (offset (M + 1,), index (K,)) int64 on the
    device, at least one candidate per query. Returns (max (M,) float64, argmax (M,) int64)."""
    M, T, D = pred.shape
    out_max = _backend.empty((M,), torch.float64, pred.device)
    out_arg = _backend.empty((M,), torch.int64, pred.device)
    BD = max(16, triton.next_power_of_2(D))
    BT = BT or (128 if kernels.INTERPRET else 64)
    _ccc_max_kernel[(M,)](pred, gt, offset, index, *series_stats(pred), *series_stats(gt), out_max, out_arg, T, D,
                          BT=BT, BD=BD)
    return out_max, out_arg
