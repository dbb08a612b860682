"""The range check of generated emotion (``check_emotion``, the metric suite's warning) on CPU at the
48-speaker case of the official comparison: the C++ op against its torch reference (the path the
suite took before), on model-like reactions (which leave the ranges a little) and on in-range ones
(the reference's fast path on the extremes)."""

import numpy as np
import torch

from reactfast import _backend
from reactfast.data import SyntheticDyads
from reactfast.ops.emotion_range import emotion_range_counts

from ._metric_data import model_like

THREADS = _backend.native().openmp_max_threads()


def test_emotion_range_vs_reference(bench_report, best_times):
    ds = SyntheticDyads(sessions=24, prototypes=3, seed=1).dataset(modalities=("emotion",))
    gt = ds.stack("listener", "emotion").numpy()
    cases = {"model-like": torch.from_numpy(model_like(gt, ds.appropriate, seed=1)),
             "in range": torch.from_numpy(np.ascontiguousarray(np.repeat(gt[:, None], 10, 1)))}
    lines = []
    for label, x in cases.items():
        want = emotion_range_counts(x, backend="reference")
        assert torch.equal(emotion_range_counts(x, backend="cpp"), want)
        t = best_times({"cpp": lambda: emotion_range_counts(x, backend="cpp"),
                        "reference": lambda: emotion_range_counts(x, backend="reference")}, rounds=5)
        lines.append(f"{label} ({int(want.sum())} values out of range): C++ {t['cpp'] * 1e3:.1f} ms vs reference "
                     f"{t['reference'] * 1e3:.1f} ms ({t['reference'] / t['cpp']:.1f}x)")
    bench_report(f"emotion range counts, {tuple(cases['in range'].shape)}, {THREADS} threads: " + "; ".join(lines))
