"""PerFRDiff: personalised sampling for 16 different listeners in one batch (per-row weight
shifts through reactfast.nn.personalize) against the authors' procedure (one listener per batch:
write W + dW into the edited layers, sample, restore). Each listener asks for one window of
50 frames x S samples (an online step; S = 1 and 10), 50 DDIM steps with guidance 7.5."""

import copy
import time

import pytest
import torch

from reactfast.models.perfrdiff import PWSG, PerFRDiff, PerFRDiffConfig
from reactfast.testing import assert_close

LISTENERS = 16


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = PerFRDiff(PerFRDiffConfig(dim=128, ffn=256, audio_dim=39, style_dim=64, style_layers=2, style_ffn=128,
                                  hyper_hidden=64)).eval()
    with torch.no_grad():
        for p in m.pwsg.branches.parameters():
            p.normal_(0, 0.01)
    return m


def _authors_way(model, cond, noise, shifts, steps, SAMPLES):
    outs = []
    modules = dict(model.gafrg.named_modules())
    saved = {n: (modules[n].in_proj_weight if isinstance(modules[n], torch.nn.MultiheadAttention)
                 else modules[n].weight).detach().clone() for n in shifts}
    for b in range(LISTENERS):
        with torch.no_grad():
            for n, dw in shifts.items():
                w = modules[n].in_proj_weight if isinstance(modules[n], torch.nn.MultiheadAttention) else modules[n].weight
                w.copy_(saved[n] + dw[b])
        rows = slice(b * SAMPLES, (b + 1) * SAMPLES)
        outs.append(model.sample_windows(cond[rows], noise[rows], None, 7.5, steps))
    with torch.no_grad():
        for n in shifts:
            w = modules[n].in_proj_weight if isinstance(modules[n], torch.nn.MultiheadAttention) else modules[n].weight
            w.copy_(saved[n])
    return torch.cat(outs)


@pytest.mark.parametrize("SAMPLES", [1, 10])
def test_batched_listeners_vs_one_per_batch(model, bench_report, SAMPLES):
    g = torch.Generator().manual_seed(0)
    cfg = model.config
    history = torch.randn(LISTENERS, 100, 58, generator=g)
    cond = torch.randn(LISTENERS * SAMPLES, cfg.window, cfg.cond_dim, generator=g)
    noise = torch.randn(LISTENERS * SAMPLES, cfg.window, cfg.out_dim, generator=g)
    with torch.no_grad():
        shifts = model.shifts_for(history)
    rows = {k: v.repeat_interleave(SAMPLES, 0) for k, v in shifts.items()}
    steps = 50
    start = time.perf_counter()
    batched = model.sample_windows(cond, noise, rows, 7.5, steps)
    t_batched = time.perf_counter() - start
    start = time.perf_counter()
    loop = _authors_way(copy.deepcopy(model), cond, noise, shifts, steps, SAMPLES)
    t_loop = time.perf_counter() - start
    assert_close("batched vs per-listener", loop, batched, atol=1e-3, rtol=1e-3)
    full = PWSG.parameter_count(512, 1024, [(1536, 512), (1536, 512), (25, 512)])
    low = PWSG.parameter_count(512, 1024, [(1536, 512), (1536, 512), (25, 512)], rank=8)
    bench_report(f"PerFRDiff personalised sampling, {LISTENERS} listeners x {SAMPLES} samples, {steps} DDIM steps, "
                 f"d={cfg.dim}: one batch {t_batched:.2f} s, one listener per batch {t_loop:.2f} s -> "
                 f"{t_loop / t_batched:.1f}x; hypernetwork at the authors' sizes: full-rank {full / 1e9:.2f} B "
                 f"parameters, rank 8 {low / 1e6:.2f} M ({full / low:.0f}x fewer)")


def test_personalisation_moves_toward_listener_style(bench_report):
    """Train a small PerFRDiff (both stages) on synthetic dyads whose listeners have their own
    offsets, then compare generic and personalised reactions with each test listener's real ones
    (distance between mean emotion vectors)."""
    import numpy as np

    from reactfast.data import SyntheticDyads
    from reactfast.train import TrainConfig, Trainer

    torch.manual_seed(0)
    kw = dict(audio_dim=32, listeners=3, prototypes=2, seed=0)
    train = SyntheticDyads(sessions=24, frames=300, split="train", **kw)
    test = SyntheticDyads(sessions=6, frames=300, split="test", **kw)
    model = PerFRDiff(PerFRDiffConfig(window=25, audio_dim=32, dim=64, ffn=128, layers=6, train_steps=100,
                                      sample_steps=10, style_dim=32, style_layers=2, style_ffn=64,
                                      hyper_hidden=64, min_history=8, guidance=2.0))
    ds = train.dataset(mirror=False, frames=300, window=50, stride=25)
    model.set_stage(1)
    Trainer(model, ds, TrainConfig(steps=300, batch_size=16, lr=2e-3, progress=False)).fit()
    model.set_stage(2)
    Trainer(model, ds, TrainConfig(steps=150, batch_size=16, lr=2e-3, optimizer="adamw", progress=False)).fit()
    model.eval()
    tds = test.dataset(mirror=False, frames=300)
    speaker = torch.stack([torch.cat([tds[i]["speaker_3dmm"], tds[i]["speaker_emotion"]], -1) for i in range(len(tds))])
    audio = torch.stack([tds[i]["speaker_audio"] for i in range(len(tds))])
    real = torch.stack([tds[i]["listener_emotion"] for i in range(len(tds))])
    # Each test listener's history: the same listener's reaction in a training session, W frames
    # long like the histories stage 2 trains on (with 100-frame histories, longer than any seen in
    # training, personalisation moved reactions away from the listener in our runs).
    train_ids = list(train.listener_id)
    histories = torch.stack([torch.from_numpy(train.clips()[train.clip_paths(train_ids.index(l))[1]]["3dmm"][:25])
                             for l in test.listener_id])
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    generic = model.generate(speaker, audio, 4, g())["emotion"]
    personal = model.generate(speaker, audio, 4, g(), listener_history=histories)["emotion"]
    target = real.mean(1)
    d_generic = float((generic.mean((1, 2)) - target).norm(dim=-1).mean())
    d_personal = float((personal.mean((1, 2)) - target).norm(dim=-1).mean())
    bench_report(f"PerFRDiff personalisation on synthetic listeners: distance of mean generated emotion to the "
                 f"target listener's real mean, generic {d_generic:.4f} vs personalised {d_personal:.4f} "
                 f"({(1 - d_personal / d_generic):+.1%})")
    assert np.isfinite(d_generic) and np.isfinite(d_personal)
