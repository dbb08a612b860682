"""Generating reactions for every dyad of a dataset (whole clips, S samples each)."""

from __future__ import annotations

import bisect
import inspect
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from reactfast._progress import Progress


@dataclass
class PartialGeneration:
    """What ``generate_dataset`` had finished when an error (or Ctrl-C) stopped it, attached to
    that error as its ``partial`` attribute: ``outputs`` {key: (len(rows), S, T, width)} for the
    dyads ``rows``; ``remaining`` the dyads still to generate. Each dyad's noise comes from its
    own seeded generator, so ``generate_dataset(..., rows=partial.remaining)`` with the same
    arguments gives the rest, and ``partial.join(rest)`` the outputs of every dyad asked for."""

    rows: List[int]
    remaining: List[int]
    outputs: Dict[str, np.ndarray]

    def join(self, rest: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """These outputs followed by ``rest``, the outputs of ``remaining``, in the order first asked for."""
        if not isinstance(rest, dict) or set(rest) != set(self.outputs):
            got = sorted(rest) if isinstance(rest, dict) else type(rest).__name__
            raise ValueError(f"rest must hold the outputs {sorted(self.outputs)}, got {got}")
        for key, value in rest.items():
            done = self.outputs[key]
            if not isinstance(value, np.ndarray) or value.shape[1:] != done.shape[1:] \
                    or len(value) != len(self.remaining):
                got = value.shape if isinstance(value, np.ndarray) else type(value).__name__
                raise ValueError(f"rest[{key!r}] must be an array of shape {(len(self.remaining),) + done.shape[1:]} "
                                 f"(the {len(self.remaining)} remaining dyads), got {got}")
        return {key: np.concatenate([done, rest[key]]) for key, done in self.outputs.items()}


# What generate_dataset reads of a dataset to give a personalised generator its listener histories.
HISTORY_API = ("dyads", "listener_ids", "load_clip", "frames")


def personalises(model) -> bool:
    """Whether ``model.generate`` takes a listener's history (``listener_history``: PerFRDiff)."""
    return "listener_history" in inspect.signature(model.generate).parameters


def listener_histories(dataset, rows: Sequence[int]) -> Dict[int, int]:
    """For each dyad of ``rows``, the dyad whose listener clip serves as its listener's history: the
    next dyad in dyad order (wrapping around) with the same listener (``dataset.listener_ids``) in
    another clip. Never the dyad's own listener clip, which holds the reaction to be generated.
    Dyads whose listener has no other clip in the dataset are left out."""
    ids, clips = list(dataset.listener_ids), [listener for _, listener in dataset.dyads]
    by_listener: Dict[int, List[int]] = {}
    for j, listener in enumerate(ids):
        by_listener.setdefault(listener, []).append(j)
    found = {}
    for i in rows:
        same = by_listener[ids[i]]
        k = bisect.bisect_right(same, i)
        j = next((j for j in same[k:] + same[:k] if clips[j] != clips[i]), None)
        if j is not None:
            found[i] = j
    return found


@torch.no_grad()
def generate_dataset(model, dataset, samples: int = 10, seed: int = 0, rows: Optional[Sequence[int]] = None,
                     batch_size: int = 8, device=None, progress: bool = False, window: Optional[int] = None,
                     personalise: bool = True) -> Dict[str, np.ndarray]:
    """{"3dmm": (n, S, T, 58), "emotion": (n, S, T, 25)} (the model's outputs) for the dyads ``rows`` (default all) of a
    whole-clip dataset; each dyad's noise comes from a generator seeded by (seed, dyad), so the
    result does not depend on batching or on how rows are split over processes (up to float
    rounding: the dyads of a batch run through one call). ``window``: the
    online step of generators that take one (default: the model's).

    A personalised generator (one whose ``generate`` takes ``listener_history``: PerFRDiff) gets,
    with ``personalise``, each dyad's listener history: the 3DMM of another clip of the same
    listener (``listener_histories``; as the paper personalises, from a historical video of the
    target listener). A dyad whose listener has no other clip is generated without one, as with
    ``personalise=False``.

    An error (or Ctrl-C) after some batches had finished keeps their outputs: the error carries a
    :class:`PartialGeneration` as ``partial``, from which ``rows=partial.remaining`` goes on."""
    from reactfast import _backend
    from reactfast.models.base import check_generator, check_int, eval_mode
    from reactfast.ops._checks import check_bool, check_indices, check_seed
    from reactfast.train.batches import check_dataset

    check_generator(model)
    check_dataset("dataset", dataset, ("__getitem__", "window", "num_items"))
    check_int("samples", samples)
    check_int("batch_size", batch_size)
    check_seed("seed", seed)
    check_bool("progress", progress)
    check_bool("personalise", personalise)
    if dataset.window is not None:
        raise ValueError("generate_dataset needs a whole-clip dataset (window=None)")
    if window is not None:
        check_int("window", window)
        if "window" not in inspect.signature(model.generate).parameters:
            # PerFRDiff and ReactDiff generate in their own window: it was passed on, a TypeError
            if window != model.window:
                raise ValueError(f"window: {type(model).__name__} generates in windows of its own "
                                 f"{model.window} frames, got {window}")
            window = None
    # Dyad indices in [0, num_items), checked before any is generated (numpy integers too) and
    # before the model is moved.
    rows = list(range(dataset.num_items)) if rows is None else check_indices("rows", rows, dataset.num_items).tolist()
    if device is not None:
        device = _backend.resolve_device(str(device))   # cpu, cuda or cuda:N, named where it is not
        model.to(device)
    device = device or next(model.parameters()).device
    # Generation runs in eval mode (no dropout); every submodule's mode comes back afterwards (a
    # training loop that validated with this function went on training without dropout before).
    histories = {}
    if personalise and personalises(model):
        check_dataset("dataset", dataset, HISTORY_API)
        histories = listener_histories(dataset, rows)
    with eval_mode(model):
        return _generate(model, dataset, samples, seed, rows, batch_size, device, progress, window, histories)


def _history(dataset, dyad: int) -> torch.Tensor:
    """The listener 3DMM of ``dyad``'s clip over the dataset's frames: (T, 58)."""
    clip = dataset.load_clip(dataset.dyads[dyad][1])["3dmm"][:dataset.frames]
    return torch.from_numpy(np.ascontiguousarray(clip, dtype=np.float32))


def _generate(model, dataset, samples, seed, rows, batch_size, device, progress, window, histories
              ) -> Dict[str, np.ndarray]:
    outs: Dict[str, list] = {}
    extra = {} if window is None else {"window": window}
    bar = Progress(len(rows), f"generate {getattr(model, 'name', '')}".strip(), unit="dyad", enabled=progress,
                   every=max(1, batch_size))
    done = 0
    try:
        for lo in range(0, len(rows), batch_size):
            part = rows[lo:lo + batch_size]
            batch = {}
            items = [dataset[i] for i in part]
            for key in items[0]:
                batch[key] = torch.stack([it[key] for it in items]).to(device)
            speaker, audio = model.inputs_from_batch(batch)
            # One call for the batch (one for its personalised dyads, one for the others), each dyad's
            # noise from its own generator (``Generator.draw_windows``).
            gens = [torch.Generator().manual_seed(seed * 1_000_003 + i) for i in part]
            groups = [[b for b, i in enumerate(part) if i in histories], [b for b, i in enumerate(part)
                                                                           if i not in histories]]
            result: Dict[str, list] = {}
            for group, personal in zip(groups, (True, False)):
                if not group:
                    continue
                kwargs = dict(extra)
                if personal:
                    kwargs["listener_history"] = torch.stack([_history(dataset, histories[part[b]])
                                                              for b in group]).to(device)
                whole = len(group) == len(part)
                out = model.generate(speaker if whole else speaker[group], audio if whole else audio[group], samples,
                                     [gens[b] for b in group], **kwargs)
                for key, value in out.items():
                    result.setdefault(key, [None] * len(part))
                    for b, v in zip(group, value.cpu().numpy()):
                        result[key][b] = v
            for key, value in result.items():   # every output of the batch, or none
                outs.setdefault(key, []).extend(value)
            done = lo + len(part)
            bar.update(len(part))
    except BaseException as exc:
        if done:
            exc.partial = PartialGeneration(rows[:done], rows[done:], {key: np.stack(v) for key, v in outs.items()})
            exc.add_note(f"generate_dataset: the outputs of the {done} dyads finished before this error are kept in "
                         f"its .partial; rows=.partial.remaining generates the other {len(rows) - done}")
        raise
    finally:
        bar.close()
    if not rows:   # no dyad asked for: the arrays with none
        return {key: np.zeros((0, samples, dataset.frames, width), dtype=np.float32)
                for key, width in model.output_widths().items()}
    return {key: np.stack(values) for key, values in outs.items()}
