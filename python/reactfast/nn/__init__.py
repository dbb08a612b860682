"""Modules over reactfast ops."""

from reactfast.diffusion import DDIMScheduler
from reactfast.nn.attention import BiasedCrossAttention, KVCache
from reactfast.nn.global_batch import gather_rows, global_batch
from reactfast.nn.personalize import WeightShiftLinear, personalize, personalized_call

__all__ = ["BiasedCrossAttention", "DDIMScheduler", "KVCache", "WeightShiftLinear", "gather_rows", "global_batch",
           "personalize", "personalized_call"]
