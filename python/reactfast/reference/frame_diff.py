import torch


def frame_diff(x: torch.Tensor) -> torch.Tensor:
    """First temporal difference of a (B, T, D) sequence: out[:, t] = x[:, t + 1] - x[:, t]."""
    return x[:, 1:] - x[:, :-1]
