"""What a `dmcmc-fast sample` run of `num` samples needs in memory and on disk, checked before it starts (a run of
10^11 samples used to start and grow to 16 GB before writing anything).

The CLI holds every sample in memory at the end: the finished batches, their join and the clamped copy that
`api.save_samples` writes (3 copies of `num` float32 samples, plus the per-sample books: `nfe`, and DLG's
chain, block, sigma, ... at 8 bytes each); on disk it keeps every batch as a shard and then `samples.npz`
(2 copies). `check_fits` refuses a run whose need exceeds what this machine has free, with the figures, the
largest `num` that fits, and `--no-size-check` to try anyway.
"""
from __future__ import annotations

import math
import os
import shutil

MEMORY_COPIES, DISK_COPIES = 3, 2
BOOK_BYTES = 8 * 8  # per sample: nfe and up to 7 more per-sample books (DLG), 8 bytes each


def human(n: float) -> str:
    """Bytes as a short figure: 512 B, 3.2 MB, 25.6 TB (powers of 1000)."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"


def sample_bytes(shape) -> int:
    """Bytes of one float32 sample of `shape`, with its books."""
    return 4 * math.prod(int(s) for s in shape) + BOOK_BYTES


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux: MemAvailable); None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def free_disk(path: str) -> int | None:
    """Free bytes on the file system that `path` (or its nearest existing parent) lives on; None where unknown."""
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def check_fits(num: int, shape, out_dir: str, memory: int | None = None, disk: int | None = None):
    """Refuse (one ValueError line) a run of `num` samples of `shape` whose memory or disk need exceeds what is free
    (`memory`, `disk`: the free bytes, measured here when None)."""
    each = sample_bytes(shape)
    memory = available_memory() if memory is None else memory
    disk = free_disk(out_dir) if disk is None else disk
    for what, copies, free, where in (("memory", MEMORY_COPIES, memory, "available"),
                                      ("disk", DISK_COPIES, disk, f"free under {os.path.abspath(out_dir)}")):
        need = num * each * copies
        if free is not None and need > free:
            most = free // (each * copies)
            raise ValueError(f"--num {num}: the run needs about {human(need)} of {what} ({copies} copies of {num} "
                             f"samples of shape {list(shape)}, {human(num * each)} each copy), but {human(free)} "
                             f"is {where}; at most --num {most} fits (draw more with other --seed values), or pass "
                             "--no-size-check to try anyway")
