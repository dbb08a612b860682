"""Audio for the REACT layout: wav reading (integer PCM or float) and per-frame audio features, as
k = 2 rows per video frame (the package's audio convention).

Two feature sets, both (2 T, 39) for T video frames:

- ``"baseline"`` (the default): the REACT challenge baseline's features. Each video frame's
  1/25 s of audio (the clip padded or cut to T frames) is cut on its own into Kaldi MFCC frames
  (``torchaudio.compliance.kaldi.mfcc`` with its defaults and ``use_energy=True``: 25 ms povey
  windows every 10 ms, snipped edges, so 2 frames; pre-emphasis 0.97, 23 mel bands, 13 cepstra
  with the log energy as c0, lifter 22), and deltas and delta-deltas are taken within those 2
  frames (``torchaudio.functional.compute_deltas``, window 5, edges replicated). The baseline
  flattens them to 78 values per video frame (static, delta, delta-delta x 13 x 2); here row
  2 t + s holds sub-frame s's 13 static, 13 delta and 13 delta-delta values. torchaudio computes
  them where it is installed; elsewhere ``kaldi_mfcc`` below, a port of the same computation
  (the tests compare the two where torchaudio is present).
- ``"reactfast"``: the package's earlier MFCC, a continuous analysis: Hamming windows twice the
  hop (hop = 1/50 s), 26 mel bands, 13 cepstra (c0 from the DCT, no energy, no lifter), deltas and
  delta-deltas over the whole clip. Not the baseline's numbers; kept for models trained with it.
"""

from __future__ import annotations

import math
import struct
import wave

import numpy as np
import torch

from reactfast.data.files import DataError, _need
from reactfast.ops._checks import check_int


_PCM, _IEEE_FLOAT, _EXTENSIBLE = 1, 3, 0xFFFE


def _wav_chunks(raw: memoryview, path: str) -> dict:
    """The chunks of a RIFF/WAVE file by id (the first of each); a chunk cut short by the end of
    the file keeps what is there."""
    if len(raw) < 12 or raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        raise DataError(f"{path}: not a readable wav file (no RIFF/WAVE header)")
    chunks, pos = {}, 12
    while pos + 8 <= len(raw):
        size = int.from_bytes(raw[pos + 4:pos + 8], "little")
        chunks.setdefault(bytes(raw[pos:pos + 4]), raw[pos + 8:pos + 8 + size])
        pos += 8 + size + (size & 1)   # chunks are padded to an even size
    return chunks


def read_wav(path: str) -> tuple:
    """-> (mono float32 samples, sample rate): integer PCM of 8, 16, 24 or 32 bits (in [-1, 1]) or
    32/64-bit IEEE float, in the plain or the extensible wav format; channels are averaged."""
    _need(path)
    with open(path, "rb") as f:
        chunks = _wav_chunks(memoryview(f.read()), path)
    fmt, data = chunks.get(b"fmt "), chunks.get(b"data")
    if fmt is None or len(fmt) < 16 or data is None:
        raise DataError(f"{path}: not a readable wav file (no {'fmt' if fmt is None or len(fmt) < 16 else 'data'} "
                        "chunk)")
    tag, channels, sr, _, block, _ = struct.unpack("<HHIIHH", fmt[:16])
    if tag == _EXTENSIBLE and len(fmt) >= 26:
        tag = struct.unpack("<H", fmt[24:26])[0]   # the sub-format GUID's first two bytes
    if channels < 1 or sr < 1 or block < channels or block % channels:
        raise DataError(f"{path}: not a readable wav file (its header gives {channels} channels, {sr} Hz, "
                        f"{block}-byte frames)")
    width = block // channels                       # the sample container (valid bits are left-justified)
    pcm = {1: ("u1", 128.0, 128), 2: ("<i2", 32768.0, 0), 4: ("<i4", 2.0 ** 31, 0)}
    data = data[: len(data) // block * block]
    if tag == _PCM and width in pcm:
        dtype, scale, offset = pcm[width]   # (float32: one rounding at most, the scales are powers of 2)
        x = np.frombuffer(data, dtype=dtype).astype(np.float32)
        x = (x - offset if offset else x) / np.float32(scale)
    elif tag == _PCM and width == 3:
        b = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        x = ((b[:, 0] | b[:, 1] << 8 | b[:, 2] << 16) << 8 >> 8).astype(np.float32) / np.float32(2 ** 23)
    elif tag == _IEEE_FLOAT and width in (4, 8):
        x = np.frombuffer(data, dtype="<f4" if width == 4 else "<f8").astype(np.float32)
    else:
        kind = {_PCM: "integer PCM", _IEEE_FLOAT: "float"}.get(tag, f"format tag {tag:#x}")
        raise DataError(f"{path}: {kind} wav of {8 * width}-bit samples is not supported (integer PCM of 8, 16, 24 "
                        "or 32 bits and 32/64-bit float are)")
    if channels > 1:
        x = x.reshape(-1, channels).mean(1)
    if len(x) == 0:
        raise DataError(f"{path}: no audio samples")
    return x.astype(np.float32, copy=False), sr


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


FEATURES = ("baseline", "reactfast")


def _checked_samples(samples, sr, frames) -> np.ndarray:
    """``samples`` as a 1-D finite float32 array, after checking ``sr`` and ``frames`` (errors name them)."""
    check_int("sr", sr)
    check_int("frames", frames)
    x = np.asarray(samples)
    if x.ndim != 1 or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"samples must be a 1-D float array of mono audio in [-1, 1] (read_wav gives one), got "
                         f"shape {x.shape} and dtype {x.dtype}")
    if not np.isfinite(x).all():
        raise ValueError("samples contain NaN or Inf")
    return x.astype(np.float32, copy=False)


def features(samples: np.ndarray, sr: int, frames: int, kind: str = "baseline") -> np.ndarray:
    """(2 frames, 39) float32 audio features of ``kind`` (see the module docstring)."""
    if not isinstance(kind, str) or kind not in FEATURES:
        raise ValueError(f"audio features must be one of {FEATURES}, got {kind!r}")
    return baseline_features(samples, sr, frames) if kind == "baseline" else mfcc(samples, sr, frames)


def _kaldi_window_frames(x: torch.Tensor, size: int, shift: int) -> torch.Tensor:
    """(..., N) -> (..., m, size) frames with snipped edges (Kaldi's snip_edges=True)."""
    n = x.shape[-1]
    if n < size:
        return x.new_zeros(*x.shape[:-1], 0, size)
    m = 1 + (n - size) // shift
    return x.unfold(-1, size, shift)[..., :m, :]


def _mel_banks(num_bins: int, padded: int, sr: float, low: float = 20.0, high: float = 0.0) -> torch.Tensor:
    """Kaldi's triangular mel filters over the FFT bins, (num_bins, padded // 2 + 1) float32, computed
    in the same precision as torchaudio computes them."""
    nyquist = 0.5 * sr
    high = high + nyquist if high <= 0.0 else high
    fft_bin_width = sr / padded
    mel_low, mel_high = 1127.0 * math.log(1.0 + low / 700.0), 1127.0 * math.log(1.0 + high / 700.0)
    delta = (mel_high - mel_low) / (num_bins + 1)
    b = torch.arange(num_bins)[:, None]
    left, center, right = mel_low + b * delta, mel_low + (b + 1.0) * delta, mel_low + (b + 2.0) * delta
    bins = (1127.0 * (1.0 + fft_bin_width * torch.arange(float(padded // 2)) / 700.0).log())[None]
    up, down = (bins - left) / (center - left), (right - bins) / (right - center)
    banks = torch.max(torch.zeros(1), torch.min(up, down))
    return torch.nn.functional.pad(banks, (0, 1))


def kaldi_mfcc(frames: torch.Tensor, sr: float, num_ceps: int = 13, num_mel_bins: int = 23, lifter: float = 22.0,
               preemphasis: float = 0.97, energy_floor: float = 1.0) -> torch.Tensor:
    """Kaldi MFCC with ``use_energy=True`` (c0 replaced by the raw log energy) of windowed frames
    (..., m, window) float32 -> (..., m, num_ceps): the computation of
    ``torchaudio.compliance.kaldi.mfcc`` with its defaults, frame by frame."""
    eps = torch.tensor(torch.finfo(torch.float32).eps, dtype=frames.dtype)
    size = frames.shape[-1]
    padded = 1 << (size - 1).bit_length()
    x = frames - frames.mean(-1, keepdim=True)
    log_energy = torch.maximum(x.pow(2).sum(-1), eps).log()
    if energy_floor != 0.0:
        log_energy = torch.clamp(log_energy, min=math.log(energy_floor))
    previous = torch.cat([x[..., :1], x[..., :-1]], -1)
    x = (x - preemphasis * previous) * torch.hann_window(size, periodic=False, dtype=x.dtype).pow(0.85)
    power = torch.fft.rfft(torch.nn.functional.pad(x, (0, padded - size))).abs().pow(2.0)
    mel = torch.maximum(power @ _mel_banks(num_mel_bins, padded, sr).to(x.dtype).T, eps).log()
    n = torch.arange(float(num_mel_bins))
    dct = torch.cos(math.pi / num_mel_bins * (n[:, None] + 0.5) * torch.arange(float(num_ceps))[None])
    dct = dct * math.sqrt(2.0 / num_mel_bins)
    dct[:, 0] = math.sqrt(1.0 / num_mel_bins)
    ceps = mel @ dct.to(x.dtype)
    ceps = ceps * (1.0 + 0.5 * lifter * torch.sin(math.pi * torch.arange(num_ceps) / lifter)).to(x.dtype)
    ceps[..., 0] = log_energy
    return ceps


def compute_deltas(x: torch.Tensor, win_length: int = 5) -> torch.Tensor:
    """Deltas along the last (time) axis with edges replicated, as torchaudio computes them."""
    n = (win_length - 1) // 2
    denom = n * (n + 1) * (2 * n + 1) / 3
    padded = torch.cat([x[..., :1].expand(*x.shape[:-1], n), x, x[..., -1:].expand(*x.shape[:-1], n)], -1)
    T = x.shape[-1]
    return sum(i * padded[..., n + i: n + i + T] for i in range(-n, n + 1)) / denom


def baseline_features(samples: np.ndarray, sr: int, frames: int, fps: int = 25) -> np.ndarray:
    """The REACT baseline's audio features of ``frames`` video frames as (2 frames, 39) float32
    (see the module docstring); torchaudio computes them where it is installed."""
    x = torch.from_numpy(_checked_samples(samples, sr, frames))
    per_frame = int(sr / check_int("fps", fps))
    need = per_frame * frames
    x = x[:need] if len(x) >= need else torch.nn.functional.pad(x, (0, need - len(x)))
    chunks = x.reshape(frames, per_frame)
    try:
        import torchaudio
    except ImportError:
        torchaudio = None
    if torchaudio is not None:
        static = torch.stack([torchaudio.compliance.kaldi.mfcc(c[None], sample_frequency=sr, use_energy=True)
                              for c in chunks]).transpose(1, 2)                        # (T, 13, m)
        d1 = torchaudio.functional.compute_deltas(static)
        d2 = torchaudio.functional.compute_deltas(d1)
    else:
        size, shift = int(sr * 25.0 * 0.001), int(sr * 10.0 * 0.001)
        static = kaldi_mfcc(_kaldi_window_frames(chunks, size, shift), float(sr)).transpose(1, 2)
        d1 = compute_deltas(static)
        d2 = compute_deltas(d1)
    if static.shape[-1] != 2:
        raise DataError(f"audio at {sr} Hz gives {static.shape[-1]} MFCC frames per video frame, not the baseline's 2")
    rows = torch.stack([static, d1, d2], 1)                                            # (T, 3, 13, 2)
    return rows.permute(0, 3, 1, 2).reshape(2 * frames, 39).numpy().astype(np.float32)


def mfcc(samples: np.ndarray, sr: int, frames: int, fps: int = 25, k: int = 2, n_mfcc: int = 13,
         n_mels: int = 26) -> np.ndarray:
    """The package's own MFCC aligned to ``frames`` video frames: (frames * k, 3 * n_mfcc) float32
    (``"reactfast"`` features; not the baseline's)."""
    x = torch.from_numpy(_checked_samples(samples, sr, frames))
    for name, value in (("fps", fps), ("k", k), ("n_mfcc", n_mfcc), ("n_mels", n_mels)):
        check_int(name, value)
    if n_mfcc > n_mels:
        raise ValueError(f"n_mfcc ({n_mfcc}) must be at most n_mels ({n_mels}): the cepstrum has n_mels coefficients")
    hop = sr / (fps * k)
    win = int(round(2 * hop))
    n_fft = 1 << max(0, math.ceil(math.log2(win)))
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
