"""Plots of generated reactions: a speaker's emotion and several generated listener reactions
over time, for chosen emotion channels."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from reactfast.data import layout
from reactfast.ops._checks import check_int, check_path


def plot_reactions(path: str, speaker: np.ndarray, reactions: np.ndarray, channels: Sequence[int] = (15, 16),
                   listener: Optional[np.ndarray] = None, title: str = "", max_reactions: int = 5,
                   fps: int = layout.FPS) -> str:
    """Write a PNG: one panel per channel with the speaker (black), the real listener (grey,
    dashed) and up to ``max_reactions`` generated reactions.

    speaker (T, 25); reactions (S, T, 25); listener (T, 25) or None."""
    check_path("path", path, "be a file path")
    if not isinstance(title, str):
        raise TypeError(f"title must be a str, got {type(title).__name__}")
    if isinstance(channels, (str, bytes)) or not hasattr(channels, "__iter__"):
        raise ValueError(f"channels must be a sequence of channel indices, got {channels!r}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    speaker = np.asarray(speaker)
    reactions = np.asarray(reactions)
    if speaker.ndim != 2 or reactions.ndim != 3 or reactions.shape[1:] != speaker.shape:
        raise ValueError(f"speaker must be (T, D) and reactions (S, T, D), got {speaker.shape} and {reactions.shape}")
    channels = list(channels)
    bad = [c for c in channels if not isinstance(c, (int, np.integer)) or isinstance(c, bool)
           or not 0 <= c < speaker.shape[1]]
    if bad or not channels:
        raise ValueError(f"channels must be indices in [0, {speaker.shape[1]}), got {channels}")
    if listener is not None:
        listener = np.asarray(listener)
        if listener.shape != speaker.shape:
            raise ValueError(f"listener must be (T, D) as speaker {speaker.shape}, got {listener.shape}")
    check_int("max_reactions", max_reactions, minimum=0)
    check_int("fps", fps)
    t = np.arange(speaker.shape[0]) / fps
    fig, axes = plt.subplots(len(channels), 1, figsize=(10, 2.4 * len(channels)), sharex=True, squeeze=False)
    for ax, c in zip(axes[:, 0], channels):
        name = layout.EMOTION_COLUMNS[c] if speaker.shape[1] == layout.EMOTION_DIM else f"dim {c}"
        ax.plot(t, speaker[:, c], color="black", lw=1.5, label="speaker")
        if listener is not None:
            ax.plot(t, listener[:, c], color="grey", ls="--", lw=1.2, label="real listener")
        for i, r in enumerate(reactions[:max_reactions]):
            ax.plot(t, r[:, c], lw=0.9, alpha=0.8, label=f"generated {i + 1}")
        ax.set_ylabel(name)
    axes[0, 0].legend(loc="upper right", fontsize=7, ncol=4)
    axes[-1, 0].set_xlabel("time (s)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    from reactfast import _io

    try:
        _io.atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    finally:
        plt.close(fig)   # also when the write fails: pyplot keeps every open figure
    return path
