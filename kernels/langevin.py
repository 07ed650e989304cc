"""Fused Langevin-family updates (score from the denoiser output, per-sample sigma/step size,
per-chain Philox noise): Triton kernels, their launchers, the plain-torch references, and the entry
points that dispatch by device (`kernels._dispatch`).

langevin_step   x' = x + (eta/2) (D - x)/sigma^2 + sqrt(eta) z                         (ULA / DLG)
mild_step       y = x + gamma v;  v' = gamma v + alpha (D(y) - y)/sigma^2;
                x' = x + v' + sqrt(2 alpha) z                           (MILD, Alg. 1; D evaluated at y)
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from dmcmc_fast import rng

from ._args import compute_dtype, chain_vec, in_dtype, noise, per_sample, rows, same_shape, step_vec
from ._dispatch import choose_backend
from ._launch import as_rows, grid_for, row_tile, seed_words
from ._philox import chain_randn


# ---------------- Triton kernels (grid: (row, block of the row)) ----------------
@triton.jit
def _langevin_kernel(x_ptr, d_ptr, out_ptr, sigma_ptr, eta_ptr, chain_ptr, step_ptr, n, seed_lo, seed_hi,
                     stream, BLOCK: tl.constexpr):
    row, cols, mask, offs = row_tile(n, BLOCK)
    sigma = tl.load(sigma_ptr + row)
    eta = tl.load(eta_ptr + row)
    drift = 0.5 * eta / (sigma * sigma)
    z = chain_randn(seed_lo, seed_hi, tl.program_id(1) * BLOCK, tl.load(chain_ptr + row), tl.load(step_ptr + row),
                    stream, BLOCK)
    x = tl.load(x_ptr + offs, mask=mask).to(sigma.dtype)
    d = tl.load(d_ptr + offs, mask=mask).to(sigma.dtype)
    out = x + drift * (d - x) + tl.sqrt(eta) * z
    tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _mild_kernel(x_ptr, v_ptr, d_ptr, x_out_ptr, v_out_ptr, sigma_ptr, alpha_ptr, gamma_ptr, chain_ptr, step_ptr,
                 n, seed_lo, seed_hi, stream, BLOCK: tl.constexpr):
    row, cols, mask, offs = row_tile(n, BLOCK)
    sigma = tl.load(sigma_ptr + row)
    alpha = tl.load(alpha_ptr + row)
    gamma = tl.load(gamma_ptr + row)
    z = chain_randn(seed_lo, seed_hi, tl.program_id(1) * BLOCK, tl.load(chain_ptr + row), tl.load(step_ptr + row),
                    stream, BLOCK)
    x = tl.load(x_ptr + offs, mask=mask).to(sigma.dtype)
    v = tl.load(v_ptr + offs, mask=mask).to(sigma.dtype)
    d = tl.load(d_ptr + offs, mask=mask).to(sigma.dtype)
    y = x + gamma * v
    v_new = gamma * v + (alpha / (sigma * sigma)) * (d - y)
    x_new = x + v_new + tl.sqrt(2.0 * alpha) * z
    tl.store(x_out_ptr + offs, x_new.to(x_out_ptr.dtype.element_ty), mask=mask)
    tl.store(v_out_ptr + offs, v_new.to(v_out_ptr.dtype.element_ty), mask=mask)


# ---------------- launchers ----------------
def langevin_step_triton(x, denoised, sigma, eta, seed, chain_ids, step, stream=rng.STREAM_LANGEVIN):
    xr = as_rows(x)
    out = torch.empty_like(xr)
    (grid, block), (lo, hi) = grid_for(*xr.shape), seed_words(seed)
    _langevin_kernel[grid](xr, as_rows(denoised), out, per_sample(sigma, x, "sigma"), per_sample(eta, x, "eta"),
                           chain_vec(chain_ids, x), step_vec(step, x), xr.shape[1], lo, hi, stream, BLOCK=block)
    return out.view(x.shape)


def mild_step_triton(x, v, denoised_y, sigma, alpha, gamma, seed, chain_ids, step, stream=rng.STREAM_LANGEVIN):
    xr, vr = as_rows(x), as_rows(v)
    x_out, v_out = torch.empty_like(xr), torch.empty_like(vr)
    (grid, block), (lo, hi) = grid_for(*xr.shape), seed_words(seed)
    _mild_kernel[grid](xr, vr, as_rows(denoised_y), x_out, v_out, per_sample(sigma, x, "sigma"),
                       per_sample(alpha, x, "alpha"), per_sample(gamma, x, "gamma"), chain_vec(chain_ids, x),
                       step_vec(step, x), xr.shape[1], lo, hi, stream, BLOCK=block)
    return x_out.view(x.shape), v_out.view(v.shape)


# ---------------- plain-torch references ----------------
@functools.lru_cache(maxsize=256)
def _step_scalars(eta: float, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(eta / 2, sqrt(eta)) as 0-d tensors of `dtype`, filled on the device (no host copy, no read back) and
    kept: the same bits as from a [B] vector of eta, and no op at all for a step size seen before."""
    e = torch.full((), eta, dtype=dtype, device=device)
    return 0.5 * e, torch.sqrt(e)


def langevin_step_reference(x, denoised, sigma, eta, seed, chain_ids, step, stream=rng.STREAM_LANGEVIN, z=None):
    cd = compute_dtype(x)
    s = rows(per_sample(sigma, x, "sigma"), x)
    if isinstance(eta, (int, float)) and not isinstance(eta, bool) and eta >= 0:  # one step size for all rows
        half_e, root_e = _step_scalars(float(eta), cd, x.device)
    else:
        e = rows(per_sample(eta, x, "eta"), x)
        half_e, root_e = 0.5 * e, torch.sqrt(e)
    xf = in_dtype(x, cd)
    if z is None:
        z = noise(x, seed, chain_ids, step, stream)
    out = xf + half_e * (in_dtype(denoised, cd) - xf) / (s * s) + root_e * in_dtype(z, cd)
    return in_dtype(out, x.dtype)


def mild_step_reference(x, v, denoised_y, sigma, alpha, gamma, seed, chain_ids, step, stream=rng.STREAM_LANGEVIN):
    cd = compute_dtype(x)
    s, a = rows(per_sample(sigma, x, "sigma"), x), rows(per_sample(alpha, x, "alpha"), x)
    g = rows(per_sample(gamma, x, "gamma"), x)
    xf, vf = x.to(cd), v.to(cd)
    y = xf + g * vf
    v_new = g * vf + a * (denoised_y.to(cd) - y) / (s * s)
    x_new = xf + v_new + torch.sqrt(2.0 * a) * noise(x, seed, chain_ids, step, stream)
    return x_new.to(x.dtype), v_new.to(v.dtype)


# ---------------- entry points ----------------
def langevin_impl(x, backend=None):
    """`step(x, denoised, sigma, eta, seed, chain_ids, step, stream, z=None)`: what `langevin_step` dispatches to
    for `x`, for a loop that chooses it once per run (no per-call dispatch or shape check; the kernel draws its
    own noise and ignores `z`)."""
    if choose_backend(x, backend) == "triton":
        return lambda x, den, sigma, eta, seed, ids, step, stream, z=None: langevin_step_triton(
            x, den, sigma, eta, seed, ids, step, stream)
    return langevin_step_reference


def langevin_step(x, denoised, sigma, eta, seed, chain_ids, step, stream=rng.STREAM_LANGEVIN, backend=None, z=None):
    """`z`: the chain's normals of this step drawn ahead by the caller (`noise.chain_randn` with the same seed,
    ids, step and stream: the very numbers the step would draw), used by the torch reference; the kernel
    draws them itself."""
    same_shape("denoised", denoised, x)
    if choose_backend(x, backend) == "triton":
        return langevin_step_triton(x, denoised, sigma, eta, seed, chain_ids, step, stream)
    return langevin_step_reference(x, denoised, sigma, eta, seed, chain_ids, step, stream, z=z)


def mild_step(x, v, denoised_y, sigma, alpha, gamma, seed, chain_ids, step, stream=rng.STREAM_LANGEVIN, backend=None):
    same_shape("v", v, x), same_shape("denoised_y", denoised_y, x)
    impl = mild_step_triton if choose_backend(x, backend) == "triton" else mild_step_reference
    return impl(x, v, denoised_y, sigma, alpha, gamma, seed, chain_ids, step, stream)
