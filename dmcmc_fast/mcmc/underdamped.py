"""Underdamped-Langevin splitting samplers (Jain & Poole, "Journey to the BAOAB-limit"), at one noise
level or annealed over NCSN's levels.

BAOAB-limit (the infinite-friction limit of BAOAB; the previous step's noise is reused):
    x_{k+1} = x_k + h s(x_k, sigma) + sqrt(h/2) (xi_k + xi_{k+1}),   xi ~ N(0, I)       1 NFE / step
  On N(mu, v I) its stationary law is exactly N(mu, v I) for every stable h (0 < h < 2v).

OBABO (unit mass, friction coefficient `friction` (the paper's gamma), c = exp(-friction h / 2)):
    O: p <- c p + sqrt(1 - c^2) z;  B: p <- p + (h/2) s(x);  A: x <- x + h p;  B: p <- p + (h/2) s(x);  O
  The score at the new x is reused by the next step's first B, so a level costs T + 1 NFE. On N(mu, v I)
  the stationary x-law is N(mu, v / (1 - h^2/(4v)) I) (Verlet's shadow energy; see the tests).

Annealed: levels sigma_1 > ... > sigma_L (geometric), T steps each, step
    h_i = eps (sigma_i / sigma_L)^2  (BAOAB-limit: an overdamped step, like NCSN's alpha_i)
    h_i = eps  sigma_i / sigma_L     (OBABO: a time step, scales like the target's std)
The carried noise xi (BAOAB-limit) or momentum p (OBABO) passes from level to level; optional final
Tweedie denoise x <- D(x, sigma_L) (`final_tweedie`). Per-step updates are the fused kernels of
kernels/underdamped.py.
"""
from __future__ import annotations

import torch

from dmcmc_fast import rng
from dmcmc_fast.kernels import noise  # per-chain normals: one launch on CUDA, rng.chain_randn on the CPU
from dmcmc_fast.kernels.underdamped import baoab_limit_step, obabo_bo, obabo_oba
from dmcmc_fast.mcmc.common import MCMCResult, annealing_levels, done, full, setup
from dmcmc_fast.validate import check_int, check_positive


def annealed_schedule(n_levels: int, sigma_max: float, sigma_min: float, eps: float, power: int):
    """-> (levels, step sizes) with h_i = eps (sigma_i / sigma_L)^power."""
    check_positive("eps", eps)
    levels = annealing_levels(n_levels, sigma_max, sigma_min)
    return levels, [eps * (s / levels[-1]) ** power for s in levels]


def _check(levels, hs, n_steps_each):
    check_int("n_steps_each", n_steps_each, 1)
    if len(levels) != len(hs) or not levels:
        raise ValueError("levels and step sizes must be non-empty lists of equal length")
    check_positive("sigma (levels)", levels)
    check_positive("h", hs)


@torch.no_grad()
def sample_baoab_limit(model, x: torch.Tensor, levels, hs, n_steps_each: int, *, xi: torch.Tensor | None = None,
                       final_tweedie: bool = False, seed: int = 0, chain_ids=None, step0: int = 0,
                       callback=None) -> MCMCResult:
    """BAOAB-limit over `levels` (one level: `[sigma]`) with steps `hs`; L*T NFE (+1 with final_tweedie).

    `xi` is the carried noise (default: a fresh draw at step `step0`); it is returned in `.v`.
    """
    _check(levels, hs, n_steps_each)
    model, ids, before = setup(model, x, chain_ids)
    if xi is None:
        xi = noise.chain_randn(seed, ids, step0, tuple(x.shape[1:]), stream=rng.STREAM_LANGEVIN, device=x.device,
                             dtype=x.dtype)
    k = step0 + 1
    for i, (s, h) in enumerate(zip(levels, hs)):
        sig = full(s, x)
        for _ in range(n_steps_each):
            x, xi = baoab_limit_step(x, model(x, sig), sig, h, xi, seed, ids, k)
            k += 1
        if callback is not None:
            callback({"i": i, "x": x, "sigma": sig})
    if final_tweedie:
        x = model(x, full(levels[-1], x))
    return done(model, x, before, xi)


@torch.no_grad()
def sample_obabo(model, x: torch.Tensor, levels, hs, n_steps_each: int, *, friction: float,
                 p: torch.Tensor | None = None, final_tweedie: bool = False, seed: int = 0, chain_ids=None,
                 step0: int = 0, callback=None) -> MCMCResult:
    """OBABO over `levels` with steps `hs`; L*(T+1) NFE (+1 with final_tweedie). Momentum `p` (default
    N(0, I) drawn at step `step0`) is returned in `.v`."""
    _check(levels, hs, n_steps_each)
    check_positive("friction", friction)
    model, ids, before = setup(model, x, chain_ids)
    if p is None:
        p = noise.chain_randn(seed, ids, step0, tuple(x.shape[1:]), stream=rng.STREAM_MOMENTUM, device=x.device,
                            dtype=x.dtype)
    k = step0 + 1
    for i, (s, h) in enumerate(zip(levels, hs)):
        sig = full(s, x)
        d = model(x, sig)
        for _ in range(n_steps_each):
            x, p = obabo_oba(x, p, d, sig, h, friction, seed, ids, k)
            d = model(x, sig)
            p = obabo_bo(p, x, d, sig, h, friction, seed, ids, k)
            k += 1
        if callback is not None:
            callback({"i": i, "x": x, "sigma": sig})
    if final_tweedie:
        x = model(x, full(levels[-1], x))
    return done(model, x, before, p)
