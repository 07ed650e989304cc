"""Fused underdamped-Langevin updates: BAOAB-limit (previous-noise state) and OBABO (momentum state),
score from the denoiser output s = (D - x)/sigma^2, per-sample sigma/h/gamma, per-chain Philox noise.

baoab_limit_step  xi' ~ N(0, I);  x' = x + h s(x) + sqrt(h/2) (xi_prev + xi')    (BAOAB-limit, one level)
obabo_oba         c = exp(-gamma h/2);  O: v = c v + sqrt(1-c^2) z1 (STREAM_MOMENTUM);
                  B: v += (h/2) s(x);  A: x += h v
obabo_bo          B: v += (h/2) s(x) (s at the new x);  O: v = c v + sqrt(1-c^2) z2 (STREAM_MOMENTUM + 8)
"""
from __future__ import annotations

import torch

from dmcmc_fast import rng

from ._args import noise, per_sample, rows, same_shape
from ._dispatch import choose_backend

STREAM_O2 = rng.STREAM_MOMENTUM + 8  # the second O half-step's noise (API.md)


# ---------------- plain-torch references ----------------
def baoab_limit_step_reference(x, denoised, sigma, h, xi_prev, seed, chain_ids, step, stream=rng.STREAM_LANGEVIN):
    s, hh = rows(per_sample(sigma, x, "sigma"), x), rows(per_sample(h, x, "h"), x)
    xf = x.float()
    xi = noise(x, seed, chain_ids, step, stream)
    out = xf + hh * (denoised.float() - xf) / (s * s) + torch.sqrt(0.5 * hh) * (xi_prev.float() + xi)
    return out.to(x.dtype), xi.to(xi_prev.dtype)


def _friction(h, gamma, x):
    """c = exp(-gamma h / 2) and sqrt(1 - c^2) as [B, 1, ...] float32."""
    c = torch.exp(-0.5 * per_sample(gamma, x, "gamma") * per_sample(h, x, "h"))
    return rows(c, x), rows(torch.sqrt(1.0 - c * c), x)


def obabo_oba_reference(x, v, denoised, sigma, h, gamma, seed, chain_ids, step):
    s, hh = rows(per_sample(sigma, x, "sigma"), x), rows(per_sample(h, x, "h"), x)
    c, q = _friction(h, gamma, x)
    xf, vf = x.float(), v.float()
    vf = c * vf + q * noise(x, seed, chain_ids, step, rng.STREAM_MOMENTUM)
    vf = vf + 0.5 * hh * (denoised.float() - xf) / (s * s)
    xf = xf + hh * vf
    return xf.to(x.dtype), vf.to(v.dtype)


def obabo_bo_reference(v, x, denoised, sigma, h, gamma, seed, chain_ids, step):
    s, hh = rows(per_sample(sigma, x, "sigma"), x), rows(per_sample(h, x, "h"), x)
    c, q = _friction(h, gamma, x)
    xf = x.float()
    vf = v.float() + 0.5 * hh * (denoised.float() - xf) / (s * s)
    vf = c * vf + q * noise(x, seed, chain_ids, step, STREAM_O2)
    return vf.to(v.dtype)


# ---------------- entry points ----------------
def baoab_limit_step(x, denoised, sigma, h, xi_prev, seed, chain_ids, step, stream=rng.STREAM_LANGEVIN, backend=None):
    same_shape("denoised", denoised, x), same_shape("xi_prev", xi_prev, x)
    return baoab_limit_step_reference(x, denoised, sigma, h, xi_prev, seed, chain_ids, step, stream)


def obabo_oba(x, v, denoised, sigma, h, gamma, seed, chain_ids, step, backend=None):
    same_shape("v", v, x), same_shape("denoised", denoised, x)
    return obabo_oba_reference(x, v, denoised, sigma, h, gamma, seed, chain_ids, step)


def obabo_bo(v, x, denoised, sigma, h, gamma, seed, chain_ids, step, backend=None):
    same_shape("v", v, x), same_shape("denoised", denoised, x)
    return obabo_bo_reference(v, x, denoised, sigma, h, gamma, seed, chain_ids, step)
