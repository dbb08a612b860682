"""reactfast: fast kernels, generators, metrics and an online runtime for multiple
appropriate facial reaction generation (the REACT challenge task)."""

__version__ = "0.1.0"

from reactfast import _backend  # noqa: F401  (backend discovery is cheap and import-safe)

__all__ = ["__version__"]
