"""``python -m reactfast.env_report``: versions, compiled backends, devices, interpreter mode."""

from __future__ import annotations

import importlib
import os
import platform
import sys


def _version(name: str) -> str:
    try:
        return getattr(importlib.import_module(name), "__version__", "installed")
    except Exception as exc:  # report, never fail
        return f"not available ({type(exc).__name__}: {exc})"


def report() -> str:
    import torch

    import reactfast
    from reactfast import _backend

    lines = [
        f"reactfast        {reactfast.__version__}",
        f"python           {sys.version.split()[0]} ({platform.platform()})",
        f"torch            {torch.__version__} (built with CUDA {torch.version.cuda})",
        f"numpy            {_version('numpy')}",
        f"triton           {_version('triton')}",
        f"safetensors      {_version('safetensors')}",
    ]
    ok, reason = _backend.cpp_status()
    if ok:
        native = _backend.native()
        lines.append(f"reactfast._C     built (OpenMP: {native.compiled_with_openmp}, "
                     f"threads: {native.openmp_max_threads()}, CPU lane kernels: {native.cpu_isa()}, "
                     f"weight shift: {native.weight_shift_cpu_build()}, "
                     f"CUDA kernels: {native.compiled_with_cuda})")
    else:
        lines.append(f"reactfast._C     unavailable: {reason}")
    lines.append("torch devices    cpu" + (f", {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
                                             if torch.cuda.is_available() else " (torch sees no CUDA device)"))
    lines.append(f"TRITON_INTERPRET {os.environ.get('TRITON_INTERPRET', '(unset)')}")
    lines.append(f"REACTFAST_BACKEND {os.environ.get('REACTFAST_BACKEND', '(unset: automatic)')}")
    lines.append("backends:")
    for key, (usable, why) in _backend.summary().items():
        lines.append(f"  {key:<18} {'yes' if usable else 'no '}  {'' if usable else why}".rstrip())
    return "\n".join(lines)


def main() -> None:
    print(report())


if __name__ == "__main__":
    main()
