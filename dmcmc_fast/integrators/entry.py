"""Registry entry points for the integrators: start from the prior N(0, sigma_max^2 I) (per-chain
Philox noise, stream STREAM_INIT, step 0), integrate to 0 within the NFE budget."""
from __future__ import annotations

import torch

from dmcmc_fast import rng
from dmcmc_fast.integrators.karras import heun_steps_for_nfe, sample_heun


def prior_sample(req) -> torch.Tensor:
    shape = tuple(req.model.shape)
    z = rng.chain_randn(req.seed, req.chain_ids, 0, shape, stream=rng.STREAM_INIT, device=req.device)
    return req.options["sigma_max"] * z


def heun(req):
    o = req.options
    res = sample_heun(req.model, prior_sample(req), o["sigma_max"], heun_steps_for_nfe(req.nfe),
                      sigma_min=o["sigma_min"], rho=o["rho"], callback=req.callback)
    return res.x
