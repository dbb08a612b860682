"""Audio features: the baseline's Kaldi MFCC port against torchaudio (where installed) and against the
steps of Kaldi's computation written out for one frame; wav reading."""

import math

import numpy as np
import pytest
import torch

from reactfast.data import audio


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
