"""A post-norm feed-forward sublayer, ``LayerNorm(x + dropout(W2 dropout(GELU(W1 x + b1)) + b2))``,
on a CPU, float32, forward + backward: the one-node call (``reactfast.ops.feed_forward``) against the
modules it replaces run one by one (``nn.Linear``, the fused GELU + dropout, ``nn.Linear``, the
fused residual end: the same kernels, four calls and about ten autograd nodes), at ReactFace's demo
shapes (a window's 24 sample rows x 32 frames, width 64, hidden 128; the speaker encoder's 8 x 128
frames) and at the authors' width (128, hidden 256). Both are checked against the float64 reference
first; times are interleaved best-of rounds."""

import pytest
import torch

from reactfast.nn.dropout import Dropout
from reactfast.nn.transformer import activation_dropout, add_norm, post_norm_feed_forward
from reactfast.ops.dropout import draw_seed
from reactfast.reference.feed_forward import feed_forward as ref
from reactfast.testing import assert_rel_close

from ._grad_timing import grad_calls

CALLS = 25           # calls per timed round (the demo step makes 21)

CASES = [("ReactFace window, 24x32x64, hidden 128", (24, 32, 64), 128),
         ("ReactFace speaker frames, 8x128x64, hidden 128", (8, 128, 64), 128),
         ("authors' width, 24x8x128, hidden 256", (24, 8, 128), 256)]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_feed_forward_one_node_vs_modules(case, best_times, bench_report):
    label, shape, hidden = case
    torch.manual_seed(0)
    D = shape[-1]
    first, act, drop, second = torch.nn.Linear(D, hidden), torch.nn.GELU(), Dropout(0.1), torch.nn.Linear(hidden, D)
    norm, out_drop = torch.nn.LayerNorm(D), Dropout(0.1)
    x = torch.randn(*shape, requires_grad=True)
    grad = torch.randn(*shape)

    def fused(_call=None):     # the dropout seeds drawn inside (grad_calls passes the call index)
        return post_norm_feed_forward(first, act, drop, second, norm, x, out_drop)

    def modules(_call=None):
        return add_norm(norm, x, second(activation_dropout(act, drop, first(x))), out_drop)

    for name, fn in (("one node", fused), ("modules", modules)):
        torch.manual_seed(1)
        got = fn()
        torch.manual_seed(1)
        seeds = [draw_seed(), draw_seed()]
        params = [t.detach().double() for t in (first.weight, first.bias, second.weight, second.bias, norm.weight,
                                                 norm.bias)]
        assert_rel_close(name, ref(x.detach().double(), *params, norm.eps, 0.1, 0.1, *seeds), got, torch.float32)
    leaves = [x, first.weight, first.bias, second.weight, second.bias, norm.weight, norm.bias]

    t = best_times({name: grad_calls(fn, leaves, grad, CALLS) for name, fn in (("fused", fused), ("modules", modules))},
                   rounds=9)
    us = {k: 1e6 * v / CALLS for k, v in t.items()}
    bench_report(f"feed_forward {label} fwd+bwd, cpu {torch.get_num_threads()} threads: {us['fused']:.0f} us one "
                 f"node vs {us['modules']:.0f} us modules one by one ({t['modules'] / t['fused']:.2f}x)")
