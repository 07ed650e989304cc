"""Probability-flow ODE with scipy's adaptive RK45 (Dormand-Prince), as Song et al. 2021's ODE sampler.

In u = log sigma the VE probability-flow ODE reads dx/du = sigma dx/dsigma = x - D(x, e^u). Each sample
is its own initial-value problem from log sigma_start[b] to log sigma_min, solved by
`scipy.integrate.solve_ivp(method="RK45", rtol, atol)`: one batched solve would share the step-size
control (an error norm over the whole batch), so a sample would depend on its batch mates. The cost is
B small model calls per solver stage: this is the accuracy reference, not the fast path.

NFE: the solver's own count (`sol.nfev`, each call charged to that sample by the CountingDenoiser),
plus 1 for the final Tweedie step. Budget: `max_nfe` (`n_steps` in the common call shape;
`rk45_steps_for_nfe(nfe) = nfe`). An adaptive solver cannot promise a cost in advance, so a solve that
needs more evaluations is stopped and the call raises ValueError naming rtol/atol and the budget —
loosen the tolerances or raise the budget; the tolerances are never changed behind the user's back.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.integrate import solve_ivp

from dmcmc_fast.integrators.common import (IntegratorResult, check_nfe, check_steps, ensure_counting,
                                           start_sigma, tweedie)


def rk45_steps_for_nfe(nfe: int, final_tweedie: bool = True, **_options) -> int:
    """The budget itself: RK45 spends what its tolerances need, up to `nfe` (else it raises)."""
    check_nfe(nfe, "rk45")
    return nfe


class _OverBudget(Exception):
    pass


@torch.no_grad()
def sample_rk45(model, x: torch.Tensor, sigma_start, n_steps: int, *, sigma_min: float = 0.002,
                rtol: float = 1e-5, atol: float = 1e-5, seed: int = 0, chain_ids=None, step0=0,
                callback=None, final_tweedie: bool = True) -> IntegratorResult:
    """Defaults rtol = atol = 1e-5 as in Song et al.'s `ode_sampler`. `n_steps` is the NFE cap per sample."""
    check_steps(n_steps, "n_steps (the NFE budget of rk45)")
    for name, tol in (("rtol", rtol), ("atol", atol)):
        if not (0 < tol <= 1):
            raise ValueError(f"{name} must be in (0, 1], got {tol}")
    if not (sigma_min > 0):
        raise ValueError(f"sigma_min must be > 0, got {sigma_min}")
    model = ensure_counting(model, x.shape[0], x.device)
    before = model.nfe.clone()
    s0 = start_sigma(sigma_start, x).clamp(min=sigma_min).cpu()
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
            raise ValueError(f"rk45 needs more than {ode_budget} NFE for sample {b} (start sigma "
                             f"{float(s0[b]):.4g}) at rtol={rtol}, atol={atol}: raise the NFE budget or "
                             "loosen rtol/atol") from None
        if not sol.success:
            raise RuntimeError(f"rk45 failed on sample {b}: {sol.message}")
        out[b] = torch.from_numpy(sol.y[:, -1]).to(x.device, x.dtype).reshape(x.shape[1:])
        if callback is not None:
            callback({"i": b, "n": x.shape[0], "x": out[b:b + 1], "sigma": s0[b:b + 1],
                      "sigma_next": torch.full((1,), sigma_min, dtype=torch.float64), "nfev": sol.nfev})
    if final_tweedie:
        out = tweedie(model, out, torch.full((x.shape[0],), sigma_min, dtype=torch.float64, device=x.device))
    return IntegratorResult(out, model.nfe - before)
