"""reactfast.nn.global_batch in one process: nothing is gathered, nothing waits (the gathering
itself is checked by tests/train/test_trainer.py::test_ddp_two_processes_match_single[perfrdiff])."""

import pytest
import torch

from reactfast.nn import gather_rows, global_batch


def test_one_process_gathers_nothing():
    x = torch.randn(3, 4, requires_grad=True)
    assert gather_rows(x) is x
    with global_batch():
        assert gather_rows(x) is x          # no process group: this process's rows are the batch
        with global_batch():
            pass
        assert gather_rows(x) is x
    with pytest.raises(TypeError, match="x must be a torch.Tensor, got list"):
        gather_rows([1, 2])
