"""Shared pieces of the reverse S/ODE integrators (k-diffusion-style tiny helpers).

Every integrator has one call shape:

    sample_X(model, x, sigma_start, n_steps, *, sigma_min=..., seed=0, chain_ids=None,
             callback=None, final_tweedie=False, **sampler_options) -> IntegratorResult

`model` is a `CountingDenoiser` (so NFE is counted where the model is called), `x` is the state at
`sigma_start` (scalar or `[B]`, one start per sample), and each sample is integrated on its own grid
down to `sigma_min` and then 0. `IntegratorResult.nfe` is the per-sample NFE the call spent.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from dmcmc_fast.models.base import CountingDenoiser, as_sigma, bcast


@dataclass
class IntegratorResult:
    x: torch.Tensor
    nfe: torch.Tensor  # [B] int64, spent in this call


def ensure_counting(model, batch: int, device) -> CountingDenoiser:
    return model if isinstance(model, CountingDenoiser) else CountingDenoiser(model, batch, device)


def to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """dx/dsigma of the VE probability-flow ODE: (x - D(x, sigma)) / sigma (EDM eq. 3 with sigma(t)=t)."""
    return (x - denoised) / bcast(sigma, x)


def tweedie(model, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Final denoising step x + sigma^2 s(x, sigma) = D(x, sigma) (one NFE)."""
    return model(x, sigma)


def check_steps(n_steps: int, name: str = "n_steps", lo: int = 1):
    if not isinstance(n_steps, int) or n_steps < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {n_steps!r}")


def start_sigma(sigma_start, x: torch.Tensor) -> torch.Tensor:
    return as_sigma(sigma_start, x.shape[0], device=x.device, dtype=torch.float64, name="sigma_start")


def nfe_spent(model: CountingDenoiser, before: torch.Tensor) -> torch.Tensor:
    return model.nfe - before
