"""Model names for checkpoints and the command line."""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Dict, Tuple, Type

from torch import nn

from reactfast.models.perfrdiff import PerFRDiff, PerFRDiffConfig
from reactfast.models.posnet import PosNet, PosNetConfig
from reactfast.models.reactdiff import ReactDiff, ReactDiffConfig
from reactfast.models.reactface import ReactFace, ReactFaceConfig

MODELS: Dict[str, Tuple[Type[nn.Module], type]] = {"reactface": (ReactFace, ReactFaceConfig),
                                                   "perfrdiff": (PerFRDiff, PerFRDiffConfig),
                                                   "reactdiff": (ReactDiff, ReactDiffConfig),
                                                   "posnet": (PosNet, PosNetConfig)}


def model_name(model: nn.Module) -> str:
    for name, (cls, _) in MODELS.items():
        if isinstance(model, cls):
            return name
    raise ValueError(f"{type(model).__name__} is not a registered reactfast model ({sorted(MODELS)})")


def build(name: str, config: dict) -> nn.Module:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {sorted(MODELS)}")
    cls, cfg_cls = MODELS[name]
    known = {f.name for f in fields(cfg_cls)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f"{name} config has unknown fields {unknown}")
    return cls(cfg_cls(**config))


def config_of(model: nn.Module) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(model.config).items()}
