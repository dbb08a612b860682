"""Public ops: validation, backend dispatch and custom-op registration, one module per op family.

Each op has a pure-PyTorch reference of the same stem in ``reactfast.reference``, Triton kernels
in ``reactfast.kernels`` and/or native kernels in ``reactfast._C`` (see ARCHITECTURE.md).
"""

from reactfast.ops.add_layer_norm import add_layer_norm
from reactfast.ops.biased_attention import biased_attention
from reactfast.ops.ccc import ccc, ccc_max
from reactfast.ops.ddim import ddim_step
from reactfast.ops.dropout import dropout
from reactfast.ops.dtw import REACT_GROUPS, dtw, weighted_dtw_min
from reactfast.ops.emotion_range import emotion_range_counts
from reactfast.ops.feed_forward import feed_forward
from reactfast.ops.frame_diff import frame_diff
from reactfast.ops.gelu_dropout import gelu_dropout
from reactfast.ops.spread import spread_sums
from reactfast.ops.tlcc import tlcc
from reactfast.ops.weight_shift import weight_shift_linear

__all__ = ["REACT_GROUPS", "add_layer_norm", "biased_attention", "ccc", "ccc_max", "ddim_step", "dropout", "dtw",
           "emotion_range_counts", "feed_forward", "frame_diff", "gelu_dropout", "spread_sums", "tlcc",
           "weighted_dtw_min", "weight_shift_linear"]
