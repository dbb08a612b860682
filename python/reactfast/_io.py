"""Writing output files so that no finished work is lost: check before long work that an output
can be written, and write every file atomically (to a temporary beside it, then renamed into
place), so an interrupted write never leaves a truncated file under the final name."""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Callable, Iterator, Optional


def check_writable_dir(path: str, what: str) -> str:
    """Create ``path`` if needed and make sure files can be written in it; an error naming ``what``."""
    path = os.path.abspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(f"{what}: {path} exists and is not a folder")
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise PermissionError(f"{what}: cannot write in {path} ({exc.strerror or exc})") from None
    return path


def check_writable_file(path: str, what: str, suffix: Optional[str] = None) -> str:
    """Make sure ``path`` can be written (its folder exists or can be made and is writable, and the
    path is not a folder; with ``suffix``, its name ends in it: the readers of such files go by the
    suffix); an error naming ``what``."""
    if suffix is not None and not path.lower().endswith(suffix):
        raise ValueError(f"{what}: {path} must end in {suffix} (the file is written as {suffix[1:]})")
    path = os.path.abspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{what}: {path} is a folder, expected a file path")
    check_writable_dir(os.path.dirname(path), what)
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise PermissionError(f"{what}: {path} exists and is not writable")
    return path


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename (the
    file mode follows the umask, as a plain write would), on failure it is removed."""
    path = os.path.abspath(path)
    folder, name = os.path.split(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def atomic_write(path: str, write: Callable[[str], None]) -> str:
    """``write(tmp_path)`` then rename the result to ``path``; returns ``path``."""
    with atomic_path(path) as tmp:
        write(tmp)
    return path


def umask() -> int:
    """The process's umask (read without changing it where /proc allows)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_npz(path: str, **arrays) -> str:
    """``numpy.savez`` written atomically (``path`` keeps its name, ``.npz`` or not)."""
    import numpy as np

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    return atomic_write(path, write)
