import pytest
import torch

from reactfast.data import SyntheticDyads
from reactfast.models import ReactFace, ReactFaceConfig, reactface_loss
from reactfast.online import ReactionStream, StreamClosed, StreamRunner
from reactfast.testing import assert_close


def tiny(device="cpu", **kw):
    base = dict(speaker_dim=25, speaker_inputs="emotion", audio_dim=12, dim=32, heads=4, cie_heads=4, cie_ffn=64,
                window_train=16, window=8, context=32, past=16, dropout=0.0)
    base.update(kw)
    torch.manual_seed(0)
    return ReactFace(ReactFaceConfig(**base)).to(device)


def inputs(B=2, T=37, F=25, A=12, k=2, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, F, generator=g).to(device), torch.randn(B, k * T, A, generator=g).to(device)


def gen(seed, device="cpu"):
    """A torch.Generator on ``device``: the generators accept CUDA generators as well as CPU ones."""
    return torch.Generator(device=device).manual_seed(seed)


def test_config_defaults_are_the_authors():
    cfg = ReactFaceConfig()
    assert (cfg.dim, cfg.heads, cfg.window_train, cfg.window, cfg.period, cfg.momentum) == (128, 8, 64, 8, 8, 0.9)


def test_forward_and_generate_shapes(device):
    model = tiny(device)
    speaker, audio = inputs(device=device)
    out = model(speaker, audio, generator=gen(0, device))
    assert out["3dmm"].shape == (2, 3, 37, 58)        # (B, samples, T, dims)
    assert out["emotion"].shape == (2, 3, 37, 25)
    assert out["speaker_3dmm"].shape == (2, 37, 58)   # one per speaker, shared by its samples
    assert out["mu"].shape == (2, 3, 3, 32)           # ceil(37 / 16) windows
    out = model.eval().generate(speaker, audio, num_samples=4, generator=gen(0, device))
    assert out["3dmm"].shape == (2, 4, 37, 58) and out["emotion"].shape == (2, 4, 37, 25)
    assert out["3dmm"].device.type == device.type


def test_loss_and_gradients(device):
    model = tiny(device)
    speaker, audio = inputs(B=2, T=32, device=device)
    out = model(speaker, audio, generator=gen(0, device))
    targets = torch.randn(2, 3, 32, 58, device=device) * 0.1
    valid = torch.tensor([[True, True, False], [True, False, False]], device=device)
    losses = reactface_loss(model, out, targets, valid, torch.randn(2, 32, 58, device=device) * 0.1,
                            torch.randn(2, 3, 32, 25, device=device))
    losses["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing
    assert set(losses) == {"loss", "rec", "kl", "div", "smooth", "speaker_rec"}


@pytest.mark.parametrize("T", [1, 2, 3])
def test_items_of_one_or_two_frames_have_finite_losses(T):
    """The smoothness term (second differences) averaged over none in items under 3 frames: NaN, so
    `train --clip-frames 1` stopped at its first step as "diverged", advising a lower learning rate."""
    model = tiny()
    speaker, audio = inputs(B=2, T=T)
    out = model(speaker, audio, generator=gen(0))
    losses = reactface_loss(model, out, torch.randn(2, 2, T, 58) * 0.1, torch.ones(2, 2, dtype=torch.bool),
                            torch.randn(2, T, 58) * 0.1, torch.randn(2, 2, T, 25))
    assert all(torch.isfinite(v) for v in losses.values()), losses
    assert (losses["smooth"] > 0) == (T >= 3)
    losses["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_feed_forwards_take_the_fused_sublayer_in_training(monkeypatch):
    """With dropout on, every feed-forward sublayer of the training pass is one fused call (one
    autograd node), whose output is the float64 reference's for the same input, the modules'
    parameters and p and the seeds the generator gave (the state before each call replayed); and the
    pass draws as many seeds as the modules run one by one would (the same generator state after)."""
    from reactfast.models import reactface as module
    from reactfast.ops.dropout import draw_seed
    from reactfast.reference.feed_forward import feed_forward as ref
    from reactfast.testing import assert_rel_close

    model = tiny(dropout=0.2).train()
    speaker, audio = inputs(B=2, T=32)
    calls = []
    fused = module.post_norm_feed_forward

    def spy(first, act, drop, second, norm, x, out_drop=None):
        state = torch.get_rng_state()
        out = fused(first, act, drop, second, norm, x, out_drop)
        calls.append((x.detach().clone(), first, second, norm, drop.p, out_drop.p, state, out))
        return out

    monkeypatch.setattr(module, "post_norm_feed_forward", spy)
    torch.manual_seed(3)
    model(speaker, audio, generator=gen(0))
    after_fused = torch.rand(())
    assert len(calls) > 10
    for i, (x, first, second, norm, p, p_out, state, out) in enumerate(calls):
        assert type(out.grad_fn).__name__ == "_FeedForwardBackward", out.grad_fn
        assert p > 0 and p_out > 0
        torch.set_rng_state(state)
        seeds = draw_seed(), draw_seed()        # the hidden dropout's, then the output's
        params = [t.detach().double() for t in (first.weight, first.bias, second.weight, second.bias, norm.weight,
                                                 norm.bias)]
        assert_rel_close(f"feed-forward {i}", ref(x.double(), *params, norm.eps, p, p_out, *seeds), out, torch.float32)
    monkeypatch.setattr(module, "post_norm_feed_forward", lambda first, act, drop, second, norm, x, out_drop:
                        norm(x + out_drop(second(drop(act(first(x)))))))
    torch.manual_seed(3)
    model(speaker, audio, generator=gen(0))
    assert torch.equal(torch.rand(()), after_fused)


def test_sampling_deterministic_and_diverse(device):
    model = tiny(device).eval()
    speaker, audio = inputs(B=1, T=24, device=device)
    a = model.generate(speaker, audio, 3, gen(5, device))["3dmm"]
    b = model.generate(speaker, audio, 3, gen(5, device))["3dmm"]
    c = model.generate(speaker, audio, 3, gen(6, device))["3dmm"]
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert (a[0, 0] - a[0, 1]).abs().mean() > 1e-4


@pytest.mark.parametrize("chunks", [[37], [8, 8, 8, 8, 5], [3, 11, 1, 22], [0, 8, 0, 29, 0]])
def test_streaming_equals_generate(device, chunks):
    model = tiny(device).eval()
    speaker, audio = inputs(B=1, T=sum(chunks), device=device)
    offline = model.generate(speaker, audio, 4, gen(9, device))
    stream = ReactionStream(model, num_samples=4, generator=gen(9, device))
    pieces, t = [], 0
    for n in chunks:
        pieces.append(stream.push(speaker[0, t:t + n], audio[0, 2 * t:2 * (t + n)]))
        t += n
    pieces.append(stream.flush())
    online = {key: torch.cat([p[key] for p in pieces if key in p], 1) for key in ("3dmm", "emotion")}
    assert stream.frames_out == stream.frames_in == sum(chunks)
    for key in online:
        assert_close(key, offline[key][0], online[key], atol=1e-5, rtol=1e-5)


def _step_loop(model, speaker, audio, noise, W, rows, state=None):
    """The window-by-window steps a stream takes (rows samples per conversation): what ``run`` computes
    offline."""
    G = speaker.shape[0]
    state = state or model.init_state(G * rows, W, speaker.device, conversations=G)
    outs = []
    for i in range(speaker.shape[1] // W):
        out, state = model.step(state, speaker[:, i * W:(i + 1) * W], audio[:, 2 * i * W:2 * (i + 1) * W], noise[i])
        outs.append(out)
    return {key: torch.cat([o[key] for o in outs], 1) for key in ("3dmm", "emotion")}, state


@pytest.mark.parametrize("T", [48, 80])       # within the context (32 frames) after two windows, and well past it
def test_training_pass_equals_the_step_loop(device, T):
    """The offline loop (the whole clip's keys, each window reading its visible ones, and no fusion of
    the fresh state's empty past) against the stream's steps over rolling buffers: outputs and
    gradients, in training mode (dropout 0: the two draw their masks apart)."""
    model = tiny(device, window_train=16).train()
    speaker, audio = inputs(B=2, T=T, device=device)
    noise = torch.randn(T // 16, 6, 32, generator=torch.Generator().manual_seed(2)).to(device)
    weights = {key: torch.randn(2, 3, T, n, device=device) for key, n in (("3dmm", 58), ("emotion", 25))}

    def grads(out):
        model.zero_grad()
        sum((out[key].reshape(2, 3, T, -1) * w).sum() for key, w in weights.items()).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    offline = model.run(speaker, audio, 16, noise, rows=3)
    offline_grads = grads(offline)
    stepped, _ = _step_loop(model, speaker, audio, noise, 16, rows=3)
    stepped_grads = grads(stepped)
    for key in ("3dmm", "emotion"):
        assert_close(key, stepped[key], offline[key], atol=1e-5, rtol=1e-5)
    assert set(offline_grads) == set(stepped_grads)
    for name, g in stepped_grads.items():
        assert_close(name, g, offline_grads[name], atol=1e-4, rtol=1e-4)


def test_run_from_a_given_state_equals_further_steps(device):
    """``run`` continuing a stream's state (its buffers before the clip's keys) against the stream's
    own further steps."""
    model = tiny(device).eval()
    speaker, audio = inputs(B=2, T=72, device=device)
    noise = torch.randn(9, 4, 32, generator=torch.Generator().manual_seed(3)).to(device)
    _, state = _step_loop(model, speaker[:, :40], audio[:, :80], noise[:5], 8, rows=2)
    with torch.no_grad():
        stepped, _ = _step_loop(model, speaker[:, 40:], audio[:, 80:], noise[5:], 8, rows=2, state=state)
        offline = model.run(speaker[:, 40:], audio[:, 80:], 8, noise[5:], rows=2, state=state)
    for key in ("3dmm", "emotion"):
        assert_close(key, stepped[key], offline[key], atol=1e-5, rtol=1e-5)


def test_run_from_a_fresh_state_given(device):
    """A state from ``init_state`` passed with ``fresh=True`` (PFLPosNet's generation) takes the path
    of no state at all, bit for bit; passed as any state, the general path gives the same to 1e-5."""
    model = tiny(device).eval()
    speaker, audio = inputs(B=2, T=40, device=device)
    noise = torch.randn(5, 6, 32, generator=torch.Generator().manual_seed(4)).to(device)
    with torch.no_grad():
        alone = model.run(speaker, audio, 8, noise, rows=3)
        given = model.run(speaker, audio, 8, noise, rows=3, state=model.init_state(6, 8, device, conversations=2),
                          fresh=True)
        general = model.run(speaker, audio, 8, noise, rows=3, state=model.init_state(6, 8, device, conversations=2))
    for key in ("3dmm", "emotion"):
        assert torch.equal(alone[key], given[key])
        assert_close(key, alone[key], general[key], atol=1e-5, rtol=1e-5)


def test_runner_batches_streams_of_different_ages(device):
    model = tiny(device).eval()
    speaker, audio = inputs(B=3, T=48, seed=1, device=device)
    alone, together = [], []
    for s in range(3):
        alone.append(ReactionStream(model, 2, gen(s, device)))
        together.append(ReactionStream(model, 2, gen(s, device)))
    # Stream 0 starts first, stream 1 one window later, stream 2 two windows later.
    out_alone = {i: [] for i in range(3)}
    out_together = {i: [] for i in range(3)}
    runner = StreamRunner(model)
    for step in range(6):
        for i in range(3):
            t = step - i
            if 0 <= t < 6:
                sp, au = speaker[i, 8 * t:8 * t + 8], audio[i, 16 * t:16 * t + 16]
                out_alone[i].append(alone[i].push(sp, au)["3dmm"])
                together[i].feed(sp, au)
        for i, res in enumerate(runner.step(together)):
            if res is not None:
                out_together[i].append(res["3dmm"])
    for i in range(3):
        a = torch.cat(out_alone[i], 1)
        b = torch.cat(out_together[i], 1)
        assert a.shape == b.shape
        assert_close(f"stream {i}", a, b, atol=1e-5, rtol=1e-5)


def test_state_size_is_constant():
    model = tiny().eval()
    stream = ReactionStream(model, 1, torch.Generator().manual_seed(0))
    speaker, audio = inputs(B=1, T=8)
    sizes = None
    for _ in range(20):
        stream.push(speaker[0], audio[0])
        now = {k: tuple(v.shape) for k, v in vars(stream.state).items() if isinstance(v, torch.Tensor)}
        assert sizes is None or now == sizes
        sizes = now


def test_tiny_model_overfits():
    torch.manual_seed(0)
    data = SyntheticDyads(sessions=2, frames=64, audio_dim=12, seed=0)
    ds = data.dataset(mirror=False, frames=64)
    speaker = torch.stack([ds[i]["speaker_emotion"] for i in range(2)])
    audio = torch.stack([ds[i]["speaker_audio"] for i in range(2)])
    target = torch.stack([ds[i]["listener_3dmm"] for i in range(2)])[:, None] * 10
    emotion = torch.stack([ds[i]["listener_emotion"] for i in range(2)])[:, None]
    spk3 = torch.stack([ds[i]["speaker_3dmm"] for i in range(2)])
    model = tiny(window_train=16, div_weight=0.0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    valid = torch.ones(2, 1, dtype=torch.bool)
    history = []
    for it in range(150):
        out = model(speaker, audio, generator=torch.Generator().manual_seed(it), samples=1)
        losses = reactface_loss(model, out, target, valid, spk3, emotion)
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
        history.append(float(losses["rec"]))
    assert min(history[-10:]) < history[0] / 10, (history[0], history[-10:])


@pytest.mark.parametrize("bad,match", [
    (lambda m: m.generate(torch.randn(1, 8, 24), torch.randn(1, 16, 12)), r"speaker must be \(B, T, 25\)"),
    (lambda m: m.generate(torch.randn(1, 8, 25), torch.randn(1, 15, 12)), "2 rows per frame"),
    (lambda m: m.generate(torch.randn(1, 8, 25), torch.randn(1, 16, 11)), r"audio must be \(B, T \* 2, 12\)"),
    (lambda m: m.generate(torch.randn(1, 0, 25), torch.randn(1, 0, 12)), "at least one frame"),
    (lambda m: m.generate(torch.full((1, 8, 25), float("nan")), torch.randn(1, 16, 12)), "speaker contains NaN"),
    (lambda m: m.generate(torch.randn(2, 8, 25), torch.randn(1, 16, 12)), "share the batch size"),
    (lambda m: m.generate(torch.randn(1, 8, 25), torch.randn(1, 16, 12), num_samples=0), "num_samples"),
])
def test_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        bad(tiny().eval())


def test_closed_stream_rejects_input():
    model = tiny().eval()
    stream = ReactionStream(model, 1)
    stream.push(torch.randn(3, 25), torch.randn(6, 12))
    assert stream.flush()["3dmm"].shape == (1, 3, 58)
    with pytest.raises(StreamClosed):
        stream.push(torch.randn(3, 25), torch.randn(6, 12))
    with pytest.raises(ValueError, match="context"):
        ReactFaceConfig(context=8, window=8, window_train=8)
