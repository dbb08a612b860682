"""Byte-compile the installed modules that a command imports, and only those.

The Makefile installs torch and the other dependencies with pip's ``--no-compile``: pip would
otherwise byte-compile every file of torch and its dependencies (thousands of modules, most of
which reactfast never imports), about 25 s of a fresh clone's set-up on 2 cores. This script
imports the given modules (with ``--walk``, a package and every submodule of it) with bytecode
writing on, so that each module's cached bytecode is written as it is first compiled; a module of
the environment's site-packages loaded before that still gets its file. Python writes these files
itself on first import, but not where PYTHONDONTWRITEBYTECODE is set: there every process would
compile its imports again.

    python tools/precompile.py --walk reactfast --skip reactfast.bench matplotlib.pyplot tqdm.auto
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import pkgutil
import py_compile
import sys
import sysconfig
import time
from typing import Iterable, List


def import_all(names: Iterable[str], walk: Iterable[str] = (), skip: Iterable[str] = ()) -> List[str]:
    """Import each name, and each package of ``walk`` with every submodule except those under
    ``skip`` (dotted prefixes); returns what failed to import."""
    failed = []
    walk, skip = set(walk), tuple(skip)
    for name in [*walk, *names]:
        try:
            module = importlib.import_module(name)
        except Exception:  # an optional dependency missing: nothing to compile for it
            failed.append(name)
            continue
        if name not in walk:
            continue
        for info in pkgutil.walk_packages(getattr(module, "__path__", []), prefix=name + ".", onerror=failed.append):
            if any(info.name == p or info.name.startswith(p + ".") for p in skip):
                continue
            try:
                importlib.import_module(info.name)
            except Exception:
                failed.append(info.name)
    return failed


def compile_loaded(roots: Iterable[str]) -> int:
    """Write the missing bytecode of every loaded module under ``roots``; returns how many were written."""
    roots = tuple(os.path.realpath(r) + os.sep for r in roots)
    written = 0
    for module in list(sys.modules.values()):
        source = getattr(module, "__file__", None)
        if not source or not source.endswith(".py") or not os.path.realpath(source).startswith(roots):
            continue
        cached = importlib.util.cache_from_source(source)
        if os.path.exists(cached):
            continue
        try:
            py_compile.compile(source, cfile=cached, doraise=True)
            written += 1
        except (py_compile.PyCompileError, OSError) as exc:
            print(f"precompile: {source}: {exc}", file=sys.stderr)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help="modules to import")
    parser.add_argument("--walk", action="append", default=[], metavar="PACKAGE",
                        help="a package to import with every submodule (repeatable)")
    parser.add_argument("--skip", action="append", default=[], metavar="MODULE",
                        help="a subpackage or module not to import in a walk (repeatable)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    # Imports write their bytecode as they compile (one compilation a module); compile_loaded then
    # covers any module loaded before this line.
    sys.dont_write_bytecode = False
    before = set(sys.modules)
    failed = sorted(set(import_all(args.modules, args.walk, args.skip)))
    paths = sysconfig.get_paths()
    written = compile_loaded({paths["purelib"], paths["platlib"]})
    print(f"precompile: {len(set(sys.modules) - before)} modules imported, {written} compiled after import, in "
          f"{time.perf_counter() - start:.1f} s" + (f"; {len(failed)} failed to import (an optional dependency "
                                                     f"missing, as a rule): {', '.join(failed)}" if failed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
