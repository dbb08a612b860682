"""Small data and model shared by the training tests and the DDP script."""

from reactfast.data import SyntheticDyads
from reactfast.models import ReactFace, ReactFaceConfig


def tiny_data(split="train", sessions=4, frames=96):
    return SyntheticDyads(sessions=sessions, frames=frames, audio_dim=8, prototypes=2, split=split, seed=0)


def tiny_model(dropout=0.0, seed=0):
    import torch

    torch.manual_seed(seed)
    return ReactFace(ReactFaceConfig(speaker_dim=83, speaker_inputs="emotion+3dmm", audio_dim=8, dim=16, heads=2,
                                     cie_heads=2, cie_ffn=32, cie_layers=1, decoder_layers=1, window_train=16,
                                     window=8, context=32, past=16, dropout=dropout, train_samples=2))
