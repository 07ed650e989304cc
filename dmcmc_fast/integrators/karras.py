"""Karras et al. 2022 (EDM) samplers on per-sample grids, and the plain Euler probability-flow solver.

Grid (EDM eq. 5, one per sample): sigma_0 = sigma_start > ... > sigma_{N-1} = sigma_min > sigma_N = 0.
d(x, sigma) = (x - D(x, sigma)) / sigma is dx/dsigma of the probability-flow ODE (eq. 3, sigma(t) = t).

- `sample_euler`: x_{i+1} = x_i + (sigma_{i+1} - sigma_i) d(x_i, sigma_i). N steps cost N NFE.
- `sample_heun` (EDM Alg. 1, "KAR1"): the Euler predictor, then for sigma_{i+1} > 0 the trapezoidal
  corrector x_{i+1} = x_i + (sigma_{i+1} - sigma_i) (d_i + d'_i)/2, d'_i = d(x', sigma_{i+1}).
  N steps cost 2N - 1 NFE (the last step, to 0, is Euler).
- `sample_karras_sde` (EDM Alg. 2, "KAR2"): before step i, "churn": gamma_i = min(S_churn/N, sqrt2 - 1)
  if S_tmin <= sigma_i <= S_tmax else 0, sigma_hat = (1 + gamma_i) sigma_i,
  x_hat = x_i + S_noise sqrt(sigma_hat^2 - sigma_i^2) z (l. 4-6), then the Heun step from
  (x_hat, sigma_hat) to sigma_{i+1} (l. 7-11). Same cost as Heun.
The per-step arithmetic runs in the fused kernels of `dmcmc_fast.kernels.karras_step`.
"""
from __future__ import annotations

import math

import torch

from dmcmc_fast import rng
from dmcmc_fast.integrators.common import (IntegratorResult, finish, check_nfe, ensure_counting, n_loop,
                                           per_sample_grid)
from dmcmc_fast.kernels.karras_step import churn, euler_step, heun_correct
from dmcmc_fast.schedules import karras_per_sample


def euler_steps_for_nfe(nfe: int, final_tweedie: bool = True, **_options) -> int:
    """N with N NFE (N - 1 without the final step to 0)."""
    check_nfe(nfe, "euler")
    return nfe if final_tweedie else nfe + 1


def heun_steps_for_nfe(nfe: int, final_tweedie: bool = True, **_options) -> int:
    """Largest N with 2N - 1 <= nfe (2N - 2 <= nfe without the final step to 0)."""
    check_nfe(nfe, "heun")
    return (nfe + 1) // 2 if final_tweedie else nfe // 2 + 1


karras_sde_steps_for_nfe = heun_steps_for_nfe


def _heun_step(model, x, s, s_next, last: bool):
    """EDM Alg. 1 l. 4-8 from (x, s) to s_next; Euler only on the last step (to sigma = 0)."""
    denoised = model(x, s.to(x.dtype))
    x_euler, d = euler_step(x, denoised, s, s_next)
    if last:
        return x_euler, denoised
    return heun_correct(x, d, x_euler, model(x_euler, s_next.to(x.dtype)), s, s_next), denoised


@torch.no_grad()
def sample_euler(model, x: torch.Tensor, sigma_start, n_steps: int, *, sigma_min: float = 0.002,
                 rho: float = 7.0, seed: int = 0, chain_ids=None, step0=0, callback=None,
                 final_tweedie: bool = True) -> IntegratorResult:
    model = ensure_counting(model, x.shape[0], x.device)
    before = model.nfe.clone()
    sigmas = per_sample_grid(karras_per_sample, sigma_start, x, n_steps, sigma_min, model, rho=rho)
    for i in range(n_loop(n_steps, final_tweedie)):
        s, s_next = sigmas[:, i], sigmas[:, i + 1]
        denoised = model(x, s.to(x.dtype))
        x, _ = euler_step(x, denoised, s, s_next)
        if callback is not None:
            callback({"i": i, "n": n_steps, "x": x, "sigma": s, "sigma_next": s_next, "denoised": denoised})
    return finish(model, x, before)


@torch.no_grad()
def sample_heun(model, x: torch.Tensor, sigma_start, n_steps: int, *, sigma_min: float = 0.002,
                rho: float = 7.0, seed: int = 0, chain_ids=None, step0=0, callback=None,
                final_tweedie: bool = True) -> IntegratorResult:
    model = ensure_counting(model, x.shape[0], x.device)
    before = model.nfe.clone()
    sigmas = per_sample_grid(karras_per_sample, sigma_start, x, n_steps, sigma_min, model, rho=rho)
    for i in range(n_loop(n_steps, final_tweedie)):
        s, s_next = sigmas[:, i], sigmas[:, i + 1]
        x, denoised = _heun_step(model, x, s, s_next, last=i == n_steps - 1)
        if callback is not None:
            callback({"i": i, "n": n_steps, "x": x, "sigma": s, "sigma_next": s_next, "denoised": denoised})
    return finish(model, x, before)


def check_churn(s_churn: float, s_tmin: float, s_tmax: float, s_noise: float):
    if not (0 <= s_churn < math.inf):
        raise ValueError(f"s_churn must be in [0, inf), got {s_churn}")
    if not (0 <= s_tmin <= s_tmax):
        raise ValueError(f"s_tmin and s_tmax must satisfy 0 <= s_tmin <= s_tmax, got s_tmin={s_tmin}, s_tmax={s_tmax}")
    if not (0 <= s_noise < math.inf):
        raise ValueError(f"s_noise must be in [0, inf), got {s_noise}")


@torch.no_grad()
def sample_karras_sde(model, x: torch.Tensor, sigma_start, n_steps: int, *, sigma_min: float = 0.002,
                      rho: float = 7.0, s_churn: float = 40.0, s_tmin: float = 0.05, s_tmax: float = 50.0,
                      s_noise: float = 1.003, seed: int = 0, chain_ids=None, step0=0, callback=None,
                      final_tweedie: bool = True) -> IntegratorResult:
    """EDM Alg. 2. Defaults: EDM Table 5, ImageNet-64 (S_churn 40, S_tmin 0.05, S_tmax 50, S_noise 1.003).
    The churn noise of step i is chain_randn(seed, chain_ids, step0 + i, stream=STREAM_CHURN)."""
    check_churn(s_churn, s_tmin, s_tmax, s_noise)
    model = ensure_counting(model, x.shape[0], x.device)
    before = model.nfe.clone()
    sigmas = per_sample_grid(karras_per_sample, sigma_start, x, n_steps, sigma_min, model, rho=rho)
    gamma_max = min(s_churn / n_steps, math.sqrt(2.0) - 1.0)
    for i in range(n_loop(n_steps, final_tweedie)):
        s, s_next = sigmas[:, i], sigmas[:, i + 1]
        gamma = torch.where((s >= s_tmin) & (s <= s_tmax), gamma_max, 0.0)  # per sample: own grid
        x_hat, s_hat = churn(x, s, gamma, s_noise, seed, chain_ids, step0 + i, stream=rng.STREAM_CHURN)
        x, denoised = _heun_step(model, x_hat, s_hat, s_next, last=i == n_steps - 1)
        if callback is not None:
            callback({"i": i, "n": n_steps, "x": x, "sigma": s, "sigma_hat": s_hat, "sigma_next": s_next,
                      "denoised": denoised})
    return finish(model, x, before)
