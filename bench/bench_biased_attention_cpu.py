"""Biased attention on a CPU, float32, forward + backward: the C++ kernels against the SDPA path
(torch's fused attention with one bias per distinct pattern, shared over the batch) and the
reference, at the demo ReactFace's attention calls (4 heads of 16; three samples of a conversation
folded over its keys), long causal calls, every key visible and an online window, at head dims 16,
32 and 64 (these figures set ``CPP_MAX_HEAD_DIM``, the widest head the CPU default gives the C++
kernels). Each provider is checked against a float64 reference before timing; times are
interleaved best-of rounds in one run."""

import pytest
import torch

from reactfast.ops import biased_attention
from reactfast.reference import biased_attention as ref
from reactfast.testing import assert_rel_close

# (label, B, H, Tq, Tk, d, kwargs)
CASES = [
    ("ReactFace past-listener audio fusion, 3rd window", 8, 4, 96, 256, 16,
     dict(q_offset=64, key_start=128, audio_ratio=2, extra=1, query_period=32)),
    ("ReactFace SLBS audio, one window", 8, 4, 96, 64, 16, dict(q_offset=0, key_start=0, audio_ratio=2, extra=1,
                                                                 query_period=32)),
    ("ReactFace speaker self-attention, 128 frames", 8, 4, 128, 128, 16, dict(q_offset=0, key_start=0)),
    ("causal T750 d16", 4, 8, 750, 750, 16, dict(q_offset=0, key_start=0)),
    ("causal T750 d32", 4, 8, 750, 750, 32, dict(q_offset=0, key_start=0)),
    ("causal T750 d64", 4, 8, 750, 750, 64, dict(q_offset=0, key_start=0)),
    ("all visible T256 d16", 8, 4, 256, 256, 16, dict(q_offset=256, key_start=0)),
    ("all visible T256 d64", 8, 4, 256, 256, 64, dict(q_offset=256, key_start=0)),
    ("all visible T256 d32", 8, 4, 256, 256, 32, dict(q_offset=256, key_start=0)),
    ("online Tq8 Tk256 d16", 64, 8, 8, 256, 16, dict(q_offset=248, key_start=0)),
    ("online Tq8 Tk256 d32", 64, 8, 8, 256, 32, dict(q_offset=248, key_start=0)),
    ("online Tq8 Tk256 d64", 64, 8, 8, 256, 64, dict(q_offset=248, key_start=0)),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_cpu_biased_attention_fwd_bwd(case, best_times, bench_report):
    label, B, H, Tq, Tk, d, kw = case
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, H, T, d, generator=g).requires_grad_() for T in (Tq, Tk, Tk))
    grad = torch.randn(B, H, Tq, d, generator=g)
    kw = dict(kw, key_start=torch.full((B,), kw["key_start"]), period=8)
    want = ref.biased_attention(q.detach().double(), k.detach().double(), v.detach().double(), **kw)

    def run(backend):
        def step():
            out = biased_attention(q, k, v, backend=backend, **kw)
            torch.autograd.grad(out, (q, k, v), grad)
            return out
        return step

    for backend in ("cpp", "sdpa"):
        assert_rel_close(f"{backend} out", want, run(backend)(), torch.float32)
    t = best_times({name: run(name) for name in ("cpp", "sdpa", "reference")}, rounds=5)
    bench_report(f"biased attention fwd+bwd {label} (B{B} H{H} Tq{Tq} Tk{Tk} d{d}), cpu {torch.get_num_threads()} "
                 f"threads: cpp {1e3 * t['cpp']:.2f} ms, sdpa {1e3 * t['sdpa']:.2f} ms "
                 f"({t['sdpa'] / t['cpp']:.2f}x), reference {1e3 * t['reference']:.2f} ms "
                 f"({t['reference'] / t['cpp']:.2f}x)")
