"""dmcmc-fast: fast MCMC and reverse S/ODE samplers for pretrained score-based diffusion models.

Every model is a denoiser `D(x, sigma) -> E[x0 | x]` with per-sample `sigma` of shape `[B]`
(see `dmcmc_fast.models`); every random draw comes from a per-chain Philox stream
(`dmcmc_fast.rng`), so a chain's trajectory does not depend on its batch or slot.
The façade classes (`DLG`, `MILD`, `DEIS`, `Heun`, ...) and the diffusers bridge (`from_diffusers`,
`to_images`) are loaded on first use.
"""
__version__ = "0.1.0"

from dmcmc_fast.models import Denoiser, score_from_denoiser  # noqa: E402,F401


_FACADE = ("Sampler", "DLG", "MILD", "DEIS", "OBABO", "BAOABLimit", "Langevin", "AnnealedLangevin", "Heun",
           "KarrasSDE", "Euler", "RK45", "DPMSolverAdaptive", "ReverseDiffusion", "EulerMaruyama", "DPMSolverPP2M",
           "DPMSolverPP2MSDE", "DPMSolverPP3MSDE", "DPMSolverPP2SAncestral",
           "DPMSolverPPSDE", "UniPC")


_BRIDGE = ("from_diffusers", "to_images")  # dmcmc_fast.diffusers_bridge: a diffusers pipeline -> a denoiser


def __getattr__(name):  # lazy: `import dmcmc_fast` stays light; `dmcmc_fast.DLG` loads the façade
    if name in _FACADE or name in _BRIDGE:  # only these: `from dmcmc_fast import rng` must still import the submodule
        import importlib

        module = "dmcmc_fast.facade" if name in _FACADE else "dmcmc_fast.diffusers_bridge"
        return getattr(importlib.import_module(module), name)
    raise AttributeError(f"module 'dmcmc_fast' has no attribute {name!r}")
