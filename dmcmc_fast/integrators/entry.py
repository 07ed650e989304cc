"""The integrators as samplers (`--sampler NAME`, `dmcmc_fast.Heun`, ...): one declaration each, at the end.

`integrator(name, sample_fn, steps_for_nfe, ...)` declares an integrator once: it fills `INTEGRATORS`
(`dmcmc_fast.integrators.INTEGRATORS`, what DLG denoises with) and registers the sampler (registry, CLI
flags, façade class). Every option except `sigma_max` is a keyword of `sample_fn`, named the same, and
takes its default from `sample_fn`'s signature unless the option is shared (`SIGMA_OPTIONS`, `FINAL`),
whose declared default must equal it (`samplers.bind_defaults`).

Running one: start from the prior N(0, sigma_max^2 I) (per-chain Philox noise, stream STREAM_INIT, step 0)
or from the request's `x_T`, integrate to 0 within the NFE budget, on the Karras/geometric grid of the
options or on the request's own grid `sigmas`.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Callable

import torch

from dmcmc_fast import rng
from dmcmc_fast.integrators.deis import deis_steps_for_nfe, sample_deis
from dmcmc_fast.integrators.dpm_adaptive import dpm_adaptive_steps_for_nfe, sample_dpm_adaptive
from dmcmc_fast.integrators.dpm_solver import (dpmpp_2m_sde_steps_for_nfe, dpmpp_2m_steps_for_nfe,
                                               dpmpp_2s_ancestral_steps_for_nfe, dpmpp_3m_sde_steps_for_nfe,
                                               dpmpp_sde_steps_for_nfe, sample_dpmpp_2m, sample_dpmpp_2m_sde,
                                               sample_dpmpp_2s_ancestral, sample_dpmpp_3m_sde, sample_dpmpp_sde)
from dmcmc_fast.integrators.karras import (euler_steps_for_nfe, heun_steps_for_nfe, karras_sde_steps_for_nfe,
                                           sample_euler, sample_heun, sample_karras_sde)
from dmcmc_fast.integrators.rk45 import rk45_steps_for_nfe, sample_rk45
from dmcmc_fast.integrators.sde import sample_euler_maruyama, sample_reverse_diffusion, sde_steps_for_nfe
from dmcmc_fast.integrators.unipc import sample_unipc, unipc_steps_for_nfe
from dmcmc_fast.kernels import noise  # per-chain normals: one launch on CUDA, rng.chain_randn on the CPU
from dmcmc_fast.models.base import bcast
from dmcmc_fast.samplers import FINAL_TWEEDIE as FINAL, Option, declare

# name -> (sample_fn, steps_for_nfe), filled by `integrator` (one entry per declaration below)
INTEGRATORS: dict[str, tuple[Callable, Callable]] = {}


def prior_sample(req) -> torch.Tensor:
    """The start state: `req.x_T` if given, else sigma_max z (sigma_0 z per row on a given grid)."""
    if req.x_T is not None:
        return req.x_T
    shape = tuple(req.model.shape)
    if req.sigmas is None:  # sigma_max z, the product made with the draw (one call on the CPU)
        return noise.chain_randn(req.seed, req.chain_ids, 0, shape, stream=rng.STREAM_INIT, device=req.device,
                                 scale=req.options["sigma_max"])
    z = noise.chain_randn(req.seed, req.chain_ids, 0, shape, stream=rng.STREAM_INIT, device=req.device)
    return bcast(req.sigmas[:, 0].to(z.dtype), z) * z


def _integrator_options(name: str, options: dict):
    fn, steps_for_nfe = INTEGRATORS[name]
    opts = {k: v for k, v in options.items() if k != "sigma_max"}
    opts["final_tweedie"] = bool(opts.get("final_tweedie", 1))
    return fn, steps_for_nfe, opts


def max_grid_points(name: str, nfe: int, options: dict) -> int:
    """The most grid points (`sigmas` of `api.sample`, without the trailing 0) whose cost fits `nfe`; a
    ValueError naming the sampler when not even the smallest grid does (the declaration's budget check)."""
    _, steps_for_nfe, opts = _integrator_options(name, options)
    return steps_for_nfe(nfe, **opts)


def integrate(name: str, req) -> torch.Tensor:
    """The entry of integrator `name`: the request's samples."""
    fn, steps_for_nfe, opts = _integrator_options(name, req.options)
    if req.sigmas is not None:  # the grid itself as the start (`common.per_sample_grid`)
        start, n_steps = req.sigmas, req.sigmas.shape[1]
    else:
        start, n_steps = req.options["sigma_max"], steps_for_nfe(req.nfe, **opts)
    res = fn(req.model, prior_sample(req), start, n_steps, seed=req.seed, chain_ids=req.chain_ids,
             callback=req.callback, **opts)
    return res.x


def integrator(name: str, fn: Callable, steps_for_nfe: Callable, *, facade: str, help: str,
               options: tuple[Option, ...], grid: bool = True):
    """Declare integrator `fn` (with its `steps_for_nfe`) as sampler `name`. It starts from a given x_T if
    asked, its sigma range defaults to the model's, and with `grid` it takes a given grid (`api.sample(...,
    sigmas=...)`; not the adaptive ones, which choose their own steps, so they are not `fixed_steps` either)."""
    INTEGRATORS[name] = (fn, steps_for_nfe)
    declare(name, partial(integrate, name), facade=facade, help=help, options=options,
            takes=("x_T", "sigmas") if grid else ("x_T",), model_range=True, defaults_from=fn,
            budget=partial(max_grid_points, name), fixed_steps=grid)


# Options shared by the integrators: the grid from the prior to sigma_min (defaults: the functions' own).
SIGMA_MAX = Option("sigma_max", float, 80.0, lo=1e-6, hi=1e6, help="start noise level of the prior N(0, sigma_max^2 I)")
SIGMA_RANGE = (SIGMA_MAX, Option("sigma_min", float, lo=1e-6, hi=1e3, help="last nonzero noise level"))
SIGMA_OPTIONS = SIGMA_RANGE + (Option("rho", float, lo=0.1, hi=100.0, help="Karras schedule exponent (EDM eq. 5)"),)
S_NOISE = Option("s_noise", float, lo=0.0, hi=10.0, help="scale of the injected noise")
SDE_NOISE = (Option("eta", float, lo=0.0, hi=1e3, help="share of the reverse SDE's noise (0: the ODE solver)"),
             S_NOISE)

integrator("heun", sample_heun, heun_steps_for_nfe, facade="Heun", options=SIGMA_OPTIONS + (FINAL,),
           help="Karras deterministic Heun (EDM Alg. 1, KAR1); N steps cost 2N-1 NFE")
integrator("karras_sde", sample_karras_sde, karras_sde_steps_for_nfe, facade="KarrasSDE", options=SIGMA_OPTIONS + (
    Option("s_churn", float, lo=0.0, hi=1e4, help="EDM S_churn: total churn, gamma_i = min(S_churn/N, sqrt2-1)"),
    Option("s_tmin", float, lo=0.0, hi=1e6, help="EDM S_tmin: churn only where sigma_i >= S_tmin"),
    Option("s_tmax", float, lo=0.0, hi=math.inf, help="EDM S_tmax: churn only where sigma_i <= S_tmax"),
    Option("s_noise", float, lo=0.0, hi=10.0, help="EDM S_noise: scale of the churn noise"), FINAL),
    help="Karras stochastic sampler (EDM Alg. 2, KAR2; defaults EDM Table 5 ImageNet-64); 2N-1 NFE")
integrator("euler", sample_euler, euler_steps_for_nfe, facade="Euler", options=SIGMA_OPTIONS + (FINAL,),
           help="probability-flow ODE, Euler steps on the Karras grid; N steps cost N NFE")
integrator("rk45", sample_rk45, rk45_steps_for_nfe, facade="RK45", grid=False, options=SIGMA_RANGE + (
    Option("rtol", float, lo=1e-12, hi=1.0, help="solve_ivp relative tolerance (Song et al.: 1e-5)"),
    Option("atol", float, lo=1e-12, hi=1.0, help="solve_ivp absolute tolerance (Song et al.: 1e-5)"), FINAL),
    help="probability-flow ODE with scipy RK45 (adaptive; fails if the tolerances need more than --nfe)")
integrator("dpm_adaptive", sample_dpm_adaptive, dpm_adaptive_steps_for_nfe, facade="DPMSolverAdaptive", grid=False,
           options=SIGMA_RANGE + (
    Option("order", int, choices=(2, 3), help="3: DPM-Solver-23 (3 NFE per attempted step); 2: DPM-Solver-12 (2)"),
    Option("rtol", float, lo=1e-12, hi=1.0, help="relative tolerance (k-diffusion: 0.05)"),
    Option("atol", float, lo=1e-12, hi=1.0, help="absolute tolerance (k-diffusion, DPM-Solver: 0.0078, data in "
           "[-1, 1])"),
    Option("h_init", float, lo=1e-6, hi=100.0, help="first proposed step in lambda = -log sigma"),
    Option("pcoeff", float, lo=-10.0, hi=10.0, help="PID controller: proportional coefficient"),
    Option("icoeff", float, lo=-10.0, hi=10.0, help="PID controller: integral coefficient"),
    Option("dcoeff", float, lo=-10.0, hi=10.0, help="PID controller: derivative coefficient"),
    Option("accept_safety", float, lo=1e-6, hi=1.0, help="accept a step iff its step-size factor is >= this"),
    FINAL), help="DPM-Solver-12/23 with adaptive steps (Lu et al. 2022; k-diffusion's sample_dpm_adaptive), "
                 "per-sample step control; fails if the tolerances need more than --nfe")
integrator("reverse_diffusion", sample_reverse_diffusion, sde_steps_for_nfe, facade="ReverseDiffusion",
           options=SIGMA_RANGE + (FINAL,),
           help="VE-SDE reverse-diffusion predictor (Song et al. 2021), geometric grid; N NFE")
integrator("euler_maruyama", sample_euler_maruyama, sde_steps_for_nfe, facade="EulerMaruyama",
           options=SIGMA_RANGE + (FINAL,), help="VE-SDE Euler-Maruyama (Song et al. 2021), geometric grid; N NFE")
integrator("deis", sample_deis, deis_steps_for_nfe, facade="DEIS", options=SIGMA_OPTIONS + (
    Option("order", int, lo=0, hi=3, help="DEIS polynomial order r (tAB-r)"),
    Option("ab_time", str, choices=("rho", "ve", "vp"),
           help="time the polynomial is fitted in: rho (=sigma), ve (log sigma), vp (linear-beta VP time)"),
    Option("beta_min", float, lo=1e-6, hi=1e3, help="VP SDE beta_min (ab_time vp)"),
    Option("beta_max", float, lo=1e-6, hi=1e3, help="VP SDE beta_max (ab_time vp)"),
    Option("warm_start", str, choices=("lower_order", "runge_kutta"),
           help="first steps: the paper's lower orders (N NFE) or order-preserving Runge-Kutta (+(r-1)^2 NFE)"),
    FINAL), help="DEIS tAB (Zhang & Chen 2022) on the VE probability-flow ODE, Karras grid; N NFE")
integrator("dpmpp_2m", sample_dpmpp_2m, dpmpp_2m_steps_for_nfe, facade="DPMSolverPP2M",
           options=SIGMA_OPTIONS + (FINAL,),
           help="DPM-Solver++(2M) (Lu et al. 2022, Alg. 2) on the Karras grid, the diffusers default; N NFE")
integrator("dpmpp_2m_sde", sample_dpmpp_2m_sde, dpmpp_2m_sde_steps_for_nfe, facade="DPMSolverPP2MSDE",
           options=SIGMA_OPTIONS + SDE_NOISE + (
    Option("solver_type", str, choices=("midpoint", "heun"), help="second-order correction"), FINAL),
    help="DPM-Solver++(2M) SDE (Lu et al. 2022; k-diffusion's defaults), per-chain noise; N NFE")
integrator("dpmpp_3m_sde", sample_dpmpp_3m_sde, dpmpp_3m_sde_steps_for_nfe, facade="DPMSolverPP3MSDE",
           options=SIGMA_OPTIONS + SDE_NOISE + (FINAL,),
           help="DPM-Solver++(3M) SDE (k-diffusion's defaults), per-chain noise; N NFE")
integrator("dpmpp_2s_ancestral", sample_dpmpp_2s_ancestral, dpmpp_2s_ancestral_steps_for_nfe,
           facade="DPMSolverPP2SAncestral", options=SIGMA_OPTIONS + (
    Option("eta", float, lo=0.0, hi=1.0, help="ancestral noise share: sigma_up = eta sigma_next sqrt(1 - ...)"),
    S_NOISE, FINAL), help="DPM-Solver++(2S) ancestral (k-diffusion's defaults), per-chain noise; 2N-1 NFE")
integrator("dpmpp_sde", sample_dpmpp_sde, dpmpp_sde_steps_for_nfe, facade="DPMSolverPPSDE", options=SIGMA_OPTIONS + (
    Option("eta", float, lo=0.0, hi=1.0, help="ancestral noise share of both half-steps"), S_NOISE,
    Option("r", float, lo=1e-3, hi=1.0, help="intermediate point sigma_i^(1-r) sigma_next^r"), FINAL),
    help="DPM-Solver++ SDE, single-step (k-diffusion's sample_dpmpp_sde), per-chain noise; 2N-1 NFE")
integrator("unipc", sample_unipc, unipc_steps_for_nfe, facade="UniPC", options=SIGMA_OPTIONS + (
    Option("order", int, lo=1, hi=3, help="UniP order p (UniC raises it by one at no NFE); 3 is unstable on "
           "few-step Karras grids"),
    Option("variant", str, choices=("bh2", "bh1"), help="B(h): expm1(-h) (bh2) or -h (bh1)"),
    Option("corrector", int, choices=(0, 1), help="1: UniC after every step (no extra NFE); 0: UniP alone"),
    FINAL), help="UniPC (Zhao et al. 2023), diffusers' step schedule, on the Karras grid; N NFE")
