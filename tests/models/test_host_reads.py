"""A training step of every demo generator reads no value back to the host on the GPU path (#17:
no synchronisation in the hot path). Checked on any device with reactfast.testing's guard, the
ops on their GPU tiers (Triton through the interpreter where there is no GPU). On CPU tensors the
dropout seed is drawn from a CPU generator, which is no GPU synchronisation: the test fixes it."""

import importlib

import pytest
import torch

from reactfast import _backend, models
from reactfast.data import SyntheticDyads
from reactfast.demo import CLIP_FRAMES, demo_model
from reactfast.testing import forbid_host_reads
from reactfast.train.batches import collate_appropriate
from tests.conftest import TRITON_DEVICE


def _small(name):
    def make():
        from tests.models.test_pflposnet import _tiny_pfl
        from tests.models.test_reactface import tiny

        return tiny(window_train=8, context=16, past=8) if name == "reactface" else _tiny_pfl(
            window_train=8, context=16, past=8)
    return make


SMALL = {name: _small(name) for name in ("reactface", "pflposnet")}


@pytest.mark.parametrize("name", sorted(models.names()))
def test_training_step_reads_nothing_back(name, monkeypatch):
    device = torch.device(TRITON_DEVICE)
    torch.manual_seed(0)
    spec = "biased_attention:triton,weight_shift:triton,ddim:triton"
    if name in SMALL:  # the attention's interpreted backward at demo size takes a minute
        model, audio_dim, frames = SMALL[name]().set_backend(spec), 12, 16
    else:
        model, audio_dim, frames = demo_model(name, 8, backend=spec), 8, CLIP_FRAMES
    model = model.to(device)
    model.set_stage(model.demo_stages(10)[0].stage)
    window, stride = model.training_windows(frames)
    data = SyntheticDyads(sessions=2, frames=frames, audio_dim=audio_dim, seed=0, split="train").dataset(
        frames=frames, window=window, stride=stride)
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v
             for k, v in collate_appropriate(data, [0, 1], 4).items()}
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    if device.type == "cpu":
        monkeypatch.setattr(importlib.import_module("reactfast.ops.dropout"), "draw_seed",
                            lambda generator=None: 12345)
    with _backend.graph_safe(), forbid_host_reads():
        losses = model.loss(batch, gens)
        losses["loss"].backward()
    assert torch.isfinite(losses["loss"].detach()).all()
