"""Every generator's configuration refuses numbers it cannot train or sample with, naming the field:
NaN passed checks written ``value < 0`` before, and most loss weights and the learning rate were
not checked at all."""

import pytest

from reactfast import models


@pytest.mark.parametrize("name,field,value,words", [
    ("reactface", "kl_weight", float("nan"), "ReactFaceConfig.kl_weight must be a finite number >= 0, got nan"),
    ("reactface", "pose_weight", -1.0, "ReactFaceConfig.pose_weight must be a finite number >= 0, got -1.0"),
    ("reactface", "div_scale", 0.0, "ReactFaceConfig.div_scale must be a finite number > 0, got 0.0"),
    ("reactface", "lr", 0.0, "ReactFaceConfig.lr must be a finite number > 0, got 0.0"),
    ("reactface", "lr", "1e-3", "ReactFaceConfig.lr must be a finite number > 0, got '1e-3'"),
    # A field's type: "no" for a bool counted as true, a float for an int reached a layer's size.
    ("reactdiff", "normalize_latent", "no", "ReactDiffConfig.normalize_latent must be a bool, got 'no'"),
    ("perfrdiff", "sample_cuda_graph", "no", "PerFRDiffConfig.sample_cuda_graph must be a bool, got 'no'"),
    ("reactface", "cie_ffn", 2.5, "ReactFaceConfig.cie_ffn must be an int, got 2.5"),
    ("reactface", "audio_extra", -1, "ReactFaceConfig.audio_extra must be an int >= 0, got -1"),
    ("reactdiff", "dec_heads", 0, "ReactDiffConfig.dec_heads must be an int >= 1, got 0"),   # ZeroDivisionError
    ("perfrdiff", "schedule", "cosin", r"schedule must be one of \('linear', 'cosine'\), got 'cosin'"),
    ("reactface", "weight_decay", float("inf"), "ReactFaceConfig.weight_decay must be a finite number >= 0"),
    ("pflposnet", "posnet_sm2_weight", float("nan"), "PFLPosNetConfig.posnet_sm2_weight must be a finite number"),
    ("perfrdiff", "temperature", 0.0, "PerFRDiffConfig.temperature must be a finite number > 0"),
    ("perfrdiff", "guidance", float("inf"), "PerFRDiffConfig.guidance must be a finite number, got inf"),
    ("perfrdiff", "pssl_weight", -0.5, "PerFRDiffConfig.pssl_weight must be a finite number >= 0"),
    ("perfrdiff", "dropout", 1.5, r"dropout must be in \[0, 1\), got 1.5"),
    ("reactdiff", "tdmm_weight", -1.0, "ReactDiffConfig.tdmm_weight must be a finite number >= 0"),
    ("reactdiff", "noise_scale", float("nan"), "ReactDiffConfig.noise_scale must be a finite number > 0, got nan"),
])
def test_bad_numbers_are_named(name, field, value, words):
    with pytest.raises(ValueError, match=words):
        models.make_config(name, {field: value})


@pytest.mark.parametrize("name", ["reactface", "perfrdiff", "reactdiff", "pflposnet"])
def test_defaults_and_negative_guidance_pass(name):
    models.make_config(name, {})
    if name == "perfrdiff":
        assert models.make_config(name, {"guidance": -1.0}).guidance == -1.0   # defined: negative guidance


@pytest.mark.parametrize("name", ["reactface", "perfrdiff", "reactdiff", "pflposnet"])
def test_generate_names_a_sample_count_that_is_no_int(name):
    """num_samples=2.0 failed inside torch (randn's or repeat_interleave's argument error) for
    ReactDiff, PFLPosNet and PerFRDiff; ReactFace already named it."""
    import torch

    from reactfast.demo import demo_model

    model = demo_model(name, 8).eval()
    T = model.config.window
    width = getattr(model.config, "speaker_dim", {"reactdiff": 25, "perfrdiff": 83}.get(name))
    speaker, audio = torch.rand(1, T, width), torch.rand(1, model.audio_per_frame * T, 8)
    assert model.generate(speaker, audio, 1)      # the inputs are right
    for bad in (2.0, 0, True):
        with pytest.raises(ValueError, match=f"num_samples must be an int >= 1, got {bad}"):
            model.generate(speaker, audio, bad)
