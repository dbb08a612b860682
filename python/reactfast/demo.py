"""``reactfast demo``: the whole job on built-in synthetic data.

1. Write synthetic dyadic sessions (train and test splits) in the REACT 2024 layout, read back.
2. Train a small ReactFace on the training windows (CPU, a few minutes).
3. Generate 10 reactions per test speaker with the online loop.
4. Score them and the papers' baselines (Mirror, Random, NN) with the challenge metrics.
5. Print the table; save metrics.json, the predictions and a plot.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from reactfast import metrics
from reactfast.data import ReactDataset, SyntheticDyads
from reactfast.metrics.io import format_table, save_json
from reactfast.models.baselines import MirrorBaseline, NearestNeighbourBaseline, RandomBaseline
from reactfast.plot import plot_reactions

SAMPLES = 10


def demo_model(audio_dim: int, name: str = "reactface"):
    from reactfast.train.registry import build

    if name != "reactface":
        raise ValueError(f"the demo trains 'reactface' today, got {name!r}")
    return build(name, dict(speaker_dim=83, speaker_inputs="emotion+3dmm", audio_dim=audio_dim, dim=64, heads=4,
                            cie_heads=4, cie_ffn=128, window_train=32, window=8, context=128, past=32, dropout=0.1,
                            kl_weight=1e-4, emotion_weight=10.0))


def run_demo(out: str = "reactfast_out/demo", sessions: int = 48, steps: int = 500, seed: int = 0,
             model: str = "reactface") -> dict:
    from reactfast.train import TrainConfig, Trainer, generate_dataset

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    data_root = os.path.join(out, "data")
    os.makedirs(out, exist_ok=True)
    test_sessions = max(4, sessions // 4)
    for split, n in (("train", sessions), ("test", test_sessions)):
        SyntheticDyads(sessions=n, seed=seed, split=split).write(data_root, split)
    print(f"[demo] wrote synthetic dyads in the REACT layout to {data_root}: {sessions} training and "
          f"{test_sessions} test sessions (mirrored: {2 * sessions} and {2 * test_sessions} dyads)")

    train = ReactDataset(data_root, "train", window=128, stride=64)
    test = ReactDataset(data_root, "test")
    net = demo_model(train[0]["speaker_audio"].shape[-1], model)
    params = sum(p.numel() for p in net.parameters())
    print(f"[demo] training {model} ({params / 1e6:.2f} M parameters) for {steps} steps on "
          f"{len(train)} windows of 128 frames")
    t1 = time.perf_counter()
    trainer = Trainer(net, train, TrainConfig(steps=steps, batch_size=8, lr=1e-3, seed=seed,
                                              out_dir=os.path.join(out, "run")))
    history = trainer.fit()
    first = np.mean([h["rec"] for h in history[:10]])
    last = np.mean([h["rec"] for h in history[-10:]])
    print(f"[demo] trained in {time.perf_counter() - t1:.0f} s: reconstruction loss {first:.4f} -> {last:.4f}; "
          f"checkpoint {os.path.join(out, 'run', 'checkpoint')}")

    t1 = time.perf_counter()
    generated = generate_dataset(net, test, SAMPLES, seed=seed, progress=True)
    print(f"[demo] generated {SAMPLES} reactions for each of {test.num_items} test speakers "
          f"({test.frames} frames) in {time.perf_counter() - t1:.0f} s")

    listener_gt = test.stack("listener", "emotion").numpy()
    speaker = test.stack("speaker", "emotion").numpy()
    appropriate = test.appropriate
    predictions = {model: generated["emotion"]}
    for baseline in (MirrorBaseline(), RandomBaseline(), NearestNeighbourBaseline().fit(
            ReactDataset(data_root, "train"))):
        predictions[baseline.name] = baseline.predict(test, SAMPLES, seed)["emotion"]
    rows = {}
    t1 = time.perf_counter()
    for name, pred in predictions.items():
        rows[name] = metrics.evaluate(pred, listener_gt, speaker, appropriate)
    print(f"[demo] evaluated {len(rows)} methods with the REACT metric suite in {time.perf_counter() - t1:.0f} s\n")
    print(format_table(rows))
    print()

    np.savez(os.path.join(out, "preds.npz"), pred=generated["emotion"], pred_3dmm=generated["3dmm"],
             listener_gt=listener_gt, speaker=speaker, appropriate=appropriate)
    save_json(os.path.join(out, "metrics.json"), {"metrics": rows, "samples": SAMPLES, "seed": seed, "steps": steps,
                                                  "train_sessions": sessions, "test_dyads": test.num_items})
    plot = plot_reactions(os.path.join(out, "reactions.png"), speaker[0], generated["emotion"][0], (15, 16, 18),
                          listener_gt[0], title=f"{model}: speaker 0 and {min(5, SAMPLES)} generated reactions")
    print(f"[demo] metrics: {os.path.join(out, 'metrics.json')}")
    print(f"[demo] predictions: {os.path.join(out, 'preds.npz')} (reactfast evaluate / plot read it)")
    print(f"[demo] plot: {plot}")
    print(f"[demo] done in {time.perf_counter() - t0:.0f} s; outputs under {os.path.abspath(out)}")
    return rows
