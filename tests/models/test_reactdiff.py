import numpy as np
import pytest
import torch

from reactfast.data import SyntheticDyads
from reactfast.models import ReactDiff, ReactDiffConfig
from reactfast.online import ReactionStream
from reactfast.testing import assert_close
from reactfast.train import TrainConfig, Trainer


def tiny(**kw):
    torch.manual_seed(0)
    return ReactDiff(ReactDiffConfig(audio_dim=4, attn_dim=32, heads=2, latent=16, dec_heads=2, dec_ffn=32,
                                     dec_layers=1, window=10, train_steps=8, channels=32, mults=(1, 2, 4, 8),
                                     res_blocks=1, cond_dim=32, ema=0.9, **kw))


def test_defaults_are_the_authors():
    cfg = ReactDiffConfig()
    assert (cfg.attn_dim, cfg.heads, cfg.latent, cfg.window, cfg.train_steps, cfg.channels, cfg.mults) == \
        (1024, 4, 128, 50, 20, 256, (1, 2, 4, 8))


def test_generate_shapes_determinism_diversity(device):
    model = tiny().eval().to(device)
    speaker, audio = torch.rand(2, 23, 25, device=device), torch.randn(2, 46, 4, device=device)
    gen = lambda seed: torch.Generator(device).manual_seed(seed)  # noqa: E731
    a = model.generate(speaker, audio, 3, gen(0))
    b = model.generate(speaker, audio, 3, gen(0))
    c = model.generate(speaker, audio, 3, gen(1))
    assert a["3dmm"].shape == (2, 3, 23, 58) and a["emotion"].shape == (2, 3, 23, 25)
    assert torch.equal(a["emotion"], b["emotion"]) and not torch.equal(a["emotion"], c["emotion"])
    assert (a["emotion"][0, 0] - a["emotion"][0, 1]).abs().mean() > 1e-4


@pytest.mark.parametrize("options", [dict(cond_frames=False), dict(cond_frames=True),
                                     dict(cond_frames=True, window_noise="shared", noise_scale=0.7)])
def test_streaming_equals_generate(options):
    # In float64: with eps prediction, x0 = (x_t - sqrt(1 - ab) eps) / sqrt(ab) magnifies float32
    # rounding at the noisiest step (ab ~ 0), so batch-shape-dependent last-bit differences of the
    # batched matmuls reach ~1e-3 in float32; in float64 the two paths agree to ~1e-11.
    model = tiny(**options).double().eval()
    speaker, audio = torch.rand(1, 30, 25, dtype=torch.float64), torch.randn(1, 60, 4, dtype=torch.float64)
    offline = model.generate(speaker, audio, 2, torch.Generator().manual_seed(5))
    stream = ReactionStream(model, 2, torch.Generator().manual_seed(5))
    parts = [stream.push(speaker[0, :13], audio[0, :26]), stream.push(speaker[0, 13:], audio[0, 26:])]
    for key in ("3dmm", "emotion"):
        assert_close(key, offline[key][0], torch.cat([p[key] for p in parts], 1), atol=1e-8, rtol=1e-8)


def test_shared_window_noise():
    """window_noise="shared": every window of a sample starts from its first window's noise (a
    speaker repeating one window gets the same reaction in every window), and a stream keeps it
    across pushes and across cat/split; "independent" windows differ; noise_scale scales x_T."""
    # float64: eps prediction magnifies the batched matmuls' row-dependent float32 rounding (see above)
    speaker = torch.rand(1, 10, 25, dtype=torch.float64).repeat(1, 3, 1)
    audio = torch.randn(1, 20, 4, dtype=torch.float64).repeat(1, 3, 1)
    shared = tiny(window_noise="shared").double().eval()
    out = shared.generate(speaker, audio, 2, torch.Generator().manual_seed(0))["emotion"][0]
    for s in range(2):
        assert_close("window 2", out[s, :10], out[s, 10:20], atol=1e-9, rtol=1e-9)
        assert_close("window 3", out[s, :10], out[s, 20:], atol=1e-9, rtol=1e-9)
    assert (out[0] - out[1]).abs().max() > 1e-4          # samples still differ
    independent = tiny().double().eval().generate(speaker, audio, 2, torch.Generator().manual_seed(0))["emotion"][0]
    assert (independent[0, :10] - independent[0, 10:20]).abs().max() > 1e-4
    state = shared.init_state(3)
    first = shared.draw_noise(3, torch.Generator().manual_seed(1))
    _, state = shared.step(state, speaker[:, :10].expand(3, -1, -1), audio[:, :20].expand(3, -1, -1), first)
    a, b = state.split([1, 2])
    joined = type(state).cat([b, a])
    assert torch.equal(joined.noise, torch.cat([first[1:], first[:1]]))
    fresh = shared.init_state(1)
    mixed = type(state).cat([fresh, a])                   # a new stream next to a started one
    second = shared.draw_noise(2, torch.Generator().manual_seed(2))
    _, after = shared.step(mixed, speaker[:, :10].expand(2, -1, -1), audio[:, :20].expand(2, -1, -1), second)
    assert torch.equal(after.noise[0], second[0]) and torch.equal(after.noise[1], first[0])
    with pytest.raises(ValueError, match="window_noise must be one of"):
        ReactDiffConfig(window_noise="per-frame")
    with pytest.raises(ValueError, match="noise_scale must be a finite number > 0"):
        ReactDiffConfig(noise_scale=0.0)


@pytest.mark.parametrize("cond_frames", [False, True])
def test_both_stages_train(device, cond_frames):
    model = tiny(cond_frames=cond_frames)
    data = SyntheticDyads(sessions=6, frames=60, audio_dim=4, seed=0, split="train").dataset(frames=60, window=10)
    model.set_stage(1)
    h1 = Trainer(model, data, TrainConfig(steps=40, batch_size=8, lr=3e-3, progress=False), device=device).fit()
    assert np.mean([h["rec"] for h in h1[-5:]]) < 0.5 * np.mean([h["rec"] for h in h1[:5]])
    frozen = {k: v.clone() for k, v in model.mmt.state_dict().items()}
    ema_before = [p.clone() for p in model.ema_unet.parameters()]
    model.set_stage(2)
    h2 = Trainer(model, data, TrainConfig(steps=40, batch_size=8, lr=3e-3, progress=False), device=device).fit()
    assert np.mean([h["rec"] for h in h2[-5:]]) < np.mean([h["rec"] for h in h2[:5]])
    assert all(torch.equal(v, model.mmt.state_dict()[k]) for k, v in frozen.items())
    assert any(not torch.equal(a, b) for a, b in zip(ema_before, model.ema_unet.parameters()))


@pytest.mark.parametrize("call,match", [
    (lambda m: m.generate(torch.rand(1, 20, 24), torch.randn(1, 40, 4)), r"speaker must be \(B, T, 25\)"),
    (lambda m: m.generate(torch.rand(1, 20, 25), torch.randn(1, 39, 4)), "2 rows per frame"),
    (lambda m: m.generate(torch.rand(1, 20, 25), torch.randn(1, 40, 4), num_samples=0), "num_samples"),
    (lambda m: m.set_stage(0), r"trains in stages \(1, 2\), got stage 0"),
    (lambda m: ReactDiffConfig(channels=20), "multiples of norm_groups"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call(tiny())


def test_latent_stats_average_every_batch_and_standardise():
    model = tiny()
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 10, 16, generator=g) * 3 + 1, torch.randn(5, 10, 16, generator=g) * 0.5 - 2
    model._update_latent_stats(a)
    model._update_latent_stats(b)
    both = torch.cat([a, b]).reshape(-1, 16).double()
    mean, std = model.latent_scale()
    assert_close("mean", mean.double(), both.mean(0), atol=1e-5, rtol=1e-5)
    assert_close("std", std.double(), both.std(0, unbiased=False), atol=1e-4, rtol=1e-4)
    assert_close("round trip", model.denormalize(model.normalize(a)), a, atol=1e-4, rtol=1e-5)
    model.config.normalize_latent = False
    assert model.latent_scale() is None and torch.equal(model.normalize(a), a)


def test_speaker_frames_reach_the_denoiser():
    """With ``cond_frames`` the eps prediction depends on each frame of the speaker's latent window
    (through the input convolution, not only through the pooled z_bc); without, the denoiser
    refuses frames, and with, it requires them."""
    model = tiny(cond_frames=True)
    x, t = torch.randn(2, 10, 16), torch.tensor([3, 5])
    z_s = torch.randn(2, 10, 16, requires_grad=True)
    z_bc = model.condition(z_s).detach()
    eps = model(x, t, z_bc, frames=z_s)
    (grad,) = torch.autograd.grad(eps[:, 4].sum(), z_s)
    assert float(grad.abs().sum((0, 2))[4]) > 0
    with pytest.raises(ValueError, match="cond_frames"):
        model(x, t, z_bc)
    with pytest.raises(ValueError, match="cond_frames"):
        tiny()(x, t, z_bc, frames=z_s)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_training_target_is_what_the_sampler_inverts(prediction):
    """The stage-2 target for each prediction type is the output from which the DDIM step recovers
    the clean latent (float64 data; the step's coefficients are float32, hence the 1e-5 relative
    norm: a wrong sign or scale misses by O(1))."""
    model = tiny(prediction=prediction, clip=None).double()
    g = torch.Generator().manual_seed(3)
    x0, noise = torch.randn(4, 10, 16, generator=g, dtype=torch.float64), torch.randn(4, 10, 16, generator=g,
                                                                                      dtype=torch.float64)
    t = torch.tensor([0, 2, 5, 7])
    x_t = model.scheduler.add_noise(x0, noise, t)
    target = model._target(x0, noise, t)
    _, x0_hat = model.scheduler.step(target, t, x_t, t - 1, backend="reference")
    assert float((x0_hat - x0).norm() / x0.norm()) <= 1e-5
    with pytest.raises(ValueError, match="prediction must be one of"):
        ReactDiffConfig(prediction="score")
