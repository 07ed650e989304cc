"""DLG's Gibbs step over noise levels and its block-minimum bookkeeping: Triton kernels, launchers,
plain-torch references and dispatching entry points.

gibbs_select      idx = argmax_m logits[b, m] (+ log_prior[m]) (+ Gumbel g[b, m] with sample=True:
                  g = -log(-log u), u = chain_rand(seed, chain, step, (M,), stream)) -> (idx, level_sigmas[idx])
block_min_update  in place: rows with sigma < best_sigma copy x into best_x and sigma into best_sigma
                  (keeps each chain's lowest-sigma state of the current block; DLG Alg. 1)
gibbs_select_block_min  both in one launch: the new level labels the current x, so the row that draws
                  sigma < best_sigma copies x right away (one program per row, no race on best_sigma)
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from dmcmc_fast import rng

from . import noise
from ._args import chain_vec, compute_dtype, in_dtype, rows, same_shape, step_vec
from ._dispatch import choose_backend
from ._launch import as_rows, block_for, grid_for, seed_words
from ._philox import chain_rand


def _check_select(logits, level_sigmas, log_prior):
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape [B, M], got {tuple(logits.shape)}")
    m = logits.shape[1]
    if level_sigmas.shape != (m,):
        raise ValueError(f"level_sigmas must have shape [{m}] (one sigma per level), got {tuple(level_sigmas.shape)}")
    if log_prior is not None and log_prior.shape not in ((m,), tuple(logits.shape)):
        raise ValueError(f"log_prior must have shape [{m}] or {list(logits.shape)}, got {tuple(log_prior.shape)}")


# ---------------- Triton kernels ----------------
@triton.jit
def _gibbs_kernel(logits_ptr, prior_ptr, level_sigma_ptr, idx_ptr, sigma_out_ptr, chain_ptr, step_ptr, m,
                  prior_row_stride, seed_lo, seed_hi, stream, x_ptr, best_x_ptr, best_sigma_ptr, n,
                  HAS_PRIOR: tl.constexpr, SAMPLE: tl.constexpr, BLOCK_MIN: tl.constexpr, COMPUTE: tl.constexpr,
                  BLOCK: tl.constexpr, BLOCK_N: tl.constexpr):
    """One program per row: running (max, first argmax) over blocks of the M levels; with BLOCK_MIN, then
    the row of x (n elements) goes to best_x when the drawn sigma is below best_sigma."""
    row = tl.program_id(0)
    chain = tl.load(chain_ptr + row)
    step = tl.load(step_ptr + row)
    best_v = tl.full((), float("-inf"), COMPUTE)
    best_i = tl.full((), 0, tl.int32)
    for start in range(0, m, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        mask = cols < m
        score = tl.load(logits_ptr + row.to(tl.int64) * m + cols, mask=mask).to(COMPUTE)
        if HAS_PRIOR:
            score += tl.load(prior_ptr + row.to(tl.int64) * prior_row_stride + cols, mask=mask).to(COMPUTE)
        if SAMPLE:
            u = chain_rand(seed_lo, seed_hi, start, chain, step, stream, BLOCK)
            score -= tl.log(-tl.log(u))
        score = tl.where(mask, score, float("-inf"))
        v, i = tl.max(score, axis=0, return_indices=True)
        take = v > best_v
        best_i = tl.where(take, start + i, best_i)
        best_v = tl.where(take, v, best_v)
    sigma = tl.load(level_sigma_ptr + best_i)
    tl.store(idx_ptr + row, best_i.to(tl.int64))
    tl.store(sigma_out_ptr + row, sigma)
    if BLOCK_MIN:
        if sigma < tl.load(best_sigma_ptr + row):
            for start in range(0, n, BLOCK_N):
                cols = start + tl.arange(0, BLOCK_N)
                offs = row.to(tl.int64) * n + cols
                x = tl.load(x_ptr + offs, mask=cols < n)
                tl.store(best_x_ptr + offs, x.to(best_x_ptr.dtype.element_ty), mask=cols < n)
            tl.store(best_sigma_ptr + row, sigma.to(best_sigma_ptr.dtype.element_ty))


@triton.jit
def _block_min_kernel(x_ptr, sigma_ptr, best_x_ptr, best_sigma_ptr, n, BLOCK: tl.constexpr):
    """Grid (row, block): copy the row's block of x into best_x where sigma < best_sigma (reads only then)."""
    row = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    if tl.load(sigma_ptr + row) < tl.load(best_sigma_ptr + row):
        mask = cols < n
        offs = row.to(tl.int64) * n + cols
        x = tl.load(x_ptr + offs, mask=mask)
        tl.store(best_x_ptr + offs, x.to(best_x_ptr.dtype.element_ty), mask=mask)


# ---------------- launchers ----------------
def gibbs_select_triton(logits, level_sigmas, log_prior=None, sample=False, seed=0, chain_ids=None, step=0,
                        stream=rng.STREAM_GIBBS, x=None, best_x=None, best_sigma=None):
    """With x, best_x, best_sigma: also the block-minimum update (gibbs_select_block_min)."""
    b, m = logits.shape
    lg = logits.contiguous()
    idx = torch.empty(b, dtype=torch.int64, device=logits.device)
    sigma = torch.empty(b, dtype=level_sigmas.dtype, device=logits.device)
    prior = lg if log_prior is None else log_prior.contiguous()
    lo, hi = seed_words(seed)
    block_min = x is not None
    xr = as_rows(x) if block_min else lg
    _gibbs_kernel[(b,)](lg, prior, level_sigmas.contiguous(), idx, sigma, chain_vec(chain_ids, logits),
                        step_vec(step, logits), m, m if prior.ndim == 2 else 0, lo, hi, stream,
                        xr, best_x if block_min else lg, best_sigma if block_min else lg, xr.shape[1],
                        HAS_PRIOR=log_prior is not None, SAMPLE=bool(sample), BLOCK_MIN=block_min,
                        COMPUTE=tl.float64 if logits.dtype == torch.float64 else tl.float32, BLOCK=block_for(m),
                        BLOCK_N=block_for(xr.shape[1]))
    return idx, sigma


def block_min_update_triton(x, sigma, best_x, best_sigma):
    xr = as_rows(x)
    grid, block = grid_for(*xr.shape)
    _block_min_kernel[grid](xr, sigma, best_x, best_sigma, xr.shape[1], BLOCK=block)
    best_sigma.copy_(torch.where(sigma < best_sigma, sigma, best_sigma))  # after the copy: same stream order
    return best_x, best_sigma


# ---------------- plain-torch references ----------------
def gibbs_select_reference(logits, level_sigmas, log_prior=None, sample=False, seed=0, chain_ids=None, step=0,
                           stream=rng.STREAM_GIBBS):
    cd = compute_dtype(logits)
    score = in_dtype(logits, cd)
    if log_prior is not None:
        score = score + in_dtype(log_prior, cd)
    if sample:
        u = noise.chain_rand(seed, chain_vec(chain_ids, logits), step_vec(step, logits), (logits.shape[1],),
                             stream=stream, device=logits.device)
        score = score - torch.log(-torch.log(u))
    idx = torch.argmax(score, dim=1)
    return idx, level_sigmas[idx]


def block_min_update_reference(x, sigma, best_x, best_sigma):
    lower = sigma < best_sigma
    torch.where(rows(lower, x), x, best_x, out=best_x)  # in place: elementwise, each element reads itself only
    torch.where(lower, sigma, best_sigma, out=best_sigma)
    return best_x, best_sigma


# ---------------- entry points ----------------
def gibbs_select(logits, level_sigmas, log_prior=None, sample=False, seed=0, chain_ids=None, step=0,
                 stream=rng.STREAM_GIBBS, backend=None):
    _check_select(logits, level_sigmas, log_prior)
    impl = gibbs_select_triton if choose_backend(logits, backend) == "triton" else gibbs_select_reference
    return impl(logits, level_sigmas, log_prior, sample, seed, chain_ids, step, stream)


def _check_block_min(x, sigma, best_x, best_sigma):
    same_shape("best_x", best_x, x)
    if sigma.shape != (x.shape[0],) or best_sigma.shape != sigma.shape:
        raise ValueError(f"sigma and best_sigma must have shape [{x.shape[0]}], got {tuple(sigma.shape)}, "
                         f"{tuple(best_sigma.shape)}")
    if not (best_x.is_contiguous() and best_sigma.is_contiguous()):
        raise ValueError("best_x and best_sigma must be contiguous (they are updated in place)")


def block_min_update(x, sigma, best_x, best_sigma, backend=None):
    _check_block_min(x, sigma, best_x, best_sigma)
    impl = block_min_update_triton if choose_backend(x, backend) == "triton" else block_min_update_reference
    return impl(x, sigma, best_x, best_sigma)


def _select_block_min_reference(logits, level_sigmas, log_prior, sample, seed, chain_ids, step, stream, x, best_x,
                                best_sigma):
    idx, sigma = gibbs_select_reference(logits, level_sigmas, log_prior, sample, seed, chain_ids, step, stream)
    block_min_update_reference(x, sigma, best_x, best_sigma)
    return idx, sigma


def step_impls(x, backend=None):
    """`(gibbs_select, gibbs_select_block_min)` as they dispatch for `x`'s device, for a loop that chooses them once
    per run (no per-call dispatch or shape check); the second takes gibbs_select's arguments then (x, best_x,
    best_sigma), and is one launch on Triton."""
    if choose_backend(x, backend) == "triton":
        return gibbs_select_triton, gibbs_select_triton
    return gibbs_select_reference, _select_block_min_reference


def gibbs_select_block_min(logits, level_sigmas, x, best_x, best_sigma, log_prior=None, sample=False, seed=0,
                           chain_ids=None, step=0, stream=rng.STREAM_GIBBS, backend=None):
    """gibbs_select, then block_min_update(x, sigma, best_x, best_sigma) with the drawn sigma: one launch."""
    _check_select(logits, level_sigmas, log_prior)
    if x.shape[0] != logits.shape[0]:
        raise ValueError(f"x must have one row per row of logits ({logits.shape[0]}), got shape {tuple(x.shape)}")
    _check_block_min(x, best_sigma, best_x, best_sigma)
    if choose_backend(logits, backend) == "triton":
        return gibbs_select_triton(logits, level_sigmas, log_prior, sample, seed, chain_ids, step, stream,
                                   x, best_x, best_sigma)
    return _select_block_min_reference(logits, level_sigmas, log_prior, sample, seed, chain_ids, step, stream, x, best_x,
                                       best_sigma)
