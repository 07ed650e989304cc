"""Batch-invariant stand-ins for checking *our* code's batch invariance (DESIGN.md: tests never assert bitwise
equality through a BLAS call whose row count differs; GEMM rounding depends on the CPU's kernel path).

`RowWise(f)` evaluates `f` one row at a time, so a row's value cannot depend on the batch it was packed into.
`rowwise_dlg(monkeypatch, mixture)`: a mixture whose denoiser runs row by row (`chunk=1`) and, for every DLG run
of the test, its exact noise-level classifier wrapped in `RowWise`: what a chain computes then depends on its
own rows alone, on any CPU. `same_threads_env()`: the environment for a subprocess whose results are compared
bit for bit with this process's (the same intra-op thread count).
"""
import copy
import os

from dmcmc_fast.engine import dlg_run


class RowWise:
    """Evaluates `f` one row at a time: row values independent of the batch (attributes pass through)."""

    def __init__(self, f):
        self.f = f

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __call__(self, x, *per_row):
        import torch

        return torch.cat([self.f(x[i:i + 1], *(t[i:i + 1] for t in per_row)) for i in range(x.shape[0])])


def rowwise_mixture(mixture):
    """A copy of `mixture` (a GaussianMixture) whose denoiser evaluates one row at a time."""
    one_row = copy.copy(mixture)
    one_row.chunk = 1  # GaussianMixture.__call__ evaluates chunks of `chunk` rows
    return one_row


def rowwise_dlg(monkeypatch, mixture):
    """`mixture` (a GaussianMixture) as a row-wise denoiser, and DLG's classifiers row-wise while `monkeypatch`
    lasts. -> the row-wise mixture (still a GaussianMixture: DLG's `exact` classifier is built for it)."""
    made = dlg_run.make_classifier
    monkeypatch.setattr(dlg_run, "make_classifier", lambda *a, **k: RowWise(made(*a, **k)))
    return rowwise_mixture(mixture)


def same_threads_env() -> dict:
    """os.environ with this process's intra-op thread count (OMP_NUM_THREADS), for a subprocess (torchrun ranks)
    whose shards are compared bit for bit with this process's: a GEMM may round differently with other threads."""
    import torch

    return dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
