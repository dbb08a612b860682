"""Public ops: validation, backend dispatch and custom-op registration (one module per op family)."""

from reactfast.ops.frame_diff import frame_diff

__all__ = ["frame_diff"]
