"""Registry entry points for the integrators: start from the prior N(0, sigma_max^2 I) (per-chain
Philox noise, stream STREAM_INIT, step 0) or from the request's `x_T`, integrate to 0 within the NFE
budget, on the Karras/geometric grid of the options or on the request's own grid `sigmas`. Every option
of the sampler's spec except `sigma_max` is a keyword of its integrator, named the same."""
from __future__ import annotations

import torch

from dmcmc_fast import rng
from dmcmc_fast.kernels import noise  # per-chain normals: one launch on CUDA, rng.chain_randn on the CPU
from dmcmc_fast.models.base import bcast


def prior_sample(req) -> torch.Tensor:
    """The start state: `req.x_T` if given, else sigma_max z (sigma_0 z per row on a given grid)."""
    if req.x_T is not None:
        return req.x_T
    shape = tuple(req.model.shape)
    z = noise.chain_randn(req.seed, req.chain_ids, 0, shape, stream=rng.STREAM_INIT, device=req.device)
    if req.sigmas is not None:
        return bcast(req.sigmas[:, 0].to(z.dtype), z) * z
    return req.options["sigma_max"] * z


def _integrator_options(name: str, options: dict):
    from dmcmc_fast.integrators import INTEGRATORS

    fn, steps_for_nfe = INTEGRATORS[name]
    opts = {k: v for k, v in options.items() if k != "sigma_max"}
    opts["final_tweedie"] = bool(opts.get("final_tweedie", 1))
    return fn, steps_for_nfe, opts


def max_grid_points(name: str, nfe: int, options: dict) -> int:
    """The most grid points (`sigmas` of `api.sample`, without the trailing 0) whose cost fits `nfe`."""
    _, steps_for_nfe, opts = _integrator_options(name, options)
    return steps_for_nfe(nfe, **opts)


def integrate(name: str, req) -> torch.Tensor:
    fn, steps_for_nfe, opts = _integrator_options(name, req.options)
    if req.sigmas is not None:  # the grid itself as the start (`common.per_sample_grid`)
        start, n_steps = req.sigmas, req.sigmas.shape[1]
    else:
        start, n_steps = req.options["sigma_max"], steps_for_nfe(req.nfe, **opts)
    res = fn(req.model, prior_sample(req), start, n_steps, seed=req.seed, chain_ids=req.chain_ids,
             callback=req.callback, **opts)
    return res.x


def heun(req):
    return integrate("heun", req)


def karras_sde(req):
    return integrate("karras_sde", req)


def euler(req):
    return integrate("euler", req)


def rk45(req):
    return integrate("rk45", req)


def dpm_adaptive(req):
    return integrate("dpm_adaptive", req)


def reverse_diffusion(req):
    return integrate("reverse_diffusion", req)


def euler_maruyama(req):
    return integrate("euler_maruyama", req)


def deis(req):
    return integrate("deis", req)


def dpmpp_2m(req):
    return integrate("dpmpp_2m", req)


def dpmpp_2m_sde(req):
    return integrate("dpmpp_2m_sde", req)


def dpmpp_3m_sde(req):
    return integrate("dpmpp_3m_sde", req)


def dpmpp_2s_ancestral(req):
    return integrate("dpmpp_2s_ancestral", req)


def dpmpp_sde(req):
    return integrate("dpmpp_sde", req)


def unipc(req):
    return integrate("unipc", req)
