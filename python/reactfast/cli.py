"""The ``reactfast`` command line: demo, train, generate, evaluate, plot, data, bench, env.

Errors print one line, ``reactfast <command>: error: <what>`` with exit code 2 (``--debug`` shows
the traceback). Flags are never abbreviated. Every command checks what it will write before its
long work, and writes every file atomically.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import sys
import warnings


class CommandError(ValueError):
    """A command's arguments cannot work; main() prints the message on one line."""


def _device(args):
    """The device ``--device`` names, printed; a clear error for one not available here."""
    from reactfast import _backend

    try:
        device = _backend.resolve_device(args.device)
    except ValueError as exc:
        raise CommandError(f"--device: {exc}") from None
    print(f"[reactfast] device: {_backend.describe_device(device)}", flush=True)
    return device


def _backend_spec(args):
    from reactfast import _backend

    try:
        _backend.check_spec_ops(args.backend)
    except ValueError as exc:
        raise CommandError(f"--backend: {exc}") from None
    return args.backend


def _cmd_env(args) -> int:
    from reactfast.env_report import report

    print(report())
    return 0


def _check_counts(*flags) -> None:
    """(flag, value, least) triples: each value given (not None) must be >= least."""
    for flag, value, least in flags:
        if value is not None and value < least:
            raise CommandError(f"{flag} must be >= {least}, got {value}")


def _check_seed(value) -> None:
    """--seed, when given (checked before any work)."""
    from reactfast.ops._checks import check_seed

    if value is not None:
        check_seed("--seed", value)


def _cmd_demo(args) -> int:
    from reactfast import _io, models
    from reactfast.demo import run_demo

    if args.model not in models.names():
        raise CommandError(f"--model: unknown model {args.model!r}; known: {', '.join(models.names())}")
    _check_counts(("--steps", args.steps, 1), ("--sessions", args.sessions, 1))
    _check_seed(args.seed)
    _io.check_writable_dir(args.out, "--out")
    run_demo(out=args.out, sessions=args.sessions, steps=args.steps, seed=args.seed, model=args.model,
             device=_device(args), backend=_backend_spec(args))
    return 0


def load_data(spec: str, split: str, frames: int = 750, window=None, stride=None, sessions: int = 24, seed: int = 0,
              audio_dim: int = 32):
    """A dataset from ``spec``: "synthetic" (built-in synthetic dyads) or the challenge's data folder."""
    if spec == "synthetic":
        from reactfast.data import SyntheticDyads

        synthetic = SyntheticDyads(sessions=sessions, seed=seed, split=split, audio_dim=audio_dim)
        return synthetic.dataset(frames=min(frames, synthetic.config.frames), window=window, stride=stride)
    from reactfast.data import ReactDataset

    if not os.path.isdir(spec):
        raise CommandError(f"--data: {spec} is neither 'synthetic' nor a data folder")
    return ReactDataset(spec, split, frames=frames, window=window, stride=stride)


_TRAIN_DEFAULTS = dict(model=None, data="synthetic", steps=1000, batch_size=4, clip_frames=128, frames=750, lr=None,
                       sessions=48, seed=0, ckpt_every=0, val_every=0, stage=1, lr_schedule="constant", warmup=0)


# What a later stage started with --init takes from the run that wrote its checkpoint, unless given:
# the model and the data it trained on (a stage 2 on other data, or synthetic data of another seed,
# would train silently on the wrong clips). Steps, batch, learning rate and schedule are the stage's own.
_INIT_INHERITED = ("model", "data", "frames", "sessions", "seed", "clip_frames")


def _train_settings(args):
    """The run's settings: given flags, else (with --resume) the run's own, else (with --init) the
    model and data of the run that wrote the checkpoint, else the defaults; the flags that change a
    resumed run's settings, and what a later stage takes from --init, are printed."""
    from reactfast.train import read_config

    inherited, source = {}, None
    if args.resume:
        meta = read_config(args.resume)
        inherited, source = dict(meta.get("extra", {}).get("run", {})), "resume"
        inherited.setdefault("model", meta["model"])
    elif args.init:
        meta = read_config(args.init)
        run = meta.get("extra", {}).get("run", {})
        inherited = {k: run[k] for k in _INIT_INHERITED if k in run}
        inherited["model"] = meta["model"]
        source = "init"
    if source and args.model and args.model != meta["model"]:
        raise CommandError(f"--model {args.model}: the --{source} checkpoint {getattr(args, source)} holds a "
                           f"{meta['model']!r} model")
    settings = {}
    changed, taken = [], []
    for key, default in _TRAIN_DEFAULTS.items():
        given = getattr(args, key)
        if given is not None:
            settings[key] = given
            if key in inherited and inherited[key] != given:
                changed.append(f"{key} {inherited[key]!r} -> {given!r}")
        else:
            settings[key] = inherited.get(key, default)
            # (synthetic sessions mean nothing for a data folder: not named as taken for one)
            if key in inherited and not (key == "sessions" and settings["data"] != "synthetic"):
                taken.append(f"{key} {inherited[key]!r}")
    if changed and source == "resume":
        print(f"[reactfast] resuming {args.resume} with changed settings: {', '.join(changed)}", flush=True)
    if source == "init":
        print(f"[reactfast] from --init {args.init}: {', '.join(taken) or 'nothing'}"
              f"{'; given instead of its run: ' + ', '.join(changed) if changed else ''}", flush=True)
    if not settings["model"]:
        from reactfast import models

        settings["model"] = models.DEFAULT
    return settings


def _cmd_train(args) -> int:
    from reactfast import _io, models

    s = _train_settings(args)
    if s["lr"] is not None and not (math.isfinite(s["lr"]) and s["lr"] > 0):
        raise CommandError(f"--lr must be a finite number > 0, got {s['lr']}")
    _check_counts(*((f"--{key.replace('_', '-')}", s[key], least) for key, least in (
        ("steps", 1), ("batch_size", 1), ("clip_frames", 1), ("frames", 1), ("sessions", 1), ("warmup", 0),
        ("ckpt_every", 0), ("val_every", 0))))
    _check_seed(s["seed"])
    if s["model"] not in models.names():
        raise CommandError(f"--model: unknown model {s['model']!r}; known: {', '.join(models.names())}")
    cls = models.get(s["model"])
    if s["stage"] not in cls.stages:
        raise CommandError(f"--stage: {s['model']} trains in stages {cls.stages}, got {s['stage']}")
    if args.init and s["stage"] == cls.stages[0]:
        raise CommandError("--init starts a later stage from the previous stage's checkpoint (give --stage)")
    _check_run_folder(args)
    made = not os.path.isdir(args.out)
    _io.check_writable_dir(args.out, "--out")
    try:
        return _train(args, s, cls)
    except BaseException:
        if made:   # a run that failed before writing anything leaves no empty run folder behind
            with contextlib.suppress(OSError):
                os.rmdir(args.out)
        raise


def _train(args, s, cls) -> int:
    import torch

    from reactfast import configs
    from reactfast.train import TrainConfig, Trainer, load_into, read_config, seed_everything
    from reactfast.train.checkpoint import load_trainer_state

    overrides = configs.parse(args.config)
    for key in overrides["train"]:
        # A flag given on this command line and a --config train.* key for the same setting: which
        # should win is not clear (the --config one did, silently).
        if key in _TRAIN_DEFAULTS and getattr(args, key, None) is not None:
            raise CommandError(f"--{key.replace('_', '-')} {getattr(args, key)} and --config train.{key}="
                               f"{overrides['train'][key]} both set {key}: give one")
    data_spec = s["data"] = s["data"] if s["data"] == "synthetic" else os.path.abspath(s["data"])
    device = _device(args)
    seed_everything(s["seed"])
    clips = load_data(data_spec, "train", s["frames"], sessions=s["sessions"], seed=s["seed"])
    if args.resume or args.init:
        # The checkpoint's architecture, --config on top (loading its weights names any field that
        # then no longer matches them).
        saved = read_config(args.resume or args.init)
        model_fields = {**saved["config"], **configs.checked(cls.config_class, overrides["model"], "--config")}
    else:
        model_fields = {**cls.data_defaults(clips[0]["speaker_audio"].shape[-1]), **overrides["model"]}
    config = configs.build(cls.config_class, model_fields, "--config")
    if args.resume or args.init:
        _check_audio_features(saved.get("extra", {}).get("audio"), clips, config.audio_dim, f"--data {s['data']}")
    # The model's shapes alone (the meta device: no memory, no initialisation, no draw from the RNG)
    # for the checks that need the model: its weights come after them (the authors' PerFRDiff takes
    # 17 s on 2 cores to initialise its 1.7 billion parameters).
    with torch.device("meta"):
        shapes = cls(config, backend=_backend_spec(args)).set_stage(s["stage"])
    window, stride = shapes.training_windows(s["clip_frames"])
    if window > clips.frames:
        raise CommandError(f"--clip-frames: {s['model']} trains on items of {window} frames, longer than the "
                           f"{clips.frames} frames per clip (--frames)")
    data = load_data(data_spec, "train", s["frames"], window=window, stride=stride, sessions=s["sessions"],
                     seed=s["seed"])
    val = None
    if s["val_every"]:
        val = load_data(data_spec, "val", s["frames"], sessions=max(2, s["sessions"] // 4), seed=s["seed"])
    optimizer, stage_lr = shapes.stage_optimizer(s["stage"])
    train_fields = dict(steps=s["steps"], batch_size=s["batch_size"],
                        lr=s["lr"] if s["lr"] is not None else stage_lr, ckpt_every=s["ckpt_every"],
                        val_every=s["val_every"], out_dir=args.out, seed=s["seed"], progress=not args.no_progress,
                        optimizer=optimizer, lr_schedule=s["lr_schedule"], warmup=s["warmup"],
                        deterministic=args.deterministic, compile=args.compile,
                        tensorboard=args.tensorboard)
    restored = {}
    if args.resume:
        # The run's own trainer settings (its --config train.* overrides among them) under the flags.
        fields = {f.name for f in dataclasses.fields(TrainConfig)}
        restored = {k: v for k, v in load_trainer_state(args.resume)[1].get("train_config", {}).items() if k in fields}
    cfg = configs.build(TrainConfig, {**restored, **train_fields, **overrides["train"]}, "--config")
    _warn_if_memory_short(shapes, cfg.optimizer, device)
    model = cls(config, backend=_backend_spec(args))
    if args.init:
        load_into(model, args.init)
    model.set_stage(s["stage"])
    extra = {"data": {"spec": data_spec, "sessions": s["sessions"], "seed": s["seed"], "frames": s["frames"]},
             "run": {k: s[k] for k in _TRAIN_DEFAULTS}}
    trainer = Trainer(model, data, cfg, val_dataset=val, resume=args.resume, extra_meta=extra, device=device)
    if (args.resume and cfg.lr_schedule == "cosine" and restored.get("steps", cfg.steps) != cfg.steps
            and trainer.step < cfg.steps and trainer.rank == 0):
        # The cosine curve is a function of the step and --steps: stretched or shrunk, it moves the
        # rate the run goes on with (a finished run at ~0 goes on from half the base rate, say).
        before = trainer.base_lr * dataclasses.replace(cfg, steps=restored["steps"]).lr_factor(trainer.step)
        print(f"[reactfast] the cosine schedule now decays over {cfg.steps} steps, not {restored['steps']}: step "
              f"{trainer.step + 1} takes learning rate {trainer.base_lr * cfg.lr_factor(trainer.step):.3g} "
              f"({before:.3g} on the run's curve)", flush=True)
    if trainer.step >= cfg.steps and trainer.rank == 0:
        print(f"[reactfast] {args.resume} is at step {trainer.step}, not below --steps {cfg.steps}: nothing to "
              f"train (give a larger --steps to go on)", flush=True)
    history = trainer.fit()
    if trainer.rank == 0:
        last = history[-1] if history else {}
        print(f"trained {s['model']} for {trainer.step} steps; last loss {last.get('loss', float('nan')):.4f}; "
              f"checkpoint in {os.path.join(args.out, 'checkpoint')}")
        best = [r for r in history if r.get(trainer.best_key) == trainer.best]
        if trainer.best is not None and best:
            print(f"best: {trainer.best_key} {trainer.best:.4f} at step {best[-1]['step']}, in "
                  f"{os.path.join(args.out, 'best')}")
    return 0


def _available_memory(device):
    """Bytes free for a training process on ``device`` (None where it is not known)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: line.split()[1] for line in f}
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))   # torchrun's processes on this machine share it
        return int(info["MemAvailable"]) * 1024 // max(1, local)
    except (OSError, KeyError, ValueError, IndexError):
        return None


def _warn_if_memory_short(model, optimizer: str, device) -> None:
    """Warn, before the weights are made, when the weights, the gradients of the trainable ones and
    AdamW's two moments alone (activations come on top) exceed the memory free on ``device``: the
    run would be killed without a word (the authors' PerFRDiff needs about 26 GB)."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    need = weights + trainable * (3 if optimizer == "adamw" else 1)
    free = _available_memory(device)
    if free is not None and need > free:
        params = sum(p.numel() for p in model.parameters())
        warnings.warn(f"{model.name} as configured has {params / 1e6:.0f} M parameters: its weights, gradients and "
                      f"optimizer state alone take {need / 2 ** 30:.1f} GiB, more than the {free / 2 ** 30:.1f} GiB "
                      f"free on {device} (a smaller model: --config dim=... etc.; reactfast demo's sizes are "
                      f"{type(model).__name__}.demo_config)", stacklevel=2)


def _check_run_folder(args) -> None:
    """--out must be empty or new, unless --resume (the same run continues) or --overwrite."""
    out = os.path.abspath(args.out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise CommandError(f"--out: {out} exists and is not a folder")
    content = sorted(os.listdir(out)) if os.path.isdir(out) else []
    if content and not (args.resume or args.overwrite):
        raise CommandError(f"--out: the run folder {out} is not empty ({', '.join(content[:4])}"
                           f"{', ...' if len(content) > 4 else ''}); continue it with --resume "
                           f"{os.path.join(args.out, 'checkpoint')}, or replace it with --overwrite")


def _cmd_generate(args) -> int:
    import numpy as np

    from reactfast import _io
    from reactfast.train import generate_dataset, load_model, read_config
    from reactfast.train.generation import listener_histories, personalises

    _check_counts(("--samples", args.samples, 1), ("--sessions", args.sessions, 1), ("--frames", args.frames, 1))
    _check_seed(args.seed)
    out = _io.check_writable_file(args.out, "--out", ".npz")   # evaluate and plot read it by its suffix
    meta = read_config(args.checkpoint)
    data_meta = meta.get("extra", {}).get("data", {})
    spec = args.data or data_meta.get("spec")
    if spec is None:
        raise CommandError("give --data (the checkpoint does not say which data it was trained on)")
    device = _device(args)
    model = load_model(meta["path"], device=device).set_backend(_backend_spec(args))
    if args.window is not None:
        raise_if_bad_window(model, args.window)
    from reactfast.data.files import TooFewFrames

    sessions = args.sessions if args.sessions is not None else max(2, data_meta.get("sessions", 24) // 2)
    frames, frames_from = args.frames, f"given {args.frames}"
    if frames is None:
        # The data the model was trained on: its clips' length too (a folder of shorter clips than
        # the challenge's 750 frames, say), unless other data is given.
        trained_on = data_meta.get("spec")
        inherited = args.data is None or args.data == trained_on or (
            args.data != "synthetic" and trained_on not in (None, "synthetic")
            and os.path.realpath(args.data) == os.path.realpath(trained_on))
        frames = data_meta.get("frames", 750) if inherited else 750
        frames_from = f"default {frames}" + (", the training run's" if inherited and "frames" in data_meta else "")
        if frames != 750:
            print(f"[reactfast] generating the first {frames} frames of each clip, as the model was trained "
                  "(--frames to change)")
    if "emotion" not in model.output_widths():   # known before any dyad is generated
        raise CommandError("this model outputs no emotion; the metrics need the 25 emotion dims")
    try:
        ds = load_data(spec, args.split, frames, sessions=sessions,
                       seed=data_meta.get("seed", 0) if spec == "synthetic" else 0, audio_dim=model.config.audio_dim)
        if spec != "synthetic":   # (synthetic data is made with the model's audio width)
            _check_audio_features(meta.get("extra", {}).get("audio"), ds, model.config.audio_dim, f"--data {spec}")
        # The targets first: a clip that cannot be read stops the command before any generation.
        arrays = {"listener_gt": ds.stack("listener", "emotion").numpy(),
                  "speaker": ds.stack("speaker", "emotion").numpy()}
    except TooFewFrames as exc:
        raise _too_few_frames(exc, frames_from) from None
    try:
        arrays["appropriate"] = ds.appropriate
    except Exception:  # a split without a neighbour matrix still gets its predictions
        print(f"[reactfast] no neighbour matrix for split {args.split}: {out} holds no 'appropriate'")
    # What identifies this generation: a run stopped by an error keeps its finished dyads in a
    # partial file, which --resume continues only with the same settings.
    setting = {"checkpoint": _weights_identity(meta["path"]), "data": spec if spec == "synthetic" else
               os.path.realpath(spec), "split": args.split, "frames": frames, "sessions": sessions,
               "samples": args.samples, "seed": args.seed, "window": args.window, "dyads": ds.num_items,
               "personalise": not args.no_personalise}
    if personalises(model) and not args.no_personalise:
        personal = len(listener_histories(ds, range(ds.num_items)))
        rest = "; the others have no other clip of their listener: generic reactions" if personal < ds.num_items else ""
        print(f"[reactfast] personalising {personal} of {ds.num_items} dyads by another clip of their listener (its "
              f"history){rest} (--no-personalise: none)")
    partial_out = out[:-len(".npz")] + ".partial.npz"
    done = _read_partial(args.resume, setting) if args.resume else None
    rows = None if done is None else done.remaining
    try:
        preds = generate_dataset(model, ds, args.samples, seed=args.seed, progress=not args.no_progress,
                                 device=device, window=args.window, rows=rows, personalise=not args.no_personalise)
    except BaseException as exc:
        kept = getattr(exc, "partial", None)
        if (kept is not None or done is not None) and _write_partial(partial_out, setting, done, kept):
            saved = len(done.rows if done is not None else []) + len(kept.rows if kept is not None else [])
            print(f"[reactfast] the {saved} dyads finished before the error were saved to {partial_out}; the same "
                  f"command with --resume {partial_out} generates the other {setting['dyads'] - saved}",
                  file=sys.stderr)
        if isinstance(exc, TooFewFrames):   # the clips' other modalities are read as generation goes
            raise _too_few_frames(exc, frames_from) from None
        raise
    if done is not None:   # the dyads in their order (a partial file need not hold a prefix of them)
        order = np.argsort(np.asarray(done.rows + done.remaining))
        preds = {key: value[order] for key, value in done.join(preds).items()}
    _refuse_non_finite(preds, out, partial_out, setting)
    arrays = {"pred": preds["emotion"], **({"pred_3dmm": preds["3dmm"]} if "3dmm" in preds else {}), **arrays}
    _io.save_npz(out, **arrays)
    if done is not None and os.path.abspath(args.resume) == partial_out:
        os.remove(partial_out)   # all of it is in the output now
    print(f"wrote {out}: pred {arrays['pred'].shape} (emotion)")
    return 0


def _refuse_non_finite(preds: dict, out: str, partial_out: str, setting: dict) -> None:
    """Outputs (every dyad, in order) with a NaN or Inf are not written to ``out``: the dyads whose
    outputs are finite go to the partial file (which ``--resume`` continues, with another
    ``--backend``, say), the others are named."""
    import numpy as np

    from reactfast.train import PartialGeneration

    finite = np.logical_and.reduce([np.isfinite(v.reshape(len(v), -1)).all(1) for v in preds.values()])
    if finite.all():
        return
    bad = np.nonzero(~finite)[0].tolist()
    kept = ""
    good = np.nonzero(finite)[0].tolist()
    if good and _write_partial(partial_out, setting, None, PartialGeneration(good, bad, {
            k: v[finite] for k, v in preds.items()})):
        kept = (f"; the {len(good)} other dyads are kept in {partial_out} (--resume {partial_out} generates the "
                f"{len(bad)} again: with --backend reference, say, if a kernel is suspect)")
    raise CommandError(f"the model produced non-finite outputs for {len(bad)} of {len(finite)} dyads (dyads "
                       f"{bad[:10]}{' ...' if len(bad) > 10 else ''}): nothing was written to {out}{kept}")


def _too_few_frames(exc, frames_from: str) -> CommandError:
    return CommandError(f"{exc} (--frames: how many frames of each clip to generate; {frames_from})")


def _weights_identity(checkpoint: str) -> str:
    """The weights file of a (resolved) checkpoint folder, its size and modification time."""
    from reactfast.train.checkpoint import WEIGHTS

    weights = os.path.realpath(os.path.join(checkpoint, WEIGHTS))
    st = os.stat(weights)
    return f"{weights} ({st.st_size} bytes, modified {st.st_mtime_ns})"


def _write_partial(path: str, setting: dict, done, kept) -> bool:
    """The dyads finished before an error (``done`` from --resume, then ``kept``) to ``path``;
    False (said on stderr) where they could not be saved."""
    import json

    import numpy as np

    from reactfast import _io
    from reactfast.train import PartialGeneration

    if done is not None and kept is not None:
        now = set(kept.rows)
        kept = PartialGeneration(done.rows + kept.rows, [r for r in done.remaining if r not in now],
                                 {k: np.concatenate([done.outputs[k], v]) for k, v in kept.outputs.items()})
    kept = kept if kept is not None else done
    try:
        _io.save_npz(path, rows=np.asarray(kept.rows, dtype=np.int64),
                     setting=np.frombuffer(json.dumps(setting, sort_keys=True).encode(), dtype=np.uint8),
                     **{f"partial_{k}": v for k, v in kept.outputs.items()})
    except Exception as exc:   # the error that stopped generation is the one to report
        print(f"[reactfast] the {len(kept.rows)} finished dyads could not be saved to {path}: {exc}", file=sys.stderr)
        return False
    return True


def _read_partial(path: str, setting: dict):
    """A partial file of ``_write_partial`` as a PartialGeneration, refused unless written with ``setting``."""
    import json

    from reactfast.metrics.io import load_npz_arrays
    from reactfast.ops._checks import check_indices
    from reactfast.train import PartialGeneration

    try:
        z = load_npz_arrays(path, ("rows", "setting", "partial_emotion"), ("partial_3dmm",),
                            hint="not a partial file of reactfast generate")
        saved = json.loads(bytes(z["setting"].astype("uint8")).decode())
        rows = check_indices("rows", z["rows"], setting["dyads"]).tolist()
    except (OSError, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise CommandError(f"--resume: {exc}") from None
    changed = [f"{k} {saved.get(k)!r} -> {v!r}" for k, v in setting.items() if saved.get(k) != v]
    if changed:
        raise CommandError(f"--resume: {path} was generated with other settings ({'; '.join(changed)}); give the "
                           "same checkpoint, data and flags, or generate anew without --resume")
    outputs = {k[len("partial_"):]: v for k, v in z.items() if k.startswith("partial_")}
    if len(set(rows)) != len(rows) or any(len(v) != len(rows) for v in outputs.values()):
        raise CommandError(f"--resume: {path} is inconsistent ({len(rows)} rows, outputs of "
                           f"{[len(v) for v in outputs.values()]} dyads)")
    taken = set(rows)
    return PartialGeneration(rows, [r for r in range(setting["dyads"]) if r not in taken], outputs)


def _check_audio_features(recorded, data, audio_dim: int, where: str) -> None:
    """``data``'s audio against a model's: features of another width than the model's ``audio_dim``
    stop the command before any work; features of another kind than the ``recorded`` ones it was
    trained on (MFCC from .wav against .npy features of the same width, say) are fed to it all the
    same, with a warning (a .npy of the very features it was trained on is as good)."""
    if "audio" not in data.modalities or not data.dyads:
        return
    now = data.audio_features
    width = data.load_clip(data.dyads[0][0])["audio"].shape[1]
    trained = f" (it was trained on {recorded})" if recorded else ""
    if width != audio_dim:
        raise CommandError(f"{where}: the model takes {audio_dim}-d audio features{trained}, but the data gives "
                           f"{width}-d ones ({now})")
    if recorded and now != recorded and not (recorded.startswith("in-memory") or now.startswith("in-memory")):
        warnings.warn(f"{where}: the model was trained on {recorded}, but the data gives {now}: unless they are the "
                      "same features, its reactions to audio it never saw mean little", stacklevel=2)


def raise_if_bad_window(model, window: int) -> None:
    if window < 1:
        raise CommandError(f"--window-size must be >= 1, got {window}")
    try:
        model.init_state(1, window, "cpu")
    except ValueError as exc:
        raise CommandError(f"--window-size: {exc}") from None


def _channels(spec: str):
    from reactfast.data import layout

    names = {n.lower(): i for i, n in enumerate(layout.EMOTION_COLUMNS)}
    out = []
    for part in spec.split(","):
        part = part.strip()
        if part.isdigit() and int(part) < len(layout.EMOTION_COLUMNS):
            out.append(int(part))
        elif part.lower() in names:
            out.append(names[part.lower()])
        else:
            raise CommandError(f"--channels: {part!r} is neither a channel index (0-24) nor a name "
                               f"({', '.join(layout.EMOTION_COLUMNS)})")
        if out[-1] in out[:-1]:   # a second panel of the same channel
            raise CommandError(f"--channels: {part!r} names channel {out[-1]} "
                               f"({layout.EMOTION_COLUMNS[out[-1]]}) a second time")
    return out


def _cmd_plot(args) -> int:
    from reactfast import _io
    from reactfast.metrics.io import load_npz_arrays
    from reactfast.plot import plot_reactions

    z = load_npz_arrays(args.pred, ("pred", "speaker"), optional=("listener_gt",))
    pred, speaker, listener = z["pred"], z["speaker"], z.get("listener_gt")
    if pred.ndim != 4 or speaker.ndim != 3 or speaker.shape != (pred.shape[0], pred.shape[2], pred.shape[3]):
        raise CommandError(f"{args.pred}: pred must be (N, S, T, D) and speaker (N, T, D); got {pred.shape} and "
                           f"{speaker.shape}")
    if listener is not None and listener.shape != speaker.shape:
        raise CommandError(f"{args.pred}: listener_gt {listener.shape} does not match speaker {speaker.shape}")
    if not 0 <= args.item < pred.shape[0]:
        raise CommandError(f"--item must be in [0, {pred.shape[0]}), got {args.item}")
    channels = _channels(args.channels)
    out = args.out or os.path.splitext(args.pred)[0] + f".item{args.item}.png"
    _io.check_writable_file(out, "--out", ".png")
    plot_reactions(out, speaker[args.item], pred[args.item], channels,
                   listener[args.item] if listener is not None else None, title=f"dyad {args.item}")
    print(f"wrote {out}")
    return 0


def bench_folder():
    """The benchmarks: ./bench, else the wheel's copy, else (an editable install) the checkout's
    bench/ beside python/reactfast; None if none of them has the benchmarks' conftest.py."""
    import reactfast

    package = os.path.dirname(reactfast.__file__)
    found = ("bench", os.path.join(package, "bench"), os.path.join(os.path.dirname(os.path.dirname(package)), "bench"))
    return next((p for p in found if os.path.isfile(os.path.join(p, "conftest.py"))), None)


def _cmd_bench(args) -> int:
    import subprocess

    root = args.path or bench_folder()
    if root is None:
        raise CommandError("no bench/ folder found; give --path")
    if args.path is not None and not os.path.isdir(args.path):   # pytest ran no tests and exited 5, quietly
        raise CommandError(f"--path: no such folder: {args.path}")
    # Without pytest-xdist (pytest-benchmark turns itself off where xdist is active, also when this
    # command runs inside a test process of an xdist run: its PYTEST_XDIST_* variables are dropped).
    cmd = [sys.executable, "-m", "pytest", root, "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
           "-o", "python_files=bench_*.py", "-o", "markers=gpu: needs a CUDA device"]
    if args.k:
        cmd += ["-k", args.k]
    if args.quick:
        os.environ.setdefault("REACTFAST_BENCH_N", "100")
        cmd += ["-k", "not test_against_reencoding_prefix and not test_step_latency_flat"] if not args.k else []
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_XDIST")}
    return subprocess.call(cmd, env=env)


def _cmd_evaluate(args) -> int:
    import time

    import numpy as np
    import torch

    from reactfast import _io, metrics
    from reactfast.metrics.io import format_table, load_array, load_npz_arrays, save_json

    out = _io.check_writable_file(args.out or os.path.splitext(args.pred)[0] + ".metrics.json", "--out")
    pred = load_array(args.pred, args.key, name="pred")
    if pred.ndim != 4:
        raise CommandError(f"pred must have shape (N, S, T, 25), got {pred.shape} from {args.pred}")
    if args.data:
        listener_gt, speaker, appropriate = _targets_from_data(args, pred)
        if args.pred.endswith(".npz"):
            # A file from reactfast generate holds the speakers it was generated for: scored against
            # another split (or data folder) of as many dyads, its numbers would mean nothing.
            held = load_npz_arrays(args.pred, (), ("speaker",)).get("speaker")
            if held is not None and (held.shape != speaker.shape or not np.allclose(held, speaker, atol=1e-6)):
                raise CommandError(f"{args.pred} was generated for other speakers than those of --data {args.data} "
                                   f"--split {args.split}: give the data and split it was generated from (or "
                                   "leave --data out: the file holds its targets)")
    elif args.listener_gt and args.speaker and args.appropriate:
        listener_gt = load_array(args.listener_gt, name="listener_gt")
        speaker = load_array(args.speaker, name="speaker")
        appropriate = load_array(args.appropriate, name="appropriate")
    elif args.pred.endswith(".npz"):
        z = load_npz_arrays(args.pred, ("listener_gt", "speaker", "appropriate"), hint=(
            "give --data ROOT (with --split), or all of --listener-gt, --speaker and --appropriate"))
        listener_gt, speaker, appropriate = z["listener_gt"], z["speaker"], z["appropriate"]
    else:
        raise CommandError("give --data ROOT (with --split), or all of --listener-gt, --speaker and --appropriate "
                           "(or a .npz from reactfast generate, which holds them)")
    device = _device(args)
    arrays = []
    for name, a in (("pred", pred), ("listener_gt", listener_gt), ("speaker", speaker)):
        if a.dtype.kind != "f":
            raise CommandError(f"{name} must hold floats, got dtype {a.dtype}")
        arrays.append(torch.from_numpy(a).to(device))
    start = time.perf_counter()
    scores = metrics.evaluate(*arrays, appropriate, progress=not args.no_progress,
                              frsyn_all_samples=args.frsyn_all_samples, backend=_backend_spec(args))
    elapsed = time.perf_counter() - start
    print(format_table({"prediction": scores}))
    print(f"(N = {pred.shape[0]}, S = {pred.shape[1]}, T = {pred.shape[2]}; {elapsed:.1f} s)")
    save_json(out, {"metrics": scores, "pred": os.path.abspath(args.pred), "shape": list(pred.shape),
                    "frsyn_all_samples": args.frsyn_all_samples, "seconds": elapsed})
    print(f"wrote {out}")
    return 0


def _targets_from_data(args, pred):
    """listener_gt, speaker, appropriate of a data folder's split, for predictions of pred's length."""
    from reactfast.data import ReactDataset, files, layout

    probe = ReactDataset(args.data, args.split, frames=1, modalities=("emotion",))
    speaker_clip = probe.dyads[0][0]
    path = os.path.join(args.data, args.split, layout.MODALITY_DIRS["emotion"], speaker_clip + ".csv")
    available = len(files.read_emotion(path))
    if pred.shape[2] > available:
        raise CommandError(f"pred has {pred.shape[2]} frames but the clips of {args.data} ({args.split}) have "
                           f"{available}; generate at most {available} frames (evaluation uses the first 750)")
    if pred.shape[0] != probe.num_items:
        raise CommandError(f"pred has {pred.shape[0]} items but split {args.split} of {args.data} has "
                           f"{probe.num_items} (mirrored) dyads")
    ds = ReactDataset(args.data, args.split, frames=pred.shape[2], modalities=("emotion",))
    return ds.stack("listener", "emotion").numpy(), ds.stack("speaker", "emotion").numpy(), ds.appropriate


def _cmd_data(args) -> int:
    return args.data_func(args)


def _splits(value: str):
    """The splits of a comma-separated --splits value, each one of the layout's."""
    from reactfast.data import layout

    splits = [s.strip() for s in value.split(",") if s.strip()]
    unknown = [s for s in splits if s not in layout.SPLITS]
    if unknown or not splits:
        raise CommandError(f"--splits: each must be one of {', '.join(layout.SPLITS)}, got "
                           f"{', '.join(map(repr, unknown)) if unknown else repr(value)}")
    return splits


def _cmd_data_synth(args) -> int:
    from reactfast import _io
    from reactfast.data import SyntheticDyads, layout

    splits = _splits(args.splits)
    _check_counts(("--sessions", args.sessions, 1), ("--frames", args.frames, 2), ("--audio-dim", args.audio_dim, 1),
                  ("--prototypes", args.prototypes, 1))
    _check_seed(args.seed)
    # The split lists and neighbour matrices of a data folder already there (the challenge's own,
    # say) would be replaced: only with --overwrite.
    held = sorted(name for split in layout.SPLITS for name in (f"{split}.csv", layout.neighbour_file(split))
                  if os.path.exists(os.path.join(args.out, name)))
    if held and not args.overwrite:
        raise CommandError(f"--out: {os.path.abspath(args.out)} already holds a dataset ({', '.join(held)}); synth "
                           "would replace its split lists: give another folder, or --overwrite")
    # Every split's settings checked before the folder is made: a bad flag leaves nothing behind.
    dyads = {split: SyntheticDyads(sessions=args.sessions if split == "train" else max(2, args.sessions // 4),
                                   seed=args.seed, split=split, frames=args.frames, audio_dim=args.audio_dim,
                                   prototypes=args.prototypes) for split in splits}
    root = _io.check_writable_dir(args.out, "--out")
    for split, synth in dyads.items():
        synth.write(root, split)
        n = synth.config.sessions
        print(f"wrote {split}: {n} sessions ({2 * n} dyads mirrored), {args.frames} frames each")
    print(f"synthetic REACT 2024 layout in {root} (reactfast data check {root})")
    return 0


def _cmd_data_check(args) -> int:
    from reactfast.data.check import check_folder, format_reports

    reports = check_folder(args.root, _splits(args.splits))
    print(format_reports(reports))
    return 1 if any(r.problems for r in reports) else 0


def _cmd_data_crop(args) -> int:
    from reactfast.data.pfl import crop_frames, read_boxes

    size = None
    if args.size is not None:
        if args.size < 1:
            raise CommandError(f"--size must be >= 1, got {args.size}")
        size = (args.size, args.size)
    window = crop_frames(args.video, read_boxes(args.boxes), args.out, (args.omega, args.omega), size,
                         overwrite=args.overwrite)
    print(f"cropped {args.video} -> {args.out} with the window left {window[0]}, top {window[1]}, "
          f"{window[2]} x {window[3]}")
    return 0


def _device_args(p) -> None:
    p.add_argument("--device", default="auto",
                   help="auto (CUDA when available), cpu, cuda or cuda:N (default auto); --gpu-ids N is cuda:N")
    p.add_argument("--gpu-ids", dest="device", type=lambda v: f"cuda:{int(v.split(',')[0])}",
                   help=argparse.SUPPRESS)
    p.add_argument("--backend", help="kernel backends: one of cuda, triton, cpp, reference for every op that has "
                                     "it, or per op, e.g. biased_attention:reference,dtw:cpp (default automatic)")


def build_parser() -> argparse.ArgumentParser:
    from reactfast import models

    model_names = models.names()
    models_help = "; ".join(f"{n}: {models.get(n).summary}" for n in model_names)
    stages_help = "; ".join(f"{n} " + ", ".join(f"{s} trains {what}" for s, what in models.get(n).stage_names.items())
                            for n in model_names if len(models.get(n).stages) > 1)
    # --debug before or after the command: the commands' copy sets it only when given (a default
    # there would overwrite the one given before the command).
    common = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of an error")
    parser = argparse.ArgumentParser(prog="reactfast", description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name, help, func):
        p = sub.add_parser(name, help=help, description=help, allow_abbrev=False, parents=[common])
        p.set_defaults(func=func)
        return p

    command("env", "versions, compiled backends, devices, Triton interpreter mode", _cmd_env)

    p = command("demo", "the whole job on built-in synthetic data: data, training, generation, evaluation "
                        "against baselines, a plot", _cmd_demo)
    p.add_argument("--out", default="reactfast_out/demo", help="folder for the data, results and plots")
    p.add_argument("--sessions", type=int, default=48, help="synthetic training sessions (default 48)")
    p.add_argument("--steps", type=int, default=500, help="training steps (default 500; a model's demo schedule may "
                   "scale them per stage)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--model", default=models.DEFAULT, choices=model_names, help=f"generator ({models_help})")
    _device_args(p)

    p = command("train", "train a generator (under torchrun: DDP)", _cmd_train)
    p.add_argument("--model", choices=model_names, help=f"generator (default {models.DEFAULT}; {models_help})")
    p.add_argument("--stage", type=int, help=f"training stage (default 1): {stages_help}")
    p.add_argument("--init", help="a later stage: the previous stage's checkpoint to start from (its model, "
                   "architecture, data, frames, sessions, seed and clip frames unless given)")
    p.add_argument("--data", "--dataset-path", dest="data",
                   help="'synthetic' (default; with --resume or --init, that run's) or the challenge's data folder")
    p.add_argument("--out", "--outdir", dest="out", required=True, help="run folder (checkpoint, best, history.jsonl)")
    p.add_argument("--steps", type=int, help="optimizer steps (default 1000)")
    p.add_argument("--batch-size", "-b", dest="batch_size", type=int, help="global batch (default 4; split over "
                                                                           "processes)")
    p.add_argument("--clip-frames", type=int, help="training segment length in frames (default 128)")
    p.add_argument("--frames", type=int, help="frames per clip, the first kept (default 750)")
    p.add_argument("--lr", "-lr", dest="lr", type=float, help="learning rate (default: the model's)")
    p.add_argument("--lr-schedule", dest="lr_schedule", choices=("constant", "cosine"),
                   help="constant (default) or cosine decay to 0 over --steps")
    p.add_argument("--warmup", type=int, help="linear learning-rate warm-up steps (default 0)")
    p.add_argument("--config", nargs="+", metavar="FILE|KEY=VALUE",
                   help="config files (.yaml/.json) and overrides: dim=64, model.heads=4, train.grad_clip=0.5, "
                        "mults=1,2,4, clip=none")
    p.add_argument("--sessions", type=int, help="synthetic sessions (default 48)")
    p.add_argument("--seed", type=int, help="seeds model initialisation, data order and noise (default 0)")
    p.add_argument("--resume", help="checkpoint to continue from; its run's settings are restored (flags given "
                                    "override them)")
    p.add_argument("--overwrite", action="store_true", help="reuse a non-empty --out folder")
    p.add_argument("--ckpt-every", type=int, help="save a checkpoint every N steps (default: at the end)")
    p.add_argument("--val-every", type=int, help="validate every N steps on the val split; keeps 'best'")
    p.add_argument("--deterministic", action="store_true", help="deterministic kernels (bit-exact resume on CUDA)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model's training forward (the first step "
                   "compiles: minutes on a few CPU cores with an empty inductor cache; README: Training)")
    p.add_argument("--tensorboard", action="store_true", help="log to OUT/tensorboard (needs tensorboard)")
    p.add_argument("--no-progress", action="store_true")
    _device_args(p)

    p = command("generate", "generate reactions for every dyad of a split", _cmd_generate)
    p.add_argument("--checkpoint", required=True, help="checkpoint folder")
    p.add_argument("--data", "--dataset-path", dest="data",
                   help="'synthetic' or the data folder (default: what the checkpoint was trained on)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--samples", type=int, default=10)
    p.add_argument("--frames", type=int,
                   help="frames of each clip, the first (default: the training run's, 750 for other data)")
    p.add_argument("--window-size", dest="window", type=int, help="frames per online step (default: the model's)")
    p.add_argument("--sessions", type=int, help="synthetic sessions of the split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", "--outdir", dest="out", default="preds.npz",
                   help=".npz with pred (N, S, T, 25), pred_3dmm and the targets")
    p.add_argument("--resume", metavar="PARTIAL",
                   help="go on from OUT.partial.npz, the dyads a run stopped by an error had finished")
    p.add_argument("--no-personalise", action="store_true",
                   help="a personalised generator (perfrdiff) without listener histories (default: each dyad's "
                        "from another clip of its listener)")
    p.add_argument("--no-progress", action="store_true")
    _device_args(p)

    p = command("plot", "PNG of a speaker's emotion and generated reactions over time", _cmd_plot)
    p.add_argument("pred", help=".npz from reactfast generate")
    p.add_argument("--item", type=int, default=0, help="dyad index")
    p.add_argument("--channels", default="valence,arousal",
                   help="emotion channels by index or name, comma-separated (default valence,arousal)")
    p.add_argument("--out", help="PNG path")

    p = command("bench", "run the microbenchmarks (pytest bench; shipped with the package)", _cmd_bench)
    p.add_argument("-k", help="pytest -k selection")
    p.add_argument("--quick", action="store_true", help="small sizes, skip the long online runs")
    p.add_argument("--path", help="the bench folder (default: ./bench, else the installed copy)")

    p = command("evaluate", "the REACT metric suite on generated reactions (N, S, T, 25)", _cmd_evaluate)
    p.add_argument("pred", help="generated listener emotion: .npy, .npz or .pt of shape (N, S, T, 25)")
    p.add_argument("--key", help="array name inside a .npz / key inside a .pt dict (default 'pred')")
    p.add_argument("--data", "--dataset-path", dest="data", help="the challenge's data folder")
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="split (default test)")
    p.add_argument("--listener-gt", help="instead of --data: real listener emotion (N, T, 25)")
    p.add_argument("--speaker", help="instead of --data: speaker emotion (N, T, 25)")
    p.add_argument("--appropriate", help="instead of --data: neighbour matrix (N, N) of 0/1")
    p.add_argument("--out", help="JSON file for the results (default: next to pred)")
    p.add_argument("--frsyn-all-samples", action="store_true",
                   help="FRSyn over every sample (corrected variant; official: first sample only)")
    p.add_argument("--no-progress", action="store_true", help="no progress output")
    _device_args(p)

    p = command("data", "write, check or crop data in the REACT 2024 layout", _cmd_data)
    data = p.add_subparsers(dest="data_command", required=True)
    q = data.add_parser("synth", help="write the synthetic dyads in the REACT 2024 layout", allow_abbrev=False,
                        parents=[common])
    q.add_argument("--out", required=True, help="the data folder to write")
    q.add_argument("--sessions", type=int, default=48, help="training sessions (val and test: a quarter)")
    q.add_argument("--seed", type=int, default=0, help="random seed of the dyads (default 0)")
    q.add_argument("--splits", default="train,val,test", help="comma-separated splits to write (default all three)")
    q.add_argument("--frames", type=int, default=751, help="frames per clip (default 751, as the challenge's clips)")
    q.add_argument("--audio-dim", type=int, default=32, help="audio feature width (k = 2 rows per frame)")
    q.add_argument("--prototypes", type=int, default=4, help="speaker behaviour prototypes")
    q.add_argument("--overwrite", action="store_true", help="write into a folder that already holds a dataset")
    q.set_defaults(data_func=_cmd_data_synth)
    q = data.add_parser("check", help="validate a REACT 2024 data folder and summarise it", allow_abbrev=False,
                        parents=[common])
    q.add_argument("root", help="the data folder (holding train.csv, val.csv, test.csv)")
    q.add_argument("--splits", default="train,val,test", help="comma-separated splits to check (default all three)")
    q.set_defaults(data_func=_cmd_data_check)
    q = data.add_parser("crop", help="PFL: crop a clip's frames with one pose-preserving window from its face "
                                     "boxes", allow_abbrev=False, parents=[common])
    q.add_argument("--video", required=True, help="the clip's frame folder (1.png ... T.png)")
    q.add_argument("--boxes", required=True, help="face boxes x_centre, y_centre, w, h per frame (.npy or .csv)")
    q.add_argument("--out", required=True, help="folder for the cropped frames")
    q.add_argument("--omega", type=float, default=256.0, help="largest window side (default 256)")
    q.add_argument("--size", type=int, help="resize the crops to SIZE x SIZE")
    q.add_argument("--overwrite", action="store_true", help="replace the numbered frames --out already holds")
    q.set_defaults(data_func=_cmd_data_crop)
    return parser


def _message(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, (ValueError, TypeError, OSError, RuntimeError, ImportError, KeyError, LookupError)):
        text = text.strip("'\"") if isinstance(exc, KeyError) else text
    else:
        text = f"{type(exc).__name__}: {text}"
    # What was kept of the finished work (a checkpoint saved after a failed step, say) is in its notes.
    return "; ".join([text, *getattr(exc, "__notes__", ())])


def _warning_printer(name: str):
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"reactfast {name}: {category.__name__}: {message}", file=sys.stderr if file is None else file)
    return show


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    name = " ".join(filter(None, (args.command, getattr(args, "data_command", None))))   # "data crop"
    try:
        with warnings.catch_warnings():
            if not args.debug:  # a warning as one line that names the command, not the source line that raised it
                warnings.showwarning = _warning_printer(name)
            return args.func(args)
    except KeyboardInterrupt:
        print(f"reactfast {name}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one line for the user; --debug for the traceback
        if args.debug:
            raise
        print(f"reactfast {name}: error: {_message(exc)}", file=sys.stderr)
        return 2


def entry() -> int:
    """The ``reactfast`` program: ``main`` with freed heap memory kept for reuse (``reactfast._malloc``:
    the CPU training step's page faults; process-wide, so not done by ``main``, which tests call)."""
    from reactfast import _malloc

    try:
        _malloc.retain_freed_memory()
    except ValueError as exc:
        print(f"reactfast: error: {exc}", file=sys.stderr)
        return 2
    from reactfast._distributed import exit_distributed_process, launched_world_size

    try:
        world = launched_world_size()   # read before any work, not after it
    except ValueError as exc:
        print(f"reactfast: error: {exc}", file=sys.stderr)
        return 2
    code = main()
    if world > 1:
        # Under torchrun: exit without interpreter finalization, where torch's threads can abort a
        # finished run (see exit_distributed_process).
        exit_distributed_process(code)
    return code


if __name__ == "__main__":
    sys.exit(entry())
