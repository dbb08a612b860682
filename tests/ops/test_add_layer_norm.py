import pytest
import torch
from torch import nn

from reactfast import _backend
from reactfast.nn.dropout import Dropout
from reactfast.nn.transformer import add_norm
from reactfast.ops import add_layer_norm, dropout
from reactfast.ops.dropout import draw_seed
from reactfast.reference import dropout as ref_dropout
from reactfast.reference.add_layer_norm import add_layer_norm as ref
from reactfast.testing import assert_rel_close

cpp = pytest.mark.skipif(not _backend.backend_status("cpp", "cpu", "add_layer_norm")[0],
                         reason="C++ kernels unavailable")

# Widths with vector tails (7, 63, 97, 751) and without (64); 2000 x 64 takes the threaded path.
SHAPES = [(1, 64), (7, 63), (3, 5, 97), (4, 751), (2000, 64), (33, 7)]


def _inputs(shape, affine):
    x, h = torch.randn(*shape, dtype=torch.float64), torch.randn(*shape, dtype=torch.float64)
    D = shape[-1]
    w = torch.randn(D, dtype=torch.float64) if affine in ("both", "weight") else None
    b = torch.randn(D, dtype=torch.float64) if affine in ("both", "bias") else None
    return x, h, w, b


@cpp
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("p", [0.0, 0.1, 0.5])
@pytest.mark.parametrize("affine", ["both", "weight", "bias", "none"])
def test_cpp_against_float64_reference(shape, p, affine):
    x, h, w, b = _inputs(shape, affine)
    seed = int(torch.randint(0, 2 ** 62, ()))
    leaves64 = [t if t is None else t.clone().requires_grad_() for t in (x, h, w, b)]
    leaves32 = [t if t is None else t.float().requires_grad_() for t in (x, h, w, b)]
    expected = ref(*leaves64, eps=1e-5, p=p, seed=seed)
    out = add_layer_norm(*leaves32, eps=1e-5, p=p, seed=seed, backend="cpp")
    assert out.dtype == torch.float32 and out.shape == x.shape
    assert_rel_close("out", expected, out, torch.float32)
    g = torch.randn_like(expected)
    wanted = [t for t in leaves64 if t is not None]
    got = torch.autograd.grad(out, [t for t in leaves32 if t is not None], g.float())
    for name, a, e in zip(("dx", "dh", "dw", "db"), got, torch.autograd.grad(expected, wanted, g)):
        assert_rel_close(name, e, a, torch.float32)


@cpp
@pytest.mark.parametrize("shape", [(7, 63), (2000, 64)])
def test_mask_is_the_dropout_ops(shape):
    """The fused call drops exactly what ``dropout(h, p, seed=seed)`` drops: h's gradient is zero
    exactly where that mask is, and the output is the float64 reference's with that seed."""
    x, h = torch.randn(shape), torch.randn(shape, requires_grad=True)
    seed = int(torch.randint(0, 2 ** 62, ())) + 2 ** 63          # seeds past 2^63 too
    out = add_layer_norm(x, h, p=0.3, seed=seed)
    (dh,) = torch.autograd.grad(out, h, torch.randn(shape))
    keep = ref_dropout.keep_mask(shape, 0.3, seed)
    assert torch.equal(dh != 0, keep)
    assert_rel_close("out", ref(x.double(), h.detach().double(), p=0.3, seed=seed), out, torch.float32)


@cpp
def test_unseeded_calls_draw_like_dropout():
    """Without a seed the key is one draw from torch's generator, as dropout's: the same generator
    state gives the fused call the mask of that draw, which dropout's call would take."""
    x, h = torch.randn(9, 64), torch.randn(9, 64)
    torch.manual_seed(5)
    fused = add_layer_norm(x, h, p=0.4)
    torch.manual_seed(5)
    seed = draw_seed()
    assert_rel_close("fused", ref(x.double(), h.double(), p=0.4, seed=seed), fused, torch.float32)
    torch.manual_seed(5)
    assert torch.equal(dropout(h, 0.4) != 0, ref_dropout.keep_mask(h.shape, 0.4, seed))
    g = torch.Generator().manual_seed(3)
    a = add_layer_norm(x, h, p=0.4, generator=g)
    b = add_layer_norm(x, h, p=0.4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


@cpp
def test_gradients_do_not_depend_on_threads():
    """dweight and dbias are summed over rows in a fixed order: equal bit for bit on 1 and 2 threads."""
    x, h = torch.randn(3000, 64, requires_grad=True), torch.randn(3000, 64, requires_grad=True)
    w, b = torch.randn(64, requires_grad=True), torch.randn(64, requires_grad=True)
    g = torch.randn(3000, 64)
    results = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            out = add_layer_norm(x, h, w, b, p=0.2, seed=11)
            results.append([out] + list(torch.autograd.grad(out, (x, h, w, b), g)))
    finally:
        torch.set_num_threads(threads)
    for a, c in zip(*results):
        assert torch.equal(a, c)


@cpp
def test_non_finite_sublayer_values_are_dropped_or_passed():
    """A dropped NaN or infinity of h gives 0, as in the reference (a bit select, not a product)."""
    h = torch.randn(40, 64)
    h[::3, ::5] = float("nan")
    h[1::3, 2::7] = float("inf")
    x = torch.randn(40, 64)
    out = add_layer_norm(x, h, p=0.5, seed=8)
    expected = ref(x.double(), h.double(), p=0.5, seed=8)
    assert torch.equal(torch.isnan(out), torch.isnan(expected))
    rows = torch.isfinite(expected).all(-1)
    assert rows.any() and (~rows).any()
    assert_rel_close("finite rows", expected[rows], out[rows], torch.float32)


@cpp
def test_no_grad_path_and_evaluation():
    """Without gradients the kernel saves nothing and gives the same output; training=False or p=0
    adds h as is."""
    x, h = torch.randn(5, 33, 64), torch.randn(5, 33, 64)
    w, b = torch.randn(64), torch.randn(64)
    with torch.no_grad():
        a = add_layer_norm(x, h, w, b, p=0.3, seed=4)
    assert torch.equal(a, add_layer_norm(x, h, w.requires_grad_(), b, p=0.3, seed=4).detach())
    plain = ref(x.double(), h.double(), w.detach().double(), b.double())
    assert_rel_close("eval", plain, add_layer_norm(x, h, w, b, p=0.3, training=False), torch.float32)
    assert_rel_close("p=0", plain, add_layer_norm(x, h, w, b), torch.float32)


@cpp
def test_output_is_written_by_the_kernel():
    assert _backend.poison_outputs(True) is True          # set by the autouse fixture
    x, h = torch.randn(301, 97, requires_grad=True), torch.randn(301, 97, requires_grad=True)
    out = add_layer_norm(x, h, p=0.25, seed=2)
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(g).all() for g in torch.autograd.grad(out, (x, h), torch.randn(301, 97)))


def test_other_devices_and_dtypes_compose(device):
    """Elsewhere the composition over ops.dropout: seeded calls draw the hashed mask on every device;
    float64 and bfloat16 inputs keep their dtype."""
    x, h = torch.randn(6, 40, device=device, dtype=torch.float64), torch.randn(6, 40, device=device,
                                                                                dtype=torch.float64)
    out = add_layer_norm(x, h, p=0.3, seed=21)
    assert out.dtype == torch.float64
    assert_rel_close("float64", ref(x.cpu(), h.cpu(), p=0.3, seed=21), out.cpu(), torch.float64)
    xb, hb = x.to(torch.bfloat16), h.to(torch.bfloat16)
    out_b = add_layer_norm(xb, hb, p=0.3, seed=21)
    assert out_b.dtype == torch.bfloat16
    assert_rel_close("bfloat16", ref(xb.double().cpu(), hb.double().cpu(), p=0.3, seed=21), out_b.cpu(),
                     torch.bfloat16)


def test_reference_backend_forced():
    x, h = torch.randn(4, 64), torch.randn(4, 64)
    out = add_layer_norm(x, h, p=0.2, seed=3, backend="reference")
    torch.testing.assert_close(out, ref(x, h, p=0.2, seed=3))


def test_reference_forced_by_environment(monkeypatch):
    x, h = torch.randn(4, 64), torch.randn(4, 64)
    monkeypatch.setenv("REACTFAST_BACKEND", "add_layer_norm:reference")
    torch.testing.assert_close(add_layer_norm(x, h, p=0.2, seed=3), ref(x, h, p=0.2, seed=3), atol=0, rtol=0)


def test_compiled_graph_equals_eager():
    """Under torch.compile the composition is traced (the compiler fuses it): the float64 reference's
    result, without dropout and with the hashed mask of a given seed."""
    x, h = torch.randn(3, 10, 64), torch.randn(3, 10, 64)
    norm = nn.LayerNorm(64)

    def f(x, h):
        return add_layer_norm(x, h, norm.weight, norm.bias, norm.eps) * 2

    def g(x, h):
        return add_layer_norm(x, h, norm.weight, norm.bias, norm.eps, p=0.3, seed=9)

    w, b = norm.weight.detach().double(), norm.bias.detach().double()
    assert_rel_close("compiled, no dropout", 2 * ref(x.double(), h.double(), w, b),
                     torch.compile(f, fullgraph=True, backend="aot_eager")(x, h), torch.float32)
    assert_rel_close("compiled, seeded", ref(x.double(), h.double(), w, b, p=0.3, seed=9),
                     torch.compile(g, fullgraph=True, backend="aot_eager")(x, h), torch.float32)


def test_add_norm_fuses_only_what_it_can():
    """``add_norm(norm, x, h, drop)``: fused for a LayerNorm with the package's Dropout; a torch
    ``nn.Dropout`` in training (a Bernoulli mask) and other norms run as written."""
    x, h = torch.randn(4, 8, 32), torch.randn(4, 8, 32)
    norm = nn.LayerNorm(32)
    with torch.no_grad():
        norm.weight.normal_()
    w, b = norm.weight.detach().double(), norm.bias.detach().double()
    torch.manual_seed(1)
    fused = add_norm(norm, x, h, Dropout(0.3))
    torch.manual_seed(1)
    assert_rel_close("fused", ref(x.double(), h.double(), w, b, p=0.3, seed=draw_seed()), fused, torch.float32)
    torch.manual_seed(2)
    stock = add_norm(norm, x, h, nn.Dropout(0.3))
    torch.manual_seed(2)
    torch.testing.assert_close(stock, norm(x + nn.functional.dropout(h, 0.3)))
    rms = nn.RMSNorm(32)
    torch.testing.assert_close(add_norm(rms, x, h), rms(x + h))
    assert_rel_close("eval", ref(x.double(), h.double(), w, b), add_norm(norm, x, h, Dropout(0.3).eval()),
                     torch.float32)


def test_bad_arguments():
    x, h = torch.randn(4, 16), torch.randn(4, 16)
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        add_layer_norm(torch.ones(4, 16, dtype=torch.int64), h)
    with pytest.raises(TypeError, match="h must be a floating-point tensor"):
        add_layer_norm(x, "h")
    with pytest.raises(ValueError, match="h must match x"):
        add_layer_norm(x, torch.randn(4, 15))
    with pytest.raises(ValueError, match="h must match x"):
        add_layer_norm(x, h.double())
    with pytest.raises(ValueError, match="non-empty last dimension"):
        add_layer_norm(torch.randn(4, 0), torch.randn(4, 0))
    with pytest.raises(ValueError, match=r"weight must have shape \(16,\)"):
        add_layer_norm(x, h, torch.ones(15))
    with pytest.raises(ValueError, match=r"bias must have shape \(16,\)"):
        add_layer_norm(x, h, None, torch.ones(4, 16))
    with pytest.raises(ValueError, match="eps must be a positive number"):
        add_layer_norm(x, h, eps=0.0)
    with pytest.raises(ValueError, match="p must be a probability"):
        add_layer_norm(x, h, p=1.5)
    with pytest.raises(TypeError, match="seed must be an int"):
        add_layer_norm(x, h, p=0.1, seed=1.5)
    with pytest.raises(ValueError, match="backend must be one of"):
        add_layer_norm(x, h, backend="triton")
    if _backend.backend_status("cpp", "cpu", "add_layer_norm")[0]:
        with pytest.raises(ValueError, match="backend 'cpp' takes float32 CPU tensors"):
            add_layer_norm(x.double(), h.double(), backend="cpp")
