"""The published generators (ReactFace today; PerFRDiff, ReactDiff and PFLPosNet to come)."""

from reactfast.models.reactface import ReactFace, ReactFaceConfig, ReactFaceState, reactface_loss

__all__ = ["ReactFace", "ReactFaceConfig", "ReactFaceState", "reactface_loss"]
