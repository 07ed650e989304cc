"""MCMC samplers: ULA, annealed Langevin (NCSN), MILD, OBABO, BAOAB-limit, and Denoising Langevin Gibbs
with its noise-level classifiers. Their sampler declarations live in `entry.py`."""
from dmcmc_fast.mcmc.classifier import ExactLevelPosterior, NoiseLevelNet, level_sigmas, load_classifier
from dmcmc_fast.mcmc.common import MCMCResult
from dmcmc_fast.mcmc.dlg import DLGConfig, DLGResult, DLGState, blocks_for_budget, dlg_init, run_dlg
from dmcmc_fast.mcmc.langevin import sample_ald, sample_langevin, sample_mild
from dmcmc_fast.mcmc.underdamped import annealed_schedule, sample_baoab_limit, sample_obabo

__all__ = ["ExactLevelPosterior", "NoiseLevelNet", "level_sigmas", "load_classifier", "MCMCResult", "DLGConfig",
           "DLGResult", "DLGState", "blocks_for_budget", "dlg_init", "run_dlg", "sample_ald", "sample_langevin",
           "sample_mild", "annealed_schedule", "sample_baoab_limit", "sample_obabo"]
