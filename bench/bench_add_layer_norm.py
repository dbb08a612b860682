"""The post-norm residual step ``LayerNorm(x + dropout(h))`` on a CPU, float32, forward + backward:
the fused C++ call against the composition it replaces (``reactfast.ops.dropout``, the add,
``F.layer_norm``: three calls and three autograd nodes), at ReactFace's demo shapes (a window of
24 sample rows x 32 frames x 64, the CIE encoder's 24 x 34 tokens) and at wider rows. Each side is
checked against a float64 reference first; times are interleaved best-of rounds in one run."""

import pytest
import torch
import torch.nn.functional as F

from reactfast.ops import add_layer_norm, dropout
from reactfast.reference.add_layer_norm import add_layer_norm as ref
from reactfast.testing import assert_rel_close

from ._grad_timing import grad_calls

CALLS = 50           # calls per timed round (the demo step makes about 70)

CASES = [("ReactFace window block, 24x32x64", (24, 32, 64)), ("ReactFace CIE tokens, 24x34x64", (24, 34, 64)),
         ("wide rows, 8x128x512", (8, 128, 512))]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_add_layer_norm_fused_vs_composite(case, best_times, bench_report):
    label, shape = case
    g = torch.Generator().manual_seed(0)
    D = shape[-1]
    x, h, grad = (torch.randn(*shape, generator=g) for _ in range(3))
    w, b = torch.randn(D, generator=g), torch.randn(D, generator=g)
    leaves = [t.clone().requires_grad_() for t in (x, h, w, b)]

    def fused(seed):
        return add_layer_norm(*leaves, p=0.1, seed=seed)

    def composite(seed):
        return F.layer_norm(leaves[0] + dropout(leaves[1], 0.1, seed=seed), (D,), leaves[2], leaves[3])

    expected = ref(*(t.double().requires_grad_() for t in (x, h, w, b)), p=0.1, seed=7)
    for name, fn in (("fused", fused), ("composite", composite)):
        assert_rel_close(name, expected, fn(7), torch.float32)

    sides = {"fused": fused, "composite": composite}
    t = best_times({name: grad_calls(fn, leaves, grad, CALLS) for name, fn in sides.items()}, rounds=7)
    us = {k: 1e6 * v / CALLS for k, v in t.items()}
    bench_report(f"add_layer_norm {label} fwd+bwd, cpu {torch.get_num_threads()} threads: {us['fused']:.0f} us fused "
                 f"vs {us['composite']:.0f} us dropout + add + layer_norm ({t['composite'] / t['fused']:.2f}x)")
