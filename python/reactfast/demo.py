"""``reactfast demo``: the package's job end to end on built-in synthetic data.

Today it writes a synthetic dataset in the REACT layout, reads it back, and scores reference
reaction sets with the challenge metric suite: copies of each dyad's real listener (appropriate,
not diverse), the speaker mirrored, and Gaussian noise. Generators and training join as they land.
"""

from __future__ import annotations

import os
import time

import numpy as np

from reactfast import metrics
from reactfast.data import ReactDataset, SyntheticDyads
from reactfast.metrics.io import format_table, save_json

SAMPLES = 10


def reference_reactions(listener_gt: np.ndarray, speaker: np.ndarray, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    N, T, D = listener_gt.shape
    noise = rng.normal(0.0, 0.05, (N, SAMPLES, T, D)).astype(np.float32)
    return {
        "GT listener + noise": listener_gt[:, None] + noise,
        "Mirror (speaker)": np.repeat(speaker[:, None], SAMPLES, axis=1),
        "Random (Gaussian)": rng.normal(0.0, 1.0, (N, SAMPLES, T, D)).astype(np.float32),
    }


def run_demo(out: str = "reactfast_out/demo", sessions: int = 24, seed: int = 0) -> dict:
    t0 = time.perf_counter()
    data_root = os.path.join(out, "data")
    os.makedirs(out, exist_ok=True)
    synthetic = SyntheticDyads(sessions=sessions, seed=seed)
    synthetic.write(data_root, "val")
    print(f"[demo] wrote {sessions} synthetic dyadic sessions in the REACT layout to {data_root}")

    dataset = ReactDataset(data_root, "val", modalities=("emotion",))
    listener_gt = dataset.stack("listener", "emotion").numpy()
    speaker = dataset.stack("speaker", "emotion").numpy()
    appropriate = dataset.appropriate
    print(f"[demo] read back {dataset.num_items} mirrored items of {dataset.frames} frames; "
          f"{appropriate.sum(1).mean():.1f} appropriate reactions per speaker on average")

    rows = {}
    for name, pred in reference_reactions(listener_gt, speaker, seed).items():
        t1 = time.perf_counter()
        rows[name] = metrics.evaluate(pred, listener_gt, speaker, appropriate)
        print(f"[demo] scored {name!r}: {pred.shape[0]} speakers x {pred.shape[1]} reactions "
              f"in {time.perf_counter() - t1:.1f} s")
    print()
    print(format_table(rows))
    print()
    result_path = os.path.join(out, "metrics.json")
    save_json(result_path, {"metrics": rows, "items": dataset.num_items, "samples": SAMPLES, "seed": seed})
    print(f"[demo] metrics written to {result_path}")
    print(f"[demo] done in {time.perf_counter() - t0:.1f} s; outputs under {os.path.abspath(out)}")
    return rows
