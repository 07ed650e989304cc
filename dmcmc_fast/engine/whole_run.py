"""A whole batch of a fixed-step sampler as one CUDA graph, replayed for the later batches of its kind.

Capturing the network alone (`graph.GraphedDenoiser`) leaves every update, copy and noise draw of a step an
eager launch: 4 per NFE for Heun, 8 for DPM-Solver++(2M) (bench/RESULTS.md, "Launches per NFE"). A fixed-step
sampler's loop reads nothing back to the host and has fixed shapes (`engine.audit`, tests/test_sync_audit.py),
so a whole batch — the prior draw, the grid, every model call and update, the final-state check — is one
graph, and a batch costs one replay plus the copies of its inputs.

What varies between batches lives in static buffers, copied in before each replay: the chain ids (each batch
draws its own chains' noise: the Philox counters are per chain), `x_T`, the grid `sigmas` and the rows of
`model_kwargs`. What the graph bakes in is its key (`batch_key`): the sampler and its options, `nfe`, `seed`
(the Philox key is a kernel argument), the batch size, the device, and which inputs are given with their
shapes. The network's weights are read by address: the graphs belong to the network's `GraphedDenoiser`
(`graph.graphed_for_sampling`), which is dropped when the weights move.

When: the first batch of a key runs as before (eagerly, the network graphed): that warms up the kernels and
fills the sampler's shared tables (`integrators.common.shared_rows`); the second batch of that key captures
(one warm-up run on a side stream, then the capture, then a replay), and every later batch replays. A key seen
once costs nothing more than before, so a one-off call never pays for a capture. Not captured, with the reason
logged once: adaptive solvers (`SamplerSpec.fixed_steps`), a user callback (host code after every step), a run
whose samples are charged different NFE. A NaN/Inf after a replay runs the batch again eagerly, whose per-call
checks name the first bad call (`models.base.run_located`).
"""
from __future__ import annotations

import dataclasses
import logging

import torch

from dmcmc_fast import schedules
from dmcmc_fast.engine.graph import capture_graph
from dmcmc_fast.integrators import common
from dmcmc_fast.models import kwargs as kw
from dmcmc_fast.models.base import CountingDenoiser, NonFiniteFinalState

log = logging.getLogger("dmcmc_fast.engine")

SEEN = "seen once"  # a key's first batch ran eagerly; its next one captures


class NotCapturable(Exception):
    """Why a batch cannot be one graph (kept as its key's entry, logged once)."""


class OverBudget(RuntimeError):
    """A sampler spent more NFE than its budget (`samplers.run_sampler`'s error): a bug, never a fallback."""


def batch_key(spec, opts: dict, nfe: int, seed: int, req) -> tuple | None:
    """What a captured batch bakes in (module docstring); None when an option is unhashable (no capture)."""
    try:
        options = tuple(sorted(opts.items()))
        hash(options)
    except TypeError:
        return None
    mk = req.model.model_kwargs
    return (spec.name, options, nfe, seed, req.batch, str(req.device),
            None if req.x_T is None else (tuple(req.x_T.shape), req.x_T.dtype),
            None if req.sigmas is None else tuple(req.sigmas.shape),
            kw.signature(mk, req.batch) if mk else None)


def tables_read_by_address() -> list:
    """The shared read-only tables a captured graph may read by address (grids and coefficients,
    `integrators.common.shared_rows`; ramps and scalars, `schedules`): a graph holds them, so that a cache
    evicting one can never free memory the graph still reads."""
    return list(common._SHARED.values()) + schedules.kept_tensors()


class CapturedBatch:
    """One batch of a sampler captured whole: static inputs (chain ids, x_T, sigmas, model_kwargs rows), the
    graph, its output `x`, its deferred checks (read after every replay) and the NFE each sample spends."""

    def __init__(self, spec, req, network, device: torch.device):
        self.chain_ids = req.chain_ids.clone()
        self.x_T = None if req.x_T is None else req.x_T.clone()
        self.sigmas = None if req.sigmas is None else req.sigmas.clone()
        given = req.model.model_kwargs
        self.kwargs = kw.tree_map(torch.clone, given) if given else None
        blame, batch = req.model._blame, req.batch

        def run():
            counting = CountingDenoiser(network, batch, device, model_kwargs=self.kwargs, per_call_checks=False)
            counting._blame = blame
            x = spec.resolve()(dataclasses.replace(req, model=counting, chain_ids=self.chain_ids, x_T=self.x_T,
                                                   sigmas=self.sigmas, callback=None))
            counting.check_final(x)
            return x, counting, counting.pending_checks()

        with torch.no_grad():
            self.graph, (self.x, counting, self.checks) = capture_graph(run, 1, device)
        spent = counting._even_count()
        if spent is None:
            raise NotCapturable("its samples are charged different NFE (model calls on row subsets)")
        if spent > req.nfe:
            raise OverBudget(f"sampler {spec.name} spent {spent} NFE per sample, over the budget --nfe {req.nfe}")
        self.nfe = spent
        self.tables = tables_read_by_address()

    def __call__(self, req) -> tuple[torch.Tensor, torch.Tensor]:
        """(samples, NFE per sample) of batch `req`: its inputs copied in, one replay, the checks read once."""
        self.chain_ids.copy_(req.chain_ids)
        if self.x_T is not None:
            self.x_T.copy_(req.x_T)
        if self.sigmas is not None:
            self.sigmas.copy_(req.sigmas)
        if self.kwargs is not None:
            for (_, buf), (_, t) in zip(kw.leaves(self.kwargs), kw.leaves(req.model.model_kwargs)):
                if torch.is_tensor(t):
                    buf.copy_(t)
        self.graph.replay()
        self.checks.raise_if_failed()
        return self.x.clone(), torch.full((req.batch,), self.nfe, dtype=torch.int64)


class WholeRunGraphs:
    """The captured batches of one network on one device, by `batch_key`: a `CapturedBatch`, `SEEN`, or the
    reason the key is not captured (a string). Owned by the network's `GraphedDenoiser` (`runs`); what one run
    got from it is that run's `tally` (`new_tally`, `SampleOutput.graph["whole_runs"]`)."""

    def __init__(self):
        self.entries: dict = {}

    @property
    def captured(self) -> int:
        return sum(isinstance(v, CapturedBatch) for v in self.entries.values())

    def run(self, spec, opts: dict, nfe: int, seed: int, req, network, tally: dict) -> tuple | None:
        """Batch `req` through its captured graph: (samples on the host, NFE per sample); None where it runs
        eagerly instead (its key's first batch, not capturable, or a NaN/Inf to locate). `tally` counts this
        run's replays and the reasons its batches were not captured."""
        if req.callback is not None:
            return not_captured(tally, f"{spec.name}: a callback runs on the host after every step")
        if not spec.fixed_steps or spec.kind != "batch":
            return not_captured(tally, f"{spec.name}: an adaptive solver (its step control reads the state)")
        key = batch_key(spec, opts, nfe, seed, req)
        entry = self.entries.get(key) if key is not None else f"{spec.name}: an option is not hashable"
        if entry is None:
            self.entries[key] = SEEN
            return None
        if entry == SEEN:
            try:
                entry = self.entries[key] = CapturedBatch(spec, req, network, req.device)
            except NotCapturable as why:
                entry = self.entries[key] = f"{spec.name}: {why}"
            except OverBudget:
                raise
            except Exception as err:  # capture of an arbitrary model can fail in many ways: eager, say why
                entry = self.entries[key] = f"{spec.name}: capture failed ({type(err).__name__}: {err})"
            if isinstance(entry, str):
                warn_not_captured(entry)
        if isinstance(entry, str):
            return not_captured(tally, entry)
        try:
            x, counts = entry(req)
        except NonFiniteFinalState:
            return None  # the eager run with per-call checks names where it happened
        tally["replays"] += 1
        return x, counts


def new_tally(captured: int = 0) -> dict:
    """What one run got from the whole-batch graphs: replays, and why batches ran step by step."""
    return {"replays": 0, "not_captured": [], "captured": captured}


def not_captured(tally: dict, reason: str):
    """`reason` in the run's tally (once); None, the answer of a batch that runs step by step."""
    if reason not in tally["not_captured"]:
        tally["not_captured"].append(reason)
    return None


def warn_not_captured(reason: str):
    """The log line of a kind of batch (or DLG's blocks) that will not be captured whole, once per kind."""
    log.warning("whole CUDA graph not used: %s; the network alone runs as a graph", reason)
