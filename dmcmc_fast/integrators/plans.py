"""Per-grid plans: what a sampler's loop needs from its grid alone, set up once, so the loop itself reads as
its math (`karras.edm_on_grid`, `dpm_solver.dpmpp_2m_sde_on_grid`).

A plan owns, for one sampler and one grid, the three things that are not the sampler's math:
- the precomputation: the grid laid out one row per step in the kernels' compute dtype, the step widths,
  the coefficients, the model's sigmas in x's dtype;
- the backend choice: each math step function is run as written (torch, on the CPU; in the compute dtype,
  casting in and out when x is another dtype: the arithmetic of the kernels' torch references, bit for bit)
  or as its fused Triton kernel on CUDA (`fused`: the kernel registered beside the math function);
- the caching: a plan is kept on a shared grid (`common.derived`: a grid every sample shares is built once,
  `common.shared_rows`), so a run's batches and repeated calls set up once; a per-sample grid (DLG's
  blocks, a caller's own) gets a fresh plan per call.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Callable, NamedTuple

import torch

from dmcmc_fast import rng
from dmcmc_fast.integrators.common import StepNoise, derived, fused  # noqa: F401 (fused: re-exported)
from dmcmc_fast.kernels._args import chain_vec, compute_dtype, in_dtype
from dmcmc_fast.kernels._dispatch import choose_backend
from dmcmc_fast.kernels.deis import combine_impl, deis_combine_reference
from dmcmc_fast.kernels.noise import PREDRAW_ELEMENTS, chain_randn as chain_noise, chain_randn_steps


def implementations(x: torch.Tensor, *math_steps: Callable) -> SimpleNamespace:
    """The functions that run `math_steps` on x's device, under their own names: on CUDA each one's fused kernel;
    elsewhere the math itself, wrapped to compute in the kernels' compute dtype when x is in another one."""
    triton = choose_backend(x) == "triton"
    cd, dtype = compute_dtype(x), x.dtype
    return SimpleNamespace(**{f.__name__: f.fused if triton else f if dtype == cd else _in_compute_dtype(f, cd, dtype)
                              for f in math_steps})


def _in_compute_dtype(step: Callable, cd: torch.dtype, dtype: torch.dtype) -> Callable:
    """`step` on tensors cast to `cd` (the grid rows already are), its tensor results cast back to `dtype`."""
    def run(*args):
        out = step(*(in_dtype(a, cd) if torch.is_tensor(a) else a for a in args))
        return tuple(in_dtype(o, dtype) for o in out) if isinstance(out, tuple) else in_dtype(out, dtype)
    return run


# ---------------- EDM (Karras et al. 2022), Alg. 1 / 2 ----------------
class EdmStep(NamedTuple):
    """One step's sigmas: from `sigma` (sigma_hat after a churn) to `sigma_next`, with dt = sigma_next - sigma and
    dt / 2. On the torch path rows `[B, 1, ..]` of the compute dtype that broadcast against x; on CUDA `[B]`
    vectors (the fused kernels take sigma and sigma_next and form dt themselves, `dt` is then None)."""
    sigma: torch.Tensor
    sigma_next: torch.Tensor
    dt: torch.Tensor | None
    half_dt: torch.Tensor | None


class EdmPlan:
    """What `karras.edm_on_grid` sets up from its grid `sigmas` `[B, >= steps + 1]` float64 (and the churn `gamma`
    `[B, steps]`, KAR2): `steps[i]` (an `EdmStep`), the model's sigma of each step in x's dtype (`s_in[i]` at the
    start, sigma_hat after a churn; `s_out[i]` at the end, Heun's corrector), each step's start `sigma_hat[i]`
    `[B]` (the callback's), and for KAR2 the churn's noise scale S_noise sqrt(sigma_hat^2 - sigma^2) per step."""

    def __init__(self, x, sigmas, steps: int, gamma, s_noise: float, heun: bool, math: tuple = ()):
        cd = compute_dtype(x)
        self.op = implementations(x, *math)
        self.triton = choose_backend(x) == "triton"
        self.cols = cols = sigmas.to(cd).T.contiguous()  # [steps + 1, B]
        self.sigma_hat = cols[:steps]
        if gamma is not None:
            self.g = g = gamma[:, :steps].to(cd).T.contiguous()  # [steps, B]
            self.sigma_hat = cols[:steps] * (1.0 + g)  # Alg. 2 l. 5: sigma_hat = (1 + gamma) sigma
            # S_noise sqrt(sigma_hat^2 - sigma^2) = S_noise sigma sqrt(gamma (2 + gamma)), no cancellation
            self.scales = (s_noise * cols[:steps] * torch.sqrt(g * (2.0 + g))).reshape(
                steps, -1, *([1] * (x.ndim - 1)))
            self.s_noise = s_noise
        self.steps = self._steps(x, cols, steps, None if gamma is None else self.sigma_hat)
        rows = cols.to(x.dtype).unbind(0)  # the model's sigmas in x's dtype: step i starts at row i, ends at i + 1
        self.s_in = rows[:steps] if gamma is None else self.sigma_hat.to(x.dtype).unbind(0)
        self.s_out = rows[1:steps + 1] if heun else None

    def _steps(self, x, cols, steps: int, starts) -> list[EdmStep]:
        ends = cols[1:steps + 1]
        if self.triton:
            s = (cols[:steps] if starts is None else starts).unbind(0)
            return [EdmStep(a, b, None, None) for a, b in zip(s, ends.unbind(0))]
        row = (-1, *([1] * (x.ndim - 1)))
        c = cols.reshape(cols.shape[0], *row)
        s_rows = c[:steps] if starts is None else starts.reshape(steps, *row)
        dt = c[1:steps + 1] - s_rows
        e = c.unbind(0)
        s = e if starts is None else s_rows.unbind(0)
        return [EdmStep(*v) for v in zip(s, e[1:], dt.unbind(0), (dt * 0.5).unbind(0))]

    def churner(self, x, sigmas, noise: StepNoise, churn_step: Callable) -> Callable:
        """`churn(x, i)`: step i's x_hat (Alg. 2 l. 5-6) with this run's noise. On CUDA the fused kernel draws z from
        the chain's stream; elsewhere `churn_step(x, scale_i, z_i)` with z_i from the chain's stream (the same
        numbers; every step's drawn at once when small enough) or from the user's noise sampler."""
        cols, g, steps = self.cols, self.g, self.g.shape[0]
        if noise.sampler is None and self.triton:
            return lambda x, i: churn_step.fused(x, cols[i], g[i], self.s_noise, noise.seed, noise.chain_ids,
                                                 noise.step0 + i, stream=rng.STREAM_CHURN)[0]
        zs = None
        if noise.sampler is None and steps * x.numel() <= PREDRAW_ELEMENTS:  # every step's z in one draw
            zs = chain_randn_steps(noise.seed, chain_vec(noise.chain_ids, x), noise.step0, steps, x.shape[1:],
                                   stream=rng.STREAM_CHURN, device=x.device)
        scales = self.scales

        def churn(x, i):
            if zs is not None:
                z = zs[i]
            elif noise.sampler is None:
                z = chain_noise(noise.seed, chain_vec(noise.chain_ids, x), noise.step0 + i, x.shape[1:],
                                stream=rng.STREAM_CHURN)
            else:
                z = noise(x, i, rng.STREAM_CHURN, sigmas[:, i], sigmas[:, i + 1])
            return in_dtype(churn_step(x, scales[i], z), x.dtype)
        return churn


def edm_plan(x, sigmas, steps: int, heun: bool, gamma=None, s_noise: float = 1.0, math: tuple = ()) -> EdmPlan:
    """The `EdmPlan` of this grid, `op` running the loop's `math` steps: kept on a shared grid (or churn table),
    built anew on any other."""
    table = sigmas if gamma is None else gamma
    return derived(table, lambda: ("edm", steps, heun, s_noise, math, x.ndim, x.dtype, x.device, choose_backend(x)),
                   lambda: EdmPlan(x, sigmas, steps, gamma, s_noise, heun, math))


def churn_table(sigmas, s_tmin: float, s_tmax: float, gamma_max: float) -> torch.Tensor:
    """EDM Alg. 2 l. 4 for every grid point: gamma_max where S_tmin <= sigma <= S_tmax, else 0 (`[B, N + 1]`
    float64), kept on a shared grid."""
    return derived(sigmas, ("gamma", s_tmin, s_tmax, gamma_max),
                   lambda: torch.where((sigmas >= s_tmin) & (sigmas <= s_tmax), gamma_max, 0.0))


# ---------------- exponential integrators: DPM-Solver++ (Lu et al. 2022), UniPC ----------------
class Weights(NamedTuple):
    """One update x' = psi x + sum_j c[j] u_j (`common.exponential_update`). On the torch path `psi` and each
    `c[j]` are rows `[B, 1, ..]` of the compute dtype; on CUDA `psi` is `[B]` and `fused_c` the kernel's `[B, J]`."""
    psi: torch.Tensor
    c: tuple
    fused_c: torch.Tensor | None


def weights_per_step(x, psi: torch.Tensor, c: torch.Tensor, terms) -> list[Weights]:
    """`Weights` of each step i from float64 `psi [B, n]` and `c [B, n, >= J_i]`, `terms[i]` = J_i (the weights
    step i uses), cast once to the compute dtype in the layout the step's implementation takes."""
    cd, lay = compute_dtype(x), (-1, *([1] * (x.ndim - 1)))
    if choose_backend(x) == "triton":
        return [Weights(psi[:, i].to(cd).contiguous(), (), c[:, i, :j].to(cd).contiguous()) for i, j in
                enumerate(terms)]
    psi_r, c_r = psi.to(cd).T.contiguous(), c.to(cd).permute(1, 2, 0).contiguous()  # [n, B], [n, J, B]
    return [Weights(psi_r[i].reshape(lay), tuple(c_r[i, k].reshape(lay) for k in range(j)), None)
            for i, j in enumerate(terms)]


class ExponentialPlan:
    """A loop's `Weights` per step (`steps`, and a second set `more` where a step makes two updates: DPM-Solver++'s
    single-step samplers, UniPC's corrector), the noise scale per step (`noise[i]`, `[B, 1, ..]` in x's dtype;
    None without noise), and `op`, the loop's math steps as they run on x's device."""

    def __init__(self, x, steps, more=None, noise=None, math: tuple = ()):
        self.op = implementations(x, *math)
        self.steps = weights_per_step(x, *steps)
        self.more = None if more is None else weights_per_step(x, *more)
        self.noise = None if noise is None else noise.to(x.dtype).reshape(*noise.shape, *([1] * (x.ndim - 1))).unbind(1)


def exponential_plan(x, steps, more=None, noise=None, math: tuple = (), table=None, key=()) -> ExponentialPlan:
    """The `ExponentialPlan` of `steps` = (psi, c, terms) (and `more`, `noise`): kept on `table` when that is a
    shared one (`common.shared_rows`: the coefficients of one grid for all samples), with `key` the loop's numbers;
    built anew otherwise."""
    if table is None:
        return ExponentialPlan(x, steps, more, noise, math)
    return derived(table, lambda: ("exp", key, math, x.ndim, x.dtype, x.device, choose_backend(x)),
                   lambda: ExponentialPlan(x, steps, more, noise, math))


# ---------------- DEIS (Zhang & Chen 2022), tAB on the VE ODE ----------------
class DeisPlan:
    """What `deis.sample_deis` sets up from its grid `sigmas` `[B, N + 1]` float64, once per grid when it is shared:
    `cols` (the grid's columns in the compute dtype, `[N + 1, B]`), `s_in[i]` (step i's sigma in x's dtype, as the
    model takes it) and `s_rows[i]` (as rows broadcasting against x, eps_i's divisor), `c[i]` the tAB weights
    C_i0 .. C_ir of step i (r = min(i, order); Python floats for one grid on the CPU, else `[B, r + 1]`) and
    `op.deis_combine` (the fused kernel on CUDA, its torch reference elsewhere)."""

    def __init__(self, x, sigmas, n_steps: int, order: int, coefficients, shared: bool):
        cd = compute_dtype(x)
        coeffs = coefficients(sigmas[:, :n_steps]).to(cd)  # [B, N - 1, order + 1]
        self.cols = sigmas.to(cd).T.contiguous()
        combine = combine_impl(x)
        self.op = SimpleNamespace(deis_combine=combine)
        if shared and combine is deis_combine_reference:  # one grid for all: Python-float C_ij (CPU)
            rows = coeffs[0].tolist()
            self.c = [rows[i][:min(i, order) + 1] for i in range(n_steps - 1)]
        else:
            self.c = [coeffs[:, i, :min(i, order) + 1] for i in range(n_steps - 1)]
        s_x = self.cols.to(x.dtype)
        self.s_in, self.s_rows = s_x.unbind(0), s_x.reshape(*s_x.shape, *([1] * (x.ndim - 1))).unbind(0)


def deis_plan(x, sigmas, n_steps: int, order: int, coefficients: Callable, shared: bool, options: tuple) -> DeisPlan:
    """The `DeisPlan` of this grid, `coefficients(sigmas[:, :n_steps])` its tAB weights `[B, N - 1, order + 1]`
    (which depend on `options`, host numbers): kept on a shared grid, built anew on any other."""
    key = ("deis", n_steps, order, options, x.ndim, x.dtype, x.device, choose_backend(x))
    return derived(sigmas, key, lambda: DeisPlan(x, sigmas, n_steps, order, coefficients, shared))
