"""Argument handling shared by every kernel family: per-sample parameters (float or [B]) as [B]
vectors of the compute dtype (float32; float64 for float64 state), chain ids and steps as [B] int64, and the per-chain Philox noise of the references.

Only shapes are checked here (ValueError naming the argument); values are never read back to the host,
and a Python number becomes a device tensor by a fill (`torch.full`), never by a host-to-device copy,
so entry points stay free of host syncs and CUDA-graph capturable (`dmcmc_fast.engine.audit`).
"""
from __future__ import annotations

import torch

from dmcmc_fast import rng


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The arithmetic dtype of every kernel: float32, or float64 for float64 state."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _vector(v, x: torch.Tensor, dtype: torch.dtype, name: str, what: str) -> torch.Tensor:
    """A Python number (filled on the device: no host-to-device copy) or a 0-d / [B] tensor -> contiguous [B]."""
    b = x.shape[0]
    if torch.is_tensor(v) and v.dtype == dtype and v.shape == (b,) and v.device == x.device and v.is_contiguous():
        return v  # already what the kernels take (a sampler's grid column, its chain ids): no dispatch at all
    if isinstance(v, (list, tuple)):  # a list of values: setup-time input, copied once
        v = torch.as_tensor(v, dtype=dtype)
    if not torch.is_tensor(v):
        return torch.full((b,), v, dtype=dtype, device=x.device)
    t = v.to(device=x.device, dtype=dtype)
    if t.ndim == 0:
        return t.expand(b).contiguous()
    if t.shape != (b,):
        raise ValueError(f"{name} must be {what} or a tensor of shape [{b}] (one per sample), got shape {tuple(t.shape)}")
    return t.contiguous()


def per_sample(v, x: torch.Tensor, name: str) -> torch.Tensor:
    """float or [B] tensor -> contiguous [B] tensor of the compute dtype on x's device."""
    return _vector(v, x, compute_dtype(x), name, "a float")


def in_dtype(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`t` in `dtype`, without a dispatch when it already is (the references run every step)."""
    return t if t.dtype == dtype else t.to(dtype)


def rows(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """[B] -> [B, 1, ..., 1] to broadcast against x."""
    return t.reshape(-1, *([1] * (x.ndim - 1)))


def chain_vec(chain_ids, x: torch.Tensor) -> torch.Tensor:
    """chain_ids ([B] ints, or None for 0..B-1) -> contiguous [B] int64 on x's device."""
    if chain_ids is None:
        return rng.default_chain_ids(x.shape[0], device=x.device)
    if not isinstance(chain_ids, (list, tuple)) and not (torch.is_tensor(chain_ids) and chain_ids.ndim == 1):
        raise ValueError(f"chain_ids must be a list or a tensor of shape [{x.shape[0]}] (one id per sample), "
                         f"got {type(chain_ids).__name__} {tuple(getattr(chain_ids, 'shape', ()))}")
    return _vector(chain_ids, x, torch.int64, "chain_ids", "a list of ints")


def step_vec(step, x: torch.Tensor) -> torch.Tensor:
    """step (int or [B] ints) -> contiguous [B] int64 on x's device."""
    return _vector(step, x, torch.int64, "step", "an int")


def same_shape(name: str, t: torch.Tensor, x: torch.Tensor):
    if t.shape != x.shape:
        raise ValueError(f"{name} must have the shape of x {tuple(x.shape)}, got {tuple(t.shape)}")


def noise(x: torch.Tensor, seed: int, chain_ids, step, stream: int) -> torch.Tensor:
    """Reference noise: standard normals shaped like x (float32 words, compute dtype), row b from chain_ids[b]
    (`noise.chain_randn` on x's device: on the CPU the C++ words, bit-identical to `rng.chain_randn`)."""
    from .noise import chain_randn  # noise.py builds on this module

    z = chain_randn(seed, chain_vec(chain_ids, x), step_vec(step, x), tuple(x.shape[1:]), stream=stream,
                    device=x.device, backend="torch" if x.is_cuda else None)
    return in_dtype(z, compute_dtype(x))
