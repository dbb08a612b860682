"""ReactDiff (authors' code Hunan-Tiger/ReactDiff; SPEC 4.3): latent DDIM over a multi-modal
transformer autoencoder.

- MMT autoencoder (stage 1): attention blocks (linear q/k/v -> attn_dim, multi-head attention,
  LayerNorm(out + q)). Video: self-attention on AU features, then 2 x [cross-attention to FER,
  cross-attention to VA]; audio: queries from one audio stream (wav2vec in the paper), keys and
  values from another (MFCC); 2 x video -> audio cross-attention; then attn_dim -> 2 attn_dim ->
  latent (LN, SiLU) and an MLP latent -> 2 latent -> latent: z (T, 128). Decoder: a transformer
  (d 128, 4 heads, FFN 256) with heads to 58 (3DMM) and 25 (emotion, through the range heads of
  ``reactfast.models.heads``: sigmoid AUs, tanh valence/arousal, softmax expressions, where the
  authors' head is linear). Loss 10 L1(emotion) + 10 MSE(3DMM).
- Latent DDIM (stage 2, autoencoder frozen): windows of 50 frames; the speaker's latent window
  gives z_bc = SiLU(GroupNorm(Linear(50 x 128 -> 1024)(flatten))); a 1-D UNet (channels 256,
  multipliers 1, 2, 4, 8, 2 res-blocks per level, attention at the three finest levels and the
  middle) conditioned by adding [time embedding, z_bc]; 20 steps, cosine, eps prediction, L1
  loss; an EMA (0.999) of the denoiser samples.
- Latent scale: the diffusion assumes unit-variance data, but the autoencoder's latents are not
  (std 1.1-5.1 per dim, 3.6 overall, in the demo). With ``normalize_latent`` (default; the
  authors' code diffuses the raw latents) the latents are standardised per dim, by their mean and
  std over every stage-2 batch (the autoencoder is frozen then; buffers saved with the weights),
  both the diffused listener latent and the speaker latent of the condition.
- GroupNorm groups (``norm_groups``, the authors' 32): a group needs several channels, or the
  norm right after the UNet adds the [time, condition] embedding removes it (one channel a group
  subtracts each channel's mean over the window, i.e. the whole embedding), and the condition's
  own GroupNorm leaves one sign per pair of channels. The demo's narrow widths (32 channels,
  cond_dim 64) use 4 groups.

- Conditioning (beyond the authors' code; both off by default): with the authors' eps prediction
  and the pooled condition z_bc alone, the demo's trained denoiser ignored its speaker (the same
  scores with another session's speaker: FRCorr 0.040 vs 0.062, FRDist 296.9 vs 297.1), though
  the autoencoder reconstructs listeners well (round trip FRCorr 7.8, FRDist 97). An eps target
  rewards knowing x0 only by sqrt(ab / (1 - ab)), little at the noisy steps and nothing the
  condition can add at the clean ones. ``prediction="x0"`` (or ``"v"``) trains the denoiser on
  the clean latent, and ``cond_frames`` also feeds it the speaker's normalised latent window frame
  by frame (concatenated to x_t as input channels), so timing is not squeezed through z_bc.
- Sampling (beyond the authors' code; off by default): the authors draw every 50-frame window's
  noise afresh, so one sample may jump between appropriate reactions (listener styles) at every
  window seam, and a 750-frame sample then lies far from each whole appropriate reaction in DTW.
  ``window_noise="shared"`` gives every window of a sample the first window's draw (one mode per
  sample; streams keep it in their state), and ``noise_scale`` scales the initial noise (a
  temperature below 1 trades diversity for closeness to the modes). On the demo data, 1500 steps
  per stage: FRDist 214.7 -> 202.6 (shared) -> 193.5 (shared, scale 0.7), FRDiv 0.185 -> 0.190 ->
  0.133.

Feature widths are free (the paper's AU/VA/FER/wav2vec extractors are unavailable); by default
the AU, VA and expression features are the emotion's columns 0:15, 15:17, 17:25, and both audio
streams are the per-frame audio features (k rows of A). Listener window i is generated from the
speaker's window i (online: as soon as that window has arrived).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from reactfast.data import layout
from reactfast.diffusion import PREDICTIONS, DDIMScheduler, autocast_denoiser, sample
from reactfast.models._inputs import check_speaker_audio, pad_to_windows
from reactfast.models.base import (Generator, GeneratorConfig, TrainStage, as_tuple_of, check_int,
                                   check_sample_autocast, check_unit_interval, check_window_noise, randn,
                                   register)
from reactfast.models.heads import EmotionHead
from reactfast.nn.positional import sinusoid


@dataclass
class ReactDiffConfig(GeneratorConfig):
    audio_dim: int = 39
    audio_per_frame: int = layout.AUDIO_SAMPLES_PER_FRAME
    au_dim: int = 15
    fer_dim: int = 8
    va_dim: int = 2
    attn_dim: int = 1024
    heads: int = 4
    latent: int = 128
    dec_heads: int = 4
    dec_ffn: int = 256
    dec_layers: int = 2
    window: int = 50
    train_steps: int = 20
    clip: Optional[float] = 1.0
    channels: int = 256
    mults: Tuple[int, ...] = (1, 2, 4, 8)
    res_blocks: int = 2
    attn_levels: int = 3
    cond_dim: int = 1024
    ema: float = 0.999
    norm_groups: int = 32
    normalize_latent: bool = True
    cond_frames: bool = False
    prediction: str = "eps"
    window_noise: str = "independent"
    noise_scale: float = 1.0
    # The denoiser's precision when sampling (diffusion.SAMPLE_AUTOCAST). Off by default: with eps
    # prediction a bf16 denoiser's rounding is amplified by 1 / sqrt(alpha_bar) at the noisy steps
    # (the test model's samples moved 0.43 relative to float64, float32's 1.6e-3).
    sample_autocast: str = "off"
    # Sampling on CUDA graphs: each shape's loop captured once per model and replayed
    # (diffusion.SamplerGraphs); CUDA devices only, the eager loop elsewhere.
    sample_cuda_graph: bool = False
    emotion_weight: float = 10.0
    tdmm_weight: float = 10.0
    lr: float = 1e-4
    weight_decay: float = 0.0

    def __post_init__(self):
        self.mults = as_tuple_of(self, "mults", int)
        self.check_field_types()
        self.check_at_least(1, "audio_dim", "audio_per_frame", "au_dim", "fer_dim", "va_dim", "attn_dim", "heads",
                            "latent", "dec_heads", "dec_ffn", "dec_layers", "window", "train_steps", "channels",
                            "res_blocks", "cond_dim")
        self.check_at_least(0, "attn_levels")
        if self.attn_dim % self.heads or self.latent % self.dec_heads:
            raise ValueError("heads must divide attn_dim and dec_heads must divide latent")
        if self.norm_groups < 1 or self.channels % self.norm_groups or self.cond_dim % self.norm_groups:
            raise ValueError(f"channels and cond_dim must be multiples of norm_groups ({self.norm_groups}, the "
                             f"GroupNorm groups), got channels={self.channels}, cond_dim={self.cond_dim}")
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {self.prediction!r}")
        check_unit_interval(self, ("ema",))
        self.check_weights("emotion_weight", "tdmm_weight")
        check_window_noise(self)
        check_sample_autocast(self)


class _Attention(nn.Module):
    """q/k/v projections -> attn_dim, multi-head attention, LayerNorm(out + q)."""

    def __init__(self, q_in, kv_in, dim, heads):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(q_in, dim), nn.Linear(kv_in, dim), nn.Linear(kv_in, dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x, y):
        q = self.q(x)
        return self.norm(self.attn(q, self.k(y), self.v(y), need_weights=False)[0] + q)


class MMT(nn.Module):
    """The multi-modal transformer autoencoder over per-frame features of one person."""

    def __init__(self, cfg: ReactDiffConfig):
        super().__init__()
        D, H, k_a = cfg.attn_dim, cfg.heads, cfg.audio_per_frame * cfg.audio_dim
        self.cfg = cfg
        self.au_self = _Attention(cfg.au_dim, cfg.au_dim, D, H)
        self.video = nn.ModuleList([m for _ in range(2) for m in (_Attention(D, cfg.fer_dim, D, H),
                                                                  _Attention(D, cfg.va_dim, D, H))])
        self.audio = _Attention(k_a, k_a, D, H)
        self.video_audio = nn.ModuleList([_Attention(D, D, D, H) for _ in range(2)])
        self.to_latent = nn.Sequential(nn.Linear(D, 2 * D), nn.LayerNorm(2 * D), nn.SiLU(),
                                       nn.Linear(2 * D, cfg.latent))
        self.latent_mlp = nn.Sequential(nn.Linear(cfg.latent, 2 * cfg.latent), nn.SiLU(),
                                        nn.Linear(2 * cfg.latent, cfg.latent))
        layer = nn.TransformerEncoderLayer(cfg.latent, cfg.dec_heads, cfg.dec_ffn, 0.1, batch_first=True)
        self.decoder = nn.TransformerEncoder(layer, cfg.dec_layers, enable_nested_tensor=False)
        self.head_3dmm = nn.Linear(cfg.latent, layout.TDMM_DIM)
        self.head_emotion = EmotionHead(cfg.latent)

    def features(self, emotion: torch.Tensor, audio: torch.Tensor):
        """The default per-frame inputs from emotion (B, T, 25) and audio (B, k T, A)."""
        B, T, _ = emotion.shape
        a = audio.reshape(B, T, -1)
        return emotion[..., layout.AU], emotion[..., layout.EXPRESSION], emotion[..., layout.VA], a, a

    def encode(self, au, fer, va, audio_q, audio_kv) -> torch.Tensor:
        h = self.au_self(au, au)
        for i in range(0, len(self.video), 2):
            h = self.video[i + 1](self.video[i](h, fer), va)
        a = self.audio(audio_q, audio_kv)
        for block in self.video_audio:
            h = block(h, a)
        return self.latent_mlp(self.to_latent(h))

    def decode(self, z: torch.Tensor) -> Dict[str, torch.Tensor]:
        h = self.decoder(z + sinusoid(torch.arange(z.shape[1], device=z.device), z.shape[-1], z.dtype)[None])
        return {"3dmm": self.head_3dmm(h), "emotion": self.head_emotion(h)[1]}


class _ResBlock(nn.Module):
    def __init__(self, c_in, c_out, emb, groups=32):
        super().__init__()
        self.n1, self.c1 = nn.GroupNorm(groups, c_in), nn.Conv1d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb, c_out)
        self.n2, self.c2 = nn.GroupNorm(groups, c_out), nn.Conv1d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x, e):
        h = self.c1(F.silu(self.n1(x))) + self.emb(e)[..., None]
        return self.skip(x) + self.c2(F.silu(self.n2(h)))


class _AttnBlock(nn.Module):
    def __init__(self, c, heads=4, groups=32):
        super().__init__()
        self.norm = nn.GroupNorm(groups, c)
        self.attn = nn.MultiheadAttention(c, heads, batch_first=True)

    def forward(self, x):
        h = self.norm(x).transpose(1, 2)
        return x + self.attn(h, h, h, need_weights=False)[0].transpose(1, 2)


class UNet1D(nn.Module):
    """1-D UNet over latent windows (B, latent, W), conditioned by adding [time, z_bc] embeddings."""

    def __init__(self, cfg: ReactDiffConfig):
        super().__init__()
        C, emb, G = cfg.channels, 4 * cfg.channels, cfg.norm_groups
        self.cfg = cfg
        self.time = nn.Sequential(nn.Linear(C, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.cond = nn.Linear(cfg.cond_dim, emb)
        self.inp = nn.Conv1d(cfg.latent * (2 if cfg.cond_frames else 1), C, 3, padding=1)
        widths = [C * m for m in cfg.mults]
        self.down, self.down_attn, self.downsample = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        skips, c = [C], C
        for lvl, w in enumerate(widths):
            for _ in range(cfg.res_blocks):
                self.down.append(_ResBlock(c, w, emb, G))
                self.down_attn.append(_AttnBlock(w, groups=G) if lvl < cfg.attn_levels else nn.Identity())
                c = w
                skips.append(c)
            if lvl < len(widths) - 1:
                self.downsample.append(nn.Conv1d(c, c, 3, stride=2, padding=1))
                skips.append(c)
        self.mid = nn.ModuleList([_ResBlock(c, c, emb, G), _ResBlock(c, c, emb, G)])
        self.mid_attn = _AttnBlock(c, groups=G)
        self.up, self.up_attn, self.upsample = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for lvl, w in reversed(list(enumerate(widths))):
            for _ in range(cfg.res_blocks + 1):
                self.up.append(_ResBlock(c + skips.pop(), w, emb, G))
                self.up_attn.append(_AttnBlock(w, groups=G) if lvl < cfg.attn_levels else nn.Identity())
                c = w
            if lvl > 0:
                self.upsample.append(nn.Conv1d(c, c, 3, padding=1))
        self.out = nn.Sequential(nn.GroupNorm(G, c), nn.SiLU(), nn.Conv1d(c, cfg.latent, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, z_bc: torch.Tensor,
                frames: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x (B, latent, W); ``frames`` (B, latent, W), the speaker's latent window, with
        ``cond_frames``."""
        cfg = self.cfg
        if cfg.cond_frames != (frames is not None):
            raise ValueError("the denoiser takes the speaker's latent frames exactly when cond_frames is set")
        e = self.time(sinusoid(t, cfg.channels, x.dtype)) + self.cond(z_bc)
        h = self.inp(x if frames is None else torch.cat([x, frames], 1))
        hs = [h]
        i = 0
        for lvl in range(len(cfg.mults)):
            for _ in range(cfg.res_blocks):
                h = self.down_attn[i](self.down[i](h, e))
                hs.append(h)
                i += 1
            if lvl < len(cfg.mults) - 1:
                h = self.downsample[lvl](h)
                hs.append(h)
        h = self.mid_attn(self.mid[0](h, e))
        h = self.mid[1](h, e)
        i = u = 0
        for lvl in reversed(range(len(cfg.mults))):
            for _ in range(cfg.res_blocks + 1):
                skip = hs.pop()
                if h.shape[-1] != skip.shape[-1]:
                    h = F.interpolate(h, size=skip.shape[-1], mode="nearest")
                h = self.up_attn[i](self.up[i](torch.cat([h, skip], 1), e))
                i += 1
            if lvl > 0:
                h = self.upsample[u](F.interpolate(h, scale_factor=2, mode="nearest"))
                u += 1
        if h.shape[-1] != x.shape[-1]:
            h = F.interpolate(h, size=x.shape[-1], mode="nearest")
        return self.out(h)


@register
class ReactDiff(Generator):
    """MMT autoencoder (stage 1) + latent DDIM denoiser with EMA (stage 2, the MMT frozen)."""

    name = "reactdiff"
    summary = "ReactDiff: latent DDIM over a multi-modal transformer autoencoder"
    config_class = ReactDiffConfig
    stages = (1, 2)
    stage_names = {1: "the autoencoder", 2: "the latent denoiser with the autoencoder frozen"}

    def __init__(self, config: Optional[ReactDiffConfig] = None, backend: Optional[str] = None, **overrides):
        super().__init__(config, backend, **overrides)
        cfg = self.config
        self.mmt = MMT(cfg)
        self.cond_proj = nn.Linear(cfg.window * cfg.latent, cfg.cond_dim)
        self.cond_norm = nn.GroupNorm(cfg.norm_groups, cfg.cond_dim)
        self.unet = UNet1D(cfg)
        self.scheduler = DDIMScheduler(cfg.train_steps, "cosine", prediction=cfg.prediction, clip=cfg.clip)
        self.ema_unet = copy.deepcopy(self.unet).requires_grad_(False)
        self.ema_cond = copy.deepcopy(nn.ModuleList([self.cond_proj, self.cond_norm])).requires_grad_(False)
        # Per-dim mean and std of the frozen autoencoder's latents, averaged over every stage-2 batch.
        self.register_buffer("latent_mean", torch.zeros(cfg.latent))
        self.register_buffer("latent_sq", torch.ones(cfg.latent))
        self.register_buffer("latent_frames", torch.zeros((), dtype=torch.float64))

    def trainable_modules(self, stage: int) -> List[nn.Module]:
        return [self.mmt] if stage == 1 else [self.unet, self.cond_proj, self.cond_norm]

    def training_windows(self, clip_frames: int) -> Tuple[int, int]:
        return self.config.window, max(1, self.config.window // 2)

    @classmethod
    def demo_config(cls, audio_dim: int) -> ReactDiffConfig:
        return ReactDiffConfig(audio_dim=audio_dim, attn_dim=64, heads=4, latent=32, dec_heads=4, dec_ffn=64,
                               dec_layers=2, channels=32, mults=(1, 2, 2, 2), res_blocks=1, cond_dim=64, ema=0.99,
                               clip=None, norm_groups=4, prediction="x0", cond_frames=True, window_noise="shared",
                               noise_scale=0.7)

    def validates_by_loss(self) -> bool:
        # Stage 1 trains the autoencoder alone: generation then runs an untrained denoiser.
        return self.stage == 1

    def demo_stages(self, steps: int) -> List[TrainStage]:
        # Three times the demo's steps per stage: at 500 steps per stage the demo scored FRDist 237.1
        # (independent noise), at 1500 214.7 (both with the same seed and data).
        return [TrainStage(stage=1, steps=3 * steps, lr=2e-3, batch_size=16),
                TrainStage(stage=2, steps=3 * steps, lr=2e-3, batch_size=16)]

    @torch.no_grad()
    def after_step(self) -> None:
        """EMA update of the denoiser (stage 2), called by the trainer after each optimizer step."""
        if self.stage != 2:
            return
        live = list(self.unet.parameters()) + list(self.cond_proj.parameters()) + list(self.cond_norm.parameters())
        ema = list(self.ema_unet.parameters()) + list(self.ema_cond.parameters())
        for e, p in zip(ema, live):
            e.mul_(self.config.ema).add_(p.detach(), alpha=1 - self.config.ema)

    def output_widths(self) -> Dict[str, int]:
        return {"3dmm": layout.TDMM_DIM, "emotion": layout.EMOTION_DIM}

    def check_inputs(self, speaker: torch.Tensor, audio: torch.Tensor, name: str = "speaker") -> None:
        cfg = self.config
        check_speaker_audio(speaker, audio, layout.EMOTION_DIM, cfg.audio_dim, cfg.audio_per_frame,
                            "speaker emotion frames", name)

    def inputs_from_batch(self, batch):
        return batch["speaker_emotion"], batch["speaker_audio"]

    def encode(self, emotion: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        return self.mmt.encode(*self.mmt.features(emotion, audio))

    @torch.no_grad()
    def _update_latent_stats(self, z: torch.Tensor) -> None:
        flat = z.detach().reshape(-1, z.shape[-1]).double()
        n, seen = flat.shape[0], self.latent_frames
        w = n / (seen + n)
        self.latent_mean.mul_(1 - w).add_((flat.mean(0) * w).to(self.latent_mean.dtype))
        self.latent_sq.mul_(1 - w).add_((flat.pow(2).mean(0) * w).to(self.latent_sq.dtype))
        self.latent_frames.add_(n)

    def latent_scale(self):
        """(mean, std) of the latents, per dim: the identity until stage 2 has seen data, or with
        ``normalize_latent=False``."""
        if not self.config.normalize_latent:
            return None
        std = (self.latent_sq - self.latent_mean ** 2).clamp(min=1e-6).sqrt()
        return self.latent_mean, std

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        scale = self.latent_scale()
        return z if scale is None else (z - scale[0]) / scale[1]

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        scale = self.latent_scale()
        return z if scale is None else z * scale[1] + scale[0]

    def condition(self, speaker_latent: torch.Tensor, ema: bool = False) -> torch.Tensor:
        proj, norm = (self.ema_cond[0], self.ema_cond[1]) if ema else (self.cond_proj, self.cond_norm)
        return F.silu(norm(proj(speaker_latent.flatten(1))))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, z_bc: torch.Tensor, ema: bool = False,
                frames: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The denoiser's prediction (``config.prediction``) for latent windows x_t (B, W, latent);
        ``frames`` (B, W, latent), the speaker's normalised latent window, with ``cond_frames``."""
        net = self.ema_unet if ema else self.unet
        return net(x_t.transpose(1, 2), t, z_bc, None if frames is None else frames.transpose(1, 2)).transpose(1, 2)

    def loss(self, batch, generators: Sequence[torch.Generator], forward=None) -> Dict[str, torch.Tensor]:
        batch, generators = self.loss_inputs(batch, generators)
        cfg = self.config
        if self.stage == 1:
            emotion = torch.cat([batch["speaker_emotion"], batch["listener_emotion"]])
            tdmm = torch.cat([batch["speaker_3dmm"], batch["listener_3dmm"]])
            audio = torch.cat([batch["speaker_audio"], batch["listener_audio"]])
            out = self.mmt.decode(self.encode(emotion, audio))
            l_emo, l_3d = F.l1_loss(out["emotion"], emotion), F.mse_loss(out["3dmm"], tdmm)
            total = cfg.emotion_weight * l_emo + cfg.tdmm_weight * l_3d
            return {"loss": total, "rec": total.detach(), "emotion": l_emo.detach(), "3dmm": l_3d.detach()}
        W = cfg.window
        if batch["speaker_emotion"].shape[1] != W:
            raise ValueError(f"ReactDiff stage 2 trains on windows of {W} frames, got "
                             f"{batch['speaker_emotion'].shape[1]}")
        with torch.no_grad():
            z_s = self.encode(batch["speaker_emotion"], batch["speaker_audio"])
            z_l = self.encode(batch["listener_emotion"], batch["listener_audio"])
            if cfg.normalize_latent and self.training:
                self._update_latent_stats(torch.cat([z_s, z_l]))
            z_s, z_l = self.normalize(z_s), self.normalize(z_l)
        t = torch.stack([torch.randint(0, cfg.train_steps, (), generator=g) for g in generators]).to(z_l.device)
        noise = torch.stack([torch.randn(W, cfg.latent, generator=g) for g in generators]).to(z_l.device)
        x_t = self.scheduler.add_noise(z_l, noise, t)
        frames = z_s if cfg.cond_frames else None
        out = (self if forward is None else forward)(x_t, t, self.condition(z_s), frames=frames)
        l1 = F.l1_loss(out, self._target(z_l, noise, t))
        return {"loss": l1, "rec": l1.detach()}

    def _target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the denoiser is trained to output at x_t = sqrt(ab) x0 + sqrt(1 - ab) noise."""
        pred = self.config.prediction
        if pred == "eps":
            return noise
        if pred == "x0":
            return x0
        ab = self.scheduler.alphas_cumprod.to(x0.device)[t].reshape(-1, 1, 1)
        return (ab.sqrt() * noise.double() - (1 - ab).sqrt() * x0.double()).to(x0.dtype)

    def draw_noise(self, batch: int, generator: Optional[torch.Generator] = None, window: int = 0) -> torch.Tensor:
        return randn(check_int("batch", batch), self.config.window, self.config.latent, generator=generator).to(
            next(self.parameters()).dtype)

    @torch.no_grad()
    def sample_windows(self, speaker_latent: torch.Tensor, noise: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Listener windows for speaker latent windows (R, W, latent) from initial noise (R, W,
        latent), scaled by ``config.noise_scale``."""
        cfg = self.config
        z_s = self.normalize(speaker_latent)
        z_bc = self.condition(z_s, ema=True)
        if cfg.cond_frames:
            # One condition tensor for the sampler: [z_bc, the speaker's frames], split per call.
            cond = torch.cat([z_bc, z_s.flatten(1)], 1)

            def denoiser(x, t, c):
                return self(x, t, c[:, :cfg.cond_dim], ema=True, frames=c[:, cfg.cond_dim:].view(x.shape))
        else:
            cond = z_bc

            def denoiser(x, t, c):
                return self(x, t, c, ema=True)
        if cfg.noise_scale != 1.0:
            noise = noise * cfg.noise_scale
        backend = self.backend_for("ddim")
        if self._graph_sampling(noise.device):
            key = (tuple(noise.shape), tuple(cond.shape), cond.dtype, noise.dtype, cfg.sample_autocast,
                   cfg.cond_frames, backend)
            z = self.sampler_graphs().sample(key, lambda _: autocast_denoiser(denoiser, cfg.sample_autocast,
                                                                              noise.device),
                                             None, tuple(noise.shape), cond, self.scheduler, cfg.train_steps, noise,
                                             noise.dtype, backend, self._capture_fn())
        else:
            z = sample(autocast_denoiser(denoiser, cfg.sample_autocast, noise.device), tuple(noise.shape), cond,
                       self.scheduler, cfg.train_steps, noise=noise, device=noise.device, dtype=noise.dtype,
                       backend=backend)
        return self.mmt.decode(self.denormalize(z))

    @torch.no_grad()
    def generate(self, speaker: torch.Tensor, audio: torch.Tensor, num_samples: int = 10,
                 generator: Optional[torch.Generator] = None) -> Dict[str, torch.Tensor]:
        """{"3dmm": (B, S, T, 58), "emotion": (B, S, T, 25)}; all windows of all samples at once.
        Noise per window as randn(B S, W, latent), as a ``ReactionStream`` draws it."""
        self.check_inputs(speaker, audio)
        speaker, audio = self.in_model_dtype(speaker, audio)
        check_int("num_samples", num_samples)
        cfg = self.config
        B, T, _ = speaker.shape
        W, k = cfg.window, cfg.audio_per_frame
        speaker, audio, n = pad_to_windows(speaker, audio, W, k)
        z_s = self.encode(speaker.reshape(B * n, W, -1), audio.reshape(B * n, k * W, -1)).reshape(B, n, W, -1)
        noise = self.draw_windows(B, num_samples, n, generator)
        if cfg.window_noise == "shared":
            noise = noise[:1].expand_as(noise)  # drawn per window as a stream draws it; the first one used
        noise = noise.reshape(n, B, num_samples, W, -1).permute(1, 2, 0, 3, 4).reshape(-1, W, cfg.latent)
        rows = z_s[:, None].expand(B, num_samples, n, W, cfg.latent).reshape(-1, W, cfg.latent)
        out = self.sample_windows(rows, noise.to(speaker.device))
        return {key: v.reshape(B, num_samples, n * W, -1)[:, :, :T] for key, v in out.items()}

    def init_state(self, batch: int, window: Optional[int] = None, device=None) -> "ReactDiffState":
        if window is not None and check_int("window", window) != self.config.window:
            raise ValueError(f"ReactDiff streams in windows of {self.config.window} frames, got {window}")
        check_int("batch", batch)
        device = self.state_device(device)
        cfg = self.config
        return ReactDiffState(torch.zeros(batch, dtype=torch.long, device=device),
                              torch.zeros(batch, cfg.window, cfg.latent, device=device))

    @torch.no_grad()
    def step(self, state: "ReactDiffState", speaker: torch.Tensor, audio: torch.Tensor, noise: torch.Tensor):
        cfg = self.config
        self.check_state(state, ReactDiffState)
        self.check_step(speaker, audio, noise, (state.frame.shape[0], cfg.window, cfg.latent), cfg.window)
        noise = noise.to(speaker.device)
        if self.config.window_noise == "shared":
            # A stream's first window keeps its draw; later windows reuse it (rows may differ in age).
            started = (state.frame > 0)[:, None, None]
            noise = torch.where(started, state.noise.to(noise.dtype), noise)
        out = self.sample_windows(self.encode(speaker, audio), noise)
        return out, ReactDiffState(state.frame + speaker.shape[1], noise)


@dataclass
class ReactDiffState:
    """Frames generated so far per stream, and the noise of each stream's first window (used by
    ``window_noise="shared"``)."""
    frame: torch.Tensor
    noise: torch.Tensor

    @staticmethod
    def cat(states: Sequence["ReactDiffState"]) -> "ReactDiffState":
        return ReactDiffState(torch.cat([s.frame for s in states]), torch.cat([s.noise for s in states]))

    def split(self, sizes: Sequence[int]) -> List["ReactDiffState"]:
        return [ReactDiffState(f, z) for f, z in zip(torch.split(self.frame, list(sizes)),
                                                     torch.split(self.noise, list(sizes)))]
