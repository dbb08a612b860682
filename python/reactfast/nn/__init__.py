"""Modules over reactfast ops."""

from reactfast.diffusion import DDIMScheduler
from reactfast.nn.attention import BiasedCrossAttention, KVCache
from reactfast.nn.personalize import WeightShiftLinear, personalize, personalized_call

__all__ = ["BiasedCrossAttention", "DDIMScheduler", "KVCache", "WeightShiftLinear", "personalize",
           "personalized_call"]
