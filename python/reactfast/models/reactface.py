"""ReactFace (Luo et al.; authors' code lingjivoo/ReactFace), online by construction (SPEC 4.1).

Every step advances a batch of conversations by one window of W frames:

1. MSBEA, the speaker encoder: per-frame speaker features -> D; a biased causal self-attention
   over the last ``context`` frames; two point-to-point cross-attentions, frame i to its own k
   audio samples; an auxiliary head reconstructs the speaker 3DMM.
2. Past-listener fusion: the previous window's generated frames (58 -> D, plus a periodic
   positional encoding) cross-attend to audio, then to speaker motion (biased, causal).
3. AFRG: a transformer encoder over [mu-token, logvar-token, last ``past`` fused tokens] gives
   N(mu, sigma); z* ~ N; momentum z = alpha_W z_prev + (1 - alpha_W) z* (the authors' rule,
   ``latent_noise="authors"``); W latents by linear interpolation from z_prev to z; a decoder whose
   queries are sinusoidal encodings of the global frame index cross-attends to them. ``momentum`` is
   alpha for a window of ``window`` frames and alpha_W = momentum^(W / window), so the latent moves
   at one pace per frame whatever the window (training's and generation's windows differ). The
   authors' rule averages more draws when windows are shorter: its latent settles at
   sigma sqrt((1 - alpha_W) / (1 + alpha_W)) around mu, 0.23 sigma at W = 8 against 0.46 sigma at
   the demo's training W = 32, so samples drift together after the first windows. The default
   ``latent_noise="stationary"`` moves the latent as an Ornstein-Uhlenbeck process instead,
   z = alpha_W z_prev + (1 - alpha_W) mu + sqrt(1 - alpha_W^2) sigma eps: the same mean pull per
   frame, a spread of sigma at every window length, in training and in generation alike.
4. SLBS: biased cross-attention to the window's audio (k W samples), then to its speaker motion
   (W frames); heads to the 58 3DMM dims and to the 25 emotion dims in their valid ranges.

The state lives in right-aligned rolling buffers of fixed size, so a step costs the same at any
conversation length and streams of different ages batch together. The buffers hold projected keys
and values: each frame is projected once, when it arrives. The speaker side runs once per
conversation, shared by its samples (``ReactFaceState.rows``). Offline (``run``, for training and
``generate``) the speaker side of all windows is computed at once and each window's listener step
reads, of the whole clip's keys, those its buffers would hold, so streaming equals offline
generation. From a fresh state the first window has no past to fuse, and the loop skips that fusion.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from reactfast.data import layout
from reactfast.models._inputs import check_speaker_audio, pad_to_windows
from reactfast.models.base import (Generator, GeneratorConfig, TrainStage, check_int, check_reals,
                                   check_unit_interval, randn, register)
from reactfast.models.heads import EmotionHead, emotion_loss
from reactfast.nn.attention import BiasedCrossAttention
from reactfast.nn.dropout import Dropout
from reactfast.nn.positional import sinusoid
from reactfast.nn.transformer import add_norm, encoder, multi_head_attention, post_norm_feed_forward


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
    attn_dropout: Optional[float] = None
    window_train: int = 64
    window: int = 8
    period: int = 8
    momentum: float = 0.9
    latent_noise: str = "stationary"
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
    # Beyond the authors' losses (0 or 1 keeps theirs): va_weight scales valence/arousal in the
    # emotion loss; ccc_weight adds 1 - CCC over time of each emotion track against its target
    # (regression to the mean flattens the tracks, which FRCorr punishes); coverage_weight adds,
    # for every appropriate reaction, its distance to the nearest sample (the samples spread over
    # the appropriate reactions instead of all near one).
    va_weight: float = 1.0
    ccc_weight: float = 0.0
    coverage_weight: float = 0.0
    train_samples: int = 3
    lr: float = 2e-5
    weight_decay: float = 5e-4

    def __post_init__(self):
        self.check_field_types()
        self.check_at_least(1, "speaker_dim", "audio_dim", "audio_per_frame", "dim", "heads", "ffn_mult",
                            "window_train", "window", "period", "context", "past", "cie_layers", "cie_heads",
                            "cie_ffn", "decoder_layers", "out_3dmm", "train_samples")
        self.check_at_least(0, "audio_extra")
        if self.dim % self.heads or self.dim % self.cie_heads:
            raise ValueError(f"heads ({self.heads}) and cie_heads ({self.cie_heads}) must divide dim ({self.dim})")
        if self.context < 2 * max(self.window, self.window_train):
            raise ValueError(f"context ({self.context}) must be at least twice the largest window "
                             f"({max(self.window, self.window_train)})")
        check_unit_interval(self, ("dropout", "attn_dropout"), none_ok=True)
        check_unit_interval(self, ("momentum",))
        self.check_weights("pose_weight", "kl_weight", "div_weight", "smooth_weight", "speaker_weight",
                           "emotion_weight", "va_weight", "ccc_weight", "coverage_weight")
        check_reals(self, ("div_scale",), strict=True)   # the diversity term is exp(-d / div_scale)
        if self.latent_noise not in ("stationary", "authors"):
            raise ValueError(f"latent_noise must be 'stationary' or 'authors', got {self.latent_noise!r}")
        widths = {"3dmm": layout.TDMM_DIM, "emotion": layout.EMOTION_DIM,
                  "emotion+3dmm": layout.EMOTION_DIM + layout.TDMM_DIM, "features": self.speaker_dim}
        if self.speaker_inputs not in widths:
            raise ValueError(f"speaker_inputs must be one of {tuple(widths)}, got {self.speaker_inputs!r}")
        if widths[self.speaker_inputs] != self.speaker_dim:
            raise ValueError(f"speaker_inputs {self.speaker_inputs!r} are {widths[self.speaker_inputs]}-d but "
                             f"speaker_dim is {self.speaker_dim}")
        if self.out_3dmm != layout.TDMM_DIM:
            raise ValueError(f"out_3dmm must be {layout.TDMM_DIM} (52 expression + 6 pose dims)")
        if self.out_emotion not in (0, layout.EMOTION_DIM):
            raise ValueError(f"out_emotion must be {layout.EMOTION_DIM} (the emotion head) or 0 (none), got "
                             f"{self.out_emotion}")


class _FFN(nn.Module):
    def __init__(self, dim, hidden, dropout):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), Dropout(dropout), nn.Linear(hidden, dim))
        self.norm = nn.LayerNorm(dim)
        self.drop = Dropout(dropout)

    def forward(self, x):
        first, act, drop, second = self.net
        return post_norm_feed_forward(first, act, drop, second, self.norm, x, self.drop)


class _BiasedBlock(nn.Module):
    """Post-LN: x = LN(x + biased_attn(x, keys)); x = LN(x + FFN(x)). Keys come projected
    (``attn.project_kv``), so buffers can hold them."""

    def __init__(self, cfg: ReactFaceConfig, audio_ratio=1, extra=0, backend=None):
        super().__init__()
        self.attn = BiasedCrossAttention(cfg.dim, cfg.heads, dropout=cfg.dropout, period=cfg.period,
                                         audio_ratio=audio_ratio, extra=extra, backend=backend)
        self.norm = nn.LayerNorm(cfg.dim)
        self.ffn = _FFN(cfg.dim, cfg.ffn_mult * cfg.dim, cfg.dropout)

    def kv(self, keys):
        return self.attn.project_kv(keys, keys)

    def forward(self, x, k, v, q_offset=0, key_start=None, key_lengths=None, share=None):
        """``share``: how query rows map to key rows, (None | ("repeat", r) | ("index", group))."""
        kw = {} if share is None else ({"kv_repeat": share[1]} if share[0] == "repeat" else {"kv_index": share[1]})
        h = self.attn.attend(x, k, v, q_offset, key_lengths=key_lengths, key_start=key_start, dropout=False, **kw)
        return self.ffn(add_norm(self.norm, x, h, self.attn.dropout))


class _CrossBlock(nn.Module):
    """Post-LN unbiased cross-attention block."""

    def __init__(self, dim, heads, hidden, dropout, attn_dropout):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, dropout=attn_dropout, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.ffn = _FFN(dim, hidden, dropout)

    def forward(self, x, mem):
        return self.ffn(add_norm(self.norm, x, multi_head_attention(self.attn, x, mem, mem)))


# Fields of the state with one row per conversation; the others have one row per sample.
_SPEAKER_FIELDS = ("speaker_k", "speaker_v", "enc_k", "enc_v", "audio_k", "audio_v", "count")


@dataclass
class ReactFaceState:
    """Per-conversation streaming state of fixed size. The speaker side has one row per conversation
    (G), the listener side one row per sample (R); ``rows`` says how many consecutive samples each
    conversation has and ``group`` (R,) which conversation each sample belongs to."""

    speaker_k: torch.Tensor      # (G, H, C, d) keys of the speaker self-attention (projected speaker frames)
    speaker_v: torch.Tensor
    enc_k: torch.Tensor          # (G, H, C, d) keys of the speaker fusion (encoded speaker frames)
    enc_v: torch.Tensor
    audio_k: torch.Tensor        # (G, H, kC, d) keys of the audio fusion (projected audio rows)
    audio_v: torch.Tensor
    count: torch.Tensor          # (G,) frames in the buffers (<= C)
    group: torch.Tensor          # (R,) conversation of each sample
    past: torch.Tensor           # (R, P, D) fused past-listener tokens
    past_count: torch.Tensor     # (R,)
    prev_frames: torch.Tensor    # (R, W, 58) the last generated window
    has_prev: torch.Tensor       # (R,) bool
    z_prev: torch.Tensor         # (R, D)
    frame: torch.Tensor          # (R,) absolute index of the next window's first frame
    rows: Tuple[int, ...] = ()   # samples of each conversation

    @property
    def batch(self) -> int:
        return self.group.shape[0]

    def _tensors(self):
        return [f.name for f in fields(self) if f.name != "rows"]

    @staticmethod
    def cat(states: Sequence["ReactFaceState"]) -> "ReactFaceState":
        cls = type(states[0])
        out = {}
        for name in states[0]._tensors():
            parts = [getattr(s, name) for s in states]
            if name == "group":
                offsets, total = [], 0
                for s in states:
                    offsets.append(total)
                    total += len(s.rows)
                parts = [p + o for p, o in zip(parts, offsets)]
            out[name] = torch.cat(parts)
        return cls(**out, rows=tuple(r for s in states for r in s.rows))

    def split(self, sizes: Sequence[int]) -> List["ReactFaceState"]:
        """Pieces of ``sizes`` samples each; every piece must hold whole conversations."""
        pieces, g, r = [], 0, 0
        for n in sizes:
            g_end, taken = g, 0
            while taken < n and g_end < len(self.rows):
                taken += self.rows[g_end]
                g_end += 1
            if taken != n:
                raise ValueError(f"a piece of {n} samples does not hold whole conversations ({self.rows})")
            part = {}
            for name in self._tensors():
                value = getattr(self, name)
                part[name] = value[g:g_end] if name in _SPEAKER_FIELDS else value[r:r + n]
            part["group"] = part["group"] - g
            pieces.append(type(self)(**part, rows=self.rows[g:g_end]))
            g, r = g_end, r + n
        return pieces

    def detach(self) -> "ReactFaceState":
        return dataclasses.replace(self, **{n: getattr(self, n).detach() for n in self._tensors()})


def _roll(buffer: torch.Tensor, new: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Append ``new`` at the end of a right-aligned buffer of fixed size along ``dim``, dropping the oldest."""
    size = buffer.shape[dim]
    return torch.cat([buffer, new], dim).narrow(dim, new.shape[dim], size)


@dataclass
class _SpeakerWindow:
    """The speaker side of one window for its listener step: its buffers' keys (G rows) and the
    window's own keys.

    The buffers are right-aligned windows of C frames (kC audio rows) ending at the window's last
    frame. A stream's step holds them as such (``shift`` 0, ``length`` None). The offline loop passes
    the keys of the whole clip instead, each window reading its visible ones: buffer frame j is key
    frame j + ``shift`` of the tensors here, and key frames from ``length`` on (the later windows')
    are masked out. No per-window slices are made, whose backward would fill a zero gradient of the
    whole clip's keys for every window."""

    enc_k: torch.Tensor
    enc_v: torch.Tensor
    audio_k: torch.Tensor
    audio_v: torch.Tensor
    count: torch.Tensor
    slbs_audio: Tuple[torch.Tensor, torch.Tensor]
    slbs_speaker: Tuple[torch.Tensor, torch.Tensor]
    shift: int = 0
    length: Optional[int] = None


@register
class ReactFace(Generator):
    """ReactFace generator over per-frame speaker features and k audio feature rows per frame.

    ``forward(speaker, audio, noise)`` runs the online loop with the training window and returns a
    dict of predictions for the losses; ``generate`` samples S reactions per speaker with the
    inference window; ``step`` advances a ``ReactFaceState`` by one window.
    """

    name = "reactface"
    summary = "online ReactFace (Luo et al.): biased speaker-listener attention, momentum latent sampling"
    config_class = ReactFaceConfig
    graph_capturable = True  # tests/online/test_graph.py: no host reads in a step on the GPU path

    def __init__(self, config: Optional[ReactFaceConfig] = None, backend: Optional[str] = None, **overrides):
        super().__init__(config, backend, **overrides)
        cfg = self.config
        D, k = cfg.dim, cfg.audio_per_frame
        attn = self.backend_for("biased_attention")
        self.speaker_proj = nn.Linear(cfg.speaker_dim, D)
        self.audio_proj = nn.Linear(cfg.audio_dim, D)
        self.speaker_self = _BiasedBlock(cfg, backend=attn)
        attn_dropout = cfg.dropout if cfg.attn_dropout is None else cfg.attn_dropout
        self.p2p = nn.ModuleList([_CrossBlock(D, cfg.heads, cfg.ffn_mult * D, cfg.dropout, attn_dropout)
                                  for _ in range(2)])
        self.speaker_head = nn.Linear(D, layout.TDMM_DIM)
        self.listener_proj = nn.Linear(cfg.out_3dmm, D)
        self.fuse_audio = _BiasedBlock(cfg, audio_ratio=k, extra=cfg.audio_extra, backend=attn)
        self.fuse_speaker = _BiasedBlock(cfg, backend=attn)
        self.dist_tokens = nn.Parameter(torch.randn(2, D) * 0.02)
        layer = nn.TransformerEncoderLayer(D, cfg.cie_heads, cfg.cie_ffn, cfg.dropout, batch_first=True)
        layer.self_attn.dropout = attn_dropout
        layer.dropout, layer.dropout1, layer.dropout2 = Dropout(cfg.dropout), Dropout(cfg.dropout), Dropout(cfg.dropout)
        self.cie = nn.TransformerEncoder(layer, cfg.cie_layers, enable_nested_tensor=False)
        self.mu_head = nn.Linear(D, D)
        self.logvar_head = nn.Linear(D, D)
        self.decoder = nn.ModuleList([_CrossBlock(D, cfg.heads, cfg.ffn_mult * D, cfg.dropout, attn_dropout)
                                      for _ in range(cfg.decoder_layers)])
        self.slbs_audio = _BiasedBlock(cfg, audio_ratio=k, extra=cfg.audio_extra, backend=attn)
        self.slbs_speaker = _BiasedBlock(cfg, backend=attn)
        self.head_3dmm = nn.Linear(D, cfg.out_3dmm)
        self.head_emotion = EmotionHead(D) if cfg.out_emotion else None
        # The encodings of positions every window reads again (a frame's phase in the bias period, a
        # slot of the past buffer), computed once: the same values as sinusoid() of each call.
        self.register_buffer("phase_codes", sinusoid(torch.arange(cfg.period), D), persistent=False)
        self.register_buffer("past_codes", sinusoid(torch.arange(cfg.past), D), persistent=False)

    @classmethod
    def data_defaults(cls, audio_dim: int) -> Dict[str, object]:
        # From a reactfast.data batch the speaker is described by its emotion and 3DMM (25 + 58).
        return {"audio_dim": audio_dim, "speaker_dim": layout.EMOTION_DIM + layout.TDMM_DIM,
                "speaker_inputs": "emotion+3dmm"}

    @classmethod
    def demo_config(cls, audio_dim: int) -> ReactFaceConfig:
        return ReactFaceConfig(**cls.data_defaults(audio_dim), dim=64, heads=4, cie_heads=4, cie_ffn=128,
                               window_train=32, window=8, context=128, past=32, dropout=0.1, kl_weight=1e-4,
                               emotion_weight=10.0, va_weight=6.0, ccc_weight=10.0, coverage_weight=1.0,
                               div_weight=300.0)

    def demo_stages(self, steps: int) -> List[TrainStage]:
        return [TrainStage(stage=1, steps=steps, lr=2e-3, batch_size=8)]

    def uses_every_parameter(self, frames: Optional[int]) -> bool:
        # Items of one training window are a fresh state's first window, whose past-listener fusion
        # (listener_proj, fuse_audio, fuse_speaker) is skipped.
        return frames is not None and frames > self.config.window_train

    def output_widths(self) -> Dict[str, int]:
        out = {"3dmm": self.config.out_3dmm}
        if self.config.out_emotion:
            out["emotion"] = self.config.out_emotion
        return out

    def draw_noise(self, batch: int, generator: Optional[torch.Generator] = None, window: int = 0) -> torch.Tensor:
        """The latent draws of one window for ``batch`` streams: (batch, D)."""
        return randn(check_int("batch", batch), self.config.dim, generator=generator)

    def init_state(self, batch: int, window: Optional[int] = None, device=None,
                   conversations: Optional[int] = None) -> ReactFaceState:
        """The state of ``batch`` samples of ``conversations`` conversations (default ``batch``: each
        sample its own), the samples of a conversation consecutive and sharing its speaker inputs."""
        cfg = self.config
        W = self._check_window(cfg.window if window is None else check_int("window", window))
        check_int("batch", batch)
        G = batch if conversations is None else check_int("conversations", conversations)
        if batch % G:
            raise ValueError(f"{batch} samples do not split evenly into {G} conversations")
        device = self.state_device(device)
        dtype = self.speaker_proj.weight.dtype
        H, d, C, k = cfg.heads, cfg.dim // cfg.heads, cfg.context, cfg.audio_per_frame
        zeros = lambda *s: torch.zeros(*s, device=device, dtype=dtype)  # noqa: E731
        return ReactFaceState(
            speaker_k=zeros(G, H, C, d), speaker_v=zeros(G, H, C, d), enc_k=zeros(G, H, C, d),
            enc_v=zeros(G, H, C, d), audio_k=zeros(G, H, k * C, d), audio_v=zeros(G, H, k * C, d),
            count=torch.zeros(G, dtype=torch.long, device=device),
            group=torch.arange(G, device=device).repeat_interleave(batch // G),
            past=zeros(batch, cfg.past, cfg.dim), past_count=torch.zeros(batch, dtype=torch.long, device=device),
            prev_frames=zeros(batch, W, cfg.out_3dmm), has_prev=torch.zeros(batch, dtype=torch.bool, device=device),
            z_prev=zeros(batch, cfg.dim), frame=torch.zeros(batch, dtype=torch.long, device=device),
            rows=(batch // G,) * G)

    def _check_window(self, W: int) -> int:
        """A window the rolling buffers hold twice over (a stream's, given at its creation, is checked
        there, before any frame is buffered)."""
        if W > self.config.context // 2:
            raise ValueError(f"window of {W} frames is larger than half the context ({self.config.context})")
        return W

    def check_inputs(self, speaker: torch.Tensor, audio: torch.Tensor, name: str = "speaker") -> None:
        cfg = self.config
        check_speaker_audio(speaker, audio, cfg.speaker_dim, cfg.audio_dim, cfg.audio_per_frame, "speaker features",
                            name)

    def _encode(self, x: torch.Tensor, h_attn: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """The speaker self-attention block's rest (``h_attn``: its attention output before the
        output dropout) and the point-to-point audio blocks: frames (G, T, D)."""
        block = self.speaker_self
        h = block.ffn(add_norm(block.norm, x, h_attn, block.attn.dropout))
        G, T, D = h.shape
        hq = h.reshape(G * T, 1, D)
        a_frames = a.reshape(G * T, self.config.audio_per_frame, D)
        for p2p in self.p2p:
            hq = p2p(hq, a_frames)
        return hq.reshape(G, T, D)

    def _speaker_step(self, state: ReactFaceState, speaker: torch.Tensor, audio: torch.Tensor):
        """The speaker side of one window for G conversations: its encoded frames, updated buffers."""
        cfg = self.config
        C, W = cfg.context, speaker.shape[1]
        x, a = self.speaker_proj(speaker), self.audio_proj(audio)
        count = torch.clamp(state.count + W, max=C)
        sk, sv = self.speaker_self.kv(x)
        speaker_k, speaker_v = _roll(state.speaker_k, sk, 2), _roll(state.speaker_v, sv, 2)
        h_attn = self.speaker_self.attn.attend(x, speaker_k, speaker_v, q_offset=C - W, key_start=C - count,
                                              dropout=False)
        enc = self._encode(x, h_attn, a)
        ek, ev = self.fuse_speaker.kv(enc)
        ak, av = self.fuse_audio.kv(a)
        window = _SpeakerWindow(enc_k=_roll(state.enc_k, ek, 2), enc_v=_roll(state.enc_v, ev, 2),
                                audio_k=_roll(state.audio_k, ak, 2), audio_v=_roll(state.audio_v, av, 2), count=count,
                                slbs_audio=self.slbs_audio.kv(a), slbs_speaker=self.slbs_speaker.kv(enc))
        return enc, window, dict(speaker_k=speaker_k, speaker_v=speaker_v)

    def _listener_step(self, state: ReactFaceState, sw: _SpeakerWindow, noise: torch.Tensor, W: int,
                       fresh: bool = False):
        """The listener side of one window for R samples, given the speaker side of their conversations.

        ``fresh``: the caller knows on the host that ``state`` is a fresh one (no sample has a
        previous window, its past buffer all zeros). The past-listener fusion then has nothing to
        fuse: its tokens would enter the past buffer uncounted (``past_count`` stays 0), masked out
        of every later attention, so it is skipped, and the latent encoder runs on its two
        distribution tokens alone (the same outputs; training draws fewer dropout masks, and the
        encoder's from smaller tensors)."""
        cfg = self.config
        C, k, R = cfg.context, cfg.audio_per_frame, state.batch
        device = noise.device
        start = C - sw.count + sw.shift
        if len(set(state.rows)) == 1:
            # Every conversation has r samples: each speaker row's keys serve its r rows, read once.
            share = ("repeat", state.rows[0])
        else:
            share = ("index", state.group)
            start = start.index_select(0, state.group)
        Wp = state.prev_frames.shape[1]
        if fresh:
            past = state.past            # zeros: rolling in tokens that stay masked changes nothing read
        else:
            phase = (state.frame[:, None] - Wp + torch.arange(Wp, device=device)[None]) % cfg.period
            y = self.listener_proj(state.prev_frames) + self.phase_codes[phase]
            q0, end = C - W - Wp + sw.shift, sw.length
            y = self.fuse_audio(y, sw.audio_k, sw.audio_v, q_offset=q0, key_start=k * start,
                                key_lengths=None if end is None else k * end, share=share)
            y = self.fuse_speaker(y, sw.enc_k, sw.enc_v, q_offset=q0, key_start=start, key_lengths=end, share=share)
            past = _roll(state.past, y)
        past_count = torch.where(state.has_prev, torch.clamp(state.past_count + Wp, max=cfg.past), state.past_count)
        dist = self.dist_tokens[None].expand(R, -1, -1)
        if fresh:
            # Every past token is masked out (past_count 0): the two distribution tokens attend to
            # each other alone, and the encoder runs on them alone.
            out = encoder(self.cie, dist)
        else:
            tokens = torch.cat([dist, past + self.past_codes[None]], 1)
            invalid = torch.arange(cfg.past, device=device)[None] < (cfg.past - past_count)[:, None]
            mask = torch.cat([torch.zeros(R, 2, dtype=torch.bool, device=device), invalid], 1)
            out = encoder(self.cie, tokens, mask)
        mu, logvar = self.mu_head(out[:, 0]), self.logvar_head(out[:, 1])
        sigma = torch.exp(0.5 * logvar)
        noise = noise.to(mu.dtype)     # drawn in float32: a model cast to another dtype keeps its own
        z_star = mu + sigma * noise
        alpha = cfg.momentum ** (W / cfg.window)
        if cfg.latent_noise == "stationary":
            moved = alpha * state.z_prev + (1 - alpha) * mu + math.sqrt(1 - alpha * alpha) * sigma * noise
        else:
            moved = alpha * state.z_prev + (1 - alpha) * z_star
        first = ~state.has_prev[:, None]
        z = torch.where(first, z_star, moved)
        z_from = torch.where(first, z, state.z_prev)
        frac = torch.arange(1, W + 1, device=device, dtype=z.dtype)[None, :, None] / W
        latents = z_from[:, None] + frac * (z - z_from)[:, None]
        q = sinusoid(state.frame[:, None] + torch.arange(W, device=device)[None], cfg.dim, mu.dtype)
        for block in self.decoder:
            q = block(q, latents)
        q = self.slbs_audio(q, *sw.slbs_audio, share=share)
        q = self.slbs_speaker(q, *sw.slbs_speaker, share=share)
        frames = self.head_3dmm(q)
        outputs = {"3dmm": frames, "mu": mu, "logvar": logvar}
        if self.head_emotion is not None:
            outputs["emotion_logits"], outputs["emotion"] = self.head_emotion(q)
        listener = dict(past=past, past_count=past_count, prev_frames=frames,
                        has_prev=torch.ones_like(state.has_prev), z_prev=z, frame=state.frame + W)
        return outputs, listener

    def _per_conversation(self, state: ReactFaceState, x: torch.Tensor) -> torch.Tensor:
        """Inputs given one row per sample -> one row per conversation (its first sample's)."""
        G = len(state.rows)
        if x.shape[0] == G:
            return x
        if x.shape[0] != state.batch:
            raise ValueError(f"speaker inputs must have one row per conversation ({G}) or per sample "
                             f"({state.batch}), got {x.shape[0]}")
        # Each conversation's first sample row, found on the device from the sorted ``group`` (no
        # tensor from host data: a CUDA graph replay would read it from freed memory).
        firsts = torch.searchsorted(state.group, torch.arange(G, device=state.group.device))
        return x.index_select(0, firsts.to(x.device))

    def step(self, state: ReactFaceState, speaker: torch.Tensor, audio: torch.Tensor, noise: torch.Tensor):
        """Advance every conversation by one window.

        Args:
            state: from ``init_state`` (or a previous step).
            speaker: (G or R, W, speaker_dim) the window's speaker features, one row per conversation
                or per sample (the samples of a conversation carry the same inputs).
            audio: (G or R, k W, audio_dim) its audio features.
            noise: (R, D) standard normal draws for the latent sample.

        Returns:
            (outputs, new_state): outputs holds ``3dmm`` (R, W, 58), ``emotion`` (R, W, 25) and
            ``emotion_logits`` when enabled, ``speaker_3dmm`` (G, W, 58), ``mu`` and ``logvar`` (R, D).
        """
        self.check_state(state, ReactFaceState)
        self.check_step(speaker, audio, noise, (state.batch, self.config.dim))
        W = self._check_window(speaker.shape[1])
        speaker, audio = self._per_conversation(state, speaker), self._per_conversation(state, audio)
        enc, sw, speaker_bufs = self._speaker_step(state, speaker, audio)
        outputs, listener = self._listener_step(state, sw, noise, W)
        outputs["speaker_3dmm"] = self.speaker_head(enc)
        new_state = dataclasses.replace(state, **speaker_bufs, enc_k=sw.enc_k, enc_v=sw.enc_v, audio_k=sw.audio_k,
                                        audio_v=sw.audio_v, count=sw.count, **listener)
        return outputs, new_state

    def run(self, speaker: torch.Tensor, audio: torch.Tensor, window: int, noise: torch.Tensor, rows: int = 1,
            state: Optional[ReactFaceState] = None, post=None, fresh: Optional[bool] = None) -> Dict[str, torch.Tensor]:
        """The online loop over whole clips of G conversations with ``rows`` samples each.

        The speaker side of every window is computed at once (its self-attention in one call when
        the clip fits the context, else window by window over the same buffers a stream holds), then
        the windows' listener steps run in order. ``noise`` (n_windows, G rows, D), rows g * rows + s.
        T need not be a multiple of the window: the last window is padded by repeating the last frame
        and trimmed. ``post(outputs, old_state, new_state) -> (outputs, new_state)`` post-processes
        each window (PFLPosNet's PosNet; the states it is given carry the listener side and the frame
        count, not the speaker buffers, which the loop does not roll). ``fresh``: whether ``state`` is
        as ``init_state`` made it (nothing fed yet), which the caller knows on the host (default: True
        when no state is given); a fresh state's empty buffers and past are not read. Returns the
        outputs over time: ``3dmm``, ``emotion``, ``emotion_logits`` (R, T, ...), ``speaker_3dmm``
        (G, T, 58), ``mu``, ``logvar`` (R, n, D).
        """
        cfg = self.config
        G, T, _ = speaker.shape
        C, k, W = cfg.context, cfg.audio_per_frame, self._check_window(window)
        speaker, audio, n = pad_to_windows(speaker, audio, W, k)
        if fresh is None:
            fresh = state is None  # known on the host: no read of state.count (a sync, and a graph break)
        state = state or self.init_state(G * rows, W, speaker.device, conversations=G)
        x, a = self.speaker_proj(speaker), self.audio_proj(audio)
        sk, sv = self.speaker_self.kv(x)
        if n * W <= C and fresh:
            # The whole clip fits the empty buffer: one causal call equals the window-by-window calls.
            h_attn = self.speaker_self.attn.attend(x, sk, sv, q_offset=0, dropout=False)
        else:
            keys = (torch.cat([state.speaker_k, sk], 2), torch.cat([state.speaker_v, sv], 2))
            h_attn = torch.cat([self.speaker_self.attn.attend(
                x[:, i * W:(i + 1) * W], keys[0][:, :, (i + 1) * W:(i + 1) * W + C].contiguous(),
                keys[1][:, :, (i + 1) * W:(i + 1) * W + C].contiguous(), q_offset=C - W,
                key_start=C - torch.clamp(state.count + (i + 1) * W, max=C), dropout=False) for i in range(n)], 1)
        enc = self._encode(x, h_attn, a)
        ek, ev = self.fuse_speaker.kv(enc)
        ak, av = self.fuse_audio.kv(a)
        # The windows read the keys of the whole clip (after the state's buffers, unless the state is
        # fresh: its buffers are empty slots no query sees), each up to its own last frame.
        prefix = 0 if fresh else C
        if not fresh:
            ek, ev = torch.cat([state.enc_k, ek], 2), torch.cat([state.enc_v, ev], 2)
            ak, av = torch.cat([state.audio_k, ak], 2), torch.cat([state.audio_v, av], 2)
        slbs_a, slbs_s = self.slbs_audio.kv(a), self.slbs_speaker.kv(enc)
        collected: Dict[str, List[torch.Tensor]] = {}
        for i in range(n):
            e = (i + 1) * W
            count = torch.clamp(state.count + W, max=C)
            sw = _SpeakerWindow(enc_k=ek, enc_v=ev, audio_k=ak, audio_v=av, count=count,
                                slbs_audio=tuple(t[:, :, k * (e - W):k * e] for t in slbs_a),
                                slbs_speaker=tuple(t[:, :, e - W:e] for t in slbs_s), shift=prefix + e - C,
                                length=prefix + e)
            out, listener = self._listener_step(state, sw, noise[i], W, fresh=fresh and i == 0)
            # The loop's states carry the listener side and the frame count; run returns no state,
            # so the speaker buffers are not rolled along.
            new_state = dataclasses.replace(state, count=count, **listener)
            if post is not None:
                out, new_state = post(out, state, new_state)
            state = new_state
            for key, value in out.items():
                collected.setdefault(key, []).append(value)
        result = {key: torch.stack(v, 1) if key in ("mu", "logvar") else torch.cat(v, 1)[:, :T]
                  for key, v in collected.items()}
        result["speaker_3dmm"] = self.speaker_head(enc)[:, :T]
        return result

    def forward(self, speaker: torch.Tensor, audio: torch.Tensor, generator: Optional[torch.Generator] = None,
                samples: Optional[int] = None, noise: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """Training pass: ``samples`` (default config.train_samples) reactions per speaker with the
        training window; outputs are (B, samples, T, dims), ``speaker_3dmm`` (B, T, 58) and mu/logvar
        (B, samples, n, D). ``noise`` (n_windows, B * samples, D), rows b * samples + s, replaces
        draws from ``generator``."""
        self.check_inputs(speaker, audio)
        speaker, audio = self.in_model_dtype(speaker, audio)
        S = self.config.train_samples if samples is None else check_int("samples", samples)
        B, T, _ = speaker.shape
        W = self.config.window_train
        n = math.ceil(T / W)
        if noise is None:
            noise = randn(n, B * S, self.config.dim, generator=generator)
        elif not isinstance(noise, torch.Tensor) or noise.shape != (n, B * S, self.config.dim):
            got = tuple(noise.shape) if isinstance(noise, torch.Tensor) else type(noise).__name__
            raise ValueError(f"noise must have shape ({n}, {B * S}, {self.config.dim}), got {got}")
        out = self.run(speaker, audio, W, noise.to(speaker.device), rows=S)
        return {key: value if key == "speaker_3dmm" else value.reshape(B, S, *value.shape[1:])
                for key, value in out.items()}

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
        ``forward`` is the callable that runs the model (its compiled forward, say)."""
        batch, generators = self.loss_inputs(batch, generators)
        speaker, audio = self.inputs_from_batch(batch)
        S, B, T = self.config.train_samples, speaker.shape[0], speaker.shape[1]
        n = math.ceil(T / self.config.window_train)
        per_item = torch.stack([randn(n, S, self.config.dim, generator=g).to(speaker.device) for g in generators], 1)
        noise = per_item.reshape(n, B * S, self.config.dim)
        out = (self if forward is None else forward)(speaker, audio, samples=S, noise=noise)
        return reactface_loss(self, out, batch["appropriate_3dmm"], batch["appropriate_valid"],
                              batch["speaker_3dmm"], batch.get("appropriate_emotion") if self.head_emotion else None)

    @torch.no_grad()
    def generate(self, speaker: torch.Tensor, audio: torch.Tensor, num_samples: int = 10,
                 generator: Optional[torch.Generator] = None, window: Optional[int] = None) -> Dict[str, torch.Tensor]:
        """S reactions per speaker by the online loop: ``3dmm`` (B, S, T, 58), ``emotion`` (B, S, T, 25).

        Noise is drawn per window as randn(B * S, D) from ``generator``, sample-major within each
        speaker (rows b * S + s), exactly as ``reactfast.online.ReactionStream`` draws it."""
        return self._generate(speaker, audio, num_samples, generator, window)

    def _generate(self, speaker, audio, num_samples, generator, window, post=None, state=None, fresh=None):
        self.check_inputs(speaker, audio)
        speaker, audio = self.in_model_dtype(speaker, audio)
        check_int("num_samples", num_samples)
        B, T, _ = speaker.shape
        W = self.config.window if window is None else check_int("window", window)
        noise = self.draw_windows(B, num_samples, math.ceil(T / W), generator).to(speaker.device)
        out = self.run(speaker, audio, W, noise, rows=num_samples, post=post, state=state, fresh=fresh)
        return {key: value.reshape(B, num_samples, *value.shape[1:]) for key, value in out.items()
                if key in self.output_widths()}


def appropriate_losses(pred: torch.Tensor, targets: torch.Tensor, pose_weight: float = 10.0,
                       emotion_logits: Optional[torch.Tensor] = None, emotion_targets: Optional[torch.Tensor] = None,
                       emotion_weight: float = 1.0, va_weight: float = 1.0, ccc_weight: float = 0.0) -> torch.Tensor:
    """The reconstruction loss of every sample against every appropriate real reaction:
    SmoothL1(expression) + pose_weight x SmoothL1(pose) (+ emotion_weight x the emotion loss of
    ``reactfast.models.heads``).

    pred (B, S, T, 58); targets (B, K, T, 58); emotion_logits (B, S, T, 25). Returns (B, S, K)."""
    S, K = pred.shape[1], targets.shape[1]

    def part(dims):   # the dims sliced from the inputs (contiguous: torch's CPU loss kernels take a
        # strided slice element by element), not from the (B, S, K, T, 58) differences
        p, t = pred[..., dims].contiguous(), targets[..., dims].contiguous()
        # sum / n, not mean: mean's backward divides a full-size expanded gradient, sum's stays a view
        return F.smooth_l1_loss(p[:, :, None].expand(-1, -1, K, -1, -1), t[:, None].expand(-1, S, -1, -1, -1),
                                reduction="none").sum((-1, -2)) / (p.shape[-1] * p.shape[-2])

    loss = part(layout.TDMM_EXPRESSION) + pose_weight * part(layout.TDMM_POSE)
    if emotion_logits is not None and emotion_targets is not None:
        loss = loss + emotion_weight * emotion_loss(emotion_logits[:, :, None], emotion_targets[:, None], va_weight,
                                                    ccc_weight)
    return loss


def _diversity(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Mean over pairs of distinct samples of exp(-||x_i - x_j||^2 / scale); x (B, S, ...).

    Each unordered pair once (i < j): the term is symmetric, so this equals the mean over the
    ordered pairs i != j with a third of the (B, S, S, ...) differences' work."""
    B, S = x.shape[:2]
    flat = x.reshape(B, S, -1)
    i, j = torch.triu_indices(S, S, 1, device=x.device)    # built on the device: no host data
    dist = (flat.index_select(1, i) - flat.index_select(1, j)).square().sum(-1)    # (B, S (S - 1) / 2)
    return torch.exp(-dist / scale).mean()


def reactface_loss(model: ReactFace, out: Dict[str, torch.Tensor], targets: torch.Tensor, valid: torch.Tensor,
                   speaker_3dmm: torch.Tensor,
                   emotion_targets: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
    """ReactFace's losses for a ``forward`` output (S samples per speaker).

    targets (B, K, T, 58) appropriate real reactions (padded, ``valid`` (B, K)); speaker_3dmm
    (B, T, 58); emotion_targets (B, K, T, 25) when the model has the emotion head. The diversity
    term covers the 3DMM and the emotion outputs; the KL term is averaged over the latent dims.
    """
    cfg = model.config
    pred = out["3dmm"]
    B, S = pred.shape[:2]
    logits = out.get("emotion_logits")
    pairs = appropriate_losses(pred, targets, cfg.pose_weight, logits, emotion_targets, cfg.emotion_weight,
                               cfg.va_weight, cfg.ccc_weight)                                              # (B, S, K)
    rec = torch.where(valid[:, None], pairs, torch.full_like(pairs, float("inf"))).min(2).values.mean()
    if cfg.coverage_weight:
        # Every appropriate reaction near one of the samples: the samples spread over the reactions.
        covered = pairs.min(1).values                                                      # (B, K)
        rec = rec + cfg.coverage_weight * (covered * valid).sum() / valid.sum().clamp(min=1)
    mu, logvar = out["mu"], out["logvar"]
    kl = (-0.5 * (1 + logvar - mu ** 2 - logvar.exp())).mean()
    if S > 1:
        div = _diversity(pred, cfg.div_scale)
        if "emotion" in out:
            div = div + _diversity(out["emotion"], cfg.div_scale)
    else:
        div = pred.new_zeros(())
    if pred.shape[2] >= 3:
        acc = pred[:, :, 2:] - 2 * pred[:, :, 1:-1] + pred[:, :, :-2]
        zero = torch.zeros_like(acc)
        smooth = (F.smooth_l1_loss(acc[..., layout.TDMM_POSE], zero[..., layout.TDMM_POSE])
                  + 0.1 * F.smooth_l1_loss(acc[..., layout.TDMM_EXPRESSION], zero[..., layout.TDMM_EXPRESSION]))
    else:
        # No second difference in fewer than 3 frames: the mean over none was NaN, and training on
        # such items (--clip-frames 1 or 2) stopped as "diverged", advising a lower learning rate.
        smooth = pred.new_zeros(())
    speaker_rec = F.smooth_l1_loss(out["speaker_3dmm"], speaker_3dmm)
    total = (rec + cfg.kl_weight * kl + cfg.div_weight * div + cfg.smooth_weight * smooth
             + cfg.speaker_weight * speaker_rec)
    return {"loss": total, "rec": rec.detach(), "kl": kl.detach(), "div": div.detach(), "smooth": smooth.detach(),
            "speaker_rec": speaker_rec.detach()}
