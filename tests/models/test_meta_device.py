"""Every demo generator's training losses (each demo stage), sampling and online streams on the meta
device: tensors with shapes and no values. An op given tensors on two devices raises there as on
a GPU, and reading a value raises too, so a CPU-only machine catches what the GPU path hit on its
first run (a tensor made on the CPU beside CUDA ones, #14) and value-dependent shapes (a host sync
on a GPU), which a CPU run cannot show. Host-side input checks are skipped as they are for CUDA
tensors (``_backend.graph_safe``)."""

import dataclasses

import pytest
import torch

from reactfast import _backend, models
from reactfast.data import SyntheticDyads
from reactfast.demo import CLIP_FRAMES
from reactfast.online import ReactionStream, StreamRunner
from reactfast.train.batches import collate_appropriate

META = torch.device("meta")
# Fewer denoising steps: meta tensors skip the arithmetic, not the per-op dispatch.
FEW_STEPS = {"perfrdiff": {"sample_steps": 2}, "reactdiff": {"train_steps": 2}}


def _model_and_batch(name):
    torch.manual_seed(0)
    cls = models.get(name)
    model = cls(dataclasses.replace(cls.demo_config(8), **FEW_STEPS.get(name, {})))
    stages = model.demo_stages(10)
    model.set_stage(stages[0].stage)
    window, stride = model.training_windows(CLIP_FRAMES)
    data = SyntheticDyads(sessions=2, frames=CLIP_FRAMES, audio_dim=8, seed=0, split="train").dataset(
        frames=CLIP_FRAMES, window=window, stride=stride)
    batch = {k: v.to(META) if isinstance(v, torch.Tensor) else v
             for k, v in collate_appropriate(data, [0, 1], 4).items()}
    return model.to(META), stages, batch


def _on_meta(tensors):
    return all(t.device == META for t in tensors.values())


@pytest.mark.parametrize("name", sorted(models.names()))
def test_training_losses_on_meta(name):
    model, stages, batch = _model_and_batch(name)
    for stage in stages:
        model.set_stage(stage.stage)
        model.train()
        model.zero_grad(set_to_none=True)
        with _backend.graph_safe():
            losses = model.loss(batch, [torch.Generator().manual_seed(i) for i in range(2)])
            losses["loss"].backward()
        assert losses["loss"].device == META
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert grads and all(g is not None and g.device == META for g in grads), f"stage {stage.stage}"


@pytest.mark.parametrize("name", sorted(models.names()))
def test_generation_and_streams_on_meta(name):
    model, _, batch = _model_and_batch(name)
    model.eval()
    speaker, audio = model.inputs_from_batch(batch)
    k = audio.shape[1] // speaker.shape[1]
    with _backend.graph_safe():
        out = model.generate(speaker, audio, num_samples=2)
        assert _on_meta(out) and out["emotion"].shape[:3] == (2, 2, speaker.shape[1])
        for generator in (None, torch.Generator().manual_seed(0)):
            alone = ReactionStream(model, num_samples=2, generator=generator)
            W = alone.window
            frames = alone.push(speaker[0, :W + 1], audio[0, :k * (W + 1)])
            assert _on_meta(frames) and frames["emotion"].shape[:2] == (2, W)
            assert _on_meta(alone.flush())
            streams = [ReactionStream(model, num_samples=s, generator=generator) for s in (2, 3)]
            for i, s in enumerate(streams):
                s.feed(speaker[i, :W], audio[i, :k * W])
            out = StreamRunner(model).step(streams)
            assert [f["emotion"].shape[0] for f in out] == [2, 3] and all(_on_meta(f) for f in out)
