"""Modules over reactfast ops."""

from reactfast.nn.attention import BiasedCrossAttention, KVCache

__all__ = ["BiasedCrossAttention", "KVCache"]
