"""Argument handling shared by every kernel family: per-sample parameters (float or [B]) as [B]
vectors of the compute dtype (float32; float64 for float64 state), chain ids and steps as [B] int64, and the per-chain Philox noise of the references.

Only shapes are checked here (ValueError naming the argument); values are never read back to the host,
so entry points stay CUDA-graph capturable.
"""
from __future__ import annotations

import torch

from dmcmc_fast import rng


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The arithmetic dtype of every kernel: float32, or float64 for float64 state."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def per_sample(v, x: torch.Tensor, name: str) -> torch.Tensor:
    """float or [B] tensor -> contiguous [B] tensor of the compute dtype on x's device."""
    b = x.shape[0]
    t = torch.as_tensor(v, dtype=compute_dtype(x), device=x.device)
    if t.ndim == 0:
        return t.expand(b).contiguous()
    if t.shape != (b,):
        raise ValueError(f"{name} must be a float or a tensor of shape [{b}] (one per sample), got shape {tuple(t.shape)}")
    return t.contiguous()


def rows(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """[B] -> [B, 1, ..., 1] to broadcast against x."""
    return t.reshape(-1, *([1] * (x.ndim - 1)))


def chain_vec(chain_ids, x: torch.Tensor) -> torch.Tensor:
    """chain_ids ([B] ints, or None for 0..B-1) -> contiguous [B] int64 on x's device."""
    b = x.shape[0]
    if chain_ids is None:
        return rng.default_chain_ids(b, device=x.device)
    t = torch.as_tensor(chain_ids, dtype=torch.int64, device=x.device)
    if t.shape != (b,):
        raise ValueError(f"chain_ids must have shape [{b}] (one id per sample), got shape {tuple(t.shape)}")
    return t.contiguous()


def step_vec(step, x: torch.Tensor) -> torch.Tensor:
    """step (int or [B] ints) -> contiguous [B] int64 on x's device."""
    b = x.shape[0]
    t = torch.as_tensor(step, dtype=torch.int64, device=x.device)
    if t.ndim == 0:
        return t.expand(b).contiguous()
    if t.shape != (b,):
        raise ValueError(f"step must be an int or a tensor of shape [{b}], got shape {tuple(t.shape)}")
    return t.contiguous()


def same_shape(name: str, t: torch.Tensor, x: torch.Tensor):
    if t.shape != x.shape:
        raise ValueError(f"{name} must have the shape of x {tuple(x.shape)}, got {tuple(t.shape)}")


def noise(x: torch.Tensor, seed: int, chain_ids, step, stream: int) -> torch.Tensor:
    """Reference noise: standard normals shaped like x (float32 words, compute dtype), row b from chain_ids[b]."""
    return rng.chain_randn(seed, chain_vec(chain_ids, x), step_vec(step, x), tuple(x.shape[1:]),
                           stream=stream, device=x.device).to(compute_dtype(x))
