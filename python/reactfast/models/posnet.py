"""PosNet (PFLPosNet, SPEC 4.4): post-processes the head pose (the last 6 of the 58 3DMM dims)
of each new window from any online generator, leaving every other dim bit-identical.

Encoder Conv1d(6 -> 512, k3), ReLU, Conv1d(512 -> 512, k3), ReLU, average pool over the window;
input to a three-layer MLP 518 -> 512 -> 512 -> W x 6: the last adjusted pose of the previous
window (6) and the encoding (512). The MLP's output is added to the generator's pose (its last
layer starts at zero, so an untrained PosNet changes nothing).

Losses: L_connect = |P_first(new) - P_last(prev)|, L_sm1 = mean |first differences|,
L_sm2 = mean | |d_{t+1}| - |d_t| |, weights 1, 1, 0.2, plus a fidelity term L1(adjusted, raw)
(weight ``fidelity_weight``) standing in for the generator's own loss so the poses stay the
generator's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from reactfast.data import layout
from reactfast.metrics import pose_seam_jump as seam_jump  # noqa: F401  (re-exported)
from reactfast.models.base import check_reals
from reactfast.ops._checks import check_int

POSE = layout.TDMM_POSE


@dataclass
class PosNetConfig:
    window: int = 8
    hidden: int = 512
    connect_weight: float = 1.0
    sm1_weight: float = 1.0
    sm2_weight: float = 0.2
    fidelity_weight: float = 1.0

    def __post_init__(self):
        check_int("PosNetConfig.window", self.window, minimum=2)
        check_int("PosNetConfig.hidden", self.hidden)
        check_reals(self, ("connect_weight", "sm1_weight", "sm2_weight", "fidelity_weight"))


def _check_frames(name: str, x, ndim: int, width: int) -> None:
    """``x`` a floating-point tensor of ``ndim`` dims ending in ``width``, else an error naming it."""
    shape = {2: "(B, {w})", 3: "(B, W, {w})", 4: "(B, n, W, {w})"}[ndim].format(w=width)
    if not isinstance(x, torch.Tensor) or x.dim() != ndim or x.shape[-1] != width or not x.is_floating_point():
        got = f"{x.dtype} shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be {shape}, a floating-point tensor, got {got}")


class PosNet(nn.Module):
    """The head-pose post-processor; ``reactfast.models.pflposnet.PFLPosNet`` pairs it with a
    ReactFace generator, ``PosNetStream`` with any ``ReactionStream``."""

    def __init__(self, config: Optional[PosNetConfig] = None, **overrides):
        super().__init__()
        if config is not None and overrides:
            raise ValueError("pass either a PosNetConfig or keyword overrides, not both")
        cfg = self.config = config or PosNetConfig(**overrides)
        h = cfg.hidden
        self.encoder = nn.Sequential(nn.Conv1d(6, h, 3, padding=1), nn.ReLU(), nn.Conv1d(h, h, 3, padding=1), nn.ReLU())
        self.mlp = nn.Sequential(nn.Linear(h + 6, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(),
                                 nn.Linear(h, cfg.window * 6))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def adjust_pose(self, pose: torch.Tensor, prev_last: torch.Tensor) -> torch.Tensor:
        """pose (B, W, 6), prev_last (B, 6) -> adjusted pose (B, W, 6)."""
        _check_frames("pose", pose, 3, 6)
        B, W, _ = pose.shape
        if W != self.config.window:
            raise ValueError(f"PosNet was built for windows of {self.config.window} frames, got {W}")
        _check_frames("prev_last", prev_last, 2, 6)
        if prev_last.shape[0] != B:
            raise ValueError(f"prev_last must hold the last pose of each of the {B} windows, got shape "
                             f"{tuple(prev_last.shape)}")
        code = self.encoder(pose.transpose(1, 2)).mean(-1)
        return pose + self.mlp(torch.cat([prev_last, code], -1)).reshape(B, W, 6)

    def forward(self, frames: torch.Tensor, prev_last: Optional[torch.Tensor] = None) -> torch.Tensor:
        """frames (B, W, 58) generated 3DMM; prev_last (B, 6) the previous adjusted window's last
        pose (None for the first window: returned unchanged). Only dims 52:58 change."""
        _check_frames("frames", frames, 3, layout.TDMM_DIM)
        if prev_last is None:
            return frames
        out = frames.clone()
        out[..., POSE] = self.adjust_pose(frames[..., POSE], prev_last)
        return out

    @torch.no_grad()
    def adjust_sequence(self, frames: torch.Tensor, prev_last: Optional[torch.Tensor] = None):
        """Adjust a (B, T, 58) sequence window by window (a last partial window is padded with its
        last frame, adjusted, trimmed). Returns (adjusted frames, last adjusted pose (B, 6))."""
        _check_frames("frames", frames, 3, layout.TDMM_DIM)
        if frames.shape[1] == 0:
            return frames, prev_last          # nothing to adjust
        W = self.config.window
        pieces = []
        for lo in range(0, frames.shape[1], W):
            win = frames[:, lo:lo + W]
            m = win.shape[1]
            if m < W:
                win = torch.cat([win, win[:, -1:].expand(-1, W - m, -1)], 1)
            win = self(win, prev_last)[:, :m]
            prev_last = win[:, -1, POSE]
            pieces.append(win)
        return torch.cat(pieces, 1), prev_last

    def loss(self, windows: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Losses over consecutive generated windows (B, n, W, 58): each window is adjusted from the
        previous adjusted window's last pose (the first window is kept as generated)."""
        cfg = self.config
        _check_frames("windows", windows, 4, layout.TDMM_DIM)
        B, n, W, _ = windows.shape
        if not n or W != cfg.window:
            raise ValueError(f"windows must hold at least one window of {cfg.window} frames (B, n, {cfg.window}, "
                             f"{layout.TDMM_DIM}), got shape {tuple(windows.shape)}")
        prev = windows[:, 0, -1, POSE]
        connect = sm1 = sm2 = fidelity = windows.new_zeros(())
        for i in range(1, n):
            raw = windows[:, i, :, POSE]
            adj = self.adjust_pose(raw, prev)
            connect = connect + (adj[:, 0] - prev).abs().mean()
            d = adj[:, 1:] - adj[:, :-1]
            sm1 = sm1 + d.abs().mean()
            sm2 = sm2 + (d[:, 1:].abs() - d[:, :-1].abs()).abs().mean()
            fidelity = fidelity + F.l1_loss(adj, raw)
            prev = adj[:, -1]
        k = max(n - 1, 1)
        total = (cfg.connect_weight * connect + cfg.sm1_weight * sm1 + cfg.sm2_weight * sm2
                 + cfg.fidelity_weight * fidelity) / k
        return {"loss": total, "connect": connect.detach() / k, "sm1": sm1.detach() / k, "sm2": sm2.detach() / k,
                "fidelity": fidelity.detach() / k}


class PosNetStream:
    """Wraps any ``ReactionStream`` whose model outputs 3DMM: every emitted window's head pose is
    adjusted by PosNet from the previous adjusted window's last pose; all other outputs and dims
    pass through unchanged. The generator is not modified."""

    def __init__(self, stream, posnet: PosNet):
        from reactfast.online import ReactionStream

        if not isinstance(stream, ReactionStream):
            raise TypeError(f"stream must be a reactfast.online.ReactionStream, got {type(stream).__name__}")
        if not isinstance(posnet, PosNet):
            raise TypeError(f"posnet must be a PosNet, got {type(posnet).__name__}")
        if "3dmm" not in stream.model.output_widths():
            raise ValueError("PosNet needs a generator that outputs 3DMM (58 dims); this one outputs "
                             f"{sorted(stream.model.output_widths())}")
        if stream.window != posnet.config.window:
            raise ValueError(f"the stream emits windows of {stream.window} frames but PosNet adjusts windows of "
                             f"{posnet.config.window}")
        self.stream, self.posnet = stream, posnet
        self.prev_last: Optional[torch.Tensor] = None

    def _adjust(self, out: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        frames = out.get("3dmm")
        if frames is None or frames.shape[1] == 0:
            return out
        adjusted, self.prev_last = self.posnet.adjust_sequence(frames, self.prev_last)
        return {**out, "3dmm": adjusted}

    def push(self, speaker, audio):
        return self._adjust(self.stream.push(speaker, audio))

    def flush(self):
        return self._adjust(self.stream.flush())
