"""Biased attention, forward + backward, against scaled_dot_product_attention with the bias
materialised as a float mask (what ReactFace does today). GPU only: the Triton interpreter on a
CPU says nothing about speed."""

import pytest
import torch

from reactfast.ops import biased_attention
from reactfast.reference.biased_attention import alibi_slopes, attention_bias
from reactfast.testing import assert_close

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _sdpa(q, k, v, bias):
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias)


@pytest.mark.parametrize("d", [16, 64])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fwd_bwd_vs_sdpa(d, dtype, bench_report):
    import triton.testing

    B, H, T = 16, 8, 750
    q, k, v = (torch.randn(B, H, T, d, device="cuda", dtype=dtype, requires_grad=True) for _ in range(3))
    grad = torch.randn(B, H, T, d, device="cuda", dtype=dtype)

    def fused():
        out = biased_attention(q, k, v, period=8)
        torch.autograd.grad(out, (q, k, v), grad)
        return out

    def baseline():
        bias = attention_bias(T, T, alibi_slopes(H, "cuda"), 0, 8, batch=B).to(dtype)
        out = _sdpa(q, k, v, bias)
        torch.autograd.grad(out, (q, k, v), grad)
        return out

    assert_close("out", baseline().float(), fused().float(), atol=3e-2, rtol=3e-2)
    torch.cuda.synchronize()
    results = {}
    for name, fn in (("fused", fused), ("sdpa+mask", baseline)):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        ms = triton.testing.do_bench(fn)
        peak = torch.cuda.max_memory_allocated() - base
        results[name] = (ms, peak)
    speedup = results["sdpa+mask"][0] / results["fused"][0]
    bench_report(f"biased attention fwd+bwd B={B} H={H} T={T} d={d} {dtype}: fused {results['fused'][0]:.3f} ms, "
                 f"sdpa+mask {results['sdpa+mask'][0]:.3f} ms -> {speedup:.2f}x; extra memory fused "
                 f"{results['fused'][1] / 2**20:.1f} MiB vs {results['sdpa+mask'][1] / 2**20:.1f} MiB")
    assert speedup >= 2.0
