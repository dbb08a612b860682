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
