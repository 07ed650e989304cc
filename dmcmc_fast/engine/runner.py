"""Pipelined DLG: MCMC steps of the chains and denoising steps of earlier blocks share network batches.

`run_dlg` (dmcmc_fast/mcmc/dlg.py) runs a block's n_skip Langevin-Gibbs steps, then denoises the
block's minimum-sigma iterate with the integrator, then starts the next block: the network sees C rows
per call, and the chains wait while the integrator runs. Here every chain keeps stepping while the
denoising jobs of its earlier blocks run, and each network call holds the next evaluation of the
running jobs (whole job groups, oldest first) and the next step of the ready chains, each row at its
own sigma, up to `batch_size` rows: about n_blocks * n_skip + n_den calls instead of
n_blocks * (n_skip + n_den). The integer books (who steps, which job runs, NFE) are kept by
`engine.bookkeeping` (C++), so scheduling never reads device data.

Same samples as `run_dlg` for the same seed and chain ids: both are made of the one DLG step of
`mcmc/dlg.py` (`langevin_gibbs_step`, `block_min_update`, `denoise_block`, each at its `Counters`
value), and every update is row-wise. Any integrator that makes a fixed number of
full-batch model calls can be pipelined: each job group runs its integrator in a worker thread whose
model calls hand their (x, sigma) to this loop and wait for the packed forward's rows (`_Coroutine`;
the threads only run while the loop waits for them, so the order of work is fixed).
"""
from __future__ import annotations

import math
from contextlib import closing
import queue
import threading
from dataclasses import replace
from typing import Callable, Iterator

import torch

from dmcmc_fast import rng
from dmcmc_fast.engine.bookkeeping import KIND_CHAIN, KIND_JOB, ChainBooks
from dmcmc_fast.engine.stream import Chunk, InOrder
from dmcmc_fast.kernels.gibbs import block_min_update
from dmcmc_fast.validate import check_int
from dmcmc_fast.mcmc.dlg import (Counters, DLGConfig, DLGResult, DLGState, denoise_block, dlg_init, integrator,
                                 langevin_gibbs_step, level_log_prior)
from dmcmc_fast.models.base import CountingDenoiser


_CLOSE = object()


class _Closed(Exception):
    """Raised inside a worker's model call when its stream is abandoned."""


class _Coroutine:
    """Runs `fn(model)` in a thread; every `model(x, sigma)` call there pauses it and becomes `pending`
    here (`("call", x, sigma)`, then `("done", result)` or `("error", exc)`); `send(D)` resumes it."""

    def __init__(self, fn: Callable):
        self._out, self._in = queue.SimpleQueue(), queue.SimpleQueue()
        threading.Thread(target=self._run, args=(fn,), daemon=True).start()
        self._receive()

    def _run(self, fn):
        try:
            with torch.no_grad():
                self._out.put(("done", fn(self._call)))
        except BaseException as err:  # handed to the owner, which raises it
            self._out.put(("error", err))

    def _call(self, x, sigma):
        self._out.put(("call", x, sigma))
        reply = self._in.get()
        if reply is _CLOSE:
            raise _Closed
        return reply

    def close(self):
        """End the thread (if it waits in a model call, that call raises and the integrator unwinds)."""
        if self.pending[0] == "call":
            self.pending = ("closed",)
            self._in.put(_CLOSE)

    def send(self, denoised: torch.Tensor):
        self._in.put(denoised)
        self._receive()

    def _receive(self):
        self.pending = self._out.get()
        if self.pending[0] == "error":
            raise self.pending[1]


class _ModelProxy:
    """What the integrator in a worker thread sees as its model."""

    def __init__(self, call, like):
        self._call = call
        for attr in ("shape", "sigma_min", "sigma_max", "data_range"):
            if hasattr(like, attr):
                setattr(self, attr, getattr(like, attr))

    def __call__(self, x, sigma):
        return self._call(x, sigma)


def integrator_calls(cfg: DLGConfig, shape, device, dtype) -> int:
    """Model calls one denoising job makes (counted on a one-row dry run with D(x) = x)."""
    fn, steps_for_nfe = integrator(cfg.integrator)
    counting = CountingDenoiser(_ModelProxy(lambda x, s: x, type("M", (), {"shape": shape})()), 1, device)
    x = torch.ones(1, *shape, device=device, dtype=dtype)
    fn(counting, x, cfg.sigma_max, steps_for_nfe(cfg.n_den), sigma_min=cfg.sigma_min, seed=0,
       chain_ids=torch.zeros(1, dtype=torch.int64, device=device), step0=0, final_tweedie=True,
       **cfg.integrator_options)
    return counting.calls


class _Group:
    """One job group: chains whose block `block` ended together, denoised by one integrator call."""

    def __init__(self, slots, chains, block, sigma, coroutine):
        self.slots, self.chains, self.block, self.sigma, self.co = slots, chains, block, sigma, coroutine


def _events(model, classifier, n_blocks: int, cfg: DLGConfig, ids: torch.Tensor, seed: int, state: DLGState,
            batch_size: int | None, n_jobs: int | None, denoiser, backend) -> Iterator[tuple]:
    """The pipelined loop. Yields `("samples", chain_index [g], block, x [g, ...], sigma [g])` as job
    groups finish, and finally `("end", x, sigma, nfe [C], classifier_evals [C])`."""
    C, dev = ids.shape[0], ids.device
    x, sigma = state.x.to(dev).clone(), state.sigma.to(dev).clone()
    best_x, best_sigma = x.clone(), torch.full_like(sigma, math.inf)  # a block's first step replaces it
    levels = classifier.levels.to(dev)
    log_prior = level_log_prior(cfg, levels)
    ctr = Counters(state.step, cfg.n_skip, cfg.den_steps())
    evals = integrator_calls(cfg, x.shape[1:], dev, x.dtype)
    in_flight = C * math.ceil(evals / cfg.n_skip)  # job slots that keep every chain stepping
    books = ChainBooks(C, n_blocks, cfg.n_skip, evals, n_jobs or in_flight, batch_size or C + in_flight,
                       backend=backend)
    classifier_evals = torch.zeros(C, dtype=torch.int64)
    groups: dict[int, _Group] = {}

    def start_group(slots, chains, block):
        rows = chains.to(dev)
        x0, s0 = best_x[rows].clone(), best_sigma[rows].clone()

        def job(call):
            return denoise_block(_ModelProxy(call, model), cfg, x0, s0, seed, ids[rows], ctr.denoise(block))
        return _Group(slots, chains, block, s0, _Coroutine(job))

    try:
        while not books.done:
            new, kind, src = books.plan()
            if new.numel():
                seqs = books.job_seq[new[:, 0]]
                for q in seqs.unique().tolist():
                    slots, chains = new[seqs == q, 0], new[seqs == q, 1]
                    groups[q] = start_group(slots, chains, int(books.job_block[slots[0]]))
                    rows = chains.to(dev)
                    best_sigma[rows] = math.inf  # the next block's minimum is over its own steps
            job_slots, ch = src[kind == KIND_JOB], src[kind == KIND_CHAIN]
            batch_groups = [groups[q] for q in books.job_seq[job_slots].unique_consecutive().tolist()]
            xs, ss = [], []
            for g in batch_groups:
                if g.co.pending[0] != "call":
                    raise RuntimeError(f"integrator {cfg.integrator!r} made fewer than {evals} model calls in a job; "
                                       "the pipelined runner needs a fixed number of calls per job")
                _, gx, gs = g.co.pending
                if gx.shape[0] != g.chains.numel():
                    raise RuntimeError(f"integrator {cfg.integrator!r} called the model on a subset of its rows; "
                                       "the pipelined runner needs full-batch calls")
                xs.append(gx)
                ss.append(gs.to(gx.dtype))
            rows = ch.to(dev)
            xs.append(x[rows])
            ss.append(sigma[rows])
            out = denoiser(torch.cat(xs), torch.cat(ss))  # the one network call of this tick
            if rows.numel():  # the chains' Langevin-Gibbs steps, each at its own counter
                step = books.chain_step[ch]
                k = ctr.step(step // cfg.n_skip, step % cfg.n_skip).to(dev)
                xc, sc = langevin_gibbs_step(x[rows], out[out.shape[0] - rows.shape[0]:], sigma[rows], cfg, classifier,
                                             levels, log_prior, seed, ids[rows], k)
                classifier_evals[ch] += 1
                bx, bs = best_x[rows], best_sigma[rows]
                block_min_update(xc, sc, bx, bs)
                x[rows], sigma[rows], best_x[rows], best_sigma[rows] = xc, sc, bx, bs
            # the jobs' evaluations resume their integrators (a group's rows are packed in its slot order,
            # which is the order of its chains in the integrator call)
            lo = 0
            for g in batch_groups:
                g.co.send(out[lo:lo + g.chains.numel()])
                lo += g.chains.numel()
            finished = books.commit(kind, src)
            if finished.numel():
                fin_seqs = books.job_seq[finished[:, 0]].unique_consecutive().tolist()
                for q in dict.fromkeys(fin_seqs):
                    g = groups.pop(q)
                    if g.co.pending[0] != "done":
                        raise RuntimeError(f"integrator {cfg.integrator!r} made more than {evals} model calls in a "
                                           "job; the pipelined runner needs a fixed number of calls per job")
                    yield "samples", g.chains, g.block, g.co.pending[1], g.sigma
        yield "end", x, sigma, books.nfe, classifier_evals
    finally:  # also when the consumer abandons the stream: no worker thread outlives it
        for g in groups.values():
            g.co.close()


def _prepare(model, classifier, n_blocks, cfg, chains, chain_ids, seed, state, device, dtype, denoiser):
    check_int("n_blocks", n_blocks, 1)
    ids = rng.resolve_chain_ids(chains, chain_ids, device)
    counting = model if isinstance(model, CountingDenoiser) else CountingDenoiser(model, ids.shape[0], ids.device)
    if state is None:
        state = dlg_init(counting, classifier, cfg, ids, seed, dtype)
    elif state.x.shape[0] != ids.shape[0]:
        raise ValueError(f"state holds {state.x.shape[0]} chains, chain_ids has {ids.shape[0]}")
    return counting, ids, state, denoiser or counting.model


@torch.no_grad()
def stream_dlg(model, classifier, n_blocks: int, cfg: DLGConfig, *, chains: int | None = None, chain_ids=None,
               seed: int = 0, state: DLGState | None = None, device="cpu", dtype=torch.float32,
               batch_size: int | None = None, n_jobs: int | None = None, denoiser=None,
               backend=None) -> Iterator[Chunk]:
    """Pipelined DLG that yields denoised samples as soon as they are ready, in sample-id order:
    sample `b * C + i` is chain i's block b (the order of `run_dlg(...).samples.reshape(-1, ...)`).

    Arguments as `run_dlg`, plus `batch_size` (rows per network call; default: enough that no chain
    waits), `n_jobs` (denoising job slots), `denoiser` (what runs the packed batch, e.g. a
    `GraphedDenoiser` of the raw model; default the raw model) and `backend` of the bookkeeping.
    """
    run = _run(model, classifier, n_blocks, cfg, chains, chain_ids, seed, state, device, dtype, batch_size, n_jobs,
               denoiser, backend, stream=True)
    with closing(run):  # an abandoned stream ends its worker threads now, not at garbage collection
        for ev in run:
            if isinstance(ev, Chunk):
                yield ev


@torch.no_grad()
def run_dlg_pipelined(model, classifier, n_blocks: int, cfg: DLGConfig, *, chains: int | None = None,
                      chain_ids=None, seed: int = 0, state: DLGState | None = None, device="cpu",
                      dtype=torch.float32, batch_size: int | None = None, n_jobs: int | None = None,
                      denoiser=None, backend=None) -> DLGResult:
    """`run_dlg` with pipelined batches (same arguments and result, no `callback`; see `stream_dlg`
    for the extras)."""
    *_, result = _run(model, classifier, n_blocks, cfg, chains, chain_ids, seed, state, device, dtype, batch_size,
                      n_jobs, denoiser, backend, stream=False)
    return result


def _run(model, classifier, n_blocks, cfg, chains, chain_ids, seed, state, device, dtype, batch_size, n_jobs,
         denoiser, backend, stream: bool):
    if cfg.restart_every:  # its chains never restart: it would give other samples than run_dlg, silently
        raise ValueError(f"restart_every={cfg.restart_every} is not supported by the pipelined runner "
                         "(run_dlg, which every door uses, supports it); use restart_every=0 here")
    for name, v in (("batch_size", batch_size), ("n_jobs", n_jobs)):
        if v is not None:
            check_int(name, v, 1)
    counting, ids, state, net = _prepare(model, classifier, n_blocks, cfg, chains, chain_ids, seed, state, device,
                                         dtype, denoiser)
    C = ids.shape[0]
    shape = tuple(state.x.shape[1:])
    samples = torch.empty(n_blocks, C, *shape, device=ids.device, dtype=state.x.dtype)
    block_sigma = torch.empty(n_blocks, C, device=ids.device, dtype=state.sigma.dtype)
    order = InOrder(n_blocks * C, shape, device=ids.device, dtype=state.x.dtype, backend=backend) if stream else None
    events = _events(counting, classifier, n_blocks, cfg, ids, seed, state, batch_size, n_jobs, net, backend)
    with closing(events):  # closed, and its worker threads ended, also when this generator is abandoned
        for ev in events:
            if ev[0] == "samples":
                _, idx, b, xb, sb = ev
                rows = idx.to(ids.device)
                samples[b, rows], block_sigma[b, rows] = xb, sb
                if order is not None:
                    chunk = order.add(b * C + idx, xb)
                    if chunk is not None:
                        yield chunk
            else:
                _, x, sigma, nfe, cevals = ev
    counting.nfe += nfe.to(counting.nfe.device)
    new = replace(state, x=x, sigma=sigma, step=Counters(state.step, cfg.n_skip, cfg.den_steps()).after(n_blocks),
                  blocks=state.blocks + n_blocks, nfe=state.nfe + nfe.to(state.nfe.device),
                  classifier_evals=state.classifier_evals + cevals.to(state.nfe.device))
    yield DLGResult(samples, block_sigma, new)
