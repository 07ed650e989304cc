"""Karras et al. 2022 (EDM) samplers on per-sample grids.

`sample_heun` is EDM Algorithm 1 (deterministic Heun, "KAR1"): on the grid
sigma_0 > ... > sigma_{N-1} = sigma_min > sigma_N = 0 (eq. 5, one grid per sample),

    d_i   = (x_i - D(x_i, sigma_i)) / sigma_i                        (eq. 3 with sigma(t) = t)
    x'    = x_i + (sigma_{i+1} - sigma_i) d_i                          (Euler predictor)
    x_i+1 = x_i + (sigma_{i+1} - sigma_i) (d_i + d'_i) / 2, d'_i at (x', sigma_{i+1})   if sigma_{i+1} > 0

so N steps cost 2N - 1 NFE.
"""
from __future__ import annotations

import torch

from dmcmc_fast.integrators.common import (IntegratorResult, check_steps, ensure_counting, start_sigma,
                                           to_d)
from dmcmc_fast.schedules import karras_per_sample


def heun_steps_for_nfe(nfe: int) -> int:
    """Largest N with 2N - 1 <= nfe."""
    if nfe < 1:
        raise ValueError(f"nfe must be >= 1 for heun, got {nfe}")
    return (nfe + 1) // 2


@torch.no_grad()
def sample_heun(model, x: torch.Tensor, sigma_start, n_steps: int, *, sigma_min: float = 0.002,
                rho: float = 7.0, callback=None, **_unused) -> IntegratorResult:
    check_steps(n_steps)
    model = ensure_counting(model, x.shape[0], x.device)
    before = model.nfe.clone()
    sigmas = karras_per_sample(start_sigma(sigma_start, x), n_steps, sigma_min, rho)  # [B, N+1]
    sigmas = sigmas.to(x.device)
    for i in range(n_steps):
        s, s_next = sigmas[:, i].to(x.dtype), sigmas[:, i + 1].to(x.dtype)
        dt = (s_next - s).reshape(-1, *([1] * (x.ndim - 1)))
        d = to_d(x, s, model(x, s))
        x_euler = x + dt * d
        if i < n_steps - 1:  # sigma_{i+1} > 0 on every row: second-order correction
            d_next = to_d(x_euler, s_next, model(x_euler, s_next))
            x = x + dt * 0.5 * (d + d_next)
        else:
            x = x_euler
        if callback is not None:
            callback({"i": i, "n": n_steps, "x": x, "sigma": s, "sigma_next": s_next})
    return IntegratorResult(x, model.nfe - before)
