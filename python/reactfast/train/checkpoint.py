"""Checkpoints: a folder with ``model.safetensors`` (weights), ``config.json`` (model name,
config, versions, what the run was trained on) and, for training, ``trainer.pt`` (optimizer,
step, RNG states).

A save never leaves its name without a loadable checkpoint, whenever it is interrupted (a kill -9
included): the files go to ``<name>.tmp-<pid>``, which is renamed to a new version folder
``<name>.<tag>`` once complete; ``<name>`` is a relative symbolic link to the current version,
switched in one atomic rename; versions no link in the folder points at (``checkpoint``,
``best``) and stale temporaries of dead processes are removed, by each save and each relink.
Where symbolic links cannot be made, ``<name>`` is the folder itself and a loader finds the newest
complete version beside it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from typing import Optional, Tuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

import reactfast
from reactfast import _backend, _io
from reactfast import models as registry
from reactfast.ops._checks import check_bool, check_int, check_path

WEIGHTS, CONFIG, TRAINER = "model.safetensors", "config.json", "trainer.pt"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, corrupt, or does not fit the model."""


def _mark(step: str) -> None:
    """Called between the steps of a save (a test puts a simulated kill here)."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_stale(folder: str, name: str) -> None:
    """Remove the temporaries of saves whose process is gone."""
    pattern = re.compile(re.escape(name) + r"\.(tmp|link|old)-(\d+)$")
    for entry in os.listdir(folder):
        m = pattern.match(entry)
        if m and (int(m.group(2)) == os.getpid() or not _pid_alive(int(m.group(2)))):
            full = os.path.join(folder, entry)
            if os.path.islink(full) or os.path.isfile(full):
                os.remove(full)
            else:
                shutil.rmtree(full, ignore_errors=True)


_VERSION = re.compile(r"(.+)\.(\d{8,})$")     # <name>.<tag and time>: a version folder of <name>


def _versions(folder: str, name: str):
    return sorted(e for e in os.listdir(folder) if (m := _VERSION.match(e)) and m.group(1) == name
                  and os.path.isdir(os.path.join(folder, e)))


def _drop_unreferenced(folder: str, name: str) -> None:
    """Remove the versions of ``name`` that no symbolic link in ``folder`` points at."""
    keep = _referenced(folder)
    for old in _versions(folder, name):
        if old not in keep:
            shutil.rmtree(os.path.join(folder, old), ignore_errors=True)


def _referenced(folder: str) -> set:
    """Version folders some symbolic link in ``folder`` points at."""
    out = set()
    for entry in os.listdir(folder):
        full = os.path.join(folder, entry)
        if os.path.islink(full):
            out.add(os.path.basename(os.path.normpath(os.readlink(full))))
    return out


def _write_files(folder: str, model: nn.Module, trainer_state: Optional[dict], extra: Optional[dict]) -> None:
    os.makedirs(folder)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"refusing to save non-finite weights ({', '.join(bad[:5])}): the run diverged")
    save_file(state, os.path.join(folder, WEIGHTS))
    _mark("weights")
    if trainer_state is not None:
        torch.save(trainer_state, os.path.join(folder, TRAINER))
        _mark("trainer")
    meta = {"model": registry.model_name(model), "config": registry.config_of(model),
            "versions": {"reactfast": reactfast.__version__, "torch": torch.__version__}}
    if extra:
        meta["extra"] = extra
    # config.json last: its presence marks a complete checkpoint.
    with open(os.path.join(folder, CONFIG), "w") as f:
        json.dump(meta, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    mode = 0o666 & ~_io.umask()
    for entry in os.listdir(folder):
        os.chmod(os.path.join(folder, entry), mode)
    _mark("config")


def save_checkpoint(path: str, model: nn.Module, trainer_state: Optional[dict] = None, extra: Optional[dict] = None,
                    tag: Optional[int] = None) -> str:
    """Write ``model`` (and optionally the trainer's state) as the checkpoint ``path``, which stays
    loadable through any interruption of the save. ``tag`` (the training step) names the version."""
    model = getattr(model, "module", model)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for name, value in (("trainer_state", trainer_state), ("extra", extra)):
        if value is not None and not isinstance(value, dict):
            raise TypeError(f"{name} must be a dict or None, got {type(value).__name__}")
    if tag is not None:
        check_int("tag", tag, minimum=0)   # before the files are written
    path = os.path.abspath(_check_path(path).rstrip("/"))
    folder, name = os.path.split(path)
    os.makedirs(folder, exist_ok=True)
    _clean_stale(folder, name)
    tmp = os.path.join(folder, f"{name}.tmp-{os.getpid()}")
    _write_files(tmp, model, trainer_state, extra)
    version = f"{name}.{tag if tag is not None else 0:08d}{time.time_ns() % 10 ** 9:09d}"
    os.replace(tmp, os.path.join(folder, version))
    _mark("version")
    if os.path.isdir(path) and not os.path.islink(path):
        # A folder from an older save: moved aside (a loader falls back to the newest version).
        os.replace(path, os.path.join(folder, f"{name}.old-{os.getpid()}"))
        _mark("moved")
    try:
        link = os.path.join(folder, f"{name}.link-{os.getpid()}")
        os.symlink(version, link)
        os.replace(link, path)
    except OSError:
        # No symbolic links here: the version folder itself takes the name.
        os.replace(os.path.join(folder, version), path)
    _mark("switched")
    _drop_unreferenced(folder, name)
    _clean_stale(folder, name)
    return path


def link_checkpoint(path: str, alias: str) -> str:
    """Make ``alias`` (a name in the same folder, e.g. ``best``) point at the version ``path`` points
    at, atomically; no files are copied."""
    path = os.path.abspath(_check_path(path))
    alias = os.path.abspath(check_path("alias", alias, "name a checkpoint beside path"))
    if not os.path.isfile(os.path.join(path, CONFIG)):
        raise CheckpointError(f"path must name a saved checkpoint folder, and {path} holds no {CONFIG}")
    if os.path.dirname(path) != os.path.dirname(alias):
        raise ValueError(f"alias must be in the checkpoint's folder {os.path.dirname(path)}, got {alias}")
    if not os.path.islink(path):
        shutil.rmtree(alias + ".tmp-copy", ignore_errors=True)
        shutil.copytree(path, alias + ".tmp-copy")
        if os.path.isdir(alias) and not os.path.islink(alias):
            shutil.rmtree(alias)
        os.replace(alias + ".tmp-copy", alias)
        return alias
    before = _VERSION.match(os.path.basename(os.path.normpath(os.readlink(alias)))) if os.path.islink(alias) else None
    tmp = f"{alias}.link-{os.getpid()}"
    if os.path.lexists(tmp):
        os.remove(tmp)
    os.symlink(os.readlink(path), tmp)
    os.replace(tmp, alias)
    if before:   # the version the alias left, unless another link keeps it (a best older than the last save)
        _drop_unreferenced(os.path.dirname(alias), before.group(1))
    return alias


def _check_path(path) -> str:
    return check_path("path", path, "name a checkpoint folder")


def resolve(path: str) -> str:
    """The checkpoint folder ``path`` names: itself, or when a save was cut short before its name
    was switched, the newest complete version beside it."""
    path = _check_path(path)
    if os.path.isfile(os.path.join(path, CONFIG)):
        return path
    folder, name = os.path.split(os.path.abspath(path.rstrip("/")))
    if os.path.isdir(folder):
        complete = [v for v in _versions(folder, name) if os.path.isfile(os.path.join(folder, v, CONFIG))]
        aside = os.path.join(folder, f"{name}.old-")
        moved = [e for e in os.listdir(folder) if os.path.join(folder, e).startswith(aside)
                 and os.path.isfile(os.path.join(folder, e, CONFIG))]
        if complete:
            return os.path.join(folder, complete[-1])
        if moved:
            return os.path.join(folder, sorted(moved)[-1])
    return path


def read_config(path: str) -> dict:
    """The ``config.json`` of the checkpoint ``path`` (see :func:`resolve`), checked."""
    path = resolve(path)
    cfg_path = os.path.join(path, CONFIG)
    if not os.path.isdir(path):
        raise CheckpointError(f"{path}: no such checkpoint folder")
    if not os.path.isfile(cfg_path):
        # A training run's folder holds its checkpoints: name them.
        inner = [os.path.join(path, n) for n in ("checkpoint", "best")
                 if os.path.isfile(os.path.join(resolve(os.path.join(path, n)), CONFIG))]
        hint = f"; it holds a training run's checkpoints: give {' or '.join(inner)}" if inner else ""
        raise CheckpointError(f"{path} is not a reactfast checkpoint: {CONFIG} is missing{hint}")
    try:
        with open(cfg_path) as f:
            meta = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{cfg_path} is truncated or corrupt ({exc})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{cfg_path} must hold a JSON object, got {type(meta).__name__}")
    for key, kind in (("model", str), ("config", dict)):
        if key not in meta:
            raise CheckpointError(f"{cfg_path} has no {key!r} entry")
        if not isinstance(meta[key], kind):
            raise CheckpointError(f"{cfg_path}: {key!r} must be a {kind.__name__}, got {meta[key]!r}")
    if meta["model"] not in registry.names():
        raise CheckpointError(f"{cfg_path}: unknown model {meta['model']!r}; known: {', '.join(registry.names())}")
    meta["path"] = path
    return meta


def _weights(path: str) -> dict:
    w_path = os.path.join(path, WEIGHTS)
    if not os.path.isfile(w_path):
        raise CheckpointError(f"{path}: {WEIGHTS} is missing")
    try:
        weights = load_file(w_path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{w_path} is truncated or corrupt ({exc})") from None
    bad = [k for k, v in weights.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"{w_path}: weights {bad[:5]} hold NaN or Inf values (saved from a diverged run?)")
    return weights


def load_model(path: str, device=None) -> nn.Module:
    """Build the model a checkpoint describes and load its weights (on ``device`` when given), in the
    dtype they were saved in."""
    # auto, cpu, cuda or cuda:N, checked first: a clear error for another kind or a GPU that is not
    # available, before anything is read.
    target = None if device is None else _backend.resolve_device(str(device))
    meta = read_config(path)
    try:
        model = registry.build(meta["model"], meta["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{os.path.join(meta['path'], CONFIG)}: its config does not make a "
                              f"{meta['model']} ({exc})") from None
    load_into(model, meta["path"], adopt_dtype=True)
    return model if target is None else model.to(target)


def load_into(model: nn.Module, path: str, adopt_dtype: bool = False) -> dict:
    """Load weights into an existing model after checking that its config matches; says what differs.
    ``adopt_dtype``: first cast the model to the dtype its saved floating-point weights share (a model
    saved in bfloat16 or float64 loads as such; otherwise they are converted to the model's)."""
    target = getattr(model, "module", model)   # a DDP wrapper's model
    if not isinstance(target, nn.Module):
        raise TypeError(f"model must be a reactfast generator (a torch.nn.Module), got {type(model).__name__}")
    check_bool("adopt_dtype", adopt_dtype)
    meta = read_config(path)
    path = meta["path"]
    name = registry.model_name(target)
    if meta["model"] != name:
        raise CheckpointError(f"{path} holds a {meta['model']!r} model, not a {name!r}")
    mine = registry.config_of(target)
    # A field added to the config after the checkpoint was written reads as its default (the
    # behaviour the checkpoint was trained with).
    saved = {**type(target.config)().to_dict(), **meta["config"]}
    diff = {k: (saved.get(k), mine.get(k)) for k in set(mine) | set(saved) if saved.get(k) != mine.get(k)}
    if diff:
        lines = ", ".join(f"{k}: checkpoint {a!r} vs model {b!r}" for k, (a, b) in sorted(diff.items()))
        raise CheckpointError(f"{path}: config differs from the model's ({lines})")
    weights = _weights(path)
    own = target.state_dict()
    wrong = [f"{k} {tuple(weights[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in weights and weights[k].shape != v.shape]
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    if wrong or missing or unexpected:
        raise CheckpointError(f"{path}: its weights do not fit the model its config describes (shapes: "
                              f"{wrong[:5]}, missing {missing[:5]}, unexpected {unexpected[:5]})")
    if adopt_dtype:
        dtypes = {v.dtype for v in weights.values() if v.is_floating_point()}
        if len(dtypes) == 1:
            target.to(dtypes.pop())
    target.load_state_dict(weights)
    return meta


def load_trainer_state(path: str) -> Tuple[dict, dict]:
    """(meta, trainer state) of a training checkpoint."""
    meta = read_config(path)
    t_path = os.path.join(meta["path"], TRAINER)
    if not os.path.isfile(t_path):
        raise CheckpointError(f"{meta['path']} has no trainer state ({TRAINER}); it cannot resume training")
    try:
        state = torch.load(t_path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises several types for truncated pickles
        raise CheckpointError(f"{t_path} is truncated or corrupt ({exc})") from None
    return meta, state
