"""Models as VE denoisers: the protocol, adapters, analytic models and the built-in registry."""
from dmcmc_fast.models.base import (ChainDiverged, CountingDenoiser, Denoiser, NonFiniteModelOutput, as_sigma, bcast,
                                    check_call, score_from_denoiser)
from dmcmc_fast.models.gaussian_mixture import GaussianMixture, IdealDenoiser, gaussian
from dmcmc_fast.models.adapters import DiffusersUNetAdapter, Guided, VEScoreAdapter, VPAdapter

__all__ = ["ChainDiverged", "CountingDenoiser", "Denoiser", "NonFiniteModelOutput", "as_sigma", "bcast", "check_call",
           "score_from_denoiser", "GaussianMixture", "IdealDenoiser", "gaussian", "DiffusersUNetAdapter",
           "Guided", "VEScoreAdapter", "VPAdapter"]
