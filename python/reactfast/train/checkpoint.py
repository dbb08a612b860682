"""Checkpoints: a folder with ``model.safetensors`` (weights), ``config.json`` (model name,
config, versions) and, for training, ``trainer.pt`` (optimizer, step, RNG states).

Writes are atomic: everything goes to ``<path>.tmp-<pid>`` and is renamed into place, so a
crash never leaves a half-written checkpoint under the final name.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Optional, Tuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

import reactfast
from reactfast import models as registry

WEIGHTS, CONFIG, TRAINER = "model.safetensors", "config.json", "trainer.pt"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, corrupt, or does not fit the model."""


def save_checkpoint(path: str, model: nn.Module, trainer_state: Optional[dict] = None, extra: Optional[dict] = None
                    ) -> str:
    """Write ``model`` (and optionally the trainer's state) to the folder ``path`` atomically."""
    model = getattr(model, "module", model)
    tmp = f"{path.rstrip('/')}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(tmp, WEIGHTS))
    meta = {"model": registry.model_name(model), "config": registry.config_of(model),
            "versions": {"reactfast": reactfast.__version__, "torch": torch.__version__}}
    if extra:
        meta["extra"] = extra
    with open(os.path.join(tmp, CONFIG), "w") as f:
        json.dump(meta, f, indent=2)
    if trainer_state is not None:
        torch.save(trainer_state, os.path.join(tmp, TRAINER))
    old = f"{path.rstrip('/')}.old-{os.getpid()}"
    if os.path.exists(path):
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
    return path


def read_config(path: str) -> dict:
    cfg_path = os.path.join(path, CONFIG)
    if not os.path.isfile(cfg_path):
        raise CheckpointError(f"{path} is not a reactfast checkpoint: {CONFIG} is missing")
    try:
        with open(cfg_path) as f:
            meta = json.load(f)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{cfg_path} is truncated or corrupt ({exc})") from None
    for key in ("model", "config"):
        if key not in meta:
            raise CheckpointError(f"{cfg_path} has no {key!r} entry")
    return meta


def _weights(path: str) -> dict:
    w_path = os.path.join(path, WEIGHTS)
    if not os.path.isfile(w_path):
        raise CheckpointError(f"{path}: {WEIGHTS} is missing")
    try:
        return load_file(w_path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{w_path} is truncated or corrupt ({exc})") from None


def load_model(path: str, device=None) -> nn.Module:
    """Build the model a checkpoint describes and load its weights."""
    meta = read_config(path)
    model = registry.build(meta["model"], meta["config"])
    load_into(model, path)
    return model.to(device) if device is not None else model


def load_into(model: nn.Module, path: str) -> dict:
    """Load weights into an existing model after checking that its config matches; says what differs."""
    meta = read_config(path)
    name = registry.model_name(getattr(model, "module", model))
    target = getattr(model, "module", model)
    if meta["model"] != name:
        raise CheckpointError(f"{path} holds a {meta['model']!r} model, not a {name!r}")
    mine = registry.config_of(target)
    diff = {k: (meta["config"].get(k), mine.get(k)) for k in set(mine) | set(meta["config"])
            if meta["config"].get(k) != mine.get(k)}
    if diff:
        lines = ", ".join(f"{k}: checkpoint {a!r} vs model {b!r}" for k, (a, b) in sorted(diff.items()))
        raise CheckpointError(f"{path}: config differs from the model's ({lines})")
    weights = _weights(path)
    missing, unexpected = target.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not fit the model (missing {missing[:5]}, unexpected "
                              f"{unexpected[:5]})")
    return meta


def load_trainer_state(path: str) -> Tuple[dict, dict]:
    """(meta, trainer state) of a training checkpoint."""
    meta = read_config(path)
    t_path = os.path.join(path, TRAINER)
    if not os.path.isfile(t_path):
        raise CheckpointError(f"{path} has no trainer state ({TRAINER}); it cannot resume training")
    try:
        state = torch.load(t_path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises several types for truncated pickles
        raise CheckpointError(f"{t_path} is truncated or corrupt ({exc})") from None
    return meta, state
