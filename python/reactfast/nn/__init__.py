"""Modules over reactfast ops."""

from reactfast.diffusion import DDIMScheduler
from reactfast.nn.attention import BiasedCrossAttention, KVCache

__all__ = ["BiasedCrossAttention", "DDIMScheduler", "KVCache"]
