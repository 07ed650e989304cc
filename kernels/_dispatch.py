"""Backend choice for the fused kernels: CUDA tensors -> Triton, CPU tensors -> the torch reference.

Force one with the `backend=` argument ("triton" | "torch") or the environment variable
`DMCMC_KERNELS=triton|torch|auto`. On CPU, "triton" works only under `TRITON_INTERPRET=1`.
"""
from __future__ import annotations

import os

BACKENDS = ("auto", "triton", "torch")


def choose_backend(x, backend: str | None = None) -> str:
    b = backend or os.environ.get("DMCMC_KERNELS", "auto")
    if b not in BACKENDS:
        raise ValueError(f"kernel backend must be one of {BACKENDS} (argument backend= or env DMCMC_KERNELS), got {b!r}")
    if b == "auto":
        return "triton" if x.is_cuda and triton_available() else "torch"
    if b == "triton" and not x.is_cuda and os.environ.get("TRITON_INTERPRET", "0") != "1":
        raise RuntimeError("backend='triton' on CPU tensors needs TRITON_INTERPRET=1")
    return b


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
        return True
    except ImportError:
        return False
