"""DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion
Probabilistic Models", Alg. 2) on the VE probability-flow ODE, and its SDE variant, per-sample Karras grids.

In VE form (alpha = 1) the data-prediction ODE has lambda = -log sigma; with h_i = lambda_{i+1} - lambda_i
and x0_i = D(x_i, sigma_i) the exact solution of the linear part gives

    first order (i = 0, DDIM):  x_{i+1} = (sigma_{i+1}/sigma_i) x_i + (1 - sigma_{i+1}/sigma_i) x0_i
    second order (i >= 1):      x_{i+1} = (sigma_{i+1}/sigma_i) x_i + (1 - sigma_{i+1}/sigma_i) D_i,
                                D_i = (1 + 1/(2 r_i)) x0_i - 1/(2 r_i) x0_{i-1},  r_i = h_{i-1} / h_i

(1 - sigma_{i+1}/sigma_i = -expm1(-h_i)). One model call per step: N grid points cost N NFE with the final
step sigma_min -> 0, the Tweedie denoise x <- D(x, sigma_min) (DPM-Solver++'s first-order step to
sigma = 0 is exactly that). The coefficients are computed once per run for every row of the grid (a row
that starts at or below sigma_min has h = 0: psi = 1 and no update), and each step is `dpmpp_2m_step`
(psi x + c0 x0_i + c1 x0_{i-1}; on CUDA its fused form, `kernels.deis.deis_combine`).

DPM-Solver++(2M) SDE (Lu et al. 2022, Sec. 5 / App. B; as k-diffusion's `sample_dpmpp_2m_sde`): the
data-prediction reverse SDE with a share eta of its noise, exponentially integrated, a = -expm1(-(1+eta) h):

    x_{i+1} = (sigma_{i+1}/sigma_i) e^{-eta h} x_i + a x0_i + corr_i (x0_i - x0_{i-1})
              + s_noise sigma_{i+1} sqrt(1 - e^{-2 eta h}) z_i
    corr_i = a / (2 r_i) ("midpoint") or (a / (-(1+eta) h) + 1) / r_i ("heun"), 0 at i = 0,

z_i = chain_randn(seed, chain_ids, step0 + i, stream=STREAM_SDE): a sample depends on its chain only.
eta = 0 is DPM-Solver++(2M) itself.

DPM-Solver++(3M) SDE (as k-diffusion's `sample_dpmpp_3m_sde`): the same exponential step with the
third-order multistep correction, h_eta = (1 + eta) h, phi_2 = -expm1(-h_eta)/h_eta ... (see
`dpmpp_3m_sde_coefficients`): x_{i+1} = psi x_i + sum_{j<=min(i,2)} c_ij x0_{i-j} + noise, first and second
order on the first two steps.

DPM-Solver++(2S) ancestral (as k-diffusion's `sample_dpmpp_2s_ancestral`, eta in [0, 1]): each step goes
down to sigma_down = sqrt(sigma_{i+1}^2 - sigma_up^2), sigma_up = eta sigma_{i+1} sqrt(1 - sigma_{i+1}^2 /
sigma_i^2), by the single-step second-order DPM-Solver++ (midpoint sigma_s = sqrt(sigma_i sigma_down):
x_s = (sigma_s/sigma_i) x + (1 - sigma_s/sigma_i) x0_i, then x = (sigma_down/sigma_i) x + (1 -
sigma_down/sigma_i) D(x_s, sigma_s)), and adds s_noise sigma_up z_i. Two NFE per step, 2N - 1 in all.

DPM-Solver++ SDE (as k-diffusion's `sample_dpmpp_sde`, eta in [0, 1], r in (0, 1]): two ancestral
half-steps per step. To sigma_s = sigma_i^(1-r) sigma_{i+1}^r: x_s = (d1/sigma_i) x + (1 - d1/sigma_i) x0_i
+ s_noise u1 z_i (d1, u1 = the ancestral step sigma_i -> sigma_s); then to sigma_{i+1}: x = (d2/sigma_i) x +
(1 - d2/sigma_i) ((1 - 1/(2r)) x0_i + 1/(2r) D(x_s, sigma_s)) + s_noise u2 z'_i (d2, u2 for sigma_i ->
sigma_{i+1}). As with k-diffusion's default Brownian-tree noise, both are normalised increments of one
Brownian path in sigma: z_i = w_i, z'_i = sqrt(a) w_i + sqrt(1 - a) w'_i, a = (sigma_i - sigma_s) /
(sigma_i - sigma_{i+1}), with w, w' the chain's draws at step step0 + i of STREAM_SDE and STREAM_SDE + 8
(independent z and z' would give the wrong variance: -13% on N(mu, I) at 30 steps). Two NFE per step.

Each loop is also a function of an explicit positive per-sample grid (`*_on_grid`: no step to 0, that is the
caller's Tweedie step), with its noise from a `common.StepNoise` (what `dmcmc_fast.k` calls).
"""
from __future__ import annotations

import torch

from dmcmc_fast import rng
from dmcmc_fast.integrators.common import counted_call
from dmcmc_fast.integrators.common import (IntegratorResult, StepNoise, ancestral_step, ensure_counting,
                                           exponential_update, finish, fused, per_sample_grid, tweedie)
from dmcmc_fast.integrators.karras import euler_steps_for_nfe, heun_steps_for_nfe
from dmcmc_fast.integrators.plans import exponential_plan
from dmcmc_fast.kernels.deis import deis_combine_triton
from dmcmc_fast.schedules import karras_per_sample

# one model call per step, as Euler
dpmpp_2m_steps_for_nfe = dpmpp_2m_sde_steps_for_nfe = dpmpp_3m_sde_steps_for_nfe = euler_steps_for_nfe
# two model calls per step, one for the step to 0
dpmpp_2s_ancestral_steps_for_nfe = dpmpp_sde_steps_for_nfe = heun_steps_for_nfe
STREAM_SDE_SECOND = rng.STREAM_SDE + 8  # the second draw of a step (as OBABO's second momentum draw)
SOLVER_TYPES = ("midpoint", "heun")


def _check_noise(eta: float, s_noise: float, eta_max: float = 1.0):
    if not 0.0 <= eta <= eta_max:
        raise ValueError(f"eta must be in [0, {eta_max}], got {eta}")
    if not 0.0 <= s_noise < float("inf"):
        raise ValueError(f"s_noise must be in [0, inf), got {s_noise}")


@counted_call
def sample_dpmpp_2m(model, x: torch.Tensor, sigma_start, n_steps: int, *, sigma_min: float = 0.002,
                    rho: float = 7.0, seed: int = 0, chain_ids=None, step0=0, callback=None,
                    final_tweedie: bool = True) -> IntegratorResult:
    """DPM-Solver++(2M) from each sample's own start sigma (module docstring): the SDE variant below with
    eta = 0 (its coefficients are then exactly Alg. 2's, and no noise is drawn). Deterministic."""
    return sample_dpmpp_2m_sde(model, x, sigma_start, n_steps, sigma_min=sigma_min, rho=rho, eta=0.0,
                               seed=seed, chain_ids=chain_ids, step0=step0, callback=callback,
                               final_tweedie=final_tweedie)


def dpmpp_2m_sde_coefficients(sigmas: torch.Tensor, eta: float, solver_type: str = "midpoint"):
    """For a `[B, N]` grid (positive, non-increasing): `psi [B, N-1]`, `c [B, N-1, 2]` (weights of x0_i,
    x0_{i-1}) and the noise scale `[B, N-1]` of each step (module docstring), float64."""
    if solver_type not in SOLVER_TYPES:
        raise ValueError(f"solver_type must be one of {', '.join(SOLVER_TYPES)}, got {solver_type!r}")
    s = sigmas.to(torch.float64)
    h = torch.log(s[:, :-1]) - torch.log(s[:, 1:])  # >= 0; 0 where a row stands still
    psi = s[:, 1:] / s[:, :-1] * torch.exp(-eta * h)
    a = -torch.expm1(-(1.0 + eta) * h)
    inv_r = torch.zeros_like(h)  # 1 / r_i = h_i / h_{i-1}; 0 at i = 0 and where a row stands still
    moving = (h[:, 1:] > 0) & (h[:, :-1] > 0)
    inv_r[:, 1:] = torch.where(moving, h[:, 1:] / h[:, :-1].clamp_min(1e-300), 0.0)
    if solver_type == "midpoint":
        corr = 0.5 * a * inv_r
    else:
        corr = torch.where(h > 0, a / (-(1.0 + eta) * h).clamp_max(-1e-300) + 1.0, 0.0) * inv_r
    noise = s[:, 1:] * torch.sqrt(-torch.expm1(-2.0 * eta * h))
    return psi, torch.stack([a + corr, -corr], dim=2), noise


@counted_call
def sample_dpmpp_2m_sde(model, x: torch.Tensor, sigma_start, n_steps: int, *, sigma_min: float = 0.002,
                        rho: float = 7.0, eta: float = 1.0, s_noise: float = 1.0, solver_type: str = "midpoint",
                        seed: int = 0, chain_ids=None, step0=0, callback=None,
                        final_tweedie: bool = True) -> IntegratorResult:
    """DPM-Solver++(2M) SDE (module docstring); defaults as k-diffusion (eta 1, s_noise 1, midpoint)."""
    return _on_karras_grid(dpmpp_2m_sde_on_grid, model, x, sigma_start, n_steps, sigma_min, rho, seed, chain_ids,
                           step0, callback, final_tweedie, eta=eta, s_noise=s_noise, solver_type=solver_type)


@fused(lambda x, x0, x0_prev, w: deis_combine_triton(x, x0[None] if x0_prev is None else torch.stack([x0, x0_prev]),
                                                    w.psi, w.fused_c))
def dpmpp_2m_step(x, x0, x0_prev, w):
    """One DPM-Solver++(2M) step (Alg. 2; module docstring), x0 = D(x_i, sigma_i), x0_prev = x0_{i-1}:
    x_{i+1} = psi_i x_i + a_i D_i with D_i = (1 + 1/(2 r_i)) x0_i - 1/(2 r_i) x0_{i-1} (first order on step 0,
    x0_prev None), written as the weights of x0_i and x0_{i-1}: c_0 = a_i (1 + 1/(2 r_i)), c_1 = -a_i/(2 r_i)
    (psi_i = sigma_{i+1}/sigma_i e^{-eta h_i}, a_i = -expm1(-(1 + eta) h_i); `dpmpp_2m_sde_coefficients`;
    `w` the step's `plans.Weights`)."""
    if x0_prev is None:
        return w.psi * x + w.c[0] * x0
    return w.psi * x + w.c[0] * x0 + w.c[1] * x0_prev


def dpmpp_2m_sde_on_grid(model, x: torch.Tensor, sigmas: torch.Tensor, *, eta: float = 1.0, s_noise: float = 1.0,
                         solver_type: str = "midpoint", noise: StepNoise | None = None, n: int | None = None,
                         callback=None) -> torch.Tensor:
    """The DPM-Solver++(2M) SDE loop on a positive per-sample grid `sigmas` `[B, M]` float64 (M - 1 steps,
    no step to 0): `dpmpp_2m_step`, then (eta > 0) + s_noise sigma_{i+1} sqrt(1 - e^{-2 eta h_i}) z_i, z_i from
    `noise` (STREAM_SDE). The weights per step, cast once, are the plan's (`plans.ExponentialPlan`)."""
    _check_noise(eta, s_noise, eta_max=float("inf"))
    noise = StepNoise() if noise is None else noise
    psi, c, scale = dpmpp_2m_sde_coefficients(sigmas, eta, solver_type)
    plan = exponential_plan(x, (psi, c, [1] + [2] * (psi.shape[1] - 1)), noise=s_noise * scale,
                            math=(dpmpp_2m_step,))
    x0_prev = None
    for i in range(sigmas.shape[1] - 1):
        s, s_next = sigmas[:, i], sigmas[:, i + 1]
        x0 = model(x, s.to(x.dtype))
        x = plan.op.dpmpp_2m_step(x, x0, x0_prev, plan.steps[i])
        if eta > 0:
            x = x + plan.noise[i] * noise(x, i, rng.STREAM_SDE, s, s_next)
        x0_prev = x0
        if callback is not None:
            callback({"i": i, "n": n, "x": x, "sigma": s, "sigma_next": s_next, "denoised": x0})
    return x


def dpmpp_3m_sde_coefficients(sigmas: torch.Tensor, eta: float):
    """For a `[B, N]` grid: `psi [B, N-1]`, `c [B, N-1, 3]` (weights of x0_i, x0_{i-1}, x0_{i-2}) and the
    noise scale `[B, N-1]`, float64. With r0 = h_{i-1}/h_i, r1 = h_{i-2}/h_i, d1_0 = (x0_i - x0_{i-1})/r0,
    d1_1 = (x0_{i-1} - x0_{i-2})/r1, the correction phi_2 d1 - phi_3 d2 (d1 = d1_0 + (d1_0 - d1_1) r0/(r0+r1),
    d2 = (d1_0 - d1_1)/(r0+r1)) is alpha d1_0 + beta d1_1, written here per x0."""
    s = sigmas.to(torch.float64)
    h = torch.log(s[:, :-1]) - torch.log(s[:, 1:])
    moves = h > 0
    h_eta = (1.0 + eta) * h
    a = -torch.expm1(-h_eta)
    safe = torch.where(moves, h_eta, 1.0)
    phi_2 = torch.where(moves, torch.expm1(-safe) / safe + 1.0, 0.0)
    phi_3 = torch.where(moves, phi_2 / safe - 0.5, 0.0)
    psi = torch.exp(-h_eta)
    B, n = h.shape
    c = torch.zeros(B, n, 3, dtype=torch.float64, device=s.device)
    c[:, :, 0] = a
    if n > 1:  # step 1: second order, r = h_0 / h_1
        ok = moves[:, 1] & moves[:, 0]
        inv_r = torch.where(ok, h[:, 1] / h[:, 0].clamp_min(1e-300), 0.0)
        c[:, 1, 0] += phi_2[:, 1] * inv_r
        c[:, 1, 1] = -phi_2[:, 1] * inv_r
    if n > 2:  # steps i >= 2: third order
        hi, h1, h2 = h[:, 2:], h[:, 1:-1], h[:, :-2]
        ok = moves[:, 2:] & moves[:, 1:-1] & moves[:, :-2]
        r0, r1 = torch.where(ok, h1 / hi.clamp_min(1e-300), 1.0), torch.where(ok, h2 / hi.clamp_min(1e-300), 1.0)
        p2, p3 = phi_2[:, 2:], phi_3[:, 2:]
        alpha = torch.where(ok, p2 * (1.0 + r0 / (r0 + r1)) - p3 / (r0 + r1), 0.0)
        beta = torch.where(ok, -p2 * r0 / (r0 + r1) + p3 / (r0 + r1), 0.0)
        c[:, 2:, 0] += alpha / r0
        c[:, 2:, 1] = -alpha / r0 + beta / r1
        c[:, 2:, 2] = -beta / r1
    noise = s[:, 1:] * torch.sqrt(-torch.expm1(-2.0 * eta * h))
    return psi, c, noise


@counted_call
def sample_dpmpp_3m_sde(model, x: torch.Tensor, sigma_start, n_steps: int, *, sigma_min: float = 0.002,
                        rho: float = 7.0, eta: float = 1.0, s_noise: float = 1.0, seed: int = 0, chain_ids=None,
                        step0=0, callback=None, final_tweedie: bool = True) -> IntegratorResult:
    """DPM-Solver++(3M) SDE (module docstring); defaults as k-diffusion (eta 1, s_noise 1)."""
    return _on_karras_grid(dpmpp_3m_sde_on_grid, model, x, sigma_start, n_steps, sigma_min, rho, seed, chain_ids,
                           step0, callback, final_tweedie, eta=eta, s_noise=s_noise)


def dpmpp_3m_sde_on_grid(model, x: torch.Tensor, sigmas: torch.Tensor, *, eta: float = 1.0, s_noise: float = 1.0,
                         noise: StepNoise | None = None, n: int | None = None, callback=None) -> torch.Tensor:
    """The DPM-Solver++(3M) SDE loop on a positive per-sample grid `sigmas` `[B, M]` float64 (M - 1 steps,
    no step to 0); noise z_i from `noise` (STREAM_SDE)."""
    _check_noise(eta, s_noise, eta_max=float("inf"))
    noise = StepNoise() if noise is None else noise
    psi, c, scale = dpmpp_3m_sde_coefficients(sigmas, eta)
    plan = exponential_plan(x, (psi, c, [min(i + 1, 3) for i in range(psi.shape[1])]), noise=s_noise * scale,
                            math=(exponential_update,))
    hist: list[torch.Tensor] = []  # x0_i, x0_{i-1}, x0_{i-2}
    for i in range(sigmas.shape[1] - 1):
        s, s_next = sigmas[:, i], sigmas[:, i + 1]
        denoised = model(x, s.to(x.dtype))
        hist = [denoised] + hist[:2]
        x = plan.op.exponential_update(x, hist, plan.steps[i])  # psi x_i + sum_j c_ij x0_{i-j}
        if eta > 0:
            x = x + plan.noise[i] * noise(x, i, rng.STREAM_SDE, s, s_next)
        if callback is not None:
            callback({"i": i, "n": n, "x": x, "sigma": s, "sigma_next": s_next, "denoised": denoised})
    return x


@counted_call
def sample_dpmpp_2s_ancestral(model, x: torch.Tensor, sigma_start, n_steps: int, *, sigma_min: float = 0.002,
                              rho: float = 7.0, eta: float = 1.0, s_noise: float = 1.0, seed: int = 0,
                              chain_ids=None, step0=0, callback=None, final_tweedie: bool = True) -> IntegratorResult:
    """DPM-Solver++(2S) ancestral (module docstring); defaults as k-diffusion (eta 1, s_noise 1)."""
    return _on_karras_grid(dpmpp_2s_ancestral_on_grid, model, x, sigma_start, n_steps, sigma_min, rho, seed, chain_ids,
                           step0, callback, final_tweedie, eta=eta, s_noise=s_noise)


def dpmpp_2s_ancestral_on_grid(model, x: torch.Tensor, sigmas: torch.Tensor, *, eta: float = 1.0,
                               s_noise: float = 1.0, noise: StepNoise | None = None, n: int | None = None,
                               callback=None) -> torch.Tensor:
    """The DPM-Solver++(2S) ancestral loop on a positive per-sample grid `sigmas` `[B, M]` float64 (M - 1 steps,
    no step to 0); noise z_i from `noise` (STREAM_SDE)."""
    _check_noise(eta, s_noise)
    noise = StepNoise() if noise is None else noise
    s_from, s_to = sigmas[:, :-1], sigmas[:, 1:]  # [B, M-1] float64, both > 0
    s_down, s_up = ancestral_step(s_from, s_to, eta)
    s_mid = torch.sqrt(s_from * s_down)
    to_mid, to_down, one = s_mid / s_from, s_down / s_from, [1] * s_from.shape[1]
    plan = exponential_plan(x, (to_mid, (1.0 - to_mid)[..., None], one), more=(to_down, (1.0 - to_down)[..., None], one),
                            noise=s_noise * s_up, math=(exponential_update,))
    for i in range(sigmas.shape[1] - 1):
        s, mid = s_from[:, i], s_mid[:, i]
        denoised = model(x, s.to(x.dtype))
        x_mid = plan.op.exponential_update(x, (denoised,), plan.steps[i])  # (s/s_i) x + (1 - s/s_i) x0_i, s = sigma_s
        x = plan.op.exponential_update(x, (model(x_mid, mid.to(x.dtype)),), plan.more[i])  # to sigma_down, D(x_s)
        if eta > 0:
            x = x + plan.noise[i] * noise(x, i, rng.STREAM_SDE, s, s_to[:, i])
        if callback is not None:
            callback({"i": i, "n": n, "x": x, "sigma": s, "sigma_next": s_to[:, i], "denoised": denoised})
    return x


@counted_call
def sample_dpmpp_sde(model, x: torch.Tensor, sigma_start, n_steps: int, *, sigma_min: float = 0.002,
                     rho: float = 7.0, eta: float = 1.0, s_noise: float = 1.0, r: float = 0.5, seed: int = 0,
                     chain_ids=None, step0=0, callback=None, final_tweedie: bool = True) -> IntegratorResult:
    """DPM-Solver++ SDE (module docstring); defaults as k-diffusion (eta 1, s_noise 1, r 1/2)."""
    return _on_karras_grid(dpmpp_sde_on_grid, model, x, sigma_start, n_steps, sigma_min, rho, seed, chain_ids,
                           step0, callback, final_tweedie, eta=eta, s_noise=s_noise, r=r)


def dpmpp_sde_on_grid(model, x: torch.Tensor, sigmas: torch.Tensor, *, eta: float = 1.0, s_noise: float = 1.0,
                      r: float = 0.5, noise: StepNoise | None = None, n: int | None = None,
                      callback=None) -> torch.Tensor:
    """The DPM-Solver++ SDE loop on a positive per-sample grid `sigmas` `[B, M]` float64 (M - 1 steps, no step
    to 0). From the chain's stream the two draws of a step are combined into Brownian increments (module
    docstring); a `noise.sampler` is asked for them directly, as k-diffusion does: over (sigma_i, sigma_s),
    then over the whole step (sigma_i, sigma_{i+1})."""
    _check_noise(eta, s_noise)
    if not 0.0 < r <= 1.0:
        raise ValueError(f"r must be in (0, 1], got {r}")
    noise = StepNoise() if noise is None else noise
    s_from, s_to = sigmas[:, :-1], sigmas[:, 1:]
    s_mid = s_from ** (1.0 - r) * s_to ** r
    d1, u1 = ancestral_step(s_from, s_mid, eta)
    d2, u2 = ancestral_step(s_from, s_to, eta)
    fac = 1.0 / (2.0 * r)
    psi1, psi2 = d1 / s_from, d2 / s_from
    c2 = torch.stack([(1.0 - psi2) * (1.0 - fac), (1.0 - psi2) * fac], dim=2)  # weights of (x0_i, D(x_s))
    n_steps = s_from.shape[1]
    plan = exponential_plan(x, (psi1, (1.0 - psi1)[..., None], [1] * n_steps), more=(psi2, c2, [2] * n_steps),
                            math=(exponential_update,))
    a = torch.where(s_from > s_to, (s_from - s_mid) / (s_from - s_to).clamp_min(1e-300), 0.0)  # Brownian share
    shape = (*s_from.shape, *([1] * (x.ndim - 1)))
    u1, u2, a1, a2 = (v.to(x.dtype).reshape(shape) for v in (s_noise * u1, s_noise * u2, a.sqrt(), (1.0 - a).sqrt()))
    for i in range(sigmas.shape[1] - 1):
        s = s_from[:, i]
        denoised = model(x, s.to(x.dtype))
        x_mid = plan.op.exponential_update(x, (denoised,), plan.steps[i])  # (d1/s_i) x + (1 - d1/s_i) x0_i
        if eta > 0:
            w = noise(x, i, rng.STREAM_SDE, s, s_mid[:, i])
            x_mid = x_mid + u1[:, i] * w
        # (d2/s_i) x + (1 - d2/s_i) ((1 - 1/(2r)) x0_i + 1/(2r) D(x_s, sigma_s))
        x = plan.op.exponential_update(x, (denoised, model(x_mid, s_mid[:, i].to(x.dtype))), plan.more[i])
        if eta > 0:  # the whole step's increment
            if noise.sampler is None:  # the midpoint's part and an independent rest
                z = a1[:, i] * w + a2[:, i] * noise(x, i, STREAM_SDE_SECOND, s, s_to[:, i])
            else:
                z = noise(x, i, rng.STREAM_SDE, s, s_to[:, i])
            x = x + u2[:, i] * z
        if callback is not None:
            callback({"i": i, "n": n, "x": x, "sigma": s, "sigma_next": s_to[:, i], "denoised": denoised})
    return x


def _on_karras_grid(loop, model, x, sigma_start, n_steps, sigma_min, rho, seed, chain_ids, step0, callback,
                    final_tweedie, **options) -> IntegratorResult:
    """Run an `*_on_grid` loop on each sample's Karras grid from its own start sigma, with the chain's own
    noise, then the final Tweedie step; NFE counted per sample."""
    model = ensure_counting(model, x.shape[0], x.device)
    before = model.mark()
    sigmas = per_sample_grid(karras_per_sample, sigma_start, x, n_steps, sigma_min, model, rho=rho)
    x = loop(model, x, sigmas[:, :n_steps], noise=StepNoise(seed, chain_ids, step0), n=n_steps, callback=callback,
             **options)
    if final_tweedie:
        x = tweedie(model, x, sigmas[:, n_steps - 1])
    return finish(model, x, before)
