"""Triton kernels of reactfast (imported lazily by reactfast.ops).

Set ``TRITON_INTERPRET=1`` before importing this package to run the kernels on CPU tensors.
"""
