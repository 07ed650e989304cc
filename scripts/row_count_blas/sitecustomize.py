"""A BLAS whose rounding depends on the row count, as MKL's AVX-512 path does on some CPUs (DESIGN.md): with
DMCMC_ROW_COUNT_BLAS=1 and this folder on PYTHONPATH, every `Tensor @` of a 2-D left operand, in every Python
process (torchrun ranks and subprocesses included), is scaled by 1 + eps * (rows mod 7), eps its dtype's. A test
that compares bit for bit across batch sizes through a GEMM fails under it; the suite's do not:

    DMCMC_ROW_COUNT_BLAS=1 PYTHONPATH=scripts/row_count_blas .venv/bin/python -m pytest -q tests/test_dlg_doors.py
"""
import os

if os.environ.get("DMCMC_ROW_COUNT_BLAS") == "1":
    import torch

    _matmul = torch.Tensor.__matmul__

    def _row_count_matmul(a, b):
        out = _matmul(a, b)
        if a.ndim == 2 and out.is_floating_point():
            return out * (1 + torch.finfo(out.dtype).eps * (a.shape[0] % 7))
        return out

    torch.Tensor.__matmul__ = _row_count_matmul
