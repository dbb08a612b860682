"""Triton FRSyn kernel: the lagged correlation curve rs(l) of each pair, one program per (pair, lag),
the lags of one pair side by side in the grid so its two series stay in L2 (SPEC: REACT's FRSyn;
the reference is ``reactfast.reference.tlcc``).

Per dim, the two-pass float64 Pearson r of the overlapping segments (NaN for a constant segment or
one shorter than 2 frames), clipped to [-1, 1], written as float32; rs(l) is their mean over dims
summed in dim order in float32 (NaN propagates), as the reference and the official code compute it.
"""

import torch
import triton
import triton.language as tl

from reactfast import _backend, kernels
from reactfast.kernels import on_tensor_device


@triton.jit
def _segment_tile(p_xs, p_ys, t0, n, D, o_d, m_d, BT: tl.constexpr):
    """Rows t0 .. t0 + BT of both segments as float64 [BT, BD] (0 outside), and their mask."""
    o_t = t0 + tl.arange(0, BT)
    m_td = (o_t[:, None] < n) & m_d[None, :]
    offs = o_t[:, None] * D + o_d[None, :]
    a = tl.load(p_xs + offs, mask=m_td, other=0.0).to(tl.float64)
    b = tl.load(p_ys + offs, mask=m_td, other=0.0).to(tl.float64)
    return a, b, m_td


@triton.jit
def _tlcc_kernel(p_x, p_y, p_r, T, D, L, BT: tl.constexpr, BD: tl.constexpr):
    lags = 2 * L + 1
    li = tl.program_id(0) % lags          # one axis, a pair's lags adjacent (the others cap at 65,535)
    m = (tl.program_id(0) // lags).to(tl.int64)
    lag = li - L
    n = T - tl.abs(lag)
    o_d = tl.arange(0, BD)
    m_d = o_d < D
    p_xs = p_x + m * T * D + tl.maximum(lag, 0) * D
    p_ys = p_y + m * T * D + tl.maximum(-lag, 0) * D
    sx = tl.zeros([BD], dtype=tl.float64)
    sy = tl.zeros([BD], dtype=tl.float64)
    for t0 in range(0, n, BT):
        a, b, _ = _segment_tile(p_xs, p_ys, t0, n, D, o_d, m_d, BT)
        sx += tl.sum(a, 0)
        sy += tl.sum(b, 0)
    mx = sx / tl.maximum(n, 1)          # lags past the clip (n < 1) read nothing; their r is NaN below
    my = sy / tl.maximum(n, 1)
    sxy = tl.zeros([BD], dtype=tl.float64)
    sxx = tl.zeros([BD], dtype=tl.float64)
    syy = tl.zeros([BD], dtype=tl.float64)
    for t0 in range(0, n, BT):
        a, b, m_td = _segment_tile(p_xs, p_ys, t0, n, D, o_d, m_d, BT)
        a = tl.where(m_td, a - mx[None, :], 0.0)
        b = tl.where(m_td, b - my[None, :], 0.0)
        sxy += tl.sum(a * b, 0)
        sxx += tl.sum(a * a, 0)
        syy += tl.sum(b * b, 0)
    constant = (sxx == 0.0) | (syy == 0.0)
    r = sxy / tl.sqrt(tl.where(constant, 1.0, sxx * syy))
    r = tl.minimum(tl.maximum(r, -1.0), 1.0)
    r32 = tl.where(constant | (n < 2), float("nan"), r).to(tl.float32)
    tl.store(p_r + (m * (2 * L + 1) + li) * D + o_d, r32, mask=m_d)


@on_tensor_device
def tlcc(x, y, max_lag, BT=None):
    """x, y (M, T, D) float32 contiguous on one device -> rs (M, 2 max_lag + 1) float32. The kernel
    writes r per (pair, lag, dim); the mean over dims is then summed in dim order in float32 (D
    elementwise steps over all pairs and lags), exactly as the reference sums it."""
    M, T, D = x.shape
    r = _backend.empty((M, 2 * max_lag + 1, D), torch.float32, x.device)
    BD = max(16, triton.next_power_of_2(D))
    BT = BT or (128 if kernels.INTERPRET else 64)
    _tlcc_kernel[((2 * max_lag + 1) * M,)](x, y, r, T, D, max_lag, BT=BT, BD=BD)
    total = r[..., 0].clone()
    for d in range(1, D):
        total += r[..., d]
    return total / D
