"""dmcmc-fast: fast MCMC and reverse S/ODE samplers for pretrained score-based diffusion models.

Every model is a denoiser `D(x, sigma) -> E[x0 | x]` with per-sample `sigma` of shape `[B]`
(see `dmcmc_fast.models`); every random draw comes from a per-chain Philox stream
(`dmcmc_fast.rng`), so a chain's trajectory does not depend on its batch or slot.
"""
__version__ = "0.1.0"

from dmcmc_fast.models import Denoiser, score_from_denoiser  # noqa: E402,F401
