"""The default grid of a model that has its own: a diffusers model's scheduler (`from_diffusers`).

A model may declare `own_sigmas(n) -> [n + 1]` (n decreasing noise levels, then 0): the grid its noise
schedule steps on (`DiffusersUNetAdapter.own_sigmas`: the scheduler's `set_timesteps(n)`, with its spacing
and timesteps). The sampling API then steps on that grid by default, with as many levels as the NFE budget
pays for (`integrators.entry.max_grid_points`), so that a diffusers scheduler's configuration is the grid, as
in diffusers' own loop. It does not where
- `sigmas=` is given (your grid wins),
- `sigma_min`, `sigma_max` or `rho` is given (you asked for the sampler's own grid over that range),
- the sampler chooses its own steps (rk45, dpm_adaptive) or levels (DLG, MILD, ...: the samplers that do not
  take `sigmas`), or the budget pays for fewer than 2 levels.
"""
from __future__ import annotations

from dmcmc_fast.api import resolve_options
from dmcmc_fast.integrators.entry import max_grid_points
from dmcmc_fast.samplers import get_sampler

RANGE_OPTIONS = ("sigma_min", "sigma_max", "rho")


def default_grid(model, sampler: str, nfe, options: dict, sigmas=None):
    """`sigmas` if given, else the model's own grid for this sampler and budget where it applies (module
    docstring), else None (the sampler's default grid over the model's range)."""
    if sigmas is not None or not callable(getattr(model, "own_sigmas", None)):
        return sigmas
    if not isinstance(nfe, int) or isinstance(nfe, bool) or nfe < 1:
        return None  # the sampling API names the bad budget
    spec = get_sampler(sampler)
    if "sigmas" not in spec.takes or any(options.get(k) is not None for k in RANGE_OPTIONS):
        return None
    n = max_grid_points(sampler, nfe, resolve_options(model, sampler, options))
    return model.own_sigmas(n) if n >= 2 else None
