"""Training for reactfast generators, in one process or under ``torchrun`` (DDP).

    trainer = Trainer(model, dataset, TrainConfig(steps=2000, batch_size=8, out_dir="runs/rf"))
    trainer.fit()

- AdamW with the model's learning rate and weight decay, gradient clipping, bf16 autocast on GPU.
- Learning rate: constant (``lr_schedule="constant"``, the default) or ``"cosine"``, decayed to
  ``min_lr_ratio`` x lr over ``steps``; either after a linear warm-up of ``warmup`` steps. The
  rate is a function of the step alone, so a resumed run continues the same curve.
- Global batch ``batch_size`` split evenly over ranks; every rank sees a shard of the same
  per-epoch permutation, and each item's latent noise comes from a generator seeded by
  (seed, step, item), so a 2-process run matches a 1-process run with the same global batch. DDP
  wraps the model's whole loss; losses over pairs of items gather the rows of every process
  (``reactfast.nn.global_batch``); DDP looks for parameters a step leaves without a gradient only
  where the model says a step can (``Generator.uses_every_parameter``).
- Checkpoints every ``ckpt_every`` steps and at the end (atomic); ``resume=path`` continues
  bit-exactly (weights, optimizer, step, CPU and CUDA RNG states); on CUDA with
  ``deterministic=True``, which selects deterministic kernels (math attention, no atomics).
- Periodic validation with the REACT metric suite, its costly parts sharded over ranks; ``best``
  follows ``best_metric``. A stage those metrics cannot see (``Generator.validates_by_loss``:
  ReactDiff's autoencoder, PFLPosNet's PosNet) is validated by its own losses over the validation
  items instead, and ``best`` follows ``val_loss``.
- ``compile=True``: the model's forward through ``torch.compile`` (compiled on the first step).
  Under compile, dropout's hashed masks take keys drawn inside the graph (they differ from eager's).
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import json
import math
import os
import random
import sys
import time
import weakref
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.distributed as dist

from reactfast import _backend, _io
from reactfast._distributed import launched_world_size
from reactfast._progress import Progress
from reactfast.models.base import check_at_least, check_field_types, eval_mode
from reactfast.nn.global_batch import global_batch
from reactfast.ops._checks import check_int, check_real, check_seed
from reactfast.train.batches import check_dataset, collate_appropriate
from reactfast.train.generation import HISTORY_API, generate_dataset, personalises
from reactfast.train.interrupt import deferred_interrupt
from reactfast.train.checkpoint import link_checkpoint, load_into, load_trainer_state, save_checkpoint


LR_SCHEDULES = ("constant", "cosine")


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 4
    lr: Optional[float] = None
    weight_decay: Optional[float] = None
    grad_clip: float = 1.0
    optimizer: str = "adamw"
    lr_schedule: str = "constant"
    warmup: int = 0
    min_lr_ratio: float = 0.0
    amp: bool = True
    max_candidates: int = 8
    ckpt_every: int = 0
    val_every: int = 0
    val_samples: int = 10
    log_every: int = 10
    out_dir: Optional[str] = None
    seed: int = 0
    progress: bool = True
    deterministic: bool = False
    compile: bool = False
    best_metric: str = "FRDist"
    tensorboard: bool = False

    def __post_init__(self):
        check_at_least(self, 1, "steps", "batch_size", "max_candidates", "val_samples", "log_every")
        check_at_least(self, 0, "ckpt_every", "val_every", "warmup")
        if self.out_dir is not None and not isinstance(self.out_dir, (str, os.PathLike)):
            raise TypeError(f"TrainConfig.out_dir must be a folder path or None, got {type(self.out_dir).__name__}")
        check_field_types(self)   # the bool fields: "no" is a true string
        check_seed("TrainConfig.seed", self.seed)
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"TrainConfig.optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"TrainConfig.lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if check_real("TrainConfig.min_lr_ratio", self.min_lr_ratio) > 1:
            raise ValueError(f"TrainConfig.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        # lr and weight_decay may be None (the model's); grad_clip 0 means no clipping.
        for name, positive in (("lr", True), ("weight_decay", False), ("grad_clip", False)):
            value = getattr(self, name)
            if value is None and name != "grad_clip":
                continue
            check_real(f"TrainConfig.{name}", value, strict=positive)
        from reactfast.metrics import METRICS

        if self.best_metric not in METRICS:
            raise ValueError(f"TrainConfig.best_metric must be one of {METRICS}, got {self.best_metric!r}")

    def lr_factor(self, step: int) -> float:
        """The learning rate of optimizer step ``step`` (0-based) over the base rate."""
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.lr_schedule == "constant":
            return 1.0
        progress = min(1.0, (step - self.warmup) / max(1, self.steps - self.warmup))
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


# Trainers whose DistributedDataParallel wrapper holds the process group. destroy_process_group
# drops the package's references to the group, not the wrapper's: with a trainer alive at exit the
# group would still be torn down during interpreter finalization, where gloo's worker threads can
# abort. At exit (before the group is destroyed, the handlers running in reverse order) the
# wrappers are dropped, so that the group goes while the interpreter is whole.
_DDP_TRAINERS: "weakref.WeakSet" = weakref.WeakSet()


class _TrainingLoss(torch.nn.Module):
    """``model.loss(batch, generators)`` as a module's forward, for DDP to wrap. ``forward``: what
    the loss runs the model through (the model, or its compiled forward: not a second submodule)."""

    def __init__(self, model: torch.nn.Module, forward):
        super().__init__()
        self.model = model
        self.__dict__["run_model"] = forward

    def forward(self, batch, generators):
        with global_batch():   # every process takes this step: batch-level losses gather their rows
            return self.model.loss(batch, generators, forward=self.run_model)


def _drop_ddp_wrappers() -> None:
    for trainer in list(_DDP_TRAINERS):
        trainer._ddp = None
    _DDP_TRAINERS.clear()
    gc.collect()


def distributed_context(device_type: str = "cpu"):
    """(rank, world size), initialising the process group under torchrun (gloo for CPU training,
    nccl for CUDA)."""
    world = launched_world_size()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
        # A process that exits with the group alive can abort in gloo's worker threads during interpreter
        # teardown ("terminate called without an active exception", pytorch/pytorch#190489): the group we
        # created is destroyed at exit (a no-op when the caller destroyed it already).
        atexit.register(_destroy_process_group)
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@contextlib.contextmanager
def deterministic_kernels(enabled: bool):
    """Within the block (when ``enabled``): deterministic algorithms only (an op without one raises),
    the math attention kernel (the fused ones accumulate with atomics on CUDA), deterministic cuDNN.
    Restores the previous settings after."""
    if not enabled:
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    previous = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
                torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        with sdpa_kernel([SDPBackend.MATH]):
            yield
    finally:
        torch.use_deterministic_algorithms(previous[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = previous[1], previous[2]


class TrainingDiverged(RuntimeError):
    """The loss or the gradients became NaN or Inf."""


# Validation metrics where a larger value is better (the rest: smaller).
_LARGER_IS_BETTER = ("FRCorr", "FRDiv", "FRDvs", "FRVar")


def _dump(path: str, data) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=1)


def _tensorboard(out_dir: str):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise ImportError(f"TrainConfig.tensorboard needs the tensorboard package ({exc}); pip install tensorboard") \
            from None
    return SummaryWriter(os.path.join(out_dir, "tensorboard"))


def seed_everything(seed: int) -> None:
    """Seed every random number generator a run touches: Python's, numpy's, torch's CPU and CUDA.
    ``seed``: an int in [0, 2**32), the range numpy and torch both take."""
    seed = check_seed("seed", seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def _item_generator(seed: int, step: int, item: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 7_919 + item * 104_729) % (2 ** 63))


def _adamw(params, lr: float, decay: float) -> torch.optim.Optimizer:
    """AdamW with torch's fused update (one kernel over all parameters, no per-parameter host read
    of the step count; on the demo ReactFace's 169 parameters on a 2-core CPU 1.3 ms a step against
    4.0 ms for the multi-tensor one), or the multi-tensor update where this torch has no fused one
    for the parameters' device."""
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(params, lr=lr, weight_decay=decay, foreach=True)


class Trainer:
    """Trains ``model`` (a reactfast generator with a ``loss(batch, generators, forward)`` method)
    on ``dataset`` (items are training windows; it needs an appropriateness matrix)."""

    def __init__(self, model: torch.nn.Module, dataset, config: Optional[TrainConfig] = None,
                 val_dataset=None, resume: Optional[str] = None, device=None, extra_meta: Optional[dict] = None):
        from reactfast.models.base import check_generator

        check_generator(model)
        if config is not None and not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig or None, got {type(config).__name__}")
        if extra_meta is not None and not isinstance(extra_meta, dict):
            # Checked here: the first checkpoint save would refuse it only after training steps.
            raise TypeError(f"extra_meta must be a dict or None, got {type(extra_meta).__name__}")
        # What the trainer reads of a dataset (ReactDataset's interface); a validation set also makes
        # whole-clip predictions and stacks its targets.
        training_api = ("__len__", "__getitem__", "appropriate", "dyads", "load_clip")
        check_dataset("dataset", dataset, training_api)
        if val_dataset is not None:
            check_dataset("val_dataset", val_dataset, training_api + ("window", "num_items", "stack"))
            if personalises(model):   # its validation reads the listeners' histories (found now, not then)
                check_dataset("val_dataset", val_dataset, HISTORY_API)
        self.config = cfg = config or TrainConfig()
        if cfg.val_every and val_dataset is None:   # validation was asked for and silently never ran
            raise ValueError(f"TrainConfig.val_every is {cfg.val_every} but no val_dataset was given: give one, or "
                             "set val_every=0")
        self.device = _backend.resolve_device(str(device) if device is not None else "auto")
        if self.device.type == "cuda":
            # The current device for NCCL (under torchrun each process's LOCAL_RANK GPU) and for
            # whatever the caller launches; the package's own kernels follow their tensors anyway.
            torch.cuda.set_device(self.device)
        self.rank, self.world = distributed_context(self.device.type)
        if cfg.batch_size % self.world:
            raise ValueError(f"batch_size ({cfg.batch_size}) must be divisible by the number of processes "
                             f"({self.world})")
        if len(dataset) < cfg.batch_size:
            raise ValueError(f"the dataset has {len(dataset)} items, fewer than one batch ({cfg.batch_size})")
        dataset.appropriate  # fail early when there is no appropriateness matrix
        self.model = model.to(self.device)
        self.dataset, self.val_dataset = dataset, val_dataset
        # The checkpoint names the audio features the model learns from (``audio_features`` of a
        # ReactDataset: .npy features of some width, or MFCC from .wav), unless extra_meta does.
        audio = getattr(dataset, "audio_features", None)
        named = {"audio": audio} if isinstance(audio, str) and audio != "none" else {}
        self.extra_meta = {**named, **(extra_meta or {})}
        mc = model.config
        params = [p for p in model.parameters() if p.requires_grad]
        lr = cfg.lr if cfg.lr is not None else mc.lr
        decay = cfg.weight_decay if cfg.weight_decay is not None else mc.weight_decay
        self.base_lr = lr
        self.optimizer = (_adamw(params, lr, decay) if cfg.optimizer == "adamw"
                          else torch.optim.SGD(params, lr=lr, weight_decay=decay, foreach=True))
        # The model's forward, through torch.compile with ``compile`` (compiled on the first step,
        # again if a batch's shapes change).
        self.forward = torch.compile(model) if cfg.compile else model
        self._ddp = None
        if self.world > 1:
            # DDP wraps the whole loss: every parameter a loss uses is used inside the wrapped forward
            # (PerFRDiff's style encoder, trained by a contrastive loss beside the denoiser, was used
            # outside it, and DDP marked its gradients ready twice). Frozen parameters are not DDP's;
            # trainable ones a step leaves without a gradient need its graph search every step.
            frames = getattr(dataset, "window", None) or getattr(dataset, "frames", None)
            self._ddp = torch.nn.parallel.DistributedDataParallel(
                _TrainingLoss(model, self.forward), device_ids=[self.device.index] if self.device.type == "cuda"
                else None, find_unused_parameters=not model.uses_every_parameter(frames))
            if not _DDP_TRAINERS:   # (registered again after all were collected: harmless, a no-op then)
                atexit.register(_drop_ddp_wrappers)   # after distributed_context's: runs before it
            _DDP_TRAINERS.add(self)
        self.step = 0
        self.best: Optional[float] = None
        self._saved_step: Optional[int] = None
        self._updating = False
        self._updates = 0        # optimizer updates taken in this process
        self._rng_after: Optional[dict] = None   # the RNG states when the last finished step ended
        self.history: List[Dict[str, float]] = []
        self.steps_per_epoch = len(dataset) // cfg.batch_size
        if resume:
            self._resume(resume)

    def _rng_state(self) -> dict:
        state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def _resume(self, path: str) -> None:
        load_into(self.model, path)
        _, state = load_trainer_state(path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = state["step"]
        self.history = state["history"]
        self.best = state.get("best")
        rng = state["rng"][min(self.rank, len(state["rng"]) - 1)]
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        if self.device.type == "cuda" and "cuda" in rng:
            torch.cuda.set_rng_state(rng["cuda"], self.device)

    def save(self, path: str) -> None:
        self._save(path)

    def _save(self, path: str, rng: Optional[dict] = None) -> None:
        rngs = [self._rng_state() if rng is None else rng]
        if self.world > 1:
            gathered = [None] * self.world
            dist.all_gather_object(gathered, rngs[0])
            rngs = gathered
        if self.rank == 0:
            state = {"optimizer": self.optimizer.state_dict(), "step": self.step, "history": self.history,
                     "rng": rngs, "train_config": asdict(self.config), "best": self.best}
            save_checkpoint(path, self.model, state, extra=self.extra_meta, tag=self.step)
        self._saved_step = self.step
        if self.world > 1:
            dist.barrier()

    @torch.no_grad()
    def _validation_losses(self) -> Dict[str, float]:
        """The model's training losses in eval mode, averaged over the validation items (each rank
        takes every world-th item, in batches of its share of ``batch_size``). Every validation
        draws the same noise (the items' generators of step 0), so that validations compare."""
        cfg, ds = self.config, self.val_dataset
        rows = list(range(self.rank, len(ds), self.world))
        local = cfg.batch_size // self.world
        sums: Dict[str, float] = {}
        with eval_mode(self.model):
            for start in range(0, len(rows), local):
                indices = rows[start:start + local]
                gens = [_item_generator(cfg.seed, 0, i) for i in indices]
                with self._autocast():
                    losses = self.model.loss(self._batch(ds, indices), gens)
                values = torch.stack([v.detach().double() for v in losses.values()]).tolist()
                for name, value in zip(losses, values):
                    sums[name] = sums.get(name, 0.0) + value * len(indices)
        parts = [(sums, len(rows))]
        if self.world > 1:
            parts = [None] * self.world
            dist.all_gather_object(parts, (sums, len(rows)))
        count = sum(n for _, n in parts)
        names = dict.fromkeys(name for p, _ in parts for name in p)   # (a rank may have had no items)
        return {name: sum(p.get(name, 0.0) for p, _ in parts) / count for name in names}

    def batch_indices(self, step: int) -> List[int]:
        cfg = self.config
        epoch, pos = divmod(check_int("step", step, minimum=0), self.steps_per_epoch)
        perm = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(cfg.seed * 7_777 + epoch))
        global_batch = perm[pos * cfg.batch_size:(pos + 1) * cfg.batch_size].tolist()
        local = cfg.batch_size // self.world
        return global_batch[self.rank * local:(self.rank + 1) * local]

    def _batch(self, dataset, indices: List[int]) -> Dict[str, torch.Tensor]:
        """Items ``indices`` of ``dataset`` with their appropriate reactions, on the device; features
        in the model's dtype (float32 data for a model cast to bfloat16 or float64)."""
        batch = collate_appropriate(dataset, indices, self.config.max_candidates)
        dtype = next(self.model.parameters()).dtype
        return {k: v.to(self.device, dtype=dtype if v.is_floating_point() else None, non_blocking=True)
                for k, v in batch.items()}

    def _autocast(self):
        """bfloat16 autocast on CUDA with ``amp``."""
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16,
                              enabled=self.config.amp and self.device.type == "cuda")

    def train_step(self) -> Dict[str, float]:
        """One optimizer step; raises :class:`TrainingDiverged` (weights untouched) when the loss or
        the gradient norm is not finite. Its one host synchronisation reads the losses."""
        cfg = self.config
        indices = self.batch_indices(self.step)
        batch = self._batch(self.dataset, indices)
        gens = [_item_generator(cfg.seed, self.step, i) for i in indices]
        self.model.train()
        with self._autocast(), deterministic_kernels(cfg.deterministic):
            losses = (self.model.loss(batch, gens, forward=self.forward) if self._ddp is None
                      else self._ddp(batch, gens))
        self.optimizer.zero_grad(set_to_none=True)
        with deterministic_kernels(cfg.deterministic):
            losses["loss"].backward()
        params = [p for p in self.model.parameters() if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"),
                                              foreach=True)
        values = torch.stack([v.detach().float() for v in losses.values()] + [norm.detach().float()])
        if self.world > 1:
            dist.all_reduce(values)
            values /= self.world
        values = values.tolist()
        record = {"step": self.step + 1, **dict(zip(losses, values[:-1])), "grad_norm": values[-1]}
        if not (math.isfinite(record["loss"]) and math.isfinite(record["grad_norm"])):
            bad = [f"{key} {value}" for key, value in record.items() if key != "step" and not math.isfinite(value)]
            # Before this process's first update the weights are the finite ones it started from: a
            # learning rate cannot be the cause (1-frame items gave ReactFace a NaN loss term).
            cause = (f"lower the learning rate, now {self.base_lr * cfg.lr_factor(self.step):g}" if self._updates
                     else "before any update of this run, so not from its learning rate: from the items or the "
                     "model's configuration")
            raise TrainingDiverged(f"training diverged at step {self.step + 1}: {', '.join(bad)} ({cause}); the "
                                   f"weights of step {self.step} are kept and no non-finite checkpoint is written")
        lr = record["lr"] = self.base_lr * cfg.lr_factor(self.step)
        self._updating = True   # an error from here on leaves the weights half updated: not saved
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.model.after_step()
        self.step += 1
        self._updates += 1
        self._updating = False
        return record

    def fit(self, max_steps: Optional[int] = None) -> List[Dict[str, float]]:
        """Train until ``config.steps`` (or ``max_steps`` more steps, to stop early). With ``out_dir``:
        ``history.jsonl`` gets a line per step as training goes, ``checkpoint`` every ``ckpt_every``
        steps and at the end, ``best`` whenever validation improves ``best_metric``. A Ctrl-C (single
        process, main thread) lets the step under way finish, saves ``checkpoint`` (with ``out_dir``)
        and then raises KeyboardInterrupt; a second Ctrl-C stops at once. An error after steps that
        no checkpoint holds saves them first (with ``out_dir``; see ``_save_after_error``) and adds
        a note saying where."""
        cfg = self.config
        if max_steps is not None:
            check_int("max_steps", max_steps, minimum=0)
        end = cfg.steps if max_steps is None else min(cfg.steps, self.step + max_steps)
        lead = self.rank == 0
        log = tensorboard = None
        if cfg.out_dir and lead:
            _io.check_writable_dir(cfg.out_dir, "the run folder (out_dir)")
            log = open(os.path.join(cfg.out_dir, "history.jsonl"), "a" if self.step else "w")
            if self.step:
                log.truncate(0)
                log.writelines(json.dumps(r) + "\n" for r in self.history)
            if cfg.tensorboard:
                tensorboard = _tensorboard(cfg.out_dir)
        progress = Progress(cfg.steps, f"train {self.model.name}", initial=self.step, enabled=cfg.progress and lead,
                            every=cfg.log_every)
        start = time.perf_counter()
        first = self.step
        try:
            with deferred_interrupt(self.world == 1) as interrupted:
                self._fit_loop(end, log, tensorboard, progress, interrupted)
        except Exception as exc:
            self._save_after_error(exc, first)
            raise
        if interrupted() and self.step < end:   # (in the last step: the run simply ends)
            if cfg.out_dir and self._saved_step != self.step:
                self.save(os.path.join(cfg.out_dir, "checkpoint"))
            where = f"; saved {os.path.join(cfg.out_dir, 'checkpoint')} (resume from it)" if cfg.out_dir else ""
            print(f"[reactfast] stopped after step {self.step}{where}", file=sys.stderr, flush=True)
            raise KeyboardInterrupt
        if cfg.out_dir and self.step >= cfg.steps:
            if self._saved_step != self.step:
                self.save(os.path.join(cfg.out_dir, "checkpoint"))
            if lead:
                _io.atomic_write(os.path.join(cfg.out_dir, "history.json"), lambda tmp: _dump(
                    tmp, {"history": self.history, "seconds": time.perf_counter() - start}))
        return self.history

    def _fit_loop(self, end: int, log, tensorboard, progress, interrupted) -> None:
        """Steps until ``end`` or, after a deferred Ctrl-C, the end of the step under way."""
        cfg = self.config
        try:
            if cfg.out_dir:
                self._rng_after = self._rng_state()
            while self.step < end and not interrupted():
                record = self.train_step()
                if cfg.out_dir:   # what a step that then fails must not have moved on (its dropout draws)
                    self._rng_after = self._rng_state()
                self.history.append(record)
                if cfg.ckpt_every and self.step % cfg.ckpt_every == 0 and cfg.out_dir:
                    self.save(os.path.join(cfg.out_dir, "checkpoint"))
                if cfg.val_every and self.step % cfg.val_every == 0 and self.val_dataset is not None:
                    record.update({f"val_{k}": v for k, v in self.validate().items()})
                    self._keep_best(record)
                if log is not None:
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                if tensorboard is not None:
                    for key, value in record.items():
                        if key != "step":
                            tensorboard.add_scalar(key, value, record["step"])
                progress.update(1, {k: record[k] for k in ("loss", "rec") if k in record})
        finally:
            progress.close()
            if log is not None:
                log.close()
            if tensorboard is not None:
                tensorboard.close()

    def _save_after_error(self, exc: Exception, first: int) -> None:
        """An error stopped ``fit`` after it had finished steps that no checkpoint holds (a run
        without ``ckpt_every`` saves only at its end): save them, as the last finished step left
        them, and say so in the error. Not after an error inside an optimizer update, nor, under
        DDP, after an error that other ranks may not share (the save is collective): a divergence
        is found from all-reduced values, on every rank at the same step."""
        cfg = self.config
        if not cfg.out_dir or self.step == first or self._saved_step == self.step:
            return
        path = os.path.join(cfg.out_dir, "checkpoint")
        if self._updating:
            exc.add_note(f"no checkpoint was saved: the error came inside the optimizer update of step "
                         f"{self.step + 1}")
            return
        if self.world > 1 and not isinstance(exc, TrainingDiverged):
            exc.add_note(f"no checkpoint was saved on rank {self.rank}: the save is collective and the other ranks "
                         f"may not have failed (step {self.step} finished; ckpt_every bounds what a failure loses)")
            return
        try:
            self._save(path, self._rng_after)   # (set with out_dir before the first step and after each)
        except Exception as save_error:
            exc.add_note(f"saving the {self.step} finished steps to {path} failed too: {save_error}")
            return
        exc.add_note(f"the weights of step {self.step}, the last finished step, were saved to {path}: resume from it")

    def _keep_best(self, record: Dict[str, float]) -> None:
        """Save ``checkpoint`` and point ``best`` at it when ``best_metric`` improved."""
        cfg = self.config
        key = self.best_key
        if key not in record or not cfg.out_dir:
            return
        value = record[key]
        if self.best is None or (value > self.best if key[len("val_"):] in _LARGER_IS_BETTER else value < self.best):
            self.best = value
            path = os.path.join(cfg.out_dir, "checkpoint")
            if self._saved_step != self.step:
                self.save(path)
            if self.rank == 0:
                link_checkpoint(path, os.path.join(cfg.out_dir, "best"))

    @property
    def best_key(self) -> str:
        """The record key ``best`` follows: ``val_`` + ``config.best_metric``, or ``val_loss`` for a
        stage the model validates by its loss (``Generator.validates_by_loss``)."""
        return "val_loss" if self.model.validates_by_loss() else f"val_{self.config.best_metric}"

    @torch.no_grad()
    def validate(self) -> Dict[str, float]:
        """REACT metrics of generated emotion on the validation set; FRCorr and FRDist are sharded
        over ranks (each computes its rows, the sums are all-reduced). For a stage the model
        validates by its loss (``Generator.validates_by_loss``: a stage those metrics cannot see),
        its training losses averaged over the validation items instead."""
        from reactfast import metrics

        if self.model.validates_by_loss():
            return self._validation_losses()
        ds = self.val_dataset
        rows = list(range(self.rank, ds.num_items, self.world))
        preds = generate_dataset(self.model, ds, self.config.val_samples, seed=self.config.seed, rows=rows,
                                 device=self.device)["emotion"]
        parts = [(rows, preds)]
        if self.world > 1:
            gathered = [None] * self.world
            dist.all_gather_object(gathered, (rows, preds))
            parts = gathered
        N = ds.num_items
        full = np.zeros((N,) + preds.shape[1:], dtype=np.float32)
        for r, p in parts:
            full[r] = p
        gt = ds.stack("listener", "emotion").numpy()
        speaker = ds.stack("speaker", "emotion").numpy()
        a = ds.appropriate
        partial = torch.tensor([metrics.frcorr(full, gt, a, rows=rows), metrics.frdist(full, gt, a, rows=rows)],
                               dtype=torch.float64)
        if self.world > 1:
            dist.all_reduce(partial)
        return {"FRCorr": float(partial[0]), "FRDist": float(partial[1]), "FRDiv": metrics.frdiv(full),
                "FRDvs": metrics.frdvs(full), "FRVar": metrics.frvar(full), "FRSyn": metrics.frsyn(full, speaker)}
