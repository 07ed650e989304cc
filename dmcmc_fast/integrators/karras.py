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
- `euler_ancestral_on_grid` (k-diffusion's `sample_euler_ancestral`, no registry entry): Euler to sigma_down,
  then ancestral noise sigma_up (`common.ancestral_step`).
The loops are `edm_on_grid` / `euler_ancestral_on_grid` on an explicit per-sample grid (what `dmcmc_fast.k`
calls with the user's grid). One step's math is `euler_step`, `heun_correct` and `churn_step` below, as written
(the CPU runs them) and, on CUDA, as their fused kernels (`dmcmc_fast.kernels.karras_step`, registered with
`plans.fused`); the grid's per-step rows and the backend are the loop's plan (`plans.EdmPlan`).
"""
from __future__ import annotations

import math

import torch

from dmcmc_fast import rng
from dmcmc_fast.integrators.common import counted_call
from dmcmc_fast.integrators.common import (NO_NOISE, IntegratorResult, StepNoise, ancestral_step, finish,
                                           check_nfe, ensure_counting, n_loop, per_sample_grid)
from dmcmc_fast.integrators.plans import churn_table, edm_plan, fused
from dmcmc_fast.kernels import karras_step as fused_karras
from dmcmc_fast.kernels._args import in_dtype
from dmcmc_fast.models.base import bcast
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


# ---------------- the math of one step (EDM Alg. 1 / 2), each with its fused kernel ----------------
@fused(lambda x, denoised, st: fused_karras.euler_step_triton(x, denoised, st.sigma, st.sigma_next))
def euler_step(x, denoised, st):
    """EDM Alg. 1 l. 4-5 (eq. 3, sigma(t) = t): d = (x - D(x; sigma)) / sigma, x' = x + (sigma_next - sigma) d.
    -> (x', d). `st`: the step's sigmas (`plans.EdmStep`: sigma, dt = sigma_next - sigma)."""
    d = (x - denoised) / st.sigma
    return x + st.dt * d, d


@fused(lambda x, d, x_euler, denoised_next, st: fused_karras.heun_correct_triton(x, d, x_euler, denoised_next,
                                                                                 st.sigma, st.sigma_next))
def heun_correct(x, d, x_euler, denoised_next, st):
    """EDM Alg. 1 l. 7-8, the trapezoidal corrector: d' = (x' - D(x'; sigma_next)) / sigma_next,
    x_{i+1} = x + (sigma_next - sigma) (d + d') / 2."""
    d_next = (x_euler - denoised_next) / st.sigma_next
    return x + st.half_dt * (d + d_next)


@fused(fused_karras.churn_triton)
def churn_step(x, scale, z):
    """EDM Alg. 2 l. 5-6: x_hat = x + S_noise sqrt(sigma_hat^2 - sigma^2) z (`scale`, per sample)."""
    return x + scale * z


def edm_on_grid(model, x: torch.Tensor, sigmas: torch.Tensor, steps: int, *, heun: bool, euler_last: bool,
                gamma: torch.Tensor | None = None, s_noise: float = 1.0, noise: StepNoise | None = None,
                n: int | None = None, callback=None) -> torch.Tensor:
    """EDM Alg. 2 on a given per-sample grid `sigmas` `[B, >= steps + 1]` float64: step i goes from column i to
    column i + 1, by Euler (`heun=False`) or by Heun, whose last step is Euler if `euler_last` (it goes to
    sigma = 0, Alg. 1 l. 6). `gamma` `[B, steps]`: the churn of each step (l. 4-6; None: none, Alg. 1), its
    noise from `noise` (per-chain Philox unless it has a `sampler`). `callback` gets (i, n, x, sigma,
    sigma_next, denoised) after each step, plus sigma_hat and x_hat (what the model saw) when churning.
    The grid's rows, step widths and the choice of the fused kernels are the plan's (`plans.EdmPlan`)."""
    if steps == 0:  # a one-point grid without the step to 0 (nfe=1, final_tweedie=0): nothing to integrate
        return x
    plan = edm_plan(x, sigmas, steps, heun, gamma, s_noise, math=(euler_step, heun_correct))
    op = plan.op  # the math above, or its fused kernels on CUDA
    churn = None if gamma is None else plan.churner(x, sigmas, NO_NOISE if noise is None else noise, churn_step)
    for i in range(steps):
        st = plan.steps[i]
        x_hat = x if churn is None else churn(x, i)  # l. 4-6: sigma_hat = (1 + gamma_i) sigma_i
        denoised = model(x_hat, plan.s_in[i])  # l. 7: D(x_hat; sigma_hat)
        x_next, d = op.euler_step(x_hat, denoised, st)  # l. 7-8
        if heun and not (euler_last and i == steps - 1):  # l. 9-11: the corrector, except on the step to 0
            x_next = op.heun_correct(x_hat, d, x_next, model(x_next, plan.s_out[i]), st)
        x = x_next
        if callback is not None:
            churned = {"sigma_hat": plan.sigma_hat[i], "x_hat": x_hat} if churn is not None else {}
            callback({"i": i, "n": n, "x": x, "sigma": sigmas[:, i], **churned, "sigma_next": sigmas[:, i + 1],
                      "denoised": denoised})
    return x


def _heun_step(model, x, s, s_next, last: bool):
    """EDM Alg. 1 l. 4-8 from (x, s) to s_next on `[B]` sigmas, through the kernels' dispatching entry points
    (DEIS's start-up steps); Euler only on the last step (to sigma = 0)."""
    denoised = model(x, in_dtype(s, x.dtype))
    x_euler, d = fused_karras.euler_step(x, denoised, s, s_next)
    if last:
        return x_euler, denoised
    return fused_karras.heun_correct(x, d, x_euler, model(x_euler, in_dtype(s_next, x.dtype)), s, s_next), denoised


def euler_ancestral_on_grid(model, x: torch.Tensor, sigmas: torch.Tensor, *, eta: float = 1.0, s_noise: float = 1.0,
                            noise: StepNoise | None = None, n: int | None = None, callback=None) -> torch.Tensor:
    """Ancestral Euler steps on a positive per-sample grid `sigmas` `[B, M]` float64 (M - 1 steps; the step
    to 0, if any, is the caller's): x <- x + (sigma_down - sigma_i) d(x, sigma_i), then + s_noise sigma_up z_i,
    with (sigma_down, sigma_up) = `ancestral_step(sigma_i, sigma_{i+1}, eta)` and z_i from `noise` (STREAM_SDE).
    eta = 0 is the Euler probability-flow solver (eta > 1: sigma_up is capped at sigma_{i+1}). Defaults as
    k-diffusion's `sample_euler_ancestral`."""
    if not (0.0 <= eta < math.inf and 0.0 <= s_noise < math.inf):
        raise ValueError(f"eta and s_noise must be in [0, inf), got eta={eta}, s_noise={s_noise}")
    noise = StepNoise() if noise is None else noise
    s_down, s_up = ancestral_step(sigmas[:, :-1], sigmas[:, 1:], eta)
    for i in range(sigmas.shape[1] - 1):
        s, s_next = sigmas[:, i], sigmas[:, i + 1]
        denoised = model(x, s.to(x.dtype))
        x, _ = fused_karras.euler_step(x, denoised, s, s_down[:, i])
        if eta > 0:
            x = x + bcast((s_noise * s_up[:, i]).to(x.dtype), x) * noise(x, i, rng.STREAM_SDE, s, s_next)
        if callback is not None:
            callback({"i": i, "n": n, "x": x, "sigma": s, "sigma_next": s_next, "denoised": denoised})
    return x


@counted_call
def sample_euler(model, x: torch.Tensor, sigma_start, n_steps: int, *, sigma_min: float = 0.002,
                 rho: float = 7.0, seed: int = 0, chain_ids=None, step0=0, callback=None,
                 final_tweedie: bool = True) -> IntegratorResult:
    model = ensure_counting(model, x.shape[0], x.device)
    before = model.mark()
    sigmas = per_sample_grid(karras_per_sample, sigma_start, x, n_steps, sigma_min, model, rho=rho)
    x = edm_on_grid(model, x, sigmas, n_loop(n_steps, final_tweedie), heun=False, euler_last=final_tweedie,
                    n=n_steps, callback=callback)
    return finish(model, x, before)


@counted_call
def sample_heun(model, x: torch.Tensor, sigma_start, n_steps: int, *, sigma_min: float = 0.002,
                rho: float = 7.0, seed: int = 0, chain_ids=None, step0=0, callback=None,
                final_tweedie: bool = True) -> IntegratorResult:
    model = ensure_counting(model, x.shape[0], x.device)
    before = model.mark()
    sigmas = per_sample_grid(karras_per_sample, sigma_start, x, n_steps, sigma_min, model, rho=rho)
    x = edm_on_grid(model, x, sigmas, n_loop(n_steps, final_tweedie), heun=True, euler_last=final_tweedie,
                    n=n_steps, callback=callback)
    return finish(model, x, before)


def check_churn(s_churn: float, s_tmin: float, s_tmax: float, s_noise: float):
    if not (0 <= s_churn < math.inf):
        raise ValueError(f"s_churn must be in [0, inf), got {s_churn}")
    if not (0 <= s_tmin <= s_tmax):
        raise ValueError(f"s_tmin and s_tmax must satisfy 0 <= s_tmin <= s_tmax, got s_tmin={s_tmin}, s_tmax={s_tmax}")
    if not (0 <= s_noise < math.inf):
        raise ValueError(f"s_noise must be in [0, inf), got {s_noise}")


@counted_call
def sample_karras_sde(model, x: torch.Tensor, sigma_start, n_steps: int, *, sigma_min: float = 0.002,
                      rho: float = 7.0, s_churn: float = 40.0, s_tmin: float = 0.05, s_tmax: float = 50.0,
                      s_noise: float = 1.003, seed: int = 0, chain_ids=None, step0=0, callback=None,
                      final_tweedie: bool = True) -> IntegratorResult:
    """EDM Alg. 2. Defaults: EDM Table 5, ImageNet-64 (S_churn 40, S_tmin 0.05, S_tmax 50, S_noise 1.003).
    The churn noise of step i is chain_randn(seed, chain_ids, step0 + i, stream=STREAM_CHURN)."""
    check_churn(s_churn, s_tmin, s_tmax, s_noise)
    model = ensure_counting(model, x.shape[0], x.device)
    before = model.mark()
    sigmas = per_sample_grid(karras_per_sample, sigma_start, x, n_steps, sigma_min, model, rho=rho)
    gamma_max = min(s_churn / n_steps, math.sqrt(2.0) - 1.0)  # Alg. 2 l. 4: gamma_i, per sample on its own grid
    gamma = churn_table(sigmas, s_tmin, s_tmax, gamma_max)
    x = edm_on_grid(model, x, sigmas, n_loop(n_steps, final_tweedie), heun=True, euler_last=final_tweedie,
                    gamma=gamma, s_noise=s_noise, noise=StepNoise(seed, chain_ids, step0), n=n_steps,
                    callback=callback)
    return finish(model, x, before)
