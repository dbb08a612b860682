"""What every reactfast generator is: the ``Generator`` interface, the ``GeneratorConfig`` base of
their configurations, and the registry that the command line, the demo, the trainer and the
checkpoints use to find a generator by name.

A generator maps a speaker's behaviour (per-frame features ``speaker`` (B, T, F) and ``k`` audio
feature rows per frame ``audio`` (B, k T, A)) to listener reactions ``{"3dmm": (B, S, T, 58),
"emotion": (B, S, T, 25)}`` (the outputs it has), offline (``generate``) or window by window
(``init_state`` / ``step``, driven by ``reactfast.online.ReactionStream``). Training calls
``loss`` on batches from ``reactfast.train``; multi-stage generators (``stages``) freeze what a
stage does not train.

Adding a generator: subclass ``GeneratorConfig`` and ``Generator``, decorate the class with
``@register``, and import its module in ``reactfast/models/__init__.py`` (ARCHITECTURE.md).
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Dict, List, Optional, Sequence, Tuple, Type

import numpy as np
import torch
from torch import nn

from reactfast import _backend
from reactfast.ops._checks import check_bool, check_device, check_int, check_real


def check_generator(model, name: str = "model") -> None:
    """A TypeError naming ``name`` unless ``model`` is a reactfast generator."""
    if not isinstance(model, Generator):
        raise TypeError(f"{name} must be a reactfast generator (reactfast.models.Generator), got "
                        f"{type(model).__name__}")


def check_at_least(config, minimum: int, *names: str) -> None:
    """Raise ValueError naming the first field of ``config`` in ``names`` that is not an int >= ``minimum``."""
    for name in names:
        check_int(f"{type(config).__name__}.{name}", getattr(config, name), minimum)


def check_field_types(config) -> None:
    """Each field of a dataclass config with a plain annotated type int, bool or str (or Optional of
    one) holds a value of that type, else a ValueError naming it: a string "no" for a bool field
    counted as true, a float for an int field reached a layer's size. Float fields are left to
    ``check_real``/``check_reals`` (which name a non-number with the field's range); ranges are each
    config's own checks."""
    for f in dataclasses.fields(config):
        kind = str(f.type).replace("typing.", "")
        optional = kind.startswith("Optional[") and kind.endswith("]")
        kind = kind[len("Optional["):-1] if optional else kind
        value = getattr(config, f.name)
        if value is None and optional:
            continue
        name = f"{type(config).__name__}.{f.name}"
        if kind == "int" and (not isinstance(value, (int, np.integer)) or isinstance(value, (bool, np.bool_))):
            raise ValueError(f"{name} must be an int, got {value!r}")
        if kind == "bool":
            check_bool(name, value)
        if kind == "str" and not isinstance(value, (str, os.PathLike)):   # a folder may be a pathlib.Path
            raise ValueError(f"{name} must be a str, got {value!r}")


def check_reals(config, names: Sequence[str], minimum: Optional[float] = 0.0, strict: bool = False) -> None:
    """Raise ValueError naming the first field of ``config`` in ``names`` that is not a finite number
    >= ``minimum`` (> with ``strict``; any finite number with ``minimum=None``): a NaN weight passed
    a check written ``value < 0`` and made the loss NaN."""
    for name in names:
        check_real(f"{type(config).__name__}.{name}", getattr(config, name), minimum, strict)


# How the windows of one sample draw their initial noise (window-by-window diffusion generators):
# "independent" (the authors': a fresh draw per window, so one sample may switch between appropriate
# reactions at every window) or "shared" (the first window's draw for every window of the sample:
# one mode per sample).
WINDOW_NOISE = ("independent", "shared")


def check_unit_interval(config, names: Sequence[str], none_ok: bool = False) -> None:
    """Raise ValueError naming the first field of ``config`` in ``names`` that is not a number in
    [0, 1) (dropout rates, momentum and EMA factors; None passes with ``none_ok``): a string or an
    array reached a comparison ("'<=' not supported", "truth value ... ambiguous")."""
    for name in names:
        value = getattr(config, name)
        if value is None and none_ok:
            continue
        if (not isinstance(value, (int, float, np.floating, np.integer)) or isinstance(value, (bool, np.bool_))
                or not 0.0 <= value < 1.0):
            raise ValueError(f"{type(config).__name__}.{name} must be in [0, 1), got {value!r}")


def as_tuple_of(config, name: str, kind: type, empty_ok: bool = False) -> tuple:
    """The field ``name`` of ``config`` (a list or tuple of ``kind``, empty only with ``empty_ok``)
    as a tuple, else a ValueError naming it (a number was "not iterable", a string split into
    characters)."""
    value = getattr(config, name)
    if (not isinstance(value, (list, tuple)) or not (value or empty_ok)
            or not all(isinstance(v, kind) and not isinstance(v, bool) for v in value)):
        what = "list" if empty_ok else "non-empty list"
        raise ValueError(f"{type(config).__name__}.{name} must be a {what} of {kind.__name__}, got {value!r}")
    return tuple(value)


def check_window_noise(config) -> None:
    """Raise ValueError unless ``config.window_noise`` is one of WINDOW_NOISE and ``config.noise_scale`` > 0."""
    if config.window_noise not in WINDOW_NOISE:
        raise ValueError(f"window_noise must be one of {WINDOW_NOISE}, got {config.window_noise!r}")
    check_reals(config, ("noise_scale",), strict=True)


def check_sample_autocast(config) -> None:
    """Raise ValueError unless ``config.sample_autocast`` is one of diffusion.SAMPLE_AUTOCAST."""
    from reactfast.diffusion import SAMPLE_AUTOCAST

    if config.sample_autocast not in SAMPLE_AUTOCAST:
        raise ValueError(f"sample_autocast must be one of {SAMPLE_AUTOCAST}, got {config.sample_autocast!r}")


@dataclass
class GeneratorConfig:
    """Fields every generator's configuration has; subclasses add theirs (all with defaults)."""

    lr: float = 1e-4
    weight_decay: float = 0.0

    def check_field_types(self) -> None:
        """See :func:`check_field_types`."""
        check_field_types(self)

    def check_at_least(self, minimum: int, *names: str) -> None:
        """Raise ValueError naming the first of ``names`` that is not an int >= ``minimum``."""
        check_at_least(self, minimum, *names)

    def check_weights(self, *names: str) -> None:
        """The learning rate (> 0), the weight decay and ``names`` (>= 0, loss weights and the like):
        finite numbers, else a ValueError naming the field."""
        check_reals(self, ("lr",), strict=True)
        check_reals(self, ("weight_decay",) + names)

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready fields (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


@dataclass
class TrainStage:
    """One stage of a generator's training recipe (used by the demo)."""

    stage: int
    steps: int
    lr: Optional[float] = None
    optimizer: str = "adamw"
    batch_size: int = 8
    lr_schedule: str = "constant"


class _Batch(dict):
    """A training batch that names a missing key with the keys it holds."""

    def __missing__(self, key):
        raise KeyError(f"the batch has no {key!r} (it holds {', '.join(sorted(self))}; "
                       "reactfast.train.collate_appropriate adds the appropriate_* targets to a dataset's items)")


class Generator(nn.Module, metaclass=abc.ABCMeta):
    """Base of the reactfast generators.

    Args:
        config: the generator's ``config_class`` instance; or give its fields as keyword overrides.
        backend: a backend spec for the ops the generator calls: one name (``"reference"``) for
            every op that has it, or per op (``"biased_attention:reference,weight_shift:cpp"``);
            None for automatic choice (see ``reactfast._backend``).
    """

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    config_class: ClassVar[Type[GeneratorConfig]]
    stages: ClassVar[Tuple[int, ...]] = (1,)
    stage_names: ClassVar[Dict[int, str]] = {1: "the whole generator"}
    # Whether ``step`` can be captured in a CUDA graph (no host reads, no tensors from host data,
    # shapes fixed by the batch layout): ``StreamRunner(graph=True)`` runs only such models.
    graph_capturable: ClassVar[bool] = False
    # How a diffusion generator's sampling loop is recorded when its config asks for CUDA graphs:
    # None for a CUDA graph (CUDA devices only), else capture(fn, device) -> (replay, out), set on
    # the instance or the class. The tests set a re-run to check the loop's buffers on a CPU.
    graph_capture: ClassVar[Optional[Callable]] = None

    def sampler_graphs(self):
        """This generator's captured sampling loops (``diffusion.SamplerGraphs``; ``.clear()``
        frees them, as moving the model to another device should)."""
        from reactfast.diffusion import SamplerGraphs

        return self.__dict__.setdefault("_sampler_graphs", SamplerGraphs())

    def _capture_fn(self) -> Optional[Callable]:
        """graph_capture as set on the instance or the class (a plain function either way, never
        bound to the model)."""
        fn = self.__dict__.get("graph_capture")
        return fn if fn is not None else getattr(type(self), "graph_capture", None)

    def _graph_sampling(self, device) -> bool:
        """Whether sampling on ``device`` runs on captured loops (config.sample_cuda_graph)."""
        if not getattr(self.config, "sample_cuda_graph", False):
            return False
        return torch.device(device).type == "cuda" or self._capture_fn() is not None

    def __init__(self, config: Optional[GeneratorConfig] = None, backend: Optional[str] = None, **overrides):
        super().__init__()
        if config is not None and overrides:
            raise ValueError(f"pass either a {self.config_class.__name__} or keyword overrides, not both")
        if config is None:
            config = self.config_class(**overrides)
        elif not isinstance(config, self.config_class):
            raise TypeError(f"config must be a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config
        _backend.check_spec_ops(backend)
        self.backend = backend
        self.stage = self.stages[0]

    def backend_for(self, op: str) -> Optional[str]:
        """The backend this generator's spec asks of ``op`` (None: automatic)."""
        return _backend.for_op(self.backend, op)

    def set_backend(self, backend: Optional[str]) -> "Generator":
        """Change the backend spec; modules that call an op (an ``op`` attribute) follow it. Every op
        the spec names must exist and implement the backend named for it."""
        _backend.check_spec_ops(backend)
        self.backend = backend
        for module in self.modules():
            op = getattr(module, "op", None)
            if isinstance(op, str) and hasattr(module, "backend") and module is not self:
                module.backend = _backend.for_op(backend, op)
        return self

    @abc.abstractmethod
    def output_widths(self) -> Dict[str, int]:
        """The outputs the generator emits and their widths, e.g. {"3dmm": 58, "emotion": 25}."""

    @abc.abstractmethod
    def check_inputs(self, speaker: torch.Tensor, audio: torch.Tensor, name: str = "speaker") -> None:
        """Raise a clear error for speaker/audio tensors this generator cannot take."""

    @abc.abstractmethod
    def inputs_from_batch(self, batch: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """(speaker features, audio) from a ``reactfast.data`` batch."""

    @abc.abstractmethod
    def loss(self, batch: Dict[str, torch.Tensor], generators: Sequence[torch.Generator],
             forward=None) -> Dict[str, torch.Tensor]:
        """Training losses of the current stage: a dict with ``loss`` (to minimise) and ``rec`` (the
        reconstruction term, for progress), detached extras allowed. One torch.Generator per item
        draws that item's noise; ``forward`` is the callable that runs the model (its compiled forward, say)."""

    @abc.abstractmethod
    def generate(self, speaker: torch.Tensor, audio: torch.Tensor, num_samples: int = 10,
                 generator: Optional[torch.Generator] = None, **kwargs) -> Dict[str, torch.Tensor]:
        """``num_samples`` reactions per speaker: {output: (B, S, T, width)}. ``generator``: one
        torch.Generator for all the noise, or a sequence of B, one per speaker (``draw_windows``)."""

    @abc.abstractmethod
    def init_state(self, batch: int, window: Optional[int] = None, device=None, **kwargs):
        """The streaming state of ``batch`` new conversations (a dataclass with ``cat``/``split``)."""

    @abc.abstractmethod
    def step(self, state, speaker: torch.Tensor, audio: torch.Tensor, noise: torch.Tensor):
        """Advance every conversation of ``state`` by one window: (outputs, new state)."""

    @abc.abstractmethod
    def draw_noise(self, batch: int, generator: Optional[torch.Generator] = None, window: int = 0) -> torch.Tensor:
        """The random draws one window of ``batch`` streams needs (on the CPU, from ``generator``)."""

    def draw_windows(self, items: int, samples: int, windows: int, generator=None) -> torch.Tensor:
        """The draws of ``windows`` windows for ``samples`` samples of each of ``items`` speakers:
        (windows, items * samples, ...), rows b * samples + s, window by window as a stream draws
        them. ``generator``: None, one torch.Generator for all rows, or a sequence of ``items``
        generators, one per speaker: each speaker's rows come from its own generator in the order
        it would draw them alone, so a batch of speakers gets the noise each gets in a call of its
        own (``reactfast.train.generate_dataset`` batches speakers this way)."""
        for name, value in (("items", items), ("samples", samples), ("windows", windows)):
            check_int(name, value)
        gens = item_generators(generator, items)
        if gens is None:
            return torch.stack([self.draw_noise(items * samples, generator) for _ in range(windows)])
        return torch.stack([torch.cat([self.draw_noise(samples, g) for g in gens]) for _ in range(windows)])

    @staticmethod
    def loss_inputs(batch, generators) -> Tuple[Dict[str, torch.Tensor], List[torch.Generator]]:
        """``loss``'s arguments checked: a dict of tensors whose missing keys are named with what it
        holds, and one torch.Generator per item."""
        if not isinstance(batch, dict) or not batch:
            raise TypeError(f"batch must be a non-empty dict of tensors (a reactfast.data batch), got "
                            f"{type(batch).__name__}")
        items = next((v.shape[0] for v in batch.values() if isinstance(v, torch.Tensor) and v.dim()), None)
        if items is None:
            raise TypeError("batch must hold tensors with a batch dimension (a reactfast.data batch)")
        if not isinstance(generators, (list, tuple)) or not all(isinstance(g, torch.Generator) for g in generators):
            raise TypeError(f"generators must be a list of torch.Generator, one per item, got "
                            f"{type(generators).__name__}")
        if len(generators) != items:
            raise ValueError(f"generators must hold one torch.Generator per item ({items}), got {len(generators)}")
        return _Batch(batch), list(generators)

    def check_step(self, speaker: torch.Tensor, audio: torch.Tensor, noise: torch.Tensor,
                   noise_shape: Sequence[int], frames: Optional[int] = None) -> None:
        """A ``step``'s inputs by shape: ``check_inputs`` without its value checks (a step reads no
        value back, so that it stays capturable in a CUDA graph), the noise's shape and, when given,
        the window's frames."""
        with _backend.graph_safe():
            self.check_inputs(speaker, audio)
        if frames is not None and speaker.shape[1] != frames:
            raise ValueError(f"{type(self).__name__} steps windows of {frames} frames, got {speaker.shape[1]}")
        if not isinstance(noise, torch.Tensor) or tuple(noise.shape) != tuple(noise_shape):
            got = tuple(noise.shape) if isinstance(noise, torch.Tensor) else type(noise).__name__
            raise ValueError(f"noise must have shape {tuple(noise_shape)} (draw_noise's), got {got}")

    def state_device(self, device) -> torch.device:
        """``init_state``'s device: the model's by default, else ``device`` (a named error for one that
        is not a device)."""
        return next(self.parameters()).device if device is None else check_device("device", device)

    @staticmethod
    def check_state(state, cls: type) -> None:
        """A TypeError unless ``state`` is a ``cls`` (a step given anything else failed reading it)."""
        if not isinstance(state, cls):
            raise TypeError(f"state must be a {cls.__name__} (from init_state or a previous step), got "
                            f"{type(state).__name__}")

    def in_model_dtype(self, *tensors: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Floating-point tensors in the dtype of the model's parameters, as a stream casts its input:
        float32 features given to a model cast to bfloat16 or float64 (others as they are)."""
        dtype = next(self.parameters()).dtype
        return tuple(t.to(dtype) if t.is_floating_point() and t.dtype != dtype else t for t in tensors)

    @property
    def window(self) -> int:
        """Frames emitted per streaming step."""
        return self.config.window

    @property
    def audio_per_frame(self) -> int:
        return self.config.audio_per_frame

    def after_step(self) -> None:
        """Called by the trainer after each optimizer step (EMA updates and the like)."""

    def trainable_modules(self, stage: int) -> List[nn.Module]:
        """The modules stage ``stage`` trains (default: everything)."""
        return [self]

    def uses_every_parameter(self, frames: Optional[int]) -> bool:
        """Whether a training step of the current stage on items of ``frames`` frames (None: not
        known) gives every trainable parameter a gradient. Under DDP a step that leaves one without
        fails unless DDP searches the graph for such parameters every step
        (``find_unused_parameters``), which the trainer asks for where this says False."""
        return True

    def validates_by_loss(self) -> bool:
        """Whether the trainer validates the current stage by its training loss on the validation
        clips rather than by the REACT metrics of generated reactions: a stage whose training those
        metrics cannot see (an autoencoder trained before the generator that uses it; a module that
        changes only the head pose, which no metric reads) must not pick its ``best`` by them."""
        return False

    def set_stage(self, stage: int) -> "Generator":
        """Make only the modules of ``stage`` trainable."""
        if not isinstance(stage, (int, np.integer)) or isinstance(stage, bool) or stage not in self.stages:
            raise ValueError(f"{self.name} trains in stages {self.stages}, got stage {stage!r}")
        self.stage = stage
        set_trainable(self, False)
        for module in self.trainable_modules(stage):
            set_trainable(module, True)
        return self

    def stage_optimizer(self, stage: int) -> Tuple[str, Optional[float]]:
        """(optimizer name, learning rate or None for the config's) for ``stage``."""
        return "adamw", None

    def training_windows(self, clip_frames: int) -> Tuple[int, int]:
        """(window, stride) in frames of the training items of the current stage."""
        return clip_frames, max(1, clip_frames // 2)

    @classmethod
    def data_defaults(cls, audio_dim: int) -> Dict[str, Any]:
        """Config fields that follow from the data (its audio feature width)."""
        return {"audio_dim": audio_dim}

    @classmethod
    def demo_config(cls, audio_dim: int) -> GeneratorConfig:
        """The small configuration ``reactfast demo`` trains on a CPU."""
        return cls.config_class(**cls.data_defaults(audio_dim))

    def demo_stages(self, steps: int) -> List[TrainStage]:
        """The demo's training recipe for ``steps`` steps."""
        return [TrainStage(stage=s, steps=steps) for s in self.stages]


def randn(*shape: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Standard normal draws on ``generator``'s device (the CPU without one): any torch.Generator,
    CPU or CUDA, drives the generators' noise."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    return torch.randn(*shape, generator=generator, device=generator.device if generator is not None else "cpu")


def item_generators(generator, items: int, name: str = "generator") -> Optional[List[torch.Generator]]:
    """``generator`` as a list of ``items`` per-speaker generators, or None when it is None or one
    torch.Generator (shared by all rows); raises a clear error for anything else."""
    if generator is None or isinstance(generator, torch.Generator):
        return None
    if not isinstance(generator, (list, tuple)) or not all(isinstance(g, torch.Generator) for g in generator):
        raise TypeError(f"{name} must be a torch.Generator, a sequence of them (one per speaker) or None, got "
                        f"{type(generator).__name__}")
    if len(generator) != items:
        raise ValueError(f"{name} must hold one generator per speaker ({items}), got {len(generator)}")
    if len({g.device.type for g in generator}) > 1:
        raise ValueError(f"the generators in {name} must all be on one device type, got "
                         f"{sorted({str(g.device) for g in generator})}")
    return list(generator)


def set_trainable(module: nn.Module, trainable: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(trainable)


@contextlib.contextmanager
def eval_mode(module: nn.Module):
    """``module`` in eval mode (no dropout) inside the block; every submodule's own mode comes back
    afterwards, also when the block raises (a part the caller keeps in eval mode stays so)."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes:
            m.training = training


_REGISTRY: Dict[str, Type[Generator]] = {}
# The generator the command line and the demo use when none is named.
DEFAULT = "reactface"


def register(cls: Type[Generator]) -> Type[Generator]:
    """Class decorator: make a generator buildable by its ``name``."""
    if not (isinstance(cls, type) and issubclass(cls, Generator)):
        raise TypeError(f"only Generator subclasses can be registered, got {cls!r}")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"a generator named {cls.name!r} is already registered ({_REGISTRY[cls.name].__name__})")
    _REGISTRY[cls.name] = cls
    return cls


def names() -> Tuple[str, ...]:
    """The registered generators' names, the default first."""
    return tuple(sorted(_REGISTRY, key=lambda n: (n != DEFAULT, n)))


def get(name: str) -> Type[Generator]:
    if not isinstance(name, str) or name not in _REGISTRY:   # a list was unhashable, a tensor compared
        raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def make_config(name: str, fields: Dict[str, Any]) -> GeneratorConfig:
    """The config of generator ``name`` from a dict of fields, unknown fields named in the error."""
    cfg_cls = get(name).config_class
    if not isinstance(fields, dict):
        raise TypeError(f"fields must be a dict of {name}'s config fields, got {type(fields).__name__}")
    known = {f.name for f in dataclasses.fields(cfg_cls)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"{name} config has unknown fields {unknown}; known: {sorted(known)}")
    return cfg_cls(**fields)


def build(name: str, config: Optional[Dict[str, Any]] = None, backend: Optional[str] = None) -> Generator:
    """A new generator ``name`` with config fields ``config`` (the rest default)."""
    if config is not None and not isinstance(config, dict):
        raise TypeError(f"config must be a dict of {name}'s config fields or None, got {type(config).__name__}")
    return get(name)(make_config(name, dict(config or {})), backend=backend)


def unwrap(model: nn.Module) -> nn.Module:
    """The generator inside a DistributedDataParallel (or similar ``.module``) wrapper."""
    return getattr(model, "module", model)


def model_name(model: nn.Module) -> str:
    model = unwrap(model)
    for name, cls in _REGISTRY.items():
        if type(model) is cls:
            return name
    raise ValueError(f"{type(model).__name__} is not a registered reactfast generator ({', '.join(sorted(_REGISTRY))})")


def config_of(model: nn.Module) -> Dict[str, Any]:
    check_generator(unwrap(model))
    return unwrap(model).config.to_dict()
