import copy

import numpy as np
import pytest
import torch

from reactfast.data import SyntheticDyads
from reactfast.models.perfrdiff import PWSG, PerFRDiff, PerFRDiffConfig, supervised_contrastive
from reactfast.online import ReactionStream, StreamRunner
from reactfast.testing import assert_close, assert_rel_close
from reactfast.train import TrainConfig, Trainer


def tiny(**kw):
    base = dict(window=10, audio_dim=6, dim=32, heads=2, ffn=64, layers=6, train_steps=50, sample_steps=5,
                style_dim=16, style_layers=1, style_heads=2, style_ffn=32, hyper_hidden=24, dropout=0.0,
                min_history=4)
    base.update(kw)
    torch.manual_seed(0)
    return PerFRDiff(PerFRDiffConfig(**base))


def inputs(B=2, T=25, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, T, 83, generator=g) * 0.3).to(device), torch.randn(B, 2 * T, 6, generator=g).to(device)


def test_defaults_are_the_authors():
    cfg = PerFRDiffConfig()
    assert (cfg.window, cfg.dim, cfg.heads, cfg.ffn, cfg.layers, cfg.train_steps, cfg.sample_steps) == \
        (50, 512, 4, 1024, 7, 1000, 50)
    assert cfg.guidance == 7.5 and cfg.temperature == 0.07 and cfg.cond_dropout == 0.2


def test_generate_shapes_and_determinism(device):
    model = tiny().eval().to(device)
    speaker, audio = inputs(device=device)
    gen = lambda seed: torch.Generator(device).manual_seed(seed)  # noqa: E731
    a = model.generate(speaker, audio, 3, gen(1))["emotion"]
    b = model.generate(speaker, audio, 3, gen(1))["emotion"]
    c = model.generate(speaker, audio, 3, gen(2))["emotion"]
    assert a.shape == (2, 3, 25, 25)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert (a[0, 0] - a[0, 1]).abs().mean() > 1e-3         # diverse across samples
    assert a.abs().max() <= 1.0                              # x0 clamped
    with pytest.raises(ValueError, match="steps must be an int in"):   # 0 ran config.sample_steps before
        model.generate(speaker, audio, 3, gen(1), steps=0)


def test_zero_shifts_reproduce_generic_model():
    model = tiny().eval()
    x, t, cond = torch.randn(3, 10, 25), torch.tensor([3, 20, 49]), torch.randn(3, 10, model.config.cond_dim)
    zero = {name: torch.zeros(3, *shape) for name, shape in model.pwsg.shapes.items()}
    with torch.no_grad():
        generic, shifted = model(x, t, cond), model(x, t, cond, zero)
    # Equal up to float32 rounding: nn.MultiheadAttention's fused path and the personalised
    # composite (projection + shift, then attention) sum in different orders.
    assert_close("zero shifts", generic, shifted, atol=1e-5, rtol=1e-5)
    # Through the hypernetwork as initialised (zero branches) the shifts are exactly zero too.
    assert all(float(v.detach().abs().max()) == 0 for v in model.shifts_for(torch.randn(3, 12, 58)).values())


def test_personalised_equals_explicit_copies():
    model = tiny().eval()
    history = torch.randn(3, 12, 58)
    with torch.no_grad():
        for p in model.pwsg.branches.parameters():
            p.normal_(0, 0.02)
        shifts = model.shifts_for(history)
    x, t, cond = torch.randn(3, 10, 25), torch.tensor([3, 20, 49]), torch.randn(3, 10, model.config.cond_dim)
    with torch.no_grad():
        out = model.logits(x, t, cond, shifts)
        assert_close("activated", model.gafrg.activate(out), model(x, t, cond, shifts), atol=0, rtol=0)
    for b in range(3):
        g = copy.deepcopy(model.gafrg)
        modules = dict(g.named_modules())
        with torch.no_grad():
            for name, dw in shifts.items():
                m = modules[name]
                (m.in_proj_weight if isinstance(m, torch.nn.MultiheadAttention) else m.weight).add_(dw[b])
            want = g(x[b:b + 1], t[b:b + 1], cond[b:b + 1])
        assert_close(f"listener {b}", want[0], out[b], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("rank", [0, 2])
def test_many_listeners_in_one_batch_equal_one_per_batch(rank):
    """One shift entry per listener, shared by its rows (the guided rows reordered listener-major,
    as generate() batches them), equals per-row shifts and equals sampling each listener alone."""
    model = tiny(shift_rank=rank).eval()
    with torch.no_grad():
        for p in model.pwsg.branches.parameters():
            p.normal_(0, 0.05)
    history = torch.randn(3, 12, 58)
    g = torch.Generator().manual_seed(5)
    cfg = model.config
    cond = torch.randn(3 * 4, cfg.window, cfg.cond_dim, generator=g)
    noise = torch.randn(3 * 4, cfg.window, cfg.out_dim, generator=g)
    with torch.no_grad():
        shifts = model.shifts_for(history)
    batched = model.sample_windows(cond, noise, shifts, 7.5, rows_per_call=24)
    rows = {k: tuple(t.repeat_interleave(4, 0) for t in v) if isinstance(v, tuple) else v.repeat_interleave(4, 0)
            for k, v in shifts.items()}
    assert_close("groups vs rows", model.sample_windows(cond, noise, rows, 7.5), batched, atol=1e-5, rtol=1e-5)
    for b in range(3):
        one = {k: tuple(t[b:b + 1] for t in v) if isinstance(v, tuple) else v[b:b + 1] for k, v in shifts.items()}
        alone = model.sample_windows(cond[4 * b:4 * b + 4], noise[4 * b:4 * b + 4], one, 7.5)
        assert_close(f"listener {b}", alone, batched[4 * b:4 * b + 4], atol=1e-5, rtol=1e-5)
    # Chunks of whole listener groups (CPU default: 64 rows per call) give the same windows.
    for per_call in (1, 8, 17):
        chunked = model.sample_windows(cond, noise, shifts, 7.5, rows_per_call=per_call)
        assert_close(f"rows_per_call={per_call}", batched, chunked, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="rows_per_call must be >= 1"):
        model.sample_windows(cond, noise, shifts, 7.5, rows_per_call=0)
    with pytest.raises(ValueError, match="cannot share 5 listeners"):
        model.sample_windows(cond, noise, {k: (tuple(t[:1].expand(5, *t.shape[1:]) for t in v) if isinstance(v, tuple)
                                               else v[:1].expand(5, *v.shape[1:])) for k, v in shifts.items()}, 7.5)


def test_low_rank_hypernetwork_is_smaller():
    full = tiny()
    low = tiny(shift_rank=2)
    n_full = sum(p.numel() for p in full.pwsg.parameters())
    n_low = sum(p.numel() for p in low.pwsg.parameters())
    shapes = list(full.pwsg.shapes.values())
    assert n_full == PWSG.parameter_count(16, 24, shapes) and n_low == PWSG.parameter_count(16, 24, shapes, 2)
    assert n_low < n_full / 5
    # The authors' sizes: 2 x (1536 x 512) in-projections and the 25 x 512 output projection.
    authors = PWSG.parameter_count(512, 1024, [(1536, 512), (1536, 512), (25, 512)])
    assert 1.5e9 < authors < 1.7e9
    shifts = low.shifts_for(torch.randn(2, 12, 58))
    u, v = shifts["to_emotion_feat"]
    assert u.shape == (2, 25, 2) and v.shape == (2, 32, 2)


def test_streaming_equals_generate():
    model = tiny().eval()
    speaker, audio = inputs(B=1, T=30)
    history = torch.randn(1, 12, 58)
    offline = model.generate(speaker, audio, 2, torch.Generator().manual_seed(3), listener_history=history)
    stream = ReactionStream(model, 2, torch.Generator().manual_seed(3), listener_history=history)
    parts = [stream.push(speaker[0, :7], audio[0, :14]), stream.push(speaker[0, 7:30], audio[0, 14:60])]
    online = torch.cat([p["emotion"] for p in parts], 1)
    assert_close("stream", offline["emotion"][0], online, atol=1e-4, rtol=1e-4)
    # A generic stream and a personalised one batch together; each keeps its own result.
    runner = StreamRunner(model)
    s1 = ReactionStream(model, 2, torch.Generator().manual_seed(3), listener_history=history)
    s2 = ReactionStream(model, 1, torch.Generator().manual_seed(4))
    for s in (s1, s2):
        s.feed(speaker[0, :10], audio[0, :20])
    res = runner.step([s1, s2])
    assert_close("batched", offline["emotion"][0, :, :10], res[0]["emotion"], atol=1e-4, rtol=1e-4)
    alone = model.generate(speaker[:, :10], audio[:, :20], 1, torch.Generator().manual_seed(4))["emotion"]
    assert_close("generic", alone[0], res[1]["emotion"], atol=1e-4, rtol=1e-4)
    # Two listeners' streams with the same sample count batch with one shift entry per listener.
    other = torch.randn(1, 12, 58)
    a = ReactionStream(model, 2, torch.Generator().manual_seed(3), listener_history=history)
    b = ReactionStream(model, 2, torch.Generator().manual_seed(6), listener_history=other)
    assert a.state.rows_per_entry == 2
    joined = type(a.state).cat([a.state, b.state])
    assert joined.rows_per_entry == 2 and joined.split([2, 2])[1].rows_per_entry == 2
    for s in (a, b):
        s.feed(speaker[0, :10], audio[0, :20])
    res = runner.step([a, b])
    assert_close("listener a", offline["emotion"][0, :, :10], res[0]["emotion"], atol=1e-4, rtol=1e-4)
    alone = model.generate(speaker[:, :10], audio[:, :20], 2, torch.Generator().manual_seed(6),
                           listener_history=other)["emotion"]
    assert_close("listener b", alone[0], res[1]["emotion"], atol=1e-4, rtol=1e-4)


def test_condition_window():
    """condition_window="current": streaming equals offline generation, and listener window i
    depends on speaker window i (with "previous" it does not: only window i + 1 changes)."""
    speaker, audio = inputs(B=1, T=30)
    for mode in ("previous", "current"):
        model = tiny(condition_window=mode).eval()
        offline = model.generate(speaker, audio, 2, torch.Generator().manual_seed(3))["emotion"][0]
        stream = ReactionStream(model, 2, torch.Generator().manual_seed(3))
        parts = [stream.push(speaker[0, :13], audio[0, :26]), stream.push(speaker[0, 13:], audio[0, 26:])]
        assert_close(f"stream {mode}", offline, torch.cat([p["emotion"] for p in parts], 1), atol=1e-4, rtol=1e-4)
        edited = speaker.clone()
        edited[:, 10:20] += 1.0                            # speaker window 1 only
        other = model.generate(edited, audio, 2, torch.Generator().manual_seed(3))["emotion"][0]
        changed = [(other[:, w * 10:(w + 1) * 10] - offline[:, w * 10:(w + 1) * 10]).abs().max() > 1e-3
                   for w in range(3)]
        assert changed == ([False, False, True] if mode == "previous" else [False, True, False]), (mode, changed)
    with pytest.raises(ValueError, match="condition_window must be one of"):
        PerFRDiffConfig(condition_window="next")


def test_cond_frames():
    """cond_frames: each query frame also carries its condition frame. With every cross-attention
    silenced the condition reaches the output only through that path."""
    x, t = torch.randn(2, 10, 25), torch.tensor([3, 40])
    for on in (False, True):
        model = tiny(cond_frames=on).eval()
        for layer in model.gafrg.decoder.layers:
            torch.nn.init.zeros_(layer.multihead_attn.out_proj.weight)
        cond = torch.randn(2, 10, model.config.cond_dim)
        a, b = model(x, t, cond), model(x, t, cond + torch.randn_like(cond))
        assert ((a - b).abs().max() > 1e-3) == on, on
    model = tiny(cond_frames=True, condition_window="current").eval()
    speaker, audio = inputs(B=1, T=30)
    offline = model.generate(speaker, audio, 2, torch.Generator().manual_seed(3))["emotion"][0]
    stream = ReactionStream(model, 2, torch.Generator().manual_seed(3))
    parts = [stream.push(speaker[0, :13], audio[0, :26]), stream.push(speaker[0, 13:], audio[0, 26:])]
    assert_close("stream", offline, torch.cat([p["emotion"] for p in parts], 1), atol=1e-4, rtol=1e-4)


def test_shared_window_noise():
    """window_noise="shared": every window of a sample starts from its first window's noise (a
    speaker repeating one window gets the same reaction in every window); streams equal offline
    generation and keep the first draw across pushes and cat/split; noise_scale scales x_T."""
    speaker, audio = inputs(B=1, T=10)
    speaker, audio = speaker.repeat(1, 3, 1), audio.repeat(1, 3, 1)
    shared = tiny(condition_window="current", window_noise="shared").eval()
    out = shared.generate(speaker, audio, 2, torch.Generator().manual_seed(0))["emotion"][0]
    for s in range(2):
        assert_close("window 2", out[s, :10], out[s, 10:20], atol=1e-5, rtol=1e-5)
        assert_close("window 3", out[s, :10], out[s, 20:], atol=1e-5, rtol=1e-5)
    assert (out[0] - out[1]).abs().max() > 1e-3          # samples still differ
    independent = tiny(condition_window="current").eval().generate(speaker, audio, 2,
                                                                    torch.Generator().manual_seed(0))["emotion"][0]
    assert (independent[0, :10] - independent[0, 10:20]).abs().max() > 1e-3
    scaled = tiny(condition_window="current", noise_scale=0.5).eval()
    noise = torch.randn(2, 10, 25)
    cond = shared.condition(speaker[:, :10], audio[:, :20]).expand(2, -1, -1)
    assert_close("noise_scale", shared.sample_windows(cond, 0.5 * noise), scaled.sample_windows(cond, noise),
                 atol=1e-6, rtol=1e-6)
    history = torch.randn(1, 12, 58)
    for mode in ("previous", "current"):
        model = tiny(condition_window=mode, window_noise="shared", noise_scale=0.7).eval()
        sp, au = inputs(B=1, T=30)
        offline = model.generate(sp, au, 2, torch.Generator().manual_seed(3), listener_history=history)["emotion"][0]
        stream = ReactionStream(model, 2, torch.Generator().manual_seed(3), listener_history=history)
        parts = [stream.push(sp[0, :13], au[0, :26]), stream.push(sp[0, 13:], au[0, 26:])]
        assert_close(f"stream {mode}", offline, torch.cat([p["emotion"] for p in parts], 1), atol=1e-4, rtol=1e-4)
    state = shared.init_state(3)
    first = shared.draw_noise(3, torch.Generator().manual_seed(1))
    _, state = shared.step(state, speaker[:, :10].expand(3, -1, -1), audio[:, :20].expand(3, -1, -1), first)
    a, b = state.split([1, 2])
    assert torch.equal(type(state).cat([b, a]).noise, torch.cat([first[1:], first[:1]]))
    mixed = type(state).cat([shared.init_state(1), a])   # a new stream next to a started one
    second = shared.draw_noise(2, torch.Generator().manual_seed(2))
    _, after = shared.step(mixed, speaker[:, :10].expand(2, -1, -1), audio[:, :20].expand(2, -1, -1), second)
    assert torch.equal(after.noise[0], second[0]) and torch.equal(after.noise[1], first[0])
    with pytest.raises(ValueError, match="window_noise must be one of"):
        PerFRDiffConfig(window_noise="per-frame")
    with pytest.raises(ValueError, match="noise_scale must be a finite number > 0"):
        PerFRDiffConfig(noise_scale=-1.0)


def _explicit_copy_logits(model, shifts, listener, x, t, cond):
    """Float64 reference: the GAFRG copied with W + dW of one listener written into its weights."""
    g = copy.deepcopy(model.gafrg).double()
    modules = dict(g.named_modules())
    with torch.no_grad():
        for name, dw in shifts.items():
            dw = dw[0][listener] @ dw[1][listener].t() if isinstance(dw, tuple) else dw[listener]
            m = modules[name]
            (m.in_proj_weight if isinstance(m, torch.nn.MultiheadAttention) else m.weight).add_(dw.double())
        return g(x.double(), t, cond.double())


@pytest.mark.parametrize("rank", [0, 2])
@pytest.mark.parametrize("cond_frames", [False, True])
def test_condition_cache_equals_full_forward(rank, cond_frames):
    """The cached cross-attention keys/values of the condition give the full forward's output,
    with per-listener shifts too (float32 against a float64 explicit-copy reference); sampling
    with the cache equals sampling without it."""
    model = tiny(cond_frames=cond_frames, shift_rank=rank).eval()
    with torch.no_grad():
        for p in model.pwsg.parameters():                 # non-zero shifts
            p.normal_(0, 0.05)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 10, 25, generator=g)
    cond = torch.randn(4, 10, model.config.cond_dim, generator=g)
    t = torch.tensor([1, 7, 20, 49])
    with torch.no_grad():
        shifts = model.shifts_for(torch.randn(2, 12, 58, generator=g))     # 2 listeners x 2 rows
        for sh in (None, shifts):
            full = model.logits(x, t, cond, sh)
            cached = model.logits(x, t, None, sh, model.condition_cache(cond, sh))
            for lo in (0, 2):
                ref = (_explicit_copy_logits(model, sh, lo // 2, x[lo:lo + 2], t[lo:lo + 2], cond[lo:lo + 2])
                       if sh is not None else model.gafrg.double()(x[lo:lo + 2].double(), t[lo:lo + 2],
                                                                   cond[lo:lo + 2].double()))
                model.gafrg.float()
                assert_rel_close("full forward", ref, full[lo:lo + 2], torch.float32)
                assert_rel_close("cached forward", ref, cached[lo:lo + 2], torch.float32)
    noise = torch.randn(4, 10, 25, generator=g)
    for guidance in (None, 2.0):
        a = model.sample_windows(cond, noise, shifts, guidance, cache_condition=False)
        b = model.sample_windows(cond, noise, shifts, guidance, rows_per_call=2)
        assert_close(f"sampled, guidance {guidance}", a, b, atol=1e-5, rtol=1e-5)
    model.train()
    with pytest.raises(RuntimeError, match="training mode"):
        model.logits(x, t, None, None, model.condition_cache(cond))


def test_supervised_contrastive():
    p = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]]), dim=-1)
    good = supervised_contrastive(p, torch.tensor([0, 0, 1, 1]))
    bad = supervised_contrastive(p, torch.tensor([0, 1, 0, 1]))
    assert good < bad


def _train(model, stage, steps, lr, device, optimizer="adamw"):
    data = SyntheticDyads(sessions=12, frames=120, audio_dim=3, listeners=3, prototypes=2, seed=0, split="train")
    ds = data.dataset(frames=120, window=20, stride=10)
    model.set_stage(stage)
    trainer = Trainer(model, ds, TrainConfig(steps=steps, batch_size=8, lr=lr, progress=False, optimizer=optimizer),
                      device=device)
    return trainer.fit(), ds


def test_two_stage_training_and_style_separation(device):
    model = tiny(audio_dim=3)
    history, ds = _train(model, 1, 60, 2e-3, device)
    first = np.mean([h["diffusion"] for h in history[:5]])
    last = np.mean([h["diffusion"] for h in history[-5:]])
    assert last < first, (first, last)
    # PSSL: windows of the same planted listener are closer than windows of different listeners.
    model.eval()
    items = [ds[i] for i in range(0, len(ds), 3)]
    with torch.no_grad():
        p = model.pssl(torch.stack([it["listener_3dmm"] for it in items]).to(device)).cpu()
    ids = torch.tensor([int(it["listener_id"]) for it in items])
    sim = p @ p.t()
    same = (ids[:, None] == ids[None]) & ~torch.eye(len(ids), dtype=torch.bool)
    diff = ids[:, None] != ids[None]
    assert sim[same].mean() > sim[diff].mean()
    frozen = {k: v.clone() for k, v in model.gafrg.state_dict().items()}
    history2, _ = _train(model, 2, 10, 1e-3, device, optimizer="sgd")
    assert all(torch.equal(v, model.gafrg.state_dict()[k]) for k, v in frozen.items())
    assert all(np.isfinite(h["loss"]) for h in history2)


@pytest.mark.parametrize("call,err,match", [
    (lambda m: m.shifts_for(torch.randn(1, 2, 58)), ValueError, "history too short"),
    (lambda m: m.shifts_for(torch.randn(1, 12, 57)), ValueError, "listener history must be"),
    (lambda m: PerFRDiff(PerFRDiffConfig(**{**m.config.__dict__, "edited_layers": ("decoder.nope",)})), ValueError,
     "not layers of the GAFRG"),
    (lambda m: m(torch.randn(2, 10, 25), torch.tensor([1, 2]), torch.randn(2, 10, m.config.cond_dim),
                 {"to_emotion_feat": torch.zeros(2, 25, 31)}), ValueError, r"must have shape \(2, 25, 32\)"),
    (lambda m: m.generate(torch.randn(1, 20, 80), torch.randn(1, 40, 6)), ValueError, "speaker must be"),
    (lambda m: m.generate(torch.randn(1, 20, 83), torch.randn(1, 39, 6)), ValueError, "2 rows per frame"),
    (lambda m: m.set_stage(3), ValueError, r"trains in stages \(1, 2\), got stage 3"),
])
def test_bad_input(call, err, match):
    with pytest.raises(err, match=match):
        call(tiny())


def test_listener_history_is_checked():
    from reactfast.online import ReactionStream

    model = tiny().eval()
    speaker, audio = inputs()
    bad = torch.randn(2, 20, 58)
    bad[1, 3, 7] = float("nan")   # generated silently before
    with pytest.raises(ValueError, match="listener_history contains NaN or Inf"):
        model.generate(speaker, audio, 2, listener_history=bad)
    with pytest.raises(ValueError, match="listener_history contains NaN or Inf"):
        ReactionStream(model, 2, listener_history=bad[1])
    with pytest.raises(TypeError, match="listener_history must be a torch.Tensor"):
        model.generate(speaker, audio, 2, listener_history=bad.tolist())
