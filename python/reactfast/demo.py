"""``reactfast demo``: the package's job end to end on built-in synthetic data."""

from __future__ import annotations

import os
import time

import numpy as np

from reactfast.data import ReactDataset, SyntheticDyads


def run_demo(out: str = "reactfast_out/demo", sessions: int = 24, seed: int = 0) -> dict:
    t0 = time.perf_counter()
    data_root = os.path.join(out, "data")
    os.makedirs(out, exist_ok=True)
    synthetic = SyntheticDyads(sessions=sessions, seed=seed)
    synthetic.write(data_root, "val")
    print(f"[demo] wrote {sessions} synthetic dyadic sessions in the REACT layout to {data_root}")

    dataset = ReactDataset(data_root, "val")
    appropriate = dataset.appropriate
    print(f"[demo] read back {dataset.num_items} mirrored items of {dataset.frames} frames; "
          f"{appropriate.sum(1).mean():.1f} appropriate reactions per speaker on average")
    result = {"items": dataset.num_items, "frames": dataset.frames, "data": data_root}
    print(f"[demo] done in {time.perf_counter() - t0:.1f} s; outputs under {os.path.abspath(out)}")
    return result
