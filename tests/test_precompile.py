"""tools/precompile.py: the set-up's byte-compilation of the imported modules only."""

import importlib.util
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def precompile():
    spec = importlib.util.spec_from_file_location("precompile", os.path.join(ROOT, "tools", "precompile.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A package on sys.path: pkg/{__init__, used, sub/{__init__, deep}, broken}.py and a module
    outside it, none imported before the test; bytecode writing off as under PYTHONDONTWRITEBYTECODE."""
    pkg = tmp_path / "rf_precompile_pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "used.py").write_text("VALUE = 1\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "deep.py").write_text("VALUE = 2\n")
    (pkg / "broken.py").write_text("import rf_precompile_missing_dependency\n")
    (tmp_path / "rf_precompile_alone.py").write_text("VALUE = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    yield tmp_path
    for name in [n for n in sys.modules if n.startswith("rf_precompile")]:
        del sys.modules[name]


def _cached(path):
    return os.path.exists(importlib.util.cache_from_source(str(path)))


def test_walk_compiles_every_imported_submodule_and_names_what_failed(precompile, site):
    failed = precompile.import_all([], walk=["rf_precompile_pkg"])
    assert failed == ["rf_precompile_pkg.broken"]
    pkg = site / "rf_precompile_pkg"
    assert not _cached(pkg / "used.py")               # imported, bytecode not written by the import
    assert precompile.compile_loaded([str(site)]) == 4
    for path in (pkg / "__init__.py", pkg / "used.py", pkg / "sub" / "__init__.py", pkg / "sub" / "deep.py"):
        assert _cached(path), path
    assert not _cached(site / "rf_precompile_alone.py")  # never imported
    assert precompile.compile_loaded([str(site)]) == 0  # nothing left to write


def test_skipped_modules_are_not_imported(precompile, site):
    assert precompile.import_all([], walk=["rf_precompile_pkg"], skip=["rf_precompile_pkg.broken",
                                                                       "rf_precompile_pkg.sub"]) == []
    assert "rf_precompile_pkg.used" in sys.modules and "rf_precompile_pkg.sub.deep" not in sys.modules


def test_plain_names_are_not_walked_and_other_roots_are_left_alone(precompile, site, tmp_path_factory):
    assert precompile.import_all(["rf_precompile_alone", "rf_precompile_pkg"]) == []
    assert "rf_precompile_pkg.used" not in sys.modules
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    assert precompile.compile_loaded([str(elsewhere)]) == 0
    assert precompile.compile_loaded([str(site)]) == 2
    assert _cached(site / "rf_precompile_alone.py") and _cached(site / "rf_precompile_pkg" / "__init__.py")
    assert not _cached(site / "rf_precompile_pkg" / "used.py")
    assert precompile.import_all(["rf_precompile_absent"]) == ["rf_precompile_absent"]


def test_main_writes_bytecode_as_modules_are_imported(precompile, site, monkeypatch, capsys):
    monkeypatch.setattr(precompile.sysconfig, "get_paths", lambda: {"purelib": str(site), "platlib": str(site)})
    assert precompile.main(["--walk", "rf_precompile_pkg", "rf_precompile_alone"]) == 0
    out = capsys.readouterr().out
    assert "0 compiled after import" in out, out        # the imports wrote them
    assert "1 failed to import" in out and "rf_precompile_pkg.broken" in out, out
    pkg = site / "rf_precompile_pkg"
    for path in (pkg / "used.py", pkg / "sub" / "deep.py", site / "rf_precompile_alone.py"):
        assert _cached(path), path
