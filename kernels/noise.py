"""Per-chain standard normals in one launch: `rng.chain_randn` as a Triton kernel, its launcher, the
torch reference (`rng.chain_randn` itself) and the entry point that dispatches by device.

The samplers draw most of their noise inside the fused update kernels; this one serves the draws that
stand alone: the prior sample N(0, sigma_max^2 I) of every run, DLG's initialisation noise, the carried
noise / momentum of the underdamped samplers, and the per-step noise of the reverse-SDE integrators.
The torch reference is hundreds of int64 elementwise ops per draw, i.e. hundreds of kernel launches on
a GPU; the kernel is one, and draws the same numbers (counter = (element, chain, step, stream)). On the
CPU the draws come from the C++ extension (`csrc/philox.cpp`, one tight loop over the reference's own float32
operations), bit-identical to the reference; without the extension the reference itself runs.
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from dmcmc_fast import rng

from ._args import chain_vec, in_dtype, step_vec
from ._dispatch import choose_backend
from ._launch import grid_for, row_tile, seed_words
from ._philox import chain_randn as philox_randn


@triton.jit
def _randn_kernel(out_ptr, chain_ptr, step_ptr, n, seed_lo, seed_hi, stream, BLOCK: tl.constexpr):
    row, cols, mask, offs = row_tile(n, BLOCK)
    z = philox_randn(seed_lo, seed_hi, tl.program_id(1) * BLOCK, tl.load(chain_ptr + row), tl.load(step_ptr + row),
                     stream, BLOCK)
    tl.store(out_ptr + offs, z.to(out_ptr.dtype.element_ty), mask=mask)


def chain_randn_triton(seed: int, chain_ids: torch.Tensor, step, shape, stream: int = 0,
                       dtype=torch.float32) -> torch.Tensor:
    """[B, *shape] normals on chain_ids' device (a CUDA device, or the CPU under TRITON_INTERPRET=1)."""
    b, n = chain_ids.shape[0], math.prod(shape)
    out = torch.empty((b, n), dtype=dtype, device=chain_ids.device)
    if b and n:
        (grid, block), (lo, hi) = grid_for(b, n), seed_words(seed)
        _randn_kernel[grid](out, chain_ids.contiguous(), step_vec(step, out), n, lo, hi, stream, BLOCK=block)
    return out.view(b, *shape)


@functools.lru_cache(maxsize=None)
def _ext(name: str):
    """`dmcmc_fast._C.<name>`, or None where the extension was not built, predates that function, or draws
    another stream than `rng.STREAM_VERSION` (a build from before the stream changed: rebuild with setup.sh)."""
    try:
        from dmcmc_fast import _C
    except ImportError:
        return None
    if getattr(_C, "philox_stream", lambda: 1)() != rng.STREAM_VERSION:
        return None
    return getattr(_C, name, None)


def _cpp():
    """The extension's Philox uniforms (philox_uniform), or None: the switch between it and the torch reference."""
    return _ext("philox_uniform")


def chain_randn(seed: int, chain_ids, step, shape, stream: int = 0, device=None, dtype=torch.float32,
                backend=None, scale: float | None = None) -> torch.Tensor:
    """`rng.chain_randn(seed, chain_ids, step, shape, stream, device, dtype)`, one launch on CUDA; with `scale`,
    `scale * ` that (the same numbers: a prior sigma_max z in one call on the CPU).

    `chain_ids` a `[B]` int64 tensor (or list), `step` an int or a `[B]` tensor; the result lives on
    `device` (default: chain_ids' device)."""
    normal_at = _ext("philox_normal_at") if _cpp() is not None else None
    if type(step) is int and dtype == torch.float32 and backend is None and normal_at is not None:
        ids = _cpu_ids(seed, chain_ids, device)
        ids = _ids(seed, chain_ids, device) if ids is None else ids
        if ids.device.type == "cpu" and choose_backend(ids) == "torch":  # one extension call, no step tensor
            z = normal_at(seed, ids, step, math.prod(shape), stream, 1.0 if scale is None else float(scale))
            return z.view(ids.shape[0], *shape)
    z = _chain_randn(seed, chain_ids, step, shape, stream, device, dtype, backend)
    return z if scale is None else scale * z


def _chain_randn(seed: int, chain_ids, step, shape, stream, device, dtype, backend) -> torch.Tensor:
    ids, steps, shape = _rows(seed, chain_ids, step, shape, device)
    if choose_backend(ids, backend) == "triton":
        return chain_randn_triton(seed, ids, steps, shape, stream, dtype)
    if ids.device.type == "cpu" and backend != "torch" and _cpp() is not None:
        normal = _ext("philox_normal")  # the reference's float32 operations in C++: bit-identical
        return in_dtype(normal(seed, ids, steps, math.prod(shape), stream).view(ids.shape[0], *shape), dtype)
    return rng.chain_randn(seed, ids, steps, shape, stream=stream, device=device, dtype=dtype)


PREDRAW_ELEMENTS = 1 << 22  # a loop on the CPU draws several steps' normals at once up to this size (16 MB)


def chain_randn_steps(seed: int, chain_ids, step0, n_steps: int, shape, stream: int = 0, device=None) -> torch.Tensor:
    """`[n_steps, B, *shape]`: row b of slice i is `chain_randn(seed, chain_ids, step0 + i, shape, stream)`'s
    (the same numbers), all in one draw; `step0` an int or `[B]`. For loops that know their steps' counters
    ahead (KAR2's churn, a DLG block's Langevin steps)."""
    runs_at = _ext("philox_normal_runs") if type(step0) is int and n_steps > 0 and _cpp() is not None else None
    ids = _cpu_ids(seed, chain_ids, device) if runs_at is not None else None
    if ids is not None and choose_backend(ids) == "torch":  # an int first step: one run of steps, no step tensor
        return runs_at(seed, ids, step0, 1, n_steps, n_steps, math.prod(shape), stream).view(n_steps, ids.shape[0],
                                                                                              *shape)
    ids, first, shape = _rows(seed, chain_ids, step0, shape, device)
    steps_normal = _ext("philox_normal_steps") if ids.device.type == "cpu" and _cpp() is not None else None
    if steps_normal is not None and choose_backend(ids) == "torch":  # the rows made in C++, one call
        return steps_normal(seed, ids, first, n_steps, math.prod(shape), stream).view(n_steps, ids.shape[0], *shape)
    steps = (first[None, :] + torch.arange(n_steps, device=ids.device)[:, None]).reshape(-1)  # step-major
    z = chain_randn(seed, ids.repeat(n_steps), steps, shape, stream=stream, device=ids.device)
    return z.view(n_steps, ids.shape[0], *shape)


def chain_randn_runs(seed: int, chain_ids, step0: int, n_runs: int, run: int, stride: int, shape, stream: int = 0,
                     device=None) -> torch.Tensor:
    """`[n_runs, run, B, *shape]`: slice [q, j] is `chain_randn(seed, chain_ids, step0 + q * stride + j, shape, stream)`'s
    (the same numbers): runs of consecutive steps `stride` apart in one draw (all of a DLG call's Langevin steps,
    block after block; on the CPU one extension call)."""
    runs_at = _ext("philox_normal_runs") if _cpp() is not None else None
    ids = _cpu_ids(seed, chain_ids, device) if runs_at is not None else None
    if ids is not None and choose_backend(ids) == "torch":
        n = math.prod(shape)
        return runs_at(seed, ids, step0, n_runs, run, stride, n, stream).view(n_runs, run, ids.shape[0], *shape)
    return torch.stack([chain_randn_steps(seed, chain_ids, step0 + q * stride, run, shape, stream=stream, device=device)
                        for q in range(n_runs)])


def chain_rand(seed: int, chain_ids, step, shape, stream: int = 0, device=None, backend=None) -> torch.Tensor:
    """`rng.chain_rand` (uniforms in [0, 1), word 0): the C++ words on the CPU (bit-identical), else the
    reference (the Triton kernels draw their uniforms inside, e.g. the Gibbs kernel's Gumbel-max)."""
    ids, steps, shape = _rows(seed, chain_ids, step, shape, device)
    if ids.device.type == "cpu" and backend != "torch" and _cpp() is not None:
        return _cpp()(seed, ids, steps, math.prod(shape), stream).view(ids.shape[0], *shape)
    return rng.chain_rand(seed, ids, steps, shape, stream=stream, device=device)


def _rows(seed, chain_ids, step, shape, device):
    """chain ids and steps as [B] int64 on the device (default: chain_ids'), shape as a tuple; checks seed."""
    ids = _ids(seed, chain_ids, device)
    return ids, step_vec(step, ids), tuple(shape)


def _cpu_ids(seed, chain_ids, device) -> torch.Tensor | None:
    """`_ids`' answer without its conversions when there are none to make (a valid seed and chain ids already a
    [B] int64 CPU tensor, wanted on the CPU: every run's prior on the CPU); else None."""
    if type(seed) is int and 0 <= seed < 2**63 and type(chain_ids) is torch.Tensor and chain_ids.ndim == 1 \
            and chain_ids.dtype == torch.int64 and not chain_ids.is_cuda and chain_ids.is_contiguous() \
            and (device is None or torch.device(device).type == "cpu"):
        return chain_ids
    return None


def _ids(seed, chain_ids, device) -> torch.Tensor:
    """chain ids as [B] int64 on the device (default: chain_ids'); checks seed."""
    seed_words(seed)  # ValueError naming the seed outside [0, 2**63)
    device = torch.device(device) if device is not None else (
        chain_ids.device if torch.is_tensor(chain_ids) else torch.device("cpu"))
    rows = _Rows((len(chain_ids),), device)  # what chain_vec reads of a batch: its size and device
    return chain_vec(chain_ids, rows)


class _Rows(NamedTuple):
    shape: tuple
    device: torch.device
