"""Training speed of the demo generators (their ``demo_config`` and first demo stage, the demo's
batch size and windows, synthetic data): optimizer steps per second, and for ReactFace the
current path against earlier ones measured in the same run: the biased attention forced to its
reference backend (which builds a bias per stream and rebuilds it in backward), and the whole stock
path (torch's Bernoulli dropout, nn.MultiheadAttention's and nn.TransformerEncoder's forwards, the
reference attention), and the allocator setting of the ``reactfast`` program against glibc's
defaults (processes of their own).

On a GPU the same steps run in float32 and with bf16 autocast (``TrainConfig(amp=True)``), and
the times are recorded with the device's name."""

import contextlib
import os
import subprocess
import sys
import time

import pytest
import torch

from reactfast import models
from reactfast.data import SyntheticDyads
from reactfast.demo import CLIP_FRAMES, demo_model
from reactfast.models import reactface
from reactfast.nn import dropout as nn_dropout
from reactfast.train import TrainConfig, Trainer

STEPS = 3          # optimizer steps per timed call


def _trainer(name: str, device: str, backend=None, amp: bool = False, compile: bool = False) -> Trainer:
    torch.manual_seed(0)
    model = demo_model(name, 32, backend=backend)
    stage = model.demo_stages(10)[0]
    model.set_stage(stage.stage)
    window, stride = model.training_windows(CLIP_FRAMES)
    data = SyntheticDyads(sessions=12, frames=256, audio_dim=32, seed=0, split="train").dataset(
        frames=256, window=window, stride=stride)
    cfg = TrainConfig(steps=10 ** 6, batch_size=stage.batch_size, lr=stage.lr, seed=0, progress=False,
                      optimizer=stage.optimizer, amp=amp, compile=compile)
    return Trainer(model, data, cfg, device=device)


def _steps(trainer: Trainer):
    def run():
        for _ in range(STEPS):
            trainer.train_step()
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
    return run


@pytest.mark.parametrize("name", sorted(models.names()))
def test_demo_training_steps_per_second(name, best_times, bench_report):
    trainer = _trainer(name, "cpu")
    t = best_times({"step": _steps(trainer)}, rounds=3)["step"]
    bench_report(f"train {name} (demo config, batch {trainer.config.batch_size}, cpu {torch.get_num_threads()} "
                 f"threads): {STEPS / t:.2f} steps/s ({1e3 * t / STEPS:.0f} ms/step)")


def test_reactface_training_against_reference_attention(best_times, bench_report):
    """The same steps (same weights, data and noise) with the attention's CPU default (the C++
    kernels), with its SDPA path and with its reference; the trainers take identical steps, so their
    losses agree."""
    new = _trainer("reactface", "cpu")
    sdpa = _trainer("reactface", "cpu", backend="biased_attention:sdpa")
    old = _trainer("reactface", "cpu", backend="biased_attention:reference")
    losses = []
    for trainer in (new, sdpa, old):
        torch.manual_seed(1)             # dropout masks come from the global generator
        losses.append(trainer.train_step()["loss"])
    for other in losses[1:]:
        assert abs(losses[0] - other) <= 1e-4 * abs(other), losses
    t = best_times({"cpp": _steps(new), "sdpa": _steps(sdpa), "reference": _steps(old)}, rounds=3)
    ms = {name: 1e3 * value / STEPS for name, value in t.items()}
    bench_report(f"train reactface step, cpu {torch.get_num_threads()} threads: {ms['cpp']:.0f} ms (attention cpp) vs "
                 f"{ms['sdpa']:.0f} ms (attention sdpa) vs {ms['reference']:.0f} ms (attention reference): "
                 f"{t['reference'] / t['cpp']:.2f}x over the reference (target 2x), {t['sdpa'] / t['cpp']:.2f}x "
                 "over sdpa")


@contextlib.contextmanager
def _stock_torch_path():
    """ReactFace's step as it ran before the CPU work of issue 17: torch's own dropout (a Bernoulli
    per element), nn.MultiheadAttention's and nn.TransformerEncoder's own forwards."""
    saved = reactface.multi_head_attention, reactface.encoder, nn_dropout.dropout
    reactface.multi_head_attention = lambda mha, q, k, v, key_padding_mask=None: mha(
        q, k, v, key_padding_mask=key_padding_mask, need_weights=False)[0]
    reactface.encoder = lambda module, x, mask=None: module(x, src_key_padding_mask=mask)
    nn_dropout.dropout = lambda x, p, training=True: torch.nn.functional.dropout(x, p, training)
    try:
        yield
    finally:
        reactface.multi_head_attention, reactface.encoder, nn_dropout.dropout = saved


def test_reactface_training_against_stock_torch(best_times, bench_report):
    """The step with the package's CPU paths (hashed-mask dropout kernel, lean attention forwards,
    cached attention biases) against torch's stock modules with the attention's reference backend,
    interleaved in one run; the two draw different dropout masks, so only the speed is compared."""
    new, old = _trainer("reactface", "cpu"), _trainer("reactface", "cpu", backend="biased_attention:reference")

    def stock():
        with _stock_torch_path():
            _steps(old)()

    t = best_times({"package": _steps(new), "stock": stock}, rounds=5)
    bench_report(f"train reactface step (demo config), cpu {torch.get_num_threads()} threads: "
                 f"{1e3 * t['package'] / STEPS:.0f} ms with the package's CPU paths vs "
                 f"{1e3 * t['stock'] / STEPS:.0f} ms stock torch + reference attention: "
                 f"{t['stock'] / t['package']:.2f}x")


def test_reactface_training_compiled(best_times, bench_report):
    """TrainConfig(compile=True) against eager, interleaved, after the compiled step's first call
    (which compiles; its time is reported apart)."""
    eager, compiled = _trainer("reactface", "cpu"), _trainer("reactface", "cpu", compile=True)
    start = time.perf_counter()
    compiled.train_step()
    compile_s = time.perf_counter() - start
    t = best_times({"eager": _steps(eager), "compiled": _steps(compiled)}, rounds=5)
    bench_report(f"train reactface step (demo config), cpu {torch.get_num_threads()} threads: "
                 f"{1e3 * t['compiled'] / STEPS:.0f} ms compiled vs {1e3 * t['eager'] / STEPS:.0f} ms eager "
                 f"({t['eager'] / t['compiled']:.2f}x); first compiled step {compile_s:.0f} s")


# The demo's ReactFace steps in a process of their own: the allocator setting is process-wide.
_MALLOC_SCRIPT = """
import resource, sys, time
from reactfast import _malloc
applied = _malloc.retain_freed_memory()
sys.path.insert(0, {bench!r})
from bench_train import _trainer
trainer = _trainer("reactface", "cpu")
for _ in range(3):
    trainer.train_step()
before = resource.getrusage(resource.RUSAGE_SELF)
start = time.perf_counter()
for _ in range({steps}):
    trainer.train_step()
wall = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_SELF)
print(applied, 1e3 * wall / {steps}, 1e3 * (after.ru_stime - before.ru_stime) / {steps},
      (after.ru_minflt - before.ru_minflt) / {steps})
"""


def test_reactface_training_with_freed_memory_retained(bench_report):
    """What the ``reactfast`` program's allocator setting (``reactfast._malloc``) does to the demo's
    ReactFace step: processes with REACTFAST_MALLOC=retain and =default, alternated three times, each
    timing 20 steps. The page faults and the system time they cost are steady; the wall time of one
    process swings more than their difference on a noisy VM, hence the means over processes."""
    script = _MALLOC_SCRIPT.format(bench=os.path.dirname(os.path.abspath(__file__)), steps=20)
    runs = {"retain": [], "default": []}
    for _ in range(3):
        for choice in runs:
            proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                                  env={**os.environ, "REACTFAST_MALLOC": choice})
            assert proc.returncode == 0, proc.stderr
            applied, *figures = proc.stdout.split()
            assert (applied == "True") == (choice == "retain") or sys.platform != "linux", proc.stdout
            runs[choice].append([float(f) for f in figures])
    mean = {choice: [sum(col) / len(col) for col in zip(*values)] for choice, values in runs.items()}
    (wall, sys_ms, faults), (wall0, sys0, faults0) = mean["retain"], mean["default"]
    bench_report(f"train reactface step (demo config), cpu {torch.get_num_threads()} threads, mean of 3 processes "
                 f"each: freed memory retained {wall:.0f} ms, {sys_ms:.1f} ms system time, {faults:.0f} page "
                 f"faults a step vs glibc's defaults {wall0:.0f} ms, {sys0:.1f} ms, {faults0:.0f} "
                 f"({wall0 / wall:.2f}x wall)")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", sorted(models.names()))
def test_demo_training_on_gpu(name, best_times, bench_report, gpu_result):
    fp32, amp = _trainer(name, "cuda"), _trainer(name, "cuda", amp=True)
    t = best_times({"fp32": _steps(fp32), "amp": _steps(amp)}, rounds=3)
    gpu_result(f"train {name} step (demo config, bf16 autocast)", 1e3 * t["amp"] / STEPS, "fp32",
               1e3 * t["fp32"] / STEPS)
    bench_report(f"train {name} on {torch.cuda.get_device_name()}: {1e3 * t['fp32'] / STEPS:.1f} ms/step fp32, "
                 f"{1e3 * t['amp'] / STEPS:.1f} ms/step bf16 autocast")
