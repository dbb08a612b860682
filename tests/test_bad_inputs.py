"""The cases of the bad-input sweep (issue 19), numbered as there: every one a clear error naming the
argument, file or flag, or handled correctly; no finished work lost."""

import json
import os
import pickle
import re
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch

from reactfast import cli, diffusion, metrics, models, ops
from reactfast.data import DataError, ReactDataset, SyntheticDyads, layout
from reactfast.data import audio as audio_io
from reactfast.data.check import check_split
from reactfast.nn import BiasedCrossAttention
from reactfast.nn.personalize import personalize, personalized_call
from reactfast.online import ReactionStream, StreamRunner
from reactfast.plot import plot_reactions
from reactfast.train import CheckpointError, TrainConfig, load_model, load_trainer_state, read_config, save_checkpoint
from tests.train.helpers import tiny_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["dim=16", "heads=2", "cie_heads=2", "cie_ffn=32", "cie_layers=1", "decoder_layers=1", "window_train=16",
        "window=8", "context=32", "past=16"]


@pytest.fixture
def data(tmp_path):
    root = str(tmp_path / "data")
    SyntheticDyads(sessions=2, frames=60, prototypes=1, audio_dim=8, seed=0).write(root, "test")
    return root


def _clip(root, split="test"):
    return ReactDataset(root, split, frames=10).pairs[0][0]


def _path(root, modality, clip, ext, split="test"):
    return os.path.join(root, split, layout.MODALITY_DIRS[modality], clip + ext)


def run(args, capsys):
    """(exit code, stderr) of the command line."""
    code = cli.main(args)
    return code, capsys.readouterr().err


@pytest.fixture
def checkpoint(tmp_path):
    path = str(tmp_path / "run" / "checkpoint")
    model = tiny_model()
    save_checkpoint(path, model, extra={"data": {"spec": "synthetic", "sessions": 4, "seed": 0, "frames": 64}})
    return path


def test_01_emotion_csv_without_header_keeps_every_frame(data):
    clip = _clip(data)
    path = _path(data, "emotion", clip, ".csv")
    lines = open(path).read().splitlines()
    open(path, "w").write("\n".join(lines[1:]) + "\n")
    with pytest.warns(UserWarning, match="no header row"):
        ds = ReactDataset(data, "test", frames=60, modalities=("emotion",))
        emotion = ds.load_clip(clip)["emotion"]
    assert emotion.shape == (60, 25)
    assert np.allclose(emotion[0], [float(v) for v in lines[1].split(",")])


def test_02_short_wav_is_truncated_not_stretched(data):
    clip = _clip(data)
    os.remove(_path(data, "audio", clip, ".npy"))
    audio_io.write_wav(_path(data, "audio", clip, ".wav"), np.zeros(16000, np.float32), 16000)   # 1 s
    ds = ReactDataset(data, "test", frames=50, modalities=("audio",))                             # needs 2 s
    with pytest.raises(DataError, match=r"truncated, 1\.00 s of audio for 50 frames \(2\.00 s"):
        ds.load_clip(clip)


def test_03_complex_3dmm_is_an_error(data):
    clip = _clip(data)
    np.save(_path(data, "3dmm", clip, ".npy"), np.zeros((60, 58), np.complex64))
    with pytest.raises(DataError, match="complex numbers"):
        ReactDataset(data, "test", frames=60, modalities=("3dmm",)).load_clip(clip)


def test_04_metrics_refuse_values_that_overflow():
    rng = np.random.default_rng(0)
    pred, gt = rng.random((3, 2, 20, 25)).astype(np.float32), rng.random((3, 20, 25)).astype(np.float32)
    with pytest.raises(ValueError, match=r"pred holds values up to 1e\+20"):
        metrics.evaluate(pred * np.float32(1e20), gt, gt, np.eye(3, dtype=bool))


def test_05_generate_refuses_a_checkpoint_with_nan_weights(checkpoint, tmp_path, capsys):
    weights = os.path.join(checkpoint, "model.safetensors")
    from safetensors.torch import load_file, save_file

    state = load_file(weights)
    state["mu_head.weight"][0, 0] = float("nan")
    save_file(state, weights)
    out = str(tmp_path / "p.npz")
    code, err = run(["generate", "--checkpoint", checkpoint, "--frames", "16", "--sessions", "2", "--out", out,
                     "--no-progress", "--device", "cpu"], capsys)
    assert code == 2 and "mu_head.weight" in err and "NaN or Inf" in err
    assert not os.path.exists(out)


def test_06_diverging_training_stops_and_keeps_the_last_finite_step(tmp_path, capsys):
    """No non-finite checkpoint is written; the steps before the divergence are saved (a run without
    --ckpt-every saved only at its end, and lost them all)."""
    out = str(tmp_path / "run")
    code, err = run(["train", "--out", out, "--steps", "20", "--batch-size", "2", "--clip-frames", "16", "--frames",
                     "48", "--sessions", "4", "--lr", "1e6", "--no-progress", "--device", "cpu", "--config", *TINY],
                    capsys)
    assert code == 2
    diverged = int(re.search(r"training diverged at step (\d+)", err).group(1))
    assert diverged >= 2, "the learning rate must let a step finish for this test to see it saved"
    assert "(lower the learning rate, now 1e+06)" in err
    assert f"the weights of step {diverged - 1}, the last finished step, were saved to" in err
    assert load_trainer_state(os.path.join(out, "checkpoint"))[1]["step"] == diverged - 1
    model = load_model(os.path.join(out, "checkpoint"))
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_07_flags_are_not_abbreviated(tmp_path, capsys):
    np.save(tmp_path / "pred.npy", np.zeros((2, 1, 5, 25), np.float32))
    with pytest.raises(SystemExit) as exc:
        cli.main(["evaluate", str(tmp_path / "pred.npy"), "--frsyn"])
    assert exc.value.code == 2 and "unrecognized arguments: --frsyn" in capsys.readouterr().err


def test_08_stream_window_must_be_positive():
    model = tiny_model().eval()
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="window must be an int >= 1"):
            ReactionStream(model, 2, window=bad)


def test_09_runner_refuses_streams_of_another_model():
    a, b = tiny_model(seed=1).eval(), tiny_model(seed=2).eval()
    streams = [ReactionStream(a, 1), ReactionStream(b, 1)]
    with pytest.raises(ValueError, match=r"streams\[1\] runs another model"):
        StreamRunner(a).step(streams)
    # A runner of something that is no generator was made, to refuse every stream later.
    with pytest.raises(TypeError, match="model must be a reactfast generator .* got Linear"):
        StreamRunner(torch.nn.Linear(2, 2))


def test_09_runner_refuses_a_stream_twice_before_taking_its_input():
    model = tiny_model().eval()
    stream, other = ReactionStream(model, 1), ReactionStream(model, 1)
    W, k, F, A = stream.window, model.audio_per_frame, model.config.speaker_dim, model.config.audio_dim
    for s in (stream, other):
        s.feed(torch.randn(2 * W, F), torch.randn(2 * k * W, A))
    with pytest.raises(ValueError, match=r"streams\[2\] is streams\[0\]"):
        StreamRunner(model).step([stream, other, stream])
    assert stream._pending == other._pending == 2 * W   # nothing consumed by the refused call
    out = StreamRunner(model).step([stream, other])
    assert [o["3dmm"].shape[1] for o in out] == [W, W]


def test_10_train_checks_its_output_folder_first(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for out in (str(blocker), str(blocker / "run")):
        code, err = run(["train", "--out", out, "--steps", "1000", "--frames", "48", "--clip-frames", "16",
                         "--sessions", "4", "--no-progress", "--device", "cpu", "--config", *TINY], capsys)
        assert code == 2 and "--out" in err
    os.makedirs(tmp_path / "used")
    (tmp_path / "used" / "history.jsonl").write_text("{}")
    code, err = run(["train", "--out", str(tmp_path / "used"), "--steps", "1", "--no-progress"], capsys)
    assert code == 2 and "is not empty" in err and "--overwrite" in err


def test_11_generate_checks_its_output_first(checkpoint, tmp_path, capsys):
    folder = tmp_path / "a_folder"
    folder.mkdir()
    for out in (str(folder), str(tmp_path / "file.txt" / "p.npz")):
        (tmp_path / "file.txt").write_text("x")
        code, err = run(["generate", "--checkpoint", checkpoint, "--out", out, "--no-progress", "--device", "cpu"],
                        capsys)
        assert code == 2 and "--out" in err



def test_11_generate_on_clips_shorter_than_its_frames_names_the_flag(checkpoint, data, tmp_path, capsys):
    code, err = run(["generate", "--checkpoint", checkpoint, "--data", data, "--split", "test", "--out",
                     str(tmp_path / "p.npz"), "--no-progress", "--device", "cpu"], capsys)
    assert code == 2 and "truncated, 60 frames but at least 750 are needed" in err and "(--frames:" in err


def test_11_generate_takes_the_training_runs_clip_length(data, tmp_path, capsys):
    # Trained on a folder of 60-frame clips: generate from the checkpoint alone (or naming that
    # folder again, spelled differently) reads 60 frames per clip; it asked for 750 and failed before.
    path = str(tmp_path / "run" / "checkpoint")
    save_checkpoint(path, tiny_model(), extra={"data": {"spec": data, "sessions": 2, "seed": 0, "frames": 60}})
    for extra in ([], ["--data", data + os.sep]):
        out = str(tmp_path / "p.npz")
        code, _ = run(["generate", "--checkpoint", path, *extra, "--samples", "2", "--out", out, "--no-progress",
                       "--device", "cpu"], capsys)
        assert code == 0 and np.load(out)["pred"].shape[2] == 60
    code, err = run(["generate", "--checkpoint", path, "--frames", "0", "--out", str(tmp_path / "q.npz"),
                     "--no-progress", "--device", "cpu"], capsys)
    assert code == 2 and "--frames must be >= 1, got 0" in err
    code, err = run(["generate", "--checkpoint", path, "--frames", "61", "--out", str(tmp_path / "q.npz"),
                     "--no-progress", "--device", "cpu"], capsys)
    assert code == 2 and "at least 61 are needed" in err and "given 61" in err


_KILLED_SAVE = """
import os, sys
sys.path.insert(0, {root!r})
import torch
from reactfast.train import checkpoint as ck
from tests.train.helpers import tiny_model

def kill(step):
    if step == {step!r}:
        os._exit(9)

ck._mark = kill
model = tiny_model(seed=7)
ck.save_checkpoint({path!r}, model, trainer_state={{"step": 7}}, tag=7)
"""


@pytest.mark.parametrize("step", ["weights", "trainer", "config", "version", "moved", "switched"])
def test_12_a_save_killed_at_any_step_leaves_a_loadable_checkpoint(tmp_path, step):
    path = str(tmp_path / "run" / "checkpoint")
    first = tiny_model(seed=3)
    save_checkpoint(path, first, trainer_state={"step": 3}, tag=3)
    if step == "moved":  # an older save made the name a real folder: the new save moves it aside
        real = os.path.realpath(path)
        os.remove(path)
        os.rename(real, path)
    script = _KILLED_SAVE.format(root=ROOT, step=step, path=path)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr[-2000:]
    loaded = load_model(path)
    weights = {k: v for k, v in loaded.state_dict().items()}
    old, new = first.state_dict(), tiny_model(seed=7).state_dict()
    assert all(torch.equal(weights[k], old[k]) for k in old) or all(torch.equal(weights[k], new[k]) for k in new)
    # The next save cleans the dead process's temporaries and the versions nothing points at.
    save_checkpoint(path, tiny_model(seed=8), tag=8)
    left = sorted(os.listdir(tmp_path / "run"))
    assert not [e for e in left if ".tmp-" in e or ".link-" in e or ".old-" in e], left
    assert len([e for e in left if e.startswith("checkpoint.")]) == 1, left
    assert torch.equal(load_model(path).mu_head.weight, tiny_model(seed=8).mu_head.weight)


def test_12_moving_best_off_an_old_version_removes_that_version(tmp_path):
    """A run whose best came before its last save kept that version when best moved to the last
    save: a whole checkpoint (21 MB for ReactFace's default config, 5.1 MB for the demo's) left in the run
    folder, linked by nothing."""
    from reactfast.train import link_checkpoint
    run = tmp_path / "run"
    path, best = str(run / "checkpoint"), str(run / "best")
    save_checkpoint(path, tiny_model(seed=3), trainer_state={"step": 3}, tag=3)
    link_checkpoint(path, best)
    save_checkpoint(path, tiny_model(seed=5), trainer_state={"step": 5}, tag=5)
    assert len([e for e in os.listdir(run) if e.startswith("checkpoint.")]) == 2   # best keeps step 3
    link_checkpoint(path, best)
    left = sorted(os.listdir(run))
    assert len([e for e in left if e.startswith("checkpoint.")]) == 1, left
    assert os.readlink(best) == os.readlink(path)
    for name in (path, best):
        assert torch.equal(load_model(name).mu_head.weight, tiny_model(seed=5).mu_head.weight)
    link_checkpoint(path, best)      # relinking the version it already names keeps it
    assert torch.equal(load_model(best).mu_head.weight, tiny_model(seed=5).mu_head.weight)


def test_12_checkpoint_files_have_the_usual_mode(checkpoint):
    modes = {f: os.stat(os.path.join(checkpoint, f)).st_mode & 0o777 for f in os.listdir(checkpoint)}
    mask = os.umask(0)
    os.umask(mask)
    assert set(modes.values()) == {0o666 & ~mask}, modes


def test_13_an_interrupted_npz_write_keeps_the_old_file(tmp_path, monkeypatch):
    from reactfast import _io

    path = str(tmp_path / "preds.npz")
    _io.save_npz(path, pred=np.ones(3))

    def broken(f, **arrays):
        f.write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(KeyboardInterrupt):
        _io.save_npz(path, pred=np.zeros(3))
    monkeypatch.undo()
    with np.load(path) as z:
        assert np.array_equal(z["pred"], np.ones(3))
    assert os.listdir(tmp_path) == ["preds.npz"]


def test_14_long_evaluations_show_progress(monkeypatch, capsys):
    monkeypatch.setattr(metrics, "_CHUNK_WORK", 1.0)
    rng = np.random.default_rng(0)
    pred, gt = rng.random((6, 2, 30, 25)).astype(np.float32), rng.random((6, 30, 25)).astype(np.float32)
    a = np.ones((6, 6), bool)
    want = metrics.frdist(pred, gt, a)
    assert metrics.frdist(pred, gt, a, progress=True) == pytest.approx(want)
    out = capsys.readouterr().out
    assert "[FRDist] 72 (query, candidate) pairs of 30 frames to compare" in out
    assert "pair 72/72" in out and "pairs/s eta" in out


def test_15_audio_feature_widths_must_agree(data):
    clip = _clip(data)
    np.save(_path(data, "audio", clip, ".npy"), np.zeros((120, 5), np.float32))
    ds = ReactDataset(data, "test", frames=60)
    with pytest.raises(DataError, match=r"audio features are \d+-d but clip .* gave \d+-d"):
        [ds[i] for i in range(len(ds))]


def test_16_3dmm_of_strings(data):
    clip = _clip(data)
    np.save(_path(data, "3dmm", clip, ".npy"), np.array([["a"] * 58] * 60))
    with pytest.raises(DataError, match="strings"):
        ReactDataset(data, "test", frames=60, modalities=("3dmm",)).load_clip(clip)


def test_17_evaluate_names_unreadable_files(tmp_path, capsys):
    gt = np.zeros((2, 5, 25), np.float32)
    np.save(tmp_path / "gt.npy", gt)
    np.save(tmp_path / "a.npy", np.eye(2))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    np.savez(tmp_path / "good.npz", pred=np.zeros((2, 1, 5, 25), np.float32))
    data = open(tmp_path / "good.npz", "rb").read()
    open(tmp_path / "cut.npz", "wb").write(data[: len(data) // 2])
    with open(tmp_path / "pickle.npy", "wb") as f:
        pickle.dump({"a": 1}, f)
    (tmp_path / "text.npy").write_text("1,2,3\n")   # numpy reads a file with no .npy header as a pickle
    (tmp_path / "json.npz").write_text('{"metrics": {}}')   # (and a .npz that is no zip file too)
    for name, words in (("obj.npy", "holds an array of Python objects"), ("cut.npz", "not a readable .npz"),
                        ("json.npz", "not a readable .npz archive (it has no zip directory: truncated, or not a "
                                     ".npz at all"),
                        ("pickle.npy", "holds pickled Python objects"),
                        ("text.npy", "is not a .npy file (no NumPy header; it begins b'1,2,3\\n')")):
        code, err = run(["evaluate", str(tmp_path / name), "--listener-gt", str(tmp_path / "gt.npy"), "--speaker",
                         str(tmp_path / "gt.npy"), "--appropriate", str(tmp_path / "a.npy"), "--device", "cpu"],
                        capsys)
        assert code == 2 and name in err and words in err, err


def test_17_evaluate_names_a_missing_key(tmp_path, capsys):
    np.savez(tmp_path / "two.npz", a=np.zeros(3), b=np.zeros(3))
    torch.save({"pred": torch.zeros(3)}, tmp_path / "p.pt")
    for name, key, words in (("two.npz", None, "holds no 'pred' array; its arrays: ['a', 'b']"),
                             ("two.npz", "c", "holds no array 'c'; its arrays: ['a', 'b']"),
                             ("p.pt", "c", "holds no key 'c'; its keys: ['pred']")):
        code, err = run(["evaluate", str(tmp_path / name), "--data", "x"] + (["--key", key] if key else []), capsys)
        assert code == 2 and words in err and "--key" in err, err


def test_18_checkpoint_of_another_configuration(checkpoint):
    cfg_path = os.path.join(checkpoint, "config.json")
    meta = json.load(open(cfg_path))
    meta["config"]["dim"] = 32
    json.dump(meta, open(cfg_path, "w"))
    with pytest.raises(CheckpointError, match=r"do not fit the model its config describes .*dist_tokens \(2, 16\) "
                                              r"vs \(2, 32\)"):
        load_model(checkpoint)


def test_19_stream_inputs():
    model = tiny_model().eval()
    speaker, audio = torch.randn(8, 83), torch.randn(16, 8)
    want = ReactionStream(model, 2, torch.Generator().manual_seed(0)).push(speaker, audio)["3dmm"]
    for cast in (lambda t: t.double(), lambda t: t.numpy()):
        got = ReactionStream(model, 2, torch.Generator().manual_seed(0)).push(cast(speaker), cast(audio))["3dmm"]
        assert torch.allclose(got, want, atol=1e-6)
    stream = ReactionStream(model, 2)
    with pytest.raises(TypeError, match="speaker must hold floating-point features, got dtype torch.int64"):
        stream.push(speaker.long(), audio)
    with pytest.raises(TypeError, match="audio must be a torch.Tensor or numpy array, got list"):
        stream.push(speaker, audio.tolist())
    with pytest.raises(ValueError, match=r"speaker must be \(B, T, 83\)"):
        stream.push(torch.randn(8, 58), audio)
    with pytest.raises(ValueError, match="window must be an int >= 1"):
        ReactionStream(model, 2, window=-8)


def test_20_plot_errors_and_channel_names(tmp_path, capsys):
    pred = np.zeros((2, 3, 10, 25), np.float32)
    np.savez(tmp_path / "nopred.npz", speaker=np.zeros((2, 10, 25), np.float32))
    np.savez(tmp_path / "badgt.npz", pred=pred, speaker=np.zeros((2, 10, 25), np.float32),
             listener_gt=np.zeros((2, 9, 25), np.float32))
    np.savez(tmp_path / "ok.npz", pred=pred, speaker=np.zeros((2, 10, 25), np.float32))
    code, err = run(["plot", str(tmp_path / "nopred.npz")], capsys)
    assert code == 2 and "not ['pred']" in err
    code, err = run(["plot", str(tmp_path / "badgt.npz")], capsys)
    assert code == 2 and "listener_gt (2, 9, 25) does not match speaker (2, 10, 25)" in err
    code, err = run(["plot", str(tmp_path / "ok.npz"), "--channels", "valence,AU12,happy", "--out",
                     str(tmp_path / "p.png")], capsys)
    assert code == 0 and (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    code, err = run(["plot", str(tmp_path / "ok.npz"), "--channels", "joy"], capsys)
    assert code == 2 and "--channels: 'joy'" in err
    code, err = run(["plot", str(tmp_path / "ok.npz"), "--channels", "30"], capsys)   # named 'channels' before
    assert code == 2 and "--channels: '30' is neither a channel index (0-24)" in err
    code, err = run(["plot", str(tmp_path / "ok.npz"), "--channels", "15,Valence"], capsys)   # drew it twice
    assert code == 2 and "--channels: 'Valence' names channel 15 (Valence) a second time" in err


def test_21_evaluate_frames(data, tmp_path, capsys):
    np.save(tmp_path / "one.npy", np.zeros((4, 1, 1, 25), np.float32))
    code, err = run(["evaluate", str(tmp_path / "one.npy"), "--data", data, "--device", "cpu"], capsys)
    assert code == 2 and "at least 2 frames" in err
    np.save(tmp_path / "long.npy", np.zeros((4, 1, 80, 25), np.float32))
    code, err = run(["evaluate", str(tmp_path / "long.npy"), "--data", data, "--device", "cpu"], capsys)
    assert code == 2 and "pred has 80 frames but the clips" in err and "have 60" in err


def test_22_bad_configs_name_their_source(checkpoint, tmp_path, capsys):
    cfg_path = os.path.join(checkpoint, "config.json")
    meta = json.load(open(cfg_path))
    json.dump({"model": "reactface"}, open(cfg_path, "w"))
    with pytest.raises(CheckpointError, match="config.json has no 'config' entry"):
        load_model(checkpoint)
    meta["config"]["dim"] = "sixteen"
    json.dump(meta, open(cfg_path, "w"))
    with pytest.raises(CheckpointError, match=r"config.json: its config does not make a reactface .*dim"):
        load_model(checkpoint)
    code, err = run(["train", "--out", str(tmp_path / "r"), "--clip-frames", "500", "--frames", "48", "--sessions",
                     "4", "--no-progress", "--device", "cpu", "--config", *TINY], capsys)
    assert code == 2 and "--clip-frames" in err and "48 frames per clip" in err
    code, err = run(["train", "--out", str(tmp_path / "r2"), "--frames", "48", "--sessions", "4", "--device", "cpu",
                     "--config", "dim=abc"], capsys)
    assert code == 2 and "--config: ReactFaceConfig.dim must be int, got 'abc'" in err


def test_23_personalize_and_ddim_argument_types():
    from reactfast.nn import personalize
    from reactfast.ops import ddim_step

    layer = torch.nn.TransformerDecoderLayer(16, 2, 32, batch_first=True)
    with pytest.raises(TypeError, match=r"shifts\['linear1'\] must be a tensor or a \(U, V\) pair"):
        with personalize(layer, {"linear1": [[0.0]]}):
            pass
    with pytest.raises(ValueError, match="x_t must have a batch dimension"):
        ddim_step(torch.tensor(1.0), torch.tensor(1.0), torch.zeros(1, 5))


def test_24_command_line_errors_are_one_line(tmp_path, capsys):
    code, err = run(["evaluate", str(tmp_path / "missing.npy"), "--data", "x"], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("reactfast evaluate: error: ")
    with pytest.raises(FileNotFoundError):
        cli.main(["evaluate", str(tmp_path / "missing.npy"), "--data", "x", "--debug"])


def test_25_generate_window_and_load_device_are_checked(checkpoint):
    model = tiny_model().eval()
    F, A, k = model.config.speaker_dim, model.config.audio_dim, model.audio_per_frame
    speaker, audio = torch.randn(1, 16, F), torch.randn(1, 16 * k, A)
    for bad in (0, -8, 2.0, True):   # 0 ran the model's window before
        with pytest.raises(ValueError, match="window must be an int >= 1"):
            model.generate(speaker, audio, 2, window=bad)
    assert model.generate(speaker, audio, 2, window=4)["3dmm"].shape == (1, 2, 16, 58)
    with pytest.raises(ValueError, match="window must be an int >= 1"):
        model.init_state(2, window=0)
    with pytest.raises(ValueError, match="samples must be an int >= 1"):   # 0 trained config.train_samples
        model(speaker, audio, samples=0)
    with pytest.raises(ValueError, match="device 'cuda:99' is not available"):
        load_model(checkpoint, device="cuda:99")
    assert next(load_model(checkpoint, device=torch.device("cpu")).parameters()).device.type == "cpu"


def test_26_generate_sessions_zero_is_an_error(checkpoint, tmp_path, capsys):
    code, err = run(["generate", "--checkpoint", checkpoint, "--sessions", "0", "--out", str(tmp_path / "p.npz"),
                     "--no-progress", "--device", "cpu"], capsys)   # 0 generated the default sessions before
    assert code == 2 and "--sessions must be >= 1, got 0" in err


def test_27_a_failed_stream_step_loses_no_frames(monkeypatch):
    """A push over three windows whose second step fails (out of memory, say): the first window's
    frames come with the next call, the failed window is tried again with the noise drawn for it
    (before, it drew fresh noise and every frame from there on differed), and the whole output
    equals an undisturbed stream's. The runner likewise consumes a window, and its noise, only
    after its step."""
    model = tiny_model().eval()
    W, k, F, A = model.config.window, model.audio_per_frame, model.config.speaker_dim, model.config.audio_dim
    speaker, audio = torch.randn(3 * W + 3, F), torch.randn((3 * W + 3) * k, A)
    calm = ReactionStream(model, 2, torch.Generator().manual_seed(5))
    expected = torch.cat([calm.push(speaker, audio)["3dmm"], calm.flush()["3dmm"]], 1)
    step, calls = model.step, []

    def failing_second_step(*args):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("out of memory (injected)")
        return step(*args)

    monkeypatch.setattr(model, "step", failing_second_step)
    stream = ReactionStream(model, 2, torch.Generator().manual_seed(5))
    with pytest.raises(RuntimeError, match="injected"):
        stream.push(speaker[:3 * W], audio[:3 * W * k])
    assert stream._pending == 2 * W
    got = [stream.push(speaker[3 * W:], audio[3 * W * k:])["3dmm"], stream.flush()["3dmm"]]
    assert got[0].shape[1] == 3 * W    # the finished window, the retried one and the third
    online = torch.cat(got, 1)
    assert online.shape == expected.shape
    assert torch.equal(online, expected)
    calls.clear()
    a, b = (ReactionStream(model, 1, torch.Generator().manual_seed(seed)) for seed in (1, 2))
    for s in (a, b):
        s.feed(speaker[:W], audio[:W * k])
    runner = StreamRunner(model)
    calls.append(1)   # the next call is the second: it fails
    with pytest.raises(RuntimeError, match="injected"):
        runner.step([a, b])
    assert a._pending == b._pending == W
    retried = runner.step([a, b])
    calm_pair = [ReactionStream(model, 1, torch.Generator().manual_seed(seed)) for seed in (1, 2)]
    for s in calm_pair:
        s.feed(speaker[:W], audio[:W * k])
    for out, want in zip(retried, runner.step(calm_pair)):
        assert torch.equal(out["3dmm"], want["3dmm"])


def test_27b_flush_steps_every_full_window_left_pending():
    """flush() after feed() of more than a window (feed without a runner, or a push that failed):
    it padded all the pending frames as one window and failed with "numel: integer multiplication
    overflow". It now steps the full windows, then the padded rest, as push and flush would."""
    model = tiny_model().eval()
    W, k, F, A = model.config.window, model.audio_per_frame, model.config.speaker_dim, model.config.audio_dim
    speaker, audio = torch.randn(2 * W + 3, F), torch.randn((2 * W + 3) * k, A)
    pushed = ReactionStream(model, 2, torch.Generator().manual_seed(3))
    expected = torch.cat([pushed.push(speaker, audio)["3dmm"], pushed.flush()["3dmm"]], 1)
    fed = ReactionStream(model, 2, torch.Generator().manual_seed(3))
    fed.feed(speaker, audio)
    out = fed.flush()["3dmm"]
    assert out.shape == (2, 2 * W + 3, 58) and torch.equal(out, expected) and fed.closed


def test_28_backend_spec_names_ops_and_their_backends(checkpoint, tmp_path, capsys):
    out = str(tmp_path / "p.npz")
    for spec, words in (("attn:cpp", "--backend: backend spec names unknown op 'attn'; the ops: add_layer_norm"),
                        ("biased_attention:cuda", "--backend: biased_attention has no 'cuda' backend; its backends: "
                                                  "triton, cpp, sdpa, reference")):
        code, err = run(["generate", "--checkpoint", checkpoint, "--out", out, "--no-progress", "--device", "cpu",
                         "--backend", spec], capsys)   # a misspelt op was ignored before
        assert code == 2 and words in err, err
        with pytest.raises(ValueError, match=words.split("--backend: ")[1].split(";")[0]):
            tiny_model().set_backend(spec)
    from reactfast.models import ReactFace

    with pytest.raises(ValueError, match="unknown op 'attn'"):
        ReactFace(tiny_model().config, backend="attn:cpp")
    gt = np.random.default_rng(0).random((2, 8, 25), dtype=np.float32)
    with pytest.raises(ValueError, match="dtw has no 'sdpa' backend"):
        metrics.evaluate(gt[:, None], gt, gt, np.eye(2, dtype=bool), backend="dtw:sdpa")


def test_29_train_fails_leaving_no_empty_run_folder(tmp_path, capsys):
    data = str(tmp_path / "data")
    SyntheticDyads(sessions=2, frames=60, prototypes=1, audio_dim=8, seed=0, split="train").write(data, "train")
    base = ["train", "--model", "reactface", "--data", data, "--frames", "60", "--steps", "1", "--no-progress",
            "--device", "cpu"]
    for extra, words in ((["--config", "dim=abc"], "ReactFaceConfig.dim must be int"),
                         (["--frames", "61"], "at least 61 are needed"),
                         (["--clip-frames", "0"], "--clip-frames must be >= 1, got 0")):
        out = tmp_path / "run"
        code, err = run([*base, "--out", str(out), *extra], capsys)
        assert code == 2 and words in err, err
        assert not out.exists()   # the run folder was made first and left behind, empty
    kept = tmp_path / "mine"
    kept.mkdir()                  # a folder the user made stays
    code, _ = run([*base, "--out", str(kept), "--config", "dim=abc"], capsys)
    assert code == 2 and kept.is_dir()


def test_30_trainer_names_a_wrong_model_dataset_or_config():
    from reactfast.train import Trainer
    from tests.train.helpers import tiny_data

    data = tiny_data().dataset(frames=64, window=32, stride=32)
    cfg = TrainConfig(steps=1, batch_size=2, progress=False)
    for kwargs, err, words in (   # each failed with an AttributeError before
            (dict(model=torch.nn.Linear(2, 2), dataset=data, config=cfg), TypeError,
             "model must be a reactfast generator .* got Linear"),
            (dict(model=tiny_model(), dataset=[1, 2, 3], config=cfg), TypeError,
             r"dataset must be a reactfast.data.ReactDataset \(or have its appropriate, dyads, load_clip\), got list"),
            (dict(model=tiny_model(), dataset=data, config={"steps": 1}), TypeError,
             "config must be a TrainConfig or None, got dict"),
            (dict(model=tiny_model(), dataset=data, config=cfg, val_dataset=[1]), TypeError,
             "val_dataset must be a reactfast.data.ReactDataset"),
            # refused only by the first checkpoint save, after training, without this check
            (dict(model=tiny_model(), dataset=data, config=cfg, extra_meta=["note"]), TypeError,
             "extra_meta must be a dict or None, got list"),
            # validation asked for without a validation set never ran, silently
            (dict(model=tiny_model(), dataset=data, config=TrainConfig(steps=1, batch_size=2, val_every=1)),
             ValueError, "TrainConfig.val_every is 1 but no val_dataset was given")):
        with pytest.raises(err, match=words):
            Trainer(device="cpu", **kwargs)


def test_31_generate_dataset_checks_before_generating():
    from reactfast.nn import BiasedCrossAttention
    from reactfast.train import generate_dataset
    from tests.train.helpers import tiny_data

    val = tiny_data(split="val").dataset(frames=32)
    for kwargs, err, words in (
            (dict(batch_size=0), ValueError, "batch_size must be an int >= 1, got 0"),   # range() arg 3 before
            # the first batch was generated, then an IndexError threw it away
            (dict(rows=[0, 1, 99], batch_size=2), ValueError, r"rows must lie in \[0, 8\), got \[99\]"),
            (dict(rows=3), ValueError, r"rows must be a list of integer row indices, got 3"),
            (dict(rows=[0, 1.5]), ValueError, r"rows must be a list of integer row indices"),
            (dict(model=torch.nn.Linear(2, 2)), TypeError, "model must be a reactfast generator"),
            (dict(dataset=[1, 2]), TypeError, "dataset must be a reactfast.data.ReactDataset"),
            (dict(samples=0), ValueError, "samples must be an int >= 1, got 0"),      # named num_samples before
            (dict(seed="a"), ValueError, r"seed must be an int in \[0, 2\*\*32\), got 'a'"),  # str + int
            (dict(progress="no"), ValueError, "progress must be a bool, got 'no'"),   # a true string: progress
            (dict(device="tpu"), ValueError, "device must be auto, cpu, cuda or cuda:N, got 'tpu'")):
        args = dict(model=tiny_model(), dataset=val, samples=2)
        args.update(kwargs)
        with pytest.raises(err, match=words):
            generate_dataset(**args)
    none = generate_dataset(tiny_model(), val, 2, rows=[])                     # {} before
    assert {k: v.shape for k, v in none.items()} == {"3dmm": (0, 2, 32, 58), "emotion": (0, 2, 32, 25)}
    as_numpy = generate_dataset(tiny_model(), val, 2, rows=np.arange(2))      # "an integer is required" before
    assert np.array_equal(as_numpy["emotion"], generate_dataset(tiny_model(), val, 2, rows=[0, 1])["emotion"])
    for kwargs, words in ((dict(period=0), "period must be an int >= 1, got 0"),   # failed at the first call
                          (dict(slopes=torch.ones(3)), r"one value per head \(2,\), got \(3,\)"),
                          # a float max_cache was taken, to fail in the first step's slice
                          (dict(max_cache=8.0), "max_cache must be an int >= 1, got 8.0"),
                          # an unknown backend was taken, to fail at the first forward
                          (dict(backend="nope"), r"backend must be one of \('triton', 'cpp', 'sdpa', 'reference'\)")):
        with pytest.raises(ValueError, match=words):
            BiasedCrossAttention(16, 2, **kwargs)
    attn = BiasedCrossAttention(16, 2)
    q, k = torch.rand(2, 5, 16), torch.rand(2, 7, 16)
    with pytest.raises(TypeError, match="query must be a floating-point tensor, got dtype torch.int64"):
        attn(q.long(), k, k)                        # "mat1 and mat2 must have the same dtype" before
    with pytest.raises(ValueError, match=r"key must hold at least one frame, got shape \(2, 0, 16\)"):
        attn(q, k[:, :0], k[:, :0])                 # named the projected heads' "k" before
    with pytest.raises(TypeError, match="cache must be a KVCache"):    # AttributeError on None.k before
        BiasedCrossAttention(16, 2).step(torch.rand(1, 2, 16), torch.rand(1, 2, 16), torch.rand(1, 2, 16), None)


def test_32_a_stream_on_another_device_than_its_model_is_refused():
    model = tiny_model().eval()
    with pytest.raises(ValueError, match=r"device meta is not the model's \(cpu\)"):
        ReactionStream(model, 2, device="meta")   # failed at the first push before
    assert ReactionStream(model, 2, device="cpu").device == torch.device("cpu")


def test_33_a_flag_and_a_config_key_for_one_setting_are_refused(tmp_path, capsys):
    data = str(tmp_path / "data")
    SyntheticDyads(sessions=2, frames=60, prototypes=1, audio_dim=8, seed=0, split="train").write(data, "train")
    code, err = run(["train", "--model", "reactface", "--data", data, "--frames", "60", "--clip-frames", "32",
                     "--steps", "1", "--config", "train.steps=5", "--out", str(tmp_path / "run"), "--no-progress",
                     "--device", "cpu"], capsys)   # the --config value won, silently
    assert code == 2 and "--steps 1 and --config train.steps=5 both set steps: give one" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", ["reactface", "perfrdiff", "reactdiff"])
def test_34_a_model_step_checks_shapes_without_reading_values(name):
    from reactfast import _backend
    from reactfast.demo import demo_model
    from reactfast.testing import forbid_host_reads

    model = demo_model(name, 8).eval()
    state = model.init_state(2)
    W, k = model.window, model.audio_per_frame
    speaker, audio = model.inputs_from_batch({
        "speaker_emotion": torch.randn(2, W, 25), "speaker_3dmm": torch.randn(2, W, 58),
        "speaker_audio": torch.randn(2, k * W, 8)})
    noise = model.draw_noise(2)
    with _backend.graph_safe(), forbid_host_reads():     # as on a GPU: shapes checked, no value read back
        model.step(state, speaker, audio, noise)
    # Each failed inside the step before (a size mismatch, a reshape), or ran on a short window.
    with pytest.raises(ValueError, match=r"noise must have shape .* got \(1,"):
        model.step(state, speaker, audio, noise[:1])
    with pytest.raises(ValueError, match=f"audio must have {k} rows per frame"):
        model.step(state, speaker, audio[:, :-1], noise)


@pytest.mark.parametrize("name", ["reactface", "perfrdiff", "pflposnet", "reactdiff"])
def test_35_loss_names_a_missing_batch_key_and_checks_its_generators(name):
    from reactfast.demo import CLIP_FRAMES, demo_model
    from reactfast.train.batches import collate_appropriate

    model = demo_model(name, 8)
    model.set_stage(model.demo_stages(10)[-1].stage)
    window, stride = model.training_windows(CLIP_FRAMES)
    data = SyntheticDyads(sessions=2, frames=CLIP_FRAMES, audio_dim=8, seed=0, split="train").dataset(
        frames=CLIP_FRAMES, window=window, stride=stride)
    batch = collate_appropriate(data, [0, 1], 4)
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    # A shape error deep in the model (or, in ReactDiff, a silent draw from torch's global generator) before.
    with pytest.raises(ValueError, match=r"one torch.Generator per item \(2\), got 1"):
        model.loss(batch, gens[:1])
    with pytest.raises(TypeError, match="generators must be a list of torch.Generator"):
        model.loss(batch, None)
    with pytest.raises(KeyError, match="the batch has no 'speaker_audio' .*collate_appropriate"):
        model.loss({k: v for k, v in batch.items() if k != "speaker_audio"}, gens)


def test_36_metric_tuning_arguments_are_checked():
    gt = np.random.default_rng(0).random((2, 30, 25), dtype=np.float32)
    pred, a = gt[:, None].repeat(2, 1), np.eye(2, dtype=bool)
    for call, words in ((lambda: metrics.frdist(pred, gt, a, chunk=0), "chunk must be an int >= 1, got 0"),
                        (lambda: metrics.frcorr(pred, gt, a, chunk=-1), "chunk must be an int >= 1, got -1"),
                        # a RuntimeError about a negative tensor dimension before
                        (lambda: metrics.frsyn(pred, gt, max_lag=-1), "max_lag must be an int >= 0, got -1")):
        with pytest.raises(ValueError, match=words):
            call()


def test_37_posnet_stream_names_wrong_arguments():
    from reactfast.models import PosNet, PosNetConfig, PosNetStream

    model, posnet = tiny_model().eval(), PosNet(PosNetConfig(window=8)).eval()
    with pytest.raises(TypeError, match="stream must be a reactfast.online.ReactionStream, got ReactFace"):
        PosNetStream(model, posnet)                       # an AttributeError ('model') before
    with pytest.raises(TypeError, match="posnet must be a PosNet, got ReactFace"):
        PosNetStream(ReactionStream(model, 2), model)     # accepted before, to fail at the first window


def test_38_build_names_a_config_that_is_not_a_dict():
    from reactfast import models

    with pytest.raises(TypeError, match="config must be a dict of reactface's config fields or None, got list"):
        models.build("reactface", [1])   # "cannot convert dictionary update sequence element #0" before
    assert models.build("reactface", {"dim": 32}).config.dim == 32


def test_39_an_empty_push_is_no_frames_yet_but_its_widths_are_checked():
    """A capture loop's empty chunk: push of 0 frames and 0 audio rows returned 'speaker must hold at
    least one frame'. It emits nothing now; wrong widths or stray audio rows are still refused."""
    model = tiny_model().eval()
    stream = ReactionStream(model, 2)
    out = stream.push(torch.randn(0, 83), torch.randn(0, 8))
    assert {k: tuple(v.shape) for k, v in out.items()} == {"3dmm": (2, 0, 58), "emotion": (2, 0, 25)}
    assert stream.frames_in == 0
    with pytest.raises(ValueError, match=r"speaker must be \(B, T, 83\).*empty push of speaker \(0, 58\)"):
        stream.push(torch.randn(0, 58), torch.randn(0, 8))
    with pytest.raises(ValueError, match=r"audio must be \(B, T \* 2, 8\).*empty push"):
        stream.push(torch.randn(0, 83), torch.randn(0, 9))
    with pytest.raises(ValueError, match="0 frames need 0 rows, got 2"):
        stream.push(torch.randn(0, 83), torch.randn(2, 8))


@pytest.mark.parametrize("flag,value,least", [("--steps", "0", 1), ("--batch-size", "0", 1), ("--warmup", "-1", 0),
                                              ("--ckpt-every", "-1", 0), ("--val-every", "-2", 0)])
def test_40_train_names_a_bad_count_flag_before_any_work(flag, value, least, tmp_path, capsys):
    """--steps 0 and --batch-size 0 were refused only after the data was built, as '--config:
    TrainConfig.steps must be ...' (a flag the user did not give); --ckpt-every -1 and --val-every -1
    were taken. Each now names its flag, before the run folder is made."""
    out = tmp_path / "run"
    code, err = run(["train", "--out", str(out), flag, value, "--no-progress"], capsys)
    assert code == 2 and f"reactfast train: error: {flag} must be >= {least}, got {value}" in err, err
    assert not out.exists()


def test_41_generate_names_a_bad_count_flag_first_and_a_run_folder_for_a_checkpoint(checkpoint, tmp_path, capsys):
    """--samples 0 failed only after the model was loaded and the data built ('num_samples must be
    ...'); a run folder given as the checkpoint said only that config.json is missing."""
    out = str(tmp_path / "p.npz")
    code, err = run(["generate", "--checkpoint", "nowhere", "--samples", "0", "--out", out], capsys)
    assert code == 2 and "--samples must be >= 1, got 0" in err, err
    run_folder = os.path.dirname(checkpoint)
    code, err = run(["generate", "--checkpoint", run_folder, "--out", out, "--no-progress"], capsys)
    assert code == 2 and f"it holds a training run's checkpoints: give {checkpoint}" in err, err


@pytest.mark.parametrize("command", [["train"], ["generate", "--checkpoint", "nowhere"], ["demo"], ["data", "synth"]])
@pytest.mark.parametrize("seed", ["-5", str(2 ** 32)])
def test_48_every_command_names_a_seed_out_of_range_first(command, seed, tmp_path, capsys):
    """generate --seed -1 failed after the model was loaded and the data built ('seed must be an int
    >= 0'); 2**32 and above reached numpy's and torch's seeding (train: 'TrainConfig.seed', the demo:
    after its data was written)."""
    out = tmp_path / "out"
    code, err = run(command + ["--out", str(out), "--seed", seed], capsys)
    assert code == 2 and f"--seed must be an int in [0, 2**32), got {seed}" in err, err
    assert not out.exists()


def test_42_metric_and_dtw_flags_are_bools_and_groups_triples():
    """frsyn_all_samples="False" computed the corrected FRSyn variant instead of the official one
    (any non-empty string is true); abandon="no" abandoned; groups="abc" or a (start, end) pair failed
    with "not enough values to unpack"; from_lists cut the float index 0.5 to 0."""
    from reactfast.metrics.candidates import from_lists
    from reactfast.ops import weighted_dtw_min

    rng = np.random.default_rng(0)
    pred = rng.random((3, 2, 20, 25)).astype(np.float32)
    gt, sp, a = pred[:, 0], pred[:, 1], np.eye(3, dtype=bool)
    with pytest.raises(ValueError, match="frsyn_all_samples must be a bool, got 'False'"):
        metrics.evaluate(pred, gt, sp, a, frsyn_all_samples="False")
    with pytest.raises(ValueError, match="abandon must be a bool, got 'no'"):
        metrics.frdist(pred, gt, a, abandon="no")
    with pytest.raises(ValueError, match="all_samples must be a bool, got 1"):
        metrics.frsyn(pred, sp, all_samples=1)
    assert metrics.frsyn(pred, sp, all_samples=np.bool_(True)) == metrics.frsyn(pred, sp, all_samples=True)
    x, y, cand = torch.rand(2, 9, 4), torch.rand(3, 9, 4), from_lists([[0, 1], [2]])
    for groups, match in (("abc", "groups must be a list of"), ([(0, 4)], r"each must be a \(start, end, weight\)"),
                          ([(0.5, 4, 1.0)], "start and end must be an int"), ([(0, 4, -1.0)], "weights must be"),
                          ([(2, 2, 1.0)], "0 <= start < end <= 4")):
        with pytest.raises(ValueError, match=match):
            weighted_dtw_min(x, y, cand, groups=groups)
    with pytest.raises(ValueError, match="abandon must be a bool"):
        weighted_dtw_min(x, y, cand, groups=[(0, 4, 1.0)], abandon="no")
    assert weighted_dtw_min(x, y, cand, groups=np.array([[0, 4, 1]]).tolist())[1].tolist() == \
        weighted_dtw_min(x, y, cand, groups=[(0, 4, 1.0)])[1].tolist()
    with pytest.raises(ValueError, match=r"candidates\[0\] must be a list of integer indices, got \[0.5\]"):
        from_lists([[0.5]])
    assert [t.tolist() for t in from_lists([np.array([0, 2]), torch.tensor([1]), []])] == [[0, 2, 3, 3], [0, 2, 1]]


def test_43_dropout_ops_take_training_as_a_bool():
    """training="no" dropped elements (a non-empty string is true)."""
    from reactfast.ops import add_layer_norm, dropout, feed_forward, gelu_dropout

    x, w, w1, w2 = torch.randn(4, 8), torch.ones(8), torch.randn(16, 8), torch.randn(8, 16)
    calls = {"dropout": lambda t: dropout(x, 0.5, training=t),
             "gelu_dropout": lambda t: gelu_dropout(x, 0.5, training=t),
             "add_layer_norm": lambda t: add_layer_norm(x, x, w, p=0.5, training=t),
             "feed_forward": lambda t: feed_forward(x, w1, None, w2, None, p_hidden=0.5, training=t)}
    for name, call in calls.items():
        with pytest.raises(ValueError, match="training must be a bool, got 'no'"):
            call("no")
        assert torch.equal(call(False), call(np.bool_(False))), name


def test_44_generator_inputs_and_checkpoint_paths_are_named(checkpoint):
    model = tiny_model().eval()
    F, A, k = model.config.speaker_dim, model.config.audio_dim, model.audio_per_frame
    speaker, audio = torch.randn(1, 16, F), torch.randn(1, 16 * k, A)
    # Integer features reached the first matrix product ("mat1 and mat2 must have the same dtype").
    with pytest.raises(TypeError, match="speaker must hold floating-point features, got dtype torch.int64"):
        model.generate(speaker.long(), audio, 2)
    with pytest.raises(TypeError, match="audio must hold floating-point features, got dtype torch.int32"):
        model.generate(speaker, audio.int(), 2)
    with pytest.raises(TypeError, match=r"speaker must be a torch.Tensor, got ndarray \(torch.from_numpy"):
        model.generate(speaker.numpy(), audio, 2)
    # A path that is not one reached os.fspath ("expected str, bytes or os.PathLike object").
    for call in (lambda: load_model(None), lambda: read_config(7), lambda: save_checkpoint(None, model)):
        with pytest.raises(TypeError, match="path must name a checkpoint folder"):
            call()
    # A device of another kind is named before the checkpoint is read.
    with pytest.raises(ValueError, match="device must be auto, cpu, cuda or cuda:N, got 'tpu'"):
        load_model(checkpoint, device="tpu")


def test_45_a_streams_window_is_checked_at_creation_and_the_runner_takes_a_list():
    model = tiny_model().eval()
    C = model.config.context
    # A window over half the context failed at the first full window, after it had been buffered.
    with pytest.raises(ValueError, match=f"window of {C} frames is larger than half the context"):
        ReactionStream(model, 2, window=C)
    stream = ReactionStream(model, 2, window=C // 2)
    with pytest.raises(TypeError, match=r"streams must be a sequence .* got ReactionStream: wrap one stream"):
        StreamRunner(model).step(stream)
    assert StreamRunner(model).step([stream]) == [None]


def test_46_plot_and_config_arguments_are_named(tmp_path):
    from reactfast import configs

    rng = np.random.default_rng(0)
    speaker, reactions, path = rng.random((50, 25)), rng.random((3, 50, 25)), str(tmp_path / "p.png")
    for kwargs, err, words in (
            (dict(fps=0), ValueError, "fps must be an int >= 1, got 0"),          # a time axis of inf before
            (dict(listener=rng.random((40, 25))), ValueError, r"listener must be \(T, D\) as speaker"),  # matplotlib's
            (dict(channels=(1.5,)), ValueError, r"channels must be indices in \[0, 25\), got \[1.5\]"),  # tuple index
            (dict(max_reactions=-1), ValueError, "max_reactions must be an int >= 0")):
        with pytest.raises(err, match=words):
            plot_reactions(path, speaker, reactions, **kwargs)
    assert not os.path.exists(path)
    assert plot_reactions(path, speaker, reactions, channels=(np.int64(3),), max_reactions=0) == path
    # One string for the list iterated its characters ("--config: no such file: d").
    with pytest.raises(TypeError, match=r"items must be a list of --config arguments .* give \['dim=3'\]"):
        configs.parse("dim=3")


@pytest.mark.parametrize("field,value,err,words", [
    ("compile", "no", ValueError, "TrainConfig.compile must be a bool, got 'no'"),      # a true string: compiled
    ("amp", "false", ValueError, "TrainConfig.amp must be a bool"),
    ("deterministic", 1, ValueError, "TrainConfig.deterministic must be a bool"),
    ("seed", -1, ValueError, r"TrainConfig.seed must be an int in \[0, 2\*\*32\), got -1"),  # numpy's seeding failed
    ("seed", 2 ** 64, ValueError, r"TrainConfig.seed must be an int in \[0, 2\*\*32\)"),
    ("out_dir", 5, TypeError, "TrainConfig.out_dir must be a folder path or None, got int"),
])
def test_47_train_config_flags_seed_and_folder_are_checked(field, value, err, words):
    from reactfast.train import TrainConfig

    with pytest.raises(err, match=words):
        TrainConfig(**{field: value})


def test_49_candidates_from_appropriate_checks_its_matrix_and_rows():
    from reactfast.metrics.candidates import from_appropriate

    a = np.eye(4, dtype=bool)
    offset, index = from_appropriate(a.astype(int), 2, np.arange(2))
    assert offset.tolist() == [0, 1, 2, 3, 4] and index.tolist() == [0, 0, 1, 1]
    for args, words in (((a, 2, [-1]), r"rows must lie in \[0, 4\), got \[-1\]"),     # took the last row
                        ((a, 2, [9]), r"rows must lie in \[0, 4\), got \[9\]"),       # an IndexError
                        ((a, 2, [0.5]), "rows must be a list of integer row indices"),
                        ((a, 0), "samples must be an int >= 1, got 0"),                  # no queries, silently
                        ((np.ones((3, 4), bool), 2), r"square \(N, N\) matrix, got shape \(3, 4\)"),
                        ((a * 0.5, 2), "boolean or hold only 0 and 1"),                  # 0.5 counted as 1
                        ((np.diag([1, 1, 0, 1]), 2), r"rows \[2\] are empty")):          # said, not checked
        with pytest.raises(ValueError, match=words):
            from_appropriate(*args)
    # The suite's rows= went through int(): 0.5 computed row 0's terms.
    rng = np.random.default_rng(0)
    pred, gt = rng.random((4, 2, 20, 25)).astype(np.float32), rng.random((4, 20, 25)).astype(np.float32)
    with pytest.raises(ValueError, match="rows must be a list of integer row indices"):
        metrics.frcorr(pred, gt, a, rows=[0.5])


def test_50_weight_shift_takes_empty_batches_windows_and_layers_as_nn_linear_does():
    """WeightShiftLinear with a shift raised where nn.Linear (its own forward without one) returns
    an empty result: an empty batch was ZeroDivisionError 'integer modulo by zero', an empty window
    'x must not be empty'. Now the output is empty (or, with d_in 0, the bias) and the gradients zero."""
    from reactfast import ops
    from reactfast.nn import WeightShiftLinear
    from reactfast.nn.personalize import WeightShiftMultiheadAttention

    torch.manual_seed(0)
    lin = WeightShiftLinear(5, 7)
    for x, shift in ((torch.randn(0, 3, 5), torch.randn(0, 7, 5)),                 # no samples, no listeners
                     (torch.randn(2, 0, 5), torch.randn(2, 7, 5)),                 # empty windows
                     (torch.randn(4, 0, 5), torch.randn(2, 7, 5)),                 # empty, two samples a shift
                     (torch.randn(2, 0, 5), (torch.randn(2, 7, 3), torch.randn(2, 5, 3)))):   # low rank
        x.requires_grad_()
        leaves = list(shift) if isinstance(shift, tuple) else [shift]
        for t in leaves:
            t.requires_grad_()
        lin.zero_grad()
        y = lin(x, shift)
        assert y.shape == (*x.shape[:-1], 7)
        y.sum().backward()
        assert all(t.grad is not None and not t.grad.any() for t in leaves + [lin.weight, lin.bias])
    with pytest.raises(ValueError, match="a batch of 2 samples does not split into 0 equal groups"):
        lin(torch.randn(2, 3, 5), torch.randn(0, 7, 5))
    # The attention with a packed shifted in-projection: its head split said 'cannot reshape'.
    mha = WeightShiftMultiheadAttention(8, 2, batch_first=True)
    x = torch.randn(0, 4, 8)
    out, weights = mha(x, x, x, shift=torch.randn(0, 24, 8))
    assert out.shape == (0, 4, 8) and weights.shape == (0, 4, 4)
    # No input features: the bias alone, on the forced C++ backend too (no kernel runs).
    bias = torch.randn(4)
    for backend in (None, "cpp"):
        y = ops.weight_shift_linear(torch.randn(2, 3, 0), torch.randn(4, 0), torch.randn(2, 4, 0), bias,
                                    backend=backend)
        assert torch.equal(y, bias.expand(2, 3, 4))


@pytest.mark.parametrize("name", ["reactface", "perfrdiff", "reactdiff", "pflposnet"])
def test_51_generate_names_an_empty_batch(name):
    """A batch of 0 conversations: ReactFace and PFLPosNet said '0 samples do not split evenly into 0
    conversations', PerFRDiff raised torch's 'cannot reshape tensor of 0 elements'."""
    from reactfast import models

    cls = models.get(name)
    model = cls(cls.demo_config(8)).eval()
    width = layout.EMOTION_DIM if name == "reactdiff" else layout.TDMM_DIM + layout.EMOTION_DIM
    frames = 2 * model.window
    with pytest.raises(ValueError, match=r"speaker must hold at least one conversation, got a batch of 0"):
        model.generate(torch.rand(0, frames, width), torch.rand(0, frames * model.audio_per_frame, 8), num_samples=2)


def test_52_pfl_crop_arguments_are_named():
    """crop_window(boxes, 256) raised "'int' object is not iterable", omega NaN (``data crop
    --omega nan``) "cannot convert float NaN to integer", boxes "abc" numpy's "could not convert
    string to float"; crop_video of a numpy array "'numpy.ndarray' object has no attribute 'dim'"."""
    from reactfast.data.pfl import crop_video, crop_window

    boxes = np.array([[50, 50, 20, 20], [60, 55, 20, 22]], float)
    assert crop_window(boxes, 30) == crop_window(boxes, (30, 30)) == crop_window(boxes, np.array([30, 30]))
    for kwargs, words in ((dict(omega=(float("nan"), 5)), "omega must be the largest window"),
                          (dict(omega=(1, 2, 3)), "omega must be"),
                          (dict(omega="ab"), "omega must be"),
                          (dict(frame_size=(0, 10)), r"frame_size must be the frames' \(height, width\)"),
                          (dict(frame_size=(10.5, 10)), "frame_size must be")):
        with pytest.raises(ValueError, match=words):
            crop_window(boxes, **kwargs)
    with pytest.raises(ValueError, match=r"boxes must be \(T, 4\) numbers"):
        crop_window("abc")
    video = np.random.default_rng(0).random((2, 3, 100, 100))
    assert torch.equal(crop_video(video, boxes), crop_video(torch.from_numpy(video), boxes))
    assert crop_video(video, boxes, out_size=8).shape == (2, 3, 8, 8)
    with pytest.raises(TypeError, match="video must be a torch.Tensor or numpy array, got list"):
        crop_video([[1.0]], boxes)
    with pytest.raises(ValueError, match="video frames must hold pixels"):
        crop_video(torch.rand(2, 3, 0, 100), boxes)
    with pytest.raises(ValueError, match="out_size must be"):
        crop_video(video, boxes, out_size=(8, 0))


def test_53_generate_and_plot_outputs_carry_the_suffix_their_readers_go_by(checkpoint, tmp_path, capsys):
    """``generate --out preds.txt`` wrote a .npz archive under that name, which ``evaluate`` and
    ``plot`` then refused by its suffix ('unsupported file type'), after the sampling; ``plot --out
    fig.pdf`` wrote PNG data under a .pdf name. Both are refused before any work."""
    code, err = run(["generate", "--checkpoint", checkpoint, "--out", str(tmp_path / "preds.txt"), "--no-progress"],
                    capsys)
    assert code == 2 and "preds.txt must end in .npz" in err, err
    assert not (tmp_path / "preds.txt").exists()
    np.savez(tmp_path / "ok.npz", pred=np.zeros((1, 2, 10, 25), np.float32), speaker=np.zeros((1, 10, 25), np.float32))
    code, err = run(["plot", str(tmp_path / "ok.npz"), "--out", str(tmp_path / "fig.pdf")], capsys)
    assert code == 2 and "fig.pdf must end in .png" in err, err
    code, err = run(["plot", str(tmp_path / "ok.npz"), "--out", str(tmp_path / "FIG.PNG")], capsys)
    assert code == 0 and (tmp_path / "FIG.PNG").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("call,err,words", [
    # a missing input failed inside the checks ("'NoneType' object has no attribute 'shape'")
    (lambda p: metrics.frcorr(p, None, np.eye(2)), TypeError, "listener_gt must be a numpy array or torch tensor"),
    (lambda p: metrics.frdist(p, p[:, 0], None), TypeError, r"appropriate must be an \(N, N\) bool or 0/1 matrix"),
    (lambda p: metrics.evaluate(p, p[:, 0], p[:, 0], None), TypeError, "appropriate must be an"),
    # a backend that is not a string: "'int' object has no attribute 'split'"; an array: "truth value ... ambiguous"
    (lambda p: metrics.frcorr(p, p[:, 0], np.eye(2), backend=3), TypeError, "backend must be a backend name or a spec"),
    (lambda p: metrics.frsyn(p, p[:, 0], backend=np.zeros(2)), TypeError, "backend must be a backend name"),
    # rows as one int: "'int' object is not iterable"
    (lambda p: metrics.frdist(p, p[:, 0], np.eye(2), rows=1), ValueError, "rows must be a list of integer row"),
    # sync_offsets and pose_seam_jump took anything (torch's errors from inside, or a wrong answer)
    (lambda p: metrics.sync_offsets(p), TypeError, r"rs must be a float tensor \(M, 2L \+ 1\)"),
    (lambda p: metrics.sync_offsets(torch.zeros(3, 4)), ValueError, "rs must hold 2L \\+ 1 lags"),
    (lambda p: metrics.pose_seam_jump(torch.zeros(2, 10, 25), 8), TypeError,
     r"frames must be a float tensor \(B, T, 58\)"),
    (lambda p: metrics.pose_seam_jump(torch.zeros(2, 10, 58), 0), ValueError, "window must be an int >= 1, got 0"),
    # "could not convert string to float: 'x'"; "float() argument must be ... not 'NoneType'"
    (lambda p: layout.check_emotion(np.array(["x"] * 25)), TypeError, "emotion must hold numbers"),
    (lambda p: layout.check_emotion(p, tolerance=None), ValueError, "tolerance must be a finite number >= 0"),
    # "'<' not supported between instances of 'float' and 'NoneType'"; "truth value ... ambiguous"
    (lambda p: diffusion.betas_for("linear", 10, beta_start=None), ValueError, "beta_start must be a finite number"),
    (lambda p: diffusion.betas_for(np.zeros(2), 10), ValueError, "schedule must be one of"),
    # "expected str, bytes or os.PathLike object"; "'int' object is not iterable"
    (lambda p: plot_reactions(None, p[0, 0], p[0]), TypeError, "path must be a file path"),
    (lambda p: plot_reactions("a.png", p[0, 0], p[0], channels=15), ValueError, "channels must be a sequence"),
    (lambda p: plot_reactions("a.png", p[0, 0], p[0], title=np.zeros(2)), TypeError, "title must be a str"),
])
def test_54_metric_helpers_schedules_and_plots_name_their_arguments(call, err, words):
    pred = np.random.default_rng(0).random((2, 2, 60, 25)).astype(np.float32)
    with pytest.raises(err, match=words):
        call(pred)


def test_55_checkpoint_and_seed_arguments_are_named(tmp_path):
    """save_checkpoint's tag went into a format string after the files were written ("Unknown
    format code 'd'"); load_into said "NoneType is not a registered reactfast generator" and took
    an array for adopt_dtype ("truth value ... ambiguous"); seed_everything took 1.5 to numpy
    ("Cannot cast scalar") and None to a modulo."""
    from reactfast.train import load_into, seed_everything

    model, path = tiny_model(), str(tmp_path / "ck")
    with pytest.raises(ValueError, match="tag must be an int >= 0, got 'x'"):
        save_checkpoint(path, model, tag="x")
    assert not os.listdir(tmp_path)
    save_checkpoint(path, model, tag=3)
    with pytest.raises(TypeError, match="model must be a reactfast generator .*, got NoneType"):
        load_into(None, path)
    with pytest.raises(ValueError, match="adopt_dtype must be"):
        load_into(model, path, adopt_dtype=np.zeros(2))
    for seed in (None, 1.5, -1, 2 ** 32):
        with pytest.raises(ValueError, match=r"seed must be an int in \[0, 2\*\*32\)"):
            seed_everything(seed)


def _wav():
    return np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1


def _x_half(x, t, c):
    return x * 0.5


@pytest.mark.parametrize("call,err,words", [
    # the registry: a list was unhashable; a non-dict of fields "is not iterable"; config_of a None
    # "has no attribute 'config'"
    (lambda: models.get(["reactface"]), ValueError, r"unknown model \['reactface'\]; known:"),
    (lambda: models.make_config("reactface", None), TypeError, "fields must be a dict of reactface's config fields"),
    (lambda: models.config_of(None), TypeError, "model must be a reactfast generator"),
    # DDIM: an array tested with `in` ("truth value ... ambiguous"); a string scale or backend failed in
    # the first step, after the first denoiser call; a cond that is not a tensor "has no attribute 'device'";
    # a null_cond of the wrong shape failed in expand_as
    (lambda: diffusion.DDIMScheduler(prediction=np.zeros(2)), ValueError, "prediction must be one of"),
    (lambda: diffusion.DDIMScheduler(final_alpha_one=np.zeros(2)), ValueError, "final_alpha_one must be a bool"),
    (lambda: diffusion.sample(_x_half, (2, 3), cond=torch.zeros(2, 1), steps=3, guidance_scale="x"), ValueError,
     "guidance_scale must be None or a finite number"),
    (lambda: diffusion.sample(_x_half, (2, 3), steps=3, backend=np.zeros(2)), ValueError,
     r"backend must be one of \('triton', 'reference'\) or None"),
    (lambda: diffusion.sample(_x_half, (2, 3), steps=3, backend="cpp"), ValueError,
     r"backend must be one of \('triton', 'reference'\) or None, got 'cpp'"),
    (lambda: diffusion.sample(_x_half, (2, 3), cond=[0, 1], steps=3), TypeError,
     "cond must be a torch.Tensor or None, got list"),
    (lambda: diffusion.sample(_x_half, (2, 3), steps=3, noise=0.5), TypeError, "noise must be a torch.Tensor"),
    (lambda: diffusion.sample(_x_half, (2, 3), cond=torch.zeros(2, 1), steps=3, guidance_scale=2.0,
                              null_cond=torch.zeros(0)), ValueError,
     r"null_cond must broadcast to cond's shape \(2, 1\)"),
    # BiasedCrossAttention: kdim "empty(): argument 'size' failed to unpack"; dropout "'<' not supported";
    # bias and backend arrays "truth value ... ambiguous"
    (lambda: BiasedCrossAttention(16, 2, kdim=1.5), ValueError, "kdim must be an int >= 1, got 1.5"),
    (lambda: BiasedCrossAttention(16, 2, vdim=-1), ValueError, "vdim must be an int >= 1, got -1"),
    (lambda: BiasedCrossAttention(16, 2, dropout=None), ValueError, "dropout must be a finite number"),
    (lambda: BiasedCrossAttention(16, 2, bias=np.zeros(2)), ValueError, "bias must be a bool"),
    (lambda: BiasedCrossAttention(16, 2, backend=np.zeros(2)), ValueError, "backend must be one of"),
    # streams: a device index torch refused in its own words; graph tested for truth
    (lambda: ReactionStream(tiny_model(), 2, device=-1), ValueError, "device must be a torch device"),
    (lambda: StreamRunner(tiny_model(), graph=np.zeros(2)), ValueError, "graph must be a bool"),
    # personalisation: "'NoneType' object has no attribute 'named_modules'"; a batch_dim of None
    # reached transpose()
    (lambda: personalized_call(None, {}, torch.zeros(2, 4)), TypeError, "model must be a torch.nn.Module"),
    (lambda: personalized_call(torch.nn.Linear(4, 6), {"": torch.zeros(2, 6, 4)}, torch.zeros(2, 4), batch_dim=None),
     ValueError, "batch_dim must be an int >= 0, got None"),
    # audio: fps 0 divided by zero, n_mfcc 0 an IndexError, a kind array "truth value ... ambiguous", a
    # path True read stdout as a file descriptor
    (lambda: audio_io.mfcc(_wav(), 16000, 25, fps=0), ValueError, "fps must be an int >= 1, got 0"),
    (lambda: audio_io.mfcc(_wav(), 16000, 25, n_mfcc=0), ValueError, "n_mfcc must be an int >= 1, got 0"),
    (lambda: audio_io.mfcc(_wav(), 16000, 25, n_mfcc=30), ValueError, r"n_mfcc \(30\) must be at most n_mels \(26\)"),
    (lambda: audio_io.baseline_features(_wav(), 16000, 25, fps=1.5), ValueError, "fps must be an int >= 1, got 1.5"),
    (lambda: audio_io.features(_wav(), 16000, 25, kind=np.zeros(2)), ValueError, "audio features must be one of"),
    (lambda: audio_io.read_wav(True), TypeError, "path must be a file path"),
    (lambda: check_split(None, "train"), TypeError, "root must be the data folder's path"),
])
def test_56_registry_sampling_attention_streams_and_audio_name_their_arguments(call, err, words):
    with pytest.raises(err, match=words):
        call()


def test_57_streaming_model_methods_name_their_arguments():
    """init_state compared a None batch with '<' and took True as a batch of one; a step given
    something else than a state failed reading ``.batch``; draw_noise and forward took a string for
    the generator ("'str' object has no attribute 'device'"); draw_windows took None windows into
    range(); set_stage and PerFRDiff's window and guidance tested arrays for truth."""
    from reactfast.models import PerFRDiff, ReactDiff

    model = tiny_model()
    for kwargs, err, words in ((dict(batch=None), ValueError, "batch must be an int >= 1, got None"),
                               (dict(batch=True), ValueError, "batch must be an int >= 1, got True"),
                               (dict(batch=4, conversations="x"), ValueError, "conversations must be an int >= 1"),
                               (dict(batch=2, device=-1), ValueError, "device must be a torch device")):
        with pytest.raises(err, match=words):
            model.init_state(**kwargs)
    speaker, audio = torch.zeros(2, 8, 83), torch.zeros(2, 16, 8)
    with pytest.raises(TypeError, match="state must be a ReactFaceState .*, got NoneType"):
        model.step(None, speaker, audio, model.draw_noise(2))
    with pytest.raises(ValueError, match="batch must be an int >= 1, got 1.5"):
        model.draw_noise(1.5)
    with pytest.raises(TypeError, match="generator must be a torch.Generator or None, got str"):
        model.draw_noise(2, "x")
    with pytest.raises(TypeError, match="generator must be a torch.Generator or None, got int"):
        model(torch.zeros(1, 16, 83), torch.zeros(1, 32, 8), generator=0)
    with pytest.raises(ValueError, match=r"noise must have shape \(1, 2, 16\), got list"):
        model(torch.zeros(1, 16, 83), torch.zeros(1, 32, 8), noise=[])
    with pytest.raises(ValueError, match="windows must be an int >= 1, got None"):
        model.draw_windows(2, 2, None)
    with pytest.raises(ValueError, match=r"trains in stages \(1,\), got stage array"):
        model.set_stage(np.zeros(2))
    for cls in (PerFRDiff, ReactDiff):
        other = cls(cls.demo_config(8))
        with pytest.raises(ValueError, match="window must be an int >= 1"):
            other.init_state(2, window=np.zeros(2))
        with pytest.raises(TypeError, match=f"state must be a {cls.__name__}State"):
            other.step(model.init_state(2), speaker, audio, other.draw_noise(2))
    perfrdiff = PerFRDiff(PerFRDiff.demo_config(8)).eval()
    data = SyntheticDyads(sessions=2, frames=64, audio_dim=8, seed=0).dataset(frames=50, window=None)
    speaker, audio = perfrdiff.inputs_from_batch({key: value[None] for key, value in data[0].items()})
    with pytest.raises(ValueError, match="guidance must be a finite number"):
        perfrdiff.generate(speaker, audio, 1, guidance="x")


@pytest.mark.parametrize("call,err,words", [
    # a backend array tested with `in` raised "truth value ... ambiguous", in the op or in its dispatch
    (lambda x: ops.ccc(x, x, backend=np.zeros(2)), ValueError, "backend must be one of"),
    (lambda x: ops.dtw(x, x, backend=np.zeros(2)), ValueError, "backend must be one of"),
    (lambda x: ops.tlcc(x, x, 3, backend=np.zeros(2)), ValueError, "backend must be one of"),
    (lambda x: ops.frame_diff(x, backend=np.zeros(2)), ValueError, "backend must be one of"),
    (lambda x: ops.spread_sums(x[None], backend=np.zeros(2)), ValueError, "backend must be one of"),
    (lambda x: ops.biased_attention(x[None], x[None], x[None], backend=np.zeros(2)), ValueError,
     "backend must be one of"),
    (lambda x: ops.weight_shift_linear(x, torch.zeros(3, 4), torch.zeros(2, 3, 4), backend=np.zeros(2)), ValueError,
     "backend must be one of"),
    # a string scale: "could not convert string to float"
    (lambda x: ops.biased_attention(x[None], x[None], x[None], scale="x"), ValueError, "scale must be a finite number"),
    # feed_forward's two dropouts were both called "p" and "seed"
    (lambda x: ops.feed_forward(x, torch.zeros(8, 4), None, torch.zeros(4, 8), None, p_out=1.5), ValueError,
     r"p_out must be a probability in \[0, 1\], got 1.5"),
    (lambda x: ops.feed_forward(x, torch.zeros(8, 4), None, torch.zeros(4, 8), None, seed_hidden="x"), TypeError,
     "seed_hidden must be an int, got str"),
])
def test_58_ops_name_their_backend_scale_and_dropout_arguments(call, err, words):
    with pytest.raises(err, match=words):
        call(torch.rand(2, 10, 4))


@pytest.mark.parametrize("make,words", [
    # a string or an array reached a range comparison ("'<=' not supported", "truth value ... ambiguous")
    (lambda: models.ReactFaceConfig(dropout="x"), r"ReactFaceConfig.dropout must be in \[0, 1\), got 'x'"),
    (lambda: models.ReactFaceConfig(momentum=np.zeros(2)), r"ReactFaceConfig.momentum must be in \[0, 1\)"),
    (lambda: models.PerFRDiffConfig(cond_dropout=None), r"PerFRDiffConfig.cond_dropout must be in \[0, 1\)"),
    (lambda: models.ReactDiffConfig(ema="x"), r"ReactDiffConfig.ema must be in \[0, 1\)"),
    (lambda: TrainConfig(min_lr_ratio=None), "TrainConfig.min_lr_ratio must be a finite number"),
    (lambda: SyntheticDyads(split=np.zeros(2)), "split must be one of"),
    # a number was "not iterable"; a string became a tuple of its characters
    (lambda: models.ReactDiffConfig(mults=2), "ReactDiffConfig.mults must be a non-empty list of int, got 2"),
    (lambda: models.PerFRDiffConfig(edited_layers="to_emotion_feat"),
     "PerFRDiffConfig.edited_layers must be a list of str"),
])
def test_59_config_fractions_and_lists_are_named(make, words):
    with pytest.raises(ValueError, match=words):
        make()
    # No edited layers (no personalisation) stays a valid PerFRDiff.
    assert models.PerFRDiffConfig(edited_layers=[]).edited_layers == ()


def test_60_personalize_demo_and_generate_dataset_check_before_acting(tmp_path):
    """personalize took any backend spec string ("weight_shift:cpp") and failed at the first forward;
    run_demo gave torch's "Device index must not be negative"; generate_dataset moved the model to
    the asked device before refusing bad rows."""
    from reactfast.demo import run_demo
    from reactfast.train import generate_dataset
    from tests.train.helpers import tiny_data

    layer = torch.nn.Sequential(torch.nn.Linear(4, 6))
    with pytest.raises(ValueError, match=r"backend must be one of \('triton', 'cpp', 'reference'\) or None, got "
                                         r"'weight_shift:cpp'"):
        with personalize(layer, {"0": torch.zeros(2, 6, 4)}, backend="weight_shift:cpp"):   # refused on entry
            pass
    # The model itself as the layer: the shift was silently not applied, and a child named "" added.
    lone = torch.nn.Linear(4, 6)
    with pytest.raises(ValueError, match="the layer name '' is the model itself"):
        personalized_call(lone, {"": torch.ones(2, 6, 4)}, torch.zeros(2, 4))
    assert [name for name, _ in lone.named_modules()] == [""]
    with pytest.raises(ValueError, match="device must be a torch device"):
        run_demo(out=str(tmp_path / "demo"), device=-1)
    assert not (tmp_path / "demo").exists()
    model, moved = tiny_model(), []
    model.to = lambda *args, **kwargs: moved.append(args)
    with pytest.raises(ValueError, match=r"rows must lie in \[0, 8\), got \[99\]"):
        generate_dataset(model, tiny_data(split="val").dataset(frames=32), 2, rows=[99], device="cpu")
    assert moved == []


def _wsmha():
    from reactfast.nn.personalize import WeightShiftMultiheadAttention

    return WeightShiftMultiheadAttention(4, 2, batch_first=True)


def _posnet():
    from reactfast.models.posnet import PosNet

    return PosNet(window=4, hidden=8)


@pytest.mark.parametrize("call,err,words", [
    # BiasedCrossAttention.attend: "'NoneType' object has no attribute 'shape'", index_select's own
    # TypeError, "unsupported operand", "truth value ... ambiguous"
    (lambda m, x: m.attend(x, None, None), TypeError, "k must be a torch.Tensor, got NoneType"),
    (lambda m, x: m.attend(x, *m.project_kv(x, x), kv_index=[0, 1]), TypeError,
     "kv_index must be a torch.Tensor, got list"),
    (lambda m, x: m.attend(x, *m.project_kv(x, x), kv_index=torch.zeros(2)), TypeError,
     r"kv_index must have dtype in \(int32, int64\)"),
    (lambda m, x: m.attend(x, *m.project_kv(x, x), kv_repeat=None), ValueError, "kv_repeat must be an int >= 1"),
    (lambda m, x: m.attend(x, *m.project_kv(x, x), dropout=np.zeros(2)), ValueError, "dropout must be a bool"),
    # WeightShiftMultiheadAttention: "'NoneType' object has no attribute 'dim'"; a bad explicit shift
    # was sliced before any check ("'int' object is not subscriptable")
    (lambda m, x: _wsmha()(None, x, x), TypeError, "query must be a torch.Tensor, got NoneType"),
    (lambda m, x: _wsmha()(x, x, x, need_weights=np.zeros(2)), ValueError, "need_weights must be a bool"),
    (lambda m, x: _wsmha()(x, x, x, shift=3), TypeError, r"shift must be a \(G, d_out, d_in\) tensor"),
    (lambda m, x: _wsmha()(x, x, x, shift=torch.zeros(2, 12, 3)), ValueError, r"shift must have shape \(2, 12, 4\)"),
    (lambda m, x: _wsmha()(x, x, x, shift=torch.zeros(2, 12, 4), key_padding_mask=torch.zeros(2, 2, dtype=bool)),
     ValueError, r"key_padding_mask must be \(2, 3\)"),
    (lambda m, x: _wsmha()(x[0], x[0], x[0], shift=torch.zeros(2, 12, 4)), ValueError,
     "query must be a batched 3-D tensor"),
    # grouped_linear / attention_projections: "has no attribute 'shape'", "'int' object is not subscriptable"
    (lambda m, x: _grouped_linear()(None, torch.zeros(3, 4), torch.zeros(2, 3, 4), None), ValueError,
     r"the layer's input x must be a \(B, ..., d_in\) tensor, got NoneType"),
    (lambda m, x: _attention_projections()(None, x, (0,)), TypeError, "mha must be an nn.MultiheadAttention"),
    (lambda m, x: _attention_projections()(_wsmha(), None, (0,)), TypeError, "x must be a torch.Tensor"),
    (lambda m, x: _attention_projections()(_wsmha(), x, 1), ValueError, "parts must be a non-empty increasing tuple"),
    (lambda m, x: _attention_projections()(_wsmha(), x, (0, 3)), ValueError, "parts must be a non-empty increasing"),
    # PosNet: "has no attribute 'shape'", "mat1 and mat2 shapes cannot be multiplied", "not enough values to unpack"
    (lambda m, x: _posnet().adjust_pose(torch.zeros(2, 4, 6), torch.zeros(2, 58)), ValueError,
     r"prev_last must be \(B, 6\)"),
    (lambda m, x: _posnet().adjust_pose(torch.zeros(2, 4, 6), torch.zeros(3, 6)), ValueError,
     "prev_last must hold the last pose of each of the 2 windows"),
    (lambda m, x: _posnet()(torch.zeros(2, 4, 58), "x"), ValueError, r"prev_last must be \(B, 6\)"),
    (lambda m, x: _posnet().adjust_sequence(None), ValueError, r"frames must be \(B, W, 58\)"),
    (lambda m, x: _posnet().loss(torch.zeros(2, 4, 58)), ValueError, r"windows must be \(B, n, W, 58\)"),
    (lambda m, x: _posnet().loss(torch.zeros(2, 3, 5, 58)), ValueError, "at least one window of 4 frames"),
    # crop_video: "object of type 'int' has no len()"
    (lambda m, x: _crop_video()(torch.zeros(2, 3, 3, 8, 8), 3), TypeError, r"boxes must be a \(T, 4\) array per video"),
    (lambda m, x: _crop_video()(torch.zeros(3, 3, 8, 8), 3), ValueError, r"boxes must have shape \(T, 4\)"),
])
def test_61_attention_personalize_posnet_and_crops_name_their_arguments(call, err, words):
    module = BiasedCrossAttention(4, 2)
    with pytest.raises(err, match=words):
        call(module, torch.rand(2, 3, 4))


def _grouped_linear():
    from reactfast.nn.personalize import grouped_linear

    return grouped_linear


def _attention_projections():
    from reactfast.nn.personalize import attention_projections

    return attention_projections


def _crop_video():
    from reactfast.data.pfl import crop_video

    return crop_video


def test_62_trainer_batches_and_checkpoint_links_name_their_arguments(tmp_path):
    """Trainer.fit(max_steps="x") said "unsupported operand"; -1 trained nothing, silently;
    batch_indices(1.5) failed in manual_seed; collate_appropriate and link_checkpoint failed in
    indexing or os.fspath; link_checkpoint of a folder with no checkpoint failed in copytree."""
    from reactfast.train import Trainer, link_checkpoint
    from reactfast.train.batches import collate_appropriate
    from tests.train.helpers import tiny_data

    dataset = tiny_data().dataset(frames=32, window=16)
    trainer = Trainer(tiny_model(), dataset, TrainConfig(batch_size=2, steps=2, seed=0))
    for bad in ("x", -1, 1.5, np.zeros(2)):
        with pytest.raises(ValueError, match="max_steps must be an int >= 0"):
            trainer.fit(max_steps=bad)
        with pytest.raises(ValueError, match="step must be an int >= 0"):
            trainer.batch_indices(bad)
    assert trainer.step == 0
    with pytest.raises(TypeError, match="dataset must be a reactfast.data.ReactDataset"):
        collate_appropriate(None, [0])
    with pytest.raises(ValueError, match="indices must be a list of integer row indices, got 3"):
        collate_appropriate(dataset, 3)
    with pytest.raises(ValueError, match="indices must name at least one item"):
        collate_appropriate(dataset, [])
    with pytest.raises(ValueError, match=rf"indices must lie in \[0, {len(dataset)}\), got \[{len(dataset)}\]"):
        collate_appropriate(dataset, [0, len(dataset)])
    with pytest.raises(ValueError, match="max_candidates must be an int >= 1"):
        collate_appropriate(dataset, [0], max_candidates=None)
    assert collate_appropriate(dataset, torch.tensor([0, 1]))["appropriate_valid"].shape[0] == 2
    with pytest.raises(TypeError, match="path must name a checkpoint folder"):
        link_checkpoint(None, str(tmp_path / "best"))
    with pytest.raises(TypeError, match="alias must name a checkpoint beside path"):
        link_checkpoint(str(tmp_path / "ck"), None)
    with pytest.raises(CheckpointError, match="path must name a saved checkpoint folder"):
        link_checkpoint(str(tmp_path / "ck"), str(tmp_path / "best"))
    assert not (tmp_path / "best").exists()


def test_63_generate_window_of_a_model_with_its_own_window(tmp_path, capsys):
    """generate_dataset(window=...) and `reactfast generate --window-size` passed the window on to
    PerFRDiff's and ReactDiff's generate, which take none: a TypeError ("unexpected keyword argument
    'window'") even for their own window. Their own window now generates; another is named."""
    from reactfast.train import generate_dataset

    torch.manual_seed(0)
    model = models.PerFRDiff(models.PerFRDiffConfig(audio_dim=8, window=8, dim=16, heads=2, ffn=32, layers=1,
                                                    sample_steps=2, style_dim=8, style_layers=1, style_heads=2,
                                                    style_ffn=16, hyper_hidden=16, min_history=4,
                                                    edited_layers=["decoder.layers.0.multihead_attn"]))
    data = SyntheticDyads(sessions=2, frames=16, audio_dim=8, seed=0, split="test").dataset(frames=16)
    own = generate_dataset(model, data, 2, rows=[0], window=8)
    assert own["emotion"].shape == (1, 2, 16, 25)
    with pytest.raises(ValueError, match="window: PerFRDiff generates in windows of its own 8 frames, got 4"):
        generate_dataset(model, data, 2, rows=[0], window=4)
    path = str(tmp_path / "perfrdiff")
    save_checkpoint(path, model, extra={"data": {"spec": "synthetic", "sessions": 2, "seed": 0, "frames": 16}})
    out = str(tmp_path / "p.npz")
    code, err = run(["generate", "--checkpoint", path, "--out", out, "--samples", "2", "--window-size", "8",
                     "--no-progress", "--device", "cpu"], capsys)
    assert code == 0, err
    assert np.load(out)["pred"].shape[1:] == (2, 16, 25)


def test_64_generate_stopped_by_an_error_keeps_its_finished_dyads(checkpoint, tmp_path, capsys, monkeypatch):
    """An error in a later batch of `reactfast generate` (out of memory, a clip gone, Ctrl-C) threw
    away the batches before it. They are written to OUT.partial.npz, and --resume generates the
    rest: the output equals an uninterrupted run's. --resume refuses a file of other settings."""
    from reactfast.models import ReactFace

    def flags_with(samples):
        return ["--checkpoint", checkpoint, "--frames", "16", "--sessions", "8", "--samples", str(samples),
                "--no-progress", "--device", "cpu"]

    flags = flags_with(2)
    whole = str(tmp_path / "whole.npz")
    assert run(["generate", *flags, "--out", whole], capsys)[0] == 0
    original, calls = ReactFace.generate, []

    def fails_second(self, *args, **kwargs):   # the CLI generates the 16 dyads in batches of 8
        calls.append(1)
        if len(calls) == 2:
            raise MemoryError("injected: out of memory in the second batch")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ReactFace, "generate", fails_second)
    out = str(tmp_path / "p.npz")
    code, err = run(["generate", *flags, "--out", out], capsys)
    partial = str(tmp_path / "p.partial.npz")
    assert code == 2 and "out of memory in the second batch" in err and not os.path.exists(out)
    assert f"the 8 dyads finished before the error were saved to {partial}" in err and "other 8" in err
    code, err = run(["generate", *flags_with(3), "--out", out, "--resume", partial], capsys)
    assert code == 2 and "other settings (samples 2 -> 3)" in err
    code, err = run(["generate", *flags, "--out", out, "--resume", str(tmp_path / "nothing.npz")], capsys)
    assert code == 2 and "--resume: no such file" in err
    code, err = run(["generate", *flags, "--out", out, "--resume", partial], capsys)
    assert code == 0 and len(calls) == 3, err
    assert not os.path.exists(partial)
    a, b = np.load(whole), np.load(out)
    assert set(a.files) == set(b.files) and all(np.array_equal(a[k], b[k]) for k in a.files)


def test_64b_dyads_with_non_finite_outputs_are_named_and_the_others_kept(checkpoint, tmp_path, capsys, monkeypatch):
    """Non-finite outputs of some dyads threw away every dyad's (nothing written, nothing kept).
    The finite dyads now go to the partial file, the others are named, and --resume generates just
    those again (with another --backend, say): the output equals an uninterrupted run's."""
    from reactfast.models import ReactFace

    flags = ["--checkpoint", checkpoint, "--frames", "16", "--sessions", "8", "--samples", "2", "--no-progress",
             "--device", "cpu"]
    whole = str(tmp_path / "whole.npz")
    assert run(["generate", *flags, "--out", whole], capsys)[0] == 0
    original, calls = ReactFace.generate, []

    def poisons(self, speaker, *args, **kwargs):   # dyads 3 and 12 (of batches of 8) come out NaN
        calls.append(len(speaker))
        out = original(self, speaker, *args, **kwargs)
        if len(calls) <= 2:
            for key in out:
                out[key][3 if len(calls) == 1 else 4, 1, 5] = float("nan")
        return out

    monkeypatch.setattr(ReactFace, "generate", poisons)
    out, partial = str(tmp_path / "p.npz"), str(tmp_path / "p.partial.npz")
    code, err = run(["generate", *flags, "--out", out], capsys)
    assert code == 2 and not os.path.exists(out), err
    assert f"non-finite outputs for 2 of 16 dyads (dyads [3, 12]): nothing was written to {out}; the 14 other dyads " \
           f"are kept in {partial}" in err, err
    with np.load(partial) as z:
        assert z["rows"].tolist() == [r for r in range(16) if r not in (3, 12)]
    assert err.count(partial) == 2, err   # named once, in the error (not again by the partial file's writer)
    code, err = run(["generate", *flags, "--out", out, "--resume", partial], capsys)
    assert code == 0 and calls[2:] == [2], (err, calls)   # the two dyads, in one batch
    assert not os.path.exists(partial)
    a, b = np.load(whole), np.load(out)
    # (dyads 3 and 12 now run in a batch of two: equal up to rounding of batched matmuls)
    assert set(a.files) == set(b.files) and all(np.allclose(a[k], b[k], rtol=0, atol=1e-5) for k in a.files)
    # All dyads non-finite: nothing to keep, and no partial file.
    monkeypatch.setattr(ReactFace, "generate", lambda self, *a, **k: {
        key: value * float("nan") for key, value in original(self, *a, **k).items()})
    code, err = run(["generate", *flags, "--out", out], capsys)
    assert code == 2 and "non-finite outputs for 16 of 16 dyads (dyads [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] ...)" in err
    assert not os.path.exists(partial)
    # A partial file that cannot be written is said so, and the error claims nothing kept.
    from reactfast import _io

    monkeypatch.setattr(ReactFace, "generate", poisons)
    calls.clear()
    save = _io.save_npz
    monkeypatch.setattr(_io, "save_npz", lambda path, **arrays: (_ for _ in ()).throw(OSError("disk full"))
                        if path.endswith(".partial.npz") else save(path, **arrays))
    code, err = run(["generate", *flags, "--out", out], capsys)
    assert code == 2 and f"the 14 finished dyads could not be saved to {partial}: disk full" in err, err
    assert "kept in" not in err and "non-finite outputs for 2 of 16 dyads (dyads [3, 12])" in err


def test_65_generate_refuses_a_model_without_emotion_before_generating(tmp_path, capsys, monkeypatch):
    """The metrics need the emotion output: a model without it was refused only after every dyad had
    been generated."""
    from reactfast.models import ReactFace, ReactFaceConfig

    path = str(tmp_path / "run" / "checkpoint")
    model = ReactFace(ReactFaceConfig(**{**tiny_model().config.__dict__, "out_emotion": 0}))
    save_checkpoint(path, model, extra={"data": {"spec": "synthetic", "sessions": 4, "seed": 0, "frames": 16}})
    monkeypatch.setattr(ReactFace, "generate", lambda *a, **k: pytest.fail("generated before refusing"))
    code, err = run(["generate", "--checkpoint", path, "--out", str(tmp_path / "p.npz"), "--no-progress", "--device",
                     "cpu"], capsys)
    assert code == 2 and "this model outputs no emotion" in err


def test_66_train_checks_the_models_recipe_before_making_its_weights(tmp_path, capsys, monkeypatch):
    """`train --model perfrdiff` with too short clips spent 17 s initialising the authors' 1.7 billion
    parameters before naming --clip-frames: the checks now run on the model's shapes (meta device).
    A model whose weights, gradients and optimizer state exceed the free memory is warned of before
    its weights are made (the process was killed without a word)."""
    from reactfast.models import PerFRDiff

    made_on, original = [], PerFRDiff.__init__

    def record(self, *args, **kwargs):
        made_on.append(torch.get_default_device().type)
        original(self, *args, **kwargs)

    monkeypatch.setattr(PerFRDiff, "__init__", record)
    code, err = run(["train", "--model", "perfrdiff", "--out", str(tmp_path / "run"), "--frames", "48", "--sessions",
                     "4", "--steps", "1", "--no-progress", "--device", "cpu"], capsys)
    assert code == 2 and "--clip-frames: perfrdiff trains on items of 100 frames" in err and made_on == ["meta"]
    with torch.device("meta"):
        authors = PerFRDiff().set_stage(1)
    monkeypatch.setattr(cli, "_available_memory", lambda device: 2 ** 30)
    with pytest.warns(UserWarning, match=r"perfrdiff as configured has 1658 M parameters: its weights, gradients and "
                                         r"optimizer state alone take 6.5 GiB, more than the 1.0 GiB free on cpu"):
        cli._warn_if_memory_short(authors, "adamw", torch.device("cpu"))
    monkeypatch.setattr(cli, "_available_memory", lambda device: 2 ** 40)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cli._warn_if_memory_short(authors, "adamw", torch.device("cpu"))
