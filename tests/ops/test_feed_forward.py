import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reactfast import _backend
from reactfast.nn.dropout import Dropout
from reactfast.nn.transformer import post_norm_feed_forward
from reactfast.ops import add_layer_norm, feed_forward, gelu_dropout
from reactfast.ops.dropout import draw_seed
from reactfast.reference.feed_forward import feed_forward as ref
from reactfast.testing import assert_rel_close

cpp = pytest.mark.skipif(not (_backend.backend_status("cpp", "cpu", "gelu_dropout")[0]
                              and _backend.backend_status("cpp", "cpu", "add_layer_norm")[0]),
                         reason="C++ kernels unavailable")
NAMES = ("x", "w1", "b1", "w2", "b2", "norm_weight", "norm_bias")


def _params(shape, hidden, bias=True, affine=True, dtype=torch.float64):
    D = shape[-1]
    t = {"x": torch.randn(*shape, dtype=dtype), "w1": torch.randn(hidden, D, dtype=dtype) / D ** 0.5,
         "b1": torch.randn(hidden, dtype=dtype) * 0.1 if bias else None,
         "w2": torch.randn(D, hidden, dtype=dtype) / hidden ** 0.5,
         "b2": torch.randn(D, dtype=dtype) * 0.1 if bias else None,
         "norm_weight": 1 + 0.1 * torch.randn(D, dtype=dtype) if affine else None,
         "norm_bias": 0.1 * torch.randn(D, dtype=dtype) if affine else None}
    return {k: None if v is None else v.requires_grad_() for k, v in t.items()}


def _as(params, dtype):
    return {k: None if v is None else v.detach().to(dtype).requires_grad_() for k, v in params.items()}


def _grads(out, params, g):
    live = [k for k in NAMES if params[k] is not None]
    return dict(zip(live, torch.autograd.grad(out, [params[k] for k in live], g)))


@cpp
@pytest.mark.parametrize("shape,hidden", [((5, 64), 128), ((2, 3, 17), 40), ((24, 32, 64), 128), ((1, 16), 24)])
@pytest.mark.parametrize("p_hidden,p_out", [(0.0, 0.0), (0.1, 0.1), (0.5, 0.0), (0.0, 0.3)])
def test_cpp_against_float64_reference(shape, hidden, p_hidden, p_out):
    p64 = _params(shape, hidden)
    p32 = _as(p64, torch.float32)
    seeds = [int(s) for s in torch.randint(0, 2 ** 62, (2,))]
    expected = ref(*(p64[k] for k in NAMES), 1e-5, p_hidden, p_out, *seeds)
    out = feed_forward(*(p32[k] for k in NAMES), 1e-5, p_hidden, p_out, seed_hidden=seeds[0], seed_out=seeds[1],
                       backend="cpp")
    assert out.dtype == torch.float32 and out.shape == shape
    assert type(out.grad_fn).__name__ == "_FeedForwardBackward"
    assert_rel_close("out", expected, out, torch.float32)
    g = torch.randn(shape, dtype=torch.float64)
    want, got = _grads(expected, p64, g), _grads(out, p32, g.float())
    for name in want:
        assert_rel_close(f"d{name}", want[name], got[name], torch.float32)


@cpp
@pytest.mark.parametrize("bias,affine", [(False, True), (True, False), (False, False)])
def test_without_biases_or_affine(bias, affine):
    p64 = _params((6, 9, 16), 24, bias=bias, affine=affine)
    p32 = _as(p64, torch.float32)
    expected = ref(*(p64[k] for k in NAMES), 1e-5, 0.2, 0.2, 11, 12)
    out = feed_forward(*(p32[k] for k in NAMES), p_hidden=0.2, p_out=0.2, seed_hidden=11, seed_out=12)
    assert_rel_close("out", expected, out, torch.float32)
    g = torch.randn(6, 9, 16, dtype=torch.float64)
    want, got = _grads(expected, p64, g), _grads(out, p32, g.float())
    assert set(want) == set(got)
    for name in want:
        assert_rel_close(f"d{name}", want[name], got[name], torch.float32)


@cpp
def test_same_masks_and_draws_as_the_composition():
    """Unseeded: the hidden mask's seed drawn first, then the output's, as gelu_dropout then
    add_layer_norm would draw them; the same output bit for bit and the same generator state after."""
    p = _as(_params((4, 10, 32), 64), torch.float32)
    args = [p[k] for k in NAMES]
    torch.manual_seed(5)
    fused = feed_forward(*args, p_hidden=0.25, p_out=0.15)
    after = torch.rand(())
    torch.manual_seed(5)
    a = gelu_dropout(F.linear(args[0], args[1], args[2]), 0.25)
    composed = add_layer_norm(args[0], F.linear(a, args[3], args[4]), args[5], args[6], 1e-5, 0.15)
    assert torch.equal(fused, composed)
    assert torch.equal(torch.rand(()), after)
    torch.manual_seed(5)
    s1, s2 = draw_seed(), draw_seed()
    assert_rel_close("seeds", ref(*(t.double() for t in args), 1e-5, 0.25, 0.15, s1, s2), fused, torch.float32)


@cpp
def test_evaluation_and_p0_draw_nothing():
    p = _as(_params((3, 7, 16), 32), torch.float32)
    args = [p[k] for k in NAMES]
    expected = ref(*(t.double() for t in args))
    for kw in ({"p_hidden": 0.3, "p_out": 0.3, "training": False}, {}):
        torch.manual_seed(0)
        out = feed_forward(*args, **kw)
        drawn_after = torch.rand(())
        torch.manual_seed(0)
        assert torch.equal(drawn_after, torch.rand(()))        # no seed drawn
        assert_rel_close("out", expected, out, torch.float32)
    with torch.no_grad():
        assert_rel_close("no grad", expected, feed_forward(*args), torch.float32)


def test_other_dtypes_take_the_composition():
    p = _params((3, 5, 8), 12)
    args = [p[k] for k in NAMES]
    out = feed_forward(*args, p_hidden=0.2, p_out=0.1, seed_hidden=3, seed_out=4)
    assert out.dtype == torch.float64 and out.grad_fn is not None
    torch.testing.assert_close(out, ref(*args, 1e-5, 0.2, 0.1, 3, 4), rtol=1e-12, atol=1e-12)
    forced = feed_forward(*_as(p, torch.float32).values(), p_hidden=0.2, seed_hidden=3, backend="reference")
    assert_rel_close("forced reference", ref(*args, 1e-5, 0.2, 0.0, 3, None), forced, torch.float32)


@pytest.mark.parametrize("change,match", [
    ({"w1": torch.randn(8, 5)}, r"w1 must be a \(hidden, 4\)"),
    ({"b1": torch.randn(7)}, r"b1 must have shape \(8,\)"),
    ({"w2": torch.randn(4, 7)}, r"w2 must have shape \(4, 8\)"),
    ({"b2": torch.randn(4, dtype=torch.float64)}, "b2 must match x's dtype"),
    ({"norm_weight": torch.randn(5)}, r"norm_weight must have shape \(4,\)"),
    ({"w2": None}, "w2 must be a tensor"),
])
def test_bad_parameters_are_named(change, match):
    args = {"x": torch.randn(2, 3, 4), "w1": torch.randn(8, 4), "b1": torch.randn(8), "w2": torch.randn(4, 8),
            "b2": torch.randn(4), "norm_weight": None, "norm_bias": None}
    args.update(change)
    with pytest.raises((ValueError, TypeError), match=match):
        feed_forward(*(args[k] for k in NAMES))


@pytest.mark.parametrize("kw,match", [({"eps": 0.0}, "eps"), ({"p_hidden": 1.5}, "p_hidden must be"),
                                      ({"p_out": -0.1}, "p_out must be"), ({"backend": "triton"}, "backend"),
                                      ({"seed_out": 1.5}, "seed_out must be an int")])
def test_bad_arguments(kw, match):
    x, w1, w2 = torch.randn(2, 4), torch.randn(8, 4), torch.randn(4, 8)
    with pytest.raises((ValueError, TypeError), match=match):
        feed_forward(x, w1, None, w2, None, **kw)


def _modules(D=32, hidden=64):
    torch.manual_seed(0)
    return nn.Linear(D, hidden), nn.GELU(), Dropout(0.2), nn.Linear(hidden, D), nn.LayerNorm(D), Dropout(0.1)


@cpp
def test_post_norm_feed_forward_fuses_only_what_it_can():
    """One fused node for Linear, exact GELU, the package's Dropout, Linear, LayerNorm, equal bit for
    bit to the modules run one by one from the same generator state; the tanh GELU and torch's
    nn.Dropout run as written."""
    first, act, drop, second, norm, out_drop = _modules()
    x = torch.randn(3, 9, 32, requires_grad=True)

    def by_modules(act, drop, out_drop):
        return norm(x + out_drop(second(drop(act(first(x))))))

    torch.manual_seed(2)
    fused = post_norm_feed_forward(first, act, drop, second, norm, x, out_drop)
    assert type(fused.grad_fn).__name__ == "_FeedForwardBackward"
    torch.manual_seed(2)
    assert_rel_close("fused", by_modules(act, drop, out_drop).double(), fused, torch.float32)
    for other in ((nn.GELU(approximate="tanh"), drop, out_drop), (act, nn.Dropout(0.2), out_drop),
                  (act, drop, nn.Dropout(0.1))):
        torch.manual_seed(3)
        out = post_norm_feed_forward(first, other[0], other[1], second, norm, x, other[2])
        assert type(out.grad_fn).__name__ != "_FeedForwardBackward"
        torch.manual_seed(3)
        torch.testing.assert_close(out, by_modules(*other), rtol=1e-6, atol=1e-6)
    for m in (drop, out_drop):
        m.eval()
    assert_rel_close("eval", ref(x.double(), first.weight.double(), first.bias.double(), second.weight.double(),
                                 second.bias.double(), norm.weight.double(), norm.bias.double()),
                     post_norm_feed_forward(first, act, drop, second, norm, x, out_drop), torch.float32)


@cpp
def test_a_kernel_forced_elsewhere_is_honoured(monkeypatch):
    """REACTFAST_BACKEND sending gelu_dropout (or add_layer_norm) to its reference takes the
    composition, whose calls then follow it; forcing feed_forward itself still wins."""
    p = _as(_params((2, 5, 16), 32), torch.float32)
    args = [p[k] for k in NAMES]
    monkeypatch.setenv("REACTFAST_BACKEND", "gelu_dropout:reference")
    out = feed_forward(*args, p_hidden=0.2, p_out=0.1, seed_hidden=1, seed_out=2)
    assert type(out.grad_fn).__name__ == "_AddLayerNormBackward"
    assert_rel_close("composed", ref(*(t.double() for t in args), 1e-5, 0.2, 0.1, 1, 2), out, torch.float32)
    assert type(feed_forward(*args, backend="cpp").grad_fn).__name__ == "_FeedForwardBackward"
    monkeypatch.setenv("REACTFAST_BACKEND", "add_layer_norm:reference")
    assert type(feed_forward(*args).grad_fn).__name__ != "_FeedForwardBackward"
    monkeypatch.setenv("REACTFAST_BACKEND", "feed_forward:reference")
    assert type(feed_forward(*args).grad_fn).__name__ not in ("_FeedForwardBackward", "_AddLayerNormBackward")
