"""The spread metrics' sums of squares (FRDiv, FRDvs, FRVar): every backend on every device against
float64 definitions, centred sums on data far from zero, thread-count independence, bad input."""

import pytest
import torch

from reactfast.ops.spread import IMPLEMENTED, spread_sums
from tests.conftest import usable_backends


def definitions(pred):
    """The three sums from torch's float64 variance, one formula each."""
    x = pred.double().cpu()
    N, S, T, _ = x.shape
    div = x.var(1, unbiased=False).sum() * S
    dvs = x.var(0, unbiased=False).sum() * N
    var = x.var(2, unbiased=False).sum() * T
    return torch.stack([div, dvs, var])


# D 25 is the C++ kernel's compile-time path; the others take its loop over any width. Position
# counts S T D that are not multiples of its 32 lanes leave a remainder.
@pytest.mark.parametrize("N,S,T,D", [(1, 1, 2, 1), (3, 2, 7, 25), (5, 3, 97, 25), (4, 2, 63, 7), (2, 4, 751, 25),
                                     (7, 1, 30, 3)])
def test_matches_definitions(device, N, S, T, D):
    g = torch.Generator().manual_seed(N * 1000 + T * D)
    pred = torch.rand(N, S, T, D, generator=g)
    pred[0, 0, :, 0] = 0.5                    # a constant track
    want = definitions(pred)
    for backend in usable_backends(IMPLEMENTED, device):
        got = spread_sums(pred.to(device), backend=backend)
        assert got.dtype == torch.float64 and got.shape == (3,) and got.device.type == device.type
        torch.testing.assert_close(got.cpu(), want, rtol=1e-12, atol=1e-12, msg=backend)


def test_centred_far_from_zero(device):
    """Values near 1000 with a spread of 1e-3: a one-pass sum of squares would cancel to noise."""
    g = torch.Generator().manual_seed(3)
    pred = 1000 + 1e-3 * torch.randn(6, 3, 200, 25, generator=g)
    want = definitions(pred)
    for backend in usable_backends(IMPLEMENTED, device):
        torch.testing.assert_close(spread_sums(pred.to(device), backend=backend).cpu(), want, rtol=1e-9, atol=0)


@pytest.mark.skipif("cpp" not in usable_backends(IMPLEMENTED, "cpu"), reason="reactfast._C not built")
def test_cpp_does_not_depend_on_threads():
    pred = torch.rand(9, 3, 120, 25)
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            results.append(spread_sums(pred, backend="cpp"))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(results[0], r) for r in results[1:])


def test_dtypes_and_layouts():
    """Half-precision and float64 inputs are read as float32; a non-contiguous pred is copied."""
    pred = torch.rand(4, 2, 30, 25)
    want = definitions(pred)
    torch.testing.assert_close(spread_sums(pred.double()), want, rtol=1e-12, atol=0)
    wide = torch.rand(4, 2, 30, 50)[..., ::2]
    torch.testing.assert_close(spread_sums(wide), definitions(wide), rtol=1e-12, atol=0)
    half = pred.half()
    torch.testing.assert_close(spread_sums(half), definitions(half.float()), rtol=1e-12, atol=0)


@pytest.mark.parametrize("call,err,match", [
    (lambda: spread_sums(torch.rand(4, 30, 25)), ValueError, "pred must have 4 dimensions"),
    (lambda: spread_sums(torch.zeros(2, 2, 3, 25, dtype=torch.int32)), TypeError, "pred must have dtype"),
    (lambda: spread_sums(torch.full((2, 2, 3, 25), float("nan"))), ValueError, "pred contains NaN"),
    (lambda: spread_sums(torch.rand(2, 0, 3, 25)), ValueError, "pred must not be empty"),
    (lambda: spread_sums(torch.rand(2, 2, 3, 25), backend="triton"), RuntimeError, "implements only"),
    ([1.0], TypeError, "pred must be a torch.Tensor"),
])
def test_bad_input(call, err, match):
    with pytest.raises(err, match=match):
        call() if callable(call) else spread_sums(call)
