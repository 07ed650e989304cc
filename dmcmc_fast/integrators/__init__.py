"""Reverse S/ODE integrators from a per-sample start sigma to 0 (see `common.py` for the call shape).

`INTEGRATORS[name] = (sample_fn, steps_for_nfe)`: every `sample_fn` takes the common call shape
`(model, x, sigma_start, n_steps, *, sigma_min, seed, chain_ids, step0, callback, final_tweedie, **options)`
and `steps_for_nfe(nfe, final_tweedie=True, **options)` gives the `n_steps` that fits an NFE budget.
"""
from dmcmc_fast.integrators.common import IntegratorResult
from dmcmc_fast.integrators.deis import deis_steps_for_nfe, sample_deis
from dmcmc_fast.integrators.dpm_adaptive import dpm_adaptive_steps_for_nfe, sample_dpm_adaptive
from dmcmc_fast.integrators.dpm_solver import (dpmpp_2m_sde_steps_for_nfe, dpmpp_2m_steps_for_nfe,
                                               dpmpp_2s_ancestral_steps_for_nfe, dpmpp_3m_sde_steps_for_nfe,
                                               dpmpp_sde_steps_for_nfe, sample_dpmpp_2m, sample_dpmpp_2m_sde,
                                               sample_dpmpp_2s_ancestral, sample_dpmpp_3m_sde, sample_dpmpp_sde)
from dmcmc_fast.integrators.karras import (euler_steps_for_nfe, heun_steps_for_nfe, karras_sde_steps_for_nfe,
                                           sample_euler, sample_heun, sample_karras_sde)
from dmcmc_fast.integrators.rk45 import rk45_steps_for_nfe, sample_rk45
from dmcmc_fast.integrators.sde import sample_euler_maruyama, sample_reverse_diffusion, sde_steps_for_nfe
from dmcmc_fast.integrators.unipc import sample_unipc, unipc_steps_for_nfe

INTEGRATORS = {
    "heun": (sample_heun, heun_steps_for_nfe),
    "karras_sde": (sample_karras_sde, karras_sde_steps_for_nfe),
    "euler": (sample_euler, euler_steps_for_nfe),
    "rk45": (sample_rk45, rk45_steps_for_nfe),
    "dpm_adaptive": (sample_dpm_adaptive, dpm_adaptive_steps_for_nfe),
    "reverse_diffusion": (sample_reverse_diffusion, sde_steps_for_nfe),
    "euler_maruyama": (sample_euler_maruyama, sde_steps_for_nfe),
    "deis": (sample_deis, deis_steps_for_nfe),
    "dpmpp_2m": (sample_dpmpp_2m, dpmpp_2m_steps_for_nfe),
    "dpmpp_2m_sde": (sample_dpmpp_2m_sde, dpmpp_2m_sde_steps_for_nfe),
    "dpmpp_3m_sde": (sample_dpmpp_3m_sde, dpmpp_3m_sde_steps_for_nfe),
    "dpmpp_2s_ancestral": (sample_dpmpp_2s_ancestral, dpmpp_2s_ancestral_steps_for_nfe),
    "dpmpp_sde": (sample_dpmpp_sde, dpmpp_sde_steps_for_nfe),
    "unipc": (sample_unipc, unipc_steps_for_nfe),
}

__all__ = ["INTEGRATORS", "IntegratorResult", "sample_deis", "sample_dpm_adaptive", "sample_dpmpp_2m",
           "sample_dpmpp_2m_sde", "sample_dpmpp_2s_ancestral", "sample_dpmpp_3m_sde", "sample_dpmpp_sde",
           "sample_euler", "sample_euler_maruyama", "sample_heun", "sample_karras_sde", "sample_reverse_diffusion",
           "sample_rk45", "sample_unipc"]
