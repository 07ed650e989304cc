"""Fused underdamped-Langevin updates: BAOAB-limit (previous-noise state) and OBABO (momentum state),
score from the denoiser output s = (D - x)/sigma^2, per-sample sigma/h/friction, per-chain Philox noise: Triton kernels, launchers, plain-torch references and dispatching entry points.

baoab_limit_step  xi' ~ N(0, I);  x' = x + h s(x) + sqrt(h/2) (xi_prev + xi')    (BAOAB-limit, one level)
obabo_oba         c = exp(-friction h/2);  O: v = c v + sqrt(1-c^2) z1 (STREAM_MOMENTUM);
                  B: v += (h/2) s(x);  A: x += h v
obabo_bo          B: v += (h/2) s(x) (s at the new x);  O: v = c v + sqrt(1-c^2) z2 (STREAM_MOMENTUM + 8)
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from dmcmc_fast import rng

from ._args import compute_dtype, chain_vec, noise, per_sample, rows, same_shape, step_vec
from ._dispatch import choose_backend
from ._launch import as_rows, grid_for, row_tile, seed_words
from ._philox import chain_randn

STREAM_O2 = rng.STREAM_MOMENTUM + 8  # the second O half-step's noise (API.md)


# ---------------- Triton kernels (grid: (row, block of the row)) ----------------
@triton.jit
def _baoab_limit_kernel(x_ptr, d_ptr, xi_ptr, x_out_ptr, xi_out_ptr, sigma_ptr, h_ptr, chain_ptr, step_ptr, n,
                        seed_lo, seed_hi, stream, BLOCK: tl.constexpr):
    row, cols, mask, offs = row_tile(n, BLOCK)
    sigma = tl.load(sigma_ptr + row)
    h = tl.load(h_ptr + row)
    xi = chain_randn(seed_lo, seed_hi, tl.program_id(1) * BLOCK, tl.load(chain_ptr + row), tl.load(step_ptr + row),
                     stream, BLOCK)
    x = tl.load(x_ptr + offs, mask=mask).to(sigma.dtype)
    d = tl.load(d_ptr + offs, mask=mask).to(sigma.dtype)
    xi_prev = tl.load(xi_ptr + offs, mask=mask).to(sigma.dtype)
    out = x + (h / (sigma * sigma)) * (d - x) + tl.sqrt(0.5 * h) * (xi_prev + xi)
    tl.store(x_out_ptr + offs, out.to(x_out_ptr.dtype.element_ty), mask=mask)
    tl.store(xi_out_ptr + offs, xi.to(xi_out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _obabo_kernel(x_ptr, v_ptr, d_ptr, x_out_ptr, v_out_ptr, sigma_ptr, h_ptr, friction_ptr, chain_ptr, step_ptr, n,
                  seed_lo, seed_hi, stream, FIRST_HALF: tl.constexpr, BLOCK: tl.constexpr):
    """FIRST_HALF: O, B, A (writes x', v'); else B, O (writes v')."""
    row, cols, mask, offs = row_tile(n, BLOCK)
    sigma = tl.load(sigma_ptr + row)
    h = tl.load(h_ptr + row)
    c = tl.exp(-0.5 * tl.load(friction_ptr + row) * h)
    q = tl.sqrt(1.0 - c * c)
    kick = 0.5 * h / (sigma * sigma)
    z = chain_randn(seed_lo, seed_hi, tl.program_id(1) * BLOCK, tl.load(chain_ptr + row), tl.load(step_ptr + row),
                    stream, BLOCK)
    x = tl.load(x_ptr + offs, mask=mask).to(sigma.dtype)
    v = tl.load(v_ptr + offs, mask=mask).to(sigma.dtype)
    d = tl.load(d_ptr + offs, mask=mask).to(sigma.dtype)
    if FIRST_HALF:
        v = c * v + q * z
        v = v + kick * (d - x)
        tl.store(x_out_ptr + offs, (x + h * v).to(x_out_ptr.dtype.element_ty), mask=mask)
    else:
        v = v + kick * (d - x)
        v = c * v + q * z
    tl.store(v_out_ptr + offs, v.to(v_out_ptr.dtype.element_ty), mask=mask)


# ---------------- launchers ----------------
def baoab_limit_step_triton(x, denoised, sigma, h, xi_prev, seed, chain_ids, step, stream=rng.STREAM_LANGEVIN):
    xr, xir = as_rows(x), as_rows(xi_prev)
    x_out, xi_out = torch.empty_like(xr), torch.empty_like(xir)
    (grid, block), (lo, hi) = grid_for(*xr.shape), seed_words(seed)
    _baoab_limit_kernel[grid](xr, as_rows(denoised), xir, x_out, xi_out, per_sample(sigma, x, "sigma"),
                              per_sample(h, x, "h"), chain_vec(chain_ids, x), step_vec(step, x), xr.shape[1],
                              lo, hi, stream, BLOCK=block)
    return x_out.view(x.shape), xi_out.view(x.shape)


def _obabo_triton(x, v, denoised, sigma, h, friction, seed, chain_ids, step, first_half):
    xr, vr = as_rows(x), as_rows(v)
    x_out, v_out = (torch.empty_like(xr) if first_half else xr), torch.empty_like(vr)
    (grid, block), (lo, hi) = grid_for(*xr.shape), seed_words(seed)
    _obabo_kernel[grid](xr, vr, as_rows(denoised), x_out, v_out, per_sample(sigma, x, "sigma"), per_sample(h, x, "h"),
                        per_sample(friction, x, "friction"), chain_vec(chain_ids, x), step_vec(step, x), xr.shape[1],
                        lo, hi, rng.STREAM_MOMENTUM if first_half else STREAM_O2, FIRST_HALF=first_half,
                        BLOCK=block)
    return x_out.view(x.shape), v_out.view(v.shape)


def obabo_oba_triton(x, v, denoised, sigma, h, friction, seed, chain_ids, step):
    return _obabo_triton(x, v, denoised, sigma, h, friction, seed, chain_ids, step, True)


def obabo_bo_triton(v, x, denoised, sigma, h, friction, seed, chain_ids, step):
    return _obabo_triton(x, v, denoised, sigma, h, friction, seed, chain_ids, step, False)[1]


# ---------------- plain-torch references ----------------
def baoab_limit_step_reference(x, denoised, sigma, h, xi_prev, seed, chain_ids, step, stream=rng.STREAM_LANGEVIN):
    cd = compute_dtype(x)
    s, hh = rows(per_sample(sigma, x, "sigma"), x), rows(per_sample(h, x, "h"), x)
    xf = x.to(cd)
    xi = noise(x, seed, chain_ids, step, stream)
    out = xf + hh * (denoised.to(cd) - xf) / (s * s) + torch.sqrt(0.5 * hh) * (xi_prev.to(cd) + xi)
    return out.to(x.dtype), xi.to(xi_prev.dtype)


def _friction(h, friction, x):
    """c = exp(-friction h / 2) and sqrt(1 - c^2) as [B, 1, ...] in the compute dtype."""
    c = torch.exp(-0.5 * per_sample(friction, x, "friction") * per_sample(h, x, "h"))
    return rows(c, x), rows(torch.sqrt(1.0 - c * c), x)


def obabo_oba_reference(x, v, denoised, sigma, h, friction, seed, chain_ids, step):
    cd = compute_dtype(x)
    s, hh = rows(per_sample(sigma, x, "sigma"), x), rows(per_sample(h, x, "h"), x)
    c, q = _friction(h, friction, x)
    xf, vf = x.to(cd), v.to(cd)
    vf = c * vf + q * noise(x, seed, chain_ids, step, rng.STREAM_MOMENTUM)
    vf = vf + 0.5 * hh * (denoised.to(cd) - xf) / (s * s)
    xf = xf + hh * vf
    return xf.to(x.dtype), vf.to(v.dtype)


def obabo_bo_reference(v, x, denoised, sigma, h, friction, seed, chain_ids, step):
    cd = compute_dtype(x)
    s, hh = rows(per_sample(sigma, x, "sigma"), x), rows(per_sample(h, x, "h"), x)
    c, q = _friction(h, friction, x)
    xf = x.to(cd)
    vf = v.to(cd) + 0.5 * hh * (denoised.to(cd) - xf) / (s * s)
    vf = c * vf + q * noise(x, seed, chain_ids, step, STREAM_O2)
    return vf.to(v.dtype)


# ---------------- entry points ----------------
def baoab_limit_step(x, denoised, sigma, h, xi_prev, seed, chain_ids, step, stream=rng.STREAM_LANGEVIN, backend=None):
    same_shape("denoised", denoised, x), same_shape("xi_prev", xi_prev, x)
    impl = baoab_limit_step_triton if choose_backend(x, backend) == "triton" else baoab_limit_step_reference
    return impl(x, denoised, sigma, h, xi_prev, seed, chain_ids, step, stream)


def obabo_oba(x, v, denoised, sigma, h, friction, seed, chain_ids, step, backend=None):
    same_shape("v", v, x), same_shape("denoised", denoised, x)
    impl = obabo_oba_triton if choose_backend(x, backend) == "triton" else obabo_oba_reference
    return impl(x, v, denoised, sigma, h, friction, seed, chain_ids, step)


def obabo_bo(v, x, denoised, sigma, h, friction, seed, chain_ids, step, backend=None):
    same_shape("v", v, x), same_shape("denoised", denoised, x)
    impl = obabo_bo_triton if choose_backend(x, backend) == "triton" else obabo_bo_reference
    return impl(v, x, denoised, sigma, h, friction, seed, chain_ids, step)
