"""Every demo generator's training loss under bf16 autocast (what TrainConfig(amp=True) wraps on a
GPU), run here under CPU autocast: the package's custom ops cast their inputs as autocast would, so
float32 rolling buffers next to bf16 projections do not stop the step."""

import pytest
import torch

from reactfast import models
from reactfast.data import SyntheticDyads
from reactfast.demo import CLIP_FRAMES, demo_model
from reactfast.train.batches import collate_appropriate


@pytest.mark.parametrize("name", sorted(models.names()))
def test_training_loss_under_bf16_autocast(name):
    torch.manual_seed(0)
    model = demo_model(name, 8)
    model.set_stage(model.demo_stages(10)[0].stage)
    window, stride = model.training_windows(CLIP_FRAMES)
    data = SyntheticDyads(sessions=2, frames=128, audio_dim=8, seed=0, split="train").dataset(
        frames=128, window=window, stride=stride)
    batch = collate_appropriate(data, [0, 1], 4)
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model.loss(batch, gens)
    assert torch.isfinite(losses["loss"])
    losses["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)


def _rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


def test_perfrdiff_sampling_under_bf16_autocast_against_float64():
    """PerFRDiff's denoiser under bf16 autocast while sampling (its default on CUDA): the samples
    against the same model and noise in float64, by relative norm; float32 for scale."""
    from tests.models.test_perfrdiff import inputs, tiny

    speaker, audio = inputs()
    outs = {}
    for mode in ("bfloat16", "off", "float64"):
        model = tiny(sample_autocast="off" if mode == "float64" else mode).eval()
        args = (speaker, audio) if mode != "float64" else (speaker.double(), audio.double())
        if mode == "float64":
            model = model.double()
        outs[mode] = model.generate(*args, 3, torch.Generator().manual_seed(1))["emotion"]
    assert outs["bfloat16"].dtype == torch.float32
    assert _rel(outs["off"], outs["float64"]) < 1e-5
    assert _rel(outs["bfloat16"], outs["float64"]) < 2e-2
    assert not torch.equal(outs["bfloat16"], outs["off"])  # autocast took effect


def test_sample_autocast_option():
    from reactfast.diffusion import autocast_dtype
    from reactfast.models import PerFRDiffConfig, ReactDiffConfig

    assert autocast_dtype("auto", "cpu") is None and autocast_dtype("auto", "cuda") is torch.bfloat16
    assert autocast_dtype("float16", "cpu") is torch.float16 and autocast_dtype("off", "cuda") is None
    assert PerFRDiffConfig().sample_autocast == "auto" and ReactDiffConfig().sample_autocast == "off"
    for cls in (PerFRDiffConfig, ReactDiffConfig):
        with pytest.raises(ValueError, match="sample_autocast must be one of"):
            cls(sample_autocast="fp8")
