"""The middle of a feed-forward, ``dropout(gelu(h))``, on a CPU, float32, forward + backward: the
fused C++ call against the pair it replaces (torch's ``F.gelu``, then ``reactfast.ops.dropout``:
two calls, two autograd nodes, GELU's backward evaluating erf and exp again), at ReactFace's demo
shapes (a window's 24 sample rows x 32 frames x 128 hidden, the speaker encoder's 8 x 128 frames)
and at a wider layer. Each side is checked against the float64 reference first (the fused GELU is
the more accurate: its error is printed beside torch's); times are interleaved best-of rounds."""

import pytest
import torch
import torch.nn.functional as F

from reactfast.ops import dropout, gelu_dropout
from reactfast.reference.gelu_dropout import gelu_dropout as ref
from reactfast.testing import assert_rel_close

from ._grad_timing import grad_calls

CALLS = 30           # calls per timed round (the demo step makes 27)

CASES = [("ReactFace window FFN, 24x32x128", (24, 32, 128)), ("ReactFace speaker FFN, 8x128x128", (8, 128, 128)),
         ("wide layer, 8x128x2048", (8, 128, 2048))]


def _rel(expected, got):
    return ((got.double() - expected).norm() / expected.norm()).item()


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_gelu_dropout_fused_vs_pair(case, best_times, bench_report):
    label, shape = case
    g = torch.Generator().manual_seed(0)
    h, grad = torch.randn(*shape, generator=g) * 2, torch.randn(*shape, generator=g)
    leaf = h.clone().requires_grad_()

    def fused(seed):
        return gelu_dropout(leaf, 0.1, seed=seed)

    def pair(seed):
        return dropout(F.gelu(leaf), 0.1, seed=seed)

    expected = ref(h.double(), 0.1, 7)
    errors = {}
    for name, fn in (("fused", fused), ("pair", pair)):
        got = fn(7)
        assert_rel_close(name, expected, got, torch.float32)
        errors[name] = _rel(expected, got)

    t = best_times({name: grad_calls(fn, leaf, grad, CALLS) for name, fn in (("fused", fused), ("pair", pair))},
                   rounds=7)
    us = {k: 1e6 * v / CALLS for k, v in t.items()}
    bench_report(f"gelu_dropout {label} fwd+bwd, cpu {torch.get_num_threads()} threads: {us['fused']:.0f} us fused "
                 f"vs {us['pair']:.0f} us F.gelu + dropout ({t['pair'] / t['fused']:.2f}x); error vs float64 "
                 f"{errors['fused']:.1e} fused, {errors['pair']:.1e} pair")
