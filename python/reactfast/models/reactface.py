"""ReactFace (Luo et al.; authors' code lingjivoo/ReactFace), online by construction (SPEC 4.1).

Every call advances a batch of conversations by one window of W frames:

1. MSBEA, the speaker encoder: per-frame speaker features -> D; a biased causal self-attention
   over the last ``context`` frames; two point-to-point cross-attentions, frame i to its own k
   audio samples; an auxiliary head reconstructs the speaker 3DMM.
2. Past-listener fusion: the previous window's generated frames (58 -> D, plus a periodic
   positional encoding) cross-attend to audio, then to speaker motion (biased, causal).
3. AFRG: a transformer encoder over [mu-token, logvar-token, last ``past`` fused tokens] gives
   N(mu, sigma); z* ~ N; momentum z = alpha z_prev + (1 - alpha) z*; W latents by linear
   interpolation from z_prev to z; a decoder whose queries are sinusoidal encodings of the global
   frame index cross-attends to them.
4. SLBS: biased cross-attention to the window's audio (k W samples), then to its speaker motion
   (W frames); Linear to 58 3DMM dims (and 25 emotion dims).

State lives in right-aligned rolling buffers of fixed size, so the cost of a step does not depend
on how long the conversation has run, and streams of different ages batch together
(``ReactFaceState.cat`` / ``split``). Training (W = 64), offline ``generate`` and the streaming
runtime all run this same step, so streaming equals offline generation exactly.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from reactfast.data import layout
from reactfast.models._inputs import check_speaker_audio, pad_to_windows
from reactfast.models.base import Generator, GeneratorConfig, TrainStage, randn, register
from reactfast.nn.attention import BiasedCrossAttention
from reactfast.nn.positional import sinusoid


@dataclass
class ReactFaceConfig(GeneratorConfig):
    """Defaults are the authors' (D = 128, 8 heads, W = 64 training / 8 inference, p = 8, alpha 0.9)."""

    speaker_dim: int = layout.TDMM_DIM
    speaker_inputs: str = "3dmm"
    audio_dim: int = 768
    audio_per_frame: int = layout.AUDIO_SAMPLES_PER_FRAME
    dim: int = 128
    heads: int = 8
    ffn_mult: int = 2
    dropout: float = 0.1
    window_train: int = 64
    window: int = 8
    period: int = 8
    momentum: float = 0.9
    context: int = 256
    past: int = 64
    cie_layers: int = 2
    cie_heads: int = 4
    cie_ffn: int = 1024
    decoder_layers: int = 2
    out_3dmm: int = layout.TDMM_DIM
    out_emotion: int = layout.EMOTION_DIM
    audio_extra: int = 1
    # losses (SPEC 4.1)
    pose_weight: float = 10.0
    kl_weight: float = 1e-5
    div_weight: float = 100.0
    div_scale: float = 100.0
    smooth_weight: float = 10.0
    speaker_weight: float = 1.0
    emotion_weight: float = 1.0
    train_samples: int = 3
    lr: float = 2e-5
    weight_decay: float = 5e-4

    def __post_init__(self):
        self.check_at_least(1, "speaker_dim", "audio_dim", "audio_per_frame", "dim", "heads", "window_train",
                            "window", "period", "context", "past", "cie_layers", "cie_heads", "decoder_layers",
                            "out_3dmm", "train_samples")
        if self.dim % self.heads or self.dim % self.cie_heads:
            raise ValueError(f"heads ({self.heads}) and cie_heads ({self.cie_heads}) must divide dim ({self.dim})")
        if self.context < 2 * max(self.window, self.window_train):
            raise ValueError(f"context ({self.context}) must be at least twice the largest window "
                             f"({max(self.window, self.window_train)})")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        widths = {"3dmm": layout.TDMM_DIM, "emotion": layout.EMOTION_DIM,
                  "emotion+3dmm": layout.EMOTION_DIM + layout.TDMM_DIM, "features": self.speaker_dim}
        if self.speaker_inputs not in widths:
            raise ValueError(f"speaker_inputs must be one of {tuple(widths)}, got {self.speaker_inputs!r}")
        if widths[self.speaker_inputs] != self.speaker_dim:
            raise ValueError(f"speaker_inputs {self.speaker_inputs!r} are {widths[self.speaker_inputs]}-d but "
                             f"speaker_dim is {self.speaker_dim}")
        if self.out_3dmm != layout.TDMM_DIM:
            raise ValueError(f"out_3dmm must be {layout.TDMM_DIM} (52 expression + 6 pose dims)")


class _FFN(nn.Module):
    def __init__(self, dim, hidden, dropout):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        return self.norm(x + self.drop(self.net(x)))


class _BiasedBlock(nn.Module):
    """Post-LN: x = LN(x + biased_attn(x, keys)); x = LN(x + FFN(x))."""

    def __init__(self, cfg: ReactFaceConfig, audio_ratio=1, extra=0, backend=None):
        super().__init__()
        self.attn = BiasedCrossAttention(cfg.dim, cfg.heads, dropout=cfg.dropout, period=cfg.period,
                                         audio_ratio=audio_ratio, extra=extra, backend=backend)
        self.norm = nn.LayerNorm(cfg.dim)
        self.ffn = _FFN(cfg.dim, cfg.ffn_mult * cfg.dim, cfg.dropout)

    def forward(self, x, keys, q_offset=0, key_start=None):
        return self.ffn(self.norm(x + self.attn(x, keys, keys, q_offset=q_offset, key_start=key_start)))


class _CrossBlock(nn.Module):
    """Post-LN unbiased cross-attention block."""

    def __init__(self, dim, heads, hidden, dropout):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.ffn = _FFN(dim, hidden, dropout)

    def forward(self, x, mem):
        return self.ffn(self.norm(x + self.attn(x, mem, mem, need_weights=False)[0]))


@dataclass
class ReactFaceState:
    """Per-conversation streaming state; every tensor has the batch first, fixed sizes."""

    speaker_in: torch.Tensor     # (B, C, D) inputs of the speaker self-attention
    speaker_enc: torch.Tensor    # (B, C, D) encoded speaker frames
    audio_enc: torch.Tensor      # (B, kC, D) projected audio samples
    count: torch.Tensor          # (B,) valid frames in the buffers (<= C)
    past: torch.Tensor           # (B, P, D) fused past-listener tokens
    past_count: torch.Tensor     # (B,)
    prev_frames: torch.Tensor    # (B, W, 58) the last generated window
    has_prev: torch.Tensor       # (B,) bool
    z_prev: torch.Tensor         # (B, D)
    frame: torch.Tensor          # (B,) absolute index of the next window's first frame

    @property
    def batch(self) -> int:
        return self.count.shape[0]

    @staticmethod
    def cat(states: Sequence["ReactFaceState"]) -> "ReactFaceState":
        cls = type(states[0])
        return cls(**{f.name: torch.cat([getattr(s, f.name) for s in states]) for f in fields(cls)})

    def split(self, sizes: Sequence[int]) -> List["ReactFaceState"]:
        parts = {f.name: torch.split(getattr(self, f.name), list(sizes)) for f in fields(self)}
        return [type(self)(**{k: v[i] for k, v in parts.items()}) for i in range(len(sizes))]

    def detach(self) -> "ReactFaceState":
        return type(self)(**{f.name: getattr(self, f.name).detach() for f in fields(self)})


def _roll(buffer: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """Append ``new`` (B, n, ...) at the end of a right-aligned buffer of fixed size, dropping the oldest."""
    return torch.cat([buffer, new], 1)[:, -buffer.shape[1]:]


@register
class ReactFace(Generator):
    """ReactFace generator over per-frame speaker features and k audio feature rows per frame.

    ``forward(speaker, audio, noise)`` runs the online loop with the training window and
    returns a dict of predictions for the losses; ``generate`` samples S reactions per speaker
    with the inference window; ``step`` advances a ``ReactFaceState`` by one window.
    """

    name = "reactface"
    summary = "online ReactFace (Luo et al.): biased speaker-listener attention, momentum latent sampling"
    config_class = ReactFaceConfig

    def __init__(self, config: Optional[ReactFaceConfig] = None, backend: Optional[str] = None, **overrides):
        super().__init__(config, backend, **overrides)
        cfg = self.config
        D, k = cfg.dim, cfg.audio_per_frame
        attn = self.backend_for("biased_attention")
        self.speaker_proj = nn.Linear(cfg.speaker_dim, D)
        self.audio_proj = nn.Linear(cfg.audio_dim, D)
        self.speaker_self = _BiasedBlock(cfg, backend=attn)
        self.p2p = nn.ModuleList([_CrossBlock(D, cfg.heads, cfg.ffn_mult * D, cfg.dropout) for _ in range(2)])
        self.speaker_head = nn.Linear(D, layout.TDMM_DIM)
        self.listener_proj = nn.Linear(cfg.out_3dmm, D)
        self.fuse_audio = _BiasedBlock(cfg, audio_ratio=k, extra=cfg.audio_extra, backend=attn)
        self.fuse_speaker = _BiasedBlock(cfg, backend=attn)
        self.dist_tokens = nn.Parameter(torch.randn(2, D) * 0.02)
        layer = nn.TransformerEncoderLayer(D, cfg.cie_heads, cfg.cie_ffn, cfg.dropout, batch_first=True)
        self.cie = nn.TransformerEncoder(layer, cfg.cie_layers, enable_nested_tensor=False)
        self.mu_head = nn.Linear(D, D)
        self.logvar_head = nn.Linear(D, D)
        self.decoder = nn.ModuleList([_CrossBlock(D, cfg.heads, cfg.ffn_mult * D, cfg.dropout)
                                      for _ in range(cfg.decoder_layers)])
        self.slbs_audio = _BiasedBlock(cfg, audio_ratio=k, extra=cfg.audio_extra, backend=attn)
        self.slbs_speaker = _BiasedBlock(cfg, backend=attn)
        self.head_3dmm = nn.Linear(D, cfg.out_3dmm)
        self.head_emotion = nn.Linear(D, cfg.out_emotion) if cfg.out_emotion else None

    @classmethod
    def data_defaults(cls, audio_dim: int) -> Dict[str, object]:
        # From a reactfast.data batch the speaker is described by its emotion and 3DMM (25 + 58).
        return {"audio_dim": audio_dim, "speaker_dim": layout.EMOTION_DIM + layout.TDMM_DIM,
                "speaker_inputs": "emotion+3dmm"}

    @classmethod
    def demo_config(cls, audio_dim: int) -> ReactFaceConfig:
        return ReactFaceConfig(**cls.data_defaults(audio_dim), dim=64, heads=4, cie_heads=4, cie_ffn=128,
                               window_train=32, window=8, context=128, past=32, dropout=0.1, kl_weight=1e-4,
                               emotion_weight=10.0)

    def demo_stages(self, steps: int) -> List[TrainStage]:
        return [TrainStage(stage=1, steps=steps, lr=1e-3, batch_size=8)]

    def output_widths(self) -> Dict[str, int]:
        out = {"3dmm": self.config.out_3dmm}
        if self.config.out_emotion:
            out["emotion"] = self.config.out_emotion
        return out

    def draw_noise(self, batch: int, generator: Optional[torch.Generator] = None, window: int = 0) -> torch.Tensor:
        """The latent draws of one window for ``batch`` streams: (batch, D)."""
        return randn(batch, self.config.dim, generator=generator)

    def window_noise(self, rows: int, frames: int, window: int, generator: Optional[torch.Generator] = None,
                     device=None) -> torch.Tensor:
        """The latent draws of ``rows`` streams over ``frames`` frames in windows of ``window``:
        (n_windows, rows, D), one ``draw_noise(rows)`` per window in order, as a stream draws them."""
        n = math.ceil(frames / window)
        return torch.stack([self.draw_noise(rows, generator) for _ in range(n)]).to(device)

    def init_state(self, batch: int, window: Optional[int] = None, device=None) -> ReactFaceState:
        cfg = self.config
        W = window or cfg.window
        device = device or self.speaker_proj.weight.device
        zeros = lambda *s: torch.zeros(*s, device=device)  # noqa: E731
        return ReactFaceState(
            speaker_in=zeros(batch, cfg.context, cfg.dim), speaker_enc=zeros(batch, cfg.context, cfg.dim),
            audio_enc=zeros(batch, cfg.audio_per_frame * cfg.context, cfg.dim),
            count=torch.zeros(batch, dtype=torch.long, device=device), past=zeros(batch, cfg.past, cfg.dim),
            past_count=torch.zeros(batch, dtype=torch.long, device=device), prev_frames=zeros(batch, W, cfg.out_3dmm),
            has_prev=torch.zeros(batch, dtype=torch.bool, device=device), z_prev=zeros(batch, cfg.dim),
            frame=torch.zeros(batch, dtype=torch.long, device=device))

    def check_inputs(self, speaker: torch.Tensor, audio: torch.Tensor, name: str = "speaker") -> None:
        cfg = self.config
        check_speaker_audio(speaker, audio, cfg.speaker_dim, cfg.audio_dim, cfg.audio_per_frame, "speaker features",
                            name)

    def step(self, state: ReactFaceState, speaker: torch.Tensor, audio: torch.Tensor, noise: torch.Tensor):
        """Advance every conversation by one window.

        Args:
            state: from ``init_state`` (or a previous step).
            speaker: (B, W, speaker_dim) the window's speaker features.
            audio: (B, k W, audio_dim) its audio features.
            noise: (B, D) standard normal draws for the latent sample.

        Returns:
            (outputs, new_state): outputs holds ``3dmm`` (B, W, 58), ``emotion`` (B, W, 25) when
            enabled, ``speaker_3dmm`` (B, W, 58), ``mu`` and ``logvar`` (B, D).
        """
        cfg = self.config
        B, W, _ = speaker.shape
        C, k = cfg.context, cfg.audio_per_frame
        if W > C // 2:
            raise ValueError(f"window of {W} frames is larger than half the context ({C})")
        # 1. speaker encoding, causal over the context buffer
        x = self.speaker_proj(speaker)
        a = self.audio_proj(audio)
        speaker_in = _roll(state.speaker_in, x)
        count = torch.clamp(state.count + W, max=C)
        h = self.speaker_self(x, speaker_in, q_offset=C - W, key_start=C - count)
        hq = h.reshape(B * W, 1, -1)
        a_frames = a.reshape(B * W, k, -1)
        for block in self.p2p:
            hq = block(hq, a_frames)
        enc = hq.reshape(B, W, -1)
        speaker_enc = _roll(state.speaker_enc, enc)
        audio_enc = _roll(state.audio_enc, a)
        # 2. fuse the previous window's reaction with the speaker behaviour it saw
        Wp = state.prev_frames.shape[1]
        prev_pos = (state.frame[:, None] - Wp + torch.arange(Wp, device=speaker.device)[None]) % cfg.period
        y = self.listener_proj(state.prev_frames) + sinusoid(prev_pos, cfg.dim)
        y = self.fuse_audio(y, audio_enc, q_offset=C - W - Wp, key_start=k * (C - count))
        y = self.fuse_speaker(y, speaker_enc, q_offset=C - W - Wp, key_start=C - count)
        past = _roll(state.past, y)
        past_count = torch.where(state.has_prev, torch.clamp(state.past_count + Wp, max=cfg.past), state.past_count)
        # 3. distribution, sample with momentum, interpolate, decode
        tokens = torch.cat([self.dist_tokens[None].expand(B, -1, -1),
                            past + sinusoid(torch.arange(cfg.past, device=speaker.device), cfg.dim)[None]], 1)
        invalid = torch.arange(cfg.past, device=speaker.device)[None] < (cfg.past - past_count)[:, None]
        mask = torch.cat([torch.zeros(B, 2, dtype=torch.bool, device=speaker.device), invalid], 1)
        out = self.cie(tokens, src_key_padding_mask=mask)
        mu, logvar = self.mu_head(out[:, 0]), self.logvar_head(out[:, 1])
        z_star = mu + torch.exp(0.5 * logvar) * noise
        first = ~state.has_prev[:, None]
        z = torch.where(first, z_star, cfg.momentum * state.z_prev + (1 - cfg.momentum) * z_star)
        z_from = torch.where(first, z, state.z_prev)
        frac = torch.arange(1, W + 1, device=speaker.device, dtype=z.dtype)[None, :, None] / W
        latents = z_from[:, None] + frac * (z - z_from)[:, None]
        q = sinusoid(state.frame[:, None] + torch.arange(W, device=speaker.device)[None], cfg.dim)
        for block in self.decoder:
            q = block(q, latents)
        # 4. synchronise with the window's audio and speaker motion
        q = self.slbs_audio(q, a)
        q = self.slbs_speaker(q, enc)
        frames = self.head_3dmm(q)
        outputs = {"3dmm": frames, "speaker_3dmm": self.speaker_head(enc), "mu": mu, "logvar": logvar}
        if self.head_emotion is not None:
            outputs["emotion"] = self.head_emotion(q)
        new_state = dataclasses.replace(state, speaker_in=speaker_in, speaker_enc=speaker_enc, audio_enc=audio_enc,
                                        count=count, past=past, past_count=past_count, prev_frames=frames,
                                        has_prev=torch.ones_like(state.has_prev), z_prev=z, frame=state.frame + W)
        return outputs, new_state

    def run(self, speaker: torch.Tensor, audio: torch.Tensor, window: int, noise: torch.Tensor,
            state: Optional[ReactFaceState] = None, step=None) -> Dict[str, torch.Tensor]:
        """The online loop over whole clips; ``noise`` (n_windows, B, D). T need not be a multiple
        of the window: the last window is padded by repeating the last frame and trimmed.
        ``step`` replaces :meth:`step` (a wrapper that post-processes each window)."""
        B, T, _ = speaker.shape
        k = self.config.audio_per_frame
        speaker, audio, n = pad_to_windows(speaker, audio, window, k)
        state = state or self.init_state(B, window, speaker.device)
        step = step or self.step
        collected: Dict[str, List[torch.Tensor]] = {}
        for i in range(n):
            out, state = step(state, speaker[:, i * window:(i + 1) * window],
                              audio[:, i * window * k:(i + 1) * window * k], noise[i])
            for key, value in out.items():
                collected.setdefault(key, []).append(value)
        result = {}
        for key, values in collected.items():
            result[key] = torch.stack(values, 1) if key in ("mu", "logvar") else torch.cat(values, 1)[:, :T]
        return result

    def forward(self, speaker: torch.Tensor, audio: torch.Tensor, generator: Optional[torch.Generator] = None,
                samples: Optional[int] = None, noise: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """Training pass: ``samples`` (default config.train_samples) reactions per speaker with the
        training window; outputs are (samples, B, T, dims) and mu/logvar (samples, B, n, D).
        ``noise`` (n_windows, samples * B, D), rows s * B + b, replaces draws from ``generator``."""
        self.check_inputs(speaker, audio)
        S = samples or self.config.train_samples
        B, T, _ = speaker.shape
        W = self.config.window_train
        n = math.ceil(T / W)
        if noise is None:
            noise = randn(n, S * B, self.config.dim, generator=generator)
        elif noise.shape != (n, S * B, self.config.dim):
            raise ValueError(f"noise must have shape ({n}, {S * B}, {self.config.dim}), got {tuple(noise.shape)}")
        noise = noise.to(speaker.device)
        out = self.run(speaker.repeat(S, 1, 1), audio.repeat(S, 1, 1), W, noise)
        return {key: value.reshape(S, B, *value.shape[1:]) for key, value in out.items()}

    def inputs_from_batch(self, batch: Dict[str, torch.Tensor]):
        """(speaker features, audio) from a ``reactfast.data`` batch, per ``config.speaker_inputs``."""
        kind = self.config.speaker_inputs
        if kind == "3dmm":
            speaker = batch["speaker_3dmm"]
        elif kind == "emotion":
            speaker = batch["speaker_emotion"]
        elif kind == "emotion+3dmm":
            speaker = torch.cat([batch["speaker_emotion"], batch["speaker_3dmm"]], -1)
        else:
            speaker = batch["speaker_features"]
        return speaker, batch["speaker_audio"]

    def loss(self, batch: Dict[str, torch.Tensor], generators: Sequence[torch.Generator],
             forward=None) -> Dict[str, torch.Tensor]:
        """Training losses for a batch with appropriate targets (``appropriate_3dmm`` (B, K, T, 58),
        ``appropriate_emotion`` (B, K, T, 25), ``appropriate_valid`` (B, K)); one generator per item
        draws that item's latent noise, so results do not depend on how the batch is split.
        ``forward`` is the callable that runs the model (a DistributedDataParallel wrapper)."""
        speaker, audio = self.inputs_from_batch(batch)
        S, B, T = self.config.train_samples, speaker.shape[0], speaker.shape[1]
        n = math.ceil(T / self.config.window_train)
        per_item = torch.stack([randn(n, S, self.config.dim, generator=g).to(speaker.device) for g in generators], 2)
        out = (forward or self)(speaker, audio, samples=S, noise=per_item.reshape(n, S * B, self.config.dim))
        return reactface_loss(self, out, batch["appropriate_3dmm"], batch["appropriate_valid"],
                              batch["speaker_3dmm"], batch.get("appropriate_emotion") if self.head_emotion else None)

    @torch.no_grad()
    def generate(self, speaker: torch.Tensor, audio: torch.Tensor, num_samples: int = 10,
                 generator: Optional[torch.Generator] = None, window: Optional[int] = None) -> Dict[str, torch.Tensor]:
        """S reactions per speaker by the online loop: ``3dmm`` (B, S, T, 58), ``emotion`` (B, S, T, 25).

        Noise is drawn per window as randn(B * S, D) from ``generator``, sample-major within each
        speaker (rows b * S + s), exactly as ``reactfast.online.ReactionStream`` draws it."""
        self.check_inputs(speaker, audio)
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        B, T, _ = speaker.shape
        W = window or self.config.window
        noise = self.window_noise(B * num_samples, T, W, generator, speaker.device)
        out = self.run(speaker.repeat_interleave(num_samples, 0), audio.repeat_interleave(num_samples, 0), W, noise)
        return {key: value.reshape(B, num_samples, *value.shape[1:]) for key, value in out.items()
                if key in ("3dmm", "emotion")}


def appropriate_reconstruction(pred: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor,
                               pose_weight: float = 10.0, emotion_pred: Optional[torch.Tensor] = None,
                               emotion_targets: Optional[torch.Tensor] = None, emotion_weight: float = 1.0):
    """min over each speaker's appropriate real reactions of SmoothL1(expression) + pose_weight x
    SmoothL1(pose) (+ emotion_weight x SmoothL1(emotion)).

    pred (B, T, 58); targets (B, K, T, 58) padded; valid (B, K) bool. Returns (B,) losses."""
    diff = F.smooth_l1_loss(pred[:, None].expand_as(targets), targets, reduction="none")
    loss = diff[..., layout.TDMM_EXPRESSION].mean((-1, -2)) + pose_weight * diff[..., layout.TDMM_POSE].mean((-1, -2))
    if emotion_pred is not None and emotion_targets is not None:
        e = F.smooth_l1_loss(emotion_pred[:, None].expand_as(emotion_targets), emotion_targets, reduction="none")
        loss = loss + emotion_weight * e.mean((-1, -2))
    loss = torch.where(valid, loss, torch.full_like(loss, float("inf")))
    return loss.min(1).values


def reactface_loss(model: ReactFace, out: Dict[str, torch.Tensor], targets: torch.Tensor, valid: torch.Tensor,
                   speaker_3dmm: torch.Tensor, emotion_targets: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
    """ReactFace's losses for a ``forward`` output (S samples per speaker).

    targets (B, K, T, 58) appropriate real reactions (padded, ``valid`` (B, K)); speaker_3dmm
    (B, T, 58); emotion_targets (B, K, T, 25) when the model has the emotion head.
    """
    cfg = model.config
    S = out["3dmm"].shape[0]
    rec = torch.stack([appropriate_reconstruction(out["3dmm"][s], targets, valid, cfg.pose_weight,
                                                  out.get("emotion", [None] * S)[s], emotion_targets,
                                                  cfg.emotion_weight) for s in range(S)]).mean()
    mu, logvar = out["mu"], out["logvar"]
    kl = (-0.5 * (1 + logvar - mu ** 2 - logvar.exp())).sum(-1).mean()
    pred = out["3dmm"]
    if S > 1:
        flat = pred.reshape(S, pred.shape[1], -1)
        dist = (flat[:, None] - flat[None]).pow(2).sum(-1)                      # (S, S, B)
        off = ~torch.eye(S, dtype=torch.bool, device=pred.device)
        div = torch.exp(-dist / cfg.div_scale)[off].mean()
    else:
        div = pred.new_zeros(())
    acc = pred[:, :, 2:] - 2 * pred[:, :, 1:-1] + pred[:, :, :-2]
    zero = torch.zeros_like(acc)
    smooth = (F.smooth_l1_loss(acc[..., layout.TDMM_POSE], zero[..., layout.TDMM_POSE])
              + 0.1 * F.smooth_l1_loss(acc[..., layout.TDMM_EXPRESSION], zero[..., layout.TDMM_EXPRESSION]))
    speaker_rec = F.smooth_l1_loss(out["speaker_3dmm"], speaker_3dmm[None].expand_as(out["speaker_3dmm"]))
    total = (rec + cfg.kl_weight * kl + cfg.div_weight * div + cfg.smooth_weight * smooth
             + cfg.speaker_weight * speaker_rec)
    return {"loss": total, "rec": rec.detach(), "kl": kl.detach(), "div": div.detach(), "smooth": smooth.detach(),
            "speaker_rec": speaker_rec.detach()}

