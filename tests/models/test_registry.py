"""A fifth generator, defined here and registered, runs through every layer that finds generators
by name: building, training, checkpoints, dataset-wide generation, streaming and the command line."""

import dataclasses
import os
from typing import List, Sequence

import numpy as np
import pytest
import torch
from torch import nn

from reactfast import cli, models
from reactfast.models import base
from reactfast.online import ReactionStream
from reactfast.train import TrainConfig, Trainer, generate_dataset, load_model
from tests.train.helpers import tiny_data


@dataclasses.dataclass
class ToyConfig(base.GeneratorConfig):
    audio_dim: int = 8
    audio_per_frame: int = 2
    window: int = 4
    noise_scale: float = 0.1

    def __post_init__(self):
        self.check_at_least(1, "audio_dim", "audio_per_frame", "window")


@dataclasses.dataclass
class ToyState:
    frame: torch.Tensor

    @staticmethod
    def cat(states: Sequence["ToyState"]) -> "ToyState":
        return ToyState(torch.cat([s.frame for s in states]))

    def split(self, sizes: Sequence[int]) -> List["ToyState"]:
        return [ToyState(f) for f in torch.split(self.frame, list(sizes))]


class Toy(base.Generator):
    """Listener emotion = a linear map of the speaker's emotion and audio, plus scaled noise."""

    name = "toy"
    summary = "a linear test generator"
    config_class = ToyConfig

    def __init__(self, config=None, backend=None, **overrides):
        super().__init__(config, backend, **overrides)
        cfg = self.config
        self.head = nn.Linear(25 + cfg.audio_per_frame * cfg.audio_dim, 25)

    def output_widths(self):
        return {"emotion": 25}

    def check_inputs(self, speaker, audio, name="speaker"):
        if speaker.shape[-1] != 25 or audio.shape[1] != self.config.audio_per_frame * speaker.shape[1]:
            raise ValueError(f"{name} must be (B, T, 25) with 2 audio rows per frame")

    def inputs_from_batch(self, batch):
        return batch["speaker_emotion"], batch["speaker_audio"]

    def _emotion(self, speaker, audio, noise):
        B, T, _ = speaker.shape
        return self.head(torch.cat([speaker, audio.reshape(B, T, -1)], -1)) + self.config.noise_scale * noise

    def loss(self, batch, generators, forward=None):
        speaker, audio = self.inputs_from_batch(batch)
        noise = torch.stack([base.randn(*speaker.shape[1:], generator=g) for g in generators]).to(speaker.device)
        pred = (forward or self)(speaker, audio, noise)
        rec = torch.nn.functional.mse_loss(pred, batch["listener_emotion"])
        return {"loss": rec, "rec": rec.detach()}

    def forward(self, speaker, audio, noise):
        return self._emotion(speaker, audio, noise)

    def draw_noise(self, batch, generator=None, window=0):
        return base.randn(batch, window or self.config.window, 25, generator=generator)

    def init_state(self, batch, window=None, device=None):
        return ToyState(torch.zeros(batch, dtype=torch.long, device=device))

    def step(self, state, speaker, audio, noise):
        return {"emotion": self._emotion(speaker, audio, noise)}, ToyState(state.frame + speaker.shape[1])

    @torch.no_grad()
    def generate(self, speaker, audio, num_samples=10, generator=None):
        B, T, _ = speaker.shape
        W, k = self.config.window, self.config.audio_per_frame
        out = []
        draws = self.draw_windows(B, num_samples, -(-T // W), generator).to(speaker.device)
        for i, lo in enumerate(range(0, T, W)):
            hi = min(T, lo + W)
            noise = draws[i][:, : hi - lo]
            out.append(self._emotion(speaker[:, lo:hi].repeat_interleave(num_samples, 0),
                                     audio[:, k * lo:k * hi].repeat_interleave(num_samples, 0), noise))
        return {"emotion": torch.cat(out, 1).reshape(B, num_samples, T, 25)}


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(base._REGISTRY, "toy", Toy)
    return Toy


def test_a_registered_generator_runs_through_every_layer(registered, tmp_path):
    assert "toy" in models.names()
    model = models.build("toy", {"audio_dim": 8})
    assert isinstance(model, Toy) and models.model_name(model) == "toy"
    data = tiny_data().dataset(frames=64, window=16, stride=16)
    history = Trainer(model, data, TrainConfig(steps=20, batch_size=4, lr=1e-2, progress=False,
                                               out_dir=str(tmp_path / "run")), device="cpu").fit()
    assert history[-1]["rec"] < history[0]["rec"]
    loaded = load_model(str(tmp_path / "run" / "checkpoint"))
    assert torch.equal(loaded.head.weight, model.head.weight)
    clips = tiny_data("test", sessions=2).dataset(frames=24)
    preds = generate_dataset(loaded, clips, 2, seed=1)
    assert preds["emotion"].shape == (4, 2, 24, 25)
    item = clips[0]
    offline = loaded.generate(item["speaker_emotion"][None], item["speaker_audio"][None], 2,
                              torch.Generator().manual_seed(3))["emotion"][0]
    stream = ReactionStream(loaded, 2, torch.Generator().manual_seed(3))
    online = torch.cat([stream.push(item["speaker_emotion"], item["speaker_audio"])["emotion"],
                        stream.flush().get("emotion", torch.zeros(2, 0, 25))], 1)
    assert torch.allclose(online, offline, atol=1e-6)


def test_the_command_line_finds_a_registered_generator(registered, tmp_path):
    run = str(tmp_path / "cli")
    assert cli.main(["train", "--model", "toy", "--data", "synthetic", "--out", run, "--steps", "2",
                     "--batch-size", "2", "--clip-frames", "16", "--frames", "48", "--sessions", "4",
                     "--no-progress", "--device", "cpu"]) == 0
    assert os.path.isfile(os.path.join(run, "checkpoint", "model.safetensors"))
    preds = str(tmp_path / "p.npz")
    assert cli.main(["generate", "--checkpoint", os.path.join(run, "checkpoint"), "--samples", "2", "--frames",
                     "24", "--sessions", "2", "--out", preds, "--no-progress", "--device", "cpu"]) == 0
    with np.load(preds) as z:
        assert z["pred"].shape == (4, 2, 24, 25)
