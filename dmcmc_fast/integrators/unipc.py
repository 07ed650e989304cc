"""UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of Diffusion
Models"): the multistep predictor UniP-p and the corrector UniC, data prediction, on the VE probability-flow
ODE with per-sample Karras grids; the step schedule of diffusers' `UniPCMultistepScheduler`.

With lambda = -log sigma, h = lambda_{k+1} - lambda_k, model outputs m_j = D(x_j, sigma_j) and
r_i = (lambda_{k-i} - lambda_k) / h (i = 1 .. p-1), r_p = 1:

    UniP-p:  x_{k+1} = (sigma_{k+1}/sigma_k) x_k - h phi_1 m_k - B(h) sum_{i<p} rho^p_i (m_{k-i} - m_k) / r_i
    UniC:    x_{k+1} <- (sigma_{k+1}/sigma_k) x_k - h phi_1 m_k
                        - B(h) (sum_{i<p} rho^c_i (m_{k-i} - m_k) / r_i + rho^c_p (m_{k+1} - m_k))

with h phi_1 = expm1(-h), B(h) = expm1(-h) ("bh2") or -h ("bh1"), and the rho solving the order conditions
R rho = b, R_ij = r_j^i, b_i = i! h phi_{i+1}(h) / B(h) (paper eq. 8-9; rho^p = 1/2 for p = 2, rho^c = 1/2 for
p = 1). UniC re-uses m_{k+1}, the model output at the predicted x_{k+1} that the next predictor needs
anyway, so the corrector costs no NFE and raises the order by one. Orders as diffusers: p_k = min(order,
N - k, k + 1) (warm-up, lower order at the end). N grid points cost N NFE; with `final_tweedie` the result
is D(x_{N-1}, sigma_min), the first-order step to sigma = 0 (as the scheduler's last step), else the
corrected state at sigma_min. Coefficients are computed once per run for every row (per-sample grids);
each update is `common.exponential_update` (psi x + sum_j c_j m_j; on CUDA the fused `kernels.deis.deis_combine`),
its weights per step the loop's plan (`plans.ExponentialPlan`).
"""
from __future__ import annotations

import torch

from dmcmc_fast.integrators.common import counted_call
from dmcmc_fast.integrators.common import (IntegratorResult, check_nfe, ensure_counting, exponential_update, finish,
                                           per_sample_grid, shared_rows)
from dmcmc_fast.integrators.plans import exponential_plan
from dmcmc_fast.schedules import karras_per_sample

VARIANTS = ("bh2", "bh1")


def unipc_steps_for_nfe(nfe: int, final_tweedie: bool = True, **_options) -> int:
    """N grid points cost N NFE, with or without the final step to 0 (the last output corrects or is it)."""
    check_nfe(nfe, "unipc")
    return nfe


def check_options(order: int, variant: str):
    if not isinstance(order, int) or isinstance(order, bool) or not 1 <= order <= 3:
        raise ValueError(f"order must be an integer in [1, 3], got {order!r}")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")


def step_orders(n: int, order: int) -> list[int]:
    """p_k of the steps k = 0 .. n-1 (the last one goes to sigma = 0), as diffusers: warm-up and lower order final."""
    return [min(order, n - k, k + 1) for k in range(n)]


def unipc_coefficients(sigmas: torch.Tensor, order: int = 2, variant: str = "bh2"):
    """For a `[B, N]` grid (positive, non-increasing): `psi [B, N-1]`, predictor weights `pred [B, N-1, order]`
    of (m_k, m_{k-1}, ...) and corrector weights `corr [B, N-1, order + 1]` of (m_{k+1}, m_k, m_{k-1}, ...) for
    the steps k = 0 .. N-2 (module docstring), float64. A row that stands still gets psi = 1 and no update."""
    check_options(order, variant)
    s = sigmas.to(torch.float64)
    B, N = s.shape
    lam = -torch.log(s)
    orders = step_orders(N, order)
    psi = s[:, 1:] / s[:, :-1]
    pred = torch.zeros(B, max(N - 1, 0), order, dtype=torch.float64, device=s.device)
    corr = torch.zeros(B, max(N - 1, 0), order + 1, dtype=torch.float64, device=s.device)
    for k in range(N - 1):
        p = orders[k]
        h = lam[:, k + 1] - lam[:, k]
        moves = h > 0
        h = torch.where(moves, h, 1.0)  # rows that stand still: any finite stand-in, masked below
        hh = -h
        h_phi_1 = torch.expm1(hh)
        b_h = torch.expm1(hh) if variant == "bh2" else hh
        rks = torch.stack([(lam[:, k - i] - lam[:, k]) / h for i in range(1, p)] + [torch.ones_like(h)], dim=1)
        R = torch.stack([rks ** i for i in range(p)], dim=1)  # [B, p, p], R[:, i, j] = r_j^i
        b, h_phi_k, fact = [], h_phi_1 / hh - 1.0, 1
        for i in range(1, p + 1):
            b.append(h_phi_k * fact / b_h)
            fact *= i + 1
            h_phi_k = h_phi_k / hh - 1.0 / fact
        b = torch.stack(b, dim=1)  # [B, p]
        if p == 1:
            rho_p = h.new_zeros(B, 0)
            rho_c = torch.full((B, 1), 0.5, dtype=torch.float64, device=s.device)
        else:
            # solve_ex: no singularity check, which would read an error code back to the host
            rho_p = torch.full((B, 1), 0.5, dtype=torch.float64, device=s.device) if p == 2 else \
                torch.linalg.solve_ex(R[:, :-1, :-1], b[:, :-1]).result
            rho_c = torch.linalg.solve_ex(R, b).result
        inv_r = 1.0 / rks[:, :p - 1]  # 1 / r_i, i = 1 .. p-1
        pred[:, k, 0] = -h_phi_1 + b_h * (rho_p * inv_r).sum(1)
        pred[:, k, 1:p] = -b_h[:, None] * rho_p * inv_r
        corr[:, k, 0] = -b_h * rho_c[:, -1]
        corr[:, k, 1] = -h_phi_1 + b_h * ((rho_c[:, :-1] * inv_r).sum(1) + rho_c[:, -1])
        corr[:, k, 2:p + 1] = -b_h[:, None] * rho_c[:, :-1] * inv_r
        psi[:, k] = torch.where(moves, psi[:, k], 1.0)
        pred[:, k] = torch.where(moves[:, None], pred[:, k], 0.0)
        corr[:, k] = torch.where(moves[:, None], corr[:, k], 0.0)
    return psi, pred, corr


@counted_call
def sample_unipc(model, x: torch.Tensor, sigma_start, n_steps: int, *, sigma_min: float = 0.002, rho: float = 7.0,
                 order: int = 2, variant: str = "bh2", corrector: int = 1, seed: int = 0, chain_ids=None, step0=0,
                 callback=None, final_tweedie: bool = True) -> IntegratorResult:
    """UniPC (module docstring). Defaults as diffusers: order 2, B(h) = expm1(-h) ("bh2"), the corrector on.
    Order 3 (advised for unconditional models on time-uniform grids) is unstable on a 10-step Karras grid
    from 80 to 0.002: gmm-digits, mean distance to the nearest mode 1.81 (order 3), 0.50 (2), 0.34 (1),
    diffusers' scheduler alike. Deterministic."""
    check_options(order, variant)
    model = ensure_counting(model, x.shape[0], x.device)
    before = model.mark()
    sigmas = per_sample_grid(karras_per_sample, sigma_start, x, n_steps, sigma_min, model, rho=rho)
    shared = None if torch.is_tensor(sigma_start) else ("unipc", float(sigma_start), n_steps, sigma_min, rho, order,
                                                         variant, str(x.device))
    rows = sigmas[:, :n_steps] if shared is None else sigmas[:1, :n_steps]
    psi, pred, corr = shared_rows(shared, lambda: unipc_coefficients(rows, order, variant), x.shape[0])
    orders = step_orders(n_steps, order)
    plan = exponential_plan(x, (psi, pred, orders[:n_steps - 1]), more=(psi, corr, [p + 1 for p in orders[:n_steps - 1]]),
                            math=(exponential_update,), table=None if shared is None else psi, key=("unipc", order))
    hist: list[torch.Tensor] = []  # m_k, m_{k-1}, ... (newest first), at most order + 1
    x_prev = None
    for k in range(n_steps):
        s = sigmas[:, k]
        m = model(x, s.to(x.dtype))
        if k == n_steps - 1 and final_tweedie:
            x = m  # the first-order step to sigma = 0 from the (predicted) last state: D(x, sigma_min)
            break
        if corrector and k > 0:  # UniC: x_k = psi x_{k-1} + corr . (m_k, m_{k-1}, ...), no extra NFE
            q = orders[k - 1]
            x = plan.op.exponential_update(x_prev, [m] + hist[:q], plan.more[k - 1])
        hist = [m] + hist[:order]
        if k == n_steps - 1:
            break
        x_prev = x
        x = plan.op.exponential_update(x, hist[:orders[k]], plan.steps[k])  # UniP: psi x_k + pred . (m_k, ...)
        if callback is not None:
            callback({"i": k, "n": n_steps, "x": x, "sigma": s, "sigma_next": sigmas[:, k + 1], "denoised": m})
    return finish(model, x, before)


