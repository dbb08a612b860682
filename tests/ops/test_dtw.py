"""DTW and FRDist's weighted min-over-candidates DTW: every backend on every device against the
reference, hand-computed cases, exact early abandoning, bad input."""

import math

import pytest
import torch

from reactfast.data import SyntheticDyads
from reactfast.metrics.candidates import from_lists
from reactfast.ops.dtw import IMPLEMENTED, dtw, weighted_dtw_min
from reactfast.reference import dtw as ref
from reactfast.testing import assert_close
from tests.conftest import run_each_cpu_build, usable_backends
from tests.ops._metric_cases import cases


def t(a, device="cpu"):
    return torch.tensor(a, dtype=torch.float32, device=device)


def test_hand_cases(device):
    for backend in usable_backends(IMPLEMENTED, device):
        x = t([[[0.0], [0.0], [0.0]], [[0.0], [1.0], [2.0]], [[0.0], [2.0], [2.0]]], device)
        y = t([[[1.0], [1.0], [1.0]], [[0.0], [1.0], [2.0]], [[1.0], [1.0], [1.0]]], device)
        # Unit cost along the diagonal; identical; |0-1|^2 + |2-1|^2 + |2-1|^2 with warping.
        assert_close(backend, torch.tensor([math.sqrt(3), 0.0, math.sqrt(3)], dtype=torch.float64),
                     dtw(x, y, backend=backend), atol=1e-12, rtol=1e-12)
        # Warping absorbs repetition: [0, 1] vs [0, 0, 1] costs nothing; [0, 2] vs [1] costs 1 + 1.
        assert float(dtw(t([[[0.0], [1.0]]], device), t([[[0.0], [0.0], [1.0]]], device), backend=backend)) == 0.0
        assert float(dtw(t([[[0.0], [2.0]]], device), t([[[1.0]]], device), backend=backend)) == \
            pytest.approx(math.sqrt(2))


@pytest.mark.parametrize("shape", [(3, 1, 1, 2), (2, 7, 5, 3), (2, 63, 40, 25), (1, 97, 97, 4), (2, 20, 17, 40)])
def test_pairs_match_reference(device, shape):
    P, Tx, Ty, D = shape
    g = torch.Generator().manual_seed(sum(shape))
    x, y = torch.rand(P, Tx, D, generator=g).to(device), torch.rand(P, Ty, D, generator=g).to(device)
    want = ref.dtw(x.double(), y.double())
    for backend in usable_backends(IMPLEMENTED, device):
        assert_close(backend, want, dtw(x, y, backend=backend), atol=1e-9, rtol=1e-6)


@pytest.mark.parametrize("T", [1, 7, 40, 97])
@pytest.mark.parametrize("abandon", [True, False])
def test_weighted_min_matches_reference(device, T, abandon):
    pred, gt, cand, _ = cases(T, 11, 9, T, device=device)
    want_min, want_arg = ref.weighted_dtw_min(pred.double(), gt.double(), cand)
    for backend in usable_backends(IMPLEMENTED, device):
        got_min, got_arg = weighted_dtw_min(pred, gt, cand, abandon=abandon, backend=backend)
        assert_close(backend, want_min, got_min, atol=1e-9, rtol=1e-6)
        assert torch.equal(want_arg.cpu(), got_arg.cpu()), backend
        assert int(got_arg[0]) == 1  # the tie between identical targets 1 and 2 goes to the first listed


def test_reference_equals_definition():
    """The batched reference against SPEC's formula written out for one pair and group."""
    g = torch.Generator().manual_seed(3)
    x, y = torch.rand(9, 4, generator=g, dtype=torch.float64), torch.rand(6, 4, generator=g, dtype=torch.float64)
    acc = [[math.inf] * 7 for _ in range(10)]
    acc[0][0] = 0.0
    for i in range(1, 10):
        for j in range(1, 7):
            cost = float(((x[i - 1] - y[j - 1]) ** 2).sum())
            acc[i][j] = cost + min(acc[i - 1][j], acc[i][j - 1], acc[i - 1][j - 1])
    assert float(ref.dtw(x[None], y[None])) == pytest.approx(math.sqrt(acc[9][6]), rel=1e-12)


def test_abandoning_is_exact_and_prunes():
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(24, 120, 25, generator=g)
    # Each query is a noisy copy of one target: the others can be abandoned early.
    pred = gt[:8] + 0.05 * torch.randn(8, 120, 25, generator=g)
    cand = from_lists([list(range(24))] * 8)
    full = weighted_dtw_min(pred, gt, cand, abandon=False, return_cells=True)
    fast = weighted_dtw_min(pred, gt, cand, abandon=True, return_cells=True)
    assert torch.equal(full[0], fast[0]) and torch.equal(full[1], fast[1])
    assert torch.equal(fast[1], torch.arange(8))
    assert fast[2] < 0.5 * full[2], (fast[2], full[2])


@pytest.mark.parametrize("Tx,Ty,D,groups", [
    (60, 60, 25, ((0, 15, 1 / 15), (15, 17, 1.0), (17, 25, 1 / 8))),  # REACT's layout (unrolled DP)
    (45, 70, 6, ((0, 2, 0.5), (2, 6, 2.0))),  # generic layout, Tx != Ty (no diagonal bound)
    (33, 21, 3, ((0, 3, 1.0),)),
])
def test_abandoning_is_exact_on_adversarial_candidates(Tx, Ty, D, groups):
    """The cascade (LB_Kim, LB_Keogh on block envelopes, row and column tails, refilled lanes across
    queries) against the full DP: candidates that are nearly constant, where the bounds are nearly
    tight; exact copies of one another (ties go to the first listed); a query equal to a candidate
    (value 0); random-like queries; candidate lists of every length, more queries than a chunk."""
    g = torch.Generator().manual_seed(Tx * Ty + D)
    levels = torch.rand(12, 1, D, generator=g)
    flat = levels + 1e-3 * torch.randn(12, Ty, D, generator=g)  # nearly constant: tight bounds
    walks = torch.cumsum(0.1 * torch.randn(12, Ty, D, generator=g), dim=1)
    gt = torch.cat([flat, walks, flat[:3]])  # 24..26 duplicate 0..2
    queries = [levels[i % 12].expand(Tx, D) + 0.05 * torch.randn(Tx, D, generator=g) for i in range(7)]
    queries += [torch.rand(Tx, D, generator=g) for _ in range(7)]
    if Tx == Ty:
        queries.append(gt[5].clone())
    pred = torch.stack(queries).contiguous()
    M = pred.shape[0]
    lists = [sorted(set(torch.randperm(27, generator=g)[:1 + (m * 5) % 27].tolist()) | {24, 0, 5}) for m in range(M)]
    cand = from_lists(lists)
    full = weighted_dtw_min(pred, gt, cand, groups=groups, abandon=False, backend="cpp")
    fast = weighted_dtw_min(pred, gt, cand, groups=groups, abandon=True, backend="cpp")
    assert torch.equal(full[0], fast[0]) and torch.equal(full[1], fast[1])
    want = ref.weighted_dtw_min(pred.double(), gt.double(), cand, groups)
    assert_close("cpp", want[0], fast[0], atol=1e-9, rtol=1e-6)
    assert torch.equal(want[1], fast[1])
    if Tx == Ty:
        assert float(fast[0][-1]) == 0.0
    # Candidate 0 and its copy 24 are both listed everywhere: a query whose best is that sequence
    # gets 0, the first listed, never 24.
    assert not (fast[1] == 24).any()


@pytest.mark.parametrize("groups", [((0, 15, 1 / 15), (15, 17, 1.0), (17, 25, 1 / 8)),  # REACT (unrolled DP)
                                    ((0, 5, 1.0), (5, 25, 0.25)),                        # generic layout
                                    ((0, 5, 1.0), (5, 20, 0.0), (20, 25, 0.5))])          # a group weighing 0
def test_banded_search_is_exact_on_warped_copies(groups):
    """The banded search (a limit per group, strips of eight rows swept over their live band)
    against the full DP and the float64 reference: queries that are noisy copies of a candidate,
    time-warped (the optimal path leaves the diagonal, so the diagonal bound is loose and the band
    must still hold the path), shifted by up to 20 frames, or uniform noise (wide bands), with
    candidate lists of every length and more queries than a chunk; a near-diagonal query leaves
    most cells unswept."""
    g = torch.Generator().manual_seed(3)
    T = 90
    walks = torch.cumsum(0.05 * torch.randn(16, T, 25, generator=g), 1).abs().clamp(max=1)
    queries = []
    for m in range(21):
        src = walks[m % 16]
        kind = m % 3
        if kind == 0:      # near-diagonal copy
            q = src + 0.02 * torch.randn(T, 25, generator=g)
        elif kind == 1:    # warped: frames resampled along a monotone map
            warp = torch.cumsum(torch.rand(T, generator=g) + 0.3, 0)
            idx = (warp / warp[-1] * (T - 1)).round().long()
            q = src[idx] + 0.02 * torch.randn(T, 25, generator=g)
        else:              # shifted, or noise
            q = torch.roll(src, m % 20, 0) if m % 2 else torch.rand(T, 25, generator=g)
        queries.append(q)
    pred = torch.stack(queries).contiguous()
    lists = [sorted(set(torch.randperm(16, generator=g)[:1 + m % 16].tolist()) | {m % 16}) for m in range(21)]
    cand = from_lists(lists)
    full = weighted_dtw_min(pred, walks, cand, groups=groups, abandon=False, return_cells=True, backend="cpp")
    fast = weighted_dtw_min(pred, walks, cand, groups=groups, abandon=True, return_cells=True, backend="cpp")
    assert torch.equal(full[0], fast[0]) and torch.equal(full[1], fast[1])
    want = ref.weighted_dtw_min(pred.double(), walks.double(), cand, groups)
    assert_close("cpp", want[0], fast[0], atol=1e-9, rtol=1e-6)
    assert torch.equal(want[1], fast[1])
    near = [m for m in range(21) if m % 3 == 0]
    one = from_lists([[m % 16] for m in near])
    single = weighted_dtw_min(pred[near], walks, one, groups=groups, abandon=True, return_cells=True, backend="cpp")
    assert single[2] < 0.5 * len(near) * T * T * 3, single[2]   # the band, not the whole matrix



def test_banded_search_equals_the_full_dp_on_random_configurations():
    """The pruned search (bounds, abandoning, bands narrowed row by row by the row tails) against
    the full DP, bit for bit, over random layouts and weights (zero included), lengths (Tx != Ty),
    candidate lists (repeats included) and query kinds: noisy or time-warped copies of a candidate,
    uniform noise, and values on a coarse grid (tied paths and tied candidates)."""
    g = torch.Generator().manual_seed(11)

    def draw(hi, lo=1):
        return int(torch.randint(lo, hi + 1, (), generator=g))

    for trial in range(120):
        Tx = draw(70, 2)
        Ty = Tx if trial % 3 else draw(70, 2)
        if trial % 2:
            D, groups = 25, ((0, 15, 1 / 15), (15, 17, 1.0), (17, 25, 1 / 8))
        else:
            D = draw(12)
            cut = sorted({draw(D - 1) for _ in range(2)}) if D > 1 else []
            bounds = [0] + cut + [D]
            groups = tuple((bounds[i], bounds[i + 1], (0.0, 0.5, 1.0, 7.0)[draw(3, 0)])
                           for i in range(len(bounds) - 1))
        G, M = draw(8), draw(10)
        walks = torch.cumsum(0.3 * torch.randn(G, Ty, D, generator=g), 1)
        kind = trial % 4
        if kind == 0:    # noisy copies, resampled to Tx frames
            idx = torch.linspace(0, Ty - 1, Tx).round().long()
            pred = walks[torch.randint(0, G, (M,), generator=g)][:, idx]
            pred = pred + (0.0, 0.01, 0.1, 1.0)[trial % 7 % 4] * torch.randn(M, Tx, D, generator=g)
        elif kind == 1:  # warped copies
            idx = torch.sort(torch.randint(0, Ty, (M, Tx), generator=g), 1).values
            pred = walks[torch.randint(0, G, (M, 1), generator=g), idx]
        elif kind == 2:
            pred = torch.rand(M, Tx, D, generator=g)
        else:            # a coarse grid: ties
            pred = torch.round(torch.cumsum(0.3 * torch.randn(M, Tx, D, generator=g), 1))
            walks = torch.round(walks)
        lists = [torch.randint(0, G, (draw(G),), generator=g).tolist() for _ in range(M)]
        cand = from_lists(lists)
        pred, walks = pred.float().contiguous(), walks.float().contiguous()
        full = weighted_dtw_min(pred, walks, cand, groups=groups, abandon=False, backend="cpp")
        fast = weighted_dtw_min(pred, walks, cand, groups=groups, abandon=True, backend="cpp")
        assert torch.equal(full[0], fast[0]) and torch.equal(full[1], fast[1]), (trial, Tx, Ty, D, groups, kind)

@pytest.mark.parametrize("groups", [((0, 15, 1 / 15), (15, 17, 1.0), (17, 25, 1 / 8)), ((0, 3, 1.0), (3, 25, 0.5))])
def test_banded_search_at_strip_edges(groups):
    """Lengths around the banded search's strips of eight rows and its eight-column windows (1, 7,
    8, 9, 16, 17 frames, Tx != Ty included): the full DP bit for bit and the float64 reference."""
    g = torch.Generator().manual_seed(17)
    for Tx in (1, 2, 7, 8, 9, 16, 17):
        for Ty in (1, 7, 8, 9, 17):
            y = torch.rand(5, Ty, 25, generator=g)
            x = torch.cat([torch.rand(3, Tx, 25, generator=g),
                           y[1:2, torch.linspace(0, Ty - 1, Tx).round().long()] + 0.01])   # a near copy
            cand = from_lists([[0, 1, 2], [4], [3, 1], [0, 1, 2, 3, 4]])
            full = weighted_dtw_min(x, y, cand, groups=groups, abandon=False, backend="cpp")
            fast = weighted_dtw_min(x, y, cand, groups=groups, abandon=True, backend="cpp")
            assert torch.equal(full[0], fast[0]) and torch.equal(full[1], fast[1]), (Tx, Ty)
            want = ref.weighted_dtw_min(x.double(), y.double(), cand, groups)
            assert_close("cpp", want[0], fast[0], atol=1e-9, rtol=1e-6)
            assert torch.equal(want[1], fast[1]), (Tx, Ty)


def test_all_weights_zero():
    """Every weighted value is 0: the first listed candidate of each query, with and without
    abandoning (the banded search, which needs a group that weighs, is not used)."""
    g = torch.Generator().manual_seed(5)
    pred, gt = torch.rand(3, 20, 4, generator=g), torch.rand(5, 20, 4, generator=g)
    cand = from_lists([[3, 1, 2], [4, 0], [2]])
    groups = ((0, 2, 0.0), (2, 4, 0.0))
    for abandon in (True, False):
        value, arg = weighted_dtw_min(pred, gt, cand, groups=groups, abandon=abandon, backend="cpp")
        assert torch.equal(value, torch.zeros(3, dtype=torch.float64)) and arg.tolist() == [1, 0, 2]


def test_abandoning_prunes_random_like_queries():
    """Uniform random queries against synthetic listener emotion: the DP's row minimum alone pruned
    nothing on such queries (every candidate's row minimum grows alike); the row and column tails
    from the envelopes must (about a quarter of the cells are left at T = 150)."""
    gt = SyntheticDyads(sessions=6, prototypes=2, seed=0).dataset(modalities=("emotion",))
    gt = gt.stack("listener", "emotion")[:, :150].contiguous()
    pred = torch.rand(6, 150, 25, generator=torch.Generator().manual_seed(1))
    cand = from_lists([list(range(gt.shape[0]))] * 6)
    full = weighted_dtw_min(pred, gt, cand, abandon=False, return_cells=True, backend="cpp")
    fast = weighted_dtw_min(pred, gt, cand, abandon=True, return_cells=True, backend="cpp")
    assert torch.equal(full[0], fast[0]) and torch.equal(full[1], fast[1])
    assert fast[2] < 0.5 * full[2], (fast[2], full[2])


def _csr(lists):
    return from_lists(lists)


@pytest.mark.parametrize("call,err,match", [
    (lambda: dtw(torch.rand(2, 5, 3), torch.rand(3, 5, 3)), ValueError, "share P and D"),
    (lambda: dtw(torch.rand(2, 5), torch.rand(2, 5)), ValueError, "x must have 3 dimensions"),
    (lambda: dtw(torch.full((1, 3, 2), float("nan")), torch.rand(1, 3, 2)), ValueError, "x contains NaN"),
    (lambda: dtw(torch.rand(1, 3, 2), torch.rand(1, 3, 2), backend="triton"), RuntimeError, "implements only"),
    (lambda: weighted_dtw_min(torch.rand(2, 5, 25), torch.rand(3, 5, 25), _csr([[0], []])), ValueError,
     "no candidate"),
    (lambda: weighted_dtw_min(torch.rand(2, 5, 25), torch.rand(3, 5, 25), _csr([[0], [3]])), ValueError,
     r"indices must lie in \[0, 3\)"),
    (lambda: weighted_dtw_min(torch.rand(2, 5, 25), torch.rand(3, 5, 25), _csr([[0]])), ValueError,
     "must describe 2 queries"),
    (lambda: weighted_dtw_min(torch.rand(2, 5, 25), torch.rand(3, 5, 25), [[0], [1]]), TypeError, "CSR pair"),
    (lambda: weighted_dtw_min(torch.rand(1, 5, 25), torch.rand(3, 5, 25), _csr([[0]]), groups=[(0, 30, 1.0)]),
     ValueError, "0 <= start < end <= 25"),
    (lambda: weighted_dtw_min(torch.rand(1, 5, 25), torch.rand(3, 5, 24), _csr([[0]])), ValueError,
     "same last dim"),
])
def test_bad_input(call, err, match):
    with pytest.raises(err, match=match):
        call()


_ISA_SCRIPT = """
import sys, torch
from reactfast import _backend
from reactfast.metrics.candidates import from_lists
from reactfast.ops.dtw import weighted_dtw_min
data = torch.load(sys.argv[1])
out = {"isa": _backend.native().cpu_isa()}
for name, groups in (("react", ((0, 15, 1 / 15), (15, 17, 1.0), (17, 25, 1 / 8))),
                     ("generic", ((0, 5, 1.0), (5, 25, 0.25)))):
    for abandon in (False, True):
        out[name, abandon] = weighted_dtw_min(data["pred"], data["gt"], from_lists(data["lists"]), groups=groups,
                                              abandon=abandon, backend="cpp", return_cells=True)
torch.save(out, sys.argv[2])
"""


def test_every_cpu_build_is_exact(tmp_path):
    """The DTW lanes' AVX-512, AVX2 and baseline builds (whole 64-byte vectors or 32-byte halves,
    picked at run time; REACTFAST_CPU_ISA caps the pick), each run in a process of its own as far as
    this machine can: each equals the float64 reference within 1e-6 relative with the same argmins,
    with and without abandoning (which agree bit for bit), in REACT's layout and a generic one.
    The AVX-512 and AVX2 builds (both contract the costs into FMAs) give the same bits; the baseline
    build, without FMA, may differ from them in the last bits."""
    from reactfast import _backend

    if not _backend.cpp_status()[0]:
        pytest.skip("needs the C++ extension")
    g = torch.Generator().manual_seed(7)
    gt = torch.cumsum(0.1 * torch.randn(10, 70, 25, generator=g), dim=1)
    pred = torch.cat([gt[:4] + 0.05 * torch.randn(4, 70, 25, generator=g), torch.rand(3, 70, 25, generator=g)])
    lists = [list(range(m, 10)) + list(range(m)) for m in range(7)]
    torch.save({"pred": pred, "gt": gt, "lists": lists}, tmp_path / "in.pt")
    script = tmp_path / "run.py"
    script.write_text(_ISA_SCRIPT)
    results = {}
    run_each_cpu_build(script, (str(tmp_path / "in.pt"), str(tmp_path / "out{cap}.pt")))
    for out in tmp_path.glob("out*.pt"):
        got = torch.load(out)
        results[got.pop("isa")] = got
    assert "baseline" in results, results.keys()
    groups = {"react": ((0, 15, 1 / 15), (15, 17, 1.0), (17, 25, 1 / 8)), "generic": ((0, 5, 1.0), (5, 25, 0.25))}
    for name, grp in groups.items():
        want = ref.weighted_dtw_min(pred.double(), gt.double(), from_lists(lists), grp)
        for isa, got in results.items():
            full, fast = got[name, False], got[name, True]
            assert torch.equal(full[0], fast[0]) and torch.equal(full[1], fast[1]), (isa, name)
            assert_close("cpp", want[0], fast[0], atol=1e-9, rtol=1e-6)
            assert torch.equal(want[1], fast[1]), (isa, name)
    if "x86-64-v4" in results and "x86-64-v3" in results:
        for key, (value, arg, cells) in results["x86-64-v4"].items():
            other = results["x86-64-v3"][key]
            assert torch.equal(value, other[0]) and torch.equal(arg, other[1]) and cells == other[2], key
