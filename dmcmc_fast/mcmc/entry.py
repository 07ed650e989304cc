"""The MCMC family as samplers (`dmcmc-fast sample --sampler NAME`, `dmcmc_fast.MILD`, ...): each entry
turns a `SampleRequest` (budget `req.nfe` per sample, options validated by the registry) into samples, and
is declared once, by the `@sampler(...)` above it (registry, CLI flags, façade class); options are named
as in the papers.

Every sample is one chain, started from N(0, sigma_max^2 I) (per-chain Philox noise, STREAM_INIT,
step 0); annealed samplers use as many levels as the budget allows (L = budget // cost per level), and a
budget too small for one level fails before any work (the declaration's `budget`). DLG yields several
samples per chain and runs through `dmcmc_fast.engine.dlg_run` (it uses `make_classifier` from here):
its declaration names that runner lazily, so this module never imports the engine.
"""
from __future__ import annotations

from functools import partial

import torch

from dmcmc_fast import rng
from dmcmc_fast.integrators import INTEGRATORS
from dmcmc_fast.kernels import noise  # per-chain normals: one launch on CUDA, rng.chain_randn on the CPU
from dmcmc_fast.mcmc.classifier import (TRAIN_COMMAND, ExactLevelPosterior, TrainedLevelClassifier, check_classifier,
                                        check_targets, checkpoint_path, classifier_for_shape, level_sigmas,
                                        load_classifier)
from dmcmc_fast.mcmc.dlg import DLGConfig
from dmcmc_fast.mcmc.langevin import sample_ald, sample_langevin, sample_mild
from dmcmc_fast.mcmc.underdamped import annealed_schedule, sample_baoab_limit, sample_obabo
from dmcmc_fast.models.gaussian_mixture import GaussianMixture
from dmcmc_fast.samplers import (COMMON_CHECKS, FINAL_TWEEDIE, SIGMA_ORDER_ONE_LEVEL, Check, Option, declare,
                                 get_sampler, json_object, sampler)

START = Option("sigma_max", float, 80.0, 1e-6, 1e6, help="start N(0, sigma_max^2 I); highest annealing level")
ANNEAL = (START, Option("sigma_min", float, 0.01, 1e-6, 1e3, help="last annealing level sigma_L"),
          Option("n_steps_each", int, 5, 1, 100_000, help="steps per level T (levels L = budget // cost)"))
ONE_LEVEL = (SIGMA_ORDER_ONE_LEVEL,)  # annealed samplers: sigma_min = sigma_max runs at one level


def _start(req, sigma_max: float) -> torch.Tensor:
    z = noise.chain_randn(req.seed, req.chain_ids, 0, tuple(req.model.shape), stream=rng.STREAM_INIT,
                        device=req.device)
    return sigma_max * z


def levels_for(sampler: str, extra_per_level: int, nfe: int, o: dict) -> int:
    """Annealing levels L that fit the budget: L * (n_steps_each + extra_per_level) + final_tweedie <= nfe;
    too small a budget is an error naming the sampler and the options that set the cost."""
    per_level, final = o["n_steps_each"] + extra_per_level, o["final_tweedie"]
    n = (nfe - final) // per_level
    if n < 1:
        cost = f"n_steps_each {o['n_steps_each']}" + (f" + {extra_per_level}" if extra_per_level else "")
        end = "1 final Tweedie step" if final else "final_tweedie 0"
        raise ValueError(f"{sampler}: nfe must be at least {per_level + final} ({cost} per level + {end}), "
                         f"got {nfe}")
    return n


def annealed(name: str, facade: str, help: str, options: tuple[Option, ...], extra_per_level: int = 0):
    """Declare an annealed sampler: options ANNEAL + `options` + final_tweedie, sigma_min = sigma_max allowed
    (one level), and a budget that pays at least one level of n_steps_each + `extra_per_level` NFE."""
    return sampler(name, facade=facade, help=help, options=ANNEAL + options + (FINAL_TWEEDIE,), checks=ONE_LEVEL,
                   budget=partial(levels_for, name, extra_per_level))


@sampler("langevin", facade="Langevin", help="unadjusted Langevin at one noise level (1 NFE per step)", options=(
    Option("sigma", float, 0.05, 1e-6, 1e6, help="the one noise level the chain samples p_sigma at"),
    Option("eta", float, 1e-3, 1e-12, 1e6, help="ULA step: x += (eta/2) s(x, sigma) + sqrt(eta) z"),
    Option("sigma_max", float, 1.0, 1e-6, 1e6, help="start N(0, sigma_max^2 I)"), FINAL_TWEEDIE))
def langevin(req):
    o = req.options
    res = sample_langevin(req.model, _start(req, o["sigma_max"]), o["sigma"], o["eta"],
                          req.nfe - o["final_tweedie"], seed=req.seed, chain_ids=req.chain_ids, step0=1,
                          callback=req.callback)
    x = res.x
    if o["final_tweedie"]:
        x = req.model(x, torch.full((x.shape[0],), o["sigma"], device=x.device, dtype=x.dtype))
    return x


def _annealed_common(o):
    return dict(sigma_max=o["sigma_max"], sigma_min=o["sigma_min"], eps=o["eps"],
                final_tweedie=bool(o["final_tweedie"]))


@annealed("ald", "AnnealedLangevin", "annealed Langevin dynamics (NCSN, Song & Ermon 2019 Alg. 1)", (
    Option("eps", float, 2e-5, 1e-12, 1e3, help="NCSN step: alpha_i = eps sigma_i^2 / sigma_L^2"),))
def ald(req):
    o = req.options
    L = levels_for("ald", 0, req.nfe, o)
    return sample_ald(req.model, _start(req, o["sigma_max"]), L, o["n_steps_each"], **_annealed_common(o),
                      seed=req.seed, chain_ids=req.chain_ids, step0=1, callback=req.callback).x


@annealed("mild", "MILD", "momentum-imbued Langevin dynamics (MILD Alg. 1, final denoise)", (
    Option("eps", float, 2e-5, 1e-12, 1e3, help="step: alpha_i = eps sigma_i^2 / sigma_L^2"),
    Option("gamma", float, 0.9, 0.0, 0.999, help="Nesterov momentum factor")))
def mild(req):
    o = req.options
    L = levels_for("mild", 0, req.nfe, o)
    return sample_mild(req.model, _start(req, o["sigma_max"]), L, o["n_steps_each"], **_annealed_common(o),
                       gamma=o["gamma"], seed=req.seed, chain_ids=req.chain_ids, step0=1, callback=req.callback).x


@annealed("baoab_limit", "BAOABLimit", "BAOAB-limit (Jain & Poole), annealed; --sigma-max = --sigma-min for one "
          "level", (Option("eps", float, 5e-5, 1e-12, 1e3, help="step at the last level; h_i = eps (sigma_i / "
                           "sigma_L)^2"),))
def baoab_limit(req):
    o = req.options
    L = levels_for("baoab_limit", 0, req.nfe, o)
    levels, hs = annealed_schedule(L, o["sigma_max"], o["sigma_min"], o["eps"], power=2)
    return sample_baoab_limit(req.model, _start(req, o["sigma_max"]), levels, hs, o["n_steps_each"],
                              final_tweedie=bool(o["final_tweedie"]), seed=req.seed, chain_ids=req.chain_ids,
                              step0=1, callback=req.callback).x


@annealed("obabo", "OBABO", "OBABO underdamped splitting, annealed; T+1 NFE per level; --sigma-max = --sigma-min "
          "for one level", (
    Option("eps", float, 5e-3, 1e-12, 1e3, help="time step at the last level; h_i = eps sigma_i / sigma_L"),
    Option("friction", float, 2.0, 1e-6, 1e6, help="friction coefficient (the paper's gamma); O step "
           "p <- exp(-friction h/2) p + ...")), extra_per_level=1)  # T + 1 NFE per level (the level's first score)
def obabo(req):
    o = req.options
    L = levels_for("obabo", 1, req.nfe, o)
    levels, hs = annealed_schedule(L, o["sigma_max"], o["sigma_min"], o["eps"], power=1)
    return sample_obabo(req.model, _start(req, o["sigma_max"]), levels, hs, o["n_steps_each"],
                        friction=o["friction"], final_tweedie=bool(o["final_tweedie"]), seed=req.seed,
                        chain_ids=req.chain_ids, step0=1, callback=req.callback).x


def make_classifier(model, which: str, n_levels: int, sigma_min: float, sigma_max: float, device,
                    allow_weak: bool = False):
    """DLG's noise-level classifier (unconditional: it sees x only, never `model_kwargs`):

    - `auto` (the default): `exact` for an analytic mixture, else `trained` (an error naming the command that
      trains one where no committed checkpoint fits the model's data shape);
    - `exact`: analytic mixtures, the exact posterior over M = `n_levels` geometric levels from `sigma_max`
      down to `sigma_min`;
    - `trained`: the committed checkpoint for the model's data shape (1x28x28: mnist, 1x8x8: digits);
    - a checkpoint path (`dmcmc-fast train classifier --data PATH --out FILE`).
    A checkpoint brings its own levels (`n_levels`, `sigma_min`, `sigma_max` are not used) and is checked
    against the model when loaded: data shape, data range, levels within the model's noise range
    (`mcmc.classifier.check_classifier`); the errors name the command that trains a fitting one. A checkpoint
    whose card says it misses its targets is refused unless `allow_weak` (`mcmc.classifier.check_targets`).
    - an object: `classifier(x) -> logits [B, M]` with `levels`, a decreasing `[M]` tensor of sigmas (a
      `TrainedLevelClassifier` from `train_classifier` / `load_classifier`, an `ExactLevelPosterior`, your own),
      used as it is (on the sampling device; a `TrainedLevelClassifier` is checked against the model)."""
    if not isinstance(which, str):
        return _classifier_object(model, which, allow_weak)
    if which == "auto":
        which = "exact" if isinstance(model, GaussianMixture) else "trained"
    if which == "exact":
        if not isinstance(model, GaussianMixture):
            raise ValueError(f"classifier 'exact' needs an analytic mixture model (it is the exact posterior over "
                             f"levels), got {type(model).__name__}; for your own model train a noise-level classifier "
                             f"on its data with: {TRAIN_COMMAND}, then pass --classifier FILE (classifier=FILE "
                             "in Python)")
        return ExactLevelPosterior(model, level_sigmas(n_levels, sigma_min, sigma_max).to(device))
    clf = load_classifier(classifier_for_shape(model.shape) if which == "trained" else which, device, model=model)
    check_targets(clf, allow_weak)
    return clf


def _classifier_object(model, clf, allow_weak: bool = False):
    """A classifier given as an object, checked: callable, with decreasing positive `levels` (and, for a trained
    one, its shape, data range and levels against the model, `check_classifier`, and its card's targets unless
    `allow_weak`, `check_targets`: as its checkpoint path would be)."""
    levels = getattr(clf, "levels", None)
    if not callable(clf) or not torch.is_tensor(levels) or levels.ndim != 1 or levels.numel() < 2:
        raise ValueError(f"option classifier: expected 'auto', 'exact', 'trained', a checkpoint path, or an object "
                         f"classifier(x) -> logits [B, M] with .levels (a 1-D tensor of M >= 2 decreasing sigmas); "
                         f"got {type(clf).__name__}")
    if not bool((levels > 0).all()) or not bool((levels[1:] < levels[:-1]).all()):
        raise ValueError("option classifier: its .levels must be > 0 and strictly decreasing (highest sigma first)")
    if isinstance(clf, TrainedLevelClassifier):
        check_classifier(clf, model)
        check_targets(clf, allow_weak)
    return clf


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


def _classifier_found(which) -> bool:
    if not isinstance(which, str):
        return True  # an object: checked against the model by `make_classifier`
    if which not in ("auto", "exact", "trained"):
        try:
            checkpoint_path(which)
        except FileNotFoundError as err:
            raise ValueError(f"option classifier: {err}") from None
    return True


DLG_CHECKS = COMMON_CHECKS + (Check(("integrator", "integrator_options"), "", _integrator_options_ok),
                              Check(("classifier",), "", _classifier_found))
INTEGRATOR_NAMES = tuple(sorted(INTEGRATORS))

# DLG runs as a runner class of the engine (several samples per chain); the engine imports this module, so
# the declaration names its entry lazily. Defaults of options that are DLGConfig fields are DLGConfig's.
declare("dlg", "dmcmc_fast.engine.dlg_run:DLGRun", facade="DLG", kind="blocks", checks=DLG_CHECKS,
        defaults_from=DLGConfig, options=(
    Option("chains", int, 0, 0, 10_000_000, help="number of chains C (0: min(num, 256)); sample i is block i // C "
           "of chain i % C, so a chain yields about num / C samples"),
    Option("eta", float, lo=1e-12, hi=1e6, help="Langevin step: x += (eta/2) s(x, sigma) + sqrt(eta) z "
           "(paper 0.5 for data in [0, 1], x4 here)"),
    Option("n_skip", int, 0, 0, 100_000, keyword=False, help="Langevin-Gibbs steps per block (0: from the "
           "budget, `mcmc.dlg.n_skip_for_budget`)"),
    Option("n_den", int, 0, 0, 100_000, keyword=False, help="denoising NFE per block, final Tweedie step "
           "included (0: nfe - n_skip)"),
    Option("integrator", str, choices=INTEGRATOR_NAMES, help="denoising integrator"),
    Option("integrator_options", str, "", keyword=False,
           help='JSON dict of the integrator\'s own options, e.g. \'{"rtol": 1e-3}\''),
    Option("sigma_min", float, lo=1e-6, hi=1e3, help="lowest level; denoise to it, then Tweedie to 0 "
           "(official code 0.01 for [0, 1])"),
    Option("sigma_max", float, lo=1e-6, hi=1e6, help="highest level; initialisation starts at N(0, sigma_max^2 I) "
           "(official code 50 for [0, 1])"),
    Option("n_levels", int, 1000, 2, 100_000, help="M, the number of geometric levels (exact classifier)"),
    Option("classifier", str, "auto", help="'auto' (exact for the analytic mixtures, else trained), 'exact' "
           "(analytic models), 'trained' (committed checkpoint for the data shape) or a checkpoint path",
           objects="a classifier object: classifier(x) -> logits [B, M] with .levels [M] (decreasing sigmas)"),
    Option("allow_weak_classifier", int, 0, 0, 1, help="1: run with a classifier whose card says it misses its "
           "targets (refused by default: its chains do not mix)"),
    Option("gibbs", str, choices=("argmax", "sample"), help="Gibbs step: argmax or a draw"),
    Option("init_integrator", str, choices=INTEGRATOR_NAMES, help="initialisation integrator"),
    Option("init_integrator_options", str, "", keyword=False, help="JSON dict of its options ('': the paper's "
           "KAR2 settings for karras_sde, s_churn 80, s_tmin 0.1, s_tmax 2, s_noise 1.007)"),
    Option("init_nfe", int, lo=1, hi=100_000, help="NFE of the initialisation integrator run"),
    Option("init_noise", float, lo=0.0, hi=1e3, help="std of the noise added after it (paper 0.5 for [0, 1])"),
    Option("n_init", int, lo=0, hi=100_000, help="Langevin-Gibbs steps of the initialisation"),
    Option("eta_scaling", str, choices=("constant", "sigma2"),
           help="'sigma2': the step at level sigma is eta sigma^2 (a move relative to the noise level)"),
    Option("gibbs_temperature", float, lo=1e-3, hi=1e3, help="gibbs=sample: draw from p(m | x)^(1/T)"),
    Option("level_prior_power", float, lo=-1e4, hi=1e4, help="prior over levels ∝ sigma^a (a > 0 sends "
           "chains up, where they switch modes)"),
    Option("restart_every", int, lo=0, hi=1_000_000, help="R: blocks R, 2R, ... of a chain start from a fresh "
           "initialisation (1/R of the blocks; each restart's NFE is charged to the R blocks it serves); 0: never")),
    help="Denoising Langevin Gibbs (Kim & Ye 2023): --num samples from --chains chains, one per block; --nfe is "
         "the block's NFE, each sample also carries its share of its chain's initialisation")
