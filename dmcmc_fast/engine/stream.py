"""Streaming finished samples in a defined order: samples finish in any order (chains and denoising
jobs run interleaved); `InOrder` releases them as `Chunk`s of consecutive sample ids as soon as the
ready prefix grows (`bookkeeping.ready_prefix`), so a consumer sees ids 0, 1, 2, ... exactly once.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from dmcmc_fast.engine.bookkeeping import ready_prefix


@dataclass
class Chunk:
    start: int  # first sample id
    stop: int  # one past the last
    samples: torch.Tensor  # [stop - start, *shape]

    def __len__(self) -> int:
        return self.stop - self.start


class InOrder:
    """Collects samples `0..num-1` arriving in any order; `add` returns the newly releasable chunk."""

    def __init__(self, num: int, shape, device=None, dtype=torch.float32, backend=None):
        if not isinstance(num, int) or num < 1:
            raise ValueError(f"num must be an integer >= 1, got {num!r}")
        self.samples = torch.empty(num, *shape, device=device, dtype=dtype)
        self.ready = torch.zeros(num, dtype=torch.int64)
        self.released = 0
        self.backend = backend

    def add(self, ids: torch.Tensor, x: torch.Tensor) -> Chunk | None:
        ids = ids.to("cpu", torch.int64).contiguous()
        if bool(self.ready[ids].any()):
            raise ValueError("sample ids must arrive once each; got a repeated id")
        self.samples[ids.to(self.samples.device)] = x.to(self.samples.dtype)
        start = self.released
        self.released = ready_prefix(self.ready, ids, start, backend=self.backend)
        if self.released == start:
            return None
        return Chunk(start, self.released, self.samples[start:self.released])

    @property
    def done(self) -> bool:
        return self.released == self.samples.shape[0]
