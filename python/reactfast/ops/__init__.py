"""Public ops: validation, backend dispatch and custom-op registration (one module per op family)."""

from reactfast.ops.biased_attention import biased_attention
from reactfast.ops.frame_diff import frame_diff

__all__ = ["biased_attention", "frame_diff"]
