"""DEIS (Zhang & Chen 2022, "Fast Sampling of Diffusion Models with Exponential Integrator"): tAB-DEIS
of order r = 0..3 on the VE probability-flow ODE, per-sample grids.

In VE form dx/dsigma = eps(x, sigma) = (x - D(x, sigma)) / sigma has no linear part, so the exponential
integrator's transition is Psi = 1 (eq. 11 with F = 0) and the multistep update (eq. 14-15) is

    x_{i+1} = x_i + sum_{j=0}^{r} C_ij eps_{i-j},   C_ij = int_{sigma_i}^{sigma_{i+1}} l_ij(tau(sigma)) dsigma,

l_ij the Lagrange basis through the past times tau_i, ..., tau_{i-r} (l_ij(tau_{i-k}) = delta_jk); the
first r steps use the orders available (warm start, as the paper). The time tau in which the polynomial
is fitted (`ab_time`):
  "rho" — tau = sigma: rhoAB-DEIS (Sec. 4; equal to tAB in EDM's VE time sigma(t) = t);
  "ve"  — tau = log sigma: tAB in Song's VE-SDE time (sigma(t) = sigma_min (sigma_max/sigma_min)^t is affine
          in log sigma, and an affine change of tau leaves the Lagrange basis unchanged). The public DEIS
          code has VP only; this is the VE version.
  "vp"  — tau = t of the linear-beta VP SDE (abar(t) = exp(-beta_min t - (beta_max - beta_min) t^2 / 2),
          sigma^2 = 1/abar - 1): tAB for VP models through `VPAdapter`. The VP update
          x'_vp = sqrt(abar'/abar) x_vp + sum_j C^VP_ij eps_j is this one in x_ve = x_vp / sqrt(abar).
C_ij is computed by Gauss-Legendre quadrature in u = log sigma (16 nodes per step: the integrand
l_ij(tau(e^u)) e^u is analytic, the error is below 1e-12 relative on any grid used here), vectorised over
samples, and cached per (grid, order, ab_time). The step to 0 is the Tweedie denoise (common.py).

Warm start (`warm_start`): "lower_order" is the paper's — step i < r uses order i — and costs N NFE, but
its first (Euler) step has local error O(h^2), which caps the global order at 2. "runge_kutta" keeps the
order r + 1: steps 0 .. r-2 are Runge-Kutta steps of order r (Heun for r = 2, Kutta's RK3 for r = 3, local
error O(h^(r+1))), after which AB of order i >= r-1 has local error O(h^(r+1)) too; it costs (r-1)^2 more
NFE (1 for r = 2, 4 for r = 3). The per-step combination (eq. 14) is `kernels.deis.deis_combine` (fused on CUDA,
its torch reference elsewhere); the grid's columns, the coefficients per step and that choice are the loop's plan
(`plans.DeisPlan`).
"""
from __future__ import annotations

import numpy as np
import torch

from dmcmc_fast import caches
from dmcmc_fast.integrators.common import counted_call
from dmcmc_fast.integrators.common import (IntegratorResult, finish, check_nfe, ensure_counting, per_sample_grid,
                                           shared_rows, to_d)
from dmcmc_fast.integrators.karras import _heun_step
from dmcmc_fast.integrators.plans import deis_plan
from dmcmc_fast.schedules import karras_per_sample

AB_TIMES = ("rho", "ve", "vp")
WARM_STARTS = ("lower_order", "runge_kutta")
QUAD_NODES = 16
_nodes: dict = caches.process_cache("quadrature nodes", "`integrators.deis._nodes`",
                                    "DEIS's Gauss-Legendre nodes and weights per device", "never (one per device)")


def _rk_steps(order: int, warm_start: str) -> int:
    return max(order - 1, 0) if warm_start == "runge_kutta" else 0


def deis_steps_for_nfe(nfe: int, final_tweedie: bool = True, order: int = 3, warm_start: str = "lower_order",
                       **_options) -> int:
    """Largest N whose cost fits: N NFE (N - 1 without the final Tweedie step), plus (r-1)^2 for the
    Runge-Kutta warm start."""
    extra = _rk_steps(order, warm_start) * (order - 1)
    check_nfe(nfe, "deis", lo=1 + extra)
    return nfe - extra if final_tweedie else nfe - extra + 1


def deis_time(sigma: torch.Tensor, ab_time: str, beta_min: float = 0.1, beta_max: float = 20.0) -> torch.Tensor:
    """tau(sigma) for the three fitting times (see the module docstring)."""
    if ab_time == "rho":
        return sigma
    if ab_time == "ve":
        return torch.log(sigma)
    if ab_time == "vp":  # solve beta_min t + (beta_max - beta_min) t^2 / 2 = log(1 + sigma^2) for t >= 0
        db, lam = beta_max - beta_min, torch.log1p(sigma * sigma)
        if db == 0:
            return lam / beta_min
        return 2.0 * lam / (beta_min + torch.sqrt(beta_min ** 2 + 2.0 * db * lam))  # stable root
    raise ValueError(f"ab_time must be one of {', '.join(AB_TIMES)}, got {ab_time!r}")


def _gauss_legendre(device) -> tuple[torch.Tensor, torch.Tensor]:
    """QUAD_NODES Gauss-Legendre nodes and weights on [-1, 1], float64 on `device` (copied there once)."""
    key = str(device)
    if key not in _nodes:
        nodes, weights = np.polynomial.legendre.leggauss(QUAD_NODES)
        _nodes[key] = tuple(torch.from_numpy(a).to(device) for a in (nodes, weights))
    return _nodes[key]


def deis_coefficients(sigmas: torch.Tensor, order: int, ab_time: str = "ve", beta_min: float = 0.1,
                      beta_max: float = 20.0) -> torch.Tensor:
    """`[B, N-1, order+1]` float64: C_ij for the steps sigma_i -> sigma_{i+1} of each row of `sigmas`
    (`[B, N]`, positive, non-increasing); entries j > min(i, order) are 0. Computed on the device
    without reading `sigmas` back (DLG builds a new grid per block inside its loop)."""
    check_order(order)
    if not (0 < beta_min <= beta_max):
        raise ValueError(f"beta_min and beta_max must satisfy 0 < beta_min <= beta_max, got {beta_min}, {beta_max}")
    sigmas = sigmas.to(torch.float64)
    B, N = sigmas.shape
    nodes, weights = _gauss_legendre(sigmas.device)
    tau = deis_time(sigmas, ab_time, beta_min, beta_max)  # [B, N]
    C = torch.zeros(B, max(N - 1, 0), order + 1, dtype=torch.float64, device=sigmas.device)
    for i in range(N - 1):
        u0, u1 = torch.log(sigmas[:, i]), torch.log(sigmas[:, i + 1])  # [B]
        u = 0.5 * (u0 + u1)[:, None] + 0.5 * (u1 - u0)[:, None] * nodes  # [B, Q]
        w = 0.5 * (u1 - u0)[:, None] * weights * torch.exp(u)  # dsigma = e^u du
        t = deis_time(torch.exp(u), ab_time, beta_min, beta_max)  # [B, Q]
        r = min(i, order)
        past = [tau[:, i - k] for k in range(r + 1)]  # tau_{i-j}, j = 0 newest
        for j in range(r + 1):
            basis = torch.ones_like(t)
            for k in range(r + 1):
                if k != j:
                    basis = basis * (t - past[k][:, None]) / (past[j] - past[k])[:, None]
            C[:, i, j] = (w * basis).sum(1)
    return torch.nan_to_num(C)  # constant rows (start <= sigma_min): 0/0 in the basis, zero-length step


def _coefficients(sigmas: torch.Tensor, grid_key, order, ab_time, beta_min, beta_max) -> torch.Tensor:
    """deis_coefficients; for a shared grid (`grid_key` = the host-side numbers that made it, or None
    for per-sample starts) one row, cached by that key and expanded to [B] (`common.shared_rows`)."""
    key = None if grid_key is None else ("deis", grid_key, sigmas.shape[1], order, ab_time, beta_min, beta_max,
                                         str(sigmas.device))
    rows = sigmas if grid_key is None else sigmas[:1]
    return shared_rows(key, lambda: deis_coefficients(rows, order, ab_time, beta_min, beta_max), sigmas.shape[0])


def check_order(order: int):
    if not isinstance(order, int) or isinstance(order, bool) or not 0 <= order <= 3:
        raise ValueError(f"order must be an integer in [0, 3], got {order!r}")


def _rk3_step(model, x, s, s_next):
    """Kutta's third-order Runge-Kutta step in sigma on dx/dsigma = d(x, sigma); returns (x', D(x, s))."""
    h = (s_next - s).to(x.dtype)
    hb, s_mid = h.reshape(-1, *([1] * (x.ndim - 1))), (s + 0.5 * (s_next - s)).to(x.dtype)
    denoised = model(x, s.to(x.dtype))
    k1 = to_d(x, s, denoised)
    x2 = x + 0.5 * hb * k1
    k2 = to_d(x2, s_mid, model(x2, s_mid))
    x3 = x + hb * (2.0 * k2 - k1)
    k3 = to_d(x3, s_next, model(x3, s_next.to(x.dtype)))
    return x + hb * (k1 + 4.0 * k2 + k3) / 6.0, denoised


@counted_call
def sample_deis(model, x: torch.Tensor, sigma_start, n_steps: int, *, sigma_min: float = 0.002,
                rho: float = 7.0, order: int = 3, ab_time: str = "ve", beta_min: float = 0.1,
                beta_max: float = 20.0, warm_start: str = "lower_order", seed: int = 0, chain_ids=None,
                step0=0, callback=None, final_tweedie: bool = True) -> IntegratorResult:
    """tAB-DEIS on the Karras grid (rho); defaults: order 3 (tAB3), VE-SDE time, beta range of Song's
    VPSDE, the paper's lower-order warm start."""
    check_order(order)
    if warm_start not in WARM_STARTS:
        raise ValueError(f"warm_start must be one of {', '.join(WARM_STARTS)}, got {warm_start!r}")
    n_rk = _rk_steps(order, warm_start)
    model = ensure_counting(model, x.shape[0], x.device)
    before = model.mark()
    sigmas = per_sample_grid(karras_per_sample, sigma_start, x, n_steps, sigma_min, model, rho=rho)
    shared = None if torch.is_tensor(sigma_start) else (float(sigma_start), sigma_min, rho)
    plan = deis_plan(x, sigmas, n_steps, order, lambda rows: _coefficients(rows, shared, order, ab_time, beta_min,
                                                                            beta_max), shared is not None,
                     options=(ab_time, beta_min, beta_max))
    eps_hist: list[torch.Tensor] = []  # eps_i, eps_{i-1}, ...: newest first
    for i in range(n_steps - 1):
        if i < n_rk:  # order-preserving warm start
            s, s_next = plan.cols[i], plan.cols[i + 1]
            x_next, denoised = (_heun_step(model, x, s, s_next, last=False) if order == 2
                                else _rk3_step(model, x, s, s_next))
            eps_hist = [to_d(x, s, denoised)] + eps_hist[:order]
            x = x_next
        else:
            denoised = model(x, plan.s_in[i])
            eps_hist = [(x - denoised) / plan.s_rows[i]] + eps_hist[:order]  # eps_i = (x_i - D(x_i; sigma_i)) / sigma_i
            r = min(i, order)  # the warm start's lower orders first; plan.c[i] = C_i0 .. C_ir
            x = plan.op.deis_combine(x, eps_hist[:r + 1], 1.0, plan.c[i])  # eq. 14: x_{i+1} = x_i + sum_j C_ij eps_{i-j}
        if callback is not None:
            callback({"i": i, "n": n_steps, "x": x, "sigma": sigmas[:, i], "sigma_next": sigmas[:, i + 1],
                      "denoised": denoised})
    if final_tweedie:  # the Tweedie step x = D(x, sigma_min)
        x = model(x, plan.s_in[n_steps - 1])
    return finish(model, x, before)
