"""Finished samples on disk: one `.npz` shard per finished batch, written atomically, so an interrupted
run keeps every batch it finished (`api.stream(out_dir=...)`, `engine.dlg_run`).

A shard `parts/part_START_STOP.npz` holds samples START..STOP-1 (`samples`, `nfe`, and for block samplers
such as DLG further per-sample books: the chain, the block, ...); `merge_shards` puts them back in sample
order and checks that they cover 0..num-1 once.
"""
from __future__ import annotations

import os

import numpy as np
import torch


def save_npz_atomic(path: str, **arrays):
    """Write `path` so that it is either absent or complete, never half-written."""
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def shard_path(parts_dir: str, start: int, stop: int) -> str:
    return os.path.join(parts_dir, f"part_{start:09d}_{stop:09d}.npz")


def load_shard(path: str) -> tuple[torch.Tensor, dict]:
    """(samples, {name: array}) of one shard; the dict holds `nfe` and any per-sample books."""
    from dmcmc_fast.files import read_npz

    z = read_npz(path, "shard", needs=("samples", "nfe"))
    return torch.from_numpy(z.pop("samples")), z


def finished_samples(out_dir: str) -> int:
    """How many samples the finished shards of `out_dir/parts` hold (0 where there are none)."""
    parts_dir = os.path.join(out_dir, "parts")
    if not os.path.isdir(parts_dir):
        return 0
    total = 0
    for n in os.listdir(parts_dir):
        if n.startswith("part_") and n.endswith(".npz") and not n.endswith(".tmp.npz"):
            try:
                start, stop = (int(v) for v in n[len("part_"):-len(".npz")].split("_"))
            except ValueError:  # not one of ours
                continue
            total += stop - start
    return total


def merge_shards(out_dir: str, num: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """All shards of `out_dir/parts` in sample order: (samples, nfe, other per-sample books)."""
    parts_dir = os.path.join(out_dir, "parts")
    names = sorted(n for n in os.listdir(parts_dir) if n.startswith("part_") and n.endswith(".npz")
                   and not n.endswith(".tmp.npz"))
    xs, metas, expect = [], [], 0
    for n in names:
        start, stop = (int(v) for v in n[len("part_"):-len(".npz")].split("_"))
        if start != expect:
            raise ValueError(f"{parts_dir}: shards do not cover samples {expect}..{start - 1}")
        x, meta = load_shard(os.path.join(parts_dir, n))
        xs.append(x)
        metas.append(meta)
        expect = stop
    if expect != num:
        raise ValueError(f"{parts_dir}: shards cover samples 0..{expect - 1}, expected 0..{num - 1}")
    meta = {k: np.concatenate([m[k] for m in metas]) for k in metas[0]}
    return torch.cat(xs), torch.from_numpy(meta.pop("nfe")), meta
