"""reactfast.metrics.io: JSON of the scores and the printed table."""

import json

import numpy as np
import pytest
import torch


def test_save_json_takes_numpy_and_torch_numbers(tmp_path):
    from reactfast.metrics.io import format_table, save_json

    path = tmp_path / "m.json"
    save_json(str(path), {"a": np.float32(1.5), "b": np.arange(2), "c": torch.tensor(2.5), "d": 3})
    assert json.loads(path.read_text()) == {"a": 1.5, "b": [0, 1], "c": 2.5, "d": 3}   # TypeError before
    with pytest.raises(TypeError, match="object is not JSON serializable|Object of type object"):
        save_json(str(path), {"a": object()})
    with pytest.raises(ValueError, match="at least one row"):
        format_table({})
