"""The CUDA warp-wavefront DTW (csrc/include/reactfast/dtw_warp.h) against the float64 reference:
its schedule through the CPU emulation everywhere, the kernel itself on CUDA where a GPU exists.
Shapes cross the pass boundary (128 query rows a pass in REACT's layout, 64 in the generic one),
so the border rows, the corner and start cells and the final lane are all exercised."""

import pytest
import torch

from reactfast.metrics.candidates import from_lists
from reactfast.ops.dtw import REACT_GROUPS, weighted_dtw_min, weighted_dtw_min_warp_emulated
from reactfast.reference import dtw as ref
from reactfast.testing import assert_close

GENERIC = ((0, 2, 0.5), (2, 6, 2.0))
SHAPES = [  # Tx, Ty, D, groups
    (1, 1, 25, REACT_GROUPS),
    (5, 1, 25, REACT_GROUPS),
    (1, 9, 25, REACT_GROUPS),
    (31, 40, 25, REACT_GROUPS),
    (128, 20, 25, REACT_GROUPS),   # exactly one pass
    (129, 33, 25, REACT_GROUPS),   # a second pass of one row
    (300, 170, 25, REACT_GROUPS),  # three passes, the last partial
    (64, 64, 6, GENERIC),          # exactly one generic pass
    (150, 45, 6, GENERIC),
    (70, 90, 32, ((0, 20, 1.0), (10, 32, 0.3))),  # overlapping groups, every register dim
    (100, 30, 3, ((0, 3, 1.0),)),
    (140, 50, 25, ((0, 15, 1.0), (15, 17, 0.0), (17, 25, 0.5))),  # a group weighing 0, generic path
]


def _inputs(Tx, Ty, D, M=5, G=9, seed=0):
    """Random walks (model-like) and uniform noise (random-like) queries; candidate lists of every
    length with a duplicated target (a tie between positions)."""
    g = torch.Generator().manual_seed(seed + Tx * 1000 + Ty + D)
    gt = torch.cumsum(0.2 * torch.randn(G, Ty, D, generator=g), dim=1)
    gt[G - 1] = gt[1]
    walks = torch.cumsum(0.2 * torch.randn(M, Tx, D, generator=g), dim=1)
    pred = torch.cat([walks, torch.rand(2, Tx, D, generator=g)]).contiguous()
    lists = [sorted(set(torch.randperm(G, generator=g)[:1 + (m * 3) % G].tolist())) for m in range(pred.shape[0])]
    lists[0] = [1, G - 1]  # equal targets, in two warps where there are two: the first listed wins
    return pred, gt, from_lists(lists)


def _run(pred, gt, cand, groups, abandon, warps, device):
    groups = [tuple(x) for x in groups]
    if device.type == "cuda":
        out = weighted_dtw_min(pred.to(device), gt.to(device), tuple(c.to(device) for c in cand), groups=groups,
                               abandon=abandon, backend="cuda")
        return out[0].cpu(), out[1].cpu()
    return weighted_dtw_min_warp_emulated(pred, gt, cand, groups, abandon=abandon, warps=warps)[:2]


@pytest.mark.parametrize("Tx,Ty,D,groups", SHAPES)
def test_warp_schedule_matches_reference(device, Tx, Ty, D, groups):
    pred, gt, cand = _inputs(Tx, Ty, D)
    want_min, want_arg = ref.weighted_dtw_min(pred.double(), gt.double(), cand, groups)
    for abandon in (False, True):
        for warps in ((1, 3, 4, 8) if device.type == "cpu" else (None,)):
            got_min, got_arg = _run(pred, gt, cand, groups, abandon, warps, device)
            label = f"warp {device.type} abandon={abandon} warps={warps}"
            assert_close(label, want_min, got_min, atol=1e-9, rtol=1e-6)
            assert torch.equal(want_arg, got_arg), label
    assert int(got_arg[0]) == 1


def test_emulated_abandoning_is_exact_and_prunes():
    """Queries that are noisy copies of one candidate, against many random-walk candidates: the
    border-row bound abandons pairs, and the results equal the unabandoned ones bit for bit."""
    g = torch.Generator().manual_seed(7)
    Tx = Ty = 400
    gt = torch.cumsum(0.3 * torch.randn(24, Ty, 25, generator=g), dim=1)
    pred = (gt[[3, 10, 17, 20]] + 0.02 * torch.randn(4, Tx, 25, generator=g)).contiguous()
    cand = from_lists([list(range(24))] * 4)
    groups = [tuple(x) for x in REACT_GROUPS]
    full = weighted_dtw_min_warp_emulated(pred, gt, cand, groups, abandon=False)
    fast = weighted_dtw_min_warp_emulated(pred, gt, cand, groups, abandon=True)
    assert full[2] == 0
    assert torch.equal(full[0], fast[0]) and torch.equal(full[1], fast[1])
    assert fast[1].tolist() == [3, 10, 17, 20]
    assert fast[2] > 24, fast[2]  # most of the 4 x 20 losing pairs end early
    want = ref.weighted_dtw_min(pred.double(), gt.double(), cand, REACT_GROUPS)
    assert_close("warp emulated", want[0], fast[0], atol=1e-9, rtol=1e-6)


def test_emulation_agrees_with_the_cpu_backend():
    """At challenge length (six passes of REACT's layout) against the C++ lanes, which sum each
    local cost in another order: equal within float32 cost rounding, same argmin."""
    pred, gt, cand = _inputs(750, 750, 25, M=2, G=4, seed=3)
    pred = pred[:3].contiguous()
    cand = from_lists([[0, 1, 3], [2], [1, 3]])
    emu = weighted_dtw_min_warp_emulated(pred, gt, cand, [tuple(x) for x in REACT_GROUPS])
    cpp = weighted_dtw_min(pred, gt, cand, backend="cpp")
    assert_close("warp emulated vs cpp", cpp[0], emu[0], atol=1e-9, rtol=1e-6)
    assert torch.equal(cpp[1], emu[1])


@pytest.mark.parametrize("kw,match", [
    (dict(D=33), "at most 32 feature dims"),
    (dict(warps=0), r"warps must be an int in \[1, 8\]"),
    (dict(warps=9), r"warps must be an int in \[1, 8\]"),
    (dict(groups=((0, 40, 1.0),)), "groups: each"),
])
def test_emulation_bad_input(kw, match):
    D = kw.pop("D", 25)
    pred, gt = torch.rand(2, 5, D), torch.rand(3, 6, D)
    with pytest.raises(ValueError, match=match):
        weighted_dtw_min_warp_emulated(pred, gt, from_lists([[0], [1, 2]]), **kw)
