"""Triton flash-style speaker-listener biased attention (SPEC 3.1), forward and backward, in the
manner of FlashAttention-2.

- The bias -m_h floor((k (q0 + i) - j) / (k p)) and the causal bound j <= k (q0 + i) + extra come
  from the row and key indices in registers; no (B, H, Tq, Tk) tensor is formed.
- Scores live in base 2: log2(e) is folded into the scale and the slopes, so every exponential is
  one ``exp2``; the row log-sum-exp handed to the backward is natural (as the reference's).
- For a block of query rows, the keys split into boundary blocks (the first one, from the sample's
  key start, and those crossing the rows' causal bound or the key length), which are masked, and
  fully visible blocks, which skip every mask; key blocks past the causal bound are never visited.
  The floor of the bias is exact for positions below 2^21 (``floor((d + 1/2) / kp)``: the
  quotient is never within rounding of an integer).
- Few queries over many keys (the online window, Tq <= 16): the keys split across programs that
  each write a partial (max, sum, unnormalised output), merged by a combine kernel, so a small
  batch still fills the GPU.
- On a GPU the block sizes, warps and pipeline stages are autotuned per (head dim, Tq and Tk
  class, dtype); the first call of each class tunes (before a CUDA graph captures the op, run it
  once eagerly). fp16/bf16 feed the matrix units; float32 uses three TF32 products per product
  (``precision="tf32x3"``, float32 accuracy) unless "tf32" or "ieee" is asked for.
- Under the interpreter (TRITON_INTERPRET=1, CPU tensors) one fixed configuration runs, inputs are
  upcast after loading (its bf16 arithmetic is wrong) and products are exact. Accumulation is
  float32 everywhere; rows with every key masked give zeros (log-sum-exp +inf).
"""

import functools

import torch
import triton
import triton.language as tl

from reactfast import _backend, kernels
from reactfast.kernels import on_tensor_device

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453
DECODE_MAX_Q = 16          # at most this many queries: one row block of 16, keys split across programs
SPLIT_MIN_KEYS = 256       # the fewest keys worth a split program of their own
SPLIT_ALIGN = 128          # split boundaries fall on multiples of this (of every BN below)


# ----------------------------------------------------------------------------------------------
# Shared pieces


@triton.jit
def _row_positions(r0, Tq, QP, q0, RATIO, BM: tl.constexpr):
    """Key positions of a row block's rows (query row i stands at frame q0 + (i mod QP)), and the
    smallest and largest over its rows below Tq."""
    o_m = r0 + tl.arange(0, BM)
    pos = RATIO * (q0 + o_m % QP)
    r1 = tl.minimum(r0 + BM, Tq) - 1
    wraps = (r1 // QP) != (r0 // QP)
    pmin = RATIO * tl.where(wraps, q0, q0 + r0 % QP)
    pmax = RATIO * tl.where(wraps, q0 + QP - 1, q0 + r1 % QP)
    return o_m, pos, pmin, pmax


@triton.jit
def _key_ranges(pmin, pmax, kbeg, klen, EXTRA, BN: tl.constexpr):
    """Key-block ranges for rows whose positions lie in [pmin, pmax]: masked [lo, a_hi), fully
    visible [f_lo, f_hi) and masked [f_hi, hi); together every key some row can see, in BN blocks."""
    lo = (kbeg // BN) * BN
    hi = tl.minimum(pmax + EXTRA + 1, klen)
    f_lo = tl.cdiv(kbeg, BN) * BN
    f_hi = tl.maximum((tl.minimum(pmin + EXTRA + 1, klen) // BN) * BN, f_lo)
    a_hi = tl.minimum(f_lo, hi)
    return lo, a_hi, f_lo, f_hi, hi


@triton.jit
def _scores(b_q, b_k, o_n, pos, kbeg, klen, qk_scale, slope2, inv_rp, EXTRA, MASK: tl.constexpr,
            PRECISION: tl.constexpr):
    """Biased scores in base 2, [BM, BN]; -inf where masked (MASK blocks only)."""
    s = tl.dot(b_q, tl.trans(b_k), input_precision=PRECISION) * qk_scale
    steps = tl.floor(((pos[:, None] - o_n[None, :]).to(tl.float32) + 0.5) * inv_rp)
    s = s - slope2 * steps
    if MASK:
        visible = (o_n[None, :] <= pos[:, None] + EXTRA) & (o_n[None, :] < klen) & (o_n[None, :] >= kbeg)
        s = tl.where(visible, s, float("-inf"))
    return s


@triton.jit
def _load_kv(p_kb, p_vb, o_n, o_d, Tk, D, MASK: tl.constexpr, EVEN_D: tl.constexpr, UPCAST: tl.constexpr):
    offs = o_n[:, None] * D + o_d[None, :]
    if MASK:
        m = (o_n[:, None] < Tk) & (o_d[None, :] < D)
        b_k = tl.load(p_kb + offs, mask=m, other=0.0)
        b_v = tl.load(p_vb + offs, mask=m, other=0.0)
    elif EVEN_D:
        b_k = tl.load(p_kb + offs)
        b_v = tl.load(p_vb + offs)
    else:
        b_k = tl.load(p_kb + offs, mask=o_d[None, :] < D, other=0.0)
        b_v = tl.load(p_vb + offs, mask=o_d[None, :] < D, other=0.0)
    if UPCAST:
        b_k = b_k.to(tl.float32)
        b_v = b_v.to(tl.float32)
    return b_k, b_v


@triton.jit
def _sample_and_head(i_bh, H, p_slopes, p_q0, p_kbeg, p_klen):
    i_b = i_bh // H
    slope2 = tl.load(p_slopes + i_bh % H) * 1.4426950408889634
    return slope2, tl.load(p_q0 + i_b), tl.load(p_kbeg + i_b), tl.load(p_klen + i_b)


# ----------------------------------------------------------------------------------------------
# Forward


@triton.jit
def _fwd_range(acc, m_i, l_i, b_q, p_kb, p_vb, start, end, pos, o_d, kbeg, klen, Tk, D, qk_scale, slope2, inv_rp,
               EXTRA, BN: tl.constexpr, MASK: tl.constexpr, EVEN_D: tl.constexpr, UPCAST: tl.constexpr,
               PRECISION: tl.constexpr):
    for s0 in range(start, end, BN):
        o_n = s0 + tl.arange(0, BN)
        b_k, b_v = _load_kv(p_kb, p_vb, o_n, o_d, Tk, D, MASK, EVEN_D, UPCAST)
        s = _scores(b_q, b_k, o_n, pos, kbeg, klen, qk_scale, slope2, inv_rp, EXTRA, MASK, PRECISION)
        m_new = tl.maximum(m_i, tl.max(s, 1))
        if MASK:
            m_new_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        else:
            m_new_safe = m_new
        alpha = tl.exp2(m_i - m_new_safe)
        p = tl.exp2(s - m_new_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(b_v.dtype), b_v, input_precision=PRECISION)
        m_i = m_new
    return acc, m_i, l_i


@triton.jit
def _fwd_kernel(p_q, p_k, p_v, p_o, p_lse, p_wacc, p_wm, p_wl, p_slopes, p_q0, p_kbeg, p_klen, H, Tq, Tk, D,
                qk_scale, inv_rp, EXTRA, QP, RATIO, CHUNK, TQ_CLASS, TK_CLASS, BM: tl.constexpr, BN: tl.constexpr,
                BD: tl.constexpr, SPLIT: tl.constexpr, EVEN_D: tl.constexpr, UPCAST: tl.constexpr,
                PRECISION: tl.constexpr):
    # One grid axis for (row block, sample-head), row blocks fastest: the second and third axes are
    # limited to 65,535 programs, fewer than the (sample, head) pairs of a large stream batch.
    n_m = tl.cdiv(Tq, BM)
    i_m = tl.program_id(0) % n_m
    i_bh = (tl.program_id(0) // n_m).to(tl.int64)
    i_s = tl.program_id(1)
    slope2, q0, kbeg, klen = _sample_and_head(i_bh, H, p_slopes, p_q0, p_kbeg, p_klen)
    o_m, pos, pmin, pmax = _row_positions(i_m * BM, Tq, QP, q0, RATIO, BM)
    o_d = tl.arange(0, BD)
    m_qd = (o_m[:, None] < Tq) & (o_d[None, :] < D)
    b_q = tl.load(p_q + i_bh * Tq * D + o_m[:, None] * D + o_d[None, :], mask=m_qd, other=0.0)
    if UPCAST:
        b_q = b_q.to(tl.float32)
    lo, a_hi, f_lo, f_hi, hi = _key_ranges(pmin, pmax, kbeg, klen, EXTRA, BN)
    if SPLIT:
        # This program's share of the keys: [c_lo, c_hi), aligned to BN.
        c_lo = i_s * CHUNK
        c_hi = c_lo + CHUNK
        lo, a_hi = tl.maximum(lo, c_lo), tl.minimum(a_hi, c_hi)
        f_lo, f_hi = tl.maximum(f_lo, c_lo), tl.minimum(f_hi, c_hi)
        hi = tl.minimum(hi, c_hi)
    m_i = tl.full([BM], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BM], dtype=tl.float32)
    acc = tl.zeros([BM, BD], dtype=tl.float32)
    p_kb = p_k + i_bh * Tk * D
    p_vb = p_v + i_bh * Tk * D
    acc, m_i, l_i = _fwd_range(acc, m_i, l_i, b_q, p_kb, p_vb, lo, a_hi, pos, o_d, kbeg, klen, Tk, D, qk_scale,
                               slope2, inv_rp, EXTRA, BN, True, EVEN_D, UPCAST, PRECISION)
    acc, m_i, l_i = _fwd_range(acc, m_i, l_i, b_q, p_kb, p_vb, f_lo, f_hi, pos, o_d, kbeg, klen, Tk, D, qk_scale,
                               slope2, inv_rp, EXTRA, BN, False, EVEN_D, UPCAST, PRECISION)
    acc, m_i, l_i = _fwd_range(acc, m_i, l_i, b_q, p_kb, p_vb, tl.maximum(f_hi, lo), hi, pos, o_d, kbeg, klen, Tk,
                               D, qk_scale, slope2, inv_rp, EXTRA, BN, True, EVEN_D, UPCAST, PRECISION)
    if SPLIT:
        row = (i_bh * tl.num_programs(1) + i_s) * Tq + o_m
        tl.store(p_wm + row, m_i, mask=o_m < Tq)
        tl.store(p_wl + row, l_i, mask=o_m < Tq)
        tl.store(p_wacc + row[:, None] * BD + o_d[None, :], acc, mask=o_m[:, None] < Tq)
    else:
        empty = l_i == 0.0
        out = acc / tl.where(empty, 1.0, l_i)[:, None]
        tl.store(p_o + i_bh * Tq * D + o_m[:, None] * D + o_d[None, :], out.to(p_o.dtype.element_ty), mask=m_qd)
        lse = tl.where(empty, float("inf"), (m_i + tl.log2(tl.where(empty, 1.0, l_i))) * 0.6931471805599453)
        tl.store(p_lse + i_bh * Tq + o_m, lse, mask=o_m < Tq)


@triton.jit
def _combine_kernel(p_wacc, p_wm, p_wl, p_o, p_lse, Tq, D, NSPLIT, BM: tl.constexpr, BD: tl.constexpr):
    """Merge the split programs' partials of one (sample, head): out and natural log-sum-exp."""
    i_bh = tl.program_id(0).to(tl.int64)
    o_m = tl.arange(0, BM)
    o_d = tl.arange(0, BD)
    m_row = o_m < Tq
    m_all = tl.full([BM], float("-inf"), dtype=tl.float32)
    for s in range(0, NSPLIT):
        m_all = tl.maximum(m_all, tl.load(p_wm + (i_bh * NSPLIT + s) * Tq + o_m, mask=m_row, other=float("-inf")))
    m_safe = tl.where(m_all == float("-inf"), 0.0, m_all)
    l_all = tl.zeros([BM], dtype=tl.float32)
    acc = tl.zeros([BM, BD], dtype=tl.float32)
    for s in range(0, NSPLIT):
        row = (i_bh * NSPLIT + s) * Tq + o_m
        w = tl.exp2(tl.load(p_wm + row, mask=m_row, other=float("-inf")) - m_safe)
        l_all += w * tl.load(p_wl + row, mask=m_row, other=0.0)
        acc += w[:, None] * tl.load(p_wacc + row[:, None] * BD + o_d[None, :], mask=m_row[:, None], other=0.0)
    empty = l_all == 0.0
    out = acc / tl.where(empty, 1.0, l_all)[:, None]
    tl.store(p_o + i_bh * Tq * D + o_m[:, None] * D + o_d[None, :], out.to(p_o.dtype.element_ty),
             mask=m_row[:, None] & (o_d[None, :] < D))
    lse = tl.where(empty, float("inf"), (m_all + tl.log2(tl.where(empty, 1.0, l_all))) * 0.6931471805599453)
    tl.store(p_lse + i_bh * Tq + o_m, lse, mask=m_row)


# ----------------------------------------------------------------------------------------------
# Backward


@triton.jit
def _delta_kernel(p_do, p_o, p_lse, p_delta, p_lse2, R, D, log2e, BR: tl.constexpr, BD: tl.constexpr):
    """delta[r] = sum_d dO[r, d] O[r, d] in float32 (the softmax backward's row term), and the row's
    log-sum-exp in base 2, lse2[r] = lse[r] * log2(e), for the backward kernels' exp2 (one launch
    for both)."""
    o_r = tl.program_id(0) * BR + tl.arange(0, BR)
    o_d = tl.arange(0, BD)
    m = (o_r[:, None] < R) & (o_d[None, :] < D)
    offs = o_r[:, None].to(tl.int64) * D + o_d[None, :]
    do = tl.load(p_do + offs, mask=m, other=0.0).to(tl.float32)
    o = tl.load(p_o + offs, mask=m, other=0.0).to(tl.float32)
    tl.store(p_delta + o_r, tl.sum(do * o, 1), mask=o_r < R)
    lse = tl.load(p_lse + o_r, mask=o_r < R, other=0.0)
    tl.store(p_lse2 + o_r, lse * log2e, mask=o_r < R)


@triton.jit
def _dkdv_range(b_dk, b_dv, b_k, b_v, p_qb, p_dob, p_lse2, p_delta, start, end, o_n, o_d, Tq, QP, q0, RATIO, kbeg,
                klen, D, qk_scale, slope2, inv_rp, EXTRA, BM: tl.constexpr, MASK: tl.constexpr,
                UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    for r0 in range(start, end, BM):
        o_m = r0 + tl.arange(0, BM)
        pos = RATIO * (q0 + o_m % QP)
        m_qd = (o_m[:, None] < Tq) & (o_d[None, :] < D)
        b_q = tl.load(p_qb + o_m[:, None] * D + o_d[None, :], mask=m_qd, other=0.0)
        b_do = tl.load(p_dob + o_m[:, None] * D + o_d[None, :], mask=m_qd, other=0.0)
        if UPCAST:
            b_q = b_q.to(tl.float32)
            b_do = b_do.to(tl.float32)
        lse2 = tl.load(p_lse2 + o_m, mask=o_m < Tq, other=float("inf"))
        delta = tl.load(p_delta + o_m, mask=o_m < Tq, other=0.0)
        s = _scores(b_q, b_k, o_n, pos, kbeg, klen, qk_scale, slope2, inv_rp, EXTRA, MASK, PRECISION)
        p = tl.exp2(s - lse2[:, None])
        b_dv += tl.dot(tl.trans(p).to(b_do.dtype), b_do, input_precision=PRECISION)
        dp = tl.dot(b_do, tl.trans(b_v), input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        b_dk += tl.dot(tl.trans(ds).to(b_q.dtype), b_q, input_precision=PRECISION)
    return b_dk, b_dv


@triton.jit
def _bwd_dkdv_kernel(p_q, p_k, p_v, p_do, p_lse2, p_delta, p_dk, p_dv, p_slopes, p_q0, p_kbeg, p_klen, H, Tq, Tk, D,
                     scale, qk_scale, inv_rp, EXTRA, QP, RATIO, TQ_CLASS, TK_CLASS, BM: tl.constexpr,
                     BN: tl.constexpr, BD: tl.constexpr, EVEN_D: tl.constexpr, UPCAST: tl.constexpr,
                     PRECISION: tl.constexpr):
    n_n = tl.cdiv(Tk, BN)
    i_n = tl.program_id(0) % n_n
    i_bh = (tl.program_id(0) // n_n).to(tl.int64)
    slope2, q0, kbeg, klen = _sample_and_head(i_bh, H, p_slopes, p_q0, p_kbeg, p_klen)
    j0 = i_n * BN
    o_n = j0 + tl.arange(0, BN)
    o_d = tl.arange(0, BD)
    b_k, b_v = _load_kv(p_k + i_bh * Tk * D, p_v + i_bh * Tk * D, o_n, o_d, Tk, D, True, EVEN_D, UPCAST)
    b_dk = tl.zeros([BN, BD], dtype=tl.float32)
    b_dv = tl.zeros([BN, BD], dtype=tl.float32)
    # Rows i see key j when RATIO (q0 + i) + EXTRA >= j. Unfolded rows (QP == Tq) grow with i: rows
    # before i_first see none of the block, rows from i_full see all of it (when the block lies
    # inside [kbeg, klen)). Folded rows (QP < Tq) revisit small positions: every row block masked.
    need = j0 - EXTRA
    i_first = tl.maximum(tl.cdiv(tl.maximum(need, 0), RATIO) - q0, 0)
    i_full = tl.maximum(tl.cdiv(tl.maximum(need + BN - 1, 0), RATIO) - q0, 0)
    straddles = (j0 < kbeg) | (j0 + BN > klen)
    lo = tl.where(QP < Tq, 0, (i_first // BM) * BM)
    f_lo = tl.where((QP < Tq) | straddles, Tq, tl.cdiv(i_full, BM) * BM)
    dead = (j0 >= klen) | (j0 + BN <= kbeg)
    lo = tl.where(dead, Tq, lo)
    f_lo = tl.maximum(tl.minimum(f_lo, Tq), lo)
    p_qb = p_q + i_bh * Tq * D
    p_dob = p_do + i_bh * Tq * D
    p_lb = p_lse2 + i_bh * Tq
    p_db = p_delta + i_bh * Tq
    b_dk, b_dv = _dkdv_range(b_dk, b_dv, b_k, b_v, p_qb, p_dob, p_lb, p_db, lo, f_lo, o_n, o_d, Tq, QP, q0, RATIO,
                             kbeg, klen, D, qk_scale, slope2, inv_rp, EXTRA, BM, True, UPCAST, PRECISION)
    b_dk, b_dv = _dkdv_range(b_dk, b_dv, b_k, b_v, p_qb, p_dob, p_lb, p_db, f_lo, Tq, o_n, o_d, Tq, QP, q0, RATIO,
                             kbeg, klen, D, qk_scale, slope2, inv_rp, EXTRA, BM, False, UPCAST, PRECISION)
    m_kd = (o_n[:, None] < Tk) & (o_d[None, :] < D)
    out = i_bh * Tk * D + o_n[:, None] * D + o_d[None, :]
    tl.store(p_dk + out, (b_dk * scale).to(p_dk.dtype.element_ty), mask=m_kd)
    tl.store(p_dv + out, b_dv.to(p_dv.dtype.element_ty), mask=m_kd)


@triton.jit
def _dq_range(b_dq, b_q, b_do, lse2, delta, p_kb, p_vb, start, end, pos, o_d, kbeg, klen, Tk, D, qk_scale, slope2,
              inv_rp, EXTRA, BN: tl.constexpr, MASK: tl.constexpr, EVEN_D: tl.constexpr, UPCAST: tl.constexpr,
              PRECISION: tl.constexpr):
    for s0 in range(start, end, BN):
        o_n = s0 + tl.arange(0, BN)
        b_k, b_v = _load_kv(p_kb, p_vb, o_n, o_d, Tk, D, MASK, EVEN_D, UPCAST)
        s = _scores(b_q, b_k, o_n, pos, kbeg, klen, qk_scale, slope2, inv_rp, EXTRA, MASK, PRECISION)
        p = tl.exp2(s - lse2[:, None])
        dp = tl.dot(b_do, tl.trans(b_v), input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        b_dq += tl.dot(ds.to(b_k.dtype), b_k, input_precision=PRECISION)
    return b_dq


@triton.jit
def _bwd_dq_kernel(p_q, p_k, p_v, p_do, p_lse2, p_delta, p_dq, p_slopes, p_q0, p_kbeg, p_klen, H, Tq, Tk, D, scale,
                   qk_scale, inv_rp, EXTRA, QP, RATIO, TQ_CLASS, TK_CLASS, BM: tl.constexpr, BN: tl.constexpr,
                   BD: tl.constexpr, EVEN_D: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    n_m = tl.cdiv(Tq, BM)
    i_m = tl.program_id(0) % n_m
    i_bh = (tl.program_id(0) // n_m).to(tl.int64)
    slope2, q0, kbeg, klen = _sample_and_head(i_bh, H, p_slopes, p_q0, p_kbeg, p_klen)
    o_m, pos, pmin, pmax = _row_positions(i_m * BM, Tq, QP, q0, RATIO, BM)
    o_d = tl.arange(0, BD)
    m_qd = (o_m[:, None] < Tq) & (o_d[None, :] < D)
    b_q = tl.load(p_q + i_bh * Tq * D + o_m[:, None] * D + o_d[None, :], mask=m_qd, other=0.0)
    b_do = tl.load(p_do + i_bh * Tq * D + o_m[:, None] * D + o_d[None, :], mask=m_qd, other=0.0)
    if UPCAST:
        b_q = b_q.to(tl.float32)
        b_do = b_do.to(tl.float32)
    lse2 = tl.load(p_lse2 + i_bh * Tq + o_m, mask=o_m < Tq, other=float("inf"))
    delta = tl.load(p_delta + i_bh * Tq + o_m, mask=o_m < Tq, other=0.0)
    lo, a_hi, f_lo, f_hi, hi = _key_ranges(pmin, pmax, kbeg, klen, EXTRA, BN)
    p_kb = p_k + i_bh * Tk * D
    p_vb = p_v + i_bh * Tk * D
    b_dq = tl.zeros([BM, BD], dtype=tl.float32)
    b_dq = _dq_range(b_dq, b_q, b_do, lse2, delta, p_kb, p_vb, lo, a_hi, pos, o_d, kbeg, klen, Tk, D, qk_scale, slope2,
                     inv_rp, EXTRA, BN, True, EVEN_D, UPCAST, PRECISION)
    b_dq = _dq_range(b_dq, b_q, b_do, lse2, delta, p_kb, p_vb, f_lo, f_hi, pos, o_d, kbeg, klen, Tk, D, qk_scale,
                     slope2, inv_rp, EXTRA, BN, False, EVEN_D, UPCAST, PRECISION)
    b_dq = _dq_range(b_dq, b_q, b_do, lse2, delta, p_kb, p_vb, tl.maximum(f_hi, lo), hi, pos, o_d, kbeg, klen, Tk, D,
                     qk_scale, slope2, inv_rp, EXTRA, BN, True, EVEN_D, UPCAST, PRECISION)
    tl.store(p_dq + i_bh * Tq * D + o_m[:, None] * D + o_d[None, :], (b_dq * scale).to(p_dq.dtype.element_ty),
             mask=m_qd)


# ----------------------------------------------------------------------------------------------
# Configurations and launchers


def _cfg(BM, BN, warps, stages):
    return triton.Config({"BM": BM, "BN": BN}, num_warps=warps, num_stages=stages)


# Candidates the autotuner times on a GPU (every one is also run under the interpreter by the tests).
# Each list's first of a regime is what REACTFAST_AUTOTUNE=0 and deterministic runs launch: for the
# forward the fastest on an H100 at B16 H8 T750 d64 bf16 (0.070 ms; the candidates took 0.070-0.134).
FWD_CONFIGS = [_cfg(64, 64, 4, 3), _cfg(64, 32, 4, 3), _cfg(64, 64, 4, 4), _cfg(64, 128, 4, 3), _cfg(64, 128, 8, 3),
               _cfg(128, 32, 8, 3), _cfg(128, 64, 8, 3), _cfg(128, 64, 4, 3), _cfg(128, 128, 8, 2),
               _cfg(16, 64, 4, 3), _cfg(16, 128, 4, 3), _cfg(16, 128, 4, 4)]
DKDV_CONFIGS = [_cfg(32, 64, 4, 3), _cfg(64, 64, 4, 3), _cfg(64, 64, 8, 2), _cfg(32, 128, 4, 3), _cfg(64, 128, 8, 2),
                _cfg(16, 64, 4, 3), _cfg(16, 128, 4, 3)]
DQ_CONFIGS = [_cfg(64, 32, 4, 3), _cfg(64, 64, 4, 3), _cfg(128, 64, 8, 2), _cfg(128, 32, 8, 3), _cfg(64, 128, 8, 2),
              _cfg(16, 64, 4, 3), _cfg(16, 128, 4, 3)]
# The interpreter's one configuration per kernel.
INTERPRET_CONFIG = {"BM": 32, "BN": 32}
_KEY = ["D", "TQ_CLASS", "TK_CLASS"]


def _prune(configs, named_args, **kwargs):
    """Row blocks of 16 for the decode regime (Tq <= 16) and only there."""
    small = named_args["Tq"] <= DECODE_MAX_Q
    return [c for c in configs if (c.kwargs["BM"] == 16) == small] or configs


def _tuned(kernel, configs, key):
    return triton.autotune(configs=configs, key=key, prune_configs_by={"early_config_prune": _prune})(kernel)


if not kernels.INTERPRET:
    _fwd_tuned = _tuned(_fwd_kernel, FWD_CONFIGS, _KEY + ["SPLIT"])
    _dkdv_tuned = _tuned(_bwd_dkdv_kernel, DKDV_CONFIGS, _KEY)
    _dq_tuned = _tuned(_bwd_dq_kernel, DQ_CONFIGS, _KEY)


def _launch(kernel, tuned, grid, args, meta, config, configs, Tq):
    """:func:`reactfast.kernels.launch` with the regime's first candidate that fits as the
    deterministic configuration (row blocks of 16 for Tq <= DECODE_MAX_Q, larger ones otherwise)."""
    fixed = [c for c in configs if (c.kwargs["BM"] == 16) == (Tq <= DECODE_MAX_Q)]
    kernels.launch(kernel, tuned, grid, args, meta, config, fixed, INTERPRET_CONFIG)


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def decode_splits(q: torch.Tensor, B: int, H: int, Tq: int, Tk: int) -> int:
    """How many programs share one (sample, head)'s keys in the forward: 1 unless there are at most
    DECODE_MAX_Q queries and too few (sample, head) pairs to give every multiprocessor two programs."""
    if Tq > DECODE_MAX_Q:
        return 1
    sms = _sm_count(q.device.index if q.device.index is not None else torch.cuda.current_device()) if q.is_cuda else 8
    return max(1, min(triton.cdiv(Tk, SPLIT_MIN_KEYS), triton.cdiv(2 * sms, B * H)))


def _common(q, precision):
    upcast, prec = kernels.dot_precision(q.dtype, precision)
    D = q.shape[3]
    BD = max(16, triton.next_power_of_2(D))
    return BD, dict(BD=BD, EVEN_D=BD == D, UPCAST=upcast, PRECISION=prec)


@on_tensor_device
def biased_attention_fwd(q, k, v, slopes, q_offset, key_start, key_lengths, scale, period, ratio, extra, qperiod,
                         precision="tf32x3", splits=None, config=None):
    """q (B, H, Tq, D), k/v (B, H, Tk, D) contiguous; slopes (H,) float32; q_offset, key_start,
    key_lengths (B,) int32 (keys j with key_start <= j < key_lengths are visible). ``precision``
    (float32 inputs on a GPU): one of ``kernels.PRECISIONS``. ``splits`` (default :func:`decode_splits`) and
    ``config`` ({"BM", "BN"}, default autotuned) are for tests. Returns out (q's dtype) and the
    natural row log-sum-exp (B, H, Tq) float32 (+inf for empty rows)."""
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    BD, meta = _common(q, precision)
    nsplit = decode_splits(q, B, H, Tq, Tk) if splits is None else splits
    if nsplit > 1 and Tq > DECODE_MAX_Q:
        raise ValueError(f"split keys need at most {DECODE_MAX_Q} queries, got Tq={Tq}")
    # Keys per split program, on SPLIT_ALIGN boundaries; the splits together cover every key.
    chunk = triton.cdiv(triton.cdiv(Tk, nsplit), SPLIT_ALIGN) * SPLIT_ALIGN
    out = _backend.empty(q.shape, q.dtype, q.device)
    lse = _backend.empty((B, H, Tq), torch.float32, q.device)
    if nsplit > 1:
        wacc = _backend.empty((B * H, nsplit, Tq, BD), torch.float32, q.device)
        wm = _backend.empty((B * H, nsplit, Tq), torch.float32, q.device)
        wl = _backend.empty((B * H, nsplit, Tq), torch.float32, q.device)
    else:
        wacc = wm = wl = lse
    args = (q, k, v, out, lse, wacc, wm, wl, slopes, q_offset, key_start, key_lengths, H, Tq, Tk, D,
            scale * LOG2E, 1.0 / (ratio * period), extra, qperiod, ratio, chunk, kernels.length_class(Tq),
            kernels.length_class(Tk))
    _launch(_fwd_kernel, None if kernels.INTERPRET else _fwd_tuned,
            lambda c: (triton.cdiv(Tq, c["BM"]) * B * H, nsplit), args, dict(meta, SPLIT=nsplit > 1), config,
            FWD_CONFIGS, Tq)
    if nsplit > 1:
        _combine_kernel[(B * H,)](wacc, wm, wl, out, lse, Tq, D, nsplit, BM=DECODE_MAX_Q, BD=BD)
    return out, lse


@on_tensor_device
def biased_attention_bwd(do, q, k, v, out, lse, slopes, q_offset, key_start, key_lengths, scale, period, ratio, extra,
                         qperiod, precision="tf32x3", config=None, dq_config=None):
    """Gradients (dq, dk, dv) in the inputs' dtypes; inputs as for the forward, ``do`` contiguous.
    ``config`` (tests) is the dK/dV kernel's configuration and, unless ``dq_config`` is given, the
    dQ kernel's."""
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    BD, meta = _common(q, precision)
    R = B * H * Tq
    delta = _backend.empty((B, H, Tq), torch.float32, q.device)
    lse2 = _backend.empty((B, H, Tq), torch.float32, q.device)
    BR = 64
    _delta_kernel[(triton.cdiv(R, BR),)](do, out, lse.contiguous(), delta, lse2, R, D, LOG2E, BR=BR, BD=BD)
    dq = _backend.empty(q.shape, q.dtype, q.device)
    dk = _backend.empty(k.shape, k.dtype, k.device)
    dv = _backend.empty(v.shape, v.dtype, v.device)
    tail = (H, Tq, Tk, D, scale, scale * LOG2E, 1.0 / (ratio * period), extra, qperiod, ratio,
            kernels.length_class(Tq), kernels.length_class(Tk))
    heads = (slopes, q_offset, key_start, key_lengths)
    _launch(_bwd_dkdv_kernel, None if kernels.INTERPRET else _dkdv_tuned, lambda c: (triton.cdiv(Tk, c["BN"]) * B * H,),
            (q, k, v, do, lse2, delta, dk, dv, *heads, *tail), meta, config, DKDV_CONFIGS, Tq)
    _launch(_bwd_dq_kernel, None if kernels.INTERPRET else _dq_tuned, lambda c: (triton.cdiv(Tq, c["BM"]) * B * H,),
            (q, k, v, do, lse2, delta, dq, *heads, *tail), meta, config if dq_config is None else dq_config,
            DQ_CONFIGS, Tq)
    return dq, dk, dv
