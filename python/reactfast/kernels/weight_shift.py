"""Triton per-listener weight-shift matmuls: tiles of W and dW[b] are added in registers and
multiplied, so W + dW[b] is never written to memory (SPEC 3.2).

Forward  y[b]   = x[b] (W + dW[b])^T + bias      grid (L / BM, d_out / BN, B)
Backward dx[b]  = dy[b] (W + dW[b])               grid (L / BM, d_in / BN, B)
         ddW[b] = dy[b]^T x[b]                    grid (d_out / BM, d_in / BN, B)
fp32 accumulation; fp16/bf16 upcast after loading under the interpreter.
"""

import torch
import triton
import triton.language as tl

from reactfast import _backend


@triton.jit
def _weight_shift_fwd_kernel(p_x, p_w, p_dw, p_bias, p_y, L, DIN, DOUT, HAS_BIAS: tl.constexpr,
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
def _weight_shift_bwd_dx_kernel(p_dy, p_w, p_dw, p_dx, L, DIN, DOUT, BM: tl.constexpr, BN: tl.constexpr,
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
def _weight_shift_bwd_ddw_kernel(p_dy, p_x, p_ddw, L, DIN, DOUT, BM: tl.constexpr, BN: tl.constexpr,
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


def _config(x):
    interpret = not x.is_cuda
    if interpret:
        return 32, 32, 32, True, "ieee"
    precision = "ieee" if x.dtype == torch.float32 else "tf32"
    return 64, 64, 32, False, precision


def weight_shift_fwd(x, weight, shift, bias):
    B, L, DIN = x.shape
    DOUT = weight.shape[0]
    y = _backend.empty((B, L, DOUT), x.dtype, x.device)
    BM, BN, BK, upcast, precision = _config(x)
    grid = (triton.cdiv(L, BM), triton.cdiv(DOUT, BN), B)
    _weight_shift_fwd_kernel[grid](x, weight, shift, bias if bias is not None else weight, y, L, DIN, DOUT,
                                   HAS_BIAS=bias is not None, BM=BM, BN=BN, BK=BK, UPCAST=upcast, PRECISION=precision)
    return y


def weight_shift_bwd_dx(dy, weight, shift):
    B, L, DOUT = dy.shape
    DIN = weight.shape[1]
    dx = _backend.empty((B, L, DIN), dy.dtype, dy.device)
    BM, BN, BK, upcast, precision = _config(dy)
    grid = (triton.cdiv(L, BM), triton.cdiv(DIN, BN), B)
    _weight_shift_bwd_dx_kernel[grid](dy, weight, shift, dx, L, DIN, DOUT, BM=BM, BN=BN, BK=BK, UPCAST=upcast,
                                      PRECISION=precision)
    return dx


def weight_shift_bwd_dshift(dy, x):
    B, L, DOUT = dy.shape
    DIN = x.shape[2]
    ddw = _backend.empty((B, DOUT, DIN), dy.dtype, dy.device)
    BM, BN, BK, upcast, precision = _config(dy)
    grid = (triton.cdiv(DOUT, BM), triton.cdiv(DIN, BN), B)
    _weight_shift_bwd_ddw_kernel[grid](dy, x, ddw, L, DIN, DOUT, BM=BM, BN=BN, BK=BK, UPCAST=upcast,
                                       PRECISION=precision)
    return ddw
