"""Online (streaming) generation: one ``ReactionStream`` per conversation, and a ``StreamRunner``
that advances many concurrent streams (different listeners, different ages) in one forward.

A stream takes speaker frames and audio as they arrive and emits listener frames window by
window; its state has a fixed size, so a step costs the same at frame 10 and at frame 100,000.
Streaming gives exactly what ``model.generate`` gives for the same inputs and generator.

Every ``reactfast.models.base.Generator`` streams: a stream calls its ``init_state``, ``step``,
``draw_noise``, ``check_inputs`` and ``output_widths``; its state dataclass has ``cat``/``split``.
"""

from __future__ import annotations

import inspect
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from torch import nn

from reactfast import _backend
from reactfast.diffusion import capture_cuda_graph, clone_tree, copy_tree
from reactfast.ops._checks import check_bool, check_device

__all__ = ["ReactionStream", "StreamClosed", "StreamRunner"]


class StreamClosed(RuntimeError):
    """Input was pushed to a stream after ``close``/``flush``."""


class ReactionStream:
    """One conversation's online generation state.

    Args:
        model: a ``reactfast.models.Generator`` (in eval mode for deterministic output).
        num_samples: S reactions generated side by side for this speaker.
        generator: a torch.Generator (CPU or CUDA) for the model's noise; seeds make runs repeatable.
        window: frames emitted per step (default: the model's inference window).
        device: where the state lives: the model's device (the default; another one is refused).

    ``push(speaker (n, F), audio (k n, A))`` returns the frames completed so far as a dict
    {"3dmm": (S, m, 58), "emotion": (S, m, 25)} with m a multiple of the window (possibly 0; n may
    be 0 too, an empty chunk);
    ``flush()`` emits the remainder (padding the last window by repeating its last frame) and
    closes the stream. A window's input is consumed only once its step succeeded; if a step
    raises (out of memory, say), the windows finished before it in that call are kept and come
    first in what the next ``push`` or ``flush`` returns, and the failed window is tried again
    with the noise drawn for it, so the output equals that of a stream that never failed.
    """

    def __init__(self, model: nn.Module, num_samples: int = 10, generator: Optional[torch.Generator] = None,
                 window: Optional[int] = None, device=None, **state_kwargs):
        from reactfast.models.base import check_generator, check_int

        check_generator(model)
        check_int("num_samples", num_samples)
        if window is not None:
            check_int("window", window)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        self.model = model
        self.samples = num_samples
        self.window = window if window is not None else model.window
        self.generator = generator
        own = next(model.parameters()).device
        if device is not None:
            asked = check_device("device", device)
            if asked.type != own.type or (asked.index is not None and asked.index != own.index):
                # The state must lie beside the weights (a push failed on a device mismatch before).
                raise ValueError(f"device {asked} is not the model's ({own}): a stream's state lives beside its "
                                 f"model's weights; move the model with model.to({str(asked)!r})")
        self.device = own
        if "conversations" in inspect.signature(model.init_state).parameters:
            state_kwargs.setdefault("conversations", 1)   # one speaker, shared by the samples
        self.state = model.init_state(num_samples, self.window, self.device, **state_kwargs)
        self._speaker: List[torch.Tensor] = []
        self._audio: List[torch.Tensor] = []
        self._pending = 0
        self._finished: List[Dict[str, torch.Tensor]] = []   # windows generated, not yet returned
        self._noise: Optional[torch.Tensor] = None    # the pending window's draws, kept until its step succeeds
        self.frames_in = 0
        self.frames_out = 0
        self.closed = False

    @property
    def ready(self) -> bool:
        return self._pending >= self.window

    def _check(self, speaker: torch.Tensor, audio: torch.Tensor):
        if self.closed:
            raise StreamClosed("this stream is closed: it takes no more input after close() or flush()")
        speaker, audio = self._as_input("speaker", speaker), self._as_input("audio", audio)
        if speaker.dim() == 3 and speaker.shape[0] == 1:
            speaker = speaker[0]
        if audio.dim() == 3 and audio.shape[0] == 1:
            audio = audio[0]
        if speaker.dim() != 2 or audio.dim() != 2:
            raise ValueError(f"push takes speaker (n, F) and audio (k n, A), got {tuple(speaker.shape)} and "
                             f"{tuple(audio.shape)}")
        if speaker.shape[0] == 0 and audio.shape[0] == 0:
            # Nothing arrived (an empty chunk of a capture loop): the widths are still the model's.
            k = self.model.audio_per_frame
            try:
                one = speaker.new_zeros(1, 1, speaker.shape[1]), audio.new_zeros(1, k, audio.shape[1])
                self.model.check_inputs(*one)
            except ValueError as exc:
                raise ValueError(f"{exc} (as one frame of this empty push of speaker {tuple(speaker.shape)} and audio "
                                 f"{tuple(audio.shape)})") from None
        else:
            self.model.check_inputs(speaker[None], audio[None])
        return speaker.to(self.device), audio.to(self.device)

    def _as_input(self, name: str, x) -> torch.Tensor:
        """A float tensor in the model's dtype (numpy arrays and other float dtypes converted)."""
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(np.ascontiguousarray(x))
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"{name} must hold floating-point features, got dtype {x.dtype}")
        return self.model.in_model_dtype(x)[0]

    def feed(self, speaker: torch.Tensor, audio: torch.Tensor) -> None:
        """Buffer n new speaker frames and their k n audio rows without generating (for a
        ``StreamRunner`` to step this stream together with others)."""
        speaker, audio = self._check(speaker, audio)
        self._speaker.append(speaker)
        self._audio.append(audio)
        self._pending += speaker.shape[0]
        self.frames_in += speaker.shape[0]

    def push(self, speaker: torch.Tensor, audio: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Add n new speaker frames and their k n audio rows; emit every completed window."""
        self.feed(speaker, audio)
        self._step_full_windows()
        return self._deliver()

    def _step_full_windows(self) -> None:
        while self.ready:
            self._finished.append(self._advance(*self._next_window()))
            self._consume()

    def _deliver(self, last: Optional[Dict[str, torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
        """Every finished window not yet returned (and ``last``), in order; clears them."""
        outs, self._finished = self._finished + ([last] if last is not None else []), []
        return _concat(outs, self.samples, self.model)

    def _next_window(self):
        """The next window's speaker frames and audio rows, left pending until ``_consume``."""
        k, W = self.model.audio_per_frame, self.window
        speaker = torch.cat(self._speaker)
        audio = torch.cat(self._audio)
        self._speaker, self._audio = [speaker], [audio]
        return speaker[:W], audio[:k * W]

    def _consume(self) -> None:
        k, W = self.model.audio_per_frame, self.window
        self._speaker, self._audio = [self._speaker[0][W:]], [self._audio[0][k * W:]]
        self._pending -= W
        self._noise = None

    def noise(self) -> torch.Tensor:
        """Fresh draws from the stream's generator for one window of its samples."""
        return self.model.draw_noise(self.samples, self.generator, self.window).to(self.device)

    def _window_noise(self) -> torch.Tensor:
        """The pending window's draws: drawn once, and again only after its step succeeded (a
        retried window gets the noise it would have had)."""
        if self._noise is None:
            self._noise = self.noise()
        return self._noise

    @torch.no_grad()
    def _advance(self, speaker: torch.Tensor, audio: torch.Tensor) -> Dict[str, torch.Tensor]:
        S = self.samples
        out, self.state = self.model.step(self.state, speaker[None].expand(S, -1, -1),
                                          audio[None].expand(S, -1, -1), self._window_noise())
        self.frames_out += speaker.shape[0]
        return {key: out[key] for key in ("3dmm", "emotion") if key in out}

    def flush(self) -> Dict[str, torch.Tensor]:
        """Emit the frames still pending (every full window, then the rest padded to a window with its
        last frame) and close."""
        if self.closed:
            raise StreamClosed("this stream is already closed")
        self._step_full_windows()    # fed and not stepped (feed without a runner), or left by a failed push
        real = self._pending
        last = None
        if real:
            k, W = self.model.audio_per_frame, self.window
            speaker = torch.cat(self._speaker)
            audio = torch.cat(self._audio)
            pad = W - real
            speaker = torch.cat([speaker, speaker[-1:].expand(pad, -1)])
            audio = torch.cat([audio, audio[-k:].repeat(pad, 1)])
            last = {key: value[:, :real] for key, value in self._advance(speaker, audio).items()}
            self.frames_out -= pad
            self._pending = 0
            self._noise = None
        self.closed = True
        return self._deliver(last)

    def close(self) -> None:
        self.closed = True


def _concat(outs: List[Dict[str, torch.Tensor]], samples: int, model: nn.Module) -> Dict[str, torch.Tensor]:
    if outs:
        return {key: torch.cat([o[key] for o in outs], 1) for key in outs[0]}
    device = next(model.parameters()).device
    return {key: torch.zeros(samples, 0, width, device=device) for key, width in model.output_widths().items()}


class _GraphedStep:
    """One ``model.step`` captured for one batch layout: input buffers (the state's tensors, the
    window's speaker, audio and noise) copied into before each replay, outputs copied out after."""

    def __init__(self, model: nn.Module, state, speaker, audio, noise, capture):
        self.inputs = clone_tree((state, speaker, audio, noise))

        def fn():
            with _backend.graph_safe():
                return model.step(*self.inputs)

        self.replay, self.outputs = capture(fn, speaker.device)

    def __call__(self, state, speaker, audio, noise):
        copy_tree(self.inputs, (state, speaker, audio, noise))
        self.replay()
        return clone_tree(self.outputs)


class StreamRunner:
    """Advances many streams of one model in a single batched forward per call.

    ``step(streams)`` takes every stream with a full window pending, concatenates their states
    (each of batch S_i) and inputs, runs one ``model.step``, and hands each stream its frames and
    new state. Each stream's noise still comes from its own generator, so a stream's output does
    not depend on which others share its batch.

    With ``graph=True`` (a model on a CUDA device whose step can be captured: ReactFace, PFLPosNet)
    the step runs on a CUDA graph, captured the first time each batch layout (the streams' sample counts, in
    order) is stepped and replayed after: one launch per window instead of hundreds, the same
    outputs as the eager step. A capture holds its own buffers (about two states of the batch);
    ``clear_graphs()`` frees them. ``capture`` replaces the CUDA capture (the tests pass one that
    re-runs the step on replay, to check on a CPU that the step reads only its input buffers).
    """

    def __init__(self, model: nn.Module, graph: bool = False, capture=None):
        from reactfast.models.base import check_generator

        check_generator(model)
        self.model = model
        self.graph = check_bool("graph", graph)
        self._graphs: Dict[tuple, _GraphedStep] = {}
        self._capture = capture
        if self.graph:
            if not getattr(model, "graph_capturable", False):
                raise ValueError(f"graph=True: {type(model).__name__}'s step is not known to be capturable in a CUDA "
                                 "graph (ReactFace's and PFLPosNet's are); run it with graph=False")
            device = next(model.parameters()).device
            if capture is None and device.type != "cuda":
                raise ValueError(f"graph=True needs the model on a CUDA device, it is on {device}")
            if model.training:
                raise ValueError("graph=True needs the model in eval mode (a captured step replays the same "
                                 "dropout masks)")

    def clear_graphs(self) -> None:
        """Free the captured steps."""
        self._graphs.clear()

    def _run(self, state, speaker, audio, noise):
        if not self.graph:
            return self.model.step(state, speaker, audio, noise)
        key = (getattr(state, "rows", None), tuple(speaker.shape), tuple(audio.shape), tuple(noise.shape),
               speaker.dtype, str(speaker.device))
        step = self._graphs.get(key)
        if step is None:
            step = self._graphs[key] = _GraphedStep(self.model, state, speaker, audio, noise,
                                                    self._capture or capture_cuda_graph)
        return step(state, speaker, audio, noise)

    @torch.no_grad()
    def step(self, streams: Sequence[ReactionStream]) -> List[Optional[Dict[str, torch.Tensor]]]:
        """Advance every stream of ``streams`` that has a full window pending by one window, all in
        one batched step; returns each stream's frames ({"3dmm": (S_i, W, 58), ...}), or None for a
        stream with no full window pending (or closed). Each stream may appear once."""
        if isinstance(streams, ReactionStream) or not isinstance(streams, Sequence):
            raise TypeError(f"streams must be a sequence (list or tuple) of ReactionStream, got "
                            f"{type(streams).__name__}" + (": wrap one stream as [stream]"
                                                           if isinstance(streams, ReactionStream) else ""))
        first: Dict[int, int] = {}
        for i, s in enumerate(streams):
            if id(s) in first:
                raise ValueError(f"streams[{i}] is streams[{first[id(s)]}]: a stream advances at most one window "
                                 "per step, so it may appear only once")
            first[id(s)] = i
            if not isinstance(s, ReactionStream):
                raise TypeError(f"streams[{i}] must be a ReactionStream, got {type(s).__name__}")
            if s.model is not self.model:
                raise ValueError(f"streams[{i}] runs another model ({type(s.model).__name__} at "
                                 f"{id(s.model):#x}) than this runner's ({id(self.model):#x}); a runner steps "
                                 "only streams of its own model")
        ready = [s for s in streams if s.ready and not s.closed]
        results: Dict[int, Dict[str, torch.Tensor]] = {}
        if ready:
            windows = {s.window for s in ready}
            if len(windows) != 1:
                raise ValueError(f"streams stepped together must share one window, got {sorted(windows)}")
            inputs = [s._next_window() for s in ready]
            sizes = [s.samples for s in ready]
            speaker = torch.cat([sp[None].expand(s.samples, -1, -1) for s, (sp, _) in zip(ready, inputs)])
            audio = torch.cat([au[None].expand(s.samples, -1, -1) for s, (_, au) in zip(ready, inputs)])
            noise = torch.cat([s._window_noise() for s in ready])
            state = type(ready[0].state).cat([s.state for s in ready])
            out, state = self._run(state, speaker, audio, noise)
            for i, (s, new_state) in enumerate(zip(ready, state.split(sizes))):
                s._consume()   # only now that the step succeeded
                s.state = new_state
                s.frames_out += s.window
                lo = sum(sizes[:i])
                results[id(s)] = {key: out[key][lo:lo + s.samples] for key in ("3dmm", "emotion") if key in out}
        return [results.get(id(s)) for s in streams]
