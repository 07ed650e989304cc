"""k-diffusion's sampler API on this library's integrators: existing k-diffusion code swaps one import.

    import dmcmc_fast.k as K          # was: import k_diffusion as K   (K.sampling.sample_heun, ...)
    from dmcmc_fast.k import sampling # was: from k_diffusion import sampling
    K.sample_heun(model, x, K.get_sigmas_karras(32, 0.002, 80.0))     # the names are here too

Every name of k-diffusion's `sampling` module that samples or builds a grid (semantics and differences:
`dmcmc_fast/k/sampling.py`).
"""
from dmcmc_fast.k import sampling  # noqa: F401
from dmcmc_fast.k.sampling import *  # noqa: F401,F403
from dmcmc_fast.k.sampling import __all__ as _names

__all__ = ["sampling", *_names]


def __getattr__(name: str):
    return sampling.__getattr__(name)
