"""train -> generate -> evaluate -> plot through the command line, on tiny synthetic data."""

import json
import os

import numpy as np
import torch

from reactfast import cli
from reactfast.models.baselines import MirrorBaseline, NearestNeighbourBaseline, RandomBaseline
from tests.train.helpers import tiny_data


def test_train_generate_evaluate_plot(tmp_path):
    run = str(tmp_path / "run")
    config = ["dim=16", "heads=2", "cie_heads=2", "cie_ffn=32", "window_train=16", "window=8", "context=32", "past=16"]
    assert cli.main(["train", "--data", "synthetic", "--out", run, "--steps", "3", "--batch-size", "2",
                     "--clip-frames", "32", "--frames", "64", "--sessions", "4", "--no-progress",
                     "--lr-schedule", "cosine", "--warmup", "1", "--config", *config, "train.grad_clip=0.5"]) == 0
    assert os.path.isfile(os.path.join(run, "checkpoint", "model.safetensors"))
    # The schedule and the --config train.* overrides are the run's settings: a resumed run keeps them.
    assert cli.main(["train", "--out", run, "--resume", os.path.join(run, "checkpoint"), "--steps", "4",
                     "--no-progress"]) == 0
    state = torch.load(os.path.join(run, "checkpoint", "trainer.pt"), weights_only=False)
    saved = state["train_config"]
    assert state["step"] == 4 and (saved["lr_schedule"], saved["warmup"], saved["grad_clip"]) == ("cosine", 1, 0.5)
    preds = str(tmp_path / "preds.npz")
    assert cli.main(["generate", "--checkpoint", os.path.join(run, "checkpoint"), "--split", "test", "--samples", "2",
                     "--frames", "64", "--sessions", "2", "--out", preds, "--no-progress"]) == 0
    with np.load(preds) as z:
        assert z["pred"].shape == (4, 2, 64, 25) and z["pred_3dmm"].shape == (4, 2, 64, 58)
    assert cli.main(["evaluate", preds, "--no-progress"]) == 0
    scores = json.load(open(str(tmp_path / "preds.metrics.json")))["metrics"]
    assert np.isfinite(list(scores.values())).all()
    png = str(tmp_path / "p.png")
    assert cli.main(["plot", preds, "--item", "1", "--channels", "15,16", "--out", png]) == 0
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_baselines():
    train = tiny_data("train", sessions=4, frames=120).dataset(frames=120)
    test = tiny_data("test", sessions=2, frames=120).dataset(frames=100)
    mirror = MirrorBaseline().predict(test, 3)
    assert np.array_equal(mirror["emotion"][:, 1], test.stack("speaker", "emotion").numpy())
    rand = RandomBaseline().predict(test, 3, seed=1)
    assert rand["emotion"].shape == (4, 3, 100, 25) and abs(rand["emotion"].std() - 1) < 0.05
    nn_pred = NearestNeighbourBaseline(window=20).fit(train).predict(test, 3)
    assert nn_pred["emotion"].shape == (4, 3, 100, 25)
    # The nearest window of a training speaker is that speaker itself: NN on train copies its listener.
    self_pred = NearestNeighbourBaseline(window=20).fit(train).predict(train, 1)
    listener = train.stack("listener", "emotion").numpy()
    assert np.allclose(self_pred["emotion"][:, 0, :100], listener[:, :100])


def test_perfrdiff_two_stage_command_line(tmp_path, capsys):
    config = ["window=10", "dim=16", "heads=2", "ffn=32", "layers=6", "train_steps=20", "sample_steps=2",
              "style_dim=8", "style_layers=1", "style_heads=2", "style_ffn=16", "hyper_hidden=8", "min_history=4"]
    common = ["--model", "perfrdiff", "--data", "synthetic", "--steps", "2", "--batch-size", "2", "--frames", "40",
              "--sessions", "4", "--no-progress", "--config", *config]
    stage1 = str(tmp_path / "s1")
    assert cli.main(["train", "--out", stage1, *common]) == 0
    stage2 = str(tmp_path / "s2")
    assert cli.main(["train", "--out", stage2, "--stage", "2", "--init", os.path.join(stage1, "checkpoint"),
                     *common]) == 0
    preds = str(tmp_path / "p.npz")
    capsys.readouterr()
    generate = ["generate", "--checkpoint", os.path.join(stage2, "checkpoint"), "--samples", "2", "--frames", "40",
                "--sessions", "5", "--out", preds, "--no-progress"]
    assert cli.main(generate) == 0
    assert "personalising 2 of 10 dyads by another clip of their listener" in capsys.readouterr().out
    with np.load(preds) as z:
        personal = z["pred"]
    assert personal.shape == (10, 2, 40, 25)
    assert cli.main([*generate, "--no-personalise"]) == 0
    assert "personalising" not in capsys.readouterr().out
    with np.load(preds) as z:   # the dyads whose listener has another clip differ (the others: batch rounding)
        assert (np.abs(z["pred"] - personal).reshape(10, -1).max(1) > 1e-4).sum() == 2


def test_later_stage_takes_model_and_data_from_init(tmp_path, capsys):
    """--init alone: stage 2 gets stage 1's model, architecture (--config dims), data, frames,
    sessions, seed and clip frames, as the README's two-stage commands give it; a flag still wins."""
    config = ["window=10", "dim=16", "heads=2", "ffn=32", "layers=6", "train_steps=20", "sample_steps=2",
              "style_dim=8", "style_layers=1", "style_heads=2", "style_ffn=16", "hyper_hidden=8", "min_history=4"]
    stage1 = str(tmp_path / "s1")
    assert cli.main(["train", "--model", "perfrdiff", "--data", "synthetic", "--steps", "1", "--batch-size", "2",
                     "--frames", "40", "--sessions", "4", "--seed", "3", "--clip-frames", "20", "--no-progress",
                     "--out", stage1, "--config", *config]) == 0
    init = os.path.join(stage1, "checkpoint")
    runs = {}
    for name, flags in (("s2", []), ("s2_seed", ["--seed", "5"])):
        runs[name] = str(tmp_path / name)
        capsys.readouterr()
        assert cli.main(["train", "--stage", "2", "--init", init, "--out", runs[name], "--steps", "1",
                         "--batch-size", "2", "--no-progress", *flags]) == 0
        printed = capsys.readouterr().out
        assert f"from --init {init}: model 'perfrdiff'" in printed
    one, two = (json.load(open(os.path.join(run, "checkpoint", "config.json"))) for run in (stage1, runs["s2"]))
    assert two["model"] == "perfrdiff" and two["config"] == one["config"]
    assert two["extra"]["data"] == one["extra"]["data"] == {"spec": "synthetic", "sessions": 4, "seed": 3,
                                                             "frames": 40}
    assert two["extra"]["run"]["clip_frames"] == 20 and two["extra"]["run"]["stage"] == 2
    seeded = json.load(open(os.path.join(runs["s2_seed"], "checkpoint", "config.json")))
    assert seeded["extra"]["data"]["seed"] == 5 and seeded["config"] == one["config"]
    assert "given instead of its run: seed 3 -> 5" in printed
    # Another model than the checkpoint's is named as such (not as config fields it lacks).
    capsys.readouterr()
    assert cli.main(["train", "--model", "reactdiff", "--stage", "2", "--init", init, "--out",
                     str(tmp_path / "other"), "--steps", "1", "--no-progress"]) == 2
    assert f"--model reactdiff: the --init checkpoint {init} holds a 'perfrdiff' model" in capsys.readouterr().err
    assert not os.path.exists(str(tmp_path / "other"))


def test_init_from_a_run_on_a_data_folder_names_no_synthetic_sessions(tmp_path, capsys):
    """--init printed "sessions 48" (the synthetic default the run had stored) for a run on a data
    folder, where there are no synthetic sessions; a synthetic run's sessions are still named."""
    from reactfast.train import save_checkpoint
    from tests.train.helpers import tiny_model

    for data, named in ((str(tmp_path / "data"), False), ("synthetic", True)):
        init = str(tmp_path / f"run_{named}" / "checkpoint")
        save_checkpoint(init, tiny_model(), extra={"run": {"model": "reactface", "data": data, "frames": 300,
                                                           "sessions": 48, "seed": 0, "clip_frames": 128}})
        capsys.readouterr()
        cli._train_settings(cli.build_parser().parse_args(["train", "--stage", "2", "--init", init, "--out", "x"]))
        printed = capsys.readouterr().out
        assert f"from --init {init}: model 'reactface', data {data!r}" in printed
        assert ("sessions 48" in printed) == named, printed


def test_learning_rate_flag_is_checked(tmp_path, capsys):
    assert cli.main(["train", "--out", str(tmp_path / "r"), "--lr", "-0.001", "--steps", "1"]) == 2
    assert "--lr must be a finite number > 0, got -0.001" in capsys.readouterr().err


def test_resume_at_or_past_steps_says_so(tmp_path, capsys):
    run = str(tmp_path / "run")
    config = ["dim=16", "heads=2", "cie_heads=2", "cie_ffn=32", "window_train=16", "window=8", "context=32", "past=16"]
    assert cli.main(["train", "--out", run, "--steps", "2", "--batch-size", "2", "--clip-frames", "32", "--frames",
                     "64", "--sessions", "4", "--no-progress", "--config", *config]) == 0
    capsys.readouterr()
    ckpt = os.path.join(run, "checkpoint")
    assert cli.main(["train", "--out", run, "--resume", ckpt, "--steps", "1", "--no-progress"]) == 0
    assert f"{ckpt} is at step 2, not below --steps 1: nothing to train" in capsys.readouterr().out


def test_generation_on_other_audio_features_than_the_models_is_named(tmp_path, capsys):
    """The checkpoint recorded which audio features the model was trained on, but nothing read
    it: generation on .npy features of the same width as the .wav MFCC it learnt from went on
    without a word, and on features of another width stopped at the first batch with a bare
    shape error. Now the width is checked before any work, another kind of features is warned
    of, and a trainer used from Python records them too."""
    from reactfast.data import ReactDataset, SyntheticDyads
    from reactfast.data import audio as audio_io
    from reactfast.train import TrainConfig, Trainer, read_config
    from tests.train.helpers import tiny_model

    folders = {}
    for name, audio_dim in (("wav", 32), ("npy39", 39), ("npy32", 32)):
        folders[name] = str(tmp_path / name)
        for split in ("train", "test"):
            SyntheticDyads(sessions=2, frames=40, audio_dim=audio_dim, prototypes=1, seed=0,
                           split=split).write(folders[name], split)
    sr, t = 16000, np.arange(16000 * 40 // 25) / 16000
    for split in ("train", "test"):
        ds = ReactDataset(folders["wav"], split, frames=40)
        for clip in {c for pair in ds.pairs for c in pair}:
            os.remove(ds._path("audio", clip, ".npy"))
            audio_io.write_wav(ds._path("audio", clip, ".wav"), 0.3 * np.sin(2 * np.pi * 440 * t), sr)
    run = str(tmp_path / "run")
    config = ["dim=16", "heads=2", "cie_heads=2", "cie_ffn=32", "window_train=16", "window=8", "context=32", "past=16"]
    assert cli.main(["train", "--data", folders["wav"], "--out", run, "--steps", "1", "--batch-size", "2",
                     "--clip-frames", "32", "--frames", "40", "--no-progress", "--config", *config]) == 0
    ckpt = os.path.join(run, "checkpoint")
    assert read_config(ckpt)["extra"]["audio"] == "wav -> baseline features"
    generate = ["generate", "--checkpoint", ckpt, "--samples", "1", "--frames", "40", "--no-progress"]
    capsys.readouterr()
    assert cli.main([*generate, "--data", folders["wav"], "--out", str(tmp_path / "same.npz")]) == 0
    assert "Warning" not in capsys.readouterr().err
    assert cli.main([*generate, "--data", folders["npy39"], "--out", str(tmp_path / "other.npz")]) == 0
    err = capsys.readouterr().err
    assert "UserWarning" in err and "the model was trained on wav -> baseline features, but the data gives npy " \
           "features (39-d)" in err, err
    capsys.readouterr()
    out = str(tmp_path / "narrow.npz")
    assert cli.main([*generate, "--data", folders["npy32"], "--out", out]) == 2
    err = capsys.readouterr().err
    assert "the model takes 39-d audio features (it was trained on wav -> baseline features), but the data " \
           "gives 32-d ones (npy features (32-d))" in err, err
    assert not os.path.exists(out) and not os.path.exists(out[:-4] + ".partial.npz")
    # A later stage on data of another width is refused before its run folder is made.
    stage2 = str(tmp_path / "stage2")
    assert cli.main(["train", "--model", "pflposnet", "--data", folders["wav"], "--out", str(tmp_path / "p1"),
                     "--steps", "1", "--batch-size", "2", "--clip-frames", "32", "--frames", "40", "--no-progress",
                     "--config", *config]) == 0
    capsys.readouterr()
    assert cli.main(["train", "--init", str(tmp_path / "p1" / "checkpoint"), "--stage", "2", "--data",
                     folders["npy32"], "--out", stage2, "--steps", "1", "--no-progress"]) == 2
    assert "the model takes 39-d audio features" in capsys.readouterr().err
    assert not os.path.exists(stage2)
    # The Python trainer names the dataset's features in its checkpoints (extra_meta still wins).
    data = ReactDataset(folders["npy32"], "train", frames=40, window=32, stride=8)
    model = tiny_model()
    model.config.audio_dim = 32
    model = type(model)(model.config)
    for extra, expected in ((None, "npy features (32-d)"), ({"audio": "mine"}, "mine")):
        out_dir = str(tmp_path / f"py{expected[:4]}")
        Trainer(model, data, TrainConfig(steps=1, batch_size=2, out_dir=out_dir, progress=False),
                extra_meta=extra, device="cpu").fit()
        assert read_config(os.path.join(out_dir, "checkpoint"))["extra"]["audio"] == expected


def test_resuming_a_cosine_run_with_other_steps_names_the_rate_it_goes_on_with(tmp_path, capsys):
    """A cosine run resumed with another --steps goes on on the stretched curve: a finished run
    (rate ~0) jumped to half its base rate, and neither the message nor the history (which had no
    rate) said so. The history now logs each step's rate."""
    run = str(tmp_path / "run")
    config = ["dim=16", "heads=2", "cie_heads=2", "cie_ffn=32", "window_train=16", "window=8", "context=32", "past=16"]
    assert cli.main(["train", "--out", run, "--steps", "2", "--batch-size", "2", "--clip-frames", "32", "--frames",
                     "64", "--sessions", "4", "--lr", "1e-3", "--lr-schedule", "cosine", "--no-progress",
                     "--config", *config]) == 0
    capsys.readouterr()
    assert cli.main(["train", "--out", run, "--resume", os.path.join(run, "checkpoint"), "--steps", "4",
                     "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "the cosine schedule now decays over 4 steps, not 2: step 3 takes learning rate 0.0005 (0 on the run's " \
           "curve)" in printed, printed
    rates = [json.loads(line)["lr"] for line in open(os.path.join(run, "history.jsonl"))]
    assert np.allclose(rates, [1e-3, 5e-4, 5e-4, 1e-3 * 0.5 * (1 + np.cos(np.pi * 3 / 4))], rtol=1e-12, atol=0)
    capsys.readouterr()   # the same --steps again: nothing moves, nothing said
    assert cli.main(["train", "--out", run, "--resume", os.path.join(run, "checkpoint"), "--steps", "4",
                     "--no-progress"]) == 0
    assert "schedule now decays" not in capsys.readouterr().out
