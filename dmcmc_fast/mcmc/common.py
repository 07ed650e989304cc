"""Helpers shared by the MCMC samplers: the result type, the annealing grid (argument checks: `dmcmc_fast.validate`).

Every MCMC sampler has the call shape

    sample_X(model, x, ..., *, seed=0, chain_ids=None, step0=0, callback=None) -> MCMCResult

`model` is called only as `model(x, sigma[B])` (wrapped in a `CountingDenoiser` so the NFE of each
chain is counted where the model is called), and every random draw comes from the chain's Philox
stream at the chain's step counter (`step0 + i` for the i-th update; names: `rng`), so a chain's trajectory does not
depend on its batch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dmcmc_fast import rng
from dmcmc_fast.integrators.common import ensure_counting
from dmcmc_fast.validate import check_int


@dataclass
class MCMCResult:
    x: torch.Tensor
    nfe: torch.Tensor  # [B] int64, spent in this call
    v: torch.Tensor | None = None  # momentum / carried noise at the end (underdamped samplers, MILD)


def done(model, x: torch.Tensor, nfe_before: torch.Tensor, v: torch.Tensor | None = None) -> MCMCResult:
    """The call's result, after `model.end_call(x)` (a counter this call made checks `x` and raises its
    deferred checks)."""
    model.end_call(x)
    return MCMCResult(x, model.nfe - nfe_before, v)


def setup(model, x: torch.Tensor, chain_ids):
    """-> (counting model, chain ids [B] int64, NFE counter before this call)."""
    model = ensure_counting(model, x.shape[0], x.device)
    ids = rng.default_chain_ids(x.shape[0], x.device) if chain_ids is None else \
        torch.as_tensor(chain_ids, dtype=torch.int64, device=x.device)
    if ids.shape != (x.shape[0],):
        raise ValueError(f"chain_ids must have shape [{x.shape[0]}], got {tuple(ids.shape)}")
    return model, ids, model.nfe.clone()


def full(sigma: float, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), float(sigma), dtype=x.dtype, device=x.device)


def annealing_levels(n_levels: int, sigma_max: float, sigma_min: float) -> list[float]:
    """NCSN's L geometric levels sigma_1 = sigma_max > ... > sigma_L = sigma_min (one level: sigma_min).
    Python floats (the host's own numbers: no tensor to read back), as `schedules.geometric` computes them."""
    check_int("n_levels", n_levels, 1)
    if not 0 < sigma_min <= sigma_max < math.inf:
        raise ValueError(f"sigma_min and sigma_max must satisfy 0 < sigma_min <= sigma_max < inf, got "
                         f"sigma_min={sigma_min}, sigma_max={sigma_max}")
    if n_levels == 1:
        return [float(sigma_min)]
    lo, hi = math.log(sigma_min), math.log(sigma_max)
    return [math.exp(hi + i / (n_levels - 1) * (lo - hi)) for i in range(n_levels)]
