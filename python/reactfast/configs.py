"""Configuration from files and the command line: ``--config FILE.yaml|FILE.json`` and dotted
``KEY=VALUE`` overrides with typed values, validated against the configuration dataclasses.

A file holds either a flat mapping of model fields, or sections ``model:`` (the generator's
config fields) and ``train:`` (``TrainConfig`` fields). An override is ``dim=64`` or
``model.dim=64`` for the model, ``train.steps=200`` for training. Values are read as YAML scalars:
``64`` (int), ``1e-4`` (float), ``true``/``false``, ``none``/``null``, ``"text"``, and lists as
``1,2,4`` or ``[1, 2, 4]``; each is checked against the field's type, with an error naming the
field, the expected type and the source.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from typing import Any, Dict, List, Tuple

SECTIONS = ("model", "train")


class ConfigError(ValueError):
    """A configuration file or override that cannot be used; the message names it."""


def parse_value(text: str) -> Any:
    """A command-line value as YAML reads a scalar: int, float, bool, None, a list, or a string."""
    text = text.strip()
    low = text.lower()
    if low in ("none", "null", "~"):
        return None
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1].strip()
        return [parse_value(t) for t in inner.split(",")] if inner else []
    if "," in text:
        return [parse_value(t) for t in text.split(",")]
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def load_file(path: str) -> Dict[str, Dict[str, Any]]:
    """{"model": {...}, "train": {...}} from a .json or .yaml/.yml file."""
    if not os.path.isfile(path):
        raise ConfigError(f"--config: no such file: {path}")
    ext = os.path.splitext(path)[1].lower()
    try:
        with open(path) as f:
            if ext == ".json":
                data = json.load(f)
            elif ext in (".yaml", ".yml"):
                try:
                    import yaml
                except ImportError:
                    raise ConfigError(f"{path}: reading YAML needs PyYAML (pip install pyyaml); or write it as .json") \
                        from None
                data = yaml.safe_load(f)
            else:
                raise ConfigError(f"{path}: a config file must end in .json, .yaml or .yml")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    except Exception as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{path}: cannot be read ({type(exc).__name__}: {exc})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must hold a mapping of fields, got {type(data).__name__}")
    if set(data) & set(SECTIONS):
        unknown = sorted(set(data) - set(SECTIONS))
        if unknown:
            raise ConfigError(f"{path}: with sections {SECTIONS}, the top level holds nothing else; got {unknown}")
        out = {s: data.get(s) or {} for s in SECTIONS}
        for s in SECTIONS:
            if not isinstance(out[s], dict):
                raise ConfigError(f"{path}: section {s!r} must be a mapping, got {type(out[s]).__name__}")
        return out
    return {"model": data, "train": {}}


def parse(items: List[str]) -> Dict[str, Dict[str, Any]]:
    """``--config`` arguments (files and KEY=VALUE, later ones winning) -> {"model": ..., "train": ...}."""
    if isinstance(items, str) or not isinstance(items, (list, tuple, type(None))):
        raise TypeError(f"items must be a list of --config arguments (files and KEY=VALUE), got "
                        f"{type(items).__name__}" + (f": give [{items!r}]" if isinstance(items, str) else ""))
    out: Dict[str, Dict[str, Any]] = {s: {} for s in SECTIONS}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            loaded = load_file(item)
            for s in SECTIONS:
                out[s].update(loaded[s])
            continue
        section, dot, field = key.strip().partition(".")
        if not dot:
            section, field = "model", section
        if section not in SECTIONS or not field or "." in field:
            raise ConfigError(f"--config {item!r}: keys are FIELD, model.FIELD or train.FIELD")
        out[section][field] = parse_value(value)
    return out


def _matches(value: Any, kind) -> Tuple[bool, Any]:
    """(fits, value converted) for a dataclass field annotation."""
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    if kind is Any:
        return True, value
    if origin is typing.Union:
        if value is None:
            return type(None) in args, None
        for arg in args:
            if arg is not type(None):
                ok, v = _matches(value, arg)
                if ok:
                    return True, v
        return False, value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            value = [value]
        inner = args[0] if args else Any
        converted = []
        for v in value:
            ok, c = _matches(v, inner)
            if not ok:
                return False, value
            converted.append(c)
        return True, tuple(converted) if origin is tuple else converted
    if kind is bool:
        return isinstance(value, bool), value
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool), float(value) \
            if isinstance(value, (int, float)) and not isinstance(value, bool) else value
    if kind is str:
        return isinstance(value, str), value
    return isinstance(value, kind), value


def _type_name(kind) -> str:
    text = str(kind).replace("typing.", "")
    return kind.__name__ if isinstance(kind, type) else text


def checked(cls, values: Dict[str, Any], source: str) -> Dict[str, Any]:
    """``values`` checked against the fields of dataclass ``cls`` (names and types), converted
    where the conversion is exact (an int for a float field, a list for a tuple field)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(f"{source}: {cls.__name__} has no field(s) {unknown}; its fields: {sorted(fields)}")
    out = {}
    for name, value in values.items():
        ok, converted = _matches(value, hints[name])
        if not ok:
            raise ConfigError(f"{source}: {cls.__name__}.{name} must be {_type_name(hints[name])}, got {value!r}")
        out[name] = converted
    return out


def build(cls, values: Dict[str, Any], source: str):
    """An instance of dataclass ``cls`` from checked ``values``; its own validation errors name
    ``source``."""
    fields = checked(cls, values, source)
    try:
        return cls(**fields)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {exc}") from None
