"""DPM-Solver-12 / DPM-Solver-23 with adaptive step size (Lu et al. 2022, "DPM-Solver: A Fast ODE Solver
for Diffusion Probabilistic Model Sampling in Around 10 Steps", Sec. 3.3 and App. C; as k-diffusion's
`sample_dpm_adaptive`) on the VE probability-flow ODE, with per-sample step control.

Time is lambda = -log sigma (VE form: alpha = 1) and the model is read as a noise predictor,
eps(x, lambda) = (x - D(x, sigma)) / sigma. With h = lambda_t - lambda_s and sigma_u = e^-u, the steps
s -> t of the paper are

    DPM-Solver-1 (eq. 3.7):   x_t = x_s - sigma_t (e^h - 1) eps_s
    DPM-Solver-2 (Alg. 1):    u_1 = x_s - sigma_{s1} (e^{r1 h} - 1) eps_s,   s1 = s + r1 h
                              x_t = x_s - sigma_t (e^h - 1) eps_s - sigma_t / (2 r1) (e^h - 1) (eps(u_1, s1) - eps_s)
    DPM-Solver-3 (Alg. 2, r1 = 1/3, r2 = 2/3, s2 = s + r2 h):
                              u_2 = x_s - sigma_{s2} (e^{r2 h} - 1) eps_s
                                    - sigma_{s2} (r2 / r1) ((e^{r2 h} - 1) / (r2 h) - 1) (eps(u_1, s1) - eps_s)
                              x_t = x_s - sigma_t (e^h - 1) eps_s
                                    - sigma_t / r2 ((e^h - 1) / h - 1) (eps(u_2, s2) - eps_s)

An attempted step of `order` 2 pairs DPM-Solver-1 (x_low) with -2 at r1 = 1/2 (x_high): 2 NFE; `order` 3
pairs -2 at r1 = 1/3 with -3, which share their first two stages: 3 NFE. The error is the paper's
E = ||(x_low - x_high) / delta||_rms, delta = max(atol, rtol max(|x_low|, |x_prev|)), x_prev the x_low of the
last accepted step (x itself before the first). The step-size control is k-diffusion's, not the paper's
h <- theta h E^(-1/order): a PID controller on 1/E (Soderlind 2003, "Digital filters in adaptive
time-stepping"), factor = e_n^b1 e_{n-1}^b2 e_{n-2}^b3 with e = 1 / (E + 1e-8), b1 = (p + i + d) / order,
b2 = -(p + 2d) / order, b3 = d / order (e_{n-1}, e_{n-2}: the last two accepted steps), passed through the
limiter 1 + atan(factor - 1) (Soderlind & Wang 2006); the step is accepted iff factor >= accept_safety, and
h <- h factor either way. A sample is done once lambda >= lambda(sigma_min) - 1e-5. The defaults are
k-diffusion's (rtol 0.05, atol 0.0078 = 2/255 as in the paper, for data in [-1, 1] as ours; no conversion).

Per sample: k-diffusion takes one error norm over the whole batch, so a sample depends on its batch mates;
here every sample keeps its own lambda, h, error history and accept/reject decision, and only the *model
calls* are batched (stage k of every sample still running is one call with a per-sample sigma), as
`rk45.sample_rk45` does. A batch of one takes exactly k-diffusion's steps; a batch equals each sample alone.
Deterministic only: k-diffusion's eta > 0 (ancestral noise, forward time) is not implemented, so `seed`,
`chain_ids` and `step0` are accepted and ignored.

NFE: per sample, `order` per attempted step (accepted or not: as in k-diffusion, eps at s is evaluated
again after a rejection), plus 1 for the final Tweedie step. `n_steps` is the NFE cap per sample
(`dpm_adaptive_steps_for_nfe(nfe) = nfe`); a solve that needs more raises ValueError naming rtol/atol and
the budget (the tolerances are never loosened behind the user's back). The loop reads one flag per
attempted step on the host (did a sample finish; then the finished rows are compacted away), the
adaptive solver's one host decision, as in rk45.
"""
from __future__ import annotations

import math

import torch

from dmcmc_fast.integrators.common import counted_call
from dmcmc_fast.integrators.common import IntegratorResult, check_nfe, check_steps, ensure_counting, finish, \
    report_finished, start_sigma, tweedie
from dmcmc_fast.models.base import bcast

ORDERS = (2, 3)
DONE_TOL = 1e-5  # in lambda: a sample this close to lambda(sigma_min) is done (k-diffusion's loop condition)
PID_EPS = 1e-8  # e = 1 / (E + PID_EPS)


def dpm_adaptive_steps_for_nfe(nfe: int, final_tweedie: bool = True, **_options) -> int:
    """The budget itself: the solver spends what its tolerances need, up to `nfe` (else it raises)."""
    check_nfe(nfe, "dpm_adaptive")
    return nfe


def _check(n_steps, sigma_min, order, rtol, atol, h_init, pcoeff, icoeff, dcoeff, accept_safety):
    check_steps(n_steps, "n_steps (the NFE budget of dpm_adaptive)")
    if order not in ORDERS:
        raise ValueError(f"order must be 2 or 3, got {order!r}")
    for name, v, hi in (("rtol", rtol, 1.0), ("atol", atol, 1.0), ("h_init", h_init, math.inf),
                        ("accept_safety", accept_safety, 1.0)):
        if not 0 < v <= hi:
            raise ValueError(f"{name} must be in (0, {hi}], got {v}")
    if not pcoeff + icoeff + dcoeff > 0:
        raise ValueError(f"pcoeff + icoeff + dcoeff must be > 0 (the exponent of the current error), "
                         f"got {pcoeff} + {icoeff} + {dcoeff}")
    if not sigma_min > 0:
        raise ValueError(f"sigma_min must be > 0, got {sigma_min}")


def _rms(v: torch.Tensor) -> torch.Tensor:
    return v.flatten(1).norm(dim=1) / math.sqrt(v[0].numel())


def step_pair(model, x: torch.Tensor, s: torch.Tensor, t: torch.Tensor, order: int, rows: torch.Tensor):
    """(x_low, x_high) of one attempted step s -> t of every running row (lambdas `[R]` float64): DPM-Solver-1
    and -2 (order 2) or -2 and -3 (order 3), as in the module docstring; `order` batched model calls."""
    h = t - s

    def col(v):  # per-row float64 coefficient -> broadcastable, in x's dtype
        return bcast(v.to(x.dtype), x)

    def eps(x_, lam):  # eps(x, lambda) = (x - D(x, sigma)) / sigma, one call over the running rows
        sigma = torch.exp(-lam)
        return (x_ - model(x_, sigma.to(x.dtype), idx=rows)) / col(sigma)

    sig_t, phi = torch.exp(-t), torch.expm1(h)
    e0 = eps(x, s)
    r1 = 0.5 if order == 2 else 1.0 / 3.0
    s1 = s + r1 * h
    d1 = eps(x - col(torch.exp(-s1) * torch.expm1(r1 * h)) * e0, s1) - e0
    x1 = x - col(sig_t * phi) * e0  # DPM-Solver-1
    x2 = x1 - col(sig_t * phi / (2 * r1)) * d1  # DPM-Solver-2 at r1
    if order == 2:
        return x1, x2
    r2 = 2.0 / 3.0
    s2 = s + r2 * h
    u2 = x - col(torch.exp(-s2) * torch.expm1(r2 * h)) * e0 \
        - col(torch.exp(-s2) * (r2 / r1) * (torch.expm1(r2 * h) / (r2 * h) - 1)) * d1
    x3 = x1 - col(sig_t / r2 * (phi / h - 1)) * (eps(u2, s2) - e0)  # DPM-Solver-3
    return x2, x3


def _over_budget(b: int, budget: int, s0: float, options: dict) -> ValueError:
    at = ", ".join(f"{k}={v}" for k, v in options.items())
    return ValueError(f"dpm_adaptive needs more than {budget} NFE for sample {b} (start sigma {s0:.4g}) at "
                      f"{at}: raise the NFE budget or loosen rtol/atol")


@counted_call
def sample_dpm_adaptive(model, x: torch.Tensor, sigma_start, n_steps: int, *, sigma_min: float = 0.002,
                        order: int = 3, rtol: float = 0.05, atol: float = 0.0078, h_init: float = 0.05,
                        pcoeff: float = 0.0, icoeff: float = 1.0, dcoeff: float = 0.0, accept_safety: float = 0.81,
                        seed: int = 0, chain_ids=None, step0=0, callback=None,
                        final_tweedie: bool = True) -> IntegratorResult:
    """DPM-Solver-12 (`order=2`) or -23 (`order=3`) from each sample's own start sigma to sigma_min (module
    docstring). `h_init` is the first proposed step in lambda = -log sigma; `n_steps` the NFE cap per sample.
    `callback` is called once per sample as it reaches sigma_min, with `i` its row and `nfev` its NFE so far."""
    _check(n_steps, sigma_min, order, rtol, atol, h_init, pcoeff, icoeff, dcoeff, accept_safety)
    model = ensure_counting(model, x.shape[0], x.device)
    before = model.nfe.clone()  # indexed per sample below
    budget = n_steps - int(final_tweedie)
    b1, b2, b3 = (pcoeff + icoeff + dcoeff) / order, -(pcoeff + 2 * dcoeff) / order, dcoeff / order
    s0 = start_sigma(sigma_start, x, model).clamp(min=sigma_min)
    lam_end = -math.log(sigma_min)
    out = x.clone()
    rows = torch.nonzero(-s0.log() < lam_end - DONE_TOL).flatten()  # samples that move at all (setup: one sync)
    s = -s0.log()[rows]
    xs = x_prev = x_high = x[rows]
    h = torch.full_like(s, h_init)  # the controller's proposal (the step taken is cut at lambda_end)
    errs = None  # [R, 3] float64: e of this attempt, of the last and the second-to-last accepted step
    calls = 0  # model calls so far; every running sample is in every call, so its NFE is `calls`
    while len(rows):
        if calls + order > budget:  # host-known; only the error path reads the device
            model.check_final(x_high)  # a NaN error estimate rejects every step: name the NaN, not the budget
            model.raise_if_nonfinite()
            b = int(rows[0])
            raise _over_budget(b, budget, float(s0[b]), dict(
                rtol=rtol, atol=atol, order=order, h_init=h_init, pcoeff=pcoeff, icoeff=icoeff, dcoeff=dcoeff,
                accept_safety=accept_safety))
        t = torch.clamp(s + h, max=lam_end)
        x_low, x_high = step_pair(model, xs, s, t, order, rows)
        calls += order
        delta = torch.clamp(rtol * torch.maximum(x_low.abs(), x_prev.abs()), min=atol)
        e = 1.0 / (_rms((x_low - x_high) / delta).double() + PID_EPS)
        errs = e[:, None].repeat(1, 3) if errs is None else torch.cat([e[:, None], errs[:, 1:]], 1)
        factor = errs[:, 0] ** b1 * errs[:, 1] ** b2 * errs[:, 2] ** b3
        factor = 1 + torch.atan(factor - 1)  # the limiter
        accept = factor >= accept_safety
        errs = torch.where(accept[:, None], torch.stack([e, e, errs[:, 1]], 1), errs)  # shift the history
        h = h * factor
        keep = bcast(accept, xs)
        x_prev, xs, s = torch.where(keep, x_low, x_prev), torch.where(keep, x_high, xs), torch.where(accept, t, s)
        done = s >= lam_end - DONE_TOL
        if bool(done.any()):  # the one host read per attempted step; compaction only when samples finish
            out[rows[done]] = xs[done]
            if callback is not None:
                report_finished(callback, rows[done].tolist(), out, s0, sigma_min, model, before)
            run = ~done
            rows, s, h, xs, x_prev, errs = rows[run], s[run], h[run], xs[run], x_prev[run], errs[run]
    if final_tweedie:
        out = tweedie(model, out, torch.full((x.shape[0],), sigma_min, dtype=torch.float64, device=x.device))
    return finish(model, out, before)
