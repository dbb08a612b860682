"""The published generators: ReactFace and PerFRDiff (ReactDiff and PFLPosNet to come)."""

from reactfast.models.perfrdiff import PerFRDiff, PerFRDiffConfig
from reactfast.models.reactface import ReactFace, ReactFaceConfig, ReactFaceState, reactface_loss

__all__ = ["PerFRDiff", "PerFRDiffConfig", "ReactFace", "ReactFaceConfig", "ReactFaceState", "reactface_loss"]
