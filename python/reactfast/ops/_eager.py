"""Eager calls of the package's custom ops without the custom-op dispatch.

``torch.library.custom_op`` is what torch.compile needs (an opaque op with a fake implementation
and registered autograd), but called eagerly its Python dispatch (default filling, redispatch, its
autograd wrapper) costs tens of microseconds a call on a CPU, more than a small kernel takes on a
GPU. The ops' public functions call the custom op while torch.compile traces and, otherwise, the
same implementation and the same registered backward through a plain autograd.Function."""

from typing import Callable

import torch


def eager_autograd(impl: Callable, setup_context: Callable, backward: Callable) -> Callable:
    """``apply(*inputs)``: ``impl(*inputs)`` with ``setup_context(ctx, inputs, output)`` and
    ``backward(ctx, *grads)`` as a custom op's ``register_autograd`` takes them."""

    class EagerOp(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *inputs):
            # Outputs no gradient reaches (the attention's log-sum-exp) pass None, not zeros made
            # for nothing: the registered backwards ignore those.
            ctx.set_materialize_grads(False)
            output = impl(*inputs)
            setup_context(ctx, inputs, output)
            return output

        @staticmethod
        def backward(ctx, *grads):
            return backward(ctx, *grads)

    EagerOp.__name__ = EagerOp.__qualname__ = f"Eager_{impl.__name__}"
    return EagerOp.apply


def pick(custom_op, eager):
    """The custom op while torch.compile traces, ``eager`` otherwise."""
    return custom_op if torch.compiler.is_compiling() else eager
