"""The MCMC family's entries in the sampler registry (`--sampler NAME`), options named as in the papers."""
from dmcmc_fast.samplers import (COMMON_CHECKS, FINAL_TWEEDIE, SIGMA_ORDER_ONE_LEVEL, Check, Option, SamplerSpec,
                                 get_sampler, json_object, register)

E = "dmcmc_fast.mcmc.entry:"
START = Option("sigma_max", float, 80.0, 1e-6, 1e6, help="start N(0, sigma_max^2 I); highest annealing level")
ANNEAL = (START, Option("sigma_min", float, 0.01, 1e-6, 1e3, help="last annealing level sigma_L"),
          Option("n_steps_each", int, 5, 1, 100_000, help="steps per level T (levels L = budget // cost)"))
ONE_LEVEL = (SIGMA_ORDER_ONE_LEVEL,)  # annealed samplers: sigma_min = sigma_max runs at one level


def _integrators():
    from dmcmc_fast.integrators import INTEGRATORS
    return tuple(sorted(INTEGRATORS))


def _integrator_options_ok(integrator: str, text: str) -> bool:
    """DLG's integrator_options: a JSON object of the integrator's own options (DLG sets its sigma range
    and final step), each valid for it."""
    dlg_sets = ("sigma_max", "sigma_min", "final_tweedie")
    own = {o.name: o for o in get_sampler(integrator).options if o.name not in dlg_sets}
    given = json_object(text, "integrator_options")
    unknown = sorted(set(given) - set(own))
    if unknown:
        raise ValueError(f"option integrator_options: {integrator} does not take {', '.join(unknown)} here; "
                         f"it takes: {', '.join(own) or 'none'}")
    for name, value in given.items():
        own[name].validate(value, f"integrator_options: {integrator}")
    return True


def _classifier_found(which: str) -> bool:
    from dmcmc_fast.mcmc.classifier import checkpoint_path

    if which not in ("exact", "trained"):
        try:
            checkpoint_path(which)
        except FileNotFoundError as err:
            raise ValueError(f"option classifier: {err}") from None
    return True


DLG_CHECKS = COMMON_CHECKS + (Check(("integrator", "integrator_options"), "", _integrator_options_ok),
                              Check(("classifier",), "", _classifier_found))


register(SamplerSpec("langevin", E + "langevin", (
    Option("sigma", float, 0.05, 1e-6, 1e6, help="the one noise level the chain samples p_sigma at"),
    Option("eta", float, 1e-3, 1e-12, 1e6, help="ULA step: x += (eta/2) s(x, sigma) + sqrt(eta) z"),
    Option("sigma_max", float, 1.0, 1e-6, 1e6, help="start N(0, sigma_max^2 I)"), FINAL_TWEEDIE),
    "unadjusted Langevin at one noise level (1 NFE per step)"))

register(SamplerSpec("ald", E + "ald", ANNEAL + (
    Option("eps", float, 2e-5, 1e-12, 1e3, help="NCSN step: alpha_i = eps sigma_i^2 / sigma_L^2"), FINAL_TWEEDIE),
    "annealed Langevin dynamics (NCSN, Song & Ermon 2019 Alg. 1)", ONE_LEVEL))

register(SamplerSpec("mild", E + "mild", ANNEAL + (
    Option("eps", float, 2e-5, 1e-12, 1e3, help="step: alpha_i = eps sigma_i^2 / sigma_L^2"),
    Option("gamma", float, 0.9, 0.0, 0.999, help="Nesterov momentum factor"), FINAL_TWEEDIE),
    "momentum-imbued Langevin dynamics (MILD Alg. 1, final denoise)", ONE_LEVEL))

register(SamplerSpec("baoab_limit", E + "baoab_limit", ANNEAL + (
    Option("eps", float, 5e-5, 1e-12, 1e3, help="step at the last level; h_i = eps (sigma_i / sigma_L)^2"),
    FINAL_TWEEDIE),
    "BAOAB-limit (Jain & Poole), annealed; --sigma-max = --sigma-min for one level", ONE_LEVEL))

register(SamplerSpec("obabo", E + "obabo", ANNEAL + (
    Option("eps", float, 5e-3, 1e-12, 1e3, help="time step at the last level; h_i = eps sigma_i / sigma_L"),
    Option("friction", float, 2.0, 1e-6, 1e6, help="friction coefficient (the paper's gamma); O step "
           "p <- exp(-friction h/2) p + ..."), FINAL_TWEEDIE),
    "OBABO underdamped splitting, annealed; T+1 NFE per level; --sigma-max = --sigma-min for one level",
    ONE_LEVEL))

register(SamplerSpec("dlg", "dmcmc_fast.engine.dlg_run:DLGRun", (
    Option("chains", int, 0, 0, 10_000_000, help="number of chains C (0: min(num, 256)); sample i is block i // C "
           "of chain i % C, so a chain yields about num / C samples"),
    Option("eta", float, 2.0, 1e-12, 1e6, help="Langevin step: x += (eta/2) s(x, sigma) + sqrt(eta) z "
           "(paper 0.5 for data in [0, 1], x4 here)"),
    Option("n_skip", int, 5, 1, 100_000, help="Langevin-Gibbs steps per block"),
    Option("n_den", int, 0, 0, 100_000, help="denoising NFE per block, final Tweedie step included "
           "(0: nfe - n_skip)"),
    Option("integrator", str, "heun", choices=_integrators(), help="denoising integrator"),
    Option("integrator_options", str, "", help='JSON dict of the integrator\'s own options, e.g. \'{"rtol": 1e-3}\''),
    Option("sigma_min", float, 0.02, 1e-6, 1e3, help="lowest level; denoise to it, then Tweedie to 0 "
           "(official code 0.01 for [0, 1])"),
    Option("sigma_max", float, 100.0, 1e-6, 1e6, help="highest level; initialisation starts at N(0, sigma_max^2 I) "
           "(official code 50 for [0, 1])"),
    Option("n_levels", int, 1000, 2, 100_000, help="M, the number of geometric levels (exact classifier)"),
    Option("classifier", str, "exact", help="'exact' (analytic models), 'trained' (committed checkpoint "
           "for the data shape) or a checkpoint path"),
    Option("gibbs", str, "argmax", choices=("argmax", "sample"), help="Gibbs step: argmax or a draw"),
    Option("init_integrator", str, "karras_sde", choices=_integrators(), help="initialisation integrator"),
    Option("init_integrator_options", str, "", help="JSON dict of its options ('': the paper's KAR2 settings "
           "for karras_sde, s_churn 80, s_tmin 0.1, s_tmax 2, s_noise 1.007)"),
    Option("init_nfe", int, 20, 1, 100_000, help="NFE of the initialisation integrator run"),
    Option("init_noise", float, 1.0, 0.0, 1e3, help="std of the noise added after it (paper 0.5 for [0, 1])"),
    Option("n_init", int, 10, 0, 100_000, help="Langevin-Gibbs steps of the initialisation"),
    Option("eta_scaling", str, "constant", choices=("constant", "sigma2"),
           help="'sigma2': the step at level sigma is eta sigma^2 (a move relative to the noise level)"),
    Option("gibbs_temperature", float, 1.0, 1e-3, 1e3, help="gibbs=sample: draw from p(m | x)^(1/T)"),
    Option("level_prior_power", float, 0.0, -1e4, 1e4, help="prior over levels ∝ sigma^a (a > 0 sends "
           "chains up, where they switch modes)")),
    "Denoising Langevin Gibbs (Kim & Ye 2023): --num samples from --chains chains, one per block; --nfe is "
    "the block's NFE, each sample also carries its share of its chain's initialisation", DLG_CHECKS, kind="blocks"))
