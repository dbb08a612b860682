"""Triton kernel for the first temporal difference out[b, t, d] = x[b, t + 1, d] - x[b, t, d]."""

import torch
import triton
import triton.language as tl

from reactfast import _backend
from reactfast.kernels import on_tensor_device


@triton.jit
def _frame_diff_fwd_kernel(p_x, p_out, T, D, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    i_b = tl.program_id(0).to(tl.int64)
    i_t = tl.program_id(1).to(tl.int64)
    o_t = i_t * BLOCK_T + tl.arange(0, BLOCK_T)
    o_d = tl.arange(0, BLOCK_D)
    m_td = (o_t[:, None] < T - 1) & (o_d[None, :] < D)
    p_cur = p_x + i_b * T * D + o_t[:, None] * D + o_d[None, :]
    # [BT, BD]
    b_cur = tl.load(p_cur, mask=m_td, other=0.0).to(tl.float32)
    b_next = tl.load(p_cur + D, mask=m_td, other=0.0).to(tl.float32)
    p_o = p_out + i_b * (T - 1) * D + o_t[:, None] * D + o_d[None, :]
    tl.store(p_o, (b_next - b_cur).to(p_out.dtype.element_ty), mask=m_td)


@on_tensor_device
def frame_diff_fwd(x: torch.Tensor) -> torch.Tensor:
    """x: contiguous (B, T, D) with T >= 2 -> (B, T - 1, D)."""
    B, T, D = x.shape
    out = _backend.empty((B, T - 1, D), x.dtype, x.device)
    BLOCK_D = triton.next_power_of_2(D)
    BLOCK_T = max(1, min(64, 4096 // BLOCK_D))
    grid = (B, triton.cdiv(T - 1, BLOCK_T))
    _frame_diff_fwd_kernel[grid](x, out, T, D, BLOCK_T=BLOCK_T, BLOCK_D=BLOCK_D)
    return out
