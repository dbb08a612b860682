"""Each public module says what it exports (``__all__``), every name there exists, and a star import
brings no imported helper (typing names, numpy, torch) into the caller's namespace."""

import importlib
import types

import pytest

MODULES = ["reactfast.data", "reactfast.diffusion", "reactfast.metrics", "reactfast.metrics.candidates",
           "reactfast.metrics.io", "reactfast.models", "reactfast.nn", "reactfast.online", "reactfast.ops",
           "reactfast.train"]


@pytest.mark.parametrize("name", MODULES)
def test_exports_are_declared_and_exist(name):
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    assert len(set(exported)) == len(exported), f"{name}.__all__ names something twice"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names {missing}, which it does not define"
    namespace = {}
    exec(f"from {name} import *", namespace)
    leaked = [n for n in ("annotations", "Dict", "List", "Optional", "Sequence", "np", "torch", "nn", "math")
              if n in namespace]
    assert not leaked, f"from {name} import * brings in {leaked}"
    modules = [n for n in exported if isinstance(getattr(module, n), types.ModuleType)]
    assert modules in ([], ["layout"]), f"{name}.__all__ exports modules {modules}"
