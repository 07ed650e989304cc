"""Fused Langevin-family updates (score from the denoiser output, per-sample sigma/step size,
per-chain Philox noise). Entry points dispatch by device (`kernels._dispatch`).

langevin_step   x' = x + (eta/2) (D - x)/sigma^2 + sqrt(eta) z                         (ULA / DLG)
mild_step       y = x + gamma v;  v' = gamma v + alpha (D(y) - y)/sigma^2;
                x' = x + v' + sqrt(2 alpha) z                           (MILD, Alg. 1; D evaluated at y)
"""
from __future__ import annotations

import torch

from dmcmc_fast import rng
from kernels._dispatch import choose_backend


def _per_sample(v, x: torch.Tensor) -> torch.Tensor:
    """float or [B] -> [B, 1, ..., 1] float32 on x's device."""
    t = torch.as_tensor(v, dtype=torch.float32, device=x.device)
    if t.ndim == 0:
        t = t.expand(x.shape[0])
    return t.reshape(-1, *([1] * (x.ndim - 1)))


def _noise(x, seed, chain_ids, step, stream):
    return rng.chain_randn(seed, chain_ids, step, tuple(x.shape[1:]), stream=stream, device=x.device)


# ---------------- plain-torch references ----------------
def langevin_step_reference(x, denoised, sigma, eta, seed, chain_ids, step, stream=rng.STREAM_LANGEVIN):
    s, e = _per_sample(sigma, x), _per_sample(eta, x)
    xf = x.float()
    z = _noise(x, seed, chain_ids, step, stream)
    out = xf + 0.5 * e * (denoised.float() - xf) / (s * s) + torch.sqrt(e) * z
    return out.to(x.dtype)


def mild_step_reference(x, v, denoised_y, sigma, alpha, gamma, seed, chain_ids, step, stream=rng.STREAM_LANGEVIN):
    s, a = _per_sample(sigma, x), _per_sample(alpha, x)
    xf, vf = x.float(), v.float()
    y = xf + gamma * vf
    v_new = gamma * vf + a * (denoised_y.float() - y) / (s * s)
    z = _noise(x, seed, chain_ids, step, stream)
    x_new = xf + v_new + torch.sqrt(2.0 * a) * z
    return x_new.to(x.dtype), v_new.to(v.dtype)


# ---------------- entry points ----------------
def langevin_step(x, denoised, sigma, eta, seed, chain_ids, step, stream=rng.STREAM_LANGEVIN, backend=None):
    if choose_backend(x, backend) == "triton":
        from kernels import _triton_impl  # Triton versions live beside (issue 5)
        return _triton_impl.langevin_step(x, denoised, sigma, eta, seed, chain_ids, step, stream)
    return langevin_step_reference(x, denoised, sigma, eta, seed, chain_ids, step, stream)


def mild_step(x, v, denoised_y, sigma, alpha, gamma, seed, chain_ids, step, stream=rng.STREAM_LANGEVIN, backend=None):
    if choose_backend(x, backend) == "triton":
        from kernels import _triton_impl
        return _triton_impl.mild_step(x, v, denoised_y, sigma, alpha, gamma, seed, chain_ids, step, stream)
    return mild_step_reference(x, v, denoised_y, sigma, alpha, gamma, seed, chain_ids, step, stream)
