"""``reactfast demo``: the whole job on built-in synthetic data.

1. Write synthetic dyadic sessions (train and test splits) in the REACT 2024 layout, read back.
2. Train a small generator on CPU (``--model``: reactface, perfrdiff, reactdiff, or pflposnet =
   ReactFace followed by a PosNet trained on its output).
3. Generate 10 reactions per test speaker.
4. Score them and the papers' baselines (Mirror, Random, NN) with the challenge metrics.
5. Print the table; save metrics.json, the predictions and a plot.
"""

from __future__ import annotations

import os
import time
from typing import Dict

import numpy as np
import torch

from reactfast import metrics
from reactfast.data import ReactDataset, SyntheticDyads
from reactfast.metrics.io import format_table, save_json
from reactfast.models.baselines import MirrorBaseline, NearestNeighbourBaseline, RandomBaseline
from reactfast.plot import plot_reactions

SAMPLES = 10
MODELS = ("reactface", "perfrdiff", "reactdiff", "pflposnet")


def demo_model(name: str, audio_dim: int):
    """The small configurations the demo trains on CPU."""
    from reactfast.train.registry import build

    if name in ("reactface", "pflposnet"):
        return build("reactface", dict(speaker_dim=83, speaker_inputs="emotion+3dmm", audio_dim=audio_dim, dim=64,
                                       heads=4, cie_heads=4, cie_ffn=128, window_train=32, window=8, context=128,
                                       past=32, dropout=0.1, kl_weight=1e-4, emotion_weight=10.0))
    if name == "perfrdiff":
        return build("perfrdiff", dict(audio_dim=audio_dim, dim=64, heads=4, ffn=128, layers=6, train_steps=200,
                                       sample_steps=20, style_dim=32, style_layers=2, style_heads=4, style_ffn=64,
                                       hyper_hidden=64, guidance=2.0))
    if name == "reactdiff":
        return build("reactdiff", dict(audio_dim=audio_dim, attn_dim=64, heads=4, latent=32, dec_heads=4,
                                       dec_ffn=64, dec_layers=2, channels=32, mults=(1, 2, 2, 2), res_blocks=1,
                                       cond_dim=64, ema=0.99, clip=None))
    raise ValueError(f"model must be one of {MODELS}, got {name!r}")


def _train(model, dataset, steps, seed, out, lr=1e-3, optimizer="adamw", batch_size=8):
    from reactfast.train import TrainConfig, Trainer

    trainer = Trainer(model, dataset, TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed, out_dir=out,
                                                  optimizer=optimizer))
    history = trainer.fit()
    first, last = np.mean([h["rec"] for h in history[:10]]), np.mean([h["rec"] for h in history[-10:]])
    return first, last


def train_and_generate(name: str, data_root: str, test: ReactDataset, steps: int, seed: int, out: str) -> Dict:
    """Train ``name`` on the training split and generate SAMPLES reactions per test dyad."""
    from reactfast.train import generate_dataset

    audio_dim = ReactDataset(data_root, "train", frames=50)[0]["speaker_audio"].shape[-1]
    model = demo_model(name, audio_dim)
    params = sum(p.numel() for p in model.parameters())
    print(f"[demo] training {name} ({params / 1e6:.2f} M parameters) for {steps} steps")
    t0 = time.perf_counter()
    info = {}
    if name in ("reactface", "pflposnet"):
        first, last = _train(model, ReactDataset(data_root, "train", window=128, stride=64), steps, seed,
                             os.path.join(out, "run"))
    elif name == "perfrdiff":
        pairs = ReactDataset(data_root, "train", window=100, stride=50)
        model.set_stage(1)
        first, last = _train(model, pairs, steps, seed, os.path.join(out, "run"), lr=2e-3, batch_size=16)
        model.set_stage(2)
        _train(model, pairs, max(1, steps // 3), seed, os.path.join(out, "run_stage2"), lr=1e-3, optimizer="sgd",
               batch_size=16)
    else:
        windows = ReactDataset(data_root, "train", window=50, stride=25)
        model.set_stage(1)
        first, last = _train(model, windows, steps, seed, os.path.join(out, "run"), lr=2e-3, batch_size=16)
        model.set_stage(2)
        _train(model, windows, steps, seed, os.path.join(out, "run_stage2"), lr=2e-3, batch_size=16)
    print(f"[demo] trained in {time.perf_counter() - t0:.0f} s: first-stage reconstruction loss {first:.4f} -> "
          f"{last:.4f}")
    t0 = time.perf_counter()
    generated = generate_dataset(model, test, SAMPLES, seed=seed, progress=True)
    if name == "pflposnet":
        generated, info = _posnet(model, data_root, test, generated, seed)
    print(f"[demo] generated {SAMPLES} reactions for each of {test.num_items} test speakers ({test.frames} frames) "
          f"in {time.perf_counter() - t0:.0f} s")
    return {"generated": generated, **info}


def _posnet(model, data_root, test, generated, seed):
    """Train PosNet on ReactFace's generated training reactions, then adjust the test ones."""
    from reactfast.models.posnet import PosNet, seam_jump
    from reactfast.train import generate_dataset

    W = model.config.window
    train = ReactDataset(data_root, "train")
    rows = list(range(0, train.num_items, 4))
    raw = torch.from_numpy(generate_dataset(model, train, 2, seed=seed + 1, rows=rows)["3dmm"])
    raw = raw.reshape(-1, raw.shape[2], 58)
    n = raw.shape[1] // W
    windows = raw[:, : n * W].reshape(raw.shape[0], n, W, 58)
    posnet = PosNet(window=W, hidden=128)
    opt = torch.optim.Adam(posnet.parameters(), lr=1e-3)
    for _ in range(150):
        loss = posnet.loss(windows)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    test3 = torch.from_numpy(generated["3dmm"])
    B, S, T, _ = test3.shape
    flat = test3.reshape(B * S, T, 58)
    adjusted, _ = posnet.adjust_sequence(flat)
    before, after = float(seam_jump(flat, W)), float(seam_jump(adjusted, W))
    print(f"[demo] PosNet: mean |pose jump| at window seams {before:.4f} -> {after:.4f}; expression dims unchanged: "
          f"{bool(torch.equal(adjusted[..., :52], flat[..., :52]))}")
    return ({**generated, "3dmm": adjusted.reshape(B, S, T, 58).numpy()},
            {"posnet_seam_jump": {"before": before, "after": after}})


def run_demo(out: str = "reactfast_out/demo", sessions: int = 48, steps: int = 500, seed: int = 0,
             model: str = "reactface") -> dict:
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    data_root = os.path.join(out, "data")
    os.makedirs(out, exist_ok=True)
    test_sessions = max(4, sessions // 4)
    for split, n in (("train", sessions), ("test", test_sessions)):
        SyntheticDyads(sessions=n, seed=seed, split=split).write(data_root, split)
    print(f"[demo] wrote synthetic dyads in the REACT layout to {data_root}: {sessions} training and "
          f"{test_sessions} test sessions (mirrored: {2 * sessions} and {2 * test_sessions} dyads)")

    test = ReactDataset(data_root, "test")
    result = train_and_generate(model, data_root, test, steps, seed, out)
    generated = result["generated"]

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

    arrays = {"pred": generated["emotion"], "listener_gt": listener_gt, "speaker": speaker, "appropriate": appropriate}
    if "3dmm" in generated:
        arrays["pred_3dmm"] = generated["3dmm"]
    np.savez(os.path.join(out, "preds.npz"), **arrays)
    extra = {k: v for k, v in result.items() if k != "generated"}
    save_json(os.path.join(out, "metrics.json"), {"metrics": rows, "model": model, "samples": SAMPLES, "seed": seed,
                                                  "steps": steps, "train_sessions": sessions,
                                                  "test_dyads": test.num_items, **extra})
    plot = plot_reactions(os.path.join(out, "reactions.png"), speaker[0], generated["emotion"][0], (15, 16, 18),
                          listener_gt[0], title=f"{model}: speaker 0 and {min(5, SAMPLES)} generated reactions")
    print(f"[demo] metrics: {os.path.join(out, 'metrics.json')}")
    print(f"[demo] predictions: {os.path.join(out, 'preds.npz')} (reactfast evaluate / plot read it)")
    print(f"[demo] plot: {plot}")
    print(f"[demo] done in {time.perf_counter() - t0:.0f} s; outputs under {os.path.abspath(out)}")
    return rows
