"""A researcher's workflow without surprises (issue 20), on tiny sizes: the wheel built and installed
away from the source tree, then data synth, data check, train (with validation, best, history,
progress lines), resume, generate, evaluate, plot; reproducible seeds; typed configs."""

import glob
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

from reactfast import cli, configs
from reactfast.models import ReactFaceConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["dim=16", "heads=2", "cie_heads=2", "cie_ffn=32", "cie_layers=1", "decoder_layers=1", "window_train=16",
        "window=8", "context=32", "past=16"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel, built from this checkout and installed in a fresh virtual environment whose only
    other packages are this interpreter's installed ones (torch, numpy, ...), seen after its own."""
    import site

    dist = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(dist)], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, REACTFAST_CUDA="OFF"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    wheel = glob.glob(str(dist / "*.whl"))[0]
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    fresh = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                           capture_output=True, text=True, check=True).stdout.strip()
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", fresh, wheel],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The dependencies, from this interpreter's site-packages (added as plain paths: their .pth
    # files, an editable install's import hook among them, are not run).
    with open(os.path.join(fresh, "zz_dependencies.pth"), "w") as f:
        f.write("\n".join(site.getsitepackages()) + "\n")
    return wheel, python


def reactfast(installed, cwd, *args, ok=True):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TRITON_INTERPRET")}
    proc = subprocess.run([installed[1], "-m", "reactfast.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=900)
    if ok:
        assert proc.returncode == 0, f"reactfast {' '.join(args)}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_the_wheel_ships_the_license_the_benchmarks_and_a_package_description(installed):
    names = zipfile.ZipFile(installed[0]).namelist()
    assert any(n.endswith("licenses/LICENSE") or n.endswith("/LICENSE") for n in names)
    assert "reactfast/bench/bench_dtw.py" in names and "reactfast/bench/conftest.py" in names
    meta = zipfile.ZipFile(installed[0]).read([n for n in names if n.endswith("METADATA")][0]).decode()
    description = meta.split("\n\n", 1)[1]
    assert description.startswith("# reactfast") and "make demo" not in description


def test_walkthrough_from_an_installed_wheel(installed, tmp_path):
    work = str(tmp_path)
    where = subprocess.run([installed[1], "-c", "import reactfast; print(reactfast.__file__)"], cwd=work,
                           capture_output=True, text=True, check=True).stdout
    assert "venv" in where and ROOT not in where, where
    assert reactfast(installed, work, "env").stdout.count("reactfast._C     built") == 1
    reactfast(installed, work, "data", "synth", "--out", "data", "--sessions", "4", "--frames", "64",
              "--audio-dim", "8")
    check = reactfast(installed, work, "data", "check", "data").stdout
    assert "no problems found" in check and "train" in check and "test" in check
    run = os.path.join(work, "run")
    out = reactfast(installed, work, "train", "--data", "data", "--out", "run", "--steps", "6", "--batch-size", "2",
                    "--clip-frames", "16", "--frames", "48", "--val-every", "3", "--device", "cpu", "--seed", "3",
                    "--config", *TINY).stdout
    # Not a terminal: plain progress lines.
    assert "[train reactface] step 6/6" in out and "eta" in out
    assert "best: val_FRDist " in out and os.path.join("run", "best") in out
    history = [json.loads(line) for line in open(os.path.join(run, "history.jsonl"))]
    assert [r["step"] for r in history] == list(range(1, 7)) and "val_FRDist" in history[2]
    assert os.path.isfile(os.path.join(run, "best", "model.safetensors"))
    meta = json.load(open(os.path.join(run, "checkpoint", "config.json")))
    assert meta["extra"]["data"]["spec"] == os.path.join(work, "data")        # stored absolute
    assert meta["extra"]["audio"] == "npy features (8-d)"
    # Resume from another folder: the run's settings come back by themselves.
    other = tmp_path / "elsewhere"
    other.mkdir()
    out = reactfast(installed, str(other), "train", "--out", run, "--resume", os.path.join(run, "checkpoint"),
                    "--steps", "8", "--device", "cpu").stdout
    assert "changed settings: steps 6 -> 8" in out and "trained reactface for 8 steps" in out
    assert len(open(os.path.join(run, "history.jsonl")).readlines()) == 8
    reactfast(installed, str(other), "generate", "--checkpoint", os.path.join(run, "checkpoint"), "--samples", "2",
              "--frames", "48", "--out", "preds.npz", "--device", "cpu")
    with np.load(other / "preds.npz") as z:
        assert z["pred"].shape == (4, 2, 48, 25) and z["appropriate"].shape == (4, 4)
    scores = reactfast(installed, str(other), "evaluate", "preds.npz", "--device", "cpu").stdout
    assert "FRDist" in scores and os.path.isfile(other / "preds.metrics.json")
    reactfast(installed, str(other), "plot", "preds.npz", "--channels", "valence,arousal")
    assert (other / "preds.item0.png").read_bytes()[:4] == b"\x89PNG"
    bench = reactfast(installed, str(other), "bench", "--quick", "-k", "test_tlcc_item")
    assert "1 passed" in bench.stdout


def test_seed_makes_runs_identical(tmp_path, capsys):
    weights = []
    for i in range(2):
        out = str(tmp_path / f"run{i}")
        assert cli.main(["train", "--out", out, "--steps", "3", "--batch-size", "2", "--clip-frames", "16",
                         "--frames", "48", "--sessions", "4", "--seed", "5", "--no-progress", "--device", "cpu",
                         "--config", *TINY]) == 0
        history = [json.loads(line)["loss"] for line in open(os.path.join(out, "history.jsonl"))]
        from safetensors.torch import load_file

        weights.append((history, load_file(os.path.join(out, "checkpoint", "model.safetensors"))))
    (h0, w0), (h1, w1) = weights
    assert h0 == h1 and all(torch.equal(w0[k], w1[k]) for k in w0)


def test_tensorboard_logging(tmp_path):
    pytest.importorskip("tensorboard")
    out = str(tmp_path / "run")
    assert cli.main(["train", "--out", out, "--steps", "2", "--batch-size", "2", "--clip-frames", "16", "--frames",
                     "48", "--sessions", "4", "--no-progress", "--device", "cpu", "--tensorboard", "--config",
                     *TINY]) == 0
    assert glob.glob(os.path.join(out, "tensorboard", "events.out.tfevents.*"))


def test_typed_configs_from_files_and_overrides(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"model": {"dim": 32, "heads": 4}, "train": {"grad_clip": 0.5}}))
    parsed = configs.parse([str(tmp_path / "c.json"), "heads=2", "train.steps=7", "model.dropout=0.0"])
    assert parsed == {"model": {"dim": 32, "heads": 2, "dropout": 0.0}, "train": {"grad_clip": 0.5, "steps": 7}}
    assert configs.parse_value("1,2,4") == [1, 2, 4] and configs.parse_value("[1, 2]") == [1, 2]
    assert configs.parse_value("none") is None and configs.parse_value("true") is True
    assert configs.parse_value("1e-4") == 1e-4 and configs.parse_value("'64'") == "64"
    cfg = configs.build(ReactFaceConfig, {"dim": 32, "heads": 4, "dropout": 0}, "test")
    assert cfg.dropout == 0.0 and isinstance(cfg.dropout, float)
    from reactfast.models import ReactDiffConfig

    assert configs.build(ReactDiffConfig, {"mults": [1, 2], "clip": None}, "x").mults == (1, 2)
    with pytest.raises(configs.ConfigError, match=r"ReactFaceConfig.dim must be int, got 1.5"):
        configs.build(ReactFaceConfig, {"dim": 1.5}, "--config")
    with pytest.raises(configs.ConfigError, match=r"no field\(s\) \['dimm'\]"):
        configs.build(ReactFaceConfig, {"dimm": 1}, "--config")
    with pytest.raises(configs.ConfigError, match="keys are FIELD, model.FIELD or train.FIELD"):
        configs.parse(["data.root=x"])
    yaml = pytest.importorskip("yaml")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"dim": 24, "mults": [1, 2]}))
    assert configs.parse([str(tmp_path / "c.yaml")])["model"] == {"dim": 24, "mults": [1, 2]}


def test_data_check_names_problems(tmp_path, capsys):
    root = str(tmp_path / "data")
    assert cli.main(["data", "synth", "--out", root, "--sessions", "4", "--frames", "40", "--splits",
                     "train,test"]) == 0
    clip = open(os.path.join(root, "test.csv")).read().splitlines()[1].split(",")[1]
    os.remove(os.path.join(root, "test", "3D_FV_files", clip + ".npy"))
    capsys.readouterr()
    assert cli.main(["data", "check", root]) == 1
    out = capsys.readouterr().out
    assert "problem [test]: missing file:" in out and "1 problem(s)" in out
    for splits, got in (("train,tset", "'tset'"), ("", "''")):    # named, not looked for as tset.csv
        assert cli.main(["data", "check", root, "--splits", splits]) == 2
        assert f"--splits: each must be one of train, val, test, got {got}" in capsys.readouterr().err


def test_data_synth_keeps_a_dataset_already_there(tmp_path, capsys):
    root = str(tmp_path / "data")
    args = ["data", "synth", "--out", root, "--sessions", "2", "--frames", "20", "--splits", "test"]
    assert cli.main(args) == 0
    before = open(os.path.join(root, "test.csv")).read()
    capsys.readouterr()
    assert cli.main(args[:4] + ["--sessions", "8"] + args[6:]) == 2
    err = capsys.readouterr().err
    assert "already holds a dataset (neighbour_emotion_test.npy, test.csv)" in err and "--overwrite" in err
    assert open(os.path.join(root, "test.csv")).read() == before
    assert cli.main(args[:4] + ["--sessions", "16", "--overwrite"] + args[6:]) == 0
    assert len(open(os.path.join(root, "test.csv")).read().splitlines()) == 1 + 16 // 4   # a line per session
    assert cli.main(["data", "synth", "--out", str(tmp_path / "new"), "--splits", "train,tset"]) == 2
    assert "--splits: each must be one of train, val, test, got 'tset'" in capsys.readouterr().err
    assert not os.path.exists(str(tmp_path / "new"))
    for flag, value, message in (("--frames", "1", "--frames must be >= 2, got 1"),
                                 ("--sessions", "0", "--sessions must be >= 1, got 0"),
                                 ("--audio-dim", "0", "--audio-dim must be >= 1, got 0"),
                                 ("--prototypes", "0", "--prototypes must be >= 1, got 0"),
                                 ("--seed", "-1", "--seed must be an int in [0, 2**32), got -1")):
        assert cli.main(["data", "synth", "--out", str(tmp_path / "new"), flag, value]) == 2
        assert message in capsys.readouterr().err
        assert not os.path.exists(str(tmp_path / "new"))   # the folder was made before the check


def test_pfl_crop_command(tmp_path, capsys):
    from matplotlib import image as mpimg

    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(0)
    for i in range(1, 4):
        mpimg.imsave(frames / f"{i}.png", rng.random((40, 50, 3)))
    np.savetxt(tmp_path / "boxes.csv", [[20, 20, 10, 12]] * 3, delimiter=",", header="x,y,w,h", comments="")
    assert cli.main(["data", "crop", "--video", str(frames), "--boxes", str(tmp_path / "boxes.csv"), "--out",
                     str(tmp_path / "out"), "--size", "16"]) == 0
    crop = mpimg.imread(tmp_path / "out" / "2.png")
    assert crop.shape[:2] == (16, 16) and len(os.listdir(tmp_path / "out")) == 3


def _write_frames(folder, frames, mode="RGB"):
    from PIL import Image

    folder.mkdir(exist_ok=True)
    for i, frame in enumerate(frames, 1):
        Image.fromarray(np.ascontiguousarray(frame)).convert(mode).save(folder / f"{i}.png")


def test_pfl_crop_keeps_the_pixels_and_never_mixes_two_clips(tmp_path, capsys):
    """The crops were written as RGBA through matplotlib (8-bit RGB frames came back with an alpha
    channel); a second clip cropped into the same folder was written over the first, and the frames
    past its end stayed; the source folder itself could be the destination."""
    from PIL import Image

    from reactfast.data.files import DataError
    from reactfast.data.pfl import crop_frames, crop_video, crop_window

    rng = np.random.default_rng(1)
    clip = rng.integers(0, 256, (4, 40, 50, 3), dtype=np.uint8)
    _write_frames(tmp_path / "long", clip)
    _write_frames(tmp_path / "short", clip[:2, ::-1])
    boxes = np.array([[24, 18, 10, 12], [26, 20, 12, 12], [25, 19, 10, 14], [23, 21, 11, 12]], dtype=float)
    out = tmp_path / "out"
    left, top, w, h = crop_frames(str(tmp_path / "long"), boxes, str(out))
    assert (left, top, w, h) == crop_window(boxes, (256, 256), (40, 50))
    for i in range(4):
        with Image.open(out / f"{i + 1}.png") as image:
            assert image.mode == "RGB"
            assert np.array_equal(np.asarray(image), clip[i, top:top + h, left:left + w])
    with pytest.raises(DataError, match="already holds 4 numbered frames"):
        crop_frames(str(tmp_path / "short"), boxes[:2], str(out))
    crop_frames(str(tmp_path / "short"), boxes[:2], str(out), out_size=8, overwrite=True)
    assert sorted(os.listdir(out)) == ["1.png", "2.png"]
    with Image.open(out / "2.png") as image:
        assert image.mode == "RGB" and image.size == (8, 8)
        # Resized as crop_video resizes, rounded to 8 bits.
        expect = crop_video(torch.from_numpy(clip[:2, ::-1].copy()).permute(0, 3, 1, 2).float(), boxes[:2],
                            out_size=8)[1].permute(1, 2, 0).numpy()
        assert np.abs(np.asarray(image).astype(float) - expect).max() <= 0.5 + 1e-3
    with pytest.raises(DataError, match="is the source folder"):
        crop_frames(str(tmp_path / "long"), boxes, str(tmp_path / "long" / ".." / "long"), overwrite=True)
    _write_frames(tmp_path / "gray", clip[:2, :, :, 0], mode="L")
    crop_frames(str(tmp_path / "gray"), boxes[:2], str(tmp_path / "gray_out"), out_size=(6, 9))
    with Image.open(tmp_path / "gray_out" / "1.png") as image:
        assert image.mode == "L" and image.size == (9, 6)
    Image.fromarray(clip[0, :30]).save(tmp_path / "long" / "3.png")
    with pytest.raises(DataError, match="3.png: 50 x 30 pixels, but 1.png has 50 x 40"):
        crop_frames(str(tmp_path / "long"), boxes, str(tmp_path / "other"))
    np.savetxt(tmp_path / "b.csv", boxes[:2], delimiter=",")
    assert cli.main(["data", "crop", "--video", str(tmp_path / "short"), "--boxes", str(tmp_path / "b.csv"), "--out",
                     str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert cli.main(["data", "crop", "--video", str(tmp_path / "short"), "--boxes", str(tmp_path / "b.csv"), "--out",
                     str(out), "--overwrite"]) == 0


def test_pfl_crop_command_checks_its_arguments(tmp_path, capsys):
    from matplotlib import image as mpimg

    from reactfast.data.pfl import crop_frames

    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(1, 3):
        mpimg.imsave(frames / f"{i}.png", np.random.default_rng(i).random((40, 50, 3)))
    boxes = str(tmp_path / "boxes.csv")
    np.savetxt(boxes, [[20, 20, 10, 12]] * 2, delimiter=",")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    base = ["data", "crop", "--boxes", boxes]
    cases = (([*base, "--video", str(tmp_path / "nope"), "--out", str(tmp_path / "o")], "not a folder of frames"),
             ([*base, "--video", str(frames), "--out", str(a_file)], "exists and is not a folder"),
             ([*base, "--video", str(frames), "--out", str(tmp_path / "o"), "--size", "0"], "--size must be >= 1"),
             ([*base, "--video", str(frames), "--out", str(tmp_path / "o"), "--size", "-4"], "--size must be >= 1"))
    for args, message in cases:
        assert cli.main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("reactfast data crop: error:") and message in err, err
    assert not (tmp_path / "o").exists()   # --size 0 cropped at full size before; -4 failed inside torch
    with pytest.raises(ValueError, match="out_size must be"):
        crop_frames(str(frames), np.array([[20, 20, 10, 12]] * 2), str(tmp_path / "o"), out_size=(16, 0))
