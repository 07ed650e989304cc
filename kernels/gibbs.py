"""DLG's Gibbs step over noise levels and its block-minimum bookkeeping.

gibbs_select      idx = argmax_m logits[b, m] (+ log_prior[m]) (+ Gumbel g[b, m] with sample=True:
                  g = -log(-log u), u = chain_rand(seed, chain, step, (M,), stream)) -> (idx, level_sigmas[idx])
block_min_update  in place: rows with sigma < best_sigma copy x into best_x and sigma into best_sigma
                  (keeps each chain's lowest-sigma state of the current block; DLG Alg. 1)
"""
from __future__ import annotations

import torch

from dmcmc_fast import rng

from ._args import chain_vec, rows, same_shape, step_vec
from ._dispatch import choose_backend


def _check_select(logits, level_sigmas, log_prior):
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape [B, M], got {tuple(logits.shape)}")
    m = logits.shape[1]
    if level_sigmas.shape != (m,):
        raise ValueError(f"level_sigmas must have shape [{m}] (one sigma per level), got {tuple(level_sigmas.shape)}")
    if log_prior is not None and log_prior.shape not in ((m,), tuple(logits.shape)):
        raise ValueError(f"log_prior must have shape [{m}] or {list(logits.shape)}, got {tuple(log_prior.shape)}")


# ---------------- plain-torch references ----------------
def gibbs_select_reference(logits, level_sigmas, log_prior=None, sample=False, seed=0, chain_ids=None, step=0,
                           stream=rng.STREAM_GIBBS):
    score = logits.float()
    if log_prior is not None:
        score = score + log_prior.float()
    if sample:
        u = rng.chain_rand(seed, chain_vec(chain_ids, logits), step_vec(step, logits), (logits.shape[1],),
                           stream=stream, device=logits.device)
        score = score - torch.log(-torch.log(u))
    idx = torch.argmax(score, dim=1)
    return idx, level_sigmas[idx]


def block_min_update_reference(x, sigma, best_x, best_sigma):
    lower = sigma < best_sigma
    best_x.copy_(torch.where(rows(lower, x), x, best_x))
    best_sigma.copy_(torch.where(lower, sigma, best_sigma))
    return best_x, best_sigma


# ---------------- entry points ----------------
def gibbs_select(logits, level_sigmas, log_prior=None, sample=False, seed=0, chain_ids=None, step=0,
                 stream=rng.STREAM_GIBBS, backend=None):
    _check_select(logits, level_sigmas, log_prior)
    return gibbs_select_reference(logits, level_sigmas, log_prior, sample, seed, chain_ids, step, stream)


def block_min_update(x, sigma, best_x, best_sigma, backend=None):
    same_shape("best_x", best_x, x)
    if sigma.shape != (x.shape[0],) or best_sigma.shape != sigma.shape:
        raise ValueError(f"sigma and best_sigma must have shape [{x.shape[0]}], got {tuple(sigma.shape)}, "
                         f"{tuple(best_sigma.shape)}")
    return block_min_update_reference(x, sigma, best_x, best_sigma)
