"""Evaluation: Fréchet distances (exact for analytic models), mode coverage, class balance."""
from dmcmc_fast.eval.frechet import frechet_distance, gaussian_stats
from dmcmc_fast.eval.modes import mode_report

__all__ = ["frechet_distance", "gaussian_stats", "mode_report"]
