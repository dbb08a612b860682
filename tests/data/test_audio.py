"""Audio features: the baseline's Kaldi MFCC port against torchaudio (where installed) and against the
steps of Kaldi's computation written out for one frame; wav reading."""

import math
import re

import numpy as np
import pytest
import torch

from reactfast.data import DataError, audio


def _signal(sr, seconds, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)


def _kaldi_frame(frame: np.ndarray, sr: float) -> np.ndarray:
    """One frame through Kaldi's MFCC steps (float64, loops): DC removal, raw log energy, pre-emphasis,
    povey window, power spectrum, 23 mel bands, log, DCT, lifter 22, c0 = log energy."""
    x = frame.astype(np.float64) - frame.mean()
    energy = max(math.log(max((x * x).sum(), np.finfo(np.float32).eps)), 0.0)
    x = np.array([x[i] - 0.97 * x[max(i - 1, 0)] for i in range(len(x))])
    n = len(x)
    x *= (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / (n - 1))) ** 0.85
    padded = 1 << (n - 1).bit_length()
    power = np.abs(np.fft.rfft(np.pad(x, (0, padded - n)))) ** 2
    mel = lambda f: 1127.0 * math.log(1 + f / 700.0)  # noqa: E731
    lo, hi = mel(20.0), mel(sr / 2)
    step = (hi - lo) / 24
    bands = np.zeros(23)
    for b in range(23):
        left, center, right = lo + b * step, lo + (b + 1) * step, lo + (b + 2) * step
        for k in range(padded // 2):
            m = mel(k * sr / padded)
            weight = max(0.0, min((m - left) / (center - left), (right - m) / (right - center)))
            bands[b] += weight * power[k]
    logs = np.log(np.maximum(bands, np.finfo(np.float32).eps))
    ceps = np.array([math.sqrt(2 / 23) * sum(logs[j] * math.cos(math.pi / 23 * (j + 0.5) * i) for j in range(23))
                     for i in range(13)])
    ceps[0] = math.sqrt(1 / 23) * logs.sum()
    ceps *= 1 + 11 * np.sin(np.pi * np.arange(13) / 22)
    ceps[0] = energy
    return ceps


@pytest.mark.parametrize("sr", [16000, 44100])
def test_kaldi_port_follows_the_steps(sr):
    x = torch.from_numpy(_signal(sr, 0.05))
    size, shift = int(sr * 0.025), int(sr * 0.010)
    frames = x.unfold(0, size, shift)
    got = audio.kaldi_mfcc(frames, float(sr)).numpy()
    for i in range(len(frames)):
        np.testing.assert_allclose(got[i], _kaldi_frame(frames[i].numpy(), sr), rtol=2e-4, atol=2e-3)


def test_baseline_features_layout():
    sr, T = 44100, 30
    x = _signal(sr, T / 25)
    feats = audio.baseline_features(x, sr, T)
    assert feats.shape == (2 * T, 39) and np.isfinite(feats).all()
    # Row 2 t + s: sub-frame s of video frame t, its 13 static cepstra, then deltas and delta-deltas
    # taken within the frame's two sub-frames.
    chunk = torch.from_numpy(x[5 * 1764:6 * 1764])
    static = audio.kaldi_mfcc(chunk.unfold(0, 1102, 441), float(sr))
    np.testing.assert_allclose(feats[10:12, :13], static.numpy(), rtol=1e-5, atol=1e-5)
    d = audio.compute_deltas(static.T).T
    np.testing.assert_allclose(feats[10:12, 13:26], d.numpy(), rtol=1e-5, atol=1e-5)
    # Short audio is zero-padded to T frames, as the baseline does.
    assert audio.baseline_features(x[: len(x) // 2], sr, T).shape == (2 * T, 39)


def test_baseline_features_equal_torchaudio():
    torchaudio = pytest.importorskip("torchaudio")
    sr, T = 44100, 12
    x = _signal(sr, T / 25, seed=1)
    chunks = torch.from_numpy(x[: 1764 * T]).reshape(T, 1764)
    mfcc = torchaudio.compliance.kaldi.mfcc
    want = torch.stack([mfcc(c[None], sample_frequency=sr, use_energy=True) for c in chunks])
    size, shift = int(sr * 25.0 * 0.001), int(sr * 10.0 * 0.001)
    got = audio.kaldi_mfcc(chunks.unfold(-1, size, shift), float(sr))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    d = torchaudio.functional.compute_deltas(want.transpose(1, 2))
    torch.testing.assert_close(audio.compute_deltas(want.transpose(1, 2)), d, rtol=1e-5, atol=1e-5)


def test_feature_kinds():
    x = _signal(16000, 0.4)
    for kind in audio.FEATURES:
        assert audio.features(x, 16000, 10, kind).shape == (20, 39)
    with pytest.raises(ValueError, match="audio features must be one of"):
        audio.features(x, 16000, 10, "wav2vec")


@pytest.mark.parametrize("kind", audio.FEATURES)
def test_features_name_what_they_cannot_take(kind):
    x = np.zeros(16000, dtype=np.float32)
    for args, words in (((x, 16000, 0), "frames must be an int >= 1, got 0"),     # an MKL FFT error before
                        ((x, 0, 10), "sr must be an int >= 1, got 0"),          # ZeroDivisionError
                        ((np.zeros((16000, 2)), 16000, 10), r"samples must be a 1-D float array .* \(16000, 2\)"),
                        ((np.full(16000, np.nan), 16000, 10), "samples contain NaN or Inf")):   # NaN features
        with pytest.raises(ValueError, match=words):
            audio.features(*args, kind=kind)


def _wav_bytes(payload: bytes, tag: int, channels: int, sr: int, width: int, extensible: bool = False) -> bytes:
    """A wav file written out field by field (the stdlib writes integer PCM, plain format only)."""
    import struct

    block = channels * width
    fmt = struct.pack("<HHIIHH", 0xFFFE if extensible else tag, channels, sr, sr * block, block, 8 * width)
    if extensible:   # cbSize, valid bits, channel mask, sub-format GUID (its first two bytes: the tag)
        fmt += struct.pack("<HHI", 22, 8 * width, 0) + struct.pack("<H", tag) + bytes(14)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"LIST" + struct.pack("<I", 3) + b"abc\0"
    body += b"data" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_wav_files_of_common_sample_formats_read_alike(tmp_path):
    """Only 16-bit integer PCM in the plain format was read (Python 3.11's wave module), though
    24-bit and float wavs, and the extensible format that tools write for them, are common. Each
    format reads to the samples written, within its quantisation; a chunk before the audio (LIST)
    is skipped, stereo is averaged and a file cut short keeps the whole frames it holds."""
    rng = np.random.default_rng(0)
    sr, n = 16000, 1601
    x = np.clip(0.4 * np.sin(2 * np.pi * 440 * np.arange(n) / sr) + 0.1 * rng.standard_normal(n), -1, 1)
    q24 = np.round(x * 2 ** 23).clip(-2 ** 23, 2 ** 23 - 1).astype(np.int64)
    cases = {
        "u8": (_wav_bytes(np.round(x * 127 + 128).astype(np.uint8).tobytes(), 1, 1, sr, 1), 1 / 128),
        "i16": (_wav_bytes(np.round(x * 32767).astype("<i2").tobytes(), 1, 1, sr, 2), 1 / 32768),
        "i24": (_wav_bytes((q24 & 0xFFFFFF).astype("<u4").view(np.uint8).reshape(-1, 4)[:, :3].tobytes(), 1, 1,
                           sr, 3), 1 / 2 ** 23),
        "i24_extensible": (_wav_bytes((q24 & 0xFFFFFF).astype("<u4").view(np.uint8).reshape(-1, 4)[:, :3].tobytes(),
                                      1, 1, sr, 3, extensible=True), 1 / 2 ** 23),
        "i32": (_wav_bytes(np.round(x * (2 ** 31 - 1)).astype("<i4").tobytes(), 1, 1, sr, 4), 2 ** -31),
        "f32": (_wav_bytes(x.astype("<f4").tobytes(), 3, 1, sr, 4), 1e-7),
        "f64_extensible": (_wav_bytes(x.astype("<f8").tobytes(), 3, 1, sr, 8, extensible=True), 1e-15),
        "i16_stereo": (_wav_bytes(np.round(np.stack([x, -x / 2], 1) * 32767).astype("<i2").tobytes(), 1, 2, sr, 2),
                       1 / 32768),
    }
    for name, (raw, tolerance) in cases.items():
        path = str(tmp_path / f"{name}.wav")
        open(path, "wb").write(raw)
        samples, rate = audio.read_wav(path)
        expect = x / 4 if name.endswith("stereo") else x
        assert rate == sr and samples.dtype == np.float32 and samples.shape == (n,), name
        assert np.abs(samples - expect).max() <= 1.5 * tolerance + 1e-7, (name, np.abs(samples - expect).max())
    cut = str(tmp_path / "cut.wav")
    open(cut, "wb").write(cases["i24"][0][:-100])   # its data chunk says 100 bytes more than there are
    assert audio.read_wav(cut)[0].shape == (n - 34,)
    for name, raw, words in (("text.wav", b"hello world, no audio here", "no RIFF/WAVE header"),
                             ("alaw.wav", _wav_bytes(bytes(100), 6, 1, sr, 1), "format tag 0x6 wav of 8-bit"),
                             ("f16.wav", _wav_bytes(bytes(100), 3, 1, sr, 2), "float wav of 16-bit samples"),
                             ("empty.wav", _wav_bytes(b"", 1, 1, sr, 2), "no audio samples")):
        path = str(tmp_path / name)
        open(path, "wb").write(raw)
        with pytest.raises(DataError, match=re.escape(words)):
            audio.read_wav(path)
