"""Generated reactions in their valid ranges (SPEC section 1) and diverse at every frame range."""

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reactfast import metrics
from reactfast.data import SyntheticDyads, check_emotion, layout
from reactfast.metrics.io import ranking
from reactfast.models import PerFRDiff, PerFRDiffConfig, ReactDiff, ReactDiffConfig, ReactFace, ReactFaceConfig
from reactfast.models.heads import activate_emotion, emotion_loss, sequence_ccc
from reactfast.models.reactface import appropriate_losses, reactface_loss
from reactfast.train import TrainConfig, Trainer


def reactface(**kw):
    base = dict(speaker_dim=25, speaker_inputs="emotion", audio_dim=12, dim=32, heads=4, cie_heads=4, cie_ffn=64,
                window_train=16, window=8, context=32, past=16, dropout=0.0)
    torch.manual_seed(0)
    return ReactFace(ReactFaceConfig(**{**base, **kw}))


def perfrdiff(**kw):
    base = dict(window=10, audio_dim=12, dim=32, heads=2, ffn=64, layers=6, train_steps=50, sample_steps=5,
                style_dim=16, style_layers=1, style_heads=2, style_ffn=32, hyper_hidden=24, dropout=0.0,
                min_history=4)
    torch.manual_seed(0)
    return PerFRDiff(PerFRDiffConfig(**{**base, **kw}))


def reactdiff(**kw):
    base = dict(audio_dim=12, attn_dim=32, heads=2, latent=16, dec_heads=2, dec_ffn=32, dec_layers=1, window=10,
                channels=32, mults=(1, 2), res_blocks=1, attn_levels=1, cond_dim=32, train_steps=5)
    torch.manual_seed(0)
    return ReactDiff(ReactDiffConfig(**{**base, **kw}))


BUILDERS = {"reactface": reactface, "perfrdiff": perfrdiff, "reactdiff": reactdiff}


def speaker_inputs(model, B=2, T=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    width = {"reactface": 25, "perfrdiff": 83, "reactdiff": 25}[model.name]
    k = model.config.audio_per_frame
    return torch.randn(B, T, width, generator=g) * 2, torch.randn(B, k * T, 12, generator=g) * 2


def blow_up(model, scale=8.0):
    """Weights scaled up so that untrained heads would reach far outside the ranges."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(scale)
    return model


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_untrained_generators_stay_in_range(name):
    model = blow_up(BUILDERS[name]()).eval()
    speaker, audio = speaker_inputs(model)
    kwargs = {"guidance": 7.5} if name == "perfrdiff" else {}
    out = model.generate(speaker, audio, 3, torch.Generator().manual_seed(1), **kwargs)
    emotion = out["emotion"]
    assert torch.isfinite(emotion).all()
    assert check_emotion(emotion) == {}
    # The heads reach the ends of the ranges (the check is not vacuous).
    assert float(emotion[..., layout.VA].abs().max()) > 0.5


def test_perfrdiff_guidance_extrapolates_logits_not_outputs():
    """Guided x0 stays in range at any scale; at scale 1 guidance is the conditional prediction."""
    model = perfrdiff().eval()
    cond = torch.randn(4, 10, model.config.cond_dim)
    noise = torch.randn(4, 10, 25)
    for scale in (1.0, 7.5, 50.0):
        assert check_emotion(model.sample_windows(cond, noise, guidance=scale)) == {}
    assert torch.allclose(model.sample_windows(cond, noise, guidance=1.0), model.sample_windows(cond, noise),
                          atol=1e-6)


def _dyads(window=None):
    return SyntheticDyads(sessions=4, frames=60, audio_dim=12, seed=3, split="train").dataset(frames=60, window=window)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_trained_generators_stay_in_range(name):
    model = BUILDERS[name]()
    window = {"reactface": 32, "perfrdiff": 20, "reactdiff": 10}[name]
    data = _dyads(window)
    for stage in model.stages:
        model.set_stage(stage)
        Trainer(model, data, TrainConfig(steps=15, batch_size=4, lr=3e-3, seed=0, progress=False)).fit()
    whole = _dyads()
    batch = torch.utils.data.default_collate([whole[i] for i in range(4)])
    device = next(model.parameters()).device       # the trainer's: a GPU where there is one
    inputs = [t.to(device) for t in model.inputs_from_batch(batch)]
    out = model.eval().generate(*inputs, 3, torch.Generator(device).manual_seed(0))
    assert torch.isfinite(out["emotion"]).all()
    assert check_emotion(out["emotion"]) == {}


def _segment_spread(latent_noise):
    """Mean spread of ReactFace's samples in each 32-frame segment of a 256-frame reaction."""
    model = reactface(latent_noise=latent_noise).eval()
    speaker, audio = speaker_inputs(model, B=2, T=256)
    out = model.generate(speaker, audio, 6, torch.Generator().manual_seed(2))["3dmm"]      # (B, S, T, 58)
    spread = out.std(1).mean((0, 2))                                                          # (T,)
    return spread.reshape(8, 32).mean(1)


def test_reactface_samples_differ_at_every_frame_range():
    """The stationary latent keeps the samples as far apart late in a reaction as in its first
    windows; the authors' rule (shorter generation windows than training windows) lets them drift
    together, which this measure sees."""
    spread = _segment_spread("stationary")
    assert float(spread.min()) > 0.5 * float(spread[0]), spread
    assert float(spread.min()) > 1e-3, spread
    authors = _segment_spread("authors")
    assert float(authors[-1]) < 0.7 * float(authors[0]), authors


@pytest.mark.parametrize("name", ["perfrdiff", "reactdiff"])
@pytest.mark.parametrize("window_noise", ["independent", "shared"])
def test_diffusion_samples_differ_in_every_window(name, window_noise):
    """Samples of the window-by-window diffusion generators differ in every window, with shared
    window noise (one draw per sample) as with a fresh draw per window."""
    model = BUILDERS[name](window_noise=window_noise).eval()
    speaker, audio = speaker_inputs(model, B=2, T=60)
    out = model.generate(speaker, audio, 4, torch.Generator().manual_seed(2))["emotion"]       # (B, S, T, 25)
    spread = out.std(1).mean((0, 2)).reshape(6, 10).mean(1)                                     # per window
    assert float(spread.min()) > 0.1 * float(spread.max()) and float(spread.min()) > 1e-3, spread


def test_latent_noise_is_validated():
    with pytest.raises(ValueError, match="latent_noise"):
        ReactFaceConfig(latent_noise="white")


def test_sequence_ccc_matches_the_formula():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 50, 4, generator=g, dtype=torch.float64)
    y = torch.randn(3, 50, 4, generator=g, dtype=torch.float64)
    y = y + 0.5 * x
    got = sequence_ccc(x, y)
    for b in range(3):
        for c in range(4):
            a, o = x[b, :, c].numpy(), y[b, :, c].numpy()
            want = 2 * np.mean((a - a.mean()) * (o - o.mean())) / (a.var() + o.var() + (a.mean() - o.mean()) ** 2)
            assert abs(float(got[b, c]) - want) < 1e-7     # eps 1e-8 in the denominator
    assert torch.allclose(sequence_ccc(x, x), torch.ones(3, 4, dtype=torch.float64))


def test_emotion_loss_broadcasts_like_explicit_copies():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 1, 20, 25, generator=g)
    target = activate_emotion(torch.randn(2, 1, 4, 20, 25, generator=g))
    got = emotion_loss(logits, target, va_weight=3.0, ccc_weight=2.0)
    assert got.shape == (2, 3, 4)
    want = emotion_loss(logits.expand(2, 3, 4, 20, 25).contiguous(), target.expand(2, 3, 4, 20, 25).contiguous(),
                        3.0, 2.0)
    assert torch.allclose(got, want, atol=1e-6)
    # The CCC term adds 1 - CCC >= 0 (> 0 for unrelated sequences).
    assert float((emotion_loss(logits, target, ccc_weight=1.0) - emotion_loss(logits, target)).min()) > 0


def test_emotion_loss_equals_the_per_pair_formula():
    """Against each term written out on explicit copies (float64): BCE with logits, smooth L1 of
    tanh, KL(target || softmax), 1 - CCC."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 1, 20, 25, generator=g, dtype=torch.float64)
    target = activate_emotion(torch.randn(2, 1, 4, 20, 25, generator=g, dtype=torch.float64))
    x, t = logits.expand(2, 3, 4, 20, 25), target.expand(2, 3, 4, 20, 25)
    au = F.binary_cross_entropy_with_logits(x[..., :15], t[..., :15], reduction="none").mean((-1, -2))
    va = F.smooth_l1_loss(torch.tanh(x[..., 15:17]), t[..., 15:17], reduction="none").mean((-1, -2))
    p = t[..., 17:] / t[..., 17:].sum(-1, keepdim=True)
    kl = (p * (torch.log(p) - torch.log_softmax(x[..., 17:], -1))).sum(-1).mean(-1)
    ccc = sequence_ccc(activate_emotion(x).contiguous(), t.contiguous()).mean(-1)
    want = au + 3.0 * va + kl + 2.0 * (1 - ccc)
    got = emotion_loss(logits, target, va_weight=3.0, ccc_weight=2.0)
    assert got.shape == (2, 3, 4)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-10)


def test_appropriate_losses_and_coverage():
    """(B, S, K) pair losses equal one-pair calls; coverage adds the mean over valid targets of the
    best sample's loss."""
    model = reactface(coverage_weight=0.0)
    g = torch.Generator().manual_seed(0)
    B, S, K, T = 2, 3, 4, 16
    pred, targets = torch.randn(B, S, T, 58, generator=g), torch.randn(B, K, T, 58, generator=g)
    logits, emo = torch.randn(B, S, T, 25, generator=g), activate_emotion(torch.randn(B, K, T, 25, generator=g))
    pairs = appropriate_losses(pred, targets, 10.0, logits, emo, 1.0, 2.0, 0.5)
    assert pairs.shape == (B, S, K)
    one = appropriate_losses(pred[1:, 2:], targets[1:, 3:], 10.0, logits[1:, 2:], emo[1:, 3:], 1.0, 2.0, 0.5)
    assert torch.allclose(one[0, 0, 0], pairs[1, 2, 3], atol=1e-6)
    valid = torch.tensor([[True, True, False, False], [True, True, True, True]])
    out = {"3dmm": pred, "emotion_logits": logits, "mu": torch.zeros(B, S, 1, 32), "logvar": torch.zeros(B, S, 1, 32),
           "speaker_3dmm": targets[:, 0]}
    base = reactface_loss(model, out, targets, valid, targets[:, 0], emo)
    model.config.coverage_weight = 2.0
    covered = reactface_loss(model, out, targets, valid, targets[:, 0], emo)
    per = appropriate_losses(pred, targets, model.config.pose_weight, logits, emo, model.config.emotion_weight,
                             model.config.va_weight, model.config.ccc_weight).min(1).values
    want = 2.0 * float(per[valid].mean())
    assert abs(float(covered["rec"] - base["rec"]) - want) < 1e-4 * max(1.0, want)


def test_evaluate_warns_with_the_count_of_out_of_range_values():
    g = np.random.default_rng(0)
    N, S, T = 3, 2, 60      # at least FRSyn's 51 frames: shorter clips warn of that
    pred = activate_emotion(torch.as_tensor(g.normal(size=(N, S, T, 25)), dtype=torch.float32)).numpy()
    gt = activate_emotion(torch.as_tensor(g.normal(size=(N, T, 25)), dtype=torch.float32)).numpy()
    appropriate = np.eye(N, dtype=bool)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics.evaluate(pred, gt, gt, appropriate)
    pred[0, 0, :7, 0] = -0.5
    with pytest.warns(RuntimeWarning, match="7 AU below 0"):
        metrics.evaluate(pred, gt, gt, appropriate)


def test_ranking_names_every_shortfall():
    rows = {"ours": {"FRCorr": 1.0, "FRDist": 150.0, "FRDiv": 0.1, "FRDvs": 0.1, "FRVar": 0.1, "FRSyn": 10.0},
            "Mirror": {"FRCorr": 2.0, "FRDist": 160.0, "FRDiv": 0.0, "FRDvs": 0.3, "FRVar": 0.1, "FRSyn": 12.0},
            "Random": {"FRCorr": 0.0, "FRDist": 500.0, "FRDiv": 2.0, "FRDvs": 2.0, "FRVar": 1.0, "FRSyn": 27.0},
            "NN": {"FRCorr": 3.0, "FRDist": 140.0, "FRDiv": 0.2, "FRDvs": 0.3, "FRVar": 0.2, "FRSyn": 9.0}}
    lines = ranking(rows, "ours")
    text = "\n".join(lines)
    assert "FRCorr  (higher is better): NN > Mirror > ours > Random" in text
    shortfalls = [ln.strip() for ln in lines if "does not beat" in ln]
    assert shortfalls == ["ours does not beat Mirror on FRCorr: 1.0000 vs 2.0000",
                          "ours does not beat NN on FRCorr: 1.0000 vs 3.0000",
                          "ours does not beat NN on FRDist: 150.0000 vs 140.0000",
                          "ours does not beat NN on FRDiv: 0.1000 vs 0.2000",
                          "ours does not beat NN on FRSyn: 10.0000 vs 9.0000"]
    rows["ours"].update(FRCorr=4.0, FRDist=100.0, FRDiv=0.3, FRSyn=5.0)
    assert "beats Random, Mirror, NN on every metric compared" in "\n".join(ranking(rows, "ours"))
    with pytest.raises(ValueError, match="model"):
        ranking(rows, "theirs")
