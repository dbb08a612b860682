"""The shared argument checks of the ops: the finiteness check in every float dtype and layout."""

import pytest
import torch

from reactfast.ops._checks import all_finite, check_tensor


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_finite_check_finds_one_bad_value(device, dtype, bad):
    x = torch.rand(5, 97, 25, device=device).to(dtype)
    assert all_finite(x)
    check_tensor("x", x, finite=True)
    for where in ((0, 0, 0), (2, 50, 13), (4, 96, 24)):
        y = x.clone()
        y[where] = bad
        assert not all_finite(y), where
        assert not all_finite(y.transpose(0, 2)), where           # a strided view
        with pytest.raises(ValueError, match="x contains NaN or Inf"):
            check_tensor("x", y, finite=True)


def test_finite_check_on_empty_and_extreme_finite_values(device):
    check_tensor("x", torch.empty(0, 3, device=device), finite=True, nonempty=False)
    big = torch.tensor([torch.finfo(torch.float32).max, -torch.finfo(torch.float32).max], device=device)
    assert all_finite(big)


def test_check_real_names_what_is_no_finite_number():
    """One check for the numbers of configs, the scheduler, the ops and the synthetic data."""
    import numpy as np

    from reactfast.ops._checks import check_real

    assert check_real("w", 0) == 0.0 and check_real("w", np.float32(0.5)) == 0.5
    assert check_real("g", -3.0, minimum=None) == -3.0
    assert check_real("c", None, strict=True, none_ok=True) is None
    for value, kwargs, words in ((float("nan"), {}, "w must be a finite number >= 0, got nan"),
                                 (float("inf"), {"minimum": None}, "w must be a finite number, got inf"),
                                 (-1e-9, {}, "w must be a finite number >= 0"),
                                 (0.0, {"strict": True}, "w must be a finite number > 0, got 0.0"),
                                 (True, {}, "w must be a finite number >= 0, got True"),
                                 ("1e-3", {}, "w must be a finite number >= 0, got '1e-3'"),
                                 (-1.0, {"strict": True, "none_ok": True}, "w must be None or a finite number > 0")):
        with pytest.raises(ValueError, match=words):
            check_real("w", value, **kwargs)
