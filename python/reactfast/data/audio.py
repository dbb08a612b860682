"""Audio for the REACT layout: 16-bit PCM wav reading and MFCC features aligned to video frames.

The challenge baseline computes 78-d MFCC per video frame (13 cepstra, static + delta +
delta-delta, for 2 audio sub-frames per video frame). Here the same quantity comes as k = 2 rows
of 39 values per frame, matching the package's audio convention (k rows per video frame).
"""

from __future__ import annotations

import math
import wave

import numpy as np
import torch

from reactfast.data.files import DataError, _need


def read_wav(path: str) -> tuple:
    """-> (mono float32 samples in [-1, 1], sample rate)."""
    _need(path)
    try:
        with wave.open(path, "rb") as w:
            sr, width, channels, n = w.getframerate(), w.getsampwidth(), w.getnchannels(), w.getnframes()
            raw = w.readframes(n)
    except (wave.Error, EOFError) as exc:
        raise DataError(f"{path}: not a readable PCM wav file ({exc})") from None
    if width != 2:
        raise DataError(f"{path}: only 16-bit PCM wav is supported, got {8 * width}-bit samples")
    x = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    if channels > 1:
        x = x[: len(x) // channels * channels].reshape(-1, channels).mean(1)
    if len(x) == 0:
        raise DataError(f"{path}: no audio samples")
    return x, sr


def _mel_filterbank(n_mels: int, n_fft: int, sr: int) -> torch.Tensor:
    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    mels = np.linspace(hz_to_mel(0.0), hz_to_mel(sr / 2), n_mels + 2)
    hz = 700.0 * (10 ** (mels / 2595.0) - 1.0)
    bins = np.floor((n_fft + 1) * hz / sr).astype(int)
    fb = np.zeros((n_mels, n_fft // 2 + 1), dtype=np.float32)
    for m in range(1, n_mels + 1):
        lo, mid, hi = bins[m - 1], bins[m], bins[m + 1]
        for k in range(lo, mid):
            fb[m - 1, k] = (k - lo) / max(mid - lo, 1)
        for k in range(mid, hi):
            fb[m - 1, k] = (hi - k) / max(hi - mid, 1)
    return torch.from_numpy(fb)


def _deltas(c: torch.Tensor, n: int = 2) -> torch.Tensor:
    padded = torch.cat([c[:1].expand(n, -1), c, c[-1:].expand(n, -1)])
    num = sum(i * (padded[n + i: n + i + len(c)] - padded[n - i: n - i + len(c)]) for i in range(1, n + 1))
    return num / (2 * sum(i * i for i in range(1, n + 1)))


def mfcc(samples: np.ndarray, sr: int, frames: int, fps: int = 25, k: int = 2, n_mfcc: int = 13,
         n_mels: int = 26) -> np.ndarray:
    """MFCC aligned to ``frames`` video frames: (frames * k, 3 * n_mfcc) float32."""
    hop = sr / (fps * k)
    win = int(round(2 * hop))
    n_fft = 1 << max(0, math.ceil(math.log2(win)))
    x = torch.from_numpy(np.asarray(samples, dtype=np.float32))
    need = int(math.ceil(frames * k * hop)) + win
    x = torch.nn.functional.pad(x, (win // 2, max(0, need - len(x))))
    starts = (torch.arange(frames * k, dtype=torch.float64) * hop).round().long()
    segs = x[starts[:, None] + torch.arange(win)[None, :]] * torch.hamming_window(win, periodic=False)
    power = torch.fft.rfft(segs, n=n_fft).abs() ** 2 / n_fft
    logmel = torch.log(power @ _mel_filterbank(n_mels, n_fft, sr).T + 1e-10)
    n = torch.arange(n_mels, dtype=torch.float32)
    dct = torch.cos(math.pi / n_mels * (n[None, :] + 0.5) * torch.arange(n_mfcc, dtype=torch.float32)[:, None])
    dct = dct * math.sqrt(2.0 / n_mels)
    dct[0] /= math.sqrt(2.0)
    c = logmel @ dct.T
    d1 = _deltas(c)
    return torch.cat([c, d1, _deltas(d1)], 1).numpy().astype(np.float32)


def write_wav(path: str, samples: np.ndarray, sr: int) -> None:
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.tobytes())
