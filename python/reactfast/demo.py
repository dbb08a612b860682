"""``reactfast demo``: the whole job on built-in synthetic data.

1. Write synthetic dyadic sessions (train and test splits) in the REACT 2024 layout, read back.
2. Train a small generator on CPU (``--model``, any registered generator, with its
   ``demo_config`` and the stages of its ``demo_stages``).
3. Generate 10 reactions per test speaker.
4. Score them and the papers' baselines (Mirror, Random, NN) with the challenge metrics.
5. Print the table, the ranking and every metric on which the generator does not beat a
   baseline; save metrics.json, the predictions and a plot.
"""

from __future__ import annotations

import os
import time
import warnings
from typing import Dict, Optional

import numpy as np
import torch

from reactfast import _backend, _io, metrics, models
from reactfast.data import ReactDataset, SyntheticDyads
from reactfast.metrics.io import format_table, ranking, save_json
from reactfast.models.baselines import MirrorBaseline, NearestNeighbourBaseline, RandomBaseline
from reactfast.ops._checks import check_device, check_int
from reactfast.plot import plot_reactions

SAMPLES = 10
# Training items of the demo's windowed generators span this many frames (ReactFace: 128 frames,
# a new item every 64).
CLIP_FRAMES = 128


def demo_model(name: str, audio_dim: int, backend: Optional[str] = None):
    """The small configuration of generator ``name`` that the demo trains on a CPU."""
    cls = models.get(name)
    return cls(cls.demo_config(audio_dim), backend=backend)


def _train_stages(model, data_root: str, seed: int, out: str, steps: int, device):
    """Every stage of the model's demo recipe; returns the first stage's mean reconstruction loss over
    its first and last 10 steps."""
    from reactfast.train import TrainConfig, Trainer

    first = last = float("nan")
    for i, stage in enumerate(model.demo_stages(steps)):
        model.set_stage(stage.stage)
        window, stride = model.training_windows(CLIP_FRAMES)
        data = ReactDataset(data_root, "train", window=window, stride=stride)
        run = os.path.join(out, "run" if i == 0 else f"run_stage{stage.stage}")
        config = TrainConfig(steps=stage.steps, batch_size=stage.batch_size, lr=stage.lr, seed=seed, out_dir=run,
                             optimizer=stage.optimizer, lr_schedule=stage.lr_schedule)
        history = Trainer(model, data, config, device=device).fit()
        if i == 0:
            first, last = np.mean([h["rec"] for h in history[:10]]), np.mean([h["rec"] for h in history[-10:]])
        elif history:
            extras = ", ".join(f"{k} {v:.4f}" for k, v in history[-1].items() if k != "step")
            print(f"[demo] stage {stage.stage} ({model.stage_names[stage.stage]}): last step {extras}")
    return first, last


def train_and_generate(name: str, data_root: str, test: ReactDataset, steps: int, seed: int, out: str,
                       device=None, backend: Optional[str] = None) -> Dict:
    """Train ``name`` on the training split and generate SAMPLES reactions per test dyad."""
    from reactfast.train import generate_dataset

    audio_dim = ReactDataset(data_root, "train", frames=50)[0]["speaker_audio"].shape[-1]
    model = demo_model(name, audio_dim, backend)
    params = sum(p.numel() for p in model.parameters())
    schedule = " + ".join(str(stage.steps) for stage in model.demo_stages(steps))
    print(f"[demo] training {name} ({params / 1e6:.2f} M parameters) for {schedule} steps")
    t0 = time.perf_counter()
    first, last = _train_stages(model, data_root, seed, out, steps, device)
    print(f"[demo] trained in {time.perf_counter() - t0:.0f} s: first-stage reconstruction loss {first:.4f} -> "
          f"{last:.4f}")
    t0 = time.perf_counter()
    generated = generate_dataset(model, test, SAMPLES, seed=seed, progress=True, device=device)
    print(f"[demo] generated {SAMPLES} reactions for each of {test.num_items} test speakers ({test.frames} frames) "
          f"in {time.perf_counter() - t0:.0f} s")
    info = {}
    if "3dmm" in generated:
        frames = torch.from_numpy(generated["3dmm"])
        info["pose_seam_jump"] = float(metrics.pose_seam_jump(frames.reshape(-1, *frames.shape[2:]), model.window))
        print(f"[demo] mean |head-pose jump| at the {model.window}-frame window seams: {info['pose_seam_jump']:.4f}")
    return {"generated": generated, **info}


def run_demo(out: str = "reactfast_out/demo", sessions: int = 48, steps: int = 500, seed: int = 0,
             model: str = models.DEFAULT, device=None, backend: Optional[str] = None) -> dict:
    models.get(model)
    check_int("sessions", sessions)   # before anything is written
    check_int("steps", steps)
    device = check_device("device", device) if device is not None else torch.device("cpu")
    # Training, sampling and scoring all run on ``device``: a forced backend that cannot run there
    # (a diffusion model's DDIM step, a metric's kernel) fails now, not after the training.
    _backend.check_spec_ops(backend)
    _backend.check_forced(backend, None, device)
    t0 = time.perf_counter()
    from reactfast.train import seed_everything

    seed_everything(seed)
    data_root = os.path.join(out, "data")
    os.makedirs(out, exist_ok=True)
    test_sessions = max(4, sessions // 4)
    for split, n in (("train", sessions), ("test", test_sessions)):
        SyntheticDyads(sessions=n, seed=seed, split=split).write(data_root, split)
    print(f"[demo] wrote synthetic dyads in the REACT layout to {data_root}: {sessions} training and "
          f"{test_sessions} test sessions (mirrored: {2 * sessions} and {2 * test_sessions} dyads)")

    test = ReactDataset(data_root, "test")
    result = train_and_generate(model, data_root, test, steps, seed, out, device, backend)
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
        with warnings.catch_warnings():
            if name == "Random":      # the papers' Random baseline is Gaussian noise, out of range by design
                warnings.simplefilter("ignore", RuntimeWarning)
            rows[name] = metrics.evaluate(*(torch.as_tensor(a).to(device) for a in (pred, listener_gt, speaker)),
                                          appropriate, backend=backend)
    print(f"[demo] evaluated {len(rows)} methods with the REACT metric suite in {time.perf_counter() - t1:.0f} s\n")
    print(format_table(rows))
    print()
    verdict = ranking(rows, model)
    print("\n".join(verdict))
    print()

    arrays = {"pred": generated["emotion"], "listener_gt": listener_gt, "speaker": speaker, "appropriate": appropriate}
    if "3dmm" in generated:
        arrays["pred_3dmm"] = generated["3dmm"]
    _io.save_npz(os.path.join(out, "preds.npz"), **arrays)
    extra = {k: v for k, v in result.items() if k != "generated"}
    save_json(os.path.join(out, "metrics.json"), {"metrics": rows, "model": model, "samples": SAMPLES, "seed": seed,
                                                  "steps": steps, "train_sessions": sessions,
                                                  "test_dyads": test.num_items, "ranking": verdict, **extra})
    plot = plot_reactions(os.path.join(out, "reactions.png"), speaker[0], generated["emotion"][0], (15, 16, 18),
                          listener_gt[0], title=f"{model}: speaker 0 and {min(5, SAMPLES)} generated reactions")
    print(f"[demo] metrics: {os.path.join(out, 'metrics.json')}")
    print(f"[demo] predictions: {os.path.join(out, 'preds.npz')} (reactfast evaluate / plot read it)")
    print(f"[demo] plot: {plot}")
    print(f"[demo] done in {time.perf_counter() - t0:.0f} s; outputs under {os.path.abspath(out)}")
    return rows
