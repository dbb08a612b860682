import math

import pytest
import torch

from reactfast import _backend
from reactfast.nn import dropout as nn_dropout
from reactfast.ops import dropout
from reactfast.reference import dropout as ref

SIZES = [1, 7, 63, 97, 751, 4097, 70001]      # 70001 > 2^16: the kernel's parallel path


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_cpp_equals_reference_bit_for_bit(n, p):
    seed = int(torch.randint(0, 2 ** 62, ()))
    x = torch.randn(n)
    out = dropout(x, p, seed=seed, backend="cpp")
    expected = ref.dropout(x, p, seed)
    assert torch.equal(out, expected)
    assert torch.equal(out != 0, ref.keep_mask(x.shape, p, seed))


@pytest.mark.parametrize("n", [63, 4097, 70001])
def test_cpp_non_finite_inputs_equal_reference(n):
    """Dropped NaNs and infinities give +0 and kept ones pass, forward and backward, as in the
    reference (the kernel selects bits; a product with a 0/1 mask would give NaN)."""
    seed = int(torch.randint(0, 2 ** 62, ()))
    x = torch.randn(n)
    x[torch.randperm(n)[: n // 3]] = float("nan")
    x[torch.randperm(n)[: n // 5]] = float("inf")
    x[torch.randperm(n)[: n // 7]] = -0.0
    x.requires_grad_(True)
    g = x.detach().flip(0).clone()
    outs, grads = [], []
    for backend in ("cpp", "reference"):
        out = dropout(x, 0.4, seed=seed, backend=backend)
        (gx,) = torch.autograd.grad(out, x, g)
        outs.append(out.detach())
        grads.append(gx)
    for a, b in (outs, grads):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
        assert torch.equal(torch.signbit(a), torch.signbit(b))
    dropped = ~ref.keep_mask(x.shape, 0.4, seed)
    assert bool((outs[0][dropped] == 0).all()) and not bool(torch.signbit(outs[0][dropped]).any())


def test_reference_hash_matches_32bit_arithmetic():
    """The int64 emulation of the 32-bit mixer against plain Python integers."""
    def mix(x):
        x ^= x >> 16
        x = (x * 0x7FEB352D) & 0xFFFFFFFF
        x ^= x >> 15
        x = (x * 0x846CA68B) & 0xFFFFFFFF
        return x ^ (x >> 16)

    values = [0, 1, 2, 12345, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1] + torch.randint(0, 2 ** 32, (50,)).tolist()
    got = ref.lowbias32(torch.tensor(values, dtype=torch.int64)).tolist()
    assert got == [mix(v) for v in values]


@pytest.mark.parametrize("backend", ["cpp", "reference"])
def test_gradient_is_the_mask_times_the_scale(backend):
    x = torch.randn(3, 33, 17, requires_grad=True)
    g = torch.randn(3, 33, 17)
    out = dropout(x, 0.3, seed=99, backend=backend)
    (gx,) = torch.autograd.grad(out, x, g)
    keep = ref.keep_mask(x.shape, 0.3, 99)
    assert torch.equal(gx, torch.where(keep, g * (1 / 0.7), torch.zeros(())))
    # Non-contiguous input and gradient: the mask follows the contiguous order of the input as given.
    xt = torch.randn(17, 33, requires_grad=True)
    gn = g[0].t().contiguous().t()                                   # (33, 17), non-contiguous
    (gt,) = torch.autograd.grad(dropout(xt.t(), 0.3, seed=5, backend=backend), xt, gn)
    keep_t = ref.keep_mask((33, 17), 0.3, 5)
    assert torch.equal(gt, torch.where(keep_t, gn * (1 / 0.7), torch.zeros(())).t())


def test_keep_rate_and_independence():
    n, p = 1 << 20, 0.3
    keep = dropout(torch.ones(n), p, seed=2024) != 0
    rate = keep.float().mean().item()
    assert abs(rate - (1 - p)) < 5 * math.sqrt(p * (1 - p) / n), rate
    k = keep.float() - keep.float().mean()
    for lag in (1, 2, 3, 7, 64, 4096):
        corr = float((k[lag:] * k[:-lag]).mean() / k.var())
        assert abs(corr) < 0.01, (lag, corr)
    other = dropout(torch.ones(n), p, seed=2025) != 0
    both = (keep & other).float().mean().item()
    assert abs(both - (1 - p) ** 2) < 0.005, both           # consecutive seeds: independent masks


def test_seed_and_generator_determinism():
    x = torch.randn(4, 100)
    torch.manual_seed(3)
    a = dropout(x, 0.2)
    torch.manual_seed(3)
    b = dropout(x, 0.2)
    c = dropout(x, 0.2)
    assert torch.equal(a, b) and not torch.equal(b, c)
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert torch.equal(dropout(x, 0.2, generator=g1), dropout(x, 0.2, generator=g2))


def test_identity_cases_and_module():
    x = torch.randn(5, 6, requires_grad=True)
    assert dropout(x, 0.0) is x and dropout(x, 0.5, training=False) is x
    zero = dropout(x, 1.0)
    assert torch.equal(zero, torch.zeros_like(x)) and zero.requires_grad
    layer = nn_dropout.Dropout(0.25)
    assert layer(x).shape == x.shape
    layer.eval()
    assert layer(x) is x


def test_other_dtypes_use_the_same_mask():
    x = torch.randn(2, 300, dtype=torch.float64)
    out = dropout(x, 0.4, seed=11)
    assert out.dtype == torch.float64
    assert torch.equal(out != 0, ref.keep_mask(x.shape, 0.4, 11))
    with pytest.raises(ValueError, match="float32"):
        dropout(x, 0.4, seed=11, backend="cpp")


def test_bad_arguments():
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        dropout(torch.ones(3, dtype=torch.long), 0.1)
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        dropout([1.0, 2.0], 0.1)
    for p in (-0.1, 1.5, float("nan"), "0.1", True):
        with pytest.raises(ValueError, match="p must be a probability"):
            dropout(torch.ones(3), p)
    with pytest.raises(ValueError, match="backend must be one of"):
        dropout(torch.ones(3), 0.1, backend="triton")
    with pytest.raises(TypeError, match="seed must be an int"):
        dropout(torch.ones(3), 0.1, seed=1.5)
    for p, training in ((0.0, True), (0.1, False)):       # checked before the early returns too
        with pytest.raises(TypeError, match="seed must be an int"):
            dropout(torch.ones(3), p, training, seed="7")


def test_output_is_written_by_the_kernel():
    """Outputs are poisoned (NaN) before the kernel writes them (the session fixture); every
    element must be written."""
    assert _backend.poison_outputs(True) is True          # set by the autouse fixture
    out = dropout(torch.randn(10007), 0.5, seed=1, backend="cpp")
    assert torch.isfinite(out).all()


def test_seeded_calls_draw_the_hashed_mask_on_every_device(device):
    x = torch.randn(3, 257, device=device)
    out = dropout(x, 0.35, seed=77)
    assert torch.equal((out != 0).cpu(), ref.keep_mask(x.shape, 0.35, 77))
    torch.testing.assert_close(out, torch.where(out != 0, x * (1 / 0.65), torch.zeros((), device=device)),
                               atol=0, rtol=0)


def test_cuda_uses_torch_dropout(device):
    x = torch.ones(1 << 16, device=device)
    out = dropout(x, 0.25)
    rate = (out != 0).float().mean().item()
    assert abs(rate - 0.75) < 0.01
    assert torch.allclose(out[out != 0], torch.full((), 1 / 0.75, device=device))


def test_compiled_graph_takes_the_hashed_mask():
    """Inside torch.compile (CPU float32) the mask is the same keyed hash from the C++ kernel as one
    custom op: with a seed it equals the eager mask (seeds past 2^63 too); without one the key is
    drawn inside the graph."""
    x = torch.randn(3, 5, 67, requires_grad=True)

    seed = 2 ** 63 + 2 ** 40 + 12345

    def seeded(x):
        return dropout(x, 0.3, seed=seed) * 2

    out = torch.compile(seeded, fullgraph=True, backend="aot_eager")(x)
    keep = ref.keep_mask(x.shape, 0.3, seed)
    assert torch.equal(out != 0, keep)
    torch.testing.assert_close(out, torch.where(keep, x * (2 / 0.7), torch.zeros(())), atol=0, rtol=1e-6)
    out.sum().backward()
    torch.testing.assert_close(x.grad, keep * (2 / 0.7), atol=0, rtol=1e-6)

    def unseeded(x):
        return dropout(x, 0.5) * 2

    f = torch.compile(unseeded, fullgraph=True, backend="aot_eager")
    a, b = f(torch.ones(4000)), f(torch.ones(4000))
    assert 0.45 < (a != 0).float().mean().item() < 0.55
    assert torch.equal(a[a != 0], torch.full_like(a[a != 0], 4.0))
    assert not torch.equal(a != 0, b != 0), "every call of the graph must draw a fresh key"


@pytest.mark.skipif(not _backend.backend_status("cpp", "cpu", "dropout")[0], reason="C++ kernels unavailable")
def test_hashed_dropout_custom_op_opcheck():
    x = torch.randn(4, 33)
    torch.library.opcheck(torch.ops.reactfast.hashed_dropout.default, (x, 0.25, torch.tensor(-5, dtype=torch.int64)))
