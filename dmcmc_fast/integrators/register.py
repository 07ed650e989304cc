"""The integrators' entries in the sampler registry (`--sampler NAME`); options named as in the papers."""
import math

from dmcmc_fast.samplers import FINAL_TWEEDIE as FINAL, SIGMA_OPTIONS, Option, SamplerSpec, register

ADAPTIVE = ("rk45", "dpm_adaptive")  # no grid: they choose their own steps


def integrator_spec(name: str, *args, **kw) -> SamplerSpec:
    """An integrator's spec: it starts from a given x_T if asked, its sigma range defaults to the model's,
    and all but the adaptive ones take a given grid (`api.sample(..., sigmas=...)`)."""
    takes = ("x_T",) if name in ADAPTIVE else ("x_T", "sigmas")
    return SamplerSpec(name, *args, takes=takes, model_range=True, **kw)


SIGMA_RANGE = SIGMA_OPTIONS[:2]  # sigma_max, sigma_min (no rho: geometric / adaptive grids)
ENTRY = "dmcmc_fast.integrators.entry:"

register(integrator_spec("heun", ENTRY + "heun", SIGMA_OPTIONS + (FINAL,),
                     "Karras deterministic Heun (EDM Alg. 1, KAR1); N steps cost 2N-1 NFE"))
register(integrator_spec("karras_sde", ENTRY + "karras_sde", SIGMA_OPTIONS + (
    Option("s_churn", float, 40.0, lo=0.0, hi=1e4, help="EDM S_churn: total churn, gamma_i = min(S_churn/N, sqrt2-1)"),
    Option("s_tmin", float, 0.05, lo=0.0, hi=1e6, help="EDM S_tmin: churn only where sigma_i >= S_tmin"),
    Option("s_tmax", float, 50.0, lo=0.0, hi=math.inf, help="EDM S_tmax: churn only where sigma_i <= S_tmax"),
    Option("s_noise", float, 1.003, lo=0.0, hi=10.0, help="EDM S_noise: scale of the churn noise"),
    FINAL), "Karras stochastic sampler (EDM Alg. 2, KAR2; defaults EDM Table 5 ImageNet-64); 2N-1 NFE"))
register(integrator_spec("euler", ENTRY + "euler", SIGMA_OPTIONS + (FINAL,),
                     "probability-flow ODE, Euler steps on the Karras grid; N steps cost N NFE"))
register(integrator_spec("rk45", ENTRY + "rk45", SIGMA_RANGE + (
    Option("rtol", float, 1e-5, lo=1e-12, hi=1.0, help="solve_ivp relative tolerance (Song et al.: 1e-5)"),
    Option("atol", float, 1e-5, lo=1e-12, hi=1.0, help="solve_ivp absolute tolerance (Song et al.: 1e-5)"),
    FINAL), "probability-flow ODE with scipy RK45 (adaptive; fails if the tolerances need more than --nfe)"))
register(integrator_spec("dpm_adaptive", ENTRY + "dpm_adaptive", SIGMA_RANGE + (
    Option("order", int, 3, choices=(2, 3), help="3: DPM-Solver-23 (3 NFE per attempted step); 2: DPM-Solver-12 (2)"),
    Option("rtol", float, 0.05, lo=1e-12, hi=1.0, help="relative tolerance (k-diffusion: 0.05)"),
    Option("atol", float, 0.0078, lo=1e-12, hi=1.0, help="absolute tolerance (k-diffusion, DPM-Solver: 0.0078, "
           "data in [-1, 1])"),
    Option("h_init", float, 0.05, lo=1e-6, hi=100.0, help="first proposed step in lambda = -log sigma"),
    Option("pcoeff", float, 0.0, lo=-10.0, hi=10.0, help="PID controller: proportional coefficient"),
    Option("icoeff", float, 1.0, lo=-10.0, hi=10.0, help="PID controller: integral coefficient"),
    Option("dcoeff", float, 0.0, lo=-10.0, hi=10.0, help="PID controller: derivative coefficient"),
    Option("accept_safety", float, 0.81, lo=1e-6, hi=1.0, help="accept a step iff its step-size factor is >= this"),
    FINAL), "DPM-Solver-12/23 with adaptive steps (Lu et al. 2022; k-diffusion's sample_dpm_adaptive), "
            "per-sample step control; fails if the tolerances need more than --nfe"))
register(integrator_spec("reverse_diffusion", ENTRY + "reverse_diffusion", SIGMA_RANGE + (FINAL,),
                     "VE-SDE reverse-diffusion predictor (Song et al. 2021), geometric grid; N NFE"))
register(integrator_spec("euler_maruyama", ENTRY + "euler_maruyama", SIGMA_RANGE + (FINAL,),
                     "VE-SDE Euler-Maruyama (Song et al. 2021), geometric grid; N NFE"))
register(integrator_spec("deis", ENTRY + "deis", SIGMA_OPTIONS + (
    Option("order", int, 3, lo=0, hi=3, help="DEIS polynomial order r (tAB-r)"),
    Option("ab_time", str, "ve", choices=("rho", "ve", "vp"),
           help="time the polynomial is fitted in: rho (=sigma), ve (log sigma), vp (linear-beta VP time)"),
    Option("beta_min", float, 0.1, lo=1e-6, hi=1e3, help="VP SDE beta_min (ab_time vp)"),
    Option("beta_max", float, 20.0, lo=1e-6, hi=1e3, help="VP SDE beta_max (ab_time vp)"),
    Option("warm_start", str, "lower_order", choices=("lower_order", "runge_kutta"),
           help="first steps: the paper's lower orders (N NFE) or order-preserving Runge-Kutta (+(r-1)^2 NFE)"),
    FINAL), "DEIS tAB (Zhang & Chen 2022) on the VE probability-flow ODE, Karras grid; N NFE"))
register(integrator_spec("dpmpp_2m", ENTRY + "dpmpp_2m", SIGMA_OPTIONS + (FINAL,),
                     "DPM-Solver++(2M) (Lu et al. 2022, Alg. 2) on the Karras grid, the diffusers default; N NFE"))
SDE_NOISE = (Option("eta", float, 1.0, lo=0.0, hi=1e3, help="share of the reverse SDE's noise (0: the ODE solver)"),
             Option("s_noise", float, 1.0, lo=0.0, hi=10.0, help="scale of the injected noise"))
register(integrator_spec("dpmpp_2m_sde", ENTRY + "dpmpp_2m_sde", SIGMA_OPTIONS + SDE_NOISE + (
    Option("solver_type", str, "midpoint", choices=("midpoint", "heun"), help="second-order correction"),
    FINAL), "DPM-Solver++(2M) SDE (Lu et al. 2022; k-diffusion's defaults), per-chain noise; N NFE"))
register(integrator_spec("dpmpp_3m_sde", ENTRY + "dpmpp_3m_sde", SIGMA_OPTIONS + SDE_NOISE + (FINAL,),
                     "DPM-Solver++(3M) SDE (k-diffusion's defaults), per-chain noise; N NFE"))
register(integrator_spec("dpmpp_2s_ancestral", ENTRY + "dpmpp_2s_ancestral", SIGMA_OPTIONS + (
    Option("eta", float, 1.0, lo=0.0, hi=1.0, help="ancestral noise share: sigma_up = eta sigma_next sqrt(1 - ...)"),
    SDE_NOISE[1], FINAL), "DPM-Solver++(2S) ancestral (k-diffusion's defaults), per-chain noise; 2N-1 NFE"))
register(integrator_spec("dpmpp_sde", ENTRY + "dpmpp_sde", SIGMA_OPTIONS + (
    Option("eta", float, 1.0, lo=0.0, hi=1.0, help="ancestral noise share of both half-steps"),
    SDE_NOISE[1], Option("r", float, 0.5, lo=1e-3, hi=1.0, help="intermediate point sigma_i^(1-r) sigma_next^r"),
    FINAL), "DPM-Solver++ SDE, single-step (k-diffusion's sample_dpmpp_sde), per-chain noise; 2N-1 NFE"))
register(integrator_spec("unipc", ENTRY + "unipc", SIGMA_OPTIONS + (
    Option("order", int, 2, lo=1, hi=3, help="UniP order p (UniC raises it by one at no NFE); 3 is unstable on "
           "few-step Karras grids"),
    Option("variant", str, "bh2", choices=("bh2", "bh1"), help="B(h): expm1(-h) (bh2) or -h (bh1)"),
    Option("corrector", int, 1, choices=(0, 1), help="1: UniC after every step (no extra NFE); 0: UniP alone"),
    FINAL), "UniPC (Zhao et al. 2023), diffusers' step schedule, on the Karras grid; N NFE"))
