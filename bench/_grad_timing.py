"""Timing of forward + backward calls for the op benchmarks."""

import torch


def grad_calls(fn, leaves, grad, calls: int):
    """A callable that runs ``calls`` forward + backward passes: ``fn(i)`` for call i (its dropout
    seed, where it takes one), then the gradients of ``leaves`` for output gradient ``grad``."""
    def run():
        for i in range(calls):
            torch.autograd.grad(fn(i), leaves, grad)
    return run
