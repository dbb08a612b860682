"""PFLPosNet (SPEC 4.4) as a generator: an online ReactFace whose every emitted window's head pose
(the last 6 of the 58 3DMM dims) is post-processed by PosNet from the previous window's last
adjusted pose, so poses join smoothly at window seams; expression dims and emotion pass through
bit-identical. The generator itself still sees its own raw output as its past.

Stage 1 trains the ReactFace generator (PosNet, untrained, is the identity); stage 2 trains PosNet
with the generator frozen, on windows the generator produces for the batch's speakers (PosNet's
connection and smoothness losses). Offline ``generate`` and streaming run the same step, so they
agree exactly. PFL, the pose-preserving face crop of the video frames, is
``reactfast.data.pfl`` (``reactfast data crop``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from reactfast import _backend
from reactfast.data import layout
from reactfast.models.base import Generator, TrainStage, check_int, eval_mode, register
from reactfast.models.posnet import PosNet, PosNetConfig, seam_jump
from reactfast.models.reactface import ReactFace, ReactFaceConfig, ReactFaceState


@dataclass
class PFLPosNetConfig(ReactFaceConfig):
    """ReactFace's fields (the generator) and PosNet's, prefixed ``posnet_``; PosNet adjusts
    windows of the generator's inference ``window``."""

    posnet_hidden: int = 512
    posnet_connect_weight: float = 1.0
    posnet_sm1_weight: float = 1.0
    posnet_sm2_weight: float = 0.2
    posnet_fidelity_weight: float = 1.0
    posnet_samples: int = 2

    def __post_init__(self):
        super().__post_init__()
        self.check_at_least(1, "posnet_hidden", "posnet_samples")
        self.check_weights("posnet_connect_weight", "posnet_sm1_weight", "posnet_sm2_weight", "posnet_fidelity_weight")
        if self.window < 2:
            raise ValueError(f"PosNet adjusts windows of at least 2 frames, got window {self.window}")

    def generator_config(self) -> ReactFaceConfig:
        names = {f.name for f in dataclasses.fields(ReactFaceConfig)}
        return ReactFaceConfig(**{k: v for k, v in dataclasses.asdict(self).items() if k in names})

    def posnet_config(self) -> PosNetConfig:
        return PosNetConfig(window=self.window, hidden=self.posnet_hidden, connect_weight=self.posnet_connect_weight,
                            sm1_weight=self.posnet_sm1_weight, sm2_weight=self.posnet_sm2_weight,
                            fidelity_weight=self.posnet_fidelity_weight)


@dataclass
class PFLPosNetState(ReactFaceState):
    pose_last: torch.Tensor = None   # (B, 6) the last adjusted head pose emitted


@register
class PFLPosNet(Generator):
    name = "pflposnet"
    summary = "PFLPosNet: ReactFace with PosNet smoothing the head pose across windows"
    config_class = PFLPosNetConfig
    graph_capturable = True  # tests/online/test_graph.py
    stages = (1, 2)
    stage_names = {1: "the ReactFace generator", 2: "PosNet on the frozen generator's output"}

    def __init__(self, config: Optional[PFLPosNetConfig] = None, backend: Optional[str] = None, **overrides):
        super().__init__(config, backend, **overrides)
        self.generator = ReactFace(self.config.generator_config(), backend=backend)
        self.posnet = PosNet(self.config.posnet_config())

    def trainable_modules(self, stage: int) -> List[nn.Module]:
        return [self.generator] if stage == 1 else [self.posnet]

    def uses_every_parameter(self, frames: Optional[int]) -> bool:
        return self.generator.uses_every_parameter(frames) if self.stage == 1 else True

    @classmethod
    def data_defaults(cls, audio_dim: int):
        return ReactFace.data_defaults(audio_dim)

    def validates_by_loss(self) -> bool:
        # Stage 2 trains PosNet, which moves only the head pose: every REACT metric reads emotion.
        return self.stage == 2

    @classmethod
    def demo_config(cls, audio_dim: int) -> PFLPosNetConfig:
        base = dataclasses.asdict(ReactFace.demo_config(audio_dim))
        return PFLPosNetConfig(**base, posnet_hidden=128)

    def demo_stages(self, steps: int) -> List[TrainStage]:
        # Stage 1 is the ReactFace demo's own recipe, so the generator is trained as that demo's.
        first = dataclasses.replace(self.generator.demo_stages(steps)[0], stage=1)
        return [first, TrainStage(stage=2, steps=max(1, steps // 4), lr=1e-3, batch_size=8)]

    def output_widths(self) -> Dict[str, int]:
        return self.generator.output_widths()

    def check_inputs(self, speaker, audio, name: str = "speaker") -> None:
        self.generator.check_inputs(speaker, audio, name)

    def inputs_from_batch(self, batch):
        return self.generator.inputs_from_batch(batch)

    def draw_noise(self, batch: int, generator: Optional[torch.Generator] = None, window: int = 0) -> torch.Tensor:
        return self.generator.draw_noise(batch, generator, window)

    def init_state(self, batch: int, window: Optional[int] = None, device=None,
                   conversations: Optional[int] = None) -> PFLPosNetState:
        base = self.generator.init_state(batch, window, device, conversations)
        fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(ReactFaceState)}
        return PFLPosNetState(**fields, pose_last=base.prev_frames.new_zeros(batch, 6))

    def adjust(self, frames: torch.Tensor, pose_last: torch.Tensor, has_prev: torch.Tensor) -> torch.Tensor:
        """PosNet over (B, W, 58) frames window by window, each from the previous adjusted pose; rows
        without a previous window (``has_prev`` False) start unadjusted."""
        continued, _ = self.posnet.adjust_sequence(frames, pose_last)
        # The shortcut reads has_prev back: only where the host may (never inside a graph capture).
        if _backend.host_checks_allowed(has_prev) and bool(has_prev.all()):
            return continued
        fresh, _ = self.posnet.adjust_sequence(frames, None)
        return torch.where(has_prev[:, None, None], continued, fresh)

    def _post(self, out, state: PFLPosNetState, new: PFLPosNetState):
        adjusted = self.adjust(out["3dmm"], state.pose_last, state.has_prev)
        return {**out, "3dmm": adjusted}, dataclasses.replace(new, pose_last=adjusted[:, -1, layout.TDMM_POSE])

    def step(self, state: PFLPosNetState, speaker, audio, noise):
        self.check_state(state, PFLPosNetState)
        out, new = self.generator.step(state, speaker, audio, noise)
        return self._post(out, state, new)

    def forward(self, *args, **kwargs):
        """Stage 1: the ReactFace training pass; stage 2: PosNet's losses over windows (B, n, W, 58)."""
        if self.stage == 1:
            return self.generator(*args, **kwargs)
        return self.posnet.loss(*args, **kwargs)

    def loss(self, batch, generators, forward=None) -> Dict[str, torch.Tensor]:
        batch, generators = self.loss_inputs(batch, generators)
        if self.stage == 1:
            # The generator's own losses, through this module's forward (or the one given: compiled, say).
            return self.generator.loss(batch, generators, forward=self if forward is None else forward)
        windows = self._generated_windows(batch, generators)
        out = (self if forward is None else forward)(windows)
        raw = windows.reshape(windows.shape[0], -1, layout.TDMM_DIM)
        return {**out, "rec": out["loss"].detach(), "seam_raw": seam_jump(raw, self.config.window).detach()}

    @torch.no_grad()
    def _generated_windows(self, batch, generators) -> torch.Tensor:
        """The frozen generator's raw 3DMM for the batch's speakers: (B S, n, W, 58)."""
        speaker, audio = self.inputs_from_batch(batch)
        W, S = self.config.window, self.config.posnet_samples
        n = speaker.shape[1] // W
        if n < 2:
            raise ValueError(f"PFLPosNet stage 2 needs items of at least 2 windows ({2 * W} frames), got "
                             f"{speaker.shape[1]}")
        k = self.generator.config.audio_per_frame
        # In eval mode (no dropout); all speakers in one call, each drawing from its own generator
        # (as a call of its own would).
        with eval_mode(self.generator):
            frames = self.generator.generate(speaker[:, : n * W], audio[:, : k * n * W], S, list(generators))["3dmm"]
        return frames.reshape(-1, n, W, layout.TDMM_DIM)

    @torch.no_grad()
    def generate(self, speaker, audio, num_samples: int = 10, generator: Optional[torch.Generator] = None,
                 window: Optional[int] = None) -> Dict[str, torch.Tensor]:
        """As ``ReactFace.generate``, each window's head pose adjusted by PosNet."""
        # The state below is sized from these: shapes and the sample count first (the generator's
        # _generate checks the inputs' values, once).
        with _backend.graph_safe():
            self.check_inputs(speaker, audio)
        check_int("num_samples", num_samples)
        W = self.config.window if window is None else window   # checked by init_state
        state = self.init_state(speaker.shape[0] * num_samples, W, speaker.device, conversations=speaker.shape[0])
        return self.generator._generate(speaker, audio, num_samples, generator, window, post=self._post, state=state,
                                        fresh=True)

    def training_windows(self, clip_frames: int) -> Tuple[int, int]:
        return clip_frames, max(1, clip_frames // 2)
