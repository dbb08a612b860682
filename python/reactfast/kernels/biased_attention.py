"""Triton flash-style speaker-listener biased attention (SPEC 3.1), forward and backward.

The bias -m_h floor((k (q0 + i) - j) / (k p)) and the causal bound j <= k (q0 + i) + extra are
computed from indices in registers; no (B, H, Tq, Tk) tensor is formed, and key blocks past a
query block's causal bound or the sample's key length are skipped. Accumulation is float32;
fp16/bf16 inputs feed tl.dot directly on a GPU and are upcast after loading under the
interpreter (TRITON_INTERPRET=1), whose bf16 arithmetic is wrong. Fully masked rows give zeros.
"""

import torch
import triton
import triton.language as tl

from reactfast import _backend


@triton.jit
def _bias_and_mask(s, o_m, o_n, q0, kbeg, klen, Tq, QP, slope, PERIOD, RATIO, EXTRA):
    # s: [BM, BN] scaled scores; query row i stands at frame q0 + (i mod QP). Returns biased scores
    # with -inf where masked.
    pos = RATIO * (q0 + o_m % QP)                                             # [BM]
    diff = (pos[:, None] - o_n[None, :]).to(tl.float32)                        # [BM, BN]
    steps = tl.floor(diff / (RATIO * PERIOD))
    visible = (o_n[None, :] <= pos[:, None] + EXTRA) & (o_n[None, :] < klen) & (o_n[None, :] >= kbeg)
    visible = visible & (o_m[:, None] < Tq)
    return tl.where(visible, s - slope * steps, float("-inf")), visible


@triton.jit
def _biased_attention_fwd_kernel(p_q, p_k, p_v, p_o, p_lse, p_slopes, p_q0, p_kbeg, p_klen, H, Tq, Tk, D, scale,
                                 PERIOD, RATIO, EXTRA, QP, BM: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr,
                                 UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    i_m = tl.program_id(0)
    i_bh = tl.program_id(1).to(tl.int64)
    i_b = i_bh // H
    i_h = i_bh % H
    q0 = tl.load(p_q0 + i_b)
    klen = tl.load(p_klen + i_b)
    kbeg = tl.load(p_kbeg + i_b)
    slope = tl.load(p_slopes + i_h)
    o_m = i_m * BM + tl.arange(0, BM)
    o_d = tl.arange(0, BD)
    m_d = o_d < D
    p_qb = p_q + i_bh * Tq * D
    p_kb = p_k + i_bh * Tk * D
    p_vb = p_v + i_bh * Tk * D
    # [BM, BD]
    b_q = tl.load(p_qb + o_m[:, None] * D + o_d[None, :], mask=(o_m[:, None] < Tq) & m_d[None, :], other=0.0)
    if UPCAST:
        b_q = b_q.to(tl.float32)
    # The largest query position in the block bounds the keys it can see.
    last_pos = tl.minimum(tl.minimum(i_m * BM + BM, Tq) - 1, QP - 1)
    hi = tl.minimum(RATIO * (q0 + last_pos) + EXTRA + 1, klen)
    m_i = tl.full([BM], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BM], dtype=tl.float32)
    acc = tl.zeros([BM, BD], dtype=tl.float32)
    for start in range((kbeg // BN) * BN, hi, BN):
        o_n = start + tl.arange(0, BN)
        m_kd = (o_n[:, None] < Tk) & m_d[None, :]
        # [BN, BD]
        b_k = tl.load(p_kb + o_n[:, None] * D + o_d[None, :], mask=m_kd, other=0.0)
        b_v = tl.load(p_vb + o_n[:, None] * D + o_d[None, :], mask=m_kd, other=0.0)
        if UPCAST:
            b_k = b_k.to(tl.float32)
            b_v = b_v.to(tl.float32)
        # [BM, BN]
        b_s = tl.dot(b_q, tl.trans(b_k), input_precision=PRECISION) * scale
        b_s, visible = _bias_and_mask(b_s, o_m, o_n, q0, kbeg, klen, Tq, QP, slope, PERIOD, RATIO, EXTRA)
        m_new = tl.maximum(m_i, tl.max(b_s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp(m_i - m_safe)
        b_p = tl.where(visible, tl.exp(b_s - m_safe[:, None]), 0.0)
        l_i = l_i * alpha + tl.sum(b_p, 1)
        acc = acc * alpha[:, None] + tl.dot(b_p.to(b_v.dtype), b_v, input_precision=PRECISION)
        m_i = m_new
    empty = l_i == 0.0
    b_o = acc / tl.where(empty, 1.0, l_i)[:, None]
    tl.store(p_o + i_bh * Tq * D + o_m[:, None] * D + o_d[None, :], b_o.to(p_o.dtype.element_ty),
             mask=(o_m[:, None] < Tq) & m_d[None, :])
    lse = tl.where(empty, float("inf"), tl.where(m_i == float("-inf"), 0.0, m_i) + tl.log(tl.where(empty, 1.0, l_i)))
    tl.store(p_lse + i_bh * Tq + o_m, lse, mask=o_m < Tq)


@triton.jit
def _biased_attention_bwd_dkdv_kernel(p_q, p_k, p_v, p_do, p_lse, p_delta, p_dk, p_dv, p_slopes, p_q0, p_kbeg, p_klen, H,
                                      Tq, Tk, D, scale, PERIOD, RATIO, EXTRA, QP, BM: tl.constexpr, BN: tl.constexpr,
                                      BD: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    i_n = tl.program_id(0)
    i_bh = tl.program_id(1).to(tl.int64)
    i_b = i_bh // H
    i_h = i_bh % H
    q0 = tl.load(p_q0 + i_b)
    klen = tl.load(p_klen + i_b)
    kbeg = tl.load(p_kbeg + i_b)
    slope = tl.load(p_slopes + i_h)
    o_n = i_n * BN + tl.arange(0, BN)
    o_d = tl.arange(0, BD)
    m_d = o_d < D
    m_kd = (o_n[:, None] < Tk) & m_d[None, :]
    # [BN, BD]
    b_k = tl.load(p_k + i_bh * Tk * D + o_n[:, None] * D + o_d[None, :], mask=m_kd, other=0.0)
    b_v = tl.load(p_v + i_bh * Tk * D + o_n[:, None] * D + o_d[None, :], mask=m_kd, other=0.0)
    if UPCAST:
        b_k = b_k.to(tl.float32)
        b_v = b_v.to(tl.float32)
    b_dk = tl.zeros([BN, BD], dtype=tl.float32)
    b_dv = tl.zeros([BN, BD], dtype=tl.float32)
    # First query row that can see the block's first key: RATIO (q0 + i) + EXTRA >= j.
    j0 = i_n * BN
    need = j0 - EXTRA
    i_first = tl.where(need > 0, tl.maximum((tl.maximum(need, 0) + RATIO - 1) // RATIO - q0, 0), 0)
    lo = (i_first // BM) * BM
    lo = tl.where(QP < Tq, 0, lo)              # folded windows: every row block may see the keys
    lo = tl.where(j0 >= klen, Tq, lo)
    p_qb = p_q + i_bh * Tq * D
    p_dob = p_do + i_bh * Tq * D
    for start in range(lo, Tq, BM):
        o_m = start + tl.arange(0, BM)
        m_qd = (o_m[:, None] < Tq) & m_d[None, :]
        # [BM, BD]
        b_q = tl.load(p_qb + o_m[:, None] * D + o_d[None, :], mask=m_qd, other=0.0)
        b_do = tl.load(p_dob + o_m[:, None] * D + o_d[None, :], mask=m_qd, other=0.0)
        if UPCAST:
            b_q = b_q.to(tl.float32)
            b_do = b_do.to(tl.float32)
        b_lse = tl.load(p_lse + i_bh * Tq + o_m, mask=o_m < Tq, other=float("inf"))
        b_delta = tl.load(p_delta + i_bh * Tq + o_m, mask=o_m < Tq, other=0.0)
        # [BM, BN]
        b_s = tl.dot(b_q, tl.trans(b_k), input_precision=PRECISION) * scale
        b_s, visible = _bias_and_mask(b_s, o_m, o_n, q0, kbeg, klen, Tq, QP, slope, PERIOD, RATIO, EXTRA)
        b_p = tl.where(visible, tl.exp(b_s - b_lse[:, None]), 0.0)
        b_dv += tl.dot(tl.trans(b_p).to(b_do.dtype), b_do, input_precision=PRECISION)
        b_dp = tl.dot(b_do, tl.trans(b_v), input_precision=PRECISION)
        b_ds = b_p * (b_dp - b_delta[:, None])
        b_dk += tl.dot(tl.trans(b_ds).to(b_q.dtype), b_q, input_precision=PRECISION)
    p_out = i_bh * Tk * D + o_n[:, None] * D + o_d[None, :]
    tl.store(p_dk + p_out, (b_dk * scale).to(p_dk.dtype.element_ty), mask=m_kd)
    tl.store(p_dv + p_out, b_dv.to(p_dv.dtype.element_ty), mask=m_kd)


@triton.jit
def _biased_attention_bwd_dq_kernel(p_q, p_k, p_v, p_do, p_lse, p_delta, p_dq, p_slopes, p_q0, p_kbeg, p_klen, H, Tq, Tk,
                                    D, scale, PERIOD, RATIO, EXTRA, QP, BM: tl.constexpr, BN: tl.constexpr,
                                    BD: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    i_m = tl.program_id(0)
    i_bh = tl.program_id(1).to(tl.int64)
    i_b = i_bh // H
    i_h = i_bh % H
    q0 = tl.load(p_q0 + i_b)
    klen = tl.load(p_klen + i_b)
    kbeg = tl.load(p_kbeg + i_b)
    slope = tl.load(p_slopes + i_h)
    o_m = i_m * BM + tl.arange(0, BM)
    o_d = tl.arange(0, BD)
    m_d = o_d < D
    m_qd = (o_m[:, None] < Tq) & m_d[None, :]
    # [BM, BD]
    b_q = tl.load(p_q + i_bh * Tq * D + o_m[:, None] * D + o_d[None, :], mask=m_qd, other=0.0)
    b_do = tl.load(p_do + i_bh * Tq * D + o_m[:, None] * D + o_d[None, :], mask=m_qd, other=0.0)
    if UPCAST:
        b_q = b_q.to(tl.float32)
        b_do = b_do.to(tl.float32)
    b_lse = tl.load(p_lse + i_bh * Tq + o_m, mask=o_m < Tq, other=float("inf"))
    b_delta = tl.load(p_delta + i_bh * Tq + o_m, mask=o_m < Tq, other=0.0)
    b_dq = tl.zeros([BM, BD], dtype=tl.float32)
    # The largest query position in the block bounds the keys it can see.
    last_pos = tl.minimum(tl.minimum(i_m * BM + BM, Tq) - 1, QP - 1)
    hi = tl.minimum(RATIO * (q0 + last_pos) + EXTRA + 1, klen)
    for start in range((kbeg // BN) * BN, hi, BN):
        o_n = start + tl.arange(0, BN)
        m_kd = (o_n[:, None] < Tk) & m_d[None, :]
        # [BN, BD]
        b_k = tl.load(p_k + i_bh * Tk * D + o_n[:, None] * D + o_d[None, :], mask=m_kd, other=0.0)
        b_v = tl.load(p_v + i_bh * Tk * D + o_n[:, None] * D + o_d[None, :], mask=m_kd, other=0.0)
        if UPCAST:
            b_k = b_k.to(tl.float32)
            b_v = b_v.to(tl.float32)
        # [BM, BN]
        b_s = tl.dot(b_q, tl.trans(b_k), input_precision=PRECISION) * scale
        b_s, visible = _bias_and_mask(b_s, o_m, o_n, q0, kbeg, klen, Tq, QP, slope, PERIOD, RATIO, EXTRA)
        b_p = tl.where(visible, tl.exp(b_s - b_lse[:, None]), 0.0)
        b_dp = tl.dot(b_do, tl.trans(b_v), input_precision=PRECISION)
        b_ds = b_p * (b_dp - b_delta[:, None])
        b_dq += tl.dot(b_ds.to(b_k.dtype), b_k, input_precision=PRECISION)
    tl.store(p_dq + i_bh * Tq * D + o_m[:, None] * D + o_d[None, :], (b_dq * scale).to(p_dq.dtype.element_ty),
             mask=m_qd)


def _config(q: torch.Tensor, D: int):
    interpret = not q.is_cuda
    BD = max(16, triton.next_power_of_2(D))
    if interpret:
        BM, BN = 32, 32
    else:
        BM, BN = (64, 64) if BD <= 64 else (64, 32)
    upcast = interpret
    precision = "ieee" if (q.dtype == torch.float32 or upcast) else "tf32"
    return BM, BN, BD, upcast, precision


def biased_attention_fwd(q, k, v, slopes, q_offset, key_start, key_lengths, scale, period, ratio, extra, qperiod):
    """q (B, H, Tq, D), k/v (B, H, Tk, D) contiguous; slopes (H,) float32; q_offset, key_lengths (B,)
    int32 (keys j with key_start <= j < key_lengths are visible). Returns out (q's dtype) and the row log-sum-exp (B, H, Tq) float32 (+inf for empty rows)."""
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    out = _backend.empty(q.shape, q.dtype, q.device)
    lse = _backend.empty((B, H, Tq), torch.float32, q.device)
    BM, BN, BD, upcast, precision = _config(q, D)
    grid = (triton.cdiv(Tq, BM), B * H)
    _biased_attention_fwd_kernel[grid](q, k, v, out, lse, slopes, q_offset, key_start, key_lengths, H, Tq, Tk, D, scale,
                                       period, ratio, extra, qperiod, BM=BM, BN=BN, BD=BD, UPCAST=upcast,
                                       PRECISION=precision)
    return out, lse


def biased_attention_bwd(do, q, k, v, out, lse, slopes, q_offset, key_start, key_lengths, scale, period, ratio, extra,
                         qperiod):
    """Gradients (dq, dk, dv) in the inputs' dtypes."""
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    delta = (do.float() * out.float()).sum(-1).contiguous()
    dq = _backend.empty(q.shape, q.dtype, q.device)
    dk = _backend.empty(k.shape, k.dtype, k.device)
    dv = _backend.empty(v.shape, v.dtype, v.device)
    BM, BN, BD, upcast, precision = _config(q, D)
    _biased_attention_bwd_dkdv_kernel[(triton.cdiv(Tk, BN), B * H)](
        q, k, v, do, lse, delta, dk, dv, slopes, q_offset, key_start, key_lengths, H, Tq, Tk, D, scale, period, ratio, extra,
        qperiod, BM=BM, BN=BN, BD=BD, UPCAST=upcast, PRECISION=precision)
    _biased_attention_bwd_dq_kernel[(triton.cdiv(Tq, BM), B * H)](
        q, k, v, do, lse, delta, dq, slopes, q_offset, key_start, key_lengths, H, Tq, Tk, D, scale, period, ratio, extra,
        qperiod, BM=BM, BN=BN, BD=BD, UPCAST=upcast, PRECISION=precision)
    return dq, dk, dv
