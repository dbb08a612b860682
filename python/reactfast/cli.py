"""The ``reactfast`` command line."""

from __future__ import annotations

import argparse
import os
import sys


def _cmd_env(args) -> int:
    from reactfast.env_report import report

    print(report())
    return 0


def _device(args):
    """The device ``--device`` names, printed; a clear error for one not available here."""
    from reactfast import _backend

    try:
        device = _backend.resolve_device(args.device)
    except ValueError as exc:
        raise SystemExit(f"reactfast {args.command}: --device: {exc}") from None
    print(f"[reactfast] device: {_backend.describe_device(device)}")
    return device


def _cmd_demo(args) -> int:
    from reactfast.demo import run_demo

    run_demo(out=args.out, sessions=args.sessions, steps=args.steps, seed=args.seed, model=args.model,
             device=_device(args), backend=args.backend)
    return 0


def _parse_overrides(items):
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--config takes key=value, got {item!r}")
        for cast in (int, float):
            try:
                value = cast(value)
                break
            except ValueError:
                continue
        out[key.strip()] = value
    return out


def load_data(spec: str, split: str, frames: int = 750, window=None, stride=None, sessions: int = 24, seed: int = 0,
              audio_dim: int = 32):
    """A dataset from ``spec``: "synthetic" (built-in synthetic dyads) or the challenge's data folder."""
    if spec == "synthetic":
        from reactfast.data import SyntheticDyads

        synthetic = SyntheticDyads(sessions=sessions, seed=seed, split=split, audio_dim=audio_dim)
        return synthetic.dataset(frames=min(frames, synthetic.config.frames), window=window, stride=stride)
    from reactfast.data import ReactDataset

    return ReactDataset(spec, split, frames=frames, window=window, stride=stride)


def _cmd_train(args) -> int:
    from reactfast import models
    from reactfast.train import TrainConfig, Trainer, load_into

    cls = models.get(args.model)
    if args.stage not in cls.stages:
        raise SystemExit(f"reactfast train: {args.model} trains in stages {cls.stages}, got --stage {args.stage}")
    if args.init and args.stage == cls.stages[0]:
        raise SystemExit("reactfast train: --init starts a later stage from the previous stage's checkpoint")
    clips = load_data(args.data, "train", args.frames, sessions=args.sessions, seed=args.seed)
    config = {**cls.data_defaults(clips[0]["speaker_audio"].shape[-1]), **_parse_overrides(args.config)}
    device = _device(args)
    model = models.build(args.model, config, backend=args.backend)
    if args.init:
        load_into(model, args.init)
    model.set_stage(args.stage)
    window, stride = model.training_windows(args.clip_frames)
    data = load_data(args.data, "train", args.frames, window=window, stride=stride, sessions=args.sessions,
                     seed=args.seed)
    val = None
    if args.val_every:
        val = load_data(args.data, "val", args.frames, sessions=max(2, args.sessions // 4), seed=args.seed)
    optimizer, stage_lr = model.stage_optimizer(args.stage)
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr if args.lr is not None else stage_lr,
                      ckpt_every=args.ckpt_every, val_every=args.val_every, out_dir=args.out, seed=args.seed,
                      progress=not args.no_progress, optimizer=optimizer)
    extra = {"data": {"spec": args.data, "sessions": args.sessions, "seed": args.seed, "frames": args.frames}}
    trainer = Trainer(model, data, cfg, val_dataset=val, resume=args.resume, extra_meta=extra, device=device)
    history = trainer.fit()
    if trainer.rank == 0:
        last = history[-1] if history else {}
        print(f"trained {args.model} for {trainer.step} steps; last loss {last.get('loss', float('nan')):.4f}; "
              f"checkpoint in {os.path.join(args.out, 'checkpoint')}")
    return 0


def _cmd_generate(args) -> int:
    import numpy as np

    from reactfast.train import generate_dataset, load_model
    from reactfast.train.checkpoint import read_config

    device = _device(args)
    model = load_model(args.checkpoint, device=device).set_backend(args.backend)
    data_meta = read_config(args.checkpoint).get("extra", {}).get("data", {})
    spec = args.data or data_meta.get("spec")
    if spec is None:
        raise SystemExit("reactfast generate: give --data (the checkpoint does not say which data it was trained on)")
    ds = load_data(spec, args.split, args.frames, sessions=args.sessions or max(2, data_meta.get("sessions", 24) // 2),
                   seed=data_meta.get("seed", 0) if spec == "synthetic" else 0,
                   audio_dim=model.config.audio_dim)
    preds = generate_dataset(model, ds, args.samples, seed=args.seed, progress=not args.no_progress, device=device)
    if "emotion" not in preds:
        raise SystemExit("reactfast generate: this model outputs no emotion; the metrics need the 25 emotion dims")
    arrays = {"pred": preds["emotion"], **({"pred_3dmm": preds["3dmm"]} if "3dmm" in preds else {}),
              "listener_gt": ds.stack("listener", "emotion").numpy(), "speaker": ds.stack("speaker", "emotion").numpy()}
    try:
        arrays["appropriate"] = ds.appropriate
    except Exception:  # a split without a neighbour matrix still gets its predictions
        pass
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    np.savez(args.out, **arrays)
    print(f"wrote {args.out}: pred {arrays['pred'].shape} (emotion)")
    return 0


def _cmd_plot(args) -> int:
    import numpy as np

    from reactfast.plot import plot_reactions

    with np.load(args.pred) as z:
        pred = z["pred"]
        speaker = z["speaker"] if "speaker" in z else None
        listener = z["listener_gt"] if "listener_gt" in z else None
    if speaker is None:
        raise SystemExit("reactfast plot: the file holds no 'speaker' array (write it with reactfast generate)")
    if not 0 <= args.item < pred.shape[0]:
        raise SystemExit(f"reactfast plot: --item must be in [0, {pred.shape[0]})")
    channels = [int(c) for c in args.channels.split(",")]
    out = args.out or os.path.splitext(args.pred)[0] + f".item{args.item}.png"
    plot_reactions(out, speaker[args.item], pred[args.item], channels,
                   listener[args.item] if listener is not None else None, title=f"dyad {args.item}")
    print(f"wrote {out}")
    return 0


def _cmd_bench(args) -> int:
    import subprocess

    root = args.path or next((p for p in ("bench", os.path.join(os.path.dirname(__file__), "..", "..", "bench"))
                              if os.path.isdir(p)), None)
    if root is None:
        raise SystemExit("reactfast bench: no bench/ folder here; run it from a reactfast source checkout or "
                         "give --path")
    cmd = [sys.executable, "-m", "pytest", root, "-q"]
    if args.k:
        cmd += ["-k", args.k]
    if args.quick:
        os.environ.setdefault("REACTFAST_BENCH_N", "100")
        cmd += ["-k", "not test_against_reencoding_prefix and not test_step_latency_flat"] if not args.k else []
    return subprocess.call(cmd)


def _cmd_evaluate(args) -> int:
    import time

    import torch

    from reactfast import metrics
    from reactfast.metrics.io import format_table, load_array, save_json

    pred = load_array(args.pred, args.key, name="pred")
    if pred.ndim != 4:
        raise SystemExit(f"reactfast evaluate: pred must have shape (N, S, T, 25), got {pred.shape}")
    bundled = {}
    if args.pred.endswith(".npz") and not args.data and not args.listener_gt:
        import numpy as np

        with np.load(args.pred) as z:
            bundled = {k: z[k] for k in ("listener_gt", "speaker", "appropriate") if k in z}
    if args.data:
        from reactfast.data import ReactDataset

        ds = ReactDataset(args.data, args.split, frames=pred.shape[2], modalities=("emotion",))
        listener_gt = ds.stack("listener", "emotion").numpy()
        speaker = ds.stack("speaker", "emotion").numpy()
        appropriate = ds.appropriate
    elif len(bundled) == 3:
        listener_gt, speaker, appropriate = bundled["listener_gt"], bundled["speaker"], bundled["appropriate"]
    elif args.listener_gt and args.speaker and args.appropriate:
        listener_gt = load_array(args.listener_gt, name="listener_gt")
        speaker = load_array(args.speaker, name="speaker")
        appropriate = load_array(args.appropriate, name="appropriate")
    else:
        raise SystemExit("reactfast evaluate: give --data ROOT (with --split), or all of --listener-gt, "
                         "--speaker and --appropriate (or a .npz from reactfast generate, which holds them)")
    device = _device(args)
    pred, listener_gt, speaker = (torch.as_tensor(a).to(device) for a in (pred, listener_gt, speaker))
    start = time.perf_counter()
    scores = metrics.evaluate(pred, listener_gt, speaker, appropriate, progress=not args.no_progress,
                              frsyn_all_samples=args.frsyn_all_samples, backend=args.backend)
    elapsed = time.perf_counter() - start
    print(format_table({"prediction": scores}))
    print(f"(N = {pred.shape[0]}, S = {pred.shape[1]}, T = {pred.shape[2]}; {elapsed:.1f} s)")
    out = args.out or os.path.splitext(args.pred)[0] + ".metrics.json"
    save_json(out, {"metrics": scores, "pred": os.path.abspath(args.pred), "shape": list(pred.shape),
                    "frsyn_all_samples": args.frsyn_all_samples, "seconds": elapsed})
    print(f"wrote {out}")
    return 0


def _device_args(p) -> None:
    p.add_argument("--device", default="auto",
                   help="auto (CUDA when available), cpu, cuda or cuda:N (default auto)")
    p.add_argument("--backend", help="kernel backends: one of cuda, triton, cpp, reference for every op that has "
                                     "it, or per op, e.g. biased_attention:reference,dtw:cpp (default automatic)")


def build_parser() -> argparse.ArgumentParser:
    from reactfast import models

    model_names = models.names()
    models_help = "; ".join(f"{n}: {models.get(n).summary}" for n in model_names)
    stages_help = "; ".join(f"{n} " + ", ".join(f"{s} trains {what}" for s, what in models.get(n).stage_names.items())
                            for n in model_names if len(models.get(n).stages) > 1)
    parser = argparse.ArgumentParser(prog="reactfast", description=__doc__.strip() if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("env", help="versions, compiled backends, devices, Triton interpreter mode")
    p.set_defaults(func=_cmd_env)

    p = sub.add_parser("demo", help="the whole job on built-in synthetic data: data, training, generation, "
                                    "evaluation against baselines, a plot")
    p.add_argument("--out", default="reactfast_out/demo", help="folder for the data, results and plots")
    p.add_argument("--sessions", type=int, default=48, help="synthetic training sessions (default 48)")
    p.add_argument("--steps", type=int, default=500, help="training steps (default 500)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--model", default=models.DEFAULT, choices=model_names, help=f"generator ({models_help})")
    _device_args(p)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("train", help="train a generator (runs under torchrun for DDP)")
    p.add_argument("--model", default=models.DEFAULT, choices=model_names, help=f"generator ({models_help})")
    p.add_argument("--stage", type=int, default=1, help=f"training stage: {stages_help}")
    p.add_argument("--init", help="stage 2: the stage-1 checkpoint to start from")
    p.add_argument("--data", default="synthetic", help="'synthetic' or the challenge's data folder")
    p.add_argument("--out", required=True, help="run folder (checkpoint, history)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=4, help="global batch (split over processes)")
    p.add_argument("--clip-frames", type=int, default=128, help="training segment length in frames")
    p.add_argument("--frames", type=int, default=750, help="frames per clip (first frames kept)")
    p.add_argument("--lr", type=float, help="learning rate (default: the model's)")
    p.add_argument("--config", nargs="*", metavar="KEY=VALUE", help="model config overrides, e.g. dim=64")
    p.add_argument("--sessions", type=int, default=48, help="synthetic sessions")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", help="checkpoint folder to resume from")
    p.add_argument("--ckpt-every", type=int, default=0)
    p.add_argument("--val-every", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    _device_args(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("generate", help="generate reactions for every dyad of a split")
    p.add_argument("--checkpoint", required=True, help="checkpoint folder")
    p.add_argument("--data", help="'synthetic' or the data folder (default: what the checkpoint was trained on)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--samples", type=int, default=10)
    p.add_argument("--frames", type=int, default=750)
    p.add_argument("--sessions", type=int, help="synthetic sessions of the split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="preds.npz", help=".npz with pred (N, S, T, 25), pred_3dmm and the targets")
    p.add_argument("--no-progress", action="store_true")
    _device_args(p)
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("plot", help="PNG of a speaker's emotion and generated reactions over time")
    p.add_argument("pred", help=".npz from reactfast generate")
    p.add_argument("--item", type=int, default=0, help="dyad index")
    p.add_argument("--channels", default="15,16", help="emotion channels, comma-separated (default valence,arousal)")
    p.add_argument("--out", help="PNG path")
    p.set_defaults(func=_cmd_plot)

    p = sub.add_parser("bench", help="run the microbenchmarks (pytest bench)")
    p.add_argument("-k", help="pytest -k selection")
    p.add_argument("--quick", action="store_true", help="small sizes, skip the long online runs")
    p.add_argument("--path", help="the bench folder (default ./bench)")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("evaluate", help="the REACT metric suite on generated reactions (N, S, T, 25)")
    p.add_argument("pred", help="generated listener emotion: .npy, .npz or .pt of shape (N, S, T, 25)")
    p.add_argument("--key", help="array name inside a .npz / key inside a .pt dict (default 'pred')")
    p.add_argument("--data", help="the challenge's data folder (split csv, neighbour matrix, Emotion/...)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="split (default test)")
    p.add_argument("--listener-gt", help="instead of --data: real listener emotion (N, T, 25)")
    p.add_argument("--speaker", help="instead of --data: speaker emotion (N, T, 25)")
    p.add_argument("--appropriate", help="instead of --data: neighbour matrix (N, N) of 0/1")
    p.add_argument("--out", help="JSON file for the results (default: next to pred)")
    p.add_argument("--frsyn-all-samples", action="store_true",
                   help="FRSyn over every sample (corrected variant; official: first sample only)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _device_args(p)
    p.set_defaults(func=_cmd_evaluate)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
