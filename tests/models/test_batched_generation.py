"""Speakers batched in one ``generate`` call with one generator each get the reactions each gets in
a call of its own (``Generator.draw_windows``); ``generate_dataset`` batches dyads so."""

import pytest
import torch

from reactfast.train import generate_dataset
from tests.models.test_output_ranges import BUILDERS, speaker_inputs
from tests.models.test_pflposnet import _tiny_pfl
from tests.train.helpers import tiny_data

MODELS = {**BUILDERS, "pflposnet": _tiny_pfl}


def _rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


def _gens(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_per_speaker_generators_equal_separate_calls(name, device, monkeypatch):
    # cuDNN convolutions default to TF32 on a GPU (ReactDiff's differed by 5e-3 there): float32 here.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    model = MODELS[name]().to(device).eval()
    speaker, audio = speaker_inputs(model if name != "pflposnet" else model.generator, B=3, T=27)
    speaker, audio = speaker.to(device), audio.to(device)
    seeds = [11, 5, 11]                       # two speakers with equal seeds: equal noise, not shared draws
    with torch.no_grad():
        batched = model.generate(speaker, audio, 2, _gens(seeds))
        alone = [model.generate(speaker[b:b + 1], audio[b:b + 1], 2, _gens([s])[0]) for b, s in enumerate(seeds)]
    assert set(batched) == set(alone[0])
    for key, value in batched.items():
        expected = torch.cat([a[key] for a in alone])
        assert value.shape == expected.shape
        # Batched float32 products may round differently (ReactDiff's convolutions do, and its 50
        # sampling steps carry that on: 1.06e-5 on an AVX-512 CPU): relative norm.
        tol = 1e-4 if name == "reactdiff" else 1e-5
        assert _rel(value, expected) <= tol, (key, _rel(value, expected))
    # Noise does differ between speakers drawn from different seeds: the lists are not ignored.
    with torch.no_grad():
        swapped = model.generate(speaker, audio, 2, _gens([5, 11, 11]))
    key = next(iter(batched))
    assert not torch.allclose(swapped[key][:2], batched[key][:2])


def test_generator_lists_are_validated():
    model = MODELS["reactface"]().eval()
    speaker, audio = speaker_inputs(model, B=2, T=16)
    with pytest.raises(ValueError, match="one generator per speaker \\(2\\), got 3"):
        model.generate(speaker, audio, 2, _gens([1, 2, 3]))
    with pytest.raises(TypeError, match="generator must be a torch.Generator, a sequence of them"):
        model.generate(speaker, audio, 2, [1, 2])
    with pytest.raises(TypeError, match="generator must be"):
        model.generate(speaker, audio, 2, "seed")


def test_generate_dataset_does_not_depend_on_the_batch_size():
    model = MODELS["reactface"](audio_dim=8).eval()        # tiny_data's audio is 8-d
    clips = tiny_data("test", sessions=3).dataset(frames=24)
    one = generate_dataset(model, clips, 2, seed=4, batch_size=1)
    five = generate_dataset(model, clips, 2, seed=4, batch_size=5)
    assert set(one) == set(five) == {"3dmm", "emotion"}
    for key in one:
        assert one[key].shape == (clips.num_items, 2, 24, one[key].shape[-1])
        assert _rel(torch.from_numpy(five[key]), torch.from_numpy(one[key])) <= 1e-5
