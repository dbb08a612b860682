"""The published generators: ReactFace, PerFRDiff, ReactDiff, and PosNet (PFLPosNet's post-processor)."""

from reactfast.models.perfrdiff import PerFRDiff, PerFRDiffConfig
from reactfast.models.posnet import PosNet, PosNetConfig, PosNetStream
from reactfast.models.reactdiff import ReactDiff, ReactDiffConfig
from reactfast.models.reactface import ReactFace, ReactFaceConfig, ReactFaceState, reactface_loss

__all__ = ["PerFRDiff", "PerFRDiffConfig", "PosNet", "PosNetConfig", "PosNetStream", "ReactDiff", "ReactDiffConfig",
           "ReactFace", "ReactFaceConfig", "ReactFaceState", "reactface_loss"]
