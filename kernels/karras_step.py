"""Fused Karras (EDM) step pieces on per-sample sigma pairs: Euler predictor, Heun corrector and the
stochastic churn of EDM Alg. 2 ("KAR2"), with per-chain Philox noise.

euler_step    d = (x - D)/sigma;  x' = x + (sigma_next - sigma) d                    (Alg. 1 l. 4-5)
heun_correct  x' = x + (sigma_next - sigma) (d + (x_euler - D_next)/sigma_next) / 2   (Alg. 1 l. 7-8)
churn         sigma_hat = sigma (1 + gamma);
              x_hat = x + s_noise sqrt(sigma_hat^2 - sigma^2) z                      (Alg. 2 l. 5-6)
              with sqrt(sigma_hat^2 - sigma^2) evaluated as sigma sqrt(gamma (2 + gamma)) (no cancellation)
"""
from __future__ import annotations

import torch

from dmcmc_fast import rng

from ._args import noise, per_sample, rows, same_shape
from ._dispatch import choose_backend


# ---------------- plain-torch references ----------------
def euler_step_reference(x, denoised, sigma, sigma_next):
    s, sn = rows(per_sample(sigma, x, "sigma"), x), rows(per_sample(sigma_next, x, "sigma_next"), x)
    xf = x.float()
    d = (xf - denoised.float()) / s
    return (xf + (sn - s) * d).to(x.dtype), d.to(x.dtype)


def heun_correct_reference(x, d, x_euler, denoised_next, sigma, sigma_next):
    s, sn = rows(per_sample(sigma, x, "sigma"), x), rows(per_sample(sigma_next, x, "sigma_next"), x)
    d_next = (x_euler.float() - denoised_next.float()) / sn
    return (x.float() + (sn - s) * 0.5 * (d.float() + d_next)).to(x.dtype)


def _sigma_hat(sigma, gamma, x):
    """sigma_hat [B] in sigma's dtype (float32 for a float sigma), gamma as [B] of that dtype."""
    s = sigma if torch.is_tensor(sigma) and sigma.ndim == 1 else per_sample(sigma, x, "sigma")
    if s.shape != (x.shape[0],):
        raise ValueError(f"sigma must be a float or a tensor of shape [{x.shape[0]}], got {tuple(s.shape)}")
    g = per_sample(gamma, x, "gamma").to(s.dtype)
    return s * (1.0 + g)


def churn_reference(x, sigma, gamma, s_noise, seed, chain_ids, step, stream=rng.STREAM_CHURN):
    s, g = per_sample(sigma, x, "sigma"), per_sample(gamma, x, "gamma")
    scale = rows(per_sample(s_noise, x, "s_noise") * s * torch.sqrt(g * (2.0 + g)), x)
    x_hat = x.float() + scale * noise(x, seed, chain_ids, step, stream)
    return x_hat.to(x.dtype), _sigma_hat(sigma, gamma, x)


# ---------------- entry points ----------------
def euler_step(x, denoised, sigma, sigma_next, backend=None):
    same_shape("denoised", denoised, x)
    return euler_step_reference(x, denoised, sigma, sigma_next)


def heun_correct(x, d, x_euler, denoised_next, sigma, sigma_next, backend=None):
    same_shape("d", d, x), same_shape("x_euler", x_euler, x), same_shape("denoised_next", denoised_next, x)
    return heun_correct_reference(x, d, x_euler, denoised_next, sigma, sigma_next)


def churn(x, sigma, gamma, s_noise, seed, chain_ids, step, stream=rng.STREAM_CHURN, backend=None):
    return churn_reference(x, sigma, gamma, s_noise, seed, chain_ids, step, stream)
