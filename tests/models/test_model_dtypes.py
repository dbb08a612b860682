"""Every demo generator cast to another floating dtype (``model.to(torch.bfloat16)``, ``.half()``,
``.double()``) trains, samples and streams in that dtype: no float32 tensor made inside (positional
codes, latent noise) meets its weights. float64 runs every op in float64, the biased attention on
its SDPA path (its C++ and Triton kernels take float32 and half types), and agrees with float32."""

import pytest
import torch

from reactfast import models
from reactfast.data import SyntheticDyads
from reactfast.demo import CLIP_FRAMES, demo_model
from reactfast.online import ReactionStream
from reactfast.train.batches import collate_appropriate


def _batch(model, dtype, device):
    window, stride = model.training_windows(CLIP_FRAMES)
    data = SyntheticDyads(sessions=2, frames=CLIP_FRAMES, audio_dim=8, seed=0, split="train").dataset(
        frames=CLIP_FRAMES, window=window, stride=stride)
    return {k: v.to(device=device, dtype=dtype) if v.is_floating_point() else v.to(device)
            for k, v in collate_appropriate(data, [0, 1], 4).items()}


def _model(name, dtype, device):
    torch.manual_seed(0)
    return demo_model(name, 8).to(device=device, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64], ids=str)
@pytest.mark.parametrize("name", sorted(models.names()))
def test_a_cast_model_trains_samples_and_streams_in_its_dtype(name, dtype, device):
    model = _model(name, dtype, device)
    batch = _batch(model, dtype, device)
    for stage in model.demo_stages(10):
        model.set_stage(stage.stage)
        model.train()
        model.zero_grad(set_to_none=True)
        losses = model.loss(batch, [torch.Generator().manual_seed(i) for i in range(2)])
        losses["loss"].backward()
        assert losses["loss"].dtype == dtype and torch.isfinite(losses["loss"]), f"stage {stage.stage}"
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(g.dtype == dtype for g in grads), f"stage {stage.stage}"
    model.eval()
    speaker, audio = model.inputs_from_batch(batch)
    out = model.generate(speaker, audio, 2, generator=torch.Generator().manual_seed(1))
    assert all(v.dtype == dtype and torch.isfinite(v).all() for v in out.values())
    stream = ReactionStream(model, 2, generator=torch.Generator().manual_seed(1))
    k = audio.shape[1] // speaker.shape[1]
    frames = stream.push(speaker[0, :stream.window], audio[0, :k * stream.window])
    assert frames["emotion"].dtype == dtype and frames["emotion"].shape[1] == stream.window


@pytest.mark.parametrize("name", sorted(models.names()))
def test_float64_agrees_with_float32(name, device):
    outs, losses = {}, {}
    for dtype in (torch.float32, torch.float64):
        model = _model(name, dtype, device)
        batch = _batch(model, dtype, device)
        model.set_stage(model.demo_stages(10)[0].stage)
        model.eval()   # no dropout: the same function in both dtypes
        losses[dtype] = float(model.loss(batch, [torch.Generator().manual_seed(i) for i in range(2)])["loss"].detach())
        speaker, audio = model.inputs_from_batch(batch)
        outs[dtype] = model.generate(speaker, audio, 2, generator=torch.Generator().manual_seed(1))["emotion"]
    assert outs[torch.float64].dtype == torch.float64
    rel = float((outs[torch.float32].double() - outs[torch.float64]).norm() / outs[torch.float64].norm())
    assert rel < 1e-5, rel   # float32's own error against float64 (about 2e-7 measured)
    assert abs(losses[torch.float32] - losses[torch.float64]) <= 1e-5 * abs(losses[torch.float64])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64], ids=str)
def test_trainer_generate_and_checkpoints_follow_a_cast_model(dtype, tmp_path):
    """The trainer feeds a cast model its batches in the model's dtype, generate takes float32
    features as a stream does, and a checkpoint loads in the dtype it was saved in (float32 before:
    a float64 model came back rounded to float32)."""
    from reactfast.train import TrainConfig, Trainer, load_model, save_checkpoint
    from tests.train.helpers import tiny_data, tiny_model

    model = tiny_model().to(dtype)
    data = tiny_data().dataset(frames=64, window=32, stride=32)
    history = Trainer(model, data, TrainConfig(steps=2, batch_size=2, progress=False), device="cpu").fit()
    assert len(history) == 2 and all(torch.isfinite(torch.tensor(h["loss"])) for h in history)
    assert all(p.dtype == dtype for p in model.parameters())
    speaker, audio = torch.randn(1, 20, 83), torch.randn(1, 40, 8)            # float32 features
    assert model.generate(speaker, audio, 2)["emotion"].dtype == dtype
    save_checkpoint(str(tmp_path / "ckpt"), model)
    loaded = load_model(str(tmp_path / "ckpt"))
    assert all(a.dtype == b.dtype and torch.equal(a, b)
               for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
