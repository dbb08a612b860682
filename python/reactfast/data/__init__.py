"""Data: the REACT 2024 layout reader, synthetic dyadic data, windows and audio features."""

from reactfast.data import layout
from reactfast.data.layout import check_emotion
from reactfast.data.files import DataError
from reactfast.data.react import InMemoryReactDataset, ReactDataset, window_starts
from reactfast.data.synthetic import SyntheticConfig, SyntheticDyads

__all__ = ["layout", "check_emotion", "DataError", "ReactDataset", "InMemoryReactDataset", "window_starts",
           "SyntheticConfig", "SyntheticDyads"]
