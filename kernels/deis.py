"""DEIS multistep combination (Zhang & Chen, exponential integrator with polynomial extrapolation):

    x_{i+1} = psi_i x_i + sum_j C_ij eps_{i-j}

eps_hist [J, B, ...] holds the J most recent eps values (j = 0 newest), psi [B] (or a float),
coeffs [B, J] (or [J], shared by all samples); coefficients are computed by the sampler.
"""
from __future__ import annotations

import torch

from ._args import per_sample, rows
from ._dispatch import choose_backend


def _prepare(x, eps_hist, coeffs):
    if not torch.is_tensor(eps_hist):
        eps_hist = torch.stack(list(eps_hist))
    if eps_hist.ndim != x.ndim + 1 or eps_hist.shape[1:] != x.shape:
        raise ValueError(f"eps_hist must have shape [J, *x.shape] = [J, {', '.join(map(str, x.shape))}], "
                         f"got {tuple(eps_hist.shape)}")
    j, b = eps_hist.shape[0], x.shape[0]
    c = torch.as_tensor(coeffs, dtype=torch.float32, device=x.device)
    if c.shape == (j,):
        c = c.expand(b, j)
    if c.shape != (b, j):
        raise ValueError(f"coeffs must have shape [{b}, {j}] (or [{j}]), got {tuple(c.shape)}")
    return eps_hist, c.contiguous()


# ---------------- plain-torch reference ----------------
def deis_combine_reference(x, eps_hist, psi, coeffs):
    eps_hist, c = _prepare(x, eps_hist, coeffs)
    out = rows(per_sample(psi, x, "psi"), x) * x.float()
    for j in range(eps_hist.shape[0]):
        out = out + rows(c[:, j], x) * eps_hist[j].float()
    return out.to(x.dtype)


# ---------------- entry point ----------------
def deis_combine(x, eps_hist, psi, coeffs, backend=None):
    return deis_combine_reference(x, eps_hist, psi, coeffs)
