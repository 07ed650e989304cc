"""k-diffusion's first samplers, with k-diffusion's signatures and semantics (`dmcmc_fast.k.sampling`):

- `sample_dpm_2`: EDM Alg. 2's churn, then a DPM-Solver-2 step (Lu et al. 2022, Alg. 1 with r = 1/2 in log
  sigma): an Euler step to the geometric midpoint sigma_mid = sqrt(sigma_hat sigma_{i+1}), and the full step with
  the derivative there; the step to 0 is Euler. 2 NFE per step, 1 for the last.
- `sample_dpm_2_ancestral`: the same step down to sigma_down, then ancestral noise sigma_up
  (`get_ancestral_step`); where sigma_down = 0 an Euler step and no noise (as k-diffusion).
- `sample_lms`: linear multistep in sigma (Karras et al. 2022, "LMS"): x_{i+1} = x_i + sum_j c_ij d_{i-j}, with
  c_ij the integral over [sigma_i, sigma_{i+1}] of the Lagrange basis polynomial through sigma_i, ..., sigma_{i-p+1}
  (p = min(i + 1, order)); integrated exactly here (k-diffusion: scipy's quad, exact to ~1e-15 for these
  polynomials). 1 NFE per step.
- `sample_dpm_fast`: DPM-Solver-fast (Lu et al. 2022, sec. 3.4): M = n // 3 + 1 steps uniform in t = -log sigma
  from sigma_max to sigma_min, of orders 3, ..., 3 then (2, 1) or (n mod 3), exactly n NFE; with eta > 0 each
  step goes to t(sigma_down) and adds sigma_up noise. No step to 0.

The per-step coefficients are computed once on the host in float64 from the grid (no device read in the loop).
Noise: a `noise_sampler` is called where k-diffusion calls it (0-d sigmas in the grid's dtype); without one,
each sample draws from its own Philox stream under `seed` (k-diffusion: torch's global RNG), as the other
samplers of this layer. `sample_dpm_2`'s churn takes one too, as `sample_heun`'s does.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from dmcmc_fast import rng
from dmcmc_fast.integrators import karras
from dmcmc_fast.integrators.common import StepNoise
from dmcmc_fast.k.sampling import _KDenoiser, _progress, _Run, get_ancestral_step, to_d


def _sigma(x: torch.Tensor, value: float) -> torch.Tensor:
    """One noise level for the whole batch, `[B]` in x's dtype (the model's call shape)."""
    return torch.full((x.shape[0],), value, dtype=x.dtype, device=x.device)


def _denoise(model: _KDenoiser, x: torch.Tensor, sigma: float) -> torch.Tensor:
    return model(x, _sigma(x, sigma))


def _tick(run: _Run):
    if run.bar is not None:
        run.bar.update(1)


def _callback(run: _Run, x, i: int, sigma_hat, denoised):
    """k-diffusion's callback dict, before the step's update (where k-diffusion calls it)."""
    if run.callback is not None:
        run.callback({"x": x, "i": i, "sigma": run.sigmas[i], "sigma_hat": sigma_hat, "denoised": denoised})


def _draw(run: _Run, noise, x, i: int, stream: int) -> torch.Tensor:
    """Step i's standard normals (the noise sampler over [sigma_{i+1}, sigma_i], else the chains' streams)."""
    return noise(x, i, stream, run.rows[:, i], run.rows[:, i + 1])


def _dpm2_step(run: _Run, x, d, sigma: float, sigma_to: float) -> torch.Tensor:
    """DPM-Solver-2 from `sigma` to `sigma_to` > 0 given d at sigma: Euler to the geometric midpoint, then the full
    step with the midpoint's derivative (1 NFE)."""
    mid = math.exp(0.5 * (math.log(sigma) + math.log(sigma_to)))
    x_mid = x + d * (mid - sigma)
    return x + to_d(x_mid, mid, _denoise(run.model, x_mid, mid)) * (sigma_to - sigma)


@torch.no_grad()
def sample_dpm_2(model, x, sigmas, extra_args=None, callback=None, disable=None, s_churn=0., s_tmin=0.,
                 s_tmax=float('inf'), s_noise=1., *, noise_sampler=None, seed=None):
    """DPM-Solver-2 steps with EDM churn (module docstring); 2N - 1 NFE on N levels then 0."""
    karras.check_churn(s_churn, s_tmin, s_tmax, s_noise)
    run = _Run(model, x, sigmas, extra_args, callback, disable)
    noise = run.noise(noise_sampler, seed) if s_churn > 0 else None
    g = run.grid
    for i in range(run.steps):
        gamma = min(s_churn / run.steps, math.sqrt(2.0) - 1.0) if s_tmin <= g[i] <= s_tmax else 0.0
        sigma_hat = g[i] * (1.0 + gamma)
        if gamma > 0:  # EDM Alg. 2 lines 5-6: raise the level to sigma_hat with fresh noise
            x = x + _draw(run, noise, x, i, rng.STREAM_CHURN) * s_noise * math.sqrt(sigma_hat ** 2 - g[i] ** 2)
        denoised = _denoise(run.model, x, sigma_hat)
        d = to_d(x, sigma_hat, denoised)
        _callback(run, x, i, run.sigmas[i] * (1.0 + gamma) if gamma else run.sigmas[i], denoised)
        x = x + d * (g[i + 1] - sigma_hat) if g[i + 1] == 0 else _dpm2_step(run, x, d, sigma_hat, g[i + 1])
        _tick(run)
    return run.finish(x)


@torch.no_grad()
def sample_dpm_2_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1., s_noise=1.,
                           noise_sampler=None, *, seed=None):
    """DPM-Solver-2 steps to sigma_down, then sigma_up noise (module docstring)."""
    run = _Run(model, x, sigmas, extra_args, callback, disable)
    noise = run.noise(noise_sampler, seed)
    g = run.grid
    for i in range(run.steps):
        denoised = _denoise(run.model, x, g[i])
        down, up = get_ancestral_step(g[i], g[i + 1], eta=eta)
        _callback(run, x, i, run.sigmas[i], denoised)
        d = to_d(x, g[i], denoised)
        if down == 0:
            x = x + d * (down - g[i])
        else:
            x = _dpm2_step(run, x, d, g[i], down)
            x = x + _draw(run, noise, x, i, rng.STREAM_SDE) * s_noise * up
        _tick(run)
    return run.finish(x)


def linear_multistep_coeff(order: int, t, i: int, j: int) -> float:
    """The integral over [t_i, t_{i+1}] of the Lagrange basis polynomial of node t_{i-j} through t_i, ...,
    t_{i-order+1} (exact, in float64)."""
    if order - 1 > i:
        raise ValueError(f'Order {order} too high for step {i}')
    nodes = [float(t[i - k]) for k in range(order)]
    basis = np.polynomial.Polynomial([1.0])
    for k, node in enumerate(nodes):
        if k != j:
            basis = basis * np.polynomial.Polynomial([-node, 1.0]) / (nodes[j] - node)
    integral = basis.integ()
    return float(integral(float(t[i + 1])) - integral(float(t[i])))


@torch.no_grad()
def sample_lms(model, x, sigmas, extra_args=None, callback=None, disable=None, order=4):
    """Linear multistep of `order` in sigma (module docstring); N NFE on N levels then 0."""
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise ValueError(f"order must be an int >= 1, got {order!r}")
    run = _Run(model, x, sigmas, extra_args, callback, disable)
    g = run.grid
    coeffs = [[linear_multistep_coeff(min(i + 1, order), g, i, j) for j in range(min(i + 1, order))]
              for i in range(run.steps)]
    ds: list[torch.Tensor] = []  # the last `order` derivatives, newest last
    for i in range(run.steps):
        denoised = _denoise(run.model, x, g[i])
        ds = (ds + [to_d(x, g[i], denoised)])[-order:]
        _callback(run, x, i, run.sigmas[i], denoised)
        x = x + sum(c * d for c, d in zip(coeffs[i], reversed(ds)))
        _tick(run)
    return run.finish(x)


def _dpm_fast_orders(n: int) -> list[int]:
    """DPM-Solver-fast's step orders for n NFE (Lu et al. 2022, sec. 3.4): they sum to n."""
    m = n // 3 + 1
    return [3] * (m - 2) + [2, 1] if n % 3 == 0 else [3] * (m - 1) + [n % 3]


def _dpm_solver_step(model: _KDenoiser, x, eps, t: float, t_next: float, order: int, sigma) -> torch.Tensor:
    """DPM-Solver-1/2/3 from t to t_next (t = -log sigma; Lu et al. 2022, Alg. 1 (r1 = 1/2) and Alg. 2 (r1 = 1/3,
    r2 = 2/3)) given eps at t; order - 1 NFE."""
    h = t_next - t
    s_next = sigma(t_next)
    if order == 1:
        return x - s_next * math.expm1(h) * eps

    def eps_at(u, tau):
        return (u - _denoise(model, u, sigma(tau))) / sigma(tau)

    r1 = 0.5 if order == 2 else 1.0 / 3.0
    s1 = t + r1 * h
    u1 = x - sigma(s1) * math.expm1(r1 * h) * eps
    eps1 = eps_at(u1, s1)
    if order == 2:
        return x - s_next * math.expm1(h) * eps - s_next / (2 * r1) * math.expm1(h) * (eps1 - eps)
    r2 = 2.0 / 3.0
    s2 = t + r2 * h
    u2 = x - sigma(s2) * math.expm1(r2 * h) * eps - sigma(s2) * (r2 / r1) * (math.expm1(r2 * h) / (r2 * h) - 1) * (
        eps1 - eps)
    eps2 = eps_at(u2, s2)
    return x - s_next * math.expm1(h) * eps - s_next / r2 * (math.expm1(h) / h - 1) * (eps2 - eps)


@torch.no_grad()
def sample_dpm_fast(model, x, sigma_min, sigma_max, n, extra_args=None, callback=None, disable=None, eta=0.,
                    s_noise=1., noise_sampler=None, *, seed=None):
    """DPM-Solver-fast with exactly `n` NFE from sigma_max (x's level) to sigma_min, no step to 0 (module
    docstring). The callback gets {'x', 'i', 't', 't_up', 'denoised', 'sigma', 'sigma_hat'} per step."""
    sigma_min, sigma_max = float(sigma_min), float(sigma_max)
    if sigma_min <= 0 or sigma_max <= 0:
        raise ValueError(f"sigma_min and sigma_max must be > 0, got {sigma_min}, {sigma_max}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n (the NFE) must be an int >= 1, got {n!r}")
    if eta and not sigma_max > sigma_min:
        raise ValueError('eta must be 0 for reverse sampling')
    orders = _dpm_fast_orders(n)
    # the step times uniform in t = -log sigma, in torch's default dtype as k-diffusion makes them (its steps then
    # use these values; the coefficients below are float64)
    t_start, t_end = (float(-torch.tensor(s).log()) for s in (sigma_max, sigma_min))
    ts = torch.linspace(t_start, t_end, len(orders) + 1).tolist()

    def sigma(t):
        return math.exp(-t)

    bar = _progress(n, disable)
    model = _KDenoiser(model, extra_args, x, tick=None if bar is None else lambda: bar.update(1))
    step_noise = None
    if eta and noise_sampler is None:
        step_noise = StepNoise(seed=int(torch.randint(0, 2 ** 63 - 1, ())) if seed is None else seed)
    for i, order in enumerate(orders):
        t, t_next = ts[i], ts[i + 1]
        t_to, up = t_next, 0.0
        if eta:  # the step goes to sigma_down (not below sigma_min), the rest is noise
            down, _ = get_ancestral_step(sigma(t), sigma(t_next), eta)
            t_to = min(t_end, -math.log(down)) if down > 0 else t_end
            up = math.sqrt(max(sigma(t_next) ** 2 - sigma(t_to) ** 2, 0.0))
        denoised = _denoise(model, x, sigma(t))
        eps = (x - denoised) / sigma(t)
        if callback is not None:
            s = torch.tensor(sigma(t))
            callback({"x": x, "i": i, "t": torch.tensor(t), "t_up": torch.tensor(t), "denoised": denoised,
                      "sigma": s, "sigma_hat": s})
        x = _dpm_solver_step(model, x, eps, t, t_to, order, sigma)
        if eta:
            x = x + up * s_noise * _fast_noise(x, i, sigma(t), sigma(t_next), noise_sampler, step_noise)
    if bar is not None:
        bar.close()
    model.end_call(x)
    return x


def _fast_noise(x, i: int, sigma: float, sigma_next: float, noise_sampler, step_noise) -> torch.Tensor:
    """dpm_fast's draw at step i: the noise sampler's (given 0-d sigmas in torch's default dtype, as
    k-diffusion's), else the chains' own streams."""
    if noise_sampler is None:
        return step_noise(x, i, rng.STREAM_SDE, None, None)
    z = noise_sampler(*(torch.tensor(v, dtype=torch.get_default_dtype()) for v in (sigma, sigma_next)))
    if tuple(z.shape) != tuple(x.shape):
        raise ValueError(f"noise_sampler returned shape {tuple(z.shape)}; it must return x's shape {tuple(x.shape)}")
    return z.to(x.dtype)
