"""PerFRDiff (Zhu et al.; authors' code xk0720/PerFRDiff): a diffusion generator of listener
reactions personalised by weight editing, batched across listeners (SPEC 4.2).

- GAFRG: a DETR-style transformer decoder (7 layers, d 512, 4 heads, FFN 1024, GELU, post-LN,
  final LayerNorm) denoising listener emotion in windows of 50 frames; window i is conditioned on
  the speaker's window i - 1 (zeros, the null condition, for the first) through memory tokens
  (time embedding + per-frame audio, 3DMM and emotion); x0 prediction, cosine schedule, 1000
  training steps, condition dropout 0.2; sampled with reactfast DDIM (50 leading steps, eta 0,
  clamp to [-1, 1], guidance 7.5), every window of every sample of every speaker in one batch;
  the cross-attention keys and values of the condition's frame tokens (3 W of the memory's 3 W + 1
  tokens; the time token changes per step) are computed once per sampling run, not per step.
  Emotion x0 leaves the denoiser through the range heads of ``reactfast.models.heads`` (sigmoid
  AUs, tanh valence/arousal, softmax expressions; the authors' head is linear, and its samples
  left the ranges), and classifier-free guidance extrapolates the head's logits, not the
  activated x0, so guided samples stay in range at any scale (the last DDIM step returns x0).
- PSSL: a transformer encoder over a listener's historical 3DMM (any length) -> a normalised
  style vector p, trained with the supervised contrastive loss (temperature 0.07).
- PWSG: a hypernetwork p -> 1024 -> 1024 -> one branch per edited layer emitting a full-rank
  weight shift (as the authors do; ~1.6 B parameters at their sizes) or, with ``shift_rank`` r,
  low-rank factors U V^T. Shifts are applied through ``reactfast.nn.personalize``, so one batch
  holds many listeners and the GAFRG's weights are never copied.

Training has two stages (``set_stage``): 1 trains GAFRG and PSSL; 2 trains PWSG with both frozen.

``condition_window="current"`` (beyond the authors' code; default "previous") conditions listener
window i on the speaker's window i itself, as ReactDiff does (online: once that window has
arrived). Where listeners follow the speaker within a few frames, as on the demo data (2-12
frames), the previous window carries little of what window i reacts to: the speaker's own previous
window copied forward scores FRDist 215 there, against 198 for the speaker's current one (Mirror).

Two more options beyond the authors' code, off by default: ``cond_frames`` adds the condition's
frame j (its audio, 3DMM and emotion projections) to the decoder's query of frame j, so timing
need not be found through cross-attention alone (as ReactDiff's ``cond_frames``); and
``window_noise="shared"`` / ``noise_scale``, as in ReactDiff: every window of a sample starts from
its first window's noise (streams keep it in their state), scaled by ``noise_scale``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from reactfast import _backend
from reactfast.data import layout
from reactfast.diffusion import SCHEDULES, SPACINGS, DDIMScheduler, autocast_denoiser, sample
from reactfast.models._inputs import check_speaker_audio, pad_to_windows
from reactfast.models.base import (Generator, GeneratorConfig, TrainStage, as_tuple_of, check_int, check_reals,
                                   check_sample_autocast, check_unit_interval, check_window_noise, randn, register)
from reactfast.models.heads import activate_emotion
from reactfast.nn.global_batch import gather_rows
from reactfast.nn.personalize import attention_projections, make_shiftable, personalize, shift_entries
from reactfast.nn.positional import sinusoid
from reactfast.ops._checks import check_real, check_tensor


# The speaker window that conditions listener window i: i - 1 (the authors') or i.
CONDITION_WINDOWS = ("previous", "current")


@dataclass
class PerFRDiffConfig(GeneratorConfig):
    output: str = "emotion"
    window: int = 50
    audio_dim: int = 39
    audio_per_frame: int = layout.AUDIO_SAMPLES_PER_FRAME
    dim: int = 512
    heads: int = 4
    ffn: int = 1024
    layers: int = 7
    dropout: float = 0.1
    cond_dropout: float = 0.2
    train_steps: int = 1000
    schedule: str = "cosine"
    sample_steps: int = 50
    spacing: str = "leading"
    clip: float = 1.0
    guidance: float = 7.5
    condition_window: str = "previous"
    cond_frames: bool = False
    window_noise: str = "independent"
    noise_scale: float = 1.0
    # The denoiser's precision when sampling (diffusion.SAMPLE_AUTOCAST): "auto" is bf16 autocast on
    # CUDA (x0 prediction, clamped: the test model's samples within 9e-3 relative of float64).
    sample_autocast: str = "auto"
    # Sampling on CUDA graphs: each (rows, shapes, guidance, steps) loop captured once per model and
    # replayed (diffusion.SamplerGraphs); CUDA devices only, the eager loop elsewhere.
    sample_cuda_graph: bool = False
    style_dim: int = 512
    style_layers: int = 4
    style_heads: int = 4
    style_ffn: int = 1024
    temperature: float = 0.07
    min_history: int = 8
    pssl_weight: float = 1.0
    hyper_hidden: int = 1024
    edited_layers: Tuple[str, ...] = ("decoder.layers.3.multihead_attn", "decoder.layers.5.multihead_attn",
                                      "to_emotion_feat")
    shift_rank: int = 0
    lr: float = 1e-4
    weight_decay: float = 0.0

    def __post_init__(self):
        self.edited_layers = as_tuple_of(self, "edited_layers", str, empty_ok=True)   # none: no personalisation
        self.check_field_types()
        if self.output not in ("emotion", "3dmm"):
            raise ValueError(f"output must be 'emotion' or '3dmm', got {self.output!r}")
        self.check_at_least(1, "window", "audio_dim", "audio_per_frame", "dim", "heads", "ffn", "layers",
                            "train_steps", "sample_steps", "style_dim", "style_layers", "style_heads", "style_ffn",
                            "min_history", "hyper_hidden")
        for name, allowed in (("schedule", SCHEDULES), ("spacing", SPACINGS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.dim % self.heads or self.style_dim % self.style_heads:
            raise ValueError("heads must divide dim and style_heads must divide style_dim")
        if self.sample_steps > self.train_steps:
            raise ValueError(f"sample_steps ({self.sample_steps}) must not exceed train_steps ({self.train_steps})")
        if self.shift_rank < 0:
            raise ValueError(f"shift_rank must be >= 0 (0 = full rank), got {self.shift_rank}")
        if self.condition_window not in CONDITION_WINDOWS:
            raise ValueError(f"condition_window must be one of {CONDITION_WINDOWS}, got {self.condition_window!r}")
        check_unit_interval(self, ("dropout", "cond_dropout"))
        self.check_weights("pssl_weight")
        check_reals(self, ("temperature",), strict=True)    # the contrastive loss divides by it
        check_reals(self, ("guidance",), minimum=None)      # below 0 is defined (negative guidance)
        check_window_noise(self)
        check_sample_autocast(self)

    @property
    def out_dim(self) -> int:
        return layout.EMOTION_DIM if self.output == "emotion" else layout.TDMM_DIM

    @property
    def cond_dim(self) -> int:
        return self.audio_per_frame * self.audio_dim + layout.TDMM_DIM + layout.EMOTION_DIM


class GAFRG(nn.Module):
    """The generic denoiser: x0 = GAFRG(x_t, t, condition) over one window."""

    def __init__(self, cfg: PerFRDiffConfig):
        super().__init__()
        d, W = cfg.dim, cfg.window
        self.cfg = cfg
        self.in_proj = nn.Linear(cfg.out_dim, d)
        self.query_pos = nn.Parameter(torch.randn(W, d) * 0.02)
        self.time_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.audio_proj = nn.Linear(cfg.audio_per_frame * cfg.audio_dim, d)
        self.tdmm_proj = nn.Linear(layout.TDMM_DIM, d)
        self.emotion_proj = nn.Linear(layout.EMOTION_DIM, d)
        self.memory_type = nn.Parameter(torch.randn(4, d) * 0.02)
        self.memory_pos = nn.Parameter(torch.randn(W, d) * 0.02)
        layer = nn.TransformerDecoderLayer(d, cfg.heads, cfg.ffn, cfg.dropout, activation="gelu", batch_first=True)
        self.decoder = nn.TransformerDecoder(layer, cfg.layers, norm=nn.LayerNorm(d))
        self.to_emotion_feat = nn.Linear(d, cfg.out_dim)

    def _frames(self, cond: torch.Tensor):
        """The condition's per-frame features: the memory's frame tokens (audio, 3DMM, emotion
        windows, each with its type and position) and, with cond_frames, the queries' term."""
        cfg = self.cfg
        k_a = cfg.audio_per_frame * cfg.audio_dim
        audio, tdmm, emotion = cond[..., :k_a], cond[..., k_a:k_a + layout.TDMM_DIM], cond[..., k_a + layout.TDMM_DIM:]
        frames = (self.audio_proj(audio), self.tdmm_proj(tdmm), self.emotion_proj(emotion))
        tokens = torch.cat([f + self.memory_type[i + 1] + self.memory_pos for i, f in enumerate(frames)], 1)
        # Frame j's query also carries the condition's frame j (the memory's frame features).
        return tokens, (frames[0] + frames[1] + frames[2] if cfg.cond_frames else None)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: Optional[torch.Tensor],
                cache: Optional["ConditionCache"] = None) -> torch.Tensor:
        """Head outputs for x_t at steps t; from ``cond`` or from its ``condition_cache``."""
        if cache is not None:
            return self._forward_cached(x_t, t, cache)
        time = self.time_mlp(sinusoid(t, self.cfg.dim, x_t.dtype))[:, None] + self.memory_type[0]
        tokens, query_term = self._frames(cond)
        query = self.in_proj(x_t) + self.query_pos
        if query_term is not None:
            query = query + query_term
        h = self.decoder(query, torch.cat([time, tokens], 1))
        return self.to_emotion_feat(h)

    def condition_cache(self, cond: torch.Tensor) -> "ConditionCache":
        """What the denoiser computes from the condition alone, for every DDIM step of one sampling
        run: each decoder layer's cross-attention keys and values of the memory's frame tokens (3 W
        of its 3 W + 1 tokens; the time token changes per step) and the queries' condition term.
        Build it in the same ``personalize`` context as the calls that use it (the shifted
        in-projections are applied to the keys and values here)."""
        tokens, query_term = self._frames(cond)
        kv = [tuple(attention_projections(layer.multihead_attn, tokens, (1, 2))) for layer in self.decoder.layers]
        return ConditionCache(kv, query_term)

    def _forward_cached(self, x_t: torch.Tensor, t: torch.Tensor, cache: "ConditionCache") -> torch.Tensor:
        # nn.TransformerDecoderLayer's post-LN forward without dropout, whose cross-attention
        # projects only the time token and the queries and reuses the cached frame keys/values.
        if self.training:
            raise RuntimeError("the condition cache is for sampling; the GAFRG is in training mode (dropout)")
        time = self.time_mlp(sinusoid(t, self.cfg.dim, x_t.dtype))[:, None] + self.memory_type[0]
        x = self.in_proj(x_t) + self.query_pos
        if cache.query_term is not None:
            x = x + cache.query_term
        for layer, (k_frames, v_frames) in zip(self.decoder.layers, cache.kv):
            x = layer.norm1(x + layer.self_attn(x, x, x, need_weights=False)[0])
            mha = layer.multihead_attn
            q = attention_projections(mha, x, (0,))[0]
            k_time, v_time = attention_projections(mha, time, (1, 2))
            k, v = torch.cat([k_time, k_frames], 1), torch.cat([v_time, v_frames], 1)
            B, H = x.shape[0], mha.num_heads
            q, k, v = (a.reshape(B, a.shape[1], H, -1).transpose(1, 2) for a in (q, k, v))
            att = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, x.shape[1], -1)
            x = layer.norm2(x + mha.out_proj(att))
            x = layer.norm3(x + layer.linear2(layer.activation(layer.linear1(x))))
        return self.to_emotion_feat(self.decoder.norm(x))

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        """Head outputs -> x0: emotion in its valid ranges, 3DMM as is."""
        return activate_emotion(logits) if self.cfg.output == "emotion" else logits


@dataclass
class ConditionCache:
    """``GAFRG.condition_cache``: per decoder layer the cross-attention keys and values (B, 3 W, d)
    of the memory's frame tokens, and the queries' condition term (cond_frames) or None."""

    kv: List[Tuple[torch.Tensor, torch.Tensor]]
    query_term: Optional[torch.Tensor]


class PSSL(nn.Module):
    """Personalised style space: a listener's 3DMM history (any length) -> normalised style p."""

    def __init__(self, cfg: PerFRDiffConfig):
        super().__init__()
        self.cfg = cfg
        self.proj_in = nn.Linear(layout.TDMM_DIM, cfg.style_dim)
        self.cls = nn.Parameter(torch.randn(1, 1, cfg.style_dim) * 0.02)
        layer = nn.TransformerEncoderLayer(cfg.style_dim, cfg.style_heads, cfg.style_ffn, cfg.dropout,
                                           activation="gelu", batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.style_layers, enable_nested_tensor=False)
        self.head = nn.Linear(cfg.style_dim, cfg.style_dim)

    def forward(self, history: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        if not isinstance(history, torch.Tensor) or history.dim() != 3 or history.shape[-1] != layout.TDMM_DIM:
            got = tuple(history.shape) if isinstance(history, torch.Tensor) else type(history).__name__
            raise ValueError(f"listener history must be (B, L, {layout.TDMM_DIM}) 3DMM frames, got {got}")
        B, L, _ = history.shape
        shortest = L
        if lengths is None:
            lengths = torch.full((B,), L, device=history.device)
        else:
            lengths = lengths.to(history.device)
            if _backend.host_checks_allowed(lengths):  # given lengths read back only where the host may
                shortest = int(lengths.min())
        if shortest < self.cfg.min_history:
            raise ValueError(f"listener history too short: {shortest} frames, at least "
                             f"{self.cfg.min_history} are needed")
        x = self.proj_in(history)
        x = x + sinusoid(torch.arange(L, device=history.device), self.cfg.style_dim, x.dtype)[None]
        x = torch.cat([self.cls.expand(B, -1, -1), x], 1)
        pad = torch.arange(L + 1, device=history.device)[None] > lengths[:, None]
        h = self.encoder(x, src_key_padding_mask=pad)[:, 0]
        return F.normalize(self.head(h), dim=-1)


def supervised_contrastive(p: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """Khosla et al.'s loss over normalised styles p (N, d) with listener labels (N,); anchors
    without a positive are skipped (0 when none has one)."""
    sim = p @ p.t() / temperature
    N = p.shape[0]
    eye = torch.eye(N, dtype=torch.bool, device=p.device)
    positive = (labels[:, None] == labels[None, :]) & ~eye
    log_prob = sim - torch.logsumexp(sim.masked_fill(eye, float("-inf")), 1, keepdim=True)
    counts = positive.sum(1)
    has = counts > 0
    # The mean over anchors with a positive, written without reading `has` back (no host
    # synchronisation in a GPU training step); 0 when none has one.
    per_anchor = -(log_prob * positive).sum(1) / counts.clamp_min(1)
    return (per_anchor * has).sum() / has.sum().clamp_min(1)


def _layer_shape(module: nn.Module) -> Tuple[int, int]:
    if isinstance(module, nn.MultiheadAttention):
        return module.in_proj_weight.shape[0], module.in_proj_weight.shape[1]
    if isinstance(module, nn.Linear):
        return module.out_features, module.in_features
    raise TypeError(f"{type(module).__name__} layers cannot be edited (nn.Linear or nn.MultiheadAttention only)")


class PWSG(nn.Module):
    """Hypernetwork from a style vector to per-layer weight shifts (full rank or rank r)."""

    def __init__(self, cfg: PerFRDiffConfig, shapes: Dict[str, Tuple[int, int]]):
        super().__init__()
        h, r = cfg.hyper_hidden, cfg.shift_rank
        self.shapes, self.rank = dict(shapes), r
        self.trunk = nn.Sequential(nn.Linear(cfg.style_dim, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU())
        self.branches = nn.ModuleDict()
        for name, (d_out, d_in) in shapes.items():
            branch = nn.Linear(h, d_out * d_in if r == 0 else r * (d_out + d_in))
            with torch.no_grad():
                if r == 0:
                    branch.weight.zero_()
                    branch.bias.zero_()
                else:
                    branch.weight[: r * d_out].zero_()   # U starts at 0: shifts start at 0, V still learns
                    branch.bias[: r * d_out].zero_()
                    branch.weight[r * d_out:].normal_(0, 1.0 / math.sqrt(h))
            self.branches[name.replace(".", "__")] = branch

    @staticmethod
    def parameter_count(style_dim: int, hidden: int, shapes: Sequence[Tuple[int, int]], rank: int = 0) -> int:
        """Closed form of the hypernetwork's size (for sizes too large to build)."""
        trunk = style_dim * hidden + hidden + hidden * hidden + hidden
        outs = [o * i if rank == 0 else rank * (o + i) for o, i in shapes]
        return trunk + sum(hidden * n + n for n in outs)

    def forward(self, p: torch.Tensor) -> Dict[str, object]:
        h = self.trunk(p)
        B, r = p.shape[0], self.rank
        shifts = {}
        for name, (d_out, d_in) in self.shapes.items():
            out = self.branches[name.replace(".", "__")](h)
            if r == 0:
                shifts[name] = out.reshape(B, d_out, d_in)
            else:
                shifts[name] = (out[:, : r * d_out].reshape(B, d_out, r), out[:, r * d_out:].reshape(B, d_in, r))
        return shifts


def _shift_entries(shifts: Dict[str, object]) -> int:
    return shift_entries(next(iter(shifts.values())))


def _rows_of(shifts: Dict[str, object], lo: int, hi: int) -> Dict[str, object]:
    return {k: tuple(x[lo:hi] for x in v) if isinstance(v, tuple) else v[lo:hi] for k, v in shifts.items()}


def _expand(shifts: Optional[Dict[str, object]], repeats: int) -> Optional[Dict[str, object]]:
    """Each listener's shifts repeated for its ``repeats`` consecutive batch rows."""
    if shifts is None:
        return None
    rep = lambda t: t.repeat_interleave(repeats, 0)  # noqa: E731
    return {k: tuple(rep(x) for x in v) if isinstance(v, tuple) else rep(v) for k, v in shifts.items()}


def _cat_shifts(parts: Sequence[Dict[str, object]]) -> Dict[str, object]:
    ref = parts[0]
    return {k: (tuple(torch.cat([p[k][i] for p in parts]) for i in range(len(ref[k])))
                if isinstance(ref[k], tuple) else torch.cat([p[k] for p in parts])) for k in ref}


@dataclass
class PerFRDiffState:
    """Streaming state: the previous speaker window's condition, the noise of each stream's first
    window (used by ``window_noise="shared"``) and the listener's shifts, one entry per listener
    shared by its consecutive rows (a stream's samples), or one per row."""

    prev_cond: torch.Tensor                   # (B, W, cond_dim)
    frame: torch.Tensor                       # (B,)
    noise: torch.Tensor                       # (B, W, out_dim)
    shifts: Optional[Dict[str, object]] = None

    @property
    def rows_per_entry(self) -> int:
        return self.frame.shape[0] // _shift_entries(self.shifts) if self.shifts is not None else 0

    def _per_row(self, group: int = 1) -> Dict[str, object]:
        """This personalised state's shifts with one entry per ``group`` rows."""
        repeats = self.rows_per_entry // group
        return self.shifts if repeats == 1 else _expand(self.shifts, repeats)

    @staticmethod
    def cat(states: Sequence["PerFRDiffState"]) -> "PerFRDiffState":
        shifts = None
        personal = [s for s in states if s.shifts is not None]
        if personal:
            # Keep one entry per listener when every stream groups its rows alike; else one per row.
            groups = {s.rows_per_entry for s in personal}
            group = groups.pop() if len(groups) == 1 else 1
            if any(s.frame.shape[0] % group for s in states):
                group = 1
            ref = personal[0].shifts
            shifts = _cat_shifts([s._per_row(group) if s.shifts is not None
                                  else _zeros_like_shifts(ref, s.frame.shape[0] // group) for s in states])
        return PerFRDiffState(torch.cat([s.prev_cond for s in states]), torch.cat([s.frame for s in states]),
                              torch.cat([s.noise for s in states]), shifts)

    def split(self, sizes: Sequence[int]) -> List["PerFRDiffState"]:
        group = self.rows_per_entry
        shifts = self.shifts
        if shifts is not None and any(n % group for n in sizes):
            shifts, group = self._per_row(1), 1
        out, lo = [], 0
        for n in sizes:
            sh = None if shifts is None else _rows_of(shifts, lo // group, (lo + n) // group)
            out.append(PerFRDiffState(self.prev_cond[lo:lo + n], self.frame[lo:lo + n], self.noise[lo:lo + n], sh))
            lo += n
        return out


def _zeros_like_shifts(ref: Dict[str, object], batch: int) -> Dict[str, object]:
    z = lambda t: t.new_zeros((batch,) + tuple(t.shape[1:]))  # noqa: E731
    return {k: tuple(z(x) for x in v) if isinstance(v, tuple) else z(v) for k, v in ref.items()}


@register
class PerFRDiff(Generator):
    """GAFRG + PSSL + PWSG. ``forward(x_t, t, cond, shifts=None)`` is the (personalised) denoiser.
    Stage 1 trains GAFRG and PSSL; stage 2 trains PWSG with both frozen (SGD, lr 1e-3)."""

    name = "perfrdiff"
    summary = "PerFRDiff (Zhu et al.): personalised diffusion over emotion windows, per-listener weight editing"
    config_class = PerFRDiffConfig
    stages = (1, 2)
    stage_names = {1: "GAFRG + PSSL", 2: "PWSG with both frozen (SGD, lr 1e-3)"}

    def __init__(self, config: Optional[PerFRDiffConfig] = None, backend: Optional[str] = None, **overrides):
        super().__init__(config, backend, **overrides)
        cfg = self.config
        self.gafrg = GAFRG(cfg)
        self.pssl = PSSL(cfg)
        modules = dict(self.gafrg.named_modules())
        missing = [n for n in cfg.edited_layers if n not in modules]
        if missing:
            editable = [n for n, m in modules.items() if isinstance(m, (nn.Linear, nn.MultiheadAttention))]
            raise ValueError(f"edited_layers {missing} are not layers of the GAFRG; editable: {editable}")
        self.pwsg = PWSG(cfg, {n: _layer_shape(modules[n]) for n in cfg.edited_layers})
        make_shiftable(self.gafrg, cfg.edited_layers)
        self.set_backend(backend)
        self.scheduler = DDIMScheduler(cfg.train_steps, cfg.schedule, prediction="x0", spacing=cfg.spacing,
                                       clip=cfg.clip)

    def trainable_modules(self, stage: int) -> List[nn.Module]:
        return [self.gafrg, self.pssl] if stage == 1 else [self.pwsg]

    def uses_every_parameter(self, frames: Optional[int]) -> bool:
        return self.stage != 1 or self.config.pssl_weight > 0   # stage 1 trains PSSL by its contrastive loss

    def stage_optimizer(self, stage: int) -> Tuple[str, Optional[float]]:
        return ("sgd", 1e-3) if stage == 2 else ("adamw", None)

    def training_windows(self, clip_frames: int) -> Tuple[int, int]:
        # Items pair the speaker's window i - 1 (or i) with the listener's window i.
        return 2 * self.config.window, self.config.window

    @classmethod
    def demo_config(cls, audio_dim: int) -> PerFRDiffConfig:
        return PerFRDiffConfig(audio_dim=audio_dim, dim=64, heads=4, ffn=128, layers=6, train_steps=200,
                               sample_steps=20, style_dim=32, style_layers=2, style_heads=4, style_ffn=64,
                               hyper_hidden=64, guidance=2.0, condition_window="current", cond_frames=True,
                               window_noise="shared")

    def demo_stages(self, steps: int) -> List[TrainStage]:
        # Three times the demo's steps in stage 1, with a cosine learning rate. On the demo data
        # (condition_window "current"): 500 steps FRDist 244.8; 1500, 230.2; with cond_frames 203.6,
        # and shared window noise 201.7; with the cosine rate too 194.5.
        return [TrainStage(stage=1, steps=3 * steps, lr=2e-3, batch_size=16, lr_schedule="cosine"),
                TrainStage(stage=2, steps=max(1, steps // 3), lr=1e-3, optimizer="sgd", batch_size=16)]

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                shifts: Optional[Dict[str, object]] = None) -> torch.Tensor:
        """The (personalised) x0 prediction, in the output's valid ranges."""
        return self.gafrg.activate(self.logits(x_t, t, cond, shifts))

    def logits(self, x_t: torch.Tensor, t: torch.Tensor, cond: Optional[torch.Tensor],
               shifts: Optional[Dict[str, object]] = None, cache: Optional[ConditionCache] = None) -> torch.Tensor:
        """The denoiser's head outputs before the range activation (from ``cond``, or from the
        ``cache`` that ``condition_cache`` built from it with the same shifts)."""
        if shifts is None:
            return self.gafrg(x_t, t, cond, cache)
        with personalize(self.gafrg, shifts, backend=self.backend_for("weight_shift")):
            return self.gafrg(x_t, t, cond, cache)

    def condition_cache(self, cond: torch.Tensor, shifts: Optional[Dict[str, object]] = None) -> ConditionCache:
        """``GAFRG.condition_cache`` of ``cond`` with the listeners' ``shifts`` applied."""
        if shifts is None:
            return self.gafrg.condition_cache(cond)
        with personalize(self.gafrg, shifts, backend=self.backend_for("weight_shift")):
            return self.gafrg.condition_cache(cond)

    def shifts_for(self, history: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> Dict[str, object]:
        """Per-listener weight shifts from listener 3DMM histories (B, L, 58)."""
        return self.pwsg(self.pssl(history, lengths))

    def output_widths(self) -> Dict[str, int]:
        return {self.config.output: self.config.out_dim}

    def check_inputs(self, speaker: torch.Tensor, audio: torch.Tensor, name: str = "speaker") -> None:
        cfg = self.config
        check_speaker_audio(speaker, audio, layout.TDMM_DIM + layout.EMOTION_DIM, cfg.audio_dim, cfg.audio_per_frame,
                            "speaker 3DMM + emotion frames", name)

    def inputs_from_batch(self, batch: Dict[str, torch.Tensor]):
        return torch.cat([batch["speaker_3dmm"], batch["speaker_emotion"]], -1), batch["speaker_audio"]

    def condition(self, speaker: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Per-frame condition features: (B, T, k A + 58 + 25)."""
        B, T, _ = speaker.shape
        return torch.cat([audio.reshape(B, T, -1), speaker], -1)

    def loss(self, batch: Dict[str, torch.Tensor], generators: Sequence[torch.Generator],
             forward=None) -> Dict[str, torch.Tensor]:
        """Items are 2W-frame windows: the speaker's first W frames (or, with condition_window
        "current", its last W) condition the listener's last W.
        Stage 1: x0 MSE + PSSL contrastive loss; stage 2: x0 MSE through the personalised GAFRG,
        with shifts from the listener's first W frames (its history)."""
        batch, generators = self.loss_inputs(batch, generators)
        cfg = self.config
        W = cfg.window
        speaker, audio = self.inputs_from_batch(batch)
        if speaker.shape[1] != 2 * W:
            raise ValueError(f"PerFRDiff trains on windows of {2 * W} frames (condition or history + target), got "
                             f"{speaker.shape[1]}")
        lo = 0 if cfg.condition_window == "previous" else W
        cond = self.condition(speaker[:, lo:lo + W], audio[:, cfg.audio_per_frame * lo:cfg.audio_per_frame * (lo + W)])
        x0 = batch[f"listener_{cfg.output}"][:, W:]
        t = torch.stack([torch.randint(0, cfg.train_steps, (), generator=g) for g in generators]).to(x0.device)
        noise = torch.stack([torch.randn(W, cfg.out_dim, generator=g) for g in generators]).to(x0.device)
        drop = torch.stack([torch.rand((), generator=g) < cfg.cond_dropout for g in generators]).to(x0.device)
        if self.stage == 1:
            cond = torch.where(drop[:, None, None], torch.zeros_like(cond), cond)
        x_t = self.scheduler.add_noise(x0, noise, t)
        shifts = None
        if self.stage == 2:
            shifts = self.shifts_for(batch["listener_3dmm"][:, :W])
        pred = (self if forward is None else forward)(x_t, t, cond, shifts)
        diffusion = F.mse_loss(pred, x0)
        out = {"diffusion": diffusion.detach()}
        total = diffusion
        if self.stage == 1 and cfg.pssl_weight > 0:
            # Over the global batch under DDP (its pairs across processes too), as in one process.
            styles, ids = gather_rows(self.pssl(batch["listener_3dmm"])), gather_rows(batch["listener_id"])
            con = supervised_contrastive(styles, ids, cfg.temperature)
            total = total + cfg.pssl_weight * con
            out["pssl"] = con.detach()
        out["loss"] = total
        out["rec"] = diffusion.detach()
        return out

    def draw_noise(self, batch: int, generator: Optional[torch.Generator] = None, window: int = 0) -> torch.Tensor:
        return randn(check_int("batch", batch), self.config.window, self.config.out_dim, generator=generator).to(
            next(self.parameters()).dtype)

    def _denoiser(self, shifts, guidance: Optional[float], cache: bool = True):
        """The DDIM denoiser (x_t, t, cond) -> x0. With ``guidance`` it runs the rows twice in one
        call (with their condition and with the null condition) and extrapolates the head's logits,
        uncond + guidance (cond - uncond), before the range activation. With per-listener shifts
        the rows are put listener-major for the call (each listener's conditional and unconditional
        rows together), so every listener's shift is read once per step and never copied per row.
        With ``cache`` (in eval mode) the condition's keys and values are computed on the first
        step and reused while the sampler passes the same condition tensor."""
        cache = cache and not self.training
        memo: Dict[str, object] = {}

        def cached(cond, build):
            if not cache:
                return None
            if memo.get("cond") is not cond:
                memo["cond"], memo["cache"] = cond, self.condition_cache(build(), shifts)
            return memo["cache"]

        if guidance is None:
            def plain(x, t, cond):
                return self.gafrg.activate(self.logits(x, t, cond, shifts, cached(cond, lambda: cond)).to(x.dtype))
            plain.reset = memo.clear
            return plain

        def denoise(x, t, cond):
            rows = x.shape[0]
            groups = rows if shifts is None else _shift_entries(shifts)
            both = lambda a, b: torch.stack([a.reshape(groups, -1, *a.shape[1:]),  # noqa: E731
                                             b.reshape(groups, -1, *b.shape[1:])], 1).reshape(2 * rows, *a.shape[1:])
            memory = cached(cond, lambda: both(cond, torch.zeros_like(cond)))
            full = None if memory is not None else both(cond, torch.zeros_like(cond))
            # The guided combination in the sampler's dtype (guidance amplifies an autocast rounding).
            out = self.logits(both(x, x), both(t, t), full, shifts, memory).to(x.dtype)
            out = out.reshape(groups, 2, -1, *out.shape[1:])
            cond_out, null_out = (out[:, k].reshape(rows, *out.shape[3:]) for k in (0, 1))
            return self.gafrg.activate(null_out + guidance * (cond_out - null_out))
        denoise.reset = memo.clear  # a captured run recomputes the cache from its condition buffer
        return denoise

    @torch.no_grad()
    def sample_windows(self, cond: torch.Tensor, noise: torch.Tensor, shifts=None, guidance: Optional[float] = None,
                       steps: Optional[int] = None, rows_per_call: Optional[int] = None,
                       cache_condition: bool = True) -> torch.Tensor:
        """Denoise windows (R, W, out) from initial noise (R, W, out), scaled by
        ``config.noise_scale``, conditioned on (R, W, cond_dim). ``shifts``: None, one entry
        per row, or G entries (G dividing R) each shared by R / G consecutive rows (listener-major).

        ``rows_per_call`` caps the rows of one denoiser call (the guided copy counted), in whole
        listener groups; the chunks are sampled one after another with the same result. Default:
        every row at once on a GPU; 64 on CPU, where a batch larger than the caches runs slower
        than a few cache-sized ones (16 listeners x 10 samples at d 512, one DDIM step: 8.4 s in one
        call, 6.2 s in chunks of 4 listeners).

        ``cache_condition`` (in eval mode): the cross-attention keys and values of the condition's
        frame tokens are computed once per chunk, not at every DDIM step (``GAFRG.condition_cache``);
        the result equals the uncached one up to rounding."""
        if cond.shape[0] != noise.shape[0]:
            raise ValueError(f"cond and noise must have the same rows, got {cond.shape[0]} and {noise.shape[0]}")
        R = noise.shape[0]
        halves = 1 if guidance is None else 2
        G = R if shifts is None else _shift_entries(shifts)
        if R % G:
            raise ValueError(f"{R} rows cannot share {G} listeners' shifts (one entry per row, or per group of "
                             "consecutive rows)")
        if rows_per_call is None:
            rows_per_call = 64 if cond.device.type == "cpu" else R * halves
        if rows_per_call < 1:
            raise ValueError(f"rows_per_call must be >= 1, got {rows_per_call}")
        group = R // G
        per_call = max(1, rows_per_call // (halves * group)) * group
        if self.config.noise_scale != 1.0:
            noise = noise * self.config.noise_scale
        steps = self.config.sample_steps if steps is None else steps   # 0 is refused by the sampler
        outs = []
        for lo in range(0, R, per_call):
            hi = min(R, lo + per_call)
            sh = None if shifts is None else _rows_of(shifts, lo // group, hi // group)
            shape = (hi - lo,) + tuple(noise.shape[1:])

            def denoiser_for(shift_rows):
                return autocast_denoiser(self._denoiser(shift_rows, guidance, cache_condition),
                                         self.config.sample_autocast, cond.device)

            if self._graph_sampling(cond.device):
                key = (shape, tuple(cond.shape[1:]), cond.dtype, guidance, steps, cache_condition,
                       self.config.sample_autocast, self.backend_for("ddim"))
                outs.append(self.sampler_graphs().sample(key, denoiser_for, sh, shape, cond[lo:hi], self.scheduler,
                                                         steps, noise[lo:hi], noise.dtype, self.backend_for("ddim"),
                                                         self._capture_fn()))
                continue
            outs.append(sample(denoiser_for(sh), shape, cond[lo:hi], self.scheduler, steps, noise=noise[lo:hi],
                               device=cond.device, dtype=noise.dtype, backend=self.backend_for("ddim")))
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    @torch.no_grad()
    def generate(self, speaker: torch.Tensor, audio: torch.Tensor, num_samples: int = 10,
                 generator: Optional[torch.Generator] = None, listener_history: Optional[torch.Tensor] = None,
                 guidance: Optional[float] = None, steps: Optional[int] = None) -> Dict[str, torch.Tensor]:
        """S reactions per speaker: {output: (B, S, T, out_dim)}; every window of every sample of
        every speaker is denoised in one batch. ``listener_history`` (B, L, 58) personalises each
        speaker's reactions to that listener. Noise is drawn per window as randn(B S, W, out) from
        ``generator``, exactly as a ``ReactionStream`` draws it. ``guidance`` defaults to the
        config's scale (7.5); 0 samples without classifier-free guidance."""
        self.check_inputs(speaker, audio)
        speaker, audio = self.in_model_dtype(speaker, audio)
        check_int("num_samples", num_samples)
        cfg = self.config
        guidance = self._guidance(guidance)
        B, T, _ = speaker.shape
        W, k = cfg.window, cfg.audio_per_frame
        speaker, audio, n = pad_to_windows(speaker, audio, W, k)
        cond = self.condition(speaker, audio).reshape(B, n, W, -1)
        if cfg.condition_window == "previous":
            cond = torch.cat([torch.zeros_like(cond[:, :1]), cond[:, :-1]], 1)      # window i sees speaker i - 1
        noise = self.draw_windows(B, num_samples, n, generator)   # (n, B S, W, out)
        if cfg.window_noise == "shared":
            noise = noise[:1].expand_as(noise)  # drawn per window as a stream draws it; the first one used
        noise = noise.reshape(n, B, num_samples, W, -1).permute(1, 2, 0, 3, 4).to(speaker.device)
        rows_cond = cond[:, None].expand(B, num_samples, n, W, cond.shape[-1]).reshape(B * num_samples * n, W, -1)
        shifts = None
        if listener_history is not None:
            check_tensor("listener_history", listener_history, finite=True)   # shape: the style encoder's
            if listener_history.shape[0] != B:
                raise ValueError(f"listener_history must hold one history per speaker ({B}), got "
                                 f"{listener_history.shape[0]}")
            # One entry per speaker's listener, shared by its S x n rows (listener-major).
            shifts = self.shifts_for(self.in_model_dtype(listener_history.to(speaker.device))[0])
        out = self.sample_windows(rows_cond.contiguous(), noise.reshape(B * num_samples * n, W, -1), shifts,
                                  guidance, steps)
        out = out.reshape(B, num_samples, n * W, -1)[:, :, :T]
        return {cfg.output: out}

    def _guidance(self, guidance: Optional[float]) -> Optional[float]:
        scale = self.config.guidance if guidance is None else check_real("guidance", guidance, minimum=None)
        return scale if scale > 0 else None

    def init_state(self, batch: int, window: Optional[int] = None, device=None,
                   listener_history: Optional[torch.Tensor] = None) -> PerFRDiffState:
        cfg = self.config
        if window is not None and check_int("window", window) != cfg.window:
            raise ValueError(f"PerFRDiff streams in windows of {cfg.window} frames, got {window}")
        check_int("batch", batch)
        device = self.state_device(device)
        shifts = None
        if listener_history is not None:
            check_tensor("listener_history", listener_history, finite=True)   # shape: the style encoder's
            history = listener_history if listener_history.dim() == 3 else listener_history[None]
            if batch % history.shape[0]:
                raise ValueError(f"{batch} rows do not split evenly over {history.shape[0]} listener histories")
            with torch.no_grad():
                shifts = self.shifts_for(history.to(device))
        return PerFRDiffState(torch.zeros(batch, cfg.window, cfg.cond_dim, device=device),
                              torch.zeros(batch, dtype=torch.long, device=device),
                              torch.zeros(batch, cfg.window, cfg.out_dim, device=device), shifts)

    @torch.no_grad()
    def step(self, state: PerFRDiffState, speaker: torch.Tensor, audio: torch.Tensor, noise: torch.Tensor):
        """Listener window i from the speaker's window i - 1 (held in the state), or with
        ``condition_window="current"`` from window i itself; then remember window i."""
        cfg = self.config
        self.check_state(state, PerFRDiffState)
        self.check_step(speaker, audio, noise, (state.frame.shape[0], cfg.window, cfg.out_dim), cfg.window)
        cond = self.condition(speaker, audio)
        used = state.prev_cond if self.config.condition_window == "previous" else cond
        noise = noise.to(used.device)
        if self.config.window_noise == "shared":
            # A stream's first window keeps its draw; later windows reuse it (rows may differ in age).
            noise = torch.where((state.frame > 0)[:, None, None], state.noise.to(noise.dtype), noise)
        out = self.sample_windows(used, noise, state.shifts, self._guidance(None))
        new = PerFRDiffState(cond, state.frame + speaker.shape[1], noise, state.shifts)
        return {self.config.output: out}, new
