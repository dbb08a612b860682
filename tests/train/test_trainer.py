import json
import math
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from reactfast.train import CheckpointError, TrainConfig, Trainer, load_into, load_model, save_checkpoint
from reactfast.testing import assert_rel_close
from tests.train.helpers import ddp_case, tiny_data, tiny_model, tiny_reactdiff

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _dataset():
    return tiny_data().dataset(frames=64, window=32, stride=32)


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_a_non_finite_loss_names_its_term_and_blames_the_rate_only_after_an_update(monkeypatch):
    """The stop for a non-finite loss advised "lower the learning rate" even at a run's first step,
    before any update (1-frame items gave ReactFace a NaN smoothness term); it now names the
    non-finite terms, and the learning rate only once this run has taken an update."""
    from reactfast.train.trainer import TrainingDiverged

    model = tiny_model()
    real_loss, calls = model.loss, []

    def loss(*args, **kwargs):
        out = real_loss(*args, **kwargs)
        calls.append(1)
        if len(calls) in (1, 3):     # the first step of each trainer below
            out["smooth"] = out["loss"].detach() * float("nan")
            out["loss"] = out["loss"] + out["smooth"]
        return out

    monkeypatch.setattr(model, "loss", loss)
    trainer = Trainer(model, _dataset(), TrainConfig(steps=5, batch_size=2, lr=1e-3, progress=False), device="cpu")
    with pytest.raises(TrainingDiverged, match=r"training diverged at step 1: loss nan, smooth nan \(before any update "
                                               r"of this run, so not from its learning rate"):
        trainer.train_step()
    assert trainer.step == 0
    calls.clear()
    calls.append(0)      # the next call is no first one: one step succeeds, then the third call fails
    trainer.train_step()
    with pytest.raises(TrainingDiverged, match=r"training diverged at step 2: loss nan, smooth nan \(lower the "
                                               r"learning rate, now 0.001\)"):
        trainer.train_step()


def test_training_reduces_loss(tmp_path, device):
    trainer = Trainer(tiny_model(), _dataset(), TrainConfig(steps=40, batch_size=4, lr=3e-3, progress=False),
                      device=device)
    history = trainer.fit()
    first = sum(r["loss"] for r in history[:5]) / 5
    last = sum(r["loss"] for r in history[-5:]) / 5
    assert last < 0.7 * first, (first, last)


def test_resume_is_bit_exact(tmp_path, device):
    # On CUDA the run selects deterministic kernels (dropout draws come from the CUDA RNG, restored too).
    cfg = dict(steps=6, batch_size=4, lr=3e-3, progress=False, deterministic=device.type == "cuda")
    full = Trainer(tiny_model(dropout=0.1), _dataset(), TrainConfig(**cfg, out_dir=str(tmp_path / "full")),
                   device=device)
    full_history = full.fit()
    torch.manual_seed(123)  # the interrupted run starts from another global RNG state ...
    if device.type == "cuda":
        torch.cuda.manual_seed_all(123)
    first = Trainer(tiny_model(dropout=0.1), _dataset(), TrainConfig(**cfg, out_dir=str(tmp_path / "part")),
                    device=device)
    first.fit(max_steps=3)
    first.save(str(tmp_path / "part" / "checkpoint"))
    torch.manual_seed(999)  # ... and the resumed one from yet another: the checkpoint restores it
    if device.type == "cuda":
        torch.cuda.manual_seed_all(999)
    resumed = Trainer(tiny_model(dropout=0.1, seed=5), _dataset(), TrainConfig(**cfg, out_dir=str(tmp_path / "part")),
                      resume=str(tmp_path / "part" / "checkpoint"), device=device)
    assert resumed.step == 3
    history = resumed.fit()
    assert [r["loss"] for r in history] == [r["loss"] for r in full_history]
    a, b = _weights(full.model), _weights(resumed.model)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_round_trip_and_errors(tmp_path):
    model = tiny_model()
    path = save_checkpoint(str(tmp_path / "ck"), model, extra={"note": "x"})
    loaded = load_model(path)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    meta = json.load(open(os.path.join(path, "config.json")))
    assert meta["model"] == "reactface" and "torch" in meta["versions"]
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]
    # A differently configured model: the error says what differs.
    from reactfast.models import ReactFace, ReactFaceConfig

    other = ReactFace(ReactFaceConfig(**{**meta["config"], "dim": 32}))
    with pytest.raises(CheckpointError, match="dim: checkpoint 16 vs model 32"):
        load_into(other, path)
    # Truncated weights.
    weights = os.path.join(path, "model.safetensors")
    data = open(weights, "rb").read()
    open(weights, "wb").write(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_model(path)
    with pytest.raises(CheckpointError, match="config.json is missing"):
        load_model(str(tmp_path))


def test_learning_rate_schedule(tmp_path):
    """Linear warm-up, then cosine decay to min_lr_ratio x lr over the run; a resumed run follows
    the same curve (the rate is a function of the step) and ends with the same weights."""
    cfg = TrainConfig(steps=10, warmup=2, lr_schedule="cosine", min_lr_ratio=0.1)
    factors = [cfg.lr_factor(s) for s in range(10)]
    assert factors[:2] == [0.5, 1.0]
    expected = [0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (s - 2) / 8)) for s in range(2, 10)]
    assert factors[2:] == pytest.approx(expected, rel=1e-12)
    assert factors[2] == 1.0 and all(a > b for a, b in zip(factors[2:], factors[3:]))
    assert TrainConfig(steps=10, warmup=4).lr_factor(7) == 1.0           # constant after the warm-up
    run = dict(steps=6, batch_size=4, lr=3e-3, progress=False, lr_schedule="cosine", warmup=1)
    seen = []
    full = Trainer(tiny_model(), _dataset(), TrainConfig(**run), device="cpu")
    step = full.optimizer.step

    def spy(*a, **k):
        seen.append(full.optimizer.param_groups[0]["lr"])
        return step(*a, **k)
    full.optimizer.step = spy
    full.fit()
    assert seen == pytest.approx([3e-3 * full.config.lr_factor(s) for s in range(6)], rel=1e-12)
    part = Trainer(tiny_model(), _dataset(), TrainConfig(**run, out_dir=str(tmp_path)), device="cpu")
    part.fit(max_steps=4)
    part.save(str(tmp_path / "checkpoint"))
    resumed = Trainer(tiny_model(seed=5), _dataset(), TrainConfig(**run, out_dir=str(tmp_path)),
                      resume=str(tmp_path / "checkpoint"), device="cpu")
    resumed.fit()
    a, b = _weights(full.model), _weights(resumed.model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        TrainConfig(lr_schedule="step")
    with pytest.raises(ValueError, match="min_lr_ratio must be in"):
        TrainConfig(min_lr_ratio=1.5)
    with pytest.raises(ValueError, match="warmup must be an int >= 0"):
        TrainConfig(warmup=-1)


def test_bad_trainer_arguments():
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="best_metric must be one of"):
        TrainConfig(best_metric="FRDiss")
    with pytest.raises(ValueError, match="fewer than one batch"):
        Trainer(tiny_model(), _dataset(), TrainConfig(batch_size=64, progress=False))
    for field, bad in (("lr", 0.0), ("lr", -1e-3), ("lr", float("nan")), ("lr", True), ("weight_decay", -0.1),
                       ("weight_decay", float("inf")), ("grad_clip", -1.0), ("grad_clip", None)):
        with pytest.raises(ValueError, match=f"TrainConfig.{field} must be a finite number"):
            TrainConfig(**{field: bad})
    TrainConfig(lr=None, weight_decay=None, grad_clip=0)   # the model's rates; no clipping


def test_a_stage_the_metrics_cannot_see_is_validated_and_kept_by_its_loss(tmp_path):
    """ReactDiff's stage 1 trains the autoencoder alone. Validated by the REACT metrics of reactions
    from its untrained denoiser, its ``best`` was picked by noise (and PFLPosNet's stage 2, PosNet,
    moves only the head pose, which no metric reads: its first validation stayed ``best``)."""
    from reactfast.models import PFLPosNet
    from reactfast.train.checkpoint import load_trainer_state

    model = tiny_reactdiff().set_stage(1)
    val = tiny_data("val", sessions=3).dataset(frames=32, mirror=False)
    out = str(tmp_path / "run")
    trainer = Trainer(model, _dataset(), TrainConfig(steps=6, batch_size=4, lr=1e-2, val_every=2, out_dir=out,
                                                     progress=False), val_dataset=val, device="cpu")
    history = trainer.fit()
    checked = [r for r in history if "val_loss" in r]
    assert [r["step"] for r in checked] == [2, 4, 6]
    assert not any(k.startswith("val_FR") for r in history for k in r)
    assert {"val_rec", "val_emotion", "val_3dmm"} <= checked[0].keys()
    assert checked[-1]["val_loss"] < checked[0]["val_loss"]   # the autoencoder learns the clips
    best = min(checked, key=lambda r: r["val_loss"])
    assert trainer.best_key == "val_loss" and trainer.best == best["val_loss"]
    assert load_trainer_state(os.path.join(out, "best"))[1]["step"] == best["step"]
    # The same draws at every validation, the model's modes given back.
    model.train()
    first, again = trainer.validate(), trainer.validate()
    assert first == again and first["loss"] == checked[-1]["val_loss"]
    assert all(m.training for m in model.modules())
    assert not model.set_stage(2).validates_by_loss() and not tiny_model().validates_by_loss()
    assert [PFLPosNet(PFLPosNet.demo_config(8)).set_stage(s).validates_by_loss() for s in (1, 2)] == [False, True]


@pytest.mark.slow
@pytest.mark.parametrize("case", ["tiny", "one_window", "perfrdiff", "reactdiff"])
def test_ddp_two_processes_match_single(tmp_path, case):
    """Two processes under torchrun take the steps one process takes. Items of one ReactFace window
    (parameters left without a gradient) failed at the second step, and PerFRDiff's stage 1 (a
    style encoder used outside the model's forward) at the first. ReactDiff's stage 1 is validated
    by its loss, each process over its share of the clips: the same values as one process."""
    model, ds, cfg, val = ddp_case(case)
    single = Trainer(model, ds, TrainConfig(**cfg), val_dataset=val, device="cpu")
    single.fit()
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    out = str(tmp_path / "ddp")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           os.path.join(ROOT, "tests", "train", "ddp_script.py"), out, case],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "find_unused_parameters=True was specified" not in proc.stderr   # asked for only where needed
    ddp = load_file(os.path.join(out, "checkpoint", "model.safetensors"))
    history = json.load(open(os.path.join(out, "history.json")))["history"]
    assert len(history) == len(single.history) == cfg["steps"]
    for a, b in zip(single.history, history):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5), (a, b)
        assert a.keys() == b.keys(), (a, b)
        for key in (k for k in a if k.startswith("val_")):
            assert a[key] == pytest.approx(b[key], rel=1e-5), (key, a, b)
    if val is not None:
        assert "val_loss" in history[-1]
    # Adam turns gradients that are zero in exact arithmetic (attention key biases) into +-lr steps of
    # rounding noise, so compare weights at the scale of the updates (4 steps x lr 1e-2).
    worst = max(float((v - ddp[k]).abs().max()) for k, v in _weights(single.model).items())
    typical = sorted(float((v - ddp[k]).abs().max()) for k, v in _weights(single.model).items())
    assert typical[len(typical) // 2] < 1e-5, typical
    assert worst < 4e-2, worst
    moved = [k for k, v in _weights(ddp_case(case)[0]).items() if not torch.equal(v, ddp[k])]
    assert moved, "training moved no weight"
    if case == "perfrdiff":   # the style encoder trained, its gradients averaged over the processes
        assert any(k.startswith("pssl.") for k in moved)
        style = sorted(float((v - ddp[k]).abs().max()) for k, v in _weights(single.model).items()
                       if k.startswith("pssl."))
        assert style[len(style) // 2] < 1e-5, style


@pytest.mark.slow
def test_compiled_training_matches_eager():
    """TrainConfig(compile=True) runs the model's forward through torch.compile and takes the same
    steps as eager training (plain SGD, so the weights move linearly in the gradients), up to float32
    rounding; measured against the eager run by relative norm."""
    cfg = dict(steps=2, batch_size=2, lr=1e-2, optimizer="sgd", progress=False)
    data = tiny_data().dataset(frames=32, window=32, stride=32)
    eager = Trainer(tiny_model(), data, TrainConfig(**cfg), device="cpu")
    compiled = Trainer(tiny_model(), data, TrainConfig(**cfg, compile=True), device="cpu")
    assert isinstance(compiled.forward, torch._dynamo.eval_frame.OptimizedModule)
    assert eager.forward is eager.model
    for a, b in zip(eager.fit(), compiled.fit()):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5), (a, b)
    a, b = _weights(eager.model), _weights(compiled.model)
    moved = sum(float((a[k] - w).norm() ** 2) for k, w in _weights(tiny_model()).items()) ** 0.5
    diff = sum(float((a[k] - b[k]).norm() ** 2) for k in a) ** 0.5
    assert moved > 0 and diff <= 1e-4 * moved, (diff, moved)


def test_checkpoint_from_before_a_config_field_was_added(tmp_path):
    """A checkpoint written before a config field existed loads as that field's default, and
    into a model configured otherwise it fails naming the field."""
    from reactfast.models import ReactFace, ReactFaceConfig

    model = tiny_model()
    path = save_checkpoint(str(tmp_path / "ck"), model)
    meta_path = os.path.join(path, "config.json")
    meta = json.load(open(meta_path))
    assert meta["config"]["coverage_weight"] == ReactFaceConfig.coverage_weight
    del meta["config"]["coverage_weight"]
    json.dump(meta, open(meta_path, "w"))
    loaded = load_model(path)
    assert loaded.config.coverage_weight == ReactFaceConfig.coverage_weight
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    other = ReactFace(ReactFaceConfig(**{**meta["config"], "coverage_weight": 0.5}))
    with pytest.raises(CheckpointError, match="coverage_weight: checkpoint 0.0 vs model 0.5"):
        load_into(other, path)


def _interrupt_at(trainer, step: int, times: int = 1):
    """Send this process ``times`` SIGINTs at the start of training step ``step`` (1-based)."""
    take_step = trainer.train_step

    def step_with_interrupt():
        if trainer.step == step - 1:
            for _ in range(times):
                os.kill(os.getpid(), signal.SIGINT)
        return take_step()

    trainer.train_step = step_with_interrupt


@pytest.fixture
def python_sigint():
    """Python's own SIGINT handler (as in a terminal), whatever the test runner installed."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _full_run_and_another(tmp_path):
    """A 6-step run with dropout, done (its trainer and history), and a trainer of the same run in
    the folder ``part``, not started."""
    cfg = dict(steps=6, batch_size=4, lr=3e-3, progress=False)
    full = Trainer(tiny_model(dropout=0.1), _dataset(), TrainConfig(**cfg, out_dir=str(tmp_path / "full")))
    full_history = full.fit()
    part = str(tmp_path / "part")
    return cfg, full, full_history, part, Trainer(tiny_model(dropout=0.1), _dataset(), TrainConfig(**cfg, out_dir=part))


def _assert_resumes_as(full, full_history, part, cfg, step):
    """A run resumed from ``part``'s checkpoint at ``step`` (from other initial weights and global
    RNG state) takes the steps the uninterrupted ``full`` took, bit for bit."""
    resumed = Trainer(tiny_model(dropout=0.1, seed=5), _dataset(), TrainConfig(**cfg, out_dir=part),
                      resume=os.path.join(part, "checkpoint"))
    assert resumed.step == step
    assert [r["loss"] for r in resumed.fit()] == [r["loss"] for r in full_history]
    a, b = _weights(full.model), _weights(resumed.model)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_ctrl_c_finishes_the_step_saves_and_resumes_bit_exact(tmp_path, capsys, python_sigint):
    cfg, full, full_history, part, stopped = _full_run_and_another(tmp_path)
    _interrupt_at(stopped, 3)
    with pytest.raises(KeyboardInterrupt):
        stopped.fit()
    assert stopped.step == 3 and "stopped after step 3; saved" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    _assert_resumes_as(full, full_history, part, cfg, 3)
    # A second Ctrl-C stops inside the step: nothing is saved for it.
    again = Trainer(tiny_model(), _dataset(), TrainConfig(**cfg, out_dir=str(tmp_path / "again")))
    _interrupt_at(again, 2, times=2)
    with pytest.raises(KeyboardInterrupt):
        again.fit()
    assert again.step == 1 and not os.path.exists(str(tmp_path / "again" / "checkpoint"))
    # Ctrl-C in the last step: the run ends as usual.
    last = Trainer(tiny_model(), _dataset(), TrainConfig(**cfg, out_dir=str(tmp_path / "last")))
    _interrupt_at(last, 6)
    assert len(last.fit()) == 6 and os.path.isfile(str(tmp_path / "last" / "history.json"))


def _fail_inside(trainer, step: int, where: str = "loss"):
    """Make training step ``step`` (1-based) raise: after its forward drew its dropout masks
    (``loss``), or inside its optimizer update (``after_step``)."""
    model = trainer.model
    original = getattr(model, where)

    def failing(*args, **kwargs):
        out = original(*args, **kwargs)
        if trainer.step == step - 1 or (where == "after_step" and trainer.step == step):
            raise RuntimeError(f"injected failure in step {step}")
        return out

    setattr(model, where, failing)


def test_a_failed_step_saves_the_finished_ones_and_resumes_bit_exact(tmp_path):
    """A run without ckpt_every saved only at its end: an error at step 5 of 6 (out of memory, a bad
    batch, a divergence) threw the four finished steps away. They are now saved, with the RNG states
    as step 4 left them (not as the failed step's dropout moved them on), so the resumed run equals
    an uninterrupted one bit for bit."""
    cfg, full, full_history, part, failed = _full_run_and_another(tmp_path)
    _fail_inside(failed, 5)
    with pytest.raises(RuntimeError, match="injected failure in step 5") as err:
        failed.fit()
    assert failed.step == 4
    assert "the weights of step 4, the last finished step, were saved to" in "".join(err.value.__notes__)
    _assert_resumes_as(full, full_history, part, cfg, 4)
    # Inside an optimizer update the weights are half updated: nothing is saved, and the error says so.
    broken = Trainer(tiny_model(), _dataset(), TrainConfig(**cfg, out_dir=str(tmp_path / "broken")))
    _fail_inside(broken, 3, "after_step")
    with pytest.raises(RuntimeError, match="injected failure in step 3") as err:
        broken.fit()
    assert "no checkpoint was saved" in "".join(err.value.__notes__)
    assert not os.path.exists(str(tmp_path / "broken" / "checkpoint"))
    # A failure in the first step of a fit has nothing new to save; nor has a run without out_dir.
    first = Trainer(tiny_model(), _dataset(), TrainConfig(**cfg, out_dir=str(tmp_path / "first")))
    _fail_inside(first, 1)
    with pytest.raises(RuntimeError, match="injected failure") as err:
        first.fit()
    assert not getattr(err.value, "__notes__", None) and not os.path.exists(str(tmp_path / "first" / "checkpoint"))


def test_checkpoint_paths_may_be_pathlib_and_arguments_are_named(tmp_path):
    """save_checkpoint(pathlib.Path) failed with "'PosixPath' object has no attribute 'rstrip'" (load_model took
    one); a model that is no module, or a list as extra, failed late or was written as given."""
    model = tiny_model()
    path = save_checkpoint(tmp_path / "ck", model)
    assert path == str(tmp_path / "ck")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 load_model(tmp_path / "ck").state_dict().values()))
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got int"):
        save_checkpoint(tmp_path / "c2", 5)
    with pytest.raises(TypeError, match="extra must be a dict or None, got list"):
        save_checkpoint(tmp_path / "c3", model, extra=[1])
    assert not os.path.exists(tmp_path / "c2") and not os.path.exists(tmp_path / "c3")


def test_generate_dataset_gives_back_the_callers_modes():
    """generate_dataset ran the model in eval mode and left it there: a training loop that validated
    with it went on without dropout. Every submodule's mode now comes back, a frozen part's too."""
    from reactfast.train import generate_dataset

    val = tiny_data(split="val").dataset(frames=32)
    model = tiny_model(dropout=0.5).train()
    model.speaker_self.eval()                         # a part the caller keeps in eval mode
    want = generate_dataset(tiny_model(dropout=0.5).eval(), val, 2, rows=[0, 1])
    got = generate_dataset(model, val, 2, rows=[0, 1])
    assert model.training and not model.speaker_self.training
    assert all(m.training for name, m in model.named_modules() if not name.startswith("speaker_self"))
    for key in want:
        assert np.array_equal(want[key], got[key]), key   # eval mode inside: no dropout


def test_generate_dataset_personalises_each_dyad_by_another_clip_of_its_listener():
    """PerFRDiff's listener histories were never given: generate, the validation and the demo made
    generic reactions, and its stage 2 (the weight shifts from a listener's history) changed nothing
    they measured. Each dyad now gets another clip of its listener (never its own listener clip,
    which holds the reaction to generate); one whose listener has no other clip stays generic."""
    from reactfast.train import generate_dataset
    from reactfast.train.generation import listener_histories

    model = ddp_case("perfrdiff")[0].double()   # in float64: batching changes only the last bits
    torch.manual_seed(3)
    for p in model.pwsg.parameters():   # shifts that are not zero (PWSG starts at zero)
        p.data.normal_(0, 0.05)
    ds = tiny_data("test", sessions=6, frames=32).dataset(frames=32)
    histories = listener_histories(ds, range(ds.num_items))
    assert histories and len(histories) < ds.num_items        # the seed's world has both kinds
    for i, j in histories.items():
        assert ds.listener_ids[j] == ds.listener_ids[i] and ds.dyads[j][1] != ds.dyads[i][1]
    personal = generate_dataset(model, ds, 2, seed=1, batch_size=3)
    generic = generate_dataset(model, ds, 2, seed=1, batch_size=3, personalise=False)
    for i in range(ds.num_items):
        same = np.array_equal(personal["emotion"][i], generic["emotion"][i])
        assert same == (i not in histories), i
    i = next(iter(histories))
    speaker, audio = model.inputs_from_batch({k: v[None] for k, v in ds[i].items()})
    history = torch.from_numpy(ds.load_clip(ds.dyads[histories[i]][1])["3dmm"][:32])
    one = model.eval().generate(speaker, audio, 2, [torch.Generator().manual_seed(1_000_003 + i)],
                                listener_history=history[None])
    # The same draws as in the batch of three, up to the batch's float64 rounding.
    assert_rel_close("dyad alone", one["emotion"][0], torch.from_numpy(personal["emotion"][i]), 1e-12)


class _WithoutListenerIds:
    """A whole-clip dataset of one's own with ReactDataset's interface, less the listeners' identities."""

    def __init__(self, dataset):
        self._dataset = dataset

    def __getattr__(self, name):
        if name == "listener_ids":
            raise AttributeError(name)
        return getattr(self._dataset, name)

    def __len__(self):
        return len(self._dataset)

    def __getitem__(self, i):
        return self._dataset[i]


def test_a_personalised_models_validation_set_is_checked_before_training():
    """PerFRDiff's validation reads each listener's identity for its history: a validation set
    without them failed at the first validation, after training steps."""
    model, data, cfg, _ = ddp_case("perfrdiff")
    val = _WithoutListenerIds(tiny_data("val", sessions=2, frames=32).dataset(frames=32))
    with pytest.raises(TypeError, match="val_dataset must be a reactfast.data.ReactDataset .or have its listener_ids"):
        Trainer(model, data, TrainConfig(**dict(cfg, val_every=1)), val_dataset=val, device="cpu")
    Trainer(tiny_model(), _dataset(), TrainConfig(**dict(cfg, val_every=1)), val_dataset=val, device="cpu")


class _FailingAt:
    """A whole-clip dataset whose item ``bad`` cannot be read (a file gone, say) until ``fixed``."""

    def __init__(self, dataset, bad):
        self.dataset, self.bad, self.fixed = dataset, bad, False
        self.window, self.num_items, self.frames = dataset.window, dataset.num_items, dataset.frames

    def __getitem__(self, i):
        if i == self.bad and not self.fixed:
            raise OSError(f"clip {i} cannot be read")
        return self.dataset[i]


def test_generate_dataset_keeps_the_finished_dyads_of_a_failed_run():
    """A failure in a later batch threw the finished batches away (hours of sampling with a diffusion
    model). The error now carries them, with the dyads still to do; generating those and joining
    gives what one uninterrupted call gives. The error keeps its own type."""
    from reactfast.train import PartialGeneration, generate_dataset

    model = tiny_model()
    ds = tiny_data("val", sessions=6, frames=32).dataset(frames=32)
    assert ds.num_items >= 5
    full = generate_dataset(model, ds, samples=2, seed=3, batch_size=2)
    failing = _FailingAt(ds, bad=3)
    with pytest.raises(OSError, match="clip 3 cannot be read") as err:
        generate_dataset(model, failing, samples=2, seed=3, batch_size=2)
    partial = err.value.partial
    assert isinstance(partial, PartialGeneration)
    assert partial.rows == [0, 1] and partial.remaining == list(range(2, ds.num_items))
    assert "the outputs of the 2 dyads finished before this error are kept" in "".join(err.value.__notes__)
    failing.fixed = True
    rest = generate_dataset(model, failing, samples=2, seed=3, batch_size=2, rows=partial.remaining)
    joined = partial.join(rest)
    assert set(joined) == set(full) and all(np.array_equal(joined[k], full[k]) for k in full)
    with pytest.raises(ValueError, match=r"rest\['3dmm'\] must be an array of shape"):
        partial.join({k: v[:1] for k, v in rest.items()})
    # A failure in the first batch has nothing to keep.
    failing.fixed, failing.bad = False, 0
    with pytest.raises(OSError) as err:
        generate_dataset(model, failing, samples=2, seed=3, batch_size=2)
    assert not hasattr(err.value, "partial")
