import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reactfast import _backend
from reactfast.nn.dropout import Dropout
from reactfast.nn.transformer import activation_dropout
from reactfast.ops import dropout, gelu_dropout
from reactfast.ops.dropout import draw_seed
from reactfast.reference import dropout as ref_dropout
from reactfast.reference.gelu_dropout import gelu as ref_gelu
from reactfast.reference.gelu_dropout import gelu_dropout as ref
from reactfast.testing import assert_rel_close

cpp = pytest.mark.skipif(not _backend.backend_status("cpp", "cpu", "gelu_dropout")[0],
                         reason="C++ kernels unavailable")

# Sizes with vector tails (1, 7, 63, 97, 751), a block edge (4097) and the threaded path (70001).
SIZES = [1, 7, 63, 97, 751, 4097, 70001]


@cpp
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("p", [0.0, 0.1, 0.5])
def test_cpp_against_float64_reference(n, p):
    x64 = (torch.randn(n, dtype=torch.float64) * 3).requires_grad_()
    x32 = x64.detach().float().requires_grad_()
    seed = int(torch.randint(0, 2 ** 62, ()))
    expected = ref(x64, p, seed)
    out = gelu_dropout(x32, p, seed=seed, backend="cpp")
    assert out.dtype == torch.float32 and out.shape == x32.shape
    assert_rel_close("out", expected, out, torch.float32)
    g = torch.randn(n, dtype=torch.float64)
    (want,) = torch.autograd.grad(expected, x64, g)
    (got,) = torch.autograd.grad(out, x32, g.float())
    assert_rel_close("dx", want, got, torch.float32)
    if p > 0:     # where GELU and its slope are not 0 in float32 (x > -10 here), zeros mark the mask
        keep, live = ref_dropout.keep_mask((n,), p, seed), x32.detach() > -10
        assert torch.equal((out != 0)[live], keep[live]) and torch.equal((got != 0)[live], keep[live])
        assert bool((out[~keep] == 0).all()) and bool((got[~keep] == 0).all())


@cpp
def test_gelu_elementwise_accuracy_over_the_whole_range():
    """Every element, not only the norm: relative error of a few float ulps wherever GELU is a
    normal float (down to x = -12, where x (1 + erf(x / sqrt 2)) / 2 has long cancelled), and the
    slope to 3e-7 absolute."""
    x = torch.linspace(-12, 12, 480001)
    out = gelu_dropout(x.clone().requires_grad_())
    x64 = x.double().requires_grad_()
    exact = ref_gelu(x64)
    (slope,) = torch.autograd.grad(exact.sum(), x64)
    rel = (out.detach().double() - exact.detach()).abs() / exact.detach().abs().clamp(min=1e-300)
    nonzero = exact.detach() != 0
    assert rel[nonzero & (x.abs() <= 4)].max() < 3e-6
    assert rel[nonzero].max() < 3e-5
    xg = x.clone().requires_grad_()
    (got,) = torch.autograd.grad(gelu_dropout(xg), xg, torch.ones_like(x))
    assert (got.double() - slope).abs().max() < 3e-7


@cpp
def test_special_values():
    """Non-finite, huge and signed-zero inputs, the values written out: +inf passes (x Phi(x)), -inf
    gives NaN (-inf times Phi's 0, as x (1 + erf(x / sqrt 2)) / 2 gives too) and so do the slopes at
    +-inf (their x phi(x) term is inf times 0); signs of zeros and tiny values are kept. torch's own
    F.gelu is no oracle here: its value at +inf depends on the machine (the +inf this kernel gives on
    the 2-core AMD EPYC VM without AVX-512, NaN on one with AVX-512, torch 2.13 on both)."""
    nan, inf = float("nan"), float("inf")
    x = torch.tensor([-inf, inf, nan, -100.0, 100.0, 0.0, -0.0, -1e-30, 1e-30], requires_grad=True)
    out = gelu_dropout(x)
    (g,) = torch.autograd.grad(out, x, torch.ones_like(out))
    expected = torch.tensor([nan, inf, nan, -0.0, 100.0, 0.0, -0.0, -5e-31, 5e-31])
    slope = torch.tensor([nan, nan, nan, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5])
    torch.testing.assert_close(out.detach(), expected, equal_nan=True, rtol=1e-6, atol=0)
    assert torch.equal(torch.signbit(out.detach()[3:]), torch.signbit(expected[3:]))
    torch.testing.assert_close(g, slope, equal_nan=True, rtol=1e-6, atol=0)


@cpp
def test_non_finite_inputs_dropped_or_passed():
    """A dropped NaN or infinity gives +0 forward and backward (a bit select, not a product)."""
    x = torch.randn(4097)
    x[::5] = float("nan")
    x[1::7] = float("inf")
    x.requires_grad_(True)
    out = gelu_dropout(x, 0.4, seed=17)
    (g,) = torch.autograd.grad(out, x, torch.ones_like(out))
    keep = ref_dropout.keep_mask(x.shape, 0.4, 17)
    assert bool((out[~keep] == 0).all()) and not bool(torch.signbit(out[~keep]).any())
    assert bool((g[~keep] == 0).all())
    torch.testing.assert_close(out.detach()[keep], ref(x.detach().double(), 0.4, 17)[keep].float(), equal_nan=True)


@cpp
def test_unseeded_calls_draw_like_dropout():
    """Without a seed the key is one draw from torch's generator: the mask of ``dropout(gelu(x))``
    from the same generator state, so swapping the pair for the fused call changes no mask."""
    x = torch.randn(9, 128)
    torch.manual_seed(5)
    fused = gelu_dropout(x, 0.3)
    after_fused = torch.rand(())
    torch.manual_seed(5)
    pair = dropout(F.gelu(x), 0.3)
    after_pair = torch.rand(())
    assert torch.equal(fused != 0, pair != 0) and torch.equal(after_fused, after_pair)
    torch.manual_seed(5)
    assert_rel_close("seeded", ref(x.double(), 0.3, draw_seed()), fused, torch.float32)
    a = gelu_dropout(x, 0.3, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, gelu_dropout(x, 0.3, generator=torch.Generator().manual_seed(3)))


@cpp
def test_no_grad_path_evaluation_and_threads():
    """Without gradients the kernel keeps no slope and gives the same output; training=False or p=0
    is the GELU alone; 1 and 2 threads agree bit for bit."""
    x = torch.randn(300, 257)
    with torch.no_grad():
        a = gelu_dropout(x, 0.3, seed=4)
    assert torch.equal(a, gelu_dropout(x.clone().requires_grad_(), 0.3, seed=4).detach())
    plain = ref(x.double())
    assert_rel_close("eval", plain, gelu_dropout(x, 0.3, training=False), torch.float32)
    assert_rel_close("p=0", plain, gelu_dropout(x), torch.float32)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            xg = x.clone().requires_grad_()
            out = gelu_dropout(xg, 0.2, seed=11)
            results.append((out, torch.autograd.grad(out, xg, torch.ones_like(out))[0]))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(u, v) for u, v in zip(*results))


@cpp
def test_output_is_written_by_the_kernel():
    assert _backend.poison_outputs(True) is True          # set by the autouse fixture
    for n in (5, 4096 + 3, 70001):
        x = torch.randn(n, requires_grad=True)
        out = gelu_dropout(x, 0.25, seed=2)
        assert torch.isfinite(out).all()
        assert torch.isfinite(torch.autograd.grad(out, x, torch.randn(n))[0]).all()


def test_non_contiguous_input_follows_its_logical_order():
    x = torch.randn(40, 33).t()
    out = gelu_dropout(x, 0.3, seed=6)
    torch.testing.assert_close(out, gelu_dropout(x.contiguous(), 0.3, seed=6), rtol=0, atol=0)
    assert torch.equal(out != 0, ref_dropout.keep_mask((33, 40), 0.3, 6))


def test_other_devices_and_dtypes_compose(device):
    """Elsewhere ``dropout(F.gelu(x))``: seeded calls draw the hashed mask on every device; float64
    and bfloat16 keep their dtype."""
    x = torch.randn(6, 40, device=device, dtype=torch.float64)
    out = gelu_dropout(x, 0.3, seed=21)
    assert out.dtype == torch.float64
    assert_rel_close("float64", ref(x.cpu(), 0.3, 21), out.cpu(), torch.float64)
    xb = x.to(torch.bfloat16)
    out_b = gelu_dropout(xb, 0.3, seed=21)
    assert out_b.dtype == torch.bfloat16
    assert_rel_close("bfloat16", ref(xb.double().cpu(), 0.3, 21), out_b.cpu(), torch.bfloat16)


def test_reference_backend_forced(monkeypatch):
    x = torch.randn(4, 64)
    torch.testing.assert_close(gelu_dropout(x, 0.2, seed=3, backend="reference"), ref(x, 0.2, 3), rtol=0, atol=0)
    monkeypatch.setenv("REACTFAST_BACKEND", "gelu_dropout:reference")
    torch.testing.assert_close(gelu_dropout(x, 0.2, seed=3), ref(x, 0.2, 3), rtol=0, atol=0)


def test_compiled_graph_equals_eager():
    """Under torch.compile the composition is traced: the float64 reference's result, without
    dropout and with the hashed mask of a given seed."""
    x = torch.randn(3, 10, 64)

    def f(x):
        return gelu_dropout(x) * 2

    def g(x):
        return gelu_dropout(x, 0.3, seed=9)

    assert_rel_close("compiled, no dropout", 2 * ref(x.double()),
                     torch.compile(f, fullgraph=True, backend="aot_eager")(x), torch.float32)
    assert_rel_close("compiled, seeded", ref(x.double(), 0.3, 9),
                     torch.compile(g, fullgraph=True, backend="aot_eager")(x), torch.float32)


def test_a_compiled_call_reads_the_backend_spec_without_a_dynamo_warning():
    """The spec parser was functools.lru_cache'd: torch.compile warned of the cache wrapper it skips
    wherever a compiled model's op read REACTFAST_BACKEND (every `reactfast train --compile`)."""
    x = torch.randn(3, 10, 64)
    torch._dynamo.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = torch.compile(lambda x: gelu_dropout(x, 0.3, seed=9), fullgraph=True, backend="eager")(x)
    assert_rel_close("compiled", ref(x.double(), 0.3, 9), out, torch.float32)


def test_activation_dropout_fuses_only_what_it_can():
    """``activation_dropout(act, drop, h)``: fused for an exact nn.GELU with the package's Dropout
    (the same masks as the pair from the same generator state); the tanh GELU, other activations and
    torch's nn.Dropout run as written."""
    h = torch.randn(4, 8, 32)
    drop = Dropout(0.3)
    torch.manual_seed(1)
    fused = activation_dropout(nn.GELU(), drop, h)
    torch.manual_seed(1)
    assert_rel_close("fused", ref(h.double(), 0.3, draw_seed()), fused, torch.float32)
    torch.manual_seed(1)
    assert torch.equal(fused != 0, drop(F.gelu(h)) != 0)         # the pair's mask from the same state
    torch.manual_seed(1)
    tanh = activation_dropout(nn.GELU(approximate="tanh"), drop, h)
    torch.manual_seed(1)
    torch.testing.assert_close(tanh, drop(F.gelu(h, approximate="tanh")), rtol=0, atol=0)
    torch.testing.assert_close(activation_dropout(nn.ReLU(), drop.eval(), h), F.relu(h), rtol=0, atol=0)
    assert_rel_close("eval", ref(h.double()), activation_dropout(nn.GELU(), drop.eval(), h), torch.float32)
    torch.manual_seed(2)
    stock = activation_dropout(nn.GELU(), nn.Dropout(0.3), h)
    torch.manual_seed(2)
    torch.testing.assert_close(stock, nn.Dropout(0.3)(F.gelu(h)), rtol=0, atol=0)


def test_reference_gelu_is_exact_in_the_tail():
    """The oracle's erfc form against the normal CDF's asymptotic series at x = -9, -15 (where
    torch's float64 x (1 + erf(x / sqrt 2)) / 2 is off by its whole size or is 0)."""
    for x in (-9.0, -15.0):
        z = -x
        series = math.exp(-z * z / 2) / (z * math.sqrt(2 * math.pi)) * (1 - 1 / z ** 2 + 3 / z ** 4 - 15 / z ** 6
                                                                        + 105 / z ** 8)
        got = ref_gelu(torch.tensor(x, dtype=torch.float64)).item()
        assert abs(got - x * series) <= 1e-6 * abs(x * series)


def test_bad_arguments():
    x = torch.randn(4, 16)
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        gelu_dropout(torch.ones(4, dtype=torch.int64))
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        gelu_dropout("x")
    with pytest.raises(ValueError, match="p must be a probability"):
        gelu_dropout(x, 1.5)
    with pytest.raises(ValueError, match="p must be a probability"):
        gelu_dropout(x, True)
    with pytest.raises(TypeError, match="seed must be an int"):
        gelu_dropout(x, 0.1, seed=1.5)
    with pytest.raises(ValueError, match="backend must be one of"):
        gelu_dropout(x, backend="triton")
    with pytest.raises(ValueError, match="seed is needed"):
        ref(x, 0.1)
    if _backend.backend_status("cpp", "cpu", "gelu_dropout")[0]:
        with pytest.raises(ValueError, match="backend 'cpp' takes float32 CPU tensors"):
            gelu_dropout(x.double(), backend="cpp")
    assert torch.equal(gelu_dropout(x, 1.0), torch.zeros_like(x))
