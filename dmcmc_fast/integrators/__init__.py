"""Reverse S/ODE integrators from a per-sample start sigma to 0 (see `common.py` for the call shape).

`INTEGRATORS[name] = (sample_fn, steps_for_nfe)`, one per declaration in `entry.py`: every `sample_fn` takes
the common call shape
`(model, x, sigma_start, n_steps, *, sigma_min, seed, chain_ids, step0, callback, final_tweedie, **options)`
and `steps_for_nfe(nfe, final_tweedie=True, **options)` gives the `n_steps` that fits an NFE budget.
"""
from dmcmc_fast.integrators.common import IntegratorResult
from dmcmc_fast.integrators.deis import sample_deis
from dmcmc_fast.integrators.dpm_adaptive import sample_dpm_adaptive
from dmcmc_fast.integrators.dpm_solver import (sample_dpmpp_2m, sample_dpmpp_2m_sde, sample_dpmpp_2s_ancestral,
                                               sample_dpmpp_3m_sde, sample_dpmpp_sde)
from dmcmc_fast.integrators.entry import INTEGRATORS  # filled by the declarations (entry.integrator)
from dmcmc_fast.integrators.karras import sample_euler, sample_heun, sample_karras_sde
from dmcmc_fast.integrators.rk45 import sample_rk45
from dmcmc_fast.integrators.sde import sample_euler_maruyama, sample_reverse_diffusion
from dmcmc_fast.integrators.unipc import sample_unipc

__all__ = ["INTEGRATORS", "IntegratorResult", "sample_deis", "sample_dpm_adaptive", "sample_dpmpp_2m",
           "sample_dpmpp_2m_sde", "sample_dpmpp_2s_ancestral", "sample_dpmpp_3m_sde", "sample_dpmpp_sde",
           "sample_euler", "sample_euler_maruyama", "sample_heun", "sample_karras_sde", "sample_reverse_diffusion",
           "sample_rk45", "sample_unipc"]
