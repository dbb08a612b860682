"""Triton per-listener weight-shift matmuls: tiles of W and dW[b] are added in registers and
multiplied, so W + dW[b] is never written to memory (SPEC 3.2).

Forward  y[b]   = x[b] (W + dW[b])^T + bias      grid (L / BM, d_out / BN, B)
Backward dx[b]  = dy[b] (W + dW[b])               grid (L / BM, d_in / BN, B)
         ddW[b] = dy[b]^T x[b]                    grid (d_out / BM, d_in / BN, B)
Low rank y[b]   = x[b] W^T + (x[b] V[b]) U[b]^T + bias, dW[b] = U[b] V[b]^T never formed: x V is
                  accumulated beside x W^T in the same pass over d_in (r padded to 16).

The forward is bound by reading dW once (B d_out d_in elements): a row block as tall as L (the
autotuner's configurations go to 128 rows) reads each dW tile exactly once. On a GPU the block
sizes, warps and stages are autotuned per (L class, d_in, d_out, dtype); float32 uses three TF32
products per product (``precision="tf32x3"``) unless "tf32" or "ieee" is asked for. Accumulation
is float32; under the interpreter fp16/bf16 are upcast after loading and one fixed configuration
runs.
"""

import triton
import triton.language as tl

from reactfast import _backend, kernels
from reactfast.kernels import on_tensor_device


@triton.jit
def _weight_shift_fwd_kernel(p_x, p_w, p_dw, p_bias, p_y, L, DIN, DOUT, L_CLASS, HAS_BIAS: tl.constexpr,
                             BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, UPCAST: tl.constexpr,
                             PRECISION: tl.constexpr):
    i_m, i_n, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    o_m = i_m * BM + tl.arange(0, BM)
    o_n = i_n * BN + tl.arange(0, BN)
    p_xb = p_x + i_b * L * DIN
    p_dwb = p_dw + i_b * DOUT * DIN
    acc = tl.zeros([BM, BN], dtype=tl.float32)
    for k in range(0, DIN, BK):
        o_k = k + tl.arange(0, BK)
        # [BM, BK]
        b_x = tl.load(p_xb + o_m[:, None] * DIN + o_k[None, :], mask=(o_m[:, None] < L) & (o_k[None, :] < DIN),
                      other=0.0)
        m_w = (o_n[:, None] < DOUT) & (o_k[None, :] < DIN)
        # [BN, BK]: the shifted weight tile, summed in registers
        b_w = tl.load(p_w + o_n[:, None] * DIN + o_k[None, :], mask=m_w, other=0.0).to(tl.float32)
        b_w += tl.load(p_dwb + o_n[:, None] * DIN + o_k[None, :], mask=m_w, other=0.0).to(tl.float32)
        if UPCAST:
            b_x = b_x.to(tl.float32)
        else:
            b_w = b_w.to(b_x.dtype)
        acc += tl.dot(b_x, tl.trans(b_w), input_precision=PRECISION)
    if HAS_BIAS:
        acc += tl.load(p_bias + o_n, mask=o_n < DOUT, other=0.0).to(tl.float32)[None, :]
    tl.store(p_y + i_b * L * DOUT + o_m[:, None] * DOUT + o_n[None, :], acc.to(p_y.dtype.element_ty),
             mask=(o_m[:, None] < L) & (o_n[None, :] < DOUT))


@triton.jit
def _weight_shift_bwd_dx_kernel(p_dy, p_w, p_dw, p_dx, L, DIN, DOUT, L_CLASS, BM: tl.constexpr, BN: tl.constexpr,
                                BK: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    i_m, i_n, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    o_m = i_m * BM + tl.arange(0, BM)
    o_n = i_n * BN + tl.arange(0, BN)      # over d_in
    p_dyb = p_dy + i_b * L * DOUT
    p_dwb = p_dw + i_b * DOUT * DIN
    acc = tl.zeros([BM, BN], dtype=tl.float32)
    for k in range(0, DOUT, BK):
        o_k = k + tl.arange(0, BK)         # over d_out
        # [BM, BK]
        b_dy = tl.load(p_dyb + o_m[:, None] * DOUT + o_k[None, :], mask=(o_m[:, None] < L) & (o_k[None, :] < DOUT),
                       other=0.0)
        m_w = (o_k[:, None] < DOUT) & (o_n[None, :] < DIN)
        # [BK, BN]
        b_w = tl.load(p_w + o_k[:, None] * DIN + o_n[None, :], mask=m_w, other=0.0).to(tl.float32)
        b_w += tl.load(p_dwb + o_k[:, None] * DIN + o_n[None, :], mask=m_w, other=0.0).to(tl.float32)
        if UPCAST:
            b_dy = b_dy.to(tl.float32)
        else:
            b_w = b_w.to(b_dy.dtype)
        acc += tl.dot(b_dy, b_w, input_precision=PRECISION)
    tl.store(p_dx + i_b * L * DIN + o_m[:, None] * DIN + o_n[None, :], acc.to(p_dx.dtype.element_ty),
             mask=(o_m[:, None] < L) & (o_n[None, :] < DIN))


@triton.jit
def _weight_shift_bwd_ddw_kernel(p_dy, p_x, p_ddw, L, DIN, DOUT, L_CLASS, BM: tl.constexpr, BN: tl.constexpr,
                                 BK: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    i_m, i_n, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    o_m = i_m * BM + tl.arange(0, BM)      # over d_out
    o_n = i_n * BN + tl.arange(0, BN)      # over d_in
    acc = tl.zeros([BM, BN], dtype=tl.float32)
    for k in range(0, L, BK):
        o_k = k + tl.arange(0, BK)         # over tokens
        # [BK, BM] and [BK, BN]
        b_dy = tl.load(p_dy + i_b * L * DOUT + o_k[:, None] * DOUT + o_m[None, :],
                       mask=(o_k[:, None] < L) & (o_m[None, :] < DOUT), other=0.0)
        b_x = tl.load(p_x + i_b * L * DIN + o_k[:, None] * DIN + o_n[None, :],
                      mask=(o_k[:, None] < L) & (o_n[None, :] < DIN), other=0.0)
        if UPCAST:
            b_dy = b_dy.to(tl.float32)
            b_x = b_x.to(tl.float32)
        acc += tl.dot(tl.trans(b_dy), b_x, input_precision=PRECISION)
    tl.store(p_ddw + i_b * DOUT * DIN + o_m[:, None] * DIN + o_n[None, :], acc.to(p_ddw.dtype.element_ty),
             mask=(o_m[:, None] < DOUT) & (o_n[None, :] < DIN))


@triton.jit
def _low_rank_fwd_kernel(p_x, p_w, p_u, p_v, p_bias, p_y, L, DIN, DOUT, R, L_CLASS, HAS_BIAS: tl.constexpr,
                         BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, BR: tl.constexpr,
                         UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    i_m, i_n, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    o_m = i_m * BM + tl.arange(0, BM)
    o_n = i_n * BN + tl.arange(0, BN)
    o_r = tl.arange(0, BR)
    p_xb = p_x + i_b * L * DIN
    p_vb = p_v + i_b * DIN * R
    acc = tl.zeros([BM, BN], dtype=tl.float32)
    xv = tl.zeros([BM, BR], dtype=tl.float32)
    for k in range(0, DIN, BK):
        o_k = k + tl.arange(0, BK)
        b_x = tl.load(p_xb + o_m[:, None] * DIN + o_k[None, :], mask=(o_m[:, None] < L) & (o_k[None, :] < DIN),
                      other=0.0)
        b_w = tl.load(p_w + o_n[:, None] * DIN + o_k[None, :], mask=(o_n[:, None] < DOUT) & (o_k[None, :] < DIN),
                      other=0.0)
        b_v = tl.load(p_vb + o_k[:, None] * R + o_r[None, :], mask=(o_k[:, None] < DIN) & (o_r[None, :] < R),
                      other=0.0)
        if UPCAST:
            b_x, b_w, b_v = b_x.to(tl.float32), b_w.to(tl.float32), b_v.to(tl.float32)
        acc += tl.dot(b_x, tl.trans(b_w), input_precision=PRECISION)
        xv += tl.dot(b_x, b_v, input_precision=PRECISION)
    m_u = (o_n[:, None] < DOUT) & (o_r[None, :] < R)
    b_u = tl.load(p_u + i_b * DOUT * R + o_n[:, None] * R + o_r[None, :], mask=m_u, other=0.0)
    if UPCAST:
        b_u = b_u.to(tl.float32)
    acc += tl.dot(xv.to(b_u.dtype), tl.trans(b_u), input_precision=PRECISION)
    if HAS_BIAS:
        acc += tl.load(p_bias + o_n, mask=o_n < DOUT, other=0.0).to(tl.float32)[None, :]
    tl.store(p_y + i_b * L * DOUT + o_m[:, None] * DOUT + o_n[None, :], acc.to(p_y.dtype.element_ty),
             mask=(o_m[:, None] < L) & (o_n[None, :] < DOUT))


def _cfg(BM, BN, BK, warps, stages):
    return triton.Config({"BM": BM, "BN": BN, "BK": BK}, num_warps=warps, num_stages=stages)


# Candidates the autotuner times on a GPU (the tests run every one under the interpreter). Rows
# first: 128-row blocks read each dW tile once for L up to 128.
FWD_CONFIGS = [_cfg(128, 64, 64, 8, 3), _cfg(128, 64, 32, 4, 4), _cfg(128, 128, 32, 8, 3), _cfg(128, 32, 64, 4, 4),
               _cfg(64, 64, 64, 4, 4), _cfg(64, 128, 32, 4, 3), _cfg(128, 64, 128, 8, 2), _cfg(64, 64, 32, 4, 3)]
DX_CONFIGS = [_cfg(128, 64, 32, 8, 3), _cfg(128, 64, 64, 8, 3), _cfg(64, 64, 64, 4, 4), _cfg(128, 128, 32, 8, 3),
              _cfg(64, 128, 32, 4, 3), _cfg(64, 64, 32, 4, 3)]
DDW_CONFIGS = [_cfg(64, 64, 32, 4, 3), _cfg(128, 64, 32, 8, 3), _cfg(64, 128, 32, 4, 3), _cfg(128, 128, 32, 8, 3),
               _cfg(64, 64, 64, 4, 4), _cfg(128, 64, 64, 8, 3)]
INTERPRET_CONFIG = {"BM": 32, "BN": 32, "BK": 32}
_KEY = ["L_CLASS", "DIN", "DOUT"]

# Each kernel's candidates, by name (the tests' launch spies stand in for the kernels by name).
_CANDIDATES = {fn.__name__: (fn, c) for fn, c in ((_weight_shift_fwd_kernel, FWD_CONFIGS),
                                                  (_low_rank_fwd_kernel, FWD_CONFIGS),
                                                  (_weight_shift_bwd_dx_kernel, DX_CONFIGS),
                                                  (_weight_shift_bwd_ddw_kernel, DDW_CONFIGS))}
if not kernels.INTERPRET:
    _tuned = {name: triton.autotune(configs=c, key=_KEY)(fn) for name, (fn, c) in _CANDIDATES.items()}


def _meta(x, precision):
    upcast, prec = kernels.dot_precision(x.dtype, precision)
    return dict(UPCAST=upcast, PRECISION=prec)


def _launch(kernel, grid, args, meta, config):
    """:func:`reactfast.kernels.launch` with the kernel's first candidate that fits as the
    deterministic one."""
    name = kernel.__name__
    kernels.launch(kernel, None if kernels.INTERPRET else _tuned[name], grid, args, meta, config,
                   _CANDIDATES[name][1], INTERPRET_CONFIG)


@on_tensor_device
def weight_shift_fwd(x, weight, shift, bias, precision="tf32x3", config=None):
    B, L, DIN = x.shape
    DOUT = weight.shape[0]
    y = _backend.empty((B, L, DOUT), x.dtype, x.device)
    _launch(_weight_shift_fwd_kernel, lambda c: (triton.cdiv(L, c["BM"]), triton.cdiv(DOUT, c["BN"]), B),
            (x, weight, shift, bias if bias is not None else weight, y, L, DIN, DOUT, kernels.length_class(L)),
            dict(_meta(x, precision), HAS_BIAS=bias is not None), config)
    return y


@on_tensor_device
def low_rank_fwd(x, weight, u, v, bias, precision="tf32x3", config=None):
    """y = x W^T + (x V) U^T + bias; x (B, L, d_in), u (B, d_out, r), v (B, d_in, r), all contiguous."""
    B, L, DIN = x.shape
    DOUT, R = weight.shape[0], u.shape[2]
    y = _backend.empty((B, L, DOUT), x.dtype, x.device)
    _launch(_low_rank_fwd_kernel, lambda c: (triton.cdiv(L, c["BM"]), triton.cdiv(DOUT, c["BN"]), B),
            (x, weight, u, v, bias if bias is not None else weight, y, L, DIN, DOUT, R, kernels.length_class(L)),
            dict(_meta(x, precision), HAS_BIAS=bias is not None, BR=max(16, triton.next_power_of_2(R))), config)
    return y


@on_tensor_device
def weight_shift_bwd_dx(dy, weight, shift, precision="tf32x3", config=None):
    B, L, DOUT = dy.shape
    DIN = weight.shape[1]
    dx = _backend.empty((B, L, DIN), dy.dtype, dy.device)
    _launch(_weight_shift_bwd_dx_kernel, lambda c: (triton.cdiv(L, c["BM"]), triton.cdiv(DIN, c["BN"]), B),
            (dy, weight, shift, dx, L, DIN, DOUT, kernels.length_class(L)), _meta(dy, precision), config)
    return dx


@on_tensor_device
def weight_shift_bwd_dshift(dy, x, precision="tf32x3", config=None):
    B, L, DOUT = dy.shape
    DIN = x.shape[2]
    ddw = _backend.empty((B, DOUT, DIN), dy.dtype, dy.device)
    _launch(_weight_shift_bwd_ddw_kernel, lambda c: (triton.cdiv(DOUT, c["BM"]), triton.cdiv(DIN, c["BN"]), B),
            (dy, x, ddw, L, DIN, DOUT, kernels.length_class(L)), _meta(dy, precision), config)
    return ddw
