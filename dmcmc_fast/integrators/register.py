"""The integrators' entries in the sampler registry (`--sampler NAME`)."""
from dmcmc_fast.samplers import SIGMA_OPTIONS, SamplerSpec, register

register(SamplerSpec("heun", "dmcmc_fast.integrators.entry:heun", SIGMA_OPTIONS,
                     "Karras deterministic Heun (EDM Alg. 1); N steps cost 2N-1 NFE"))
