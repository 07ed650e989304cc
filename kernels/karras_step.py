"""Fused Karras (EDM) step pieces on per-sample sigma pairs: Euler predictor, Heun corrector and the
stochastic churn of EDM Alg. 2 ("KAR2"), with per-chain Philox noise.
Triton kernels, launchers, plain-torch references and dispatching entry points, as in `langevin.py`.

euler_step    d = (x - D)/sigma;  x' = x + (sigma_next - sigma) d                    (Alg. 1 l. 4-5)
heun_correct  x' = x + (sigma_next - sigma) (d + (x_euler - D_next)/sigma_next) / 2   (Alg. 1 l. 7-8)
churn         sigma_hat = sigma (1 + gamma);
              x_hat = x + s_noise sqrt(sigma_hat^2 - sigma^2) z                      (Alg. 2 l. 5-6)
              with sqrt(sigma_hat^2 - sigma^2) evaluated as sigma sqrt(gamma (2 + gamma)) (no cancellation)
"""
from __future__ import annotations

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
def _euler_kernel(x_ptr, d_ptr, x_out_ptr, dir_out_ptr, sigma_ptr, sigma_next_ptr, n, BLOCK: tl.constexpr):
    row, cols, mask, offs = row_tile(n, BLOCK)
    sigma = tl.load(sigma_ptr + row)
    dt = tl.load(sigma_next_ptr + row) - sigma
    x = tl.load(x_ptr + offs, mask=mask).to(sigma.dtype)
    den = tl.load(d_ptr + offs, mask=mask).to(sigma.dtype)
    d = (x - den) / sigma
    tl.store(x_out_ptr + offs, (x + dt * d).to(x_out_ptr.dtype.element_ty), mask=mask)
    tl.store(dir_out_ptr + offs, d.to(dir_out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _heun_kernel(x_ptr, dir_ptr, xe_ptr, dn_ptr, out_ptr, sigma_ptr, sigma_next_ptr, n, BLOCK: tl.constexpr):
    row, cols, mask, offs = row_tile(n, BLOCK)
    sigma_next = tl.load(sigma_next_ptr + row)
    half_dt = 0.5 * (sigma_next - tl.load(sigma_ptr + row))
    x = tl.load(x_ptr + offs, mask=mask).to(sigma_next.dtype)
    d = tl.load(dir_ptr + offs, mask=mask).to(sigma_next.dtype)
    x_euler = tl.load(xe_ptr + offs, mask=mask).to(sigma_next.dtype)
    den_next = tl.load(dn_ptr + offs, mask=mask).to(sigma_next.dtype)
    d_next = (x_euler - den_next) / sigma_next
    tl.store(out_ptr + offs, (x + half_dt * (d + d_next)).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _churn_kernel(x_ptr, out_ptr, sigma_ptr, gamma_ptr, s_noise_ptr, chain_ptr, step_ptr, n, seed_lo, seed_hi, stream,
                  BLOCK: tl.constexpr):
    row, cols, mask, offs = row_tile(n, BLOCK)
    g = tl.load(gamma_ptr + row)
    scale = tl.load(s_noise_ptr + row) * tl.load(sigma_ptr + row) * tl.sqrt(g * (2.0 + g))
    z = chain_randn(seed_lo, seed_hi, tl.program_id(1) * BLOCK, tl.load(chain_ptr + row), tl.load(step_ptr + row),
                    stream, BLOCK)
    x = tl.load(x_ptr + offs, mask=mask).to(g.dtype)
    tl.store(out_ptr + offs, (x + scale * z).to(out_ptr.dtype.element_ty), mask=mask)


# ---------------- launchers ----------------
def euler_step_triton(x, denoised, sigma, sigma_next):
    xr = as_rows(x)
    x_out, d_out = torch.empty_like(xr), torch.empty_like(xr)
    grid, block = grid_for(*xr.shape)
    _euler_kernel[grid](xr, as_rows(denoised), x_out, d_out, per_sample(sigma, x, "sigma"),
                        per_sample(sigma_next, x, "sigma_next"), xr.shape[1], BLOCK=block)
    return x_out.view(x.shape), d_out.view(x.shape)


def heun_correct_triton(x, d, x_euler, denoised_next, sigma, sigma_next):
    xr = as_rows(x)
    out = torch.empty_like(xr)
    grid, block = grid_for(*xr.shape)
    _heun_kernel[grid](xr, as_rows(d), as_rows(x_euler), as_rows(denoised_next), out, per_sample(sigma, x, "sigma"),
                       per_sample(sigma_next, x, "sigma_next"), xr.shape[1], BLOCK=block)
    return out.view(x.shape)


def churn_triton(x, sigma, gamma, s_noise, seed, chain_ids, step, stream=rng.STREAM_CHURN):
    xr = as_rows(x)
    out = torch.empty_like(xr)
    (grid, block), (lo, hi) = grid_for(*xr.shape), seed_words(seed)
    _churn_kernel[grid](xr, out, per_sample(sigma, x, "sigma"), per_sample(gamma, x, "gamma"),
                        per_sample(s_noise, x, "s_noise"), chain_vec(chain_ids, x), step_vec(step, x), xr.shape[1],
                        lo, hi, stream, BLOCK=block)
    return out.view(x.shape), _sigma_hat(sigma, gamma, x)


# ---------------- plain-torch references ----------------
def euler_step_reference(x, denoised, sigma, sigma_next):
    s, sn = rows(per_sample(sigma, x, "sigma"), x), rows(per_sample(sigma_next, x, "sigma_next"), x)
    return _euler_rows(x, denoised, s, sn - s)


def heun_correct_reference(x, d, x_euler, denoised_next, sigma, sigma_next):
    s, sn = rows(per_sample(sigma, x, "sigma"), x), rows(per_sample(sigma_next, x, "sigma_next"), x)
    return _heun_rows(x, d, x_euler, denoised_next, sn, (sn - s) * 0.5)


def _euler_rows(x, denoised, s, dt):
    """The Euler predictor on sigma and dt = sigma_next - sigma as [B, 1, ..] rows of the compute dtype."""
    cd = s.dtype
    xf = in_dtype(x, cd)
    d = (xf - in_dtype(denoised, cd)) / s
    return in_dtype(xf + dt * d, x.dtype), in_dtype(d, x.dtype)


def _heun_rows(x, d, x_euler, denoised_next, sn, half_dt):
    """The Heun corrector on sigma_next and half_dt = (sigma_next - sigma) / 2 as [B, 1, ..] rows."""
    cd = sn.dtype
    d_next = (in_dtype(x_euler, cd) - in_dtype(denoised_next, cd)) / sn
    return in_dtype(in_dtype(x, cd) + half_dt * (in_dtype(d, cd) + d_next), x.dtype)


def _sigma_hat(sigma, gamma, x):
    """sigma_hat [B] in sigma's dtype (float32 for a float sigma), gamma as [B] of that dtype."""
    s = sigma if torch.is_tensor(sigma) and sigma.ndim == 1 else per_sample(sigma, x, "sigma")
    if s.shape != (x.shape[0],):
        raise ValueError(f"sigma must be a float or a tensor of shape [{x.shape[0]}], got {tuple(s.shape)}")
    g = per_sample(gamma, x, "gamma").to(s.dtype)
    return s * (1.0 + g)


def churn_reference(x, sigma, gamma, s_noise, seed, chain_ids, step, stream=rng.STREAM_CHURN):
    cd = compute_dtype(x)
    s, g = per_sample(sigma, x, "sigma"), per_sample(gamma, x, "gamma")
    scale = rows(per_sample(s_noise, x, "s_noise") * s * torch.sqrt(g * (2.0 + g)), x)
    x_hat = x.to(cd) + scale * noise(x, seed, chain_ids, step, stream)
    return x_hat.to(x.dtype), _sigma_hat(sigma, gamma, x)


# ---------------- entry points ----------------
def euler_step(x, denoised, sigma, sigma_next, backend=None):
    same_shape("denoised", denoised, x)
    impl = euler_step_triton if choose_backend(x, backend) == "triton" else euler_step_reference
    return impl(x, denoised, sigma, sigma_next)


def heun_correct(x, d, x_euler, denoised_next, sigma, sigma_next, backend=None):
    same_shape("d", d, x), same_shape("x_euler", x_euler, x), same_shape("denoised_next", denoised_next, x)
    impl = heun_correct_triton if choose_backend(x, backend) == "triton" else heun_correct_reference
    return impl(x, d, x_euler, denoised_next, sigma, sigma_next)


def churn(x, sigma, gamma, s_noise, seed, chain_ids, step, stream=rng.STREAM_CHURN, backend=None):
    impl = churn_triton if choose_backend(x, backend) == "triton" else churn_reference
    return impl(x, sigma, gamma, s_noise, seed, chain_ids, step, stream)

