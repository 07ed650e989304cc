"""The MCMC family's entries in the sampler registry (`--sampler NAME`), options named as in the papers."""
from dmcmc_fast.samplers import Option, SamplerSpec, register

E = "dmcmc_fast.mcmc.entry:"
TWEEDIE = Option("tweedie", int, 1, 0, 1, help="1: final denoise x <- D(x, sigma_min) (1 NFE)")
START = Option("sigma_max", float, 80.0, 1e-6, 1e6, help="start N(0, sigma_max^2 I); highest annealing level")
ANNEAL = (START, Option("sigma_min", float, 0.01, 1e-6, 1e3, help="last annealing level sigma_L"),
          Option("n_steps_each", int, 5, 1, 100_000, help="steps per level T (levels L = budget // cost)"))


def _integrators():
    from dmcmc_fast.integrators import INTEGRATORS
    return tuple(sorted(INTEGRATORS))


register(SamplerSpec("langevin", E + "langevin", (
    Option("sigma", float, 0.05, 1e-6, 1e6, help="the one noise level the chain samples p_sigma at"),
    Option("eta", float, 1e-3, 1e-12, 1e6, help="ULA step: x += (eta/2) s(x, sigma) + sqrt(eta) z"),
    Option("sigma_max", float, 1.0, 1e-6, 1e6, help="start N(0, sigma_max^2 I)"), TWEEDIE),
    "unadjusted Langevin at one noise level (1 NFE per step)"))

register(SamplerSpec("ald", E + "ald", ANNEAL + (
    Option("eps", float, 2e-5, 1e-12, 1e3, help="NCSN step: alpha_i = eps sigma_i^2 / sigma_L^2"), TWEEDIE),
    "annealed Langevin dynamics (NCSN, Song & Ermon 2019 Alg. 1)"))

register(SamplerSpec("mild", E + "mild", ANNEAL + (
    Option("eps", float, 2e-5, 1e-12, 1e3, help="step: alpha_i = eps sigma_i^2 / sigma_L^2"),
    Option("gamma", float, 0.9, 0.0, 0.999, help="Nesterov momentum factor"), TWEEDIE),
    "momentum-imbued Langevin dynamics (MILD Alg. 1, final denoise)"))

register(SamplerSpec("baoab_limit", E + "baoab_limit", ANNEAL + (
    Option("eps", float, 5e-5, 1e-12, 1e3, help="step at the last level; h_i = eps (sigma_i / sigma_L)^2"),
    TWEEDIE),
    "BAOAB-limit (Jain & Poole), annealed; --sigma-max = --sigma-min for one level"))

register(SamplerSpec("obabo", E + "obabo", ANNEAL + (
    Option("eps", float, 5e-3, 1e-12, 1e3, help="time step at the last level; h_i = eps sigma_i / sigma_L"),
    Option("gamma", float, 2.0, 1e-6, 1e6, help="friction; O step p <- exp(-gamma h/2) p + ..."), TWEEDIE),
    "OBABO underdamped splitting, annealed; T+1 NFE per level; --sigma-max = --sigma-min for one level"))

register(SamplerSpec("dlg", E + "dlg", (
    Option("eta", float, 0.5, 1e-12, 1e6, help="Langevin step: x += (eta/2) s(x, sigma) + sqrt(eta) z"),
    Option("n_skip", int, 5, 1, 100_000, help="Langevin-Gibbs steps per block"),
    Option("n_den", int, 10, 1, 100_000, help="denoising NFE per block (final Tweedie step included)"),
    Option("integrator", str, "heun", choices=_integrators(), help="denoising integrator"),
    Option("integrator_options", str, "", help='JSON dict of the integrator\'s own options, e.g. \'{"rtol": 1e-3}\''),
    Option("sigma_min", float, 0.002, 1e-6, 1e3, help="lowest level; denoise to it, then Tweedie to 0"),
    Option("sigma_max", float, 80.0, 1e-6, 1e6, help="highest level; initialisation starts at N(0, sigma_max^2 I)"),
    Option("n_levels", int, 1000, 2, 100_000, help="M, the number of geometric levels (exact classifier)"),
    Option("classifier", str, "exact", help="'exact' (analytic models), 'trained' (committed checkpoint "
           "for the data shape) or a checkpoint path"),
    Option("gibbs", str, "argmax", choices=("argmax", "sample"), help="Gibbs step: argmax or a draw"),
    Option("init_integrator", str, "karras_sde", choices=_integrators(), help="initialisation integrator"),
    Option("init_nfe", int, 20, 1, 100_000, help="NFE of the initialisation integrator run"),
    Option("init_noise", float, 0.5, 0.0, 1e3, help="std of the noise added after it (paper: 0.5)"),
    Option("n_init", int, 10, 0, 100_000, help="Langevin-Gibbs steps of the initialisation"),
    Option("engine", str, "auto", choices=("auto", "pipelined", "plain"),
           help="'pipelined' packs chain steps and block denoising into shared network batches "
                "(dmcmc_fast.engine, same samples); 'auto' = plain (audited free of host reads, so its "
                "network calls run as captured CUDA graphs)")),
    "Denoising Langevin Gibbs (Kim & Ye 2023); --num chains, each returns its last block's sample"))
