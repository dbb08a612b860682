"""Input checks and window padding shared by the generators."""

from __future__ import annotations

import math

import torch

from reactfast import _backend


def check_speaker_audio(speaker, audio, speaker_dim: int, audio_dim: int, audio_per_frame: int,
                        what: str = "speaker features", name: str = "speaker") -> None:
    """speaker (B, T, speaker_dim) and audio (B, k T, audio_dim), finite, B >= 1, T >= 1; errors name the
    argument."""
    k = audio_per_frame
    for arg, t in ((name, speaker), ("audio", audio)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{arg} must be a torch.Tensor, got {type(t).__name__}"
                            + (" (torch.from_numpy converts an array)" if type(t).__module__ == "numpy" else ""))
        if not t.is_floating_point():
            raise TypeError(f"{arg} must hold floating-point features, got dtype {t.dtype}")
    if speaker.dim() != 3 or speaker.shape[-1] != speaker_dim:
        raise ValueError(f"{name} must be (B, T, {speaker_dim}) {what}, got {tuple(speaker.shape)}")
    if audio.dim() != 3 or audio.shape[-1] != audio_dim:
        raise ValueError(f"audio must be (B, T * {k}, {audio_dim}) features, got {tuple(audio.shape)}")
    if audio.shape[0] != speaker.shape[0]:
        raise ValueError(f"audio and {name} must share the batch size, got {audio.shape[0]} and {speaker.shape[0]}")
    if audio.shape[1] != k * speaker.shape[1]:
        raise ValueError(f"audio must have {k} rows per frame: {speaker.shape[1]} frames need "
                         f"{k * speaker.shape[1]} rows, got {audio.shape[1]}")
    if speaker.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one conversation, got a batch of 0: {tuple(speaker.shape)}")
    if speaker.shape[1] == 0:
        raise ValueError(f"{name} must hold at least one frame")
    if _backend.host_checks_allowed():  # a value check reads back: not while compiling or capturing
        if not bool(torch.isfinite(speaker).all()):
            raise ValueError(f"{name} contains NaN or Inf")
        if not bool(torch.isfinite(audio).all()):
            raise ValueError("audio contains NaN or Inf")


def pad_to_windows(speaker: torch.Tensor, audio: torch.Tensor, window: int, audio_per_frame: int):
    """Pad T up to a multiple of the window by repeating the last frame (and its audio rows).
    Returns (speaker, audio, number of windows)."""
    B, T, _ = speaker.shape
    n = math.ceil(T / window)
    pad = n * window - T
    if pad:
        k = audio_per_frame
        speaker = torch.cat([speaker, speaker[:, -1:].expand(B, pad, -1)], 1)
        audio = torch.cat([audio, audio[:, -k:].repeat(1, pad, 1)], 1)
    return speaker, audio, n
