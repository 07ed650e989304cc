"""Probability-flow ODE with adaptive RK45 (Dormand-Prince 5(4)), as Song et al. 2021's ODE sampler.

In u = log sigma the VE probability-flow ODE reads dx/du = sigma dx/dsigma = x - D(x, e^u). Each sample
is its own initial-value problem from log sigma_start[b] to log sigma_min with its own step-size
control. One batched solve in the usual sense would share the control (an error norm over the whole
batch), so a sample would depend on its batch mates; here every sample keeps its own u, step h, error
norm and accept/reject decision, and only the *model calls* are batched: stage s of every sample still
integrating is one call with a per-sample sigma. That is `sample_rk45` (the fast path).

`sample_rk45_scipy` is the reference: one `scipy.integrate.solve_ivp(method="RK45")` per sample (B
model calls of batch 1 per stage). `sample_rk45` follows the same controller step for step (Hairer,
Norsett & Wanner, *Solving ODEs I*, Sec. II.4: the initial-step heuristic, the error estimate
||h K^T E / scale||_rms with scale = atol + max(|y|, |y_new|) rtol, factors SAFETY err^(-1/5) clipped to
[0.2, 10], no growth right after a rejection, FSAL), with the tableau taken from scipy's `RK45` class;
the tests compare the two sample by sample (same NFE, same result to rounding).

NFE: per sample, 1 (f at the start) + 1 (initial-step probe) + 6 per attempted step (accepted or
not), plus 1 for the final Tweedie step. Budget: `max_nfe` (`n_steps` in the common call shape;
`rk45_steps_for_nfe(nfe) = nfe`). An adaptive solver cannot promise a cost in advance, so a solve that
needs more evaluations is stopped and the call raises ValueError naming rtol/atol and the budget —
loosen the tolerances or raise the budget; the tolerances are never changed behind the user's back.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy.integrate import RK45 as _DormandPrince
from scipy.integrate import solve_ivp

from dmcmc_fast.integrators.common import counted_call
from dmcmc_fast.integrators.common import (IntegratorResult, finish, check_nfe, check_steps, ensure_counting,
                                           report_finished, start_sigma, tweedie)

SAFETY, MIN_FACTOR, MAX_FACTOR = 0.9, 0.2, 10.0  # step-size controller constants (as scipy's RK45)
ERROR_EXPONENT = -1.0 / (_DormandPrince.error_estimator_order + 1)


def rk45_steps_for_nfe(nfe: int, final_tweedie: bool = True, **_options) -> int:
    """The budget itself: RK45 spends what its tolerances need, up to `nfe` (else it raises)."""
    check_nfe(nfe, "rk45")
    return nfe


def _check(n_steps, rtol, atol, sigma_min):
    check_steps(n_steps, "n_steps (the NFE budget of rk45)")
    for name, tol in (("rtol", rtol), ("atol", atol)):
        if not (0 < tol <= 1):
            raise ValueError(f"{name} must be in (0, 1], got {tol}")
    if not (sigma_min > 0):
        raise ValueError(f"sigma_min must be > 0, got {sigma_min}")


def _over_budget(b: int, budget: int, s0: float, rtol: float, atol: float) -> ValueError:
    return ValueError(f"rk45 needs more than {budget} NFE for sample {b} (start sigma {s0:.4g}) at "
                      f"rtol={rtol}, atol={atol}: raise the NFE budget or loosen rtol/atol")


def _rms(v: torch.Tensor) -> torch.Tensor:
    return v.norm(dim=1) / math.sqrt(v.shape[1])


@counted_call
def sample_rk45(model, x: torch.Tensor, sigma_start, n_steps: int, *, sigma_min: float = 0.002,
                rtol: float = 1e-5, atol: float = 1e-5, seed: int = 0, chain_ids=None, step0=0,
                callback=None, final_tweedie: bool = True) -> IntegratorResult:
    """Defaults rtol = atol = 1e-5 as in Song et al.'s `ode_sampler`. `n_steps` is the NFE cap per sample.

    The state is kept in float64 (as scipy keeps it); the model sees `x.dtype`. `callback` is called
    once per sample as it reaches sigma_min, with `i` its row and `nfev` the solver's count.
    """
    _check(n_steps, rtol, atol, sigma_min)
    model = ensure_counting(model, x.shape[0], x.device)
    before = model.nfe.clone()  # indexed per sample below
    ode_budget = n_steps - int(final_tweedie)
    dev, dt, shape = x.device, x.dtype, x.shape[1:]
    s0 = start_sigma(sigma_start, x, model).clamp(min=sigma_min).to(dev, torch.float64)
    u_end = math.log(sigma_min)
    A, Bw, C, E = (torch.as_tensor(np.asarray(m, dtype=np.float64), device=dev)
                   for m in (_DormandPrince.A, _DormandPrince.B, _DormandPrince.C, _DormandPrince.E))
    out = x.clone()
    rows = torch.nonzero(s0.log() > u_end).flatten()  # samples that move at all (setup: one sync)
    u = s0.log()[rows]
    y = x[rows].reshape(len(rows), math.prod(shape)).double()
    calls = 0  # model calls so far; every active sample is in every call, so its NFE is `calls` (host-known)

    def velocity(u_, y_, rows_):  # dx/du = x - D(x, e^u), every row at its own u
        xb = y_.to(dt).reshape(len(rows_), *shape)
        return (xb - model(xb, u_.exp().to(dt), idx=rows_)).reshape(len(rows_), -1).double()

    def check_budget(ahead: int):  # before the next `ahead` calls; only the error path reads the device
        if calls + ahead > ode_budget:
            b = int(rows[0])
            raise _over_budget(b, ode_budget, float(s0[b]), rtol, atol)

    if len(rows):
        # initial step (Hairer et al. II.4, scipy's select_initial_step), direction -1
        check_budget(2)
        f = velocity(u, y, rows)
        interval = u - u_end
        scale = atol + y.abs() * rtol
        d0, d1 = _rms(y / scale), _rms(f / scale)
        h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1)
        h0 = torch.minimum(h0, interval)
        f1 = velocity(u - h0, y - h0[:, None] * f, rows)
        calls += 2
        d2 = _rms((f1 - f) / scale) / h0
        h1 = torch.where((d1 <= 1e-15) & (d2 <= 1e-15), torch.clamp(h0 * 1e-3, min=1e-6),
                         (0.01 / torch.maximum(d1, d2)) ** -ERROR_EXPONENT)
        h_abs = torch.minimum(torch.minimum(100 * h0, h1), interval)
        rejected = torch.zeros(len(rows), dtype=torch.bool, device=dev)  # the current step saw a rejection
    while len(rows):
        check_budget(6)
        min_step = 10 * (torch.nextafter(u, torch.full_like(u, -math.inf)) - u).abs()
        h_abs = torch.where(rejected, h_abs, torch.maximum(h_abs, min_step))  # a new step starts >= min_step
        too_small = h_abs < min_step
        u_new = torch.maximum(u - h_abs, torch.full_like(u, u_end))  # never past sigma_min
        h = u_new - u  # negative
        h_abs = h.abs()
        K = y.new_empty((7, *y.shape))  # the Dormand-Prince stages; K[6] = f at the new point (FSAL)
        K[0] = f
        for s in range(1, 6):
            dy = torch.einsum("sbd,s->bd", K[:s], A[s, :s]) * h[:, None]
            K[s] = velocity(u + C[s] * h, y + dy, rows)
        y_new = y + h[:, None] * torch.einsum("sbd,s->bd", K[:6], Bw)
        f_new = K[6] = velocity(u + h, y_new, rows)
        calls += 6
        scale = atol + torch.maximum(y.abs(), y_new.abs()) * rtol
        err = _rms(torch.einsum("sbd,s->bd", K, E) * h[:, None] / scale)
        accept = err < 1
        grow = torch.where(err == 0, torch.full_like(err, MAX_FACTOR),
                           torch.clamp(SAFETY * err ** ERROR_EXPONENT, max=MAX_FACTOR))
        grow = torch.where(rejected, torch.clamp(grow, max=1.0), grow)
        shrink = torch.clamp(SAFETY * err ** ERROR_EXPONENT, min=MIN_FACTOR)
        h_abs = h_abs * torch.where(accept, grow, shrink)
        u, y, f = torch.where(accept, u_new, u), torch.where(accept[:, None], y_new, y), \
            torch.where(accept[:, None], f_new, f)
        rejected = ~accept
        done = accept & (u <= u_end)
        # The adaptive solver's one host decision per step (6 network calls): did a step size underflow,
        # did a sample finish. One read of two flags; the compaction below runs only on steps where
        # samples finish (at most once per sample).
        any_too_small, any_done = torch.stack([too_small.any(), done.any()]).tolist()
        if any_too_small:
            b = int(rows[int(torch.nonzero(too_small)[0])])
            raise RuntimeError(f"rk45 failed on sample {b}: required step size is less than spacing between numbers.")
        if any_done:
            out[rows[done]] = y[done].to(dt).reshape(-1, *shape)
            if callback is not None:
                report_finished(callback, rows[done].tolist(), out, s0, sigma_min, model, before)
            keep = ~done
            rows, u, y, f, h_abs, rejected = rows[keep], u[keep], y[keep], f[keep], h_abs[keep], rejected[keep]
    if final_tweedie:
        out = tweedie(model, out, torch.full((x.shape[0],), sigma_min, dtype=torch.float64, device=dev))
    return finish(model, out, before)


class _OverBudget(Exception):
    pass


@counted_call
def sample_rk45_scipy(model, x: torch.Tensor, sigma_start, n_steps: int, *, sigma_min: float = 0.002,
                      rtol: float = 1e-5, atol: float = 1e-5, seed: int = 0, chain_ids=None, step0=0,
                      callback=None, final_tweedie: bool = True) -> IntegratorResult:
    """Reference: `scipy.integrate.solve_ivp(method="RK45")`, one sample at a time (same call shape)."""
    _check(n_steps, rtol, atol, sigma_min)
    model = ensure_counting(model, x.shape[0], x.device)
    before = model.nfe.clone()  # indexed per sample below
    s0 = start_sigma(sigma_start, x, model).clamp(min=sigma_min).cpu()
    ode_budget = n_steps - int(final_tweedie)
    out = x.clone()
    for b in range(x.shape[0]):
        u0, u1 = float(torch.log(s0[b])), float(np.log(sigma_min))
        if u0 <= u1:
            continue
        idx = torch.tensor([b], device=x.device)

        def velocity(u, y):  # dx/du = x - D(x, e^u), for sample b alone
            if int(model.nfe[b] - before[b]) >= ode_budget:
                raise _OverBudget
            xb = torch.from_numpy(y).to(x.device, x.dtype).reshape(1, *x.shape[1:])
            sigma = torch.full((1,), float(np.exp(u)), dtype=x.dtype, device=x.device)
            return (xb - model(xb, sigma, idx=idx)).reshape(-1).double().cpu().numpy()

        y0 = x[b].reshape(-1).double().cpu().numpy()
        try:
            sol = solve_ivp(velocity, (u0, u1), y0, method="RK45", rtol=rtol, atol=atol)
        except _OverBudget:
            raise _over_budget(b, ode_budget, float(s0[b]), rtol, atol) from None
        if not sol.success:
            raise RuntimeError(f"rk45 failed on sample {b}: {sol.message}")
        out[b] = torch.from_numpy(sol.y[:, -1]).to(x.device, x.dtype).reshape(x.shape[1:])
        if callback is not None:
            callback({"i": b, "n": x.shape[0], "x": out[b:b + 1], "sigma": s0[b:b + 1],
                      "sigma_next": torch.full((1,), sigma_min, dtype=torch.float64), "nfev": sol.nfev})
    if final_tweedie:
        out = tweedie(model, out, torch.full((x.shape[0],), sigma_min, dtype=torch.float64, device=x.device))
    return finish(model, out, before)
