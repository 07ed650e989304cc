"""DEIS multistep combination (Zhang & Chen, exponential integrator with polynomial extrapolation):

    x_{i+1} = psi_i x_i + sum_j C_ij eps_{i-j}

eps_hist [J, B, ...] holds the J most recent eps values (j = 0 newest), psi [B] (or a float),
coeffs [B, J] (or [J], shared by all samples); coefficients are computed by the sampler.
Triton kernel, launcher, plain-torch reference and dispatching entry point, as in `langevin.py`.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._args import compute_dtype, per_sample, rows
from ._dispatch import choose_backend
from ._launch import as_rows, grid_for, row_tile


def _prepare(x, eps_hist, coeffs):
    if not torch.is_tensor(eps_hist):
        eps_hist = torch.stack(list(eps_hist))
    if eps_hist.ndim != x.ndim + 1 or eps_hist.shape[1:] != x.shape:
        raise ValueError(f"eps_hist must have shape [J, *x.shape] = [J, {', '.join(map(str, x.shape))}], "
                         f"got {tuple(eps_hist.shape)}")
    j, b = eps_hist.shape[0], x.shape[0]
    c = torch.as_tensor(coeffs, dtype=compute_dtype(x), device=x.device)
    if c.shape == (j,):
        c = c.expand(b, j)
    if c.shape != (b, j):
        raise ValueError(f"coeffs must have shape [{b}, {j}] (or [{j}]), got {tuple(c.shape)}")
    return eps_hist, c.contiguous()


# ---------------- Triton kernel (grid: (row, block of the row)) ----------------
@triton.jit
def _deis_kernel(x_ptr, eps_ptr, out_ptr, psi_ptr, coeff_ptr, n, hist_stride, J: tl.constexpr, BLOCK: tl.constexpr):
    row, cols, mask, offs = row_tile(n, BLOCK)
    psi = tl.load(psi_ptr + row)
    acc = psi * tl.load(x_ptr + offs, mask=mask).to(psi.dtype)
    eps = eps_ptr + offs
    for j in tl.static_range(J):
        acc += tl.load(coeff_ptr + row * J + j) * tl.load(eps, mask=mask).to(psi.dtype)
        eps += hist_stride  # 64-bit pointer steps: no int32 overflow of j * B * N
    tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)


# ---------------- launcher ----------------
def deis_combine_triton(x, eps_hist, psi, coeffs):
    eps_hist, c = _prepare(x, eps_hist, coeffs)
    xr = as_rows(x)
    hist = eps_hist.reshape(eps_hist.shape[0], -1).contiguous()
    out = torch.empty_like(xr)
    grid, block = grid_for(*xr.shape)
    _deis_kernel[grid](xr, hist, out, per_sample(psi, x, "psi"), c, xr.shape[1], hist.shape[1], J=hist.shape[0],
                       BLOCK=block)
    return out.view(x.shape)


# ---------------- plain-torch reference ----------------
def deis_combine_reference(x, eps_hist, psi, coeffs):
    cd = compute_dtype(x)
    eps_hist, c = _prepare(x, eps_hist, coeffs)
    out = rows(per_sample(psi, x, "psi"), x) * x.to(cd)
    for j in range(eps_hist.shape[0]):
        out = out + rows(c[:, j], x) * eps_hist[j].to(cd)
    return out.to(x.dtype)


# ---------------- entry point ----------------
def deis_combine(x, eps_hist, psi, coeffs, backend=None):
    impl = deis_combine_triton if choose_backend(x, backend) == "triton" else deis_combine_reference
    return impl(x, eps_hist, psi, coeffs)
