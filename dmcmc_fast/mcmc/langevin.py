"""Overdamped Langevin samplers: ULA at one noise level, annealed Langevin (NCSN) and MILD.

ULA (DLG paper, Langevin step at level sigma):
    x_{k+1} = x_k + (eta/2) s(x_k, sigma) + sqrt(eta) z_k
On a Gaussian target N(mu, v I) its stationary law is N(mu, v / (1 - eta/(4v)) I) (see the tests).

Annealed Langevin dynamics (Song & Ermon 2019, Alg. 1), levels sigma_1 > ... > sigma_L, T steps each:
    alpha_i = eps sigma_i^2 / sigma_L^2,   x <- x + (alpha_i/2) s(x, sigma_i) + sqrt(alpha_i) z
    optional final denoise x <- x + sigma_L^2 s(x, sigma_L) = D(x, sigma_L)   (NCSNv2)

MILD (Shetty et al., Alg. 1), same levels and alpha_i, momentum gamma (v_0 = 0, carried across levels):
    y = x + gamma v;  v <- gamma v + alpha_i s(y, sigma_i);  x <- x + v + sqrt(2 alpha_i) z
    final denoise x <- x + sigma_L^2 s(x, sigma_L)
Per-step updates are the fused kernels `langevin_step` / `mild_step` (kernels/API.md).
"""
from __future__ import annotations

import torch

from dmcmc_fast.kernels.langevin import langevin_step, mild_step
from dmcmc_fast.mcmc.common import MCMCResult, annealing_levels, done, full, setup
from dmcmc_fast.validate import check_int, check_positive


@torch.no_grad()
def sample_langevin(model, x: torch.Tensor, sigma, eta, n_steps: int, *, seed: int = 0, chain_ids=None,
                    step0: int = 0, callback=None) -> MCMCResult:
    """ULA at one noise level `sigma` (float or [B]) with step `eta` (float or [B]); 1 NFE per step."""
    check_int("n_steps", n_steps, 0)
    check_positive("sigma", sigma)
    check_positive("eta", eta)
    model, ids, before = setup(model, x, chain_ids)
    sig = (sigma.to(x.device, x.dtype).expand(x.shape[0]).contiguous() if torch.is_tensor(sigma)
           else torch.full((x.shape[0],), float(sigma), dtype=x.dtype, device=x.device))  # no host copy: capturable
    for k in range(n_steps):
        x = langevin_step(x, model(x, sig), sig, eta, seed, ids, step0 + k)
        if callback is not None:
            callback({"i": k, "x": x, "sigma": sig})
    return done(model, x, before)


@torch.no_grad()
def sample_ald(model, x: torch.Tensor, n_levels: int, n_steps_each: int, *, sigma_max: float,
               sigma_min: float, eps: float, final_tweedie: bool = True, seed: int = 0, chain_ids=None,
               step0: int = 0, callback=None) -> MCMCResult:
    """NCSN annealed Langevin: L * T NFE (+1 for the final denoise)."""
    check_int("n_steps_each", n_steps_each, 1)
    check_positive("eps", eps)
    levels = annealing_levels(n_levels, sigma_max, sigma_min)
    model, ids, before = setup(model, x, chain_ids)
    k = step0
    for i, s in enumerate(levels):
        sig, alpha = full(s, x), eps * s ** 2 / levels[-1] ** 2
        for t in range(n_steps_each):
            x = langevin_step(x, model(x, sig), sig, alpha, seed, ids, k)
            k += 1
        if callback is not None:
            callback({"i": i, "x": x, "sigma": sig})
    if final_tweedie:
        x = model(x, full(levels[-1], x))
    return done(model, x, before)


@torch.no_grad()
def sample_mild(model, x: torch.Tensor, n_levels: int, n_steps_each: int, *, sigma_max: float,
                sigma_min: float, eps: float, gamma: float, final_tweedie: bool = True,
                v: torch.Tensor | None = None, seed: int = 0, chain_ids=None, step0: int = 0,
                callback=None) -> MCMCResult:
    """MILD (Alg. 1): L * T NFE, + 1 for the final denoise. Returns the momentum in `.v`."""
    check_int("n_steps_each", n_steps_each, 1)
    check_positive("eps", eps)
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"gamma must be in [0, 1), got {gamma}")
    levels = annealing_levels(n_levels, sigma_max, sigma_min)
    model, ids, before = setup(model, x, chain_ids)
    v = torch.zeros_like(x) if v is None else v
    k = step0
    for i, s in enumerate(levels):
        sig, alpha = full(s, x), eps * s ** 2 / levels[-1] ** 2
        for t in range(n_steps_each):
            y = x + gamma * v
            x, v = mild_step(x, v, model(y, sig), sig, alpha, gamma, seed, ids, k)
            k += 1
        if callback is not None:
            callback({"i": i, "x": x, "sigma": sig})
    if final_tweedie:
        x = model(x, full(levels[-1], x))
    return done(model, x, before, v)


__all__ = ["sample_langevin", "sample_ald", "sample_mild"]
