"""The published generators on one interface (``reactfast.models.base.Generator``), found by name
through the registry: ReactFace, PerFRDiff, ReactDiff and PFLPosNet (ReactFace + PosNet); PosNet
also wraps any stream (``PosNetStream``)."""

from reactfast.models.base import (DEFAULT, Generator, GeneratorConfig, TrainStage, build, config_of, get,
                                   make_config, model_name, names, register)
from reactfast.models.perfrdiff import PerFRDiff, PerFRDiffConfig
from reactfast.models.pflposnet import PFLPosNet, PFLPosNetConfig
from reactfast.models.posnet import PosNet, PosNetConfig, PosNetStream
from reactfast.models.reactdiff import ReactDiff, ReactDiffConfig
from reactfast.models.reactface import ReactFace, ReactFaceConfig, ReactFaceState, reactface_loss

__all__ = ["DEFAULT", "Generator", "GeneratorConfig", "PFLPosNet", "PFLPosNetConfig", "PerFRDiff", "PerFRDiffConfig",
           "PosNet", "PosNetConfig", "PosNetStream", "ReactDiff", "ReactDiffConfig", "ReactFace", "ReactFaceConfig",
           "ReactFaceState", "TrainStage", "build", "config_of", "get", "make_config", "model_name", "names",
           "reactface_loss", "register"]
