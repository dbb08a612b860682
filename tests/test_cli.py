import json

import numpy as np
import pytest

from reactfast import cli, metrics
from reactfast.data import ReactDataset, SyntheticDyads


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("react"))
    SyntheticDyads(sessions=4, frames=120, prototypes=2, seed=0).write(path, "test")
    return path


def test_evaluate_from_data_folder(root, tmp_path, capsys):
    ds = ReactDataset(root, "test", frames=100, modalities=("emotion",))
    gt = ds.stack("listener", "emotion").numpy()
    pred = np.repeat(gt[:, None], 2, axis=1) + np.float32(0.01)
    np.savez(tmp_path / "p.npz", pred=pred)
    out = tmp_path / "scores.json"
    assert cli.main(["evaluate", str(tmp_path / "p.npz"), "--data", root, "--no-progress", "--out", str(out)]) == 0
    saved = json.loads(out.read_text())["metrics"]
    expected = metrics.evaluate(pred, gt, ds.stack("speaker", "emotion").numpy(), ds.appropriate)
    assert saved == pytest.approx(expected)
    assert "FRDist" in capsys.readouterr().out


def test_evaluate_refuses_data_other_than_the_predictions_were_made_for(root, tmp_path, capsys):
    """A file from reactfast generate for one split, scored with --data against another of as many
    dyads, gave numbers without a word."""
    SyntheticDyads(sessions=4, frames=120, prototypes=2, seed=1).write(root, "val")   # other dyads, as many
    test, val = (ReactDataset(root, split, frames=100, modalities=("emotion",)) for split in ("test", "val"))
    gt = test.stack("listener", "emotion").numpy()
    pred = np.repeat(gt[:, None], 2, axis=1) + np.float32(0.01)
    np.savez(tmp_path / "p.npz", pred=pred, speaker=test.stack("speaker", "emotion").numpy())
    assert val.num_items == test.num_items
    assert cli.main(["evaluate", str(tmp_path / "p.npz"), "--data", root, "--split", "val", "--no-progress"]) == 2
    assert "p.npz was generated for other speakers than those of --data" in capsys.readouterr().err
    assert cli.main(["evaluate", str(tmp_path / "p.npz"), "--data", root, "--split", "test", "--no-progress"]) == 0


def test_evaluate_from_explicit_files(tmp_path):
    rng = np.random.default_rng(0)
    pred = rng.random((3, 2, 40, 25)).astype(np.float32)
    np.save(tmp_path / "pred.npy", pred)
    np.save(tmp_path / "gt.npy", pred[:, 0])
    np.save(tmp_path / "sp.npy", pred[:, 1])
    np.save(tmp_path / "a.npy", np.eye(3))
    assert cli.main(["evaluate", str(tmp_path / "pred.npy"), "--listener-gt", str(tmp_path / "gt.npy"),
                     "--speaker", str(tmp_path / "sp.npy"), "--appropriate", str(tmp_path / "a.npy"),
                     "--no-progress"]) == 0
    saved = json.loads((tmp_path / "pred.metrics.json").read_text())["metrics"]
    assert saved["FRDiv"] > 0


def test_evaluate_needs_targets(tmp_path, capsys):
    np.save(tmp_path / "pred.npy", np.zeros((2, 1, 5, 25), np.float32))
    assert cli.main(["evaluate", str(tmp_path / "pred.npy")]) == 2
    assert "give --data" in capsys.readouterr().err
    assert cli.main(["evaluate", str(tmp_path / "missing.npy"), "--data", "x"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_debug_before_or_after_the_command(tmp_path, capsys):
    """--debug raises the error with its traceback whether given before or after the command."""
    args = [str(tmp_path / "missing.npy"), "--data", "x"]
    for argv in (["--debug", "evaluate", *args], ["evaluate", "--debug", *args]):
        with pytest.raises(FileNotFoundError, match="no such file"):
            cli.main(argv)
    assert cli.main(["evaluate", *args]) == 2
    assert "reactfast evaluate: error: pred: no such file" in capsys.readouterr().err


def test_warnings_print_as_one_line_naming_the_command(tmp_path, capsys):
    rng = np.random.default_rng(0)
    pred = rng.random((3, 2, 40, 25)).astype(np.float32)   # leaves the emotion ranges: a warning
    for name, value in (("pred", pred), ("gt", pred[:, 0]), ("sp", pred[:, 1]), ("a", np.eye(3))):
        np.save(tmp_path / f"{name}.npy", value)
    assert cli.main(["evaluate", str(tmp_path / "pred.npy"), "--listener-gt", str(tmp_path / "gt.npy"),
                     "--speaker", str(tmp_path / "sp.npy"), "--appropriate", str(tmp_path / "a.npy"),
                     "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "reactfast evaluate: RuntimeWarning: pred leaves the valid emotion ranges" in err
    assert "cli.py" not in err and "metrics.evaluate(" not in err, err


def test_demo_runs(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--out", str(out), "--sessions", "4", "--steps", "4"]) == 0
    text = capsys.readouterr().out
    for name in ("reactface", "Mirror", "Random", "NN", "FRCorr", "FRSyn"):
        assert name in text
    saved = json.loads((out / "metrics.json").read_text())["metrics"]
    # Gaussian noise is the farthest from the real reactions and the most diverse.
    assert saved["Random"]["FRDist"] > max(saved[m]["FRDist"] for m in ("reactface", "Mirror", "NN"))
    assert saved["Random"]["FRDiv"] > saved["Mirror"]["FRDiv"] == 0.0
    assert (out / "reactions.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "run" / "checkpoint" / "model.safetensors").is_file()


def test_demo_checks_its_flags_before_writing(tmp_path, capsys):
    from reactfast.demo import run_demo

    out = tmp_path / "demo"
    for flag in ("--steps", "--sessions"):
        assert cli.main(["demo", "--out", str(out), flag, "0"]) == 2
        assert f"{flag} must be >= 1, got 0" in capsys.readouterr().err
    with pytest.raises(ValueError, match="steps must be an int >= 1, got -1"):
        run_demo(out=str(out), steps=-1)
    assert not out.exists()   # the synthetic data was written first, then TrainConfig refused the steps
    # A forced backend that cannot run on the device failed after the training and sampling, at
    # the first op that used it (a diffusion model's DDIM step, a metric's kernel): now first.
    assert cli.main(["demo", "--out", str(out), "--device", "cpu", "--backend", "cpp,dtw:cuda"]) == 2
    assert "dtw: backend 'cuda' was forced but cannot run" in capsys.readouterr().err
    assert not any(out.iterdir())   # the command line checks --out is writable (an empty folder)
    with pytest.raises(RuntimeError, match="dtw: backend 'cuda' was forced but cannot run"):
        run_demo(out=str(tmp_path / "direct"), device="cpu", backend="dtw:cuda")
    assert not (tmp_path / "direct").exists()


@pytest.mark.parametrize("model", ["perfrdiff", "reactdiff", "pflposnet"])
def test_demo_other_generators(tmp_path, capsys, model):
    out = tmp_path / model
    assert cli.main(["demo", "--model", model, "--out", str(out), "--sessions", "4", "--steps", "2"]) == 0
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["model"] == model and model in saved["metrics"]
    assert all(np.isfinite(v) for v in saved["metrics"][model].values())
    if model == "pflposnet":
        assert saved["pose_seam_jump"] >= 0
        assert (out / "run_stage2" / "checkpoint" / "model.safetensors").is_file()


def test_bench_folder_found_from_any_folder(tmp_path, monkeypatch):
    """`reactfast bench` outside the checkout: the wheel's copy, or an editable install's bench/."""
    import os

    monkeypatch.chdir(tmp_path)
    os.mkdir("bench")  # an unrelated folder of that name is not the benchmarks
    found = cli.bench_folder()
    assert found is not None and os.path.abspath(found) != str(tmp_path / "bench")
    assert os.path.isfile(os.path.join(found, "conftest.py")) and os.path.isfile(os.path.join(found, "bench_dtw.py"))


def test_bench_names_a_path_that_is_no_folder(tmp_path, capsys):
    """`reactfast bench --path` of no folder ran pytest, which found no tests and exited 5, quietly."""
    assert cli.main(["bench", "--path", str(tmp_path / "nowhere")]) == 2
    assert f"--path: no such folder: {tmp_path / 'nowhere'}" in capsys.readouterr().err


def test_program_under_torchrun_exits_without_finalizing(tmp_path):
    """Under torchrun (WORLD_SIZE > 1) the reactfast program ends with the exit handlers run, its output
    flushed and its own exit code, skipping interpreter finalization (where torch's threads aborted a
    finished DDP run's rank 1 now and then, pytorch/pytorch#190489); in a single process it returns."""
    import os
    import subprocess
    import sys

    script = ("import atexit, sys\n"
              "atexit.register(lambda: print('handler ran', file=sys.stderr, flush=True))\n"
              "sys.argv = ['reactfast', 'evaluate', 'missing.npz']\n"
              "from reactfast import cli\n"
              "code = cli.entry()\n"
              "print('returned', code)\n")
    for world, returned in (("2", False), ("1", True)):
        env = {**os.environ, "WORLD_SIZE": world}
        proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == (0 if returned else 2), proc.stderr
        assert "missing.npz" in proc.stderr and "handler ran" in proc.stderr, proc.stderr
        assert ("returned 2" in proc.stdout) == returned, proc.stdout


def test_program_names_a_bad_world_size_before_any_work(tmp_path):
    """WORLD_SIZE is read before the command runs: a bad value is named and no command runs."""
    import os
    import subprocess
    import sys

    script = ("import sys\n"
              "sys.argv = ['reactfast', 'evaluate', 'missing.npz']\n"
              "from reactfast import cli\n"
              "print('returned', cli.entry())\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env={**os.environ, "WORLD_SIZE": "two"},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "returned 2" in proc.stdout, proc.stdout + proc.stderr
    assert "WORLD_SIZE must be a process count >= 1" in proc.stderr and "missing.npz" not in proc.stderr
    from reactfast.train import exit_distributed_process

    with pytest.raises(ValueError, match="code must be an exit status"):
        exit_distributed_process("0")
