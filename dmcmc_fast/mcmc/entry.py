"""Registry entry points of the MCMC family (`dmcmc-fast sample --sampler NAME`): each turns a
`SampleRequest` (budget `req.nfe` per sample, options validated by the registry) into samples.

Every sample is one chain, started from N(0, sigma_max^2 I) (per-chain Philox noise, STREAM_INIT,
step 0); annealed samplers use as many levels as the budget allows (L = budget // cost per level).
DLG yields several samples per chain and runs through `dmcmc_fast.engine.dlg_run` (it uses
`make_classifier` from here).
"""
from __future__ import annotations

import torch

from dmcmc_fast import rng
from dmcmc_fast.kernels import noise  # per-chain normals: one launch on CUDA, rng.chain_randn on the CPU
from dmcmc_fast.mcmc.classifier import (TRAIN_COMMAND, ExactLevelPosterior, classifier_for_shape, level_sigmas,
                                        load_classifier)
from dmcmc_fast.mcmc.langevin import sample_ald, sample_langevin, sample_mild
from dmcmc_fast.mcmc.underdamped import annealed_schedule, sample_baoab_limit, sample_obabo
from dmcmc_fast.models.gaussian_mixture import GaussianMixture


def _start(req, sigma_max: float) -> torch.Tensor:
    z = noise.chain_randn(req.seed, req.chain_ids, 0, tuple(req.model.shape), stream=rng.STREAM_INIT,
                        device=req.device)
    return sigma_max * z


def _levels_for(req, sampler: str, extra_per_level: int = 0) -> int:
    """Annealing levels L that fit the budget: L * (n_steps_each + extra_per_level) + final_tweedie <= nfe;
    too small a budget is an error naming the sampler and the options that set the cost."""
    o = req.options
    per_level, final = o["n_steps_each"] + extra_per_level, o["final_tweedie"]
    n = (req.nfe - final) // per_level
    if n < 1:
        cost = f"n_steps_each {o['n_steps_each']}" + (f" + {extra_per_level}" if extra_per_level else "")
        end = "1 final Tweedie step" if final else "final_tweedie 0"
        raise ValueError(f"{sampler}: nfe must be at least {per_level + final} ({cost} per level + {end}), "
                         f"got {req.nfe}")
    return n


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


def ald(req):
    o = req.options
    L = _levels_for(req, "ald")
    return sample_ald(req.model, _start(req, o["sigma_max"]), L, o["n_steps_each"], **_annealed_common(o),
                      seed=req.seed, chain_ids=req.chain_ids, step0=1, callback=req.callback).x


def mild(req):
    o = req.options
    L = _levels_for(req, "mild")
    return sample_mild(req.model, _start(req, o["sigma_max"]), L, o["n_steps_each"], **_annealed_common(o),
                       gamma=o["gamma"], seed=req.seed, chain_ids=req.chain_ids, step0=1, callback=req.callback).x


def baoab_limit(req):
    o = req.options
    L = _levels_for(req, "baoab_limit")
    levels, hs = annealed_schedule(L, o["sigma_max"], o["sigma_min"], o["eps"], power=2)
    return sample_baoab_limit(req.model, _start(req, o["sigma_max"]), levels, hs, o["n_steps_each"],
                              final_tweedie=bool(o["final_tweedie"]), seed=req.seed, chain_ids=req.chain_ids,
                              step0=1, callback=req.callback).x


def obabo(req):
    o = req.options
    L = _levels_for(req, "obabo", extra_per_level=1)  # T + 1 NFE per level (the level's first score)
    levels, hs = annealed_schedule(L, o["sigma_max"], o["sigma_min"], o["eps"], power=1)
    return sample_obabo(req.model, _start(req, o["sigma_max"]), levels, hs, o["n_steps_each"],
                        friction=o["friction"], final_tweedie=bool(o["final_tweedie"]), seed=req.seed,
                        chain_ids=req.chain_ids, step0=1, callback=req.callback).x


def make_classifier(model, which: str, n_levels: int, sigma_min: float, sigma_max: float, device):
    """DLG's noise-level classifier (unconditional: it sees x only, never `model_kwargs`):

    - `exact`: analytic mixtures, the exact posterior over M = `n_levels` geometric levels from `sigma_max`
      down to `sigma_min`;
    - `trained`: the committed checkpoint for the model's data shape (1x28x28: mnist, 1x8x8: digits);
    - a checkpoint path (`dmcmc-fast train classifier --data PATH --out FILE`).
    A checkpoint brings its own levels (`n_levels`, `sigma_min`, `sigma_max` are not used) and is checked
    against the model when loaded: data shape, data range, levels within the model's noise range
    (`mcmc.classifier.check_classifier`); the errors name the command that trains a fitting one."""
    if which == "exact":
        if not isinstance(model, GaussianMixture):
            raise ValueError(f"classifier 'exact' needs an analytic mixture model (it is the exact posterior over "
                             f"levels), got {type(model).__name__}; for your own model train a noise-level classifier "
                             f"on its data with: {TRAIN_COMMAND}, then pass --classifier FILE (classifier=FILE "
                             "in Python)")
        return ExactLevelPosterior(model, level_sigmas(n_levels, sigma_min, sigma_max).to(device))
    return load_classifier(classifier_for_shape(model.shape) if which == "trained" else which, device, model=model)
