"""Reverse-time VE SDE samplers of Song et al. 2021 ("Score-Based Generative Modeling through SDEs"),
on per-sample grids.

VE SDE: dx = sqrt(d[sigma^2]/dt) dw, sigma(t) = sigma_min (sigma_max/sigma_min)^t; its reverse is
dx = -g(t)^2 s(x, sigma(t)) dt + g(t) dw_bar with g^2 = d[sigma^2]/dt = 2 sigma^2 log(sigma_max/sigma_min).
Grid: Song's time grid is uniform in t, i.e. geometric in sigma: row b runs geometrically from
sigma_start[b] to sigma_min (N points), then the final step to 0 is the Tweedie denoise x <- D(x, sigma_min)
(Song's "noise removal": the last predictor step returns its mean, which on the VE SDE is exactly D).
With s_i = s(x_i, sigma_i) = (D(x_i, sigma_i) - x_i) / sigma_i^2 and z_i ~ N(0, I):

- `sample_reverse_diffusion` (ReverseDiffusionPredictor on VESDE.discretize, eq. (46) of App. E):
      x_{i+1} = x_i + (sigma_i^2 - sigma_{i+1}^2) s_i + sqrt(sigma_i^2 - sigma_{i+1}^2) z_i
- `sample_euler_maruyama` (EulerMaruyamaPredictor): with g(t_i)^2 |dt| = 2 sigma_i^2 log(sigma_i/sigma_{i+1})
  on the geometric grid (sigma_max cancels),
      x_{i+1} = x_i + g^2|dt| s_i + sqrt(g^2|dt|) z_i
Both cost N NFE (N - 1 steps plus the Tweedie step). z_i = chain_randn(seed, chain_ids, step0 + i,
stream=STREAM_SDE).
"""
from __future__ import annotations

import torch

from dmcmc_fast import rng
from dmcmc_fast.integrators.common import counted_call
from dmcmc_fast.integrators.common import (IntegratorResult, finish, check_nfe, ensure_counting, per_sample_grid,
                                           step_noise, tweedie)
from dmcmc_fast.models.base import bcast
from dmcmc_fast.schedules import geometric_per_sample


def sde_steps_for_nfe(nfe: int, final_tweedie: bool = True, **_options) -> int:
    """N with N NFE (N - 1 without the final Tweedie step)."""
    check_nfe(nfe, "the VE-SDE samplers")
    return nfe if final_tweedie else nfe + 1


def _reverse_sde(model, x, sigma_start, n_steps, sigma_min, seed, chain_ids, step0, callback, final_tweedie,
                 variance):
    """Shared loop: x <- x + v_i s_i + sqrt(v_i) z_i with v_i = variance(sigma_i, sigma_{i+1}) [B]."""
    model = ensure_counting(model, x.shape[0], x.device)
    before = model.mark()
    sigmas = per_sample_grid(geometric_per_sample, sigma_start, x, n_steps, sigma_min, model)
    for i in range(n_steps - 1):
        s, s_next = sigmas[:, i], sigmas[:, i + 1]
        denoised = model(x, s.to(x.dtype))
        v = bcast(variance(s, s_next).to(x.dtype), x)
        score = (denoised - x) / bcast(s.to(x.dtype), x) ** 2
        x = x + v * score + v.sqrt() * step_noise(x, seed, chain_ids, step0 + i, rng.STREAM_SDE)
        if callback is not None:
            callback({"i": i, "n": n_steps, "x": x, "sigma": s, "sigma_next": s_next, "denoised": denoised})
    if final_tweedie:
        x = tweedie(model, x, sigmas[:, n_steps - 1])
    return finish(model, x, before)


@counted_call
def sample_reverse_diffusion(model, x: torch.Tensor, sigma_start, n_steps: int, *, sigma_min: float = 0.002,
                             seed: int = 0, chain_ids=None, step0=0, callback=None,
                             final_tweedie: bool = True) -> IntegratorResult:
    return _reverse_sde(model, x, sigma_start, n_steps, sigma_min, seed, chain_ids, step0, callback,
                        final_tweedie, lambda s, s_next: s * s - s_next * s_next)


@counted_call
def sample_euler_maruyama(model, x: torch.Tensor, sigma_start, n_steps: int, *, sigma_min: float = 0.002,
                          seed: int = 0, chain_ids=None, step0=0, callback=None,
                          final_tweedie: bool = True) -> IntegratorResult:
    return _reverse_sde(model, x, sigma_start, n_steps, sigma_min, seed, chain_ids, step0, callback,
                        final_tweedie, lambda s, s_next: 2.0 * s * s * torch.log(s / s_next))
