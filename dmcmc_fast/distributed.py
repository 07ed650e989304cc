"""Several processes (torchrun): disjoint chain ids per rank and Fréchet statistics without gathering
images.

`torchrun --nproc-per-node N -m dmcmc_fast.cli sample ...` gives each rank the batches `j` with
`j % N == rank` (api.sample); rank 0 merges the shards. For `eval`, each rank reduces its slice of
the samples to sufficient statistics (count, sum, sum of outer products, float64) and one all-reduce
gives the exact mean and covariance of the whole set.
"""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.distributed as dist


def env_world() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) without it."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def init_from_env(device: str) -> tuple[int, int, str]:
    """Join the process group torchrun describes (gloo on CPU, nccl on CUDA); returns (rank, world, device)."""
    rank, world, local = env_world()
    if world == 1:
        return 0, 1, device
    if device.startswith("cuda"):
        device = f"cuda:{local}"
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return rank, world, device


def shutdown():
    """Leave the process group (every rank, at the end of a command) rather than exit with it live."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier():
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


# Every all-reduce's Work handle, held until the process ends. A gloo worker thread drops its reference to
# the Work just after `wait()` returns; if that is the last reference, the worker frees the Work's tensors,
# which takes the GIL (torch keeps a tensor's Python object alive from C++). When that happens while the
# interpreter finalizes, the thread is killed inside a noexcept C++ frame and the rank aborts ("terminate
# called without an active exception", SIGABRT; one `eval` exit in four on 2 CPU cores). Holding the handle
# here makes the main thread, with the GIL, the one that frees it.
_finished_works: list = []


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        work = dist.all_reduce(t, op=dist.ReduceOp.SUM, async_op=True)
        work.wait()
        _finished_works.append(work)
    return t


def sufficient_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(count, sum, sum of outer products) of flattened samples in float64."""
    f = x.reshape(x.shape[0], -1).double()
    return torch.tensor(float(f.shape[0]), dtype=torch.float64), f.sum(0), f.T @ f


def reduced_gaussian_stats(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray, int]:
    """Mean and unbiased covariance of the union of every rank's `x` (all-reduced sufficient stats)."""
    n, s, ss = (all_reduce_sum(t) for t in sufficient_stats(x))
    n_int = int(n.item())
    if n_int < 2:
        raise ValueError(f"need at least 2 samples for a covariance, got {n_int}")
    mu = s / n
    cov = (ss - n * torch.outer(mu, mu)) / (n - 1)
    return mu.numpy(), cov.numpy(), n_int
