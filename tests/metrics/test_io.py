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


def test_load_array_reads_a_saved_model_output_and_refuses_complex(tmp_path):
    """A tensor saved with requires_grad (a model's output as it came) failed in numpy(); a complex
    one lost its imaginary part without an error."""
    from reactfast.metrics.io import load_array

    out = torch.rand(2, 3, 4, 25, requires_grad=True) * 2
    torch.save(out, tmp_path / "g.pt")
    torch.save({"pred": out}, tmp_path / "d.pt")
    for name in ("g.pt", "d.pt"):
        got = load_array(str(tmp_path / name), name="pred")
        assert got.dtype == np.float32 and np.array_equal(got, out.detach().numpy())
    torch.save(torch.rand(2, 3, dtype=torch.complex64), tmp_path / "c.pt")
    with pytest.raises(ValueError, match=r"pred: .*c\.pt holds torch.complex64 values, expected real numbers"):
        load_array(str(tmp_path / "c.pt"), name="pred")
