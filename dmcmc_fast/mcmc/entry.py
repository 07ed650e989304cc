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
from dmcmc_fast.mcmc.classifier import (ExactLevelPosterior, classifier_for_shape, level_sigmas,
                                        load_classifier)
from dmcmc_fast.mcmc.langevin import sample_ald, sample_langevin, sample_mild
from dmcmc_fast.mcmc.underdamped import annealed_schedule, sample_baoab_limit, sample_obabo
from dmcmc_fast.models.gaussian_mixture import GaussianMixture


def _start(req, sigma_max: float) -> torch.Tensor:
    z = noise.chain_randn(req.seed, req.chain_ids, 0, tuple(req.model.shape), stream=rng.STREAM_INIT,
                        device=req.device)
    return sigma_max * z


def _levels_for(req, cost_per_level: int, extra: int, name="nfe") -> int:
    n = (req.nfe - extra) // cost_per_level
    if n < 1:
        raise ValueError(f"{name} must be at least {cost_per_level + extra} for these options, got {req.nfe}")
    return n


def langevin(req):
    o = req.options
    res = sample_langevin(req.model, _start(req, o["sigma_max"]), o["sigma"], o["eta"], req.nfe - o["tweedie"],
                          seed=req.seed, chain_ids=req.chain_ids, step0=1, callback=req.callback)
    x = res.x
    if o["tweedie"]:
        x = req.model(x, torch.full((x.shape[0],), o["sigma"], device=x.device, dtype=x.dtype))
    return x


def _annealed_common(o):
    return dict(sigma_max=o["sigma_max"], sigma_min=o["sigma_min"], eps=o["eps"], tweedie=bool(o["tweedie"]))


def ald(req):
    o = req.options
    L = _levels_for(req, o["n_steps_each"], o["tweedie"])
    return sample_ald(req.model, _start(req, o["sigma_max"]), L, o["n_steps_each"], **_annealed_common(o),
                      seed=req.seed, chain_ids=req.chain_ids, step0=1, callback=req.callback).x


def mild(req):
    o = req.options
    L = _levels_for(req, o["n_steps_each"], o["tweedie"])
    return sample_mild(req.model, _start(req, o["sigma_max"]), L, o["n_steps_each"], **_annealed_common(o),
                       gamma=o["gamma"], seed=req.seed, chain_ids=req.chain_ids, step0=1, callback=req.callback).x


def baoab_limit(req):
    o = req.options
    L = _levels_for(req, o["n_steps_each"], o["tweedie"])
    levels, hs = annealed_schedule(L, o["sigma_max"], o["sigma_min"], o["eps"], power=2)
    return sample_baoab_limit(req.model, _start(req, o["sigma_max"]), levels, hs, o["n_steps_each"],
                              tweedie=bool(o["tweedie"]), seed=req.seed, chain_ids=req.chain_ids, step0=1,
                              callback=req.callback).x


def obabo(req):
    o = req.options
    L = _levels_for(req, o["n_steps_each"] + 1, o["tweedie"])
    levels, hs = annealed_schedule(L, o["sigma_max"], o["sigma_min"], o["eps"], power=1)
    return sample_obabo(req.model, _start(req, o["sigma_max"]), levels, hs, o["n_steps_each"], gamma=o["gamma"],
                        tweedie=bool(o["tweedie"]), seed=req.seed, chain_ids=req.chain_ids, step0=1,
                        callback=req.callback).x


def make_classifier(model, which: str, n_levels: int, sigma_min: float, sigma_max: float, device):
    """`exact` (analytic mixtures: the exact posterior over M geometric levels), `trained` (the committed
    checkpoint for the model's data shape) or a checkpoint path."""
    if which == "exact":
        if not isinstance(model, GaussianMixture):
            raise ValueError(f"classifier 'exact' needs an analytic mixture model, got {type(model).__name__}; "
                             "use --classifier trained or a checkpoint path")
        return ExactLevelPosterior(model, level_sigmas(n_levels, sigma_min, sigma_max).to(device))
    return load_classifier(classifier_for_shape(model.shape) if which == "trained" else which, device)
