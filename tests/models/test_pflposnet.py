import pytest
import torch

from reactfast.data.pfl import crop_video, crop_window
from reactfast.models import ReactFace, ReactFaceConfig
from reactfast.models.posnet import PosNet, PosNetStream, seam_jump
from reactfast.online import ReactionStream


def test_crop_window_formula():
    boxes = [(100, 100, 50, 60), (110, 90, 50, 60)]
    # centre (105, 95); w_c = 135 - 75 = 60; h_c = 130 - 60 = 70
    assert crop_window(boxes) == (75, 60, 60, 70)
    assert crop_window(boxes, omega=(40, 50)) == (85, 70, 40, 50)


def test_crop_window_at_the_frame_border():
    boxes = [(95, 10, 20, 20), (90, 12, 20, 20)]
    # unclipped: centre (92.5, 11), 25 x 22 -> left 80, top 0 (round(-0)); clipped into a 100 x 100 frame
    left, top, w, h = crop_window(boxes, frame_size=(100, 100))
    assert (w, h) == (25, 22) and left + w <= 100 and top >= 0
    assert (left, top) == (75, 0)
    # a window larger than the frame is reduced to the frame
    assert crop_window([(50, 50, 300, 300)], frame_size=(120, 100)) == (0, 0, 100, 120)


def test_crop_video_shapes_and_content():
    video = torch.arange(3 * 2 * 20 * 30, dtype=torch.float32).reshape(3, 2, 20, 30)
    boxes = [(10, 10, 8, 6)] * 3
    out = crop_video(video, boxes)
    left, top, w, h = crop_window(boxes, frame_size=(20, 30))
    assert out.shape == (3, 2, h, w)
    assert torch.equal(out, video[..., top:top + h, left:left + w])
    batch = torch.stack([video, video])
    both = crop_video(batch, [boxes, [(20, 12, 10, 10)] * 3], out_size=(16, 16))
    assert both.shape == (2, 3, 2, 16, 16)
    with pytest.raises(ValueError, match="pass out_size"):
        crop_video(batch, [boxes, [(20, 12, 10, 10)] * 3])


@pytest.mark.parametrize("bad,match", [
    ([(1, 2, 3)], r"shape \(T, 4\)"), ([(1, 2, 0, 3)], "positive width"), ([(float("nan"), 1, 2, 3)], "NaN"),
])
def test_crop_window_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        crop_window(bad)


def _jumpy(B, n, W, seed):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n * W, dtype=torch.float32)
    pose = torch.sin(t / 7.0)[None, :, None] * torch.rand(B, 1, 6, generator=g)
    offsets = torch.randn(B, n, 1, 6, generator=g).mul(0.3).expand(B, n, W, 6).reshape(B, n * W, 6)
    frames = torch.randn(B, n * W, 58, generator=g)
    frames[..., 52:] = pose + offsets
    return frames


def test_posnet_reduces_seam_jumps_and_keeps_expressions():
    torch.manual_seed(0)
    W, n = 8, 6
    posnet = PosNet(window=W, hidden=64)
    train = _jumpy(64, n, W, 0).reshape(64, n, W, 58)
    opt = torch.optim.Adam(posnet.parameters(), lr=3e-3)
    for _ in range(150):
        loss = posnet.loss(train)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    test = _jumpy(16, n, W, 1)
    adjusted, _ = posnet.adjust_sequence(test)
    assert torch.equal(adjusted[..., :52], test[..., :52])          # expression dims bit-identical
    before, after = float(seam_jump(test, W)), float(seam_jump(adjusted, W))
    assert after < 0.7 * before, (before, after)


def test_untrained_posnet_is_identity_and_wraps_a_stream():
    model = ReactFace(ReactFaceConfig(speaker_dim=25, speaker_inputs="emotion", audio_dim=12, dim=32, heads=4,
                                      cie_heads=4, cie_ffn=64, window_train=16, window=8, context=32, past=16,
                                      dropout=0.0)).eval()
    speaker, audio = torch.randn(20, 25), torch.randn(40, 12)
    plain = ReactionStream(model, 2, torch.Generator().manual_seed(0))
    wrapped = PosNetStream(ReactionStream(model, 2, torch.Generator().manual_seed(0)), PosNet(window=8, hidden=32))
    a = torch.cat([plain.push(speaker, audio)["3dmm"], plain.flush()["3dmm"]], 1)
    b = torch.cat([wrapped.push(speaker, audio)["3dmm"], wrapped.flush()["3dmm"]], 1)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="windows of 8 frames but PosNet adjusts windows of 10"):
        PosNetStream(ReactionStream(model, 1), PosNet(window=10, hidden=8))
    with pytest.raises(ValueError, match=r"frames must be \(B, W, 58\)"):
        PosNet(window=8, hidden=8)(torch.randn(1, 8, 57), torch.zeros(1, 6))


def _tiny_pfl(**kw):
    from reactfast.models import PFLPosNet

    torch.manual_seed(0)
    base = dict(speaker_dim=25, speaker_inputs="emotion", audio_dim=12, dim=32, heads=4, cie_heads=4, cie_ffn=64,
                window_train=16, window=8, context=32, past=16, dropout=0.0, posnet_hidden=32)
    base.update(kw)
    return PFLPosNet(**base)


def test_pflposnet_streaming_equals_generate_and_keeps_expressions():
    model = _tiny_pfl().eval()
    with torch.no_grad():  # a PosNet that changes the pose
        model.posnet.mlp[-1].weight.normal_(0, 0.05)
    speaker, audio = torch.randn(1, 29, 25), torch.randn(1, 58, 12)
    offline = model.generate(speaker, audio, 3, torch.Generator().manual_seed(4))
    raw = model.generator.generate(speaker, audio, 3, torch.Generator().manual_seed(4))
    assert torch.equal(offline["3dmm"][..., :52], raw["3dmm"][..., :52])
    assert torch.equal(offline["emotion"], raw["emotion"])
    assert not torch.equal(offline["3dmm"][..., 52:], raw["3dmm"][..., 52:])
    assert torch.equal(offline["3dmm"][:, :, :8], raw["3dmm"][:, :, :8])   # the first window is kept
    stream = ReactionStream(model, 3, torch.Generator().manual_seed(4))
    pieces = [stream.push(speaker[0, :13], audio[0, :26]), stream.push(speaker[0, 13:], audio[0, 26:]),
              stream.flush()]
    online = torch.cat([p["3dmm"] for p in pieces], 1)
    assert torch.allclose(online, offline["3dmm"][0], atol=1e-5)
    with pytest.raises(ValueError, match="window must be an int >= 1"):
        model.generate(speaker, audio, 3, window=0)


def test_pflposnet_stage_two_trains_posnet_only():
    from reactfast.train import TrainConfig, Trainer
    from tests.train.helpers import tiny_data

    model = _tiny_pfl(speaker_dim=83, speaker_inputs="emotion+3dmm", audio_dim=8, window=8)
    model.set_stage(2)
    frozen = {k: v.clone() for k, v in model.generator.state_dict().items()}
    data = tiny_data().dataset(frames=64, window=32, stride=32)
    history = Trainer(model, data, TrainConfig(steps=3, batch_size=2, lr=1e-3, progress=False)).fit()
    # The trainer moved the model to its device (a GPU where there is one).
    assert all(torch.equal(v, model.generator.state_dict()[k].cpu()) for k, v in frozen.items())
    assert float(model.posnet.mlp[-1].weight.detach().abs().sum()) > 0
    assert {"loss", "connect", "seam_raw"} <= set(history[-1])


def test_pflposnet_stage_two_restores_the_generators_modes_when_generation_fails(monkeypatch):
    from reactfast.train.trainer import collate_appropriate
    from tests.train.helpers import tiny_data

    model = _tiny_pfl(speaker_dim=83, speaker_inputs="emotion+3dmm", audio_dim=8, window=8)
    model.set_stage(2)
    model.train()
    model.generator.speaker_proj.eval()          # a mixed set of modes, kept as they were
    modes = [m.training for m in model.generator.modules()]
    data = tiny_data().dataset(frames=64, window=32, stride=32)
    batch = collate_appropriate(data, [0, 1], 4)

    def fails(*args, **kwargs):
        assert not model.generator.training      # generated in eval mode
        raise RuntimeError("out of memory")

    monkeypatch.setattr(model.generator, "generate", fails)
    with pytest.raises(RuntimeError, match="out of memory"):
        model.loss(batch, [torch.Generator().manual_seed(i) for i in range(2)])
    assert [m.training for m in model.generator.modules()] == modes


def test_pflposnet_demo_trains_the_reactface_demo_generator():
    """Stage 1 of the PFLPosNet demo is the ReactFace demo's recipe (its generator is that demo's
    ReactFace; the two once drifted apart, lr 1e-3 against 2e-3)."""
    model = _tiny_pfl()
    first, second = model.demo_stages(500)
    reactface = model.generator.demo_stages(500)[0]
    assert (first.stage, first.steps, first.lr, first.batch_size, first.optimizer, first.lr_schedule) == \
        (1, reactface.steps, reactface.lr, reactface.batch_size, reactface.optimizer, reactface.lr_schedule)
    assert second.stage == 2
