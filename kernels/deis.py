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

from ._args import compute_dtype, in_dtype, per_sample, rows, same_shape
from ._dispatch import choose_backend
from ._launch import as_rows, grid_for, row_tile


def _prepare(x, eps_hist, coeffs, stack: bool = True):
    """(eps_hist, coeffs [B, J] in the compute dtype), checked; eps_hist as one [J, *x.shape] tensor (the
    kernel's input) or, with `stack=False` and a list given, as that list (the reference: no copy)."""
    if stack and not torch.is_tensor(eps_hist):
        eps_hist = torch.stack(list(eps_hist))
    shapes = [tuple(e.shape) for e in eps_hist] if not torch.is_tensor(eps_hist) else [tuple(eps_hist.shape[1:])]
    if any(sh != tuple(x.shape) for sh in shapes) or (torch.is_tensor(eps_hist) and eps_hist.ndim != x.ndim + 1):
        got = tuple(eps_hist.shape) if torch.is_tensor(eps_hist) else f"a list of {shapes}"
        raise ValueError(f"eps_hist must have shape [J, *x.shape] = [J, {', '.join(map(str, x.shape))}], got {got}")
    j, b = len(eps_hist), x.shape[0]
    c = torch.as_tensor(coeffs, dtype=compute_dtype(x), device=x.device)
    if c.shape == (j,):
        c = c.expand(b, j)
    if c.shape != (b, j):
        raise ValueError(f"coeffs must have shape [{b}, {j}] (or [{j}]), got {tuple(c.shape)}")
    return eps_hist, (c.contiguous() if stack else c)


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
    out = in_dtype(x, cd)
    if _is_one(psi) and isinstance(coeffs, (list, tuple)) and len(coeffs) == len(eps_hist) \
            and all(isinstance(c, float) for c in coeffs):  # one grid for all samples: scalar coefficients
        for c, eps in zip(coeffs, eps_hist):
            same_shape("eps_hist[j]", eps, x)
            out = torch.add(out, in_dtype(eps, cd), alpha=c)  # out + c eps in one op
        return in_dtype(out, x.dtype)
    eps_hist, c = _prepare(x, eps_hist, coeffs, stack=False)
    if not _is_one(psi):  # VE: Psi = 1, nothing to scale
        out = rows(per_sample(psi, x, "psi"), x) * out
    for j, eps in enumerate(eps_hist):
        out = out + rows(c[:, j], x) * in_dtype(eps, cd)
    return in_dtype(out, x.dtype)


def _is_one(psi) -> bool:
    return isinstance(psi, (int, float)) and psi == 1


# ---------------- entry point ----------------
def deis_combine(x, eps_hist, psi, coeffs, backend=None):
    return combine_impl(x, backend)(x, eps_hist, psi, coeffs)


def combine_impl(x, backend=None):
    """The implementation `deis_combine` dispatches to for `x`, for a loop that chooses it once per run."""
    return deis_combine_triton if choose_backend(x, backend) == "triton" else deis_combine_reference
