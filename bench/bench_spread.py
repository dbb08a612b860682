"""FRDiv, FRDvs and FRVar (the spread op's three sums) on CPU at the 48-speaker case of the official
comparison: the C++ op against the float64 torch reference (the suite's path before the op) and
against the official code's formulas (every pair of samples, every pair of speakers), each value
checked against the official one first."""

import torch

from reactfast import _backend, metrics
from reactfast.data import SyntheticDyads
from reactfast.ops.spread import spread_sums

from . import _official
from ._metric_data import model_like

THREADS = _backend.native().openmp_max_threads()


def test_spread_vs_reference_and_official(bench_report, best_times):
    ds = SyntheticDyads(sessions=24, prototypes=3, seed=1).dataset(modalities=("emotion",))
    gt = ds.stack("listener", "emotion").numpy()
    pred = model_like(gt, ds.appropriate, seed=1)
    x = torch.from_numpy(pred)
    official = _official.spread(pred)
    ours = (metrics.frdiv(pred), metrics.frdvs(pred), metrics.frvar(pred))
    for name, got, want in zip(("FRDiv", "FRDvs", "FRVar"), ours, official):
        assert abs(got - want) <= 1e-9 * abs(want), (name, got, want)
    best = best_times({"cpp": lambda: spread_sums(x, backend="cpp"),
                       "reference": lambda: spread_sums(x, backend="reference"),
                       "official": lambda: _official.spread(pred)}, rounds=3)
    ms = {k: v * 1e3 for k, v in best.items()}
    N, S, T, D = pred.shape
    bench_report(f"FRDiv + FRDvs + FRVar, N={N}, S={S}, T={T}, D={D}, {THREADS} threads: C++ {ms['cpp']:.1f} ms, "
                 f"torch reference {ms['reference']:.1f} ms ({ms['reference'] / ms['cpp']:.1f}x), official formulas "
                 f"{ms['official']:.0f} ms ({ms['official'] / ms['cpp']:.0f}x); equal to the official within 1e-9")
