"""dmcmc-fast: fast MCMC and reverse S/ODE samplers for pretrained score-based diffusion models.

Every model is a denoiser `D(x, sigma) -> E[x0 | x]` with per-sample `sigma` of shape `[B]`
(see `dmcmc_fast.models`); every random draw comes from a per-chain Philox stream
(`dmcmc_fast.rng`), so a chain's trajectory does not depend on its batch or slot.
The façade classes (`DLG`, `MILD`, `DEIS`, `Heun`, ...), the continuous-batching `Engine` and the diffusers
bridge (`from_diffusers`, `to_images`) are loaded on first use.
"""
__version__ = "0.1.0"

from dmcmc_fast.models import Denoiser, score_from_denoiser  # noqa: E402,F401


_BRIDGE = ("from_diffusers", "to_images")  # dmcmc_fast.diffusers_bridge: a diffusers pipeline -> a denoiser


def __getattr__(name):  # lazy: `import dmcmc_fast` stays light; `dmcmc_fast.DLG` loads the façade
    import importlib

    # Only these, so `from dmcmc_fast import rng` still imports the submodule: a façade class is CamelCase (one
    # per sampler declaration, `samplers.register` insists), a submodule is not.
    if name == "Engine":  # continuous batching (dmcmc_fast/serve.py)
        return importlib.import_module("dmcmc_fast.serve").Engine
    if name[:1].isupper():
        facade = importlib.import_module("dmcmc_fast.facade")
        if name in facade.__all__:
            return getattr(facade, name)
    elif name in _BRIDGE:
        return getattr(importlib.import_module("dmcmc_fast.diffusers_bridge"), name)
    elif name == "__all__":  # the eager names, every façade class, the bridge
        return ["Denoiser", "score_from_denoiser", "Engine", *importlib.import_module("dmcmc_fast.facade").__all__, *_BRIDGE]
    raise AttributeError(f"module 'dmcmc_fast' has no attribute {name!r}")
