"""The books of many parallel chains: which chain steps, which denoising job runs, what is finished.

The pipelined DLG runner (`engine/runner.py`) keeps, on the host, only integers: per chain its MCMC
step count and whether it waits for a job slot; per job slot the chain and block it denoises and how
many of its `n_den` network evaluations are done; the NFE ledger per chain. From these alone it packs
every fixed-size network batch, so scheduling never reads device data (no host sync).

Rules (both implementations follow them exactly):
- A chain steps once per batch it is packed into; when its step count reaches a multiple of `n_skip`
  its block has ended and it waits until a job slot takes the block's minimum-sigma iterate.
- `assign_jobs`: waiting chains, in id order, take free job slots, in slot order. Jobs taken in one
  call form groups: runs of consecutive jobs of the same block, at most `max_group` long; a group
  shares one sequence number (its age) and is denoised as one batch by one integrator call.
- `pack_batch`: a batch holds first the next evaluation of the unfinished job groups, oldest first,
  each group whole (packing of jobs stops at the first group that does not fit), then the next step
  of every ready chain (not waiting, under `total_steps`), fewest steps first, then lowest id; rows
  beyond the work are padding (kind 0, src -1). A job or chain takes one row at most.
- `commit_batch`: after the batch ran, chain rows advance one step, job rows one evaluation, every row
  charges one NFE to its chain; jobs reaching `n_den` are finished, returned, and their slots freed.
- `ready_prefix`: mark samples ready, return how far the ready prefix (from `start`) now reaches, so
  samples stream out in id order.

Each function runs in C++ (`dmcmc_fast._C`, built from `csrc/chains.cpp` by `pip install -e .`) when
the extension is built, else in plain torch (`backend="torch"`); the two agree exactly (tested on
random schedules). All tensors are CPU int64, updated in place where the docs say so.
"""
from __future__ import annotations

import torch

from dmcmc_fast.validate import check_int

KIND_PAD, KIND_CHAIN, KIND_JOB = 0, 1, 2
BACKENDS = ("auto", "cpp", "torch")
_C = None


def extension():
    """The compiled `dmcmc_fast._C`, or None when it was not built (imported lazily, once)."""
    global _C
    if _C is None:
        try:
            from dmcmc_fast import _C as ext
        except ImportError:
            ext = False
        _C = ext
    return _C or None


def _impl(backend: str | None):
    b = backend or "auto"
    if b not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {b!r}")
    if b == "torch" or (b == "auto" and extension() is None):
        return None
    if extension() is None:
        raise ImportError("backend='cpp' needs the dmcmc_fast._C extension: reinstall with "
                          "`pip install --no-build-isolation -e .` (it builds csrc/*.cpp)")
    return extension()


def _check(name: str, t, n: int | None = None):
    if not (torch.is_tensor(t) and t.dtype == torch.int64 and t.device.type == "cpu" and t.ndim == 1
            and t.is_contiguous()):
        raise ValueError(f"{name} must be a contiguous 1-D int64 CPU tensor, got "
                         f"{t.dtype if torch.is_tensor(t) else type(t).__name__}")
    if n is not None and t.shape[0] != n:
        raise ValueError(f"{name} must have length {n}, got {t.shape[0]}")


def assign_jobs(chain_step, chain_wait, job_chain, job_block, job_done, job_seq, next_seq, n_skip: int,
                max_group: int, backend=None) -> torch.Tensor:
    """Give free job slots to waiting chains (in place). Returns `[k, 2]` rows `(slot, chain)`.

    `chain_step`, `chain_wait` are `[C]`; `job_chain` (-1 = free), `job_block`, `job_done`, `job_seq`
    (group number) are `[J]`; `next_seq` is `[1]` (advanced by the number of new groups). The job's
    block is `chain_step // n_skip - 1`.
    """
    C, J = chain_step.shape[0], job_chain.shape[0]
    for name, t, n in (("chain_step", chain_step, None), ("chain_wait", chain_wait, C), ("job_chain", job_chain, None),
                       ("job_block", job_block, J), ("job_done", job_done, J), ("job_seq", job_seq, J),
                       ("next_seq", next_seq, 1)):
        _check(name, t, n)
    check_int("n_skip", n_skip, 1)
    check_int("max_group", max_group, 1)
    ext = _impl(backend)
    if ext is not None:
        return ext.assign_jobs(chain_step, chain_wait, job_chain, job_block, job_done, job_seq, next_seq, n_skip,
                               max_group)
    waiting = torch.nonzero(chain_wait).flatten()
    free = torch.nonzero(job_chain < 0).flatten()
    k = min(waiting.numel(), free.numel())
    slots, chains = free[:k], waiting[:k]
    block = chain_step[chains] // n_skip - 1
    pos = torch.arange(k)
    run_start = torch.ones(k, dtype=torch.bool)
    run_start[1:] = block[1:] != block[:-1]
    first_of_run = torch.cummax(torch.where(run_start, pos, 0), 0).values if k else pos
    group = torch.cumsum(run_start | ((pos - first_of_run) % max_group == 0), 0) - 1
    job_chain[slots] = chains
    job_block[slots] = block
    job_done[slots] = 0
    job_seq[slots] = next_seq + group
    next_seq += int(group[-1]) + 1 if k else 0
    chain_wait[chains] = 0
    return torch.stack([slots, chains], 1)


def pack_batch(chain_step, chain_wait, job_chain, job_done, job_seq, total_steps: int, n_den: int,
               batch_size: int, backend=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The next network batch: `(kind [batch_size], src [batch_size])`, kind 1 = chain `src` steps,
    2 = job slot `src` evaluates, 0 = padding (src -1). Reads only. Groups larger than `batch_size`
    never run: give `assign_jobs` a `max_group` <= `batch_size`."""
    C, J = chain_step.shape[0], job_chain.shape[0]
    for name, t, n in (("chain_step", chain_step, None), ("chain_wait", chain_wait, C), ("job_chain", job_chain, None),
                       ("job_done", job_done, J), ("job_seq", job_seq, J)):
        _check(name, t, n)
    for name, v in (("total_steps", total_steps), ("n_den", n_den), ("batch_size", batch_size)):
        check_int(name, v, 1)
    ext = _impl(backend)
    if ext is not None:
        kind, src = ext.pack_batch(chain_step, chain_wait, job_chain, job_done, job_seq, total_steps, n_den, batch_size)
        return kind, src
    jobs = torch.nonzero((job_chain >= 0) & (job_done < n_den)).flatten()
    jobs = jobs[torch.argsort(job_seq[jobs], stable=True)]
    _, sizes = torch.unique_consecutive(job_seq[jobs], return_counts=True)
    jobs = jobs[: int(sizes[torch.cumsum(sizes, 0) <= batch_size].sum())]
    chains = torch.nonzero((chain_wait == 0) & (chain_step < total_steps)).flatten()
    chains = chains[torch.argsort(chain_step[chains], stable=True)]
    work_kind = torch.cat([torch.full_like(jobs, KIND_JOB), torch.full_like(chains, KIND_CHAIN)])[:batch_size]
    work_src = torch.cat([jobs, chains])[:batch_size]
    pad = batch_size - work_src.numel()
    kind = torch.cat([work_kind, torch.full((pad,), KIND_PAD, dtype=torch.int64)])
    src = torch.cat([work_src, torch.full((pad,), -1, dtype=torch.int64)])
    return kind, src


def commit_batch(kind, src, chain_step, chain_wait, job_chain, job_block, job_done, nfe, n_skip: int, n_den: int,
                 backend=None) -> torch.Tensor:
    """Account for a batch that ran (in place). Returns `[k, 3]` rows `(slot, chain, block)` of the
    jobs that finished, in batch order; their slots are free again."""
    B, C, J = kind.shape[0], chain_step.shape[0], job_chain.shape[0]
    for name, t, n in (("kind", kind, None), ("src", src, B), ("chain_step", chain_step, None),
                       ("chain_wait", chain_wait, C), ("job_chain", job_chain, None), ("job_block", job_block, J),
                       ("job_done", job_done, J), ("nfe", nfe, C)):
        _check(name, t, n)
    check_int("n_skip", n_skip, 1)
    check_int("n_den", n_den, 1)
    for k, n, what in ((KIND_CHAIN, C, "chain"), (KIND_JOB, J, "job slot")):
        ids = src[kind == k]
        if ids.numel() and (ids.min() < 0 or ids.max() >= n or ids.unique().numel() != ids.numel()):
            raise ValueError(f"src must name each {what} in [0, {n}) at most once per batch")
    ext = _impl(backend)
    if ext is not None:
        return ext.commit_batch(kind, src, chain_step, chain_wait, job_chain, job_block, job_done, nfe, n_skip, n_den)
    ch = src[kind == KIND_CHAIN]
    nfe.index_add_(0, ch, torch.ones_like(ch))
    chain_step[ch] += 1
    chain_wait[ch[chain_step[ch] % n_skip == 0]] = 1
    jb = src[kind == KIND_JOB]
    nfe.index_add_(0, job_chain[jb], torch.ones_like(jb))
    job_done[jb] += 1
    fin = jb[job_done[jb] == n_den]
    out = torch.stack([fin, job_chain[fin], job_block[fin]], 1)
    job_chain[fin] = -1
    return out


def ready_prefix(ready, sample_ids, start: int, backend=None) -> int:
    """Set `ready[sample_ids] = 1` (in place) and return the first index >= `start` not ready."""
    _check("ready", ready)
    _check("sample_ids", sample_ids)
    if not isinstance(start, int) or not 0 <= start <= ready.shape[0]:
        raise ValueError(f"start must be an integer in [0, {ready.shape[0]}], got {start!r}")
    if sample_ids.numel() and (sample_ids.min() < 0 or sample_ids.max() >= ready.shape[0]):
        raise ValueError(f"sample_ids must lie in [0, {ready.shape[0]})")
    ext = _impl(backend)
    if ext is not None:
        return int(ext.ready_prefix(ready, sample_ids, start))
    ready[sample_ids] = 1
    gaps = torch.nonzero(ready[start:] == 0).flatten()
    return start + int(gaps[0]) if gaps.numel() else ready.shape[0]


def route_samples(owed, n: int, backend=None) -> torch.Tensor:
    """Route `n` finished samples, in stream order, to the requests that asked for them: each goes to
    the oldest request still owed samples (`owed[r]`, decremented in place). Returns `[n]` request
    indices, -1 where no request is waiting (the sample stays with the pool)."""
    _check("owed", owed)
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    if owed.numel() and owed.min() < 0:
        raise ValueError("owed must be >= 0 for every request")
    ext = _impl(backend)
    if ext is not None:
        return ext.route_samples(owed, n)
    # sample i goes to the request whose cumulative owed count first exceeds i
    ends = torch.cumsum(owed, 0)
    out = torch.searchsorted(ends, torch.arange(n, dtype=torch.int64), right=True)
    out[out >= owed.shape[0]] = -1
    taken = torch.bincount(out[out >= 0], minlength=owed.shape[0])
    owed -= taken
    return out


class ChainBooks:
    """The state these functions update, for `n_chains` chains of `n_blocks` blocks of `n_skip` steps,
    `n_jobs` job slots of `n_den` evaluations each, and network batches of `batch_size` rows."""

    def __init__(self, n_chains: int, n_blocks: int, n_skip: int, n_den: int, n_jobs: int, batch_size: int,
                 backend=None):
        for name, v in (("n_chains", n_chains), ("n_blocks", n_blocks), ("n_skip", n_skip), ("n_den", n_den),
                        ("n_jobs", n_jobs), ("batch_size", batch_size)):
            check_int(name, v, 1)
        _impl(backend)
        self.n_skip, self.n_den, self.batch_size, self.backend = n_skip, n_den, batch_size, backend
        self.total_steps = n_blocks * n_skip
        z = lambda n, v=0: torch.full((n,), v, dtype=torch.int64)  # noqa: E731
        self.chain_step, self.chain_wait, self.nfe = z(n_chains), z(n_chains), z(n_chains)
        self.job_chain, self.job_block, self.job_done, self.job_seq = z(n_jobs, -1), z(n_jobs), z(n_jobs), z(n_jobs)
        self.next_seq = z(1)

    def plan(self):
        """Assign job slots, then pack the next batch: `(new_jobs [k, 2], kind [B], src [B])`."""
        new = assign_jobs(self.chain_step, self.chain_wait, self.job_chain, self.job_block, self.job_done,
                          self.job_seq, self.next_seq, self.n_skip, self.batch_size, backend=self.backend)
        kind, src = pack_batch(self.chain_step, self.chain_wait, self.job_chain, self.job_done, self.job_seq,
                               self.total_steps, self.n_den, self.batch_size, backend=self.backend)
        return new, kind, src

    def commit(self, kind, src) -> torch.Tensor:
        return commit_batch(kind, src, self.chain_step, self.chain_wait, self.job_chain, self.job_block,
                            self.job_done, self.nfe, self.n_skip, self.n_den, backend=self.backend)

    @property
    def done(self) -> bool:
        return bool((self.chain_step == self.total_steps).all() and not self.chain_wait.any()
                    and (self.job_chain < 0).all())
