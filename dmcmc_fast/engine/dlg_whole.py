"""DLG's blocks as one CUDA graph: a call of rounds (n_skip Langevin-Gibbs steps with the classifier and the
block minimum, then the denoising integrator, per block) captured whole, the chains' state resident in the
graph's buffers (`graph.GraphedStep`).

`engine.whole_run` captures a batch sampler's batch; a DLG chain group instead runs round after round on its
own state, so what the graph keeps is that state: x, sigma, the RNG counter (a per-chain device counter, so the
same graph draws every round's fresh noise) and the NFE books of `mcmc.dlg.DLGState`. A replay reads them,
runs `mcmc.dlg.run_dlg` on them and writes the new state back in place, with each block's denoised sample,
its sigma and the range of the samples and the state (the NaN/Inf check) into output buffers. Between two
replays of a group nothing moves: a round costs one replay and three reads (samples, sigmas, check).

One graph per (chain group, rounds per call), made on the second call of that kind (the first runs eagerly,
the network graphed: it warms everything up), as `engine.whole_run` does. Not captured, with the reason:
restarts (`restart_every`: a restart's initialisation changes the call's shape), an adaptive denoiser (its
NFE differs per block) and a run whose rows are charged different NFE. What the host needs of a round is
known without a read: every block of a fixed-cost denoiser costs the same NFE (counted at capture) and
n_skip classifier evaluations, and the initialisation's NFE each block carries is the group's, read once.
A NaN/Inf after a replay cannot be replayed step by step (the state moved on in place): the error says so
and how to locate it (`graph="off"`).
"""
from __future__ import annotations

import numpy as np
import torch

from dmcmc_fast.engine.graph import GraphedStep
from dmcmc_fast.engine.whole_run import SEEN, new_tally, not_captured, tables_read_by_address, warn_not_captured
from dmcmc_fast.mcmc.dlg import DLGState, run_dlg
from dmcmc_fast.models import kwargs as kw
from dmcmc_fast.models.base import ChainDiverged, CountingDenoiser

STATE = ("x", "sigma", "nfe", "nfe_init", "classifier_evals", "classifier_evals_init", "nfe_last_init",
         "classifier_evals_last_init")


class CapturedBlocks:
    """`n_rounds` blocks of one chain group (its `DLGRun`'s classifier, options and seed) as one graph.

    `load(state)` puts a host-side `DLGState` into the buffers (only when it is not already theirs);
    `__call__(state)` replays and returns (samples [n_rounds, B, ...] and block sigmas [n_rounds, B] on the host,
    the new state, whose tensors are the buffers)."""

    def __init__(self, dlg, network, n_rounds: int, ids: torch.Tensor, state: DLGState, model_kwargs):
        self.dlg, self.n_rounds = dlg, n_rounds
        B, device = ids.shape[0], ids.device
        buf = {k: getattr(state, k).clone() for k in STATE}
        buf["ids"] = ids.clone()
        buf["step"] = torch.full((B,), state.step, dtype=torch.int64, device=device)
        shape = tuple(state.x.shape[1:])
        buf["samples"] = state.x.new_zeros((n_rounds, B, *shape))
        buf["block_sigma"] = state.sigma.new_zeros((n_rounds, B))
        buf["range"] = torch.zeros(2, dtype=torch.float32, device=device)
        counters = []

        def blocks(b):  # reads and writes the buffers only: the chains' state advances in place
            counting = CountingDenoiser(network, B, device, model_kwargs=model_kwargs, per_call_checks=False)
            counters.append(counting)
            now = DLGState(step=b["step"], blocks=state.blocks, **{k: b[k] for k in STATE})
            res = run_dlg(counting, dlg.classifier, n_rounds, dlg.cfg, chain_ids=b["ids"], seed=dlg.seed, state=now,
                          device=device)
            for k in STATE:
                b[k].copy_(getattr(res.state, k))
            b["step"].copy_(res.state.step)
            b["samples"].copy_(res.samples)
            b["block_sigma"].copy_(res.block_sigma)
            amax = torch.stack((res.samples.abs().amax(), res.state.x.abs().amax()))  # NaN and Inf propagate
            b["range"].copy_(amax.to(torch.float32))

        self.step = GraphedStep(blocks, buf, mode="graph", warmup=1)
        if self.step.graph is None:
            raise RuntimeError(self.step.fallback_reason)
        self.tables = tables_read_by_address()
        spent = counters[-1]._even_count()
        if spent is None or spent % n_rounds:
            raise ValueError(f"dlg blocks of {dlg.cfg.integrator} are charged different NFE")
        self.buf, self.nfe_block = buf, spent // n_rounds
        self.stride = dlg.cfg.counters(0).stride
        self.init_nfe = state.nfe_last_init.cpu().numpy()  # the initialisation each block carries (no restarts)
        self.init_evals = state.classifier_evals_last_init.cpu().numpy()

    def owns(self, state: DLGState) -> bool:
        return state.x is self.buf["x"]

    def load(self, state: DLGState):
        """Copy `state` into the buffers unless they hold it already (a group switching graphs: its first call
        of another rounds-per-call)."""
        if self.owns(state):
            return
        for k in STATE:
            self.buf[k].copy_(getattr(state, k))
        self.buf["step"].fill_(state.step)

    def __call__(self, state: DLGState) -> tuple[torch.Tensor, np.ndarray, DLGState]:
        self.load(state)
        self.step()
        samples, sigma = self.buf["samples"].float().cpu(), self.buf["block_sigma"].cpu()
        top = self.buf["range"].tolist()
        if not all(np.isfinite(top)):
            raise ChainDiverged("a DLG chain's state or sample became NaN/Inf inside a captured block (the state "
                                "moved on in place, so the first bad model call cannot be located here; rerun "
                                "with graph='off' to locate it)", "dlg", self.dlg.advice)
        new = DLGState(step=state.step + self.n_rounds * self.stride, blocks=state.blocks + self.n_rounds,
                       **{k: self.buf[k] for k in STATE})
        return samples, sigma.float().numpy(), new


class DLGGraphs:
    """The captured blocks of one `DLGRun`, by (chain group, rows, rounds per call): a `CapturedBlocks`, `SEEN`,
    or the reason it is not captured; `tally` is the run's account (`engine.whole_run.new_tally`). `run` answers
    None where the eager path runs instead."""

    def __init__(self, dlg, network):
        self.dlg, self.network = dlg, network
        self.entries: dict = {}
        self.tally = new_tally()
        self.reason = self._reason_not()  # the run's options decide it once for every group
        if self.reason is not None:
            warn_not_captured(self.reason)

    def describe(self) -> dict:
        """This run's captured blocks, their replays, and why any ran step by step."""
        return dict(self.tally, captured=sum(isinstance(v, CapturedBlocks) for v in self.entries.values()))

    def _reason_not(self) -> str | None:
        cfg = self.dlg.cfg
        if cfg.restart_every:
            return "dlg: restart_every re-initialises chains inside a call (its own shape)"
        if not self.dlg.fixed_cost:
            return f"dlg: the denoiser {cfg.integrator} is adaptive (its NFE differs per block)"
        return None

    def run(self, g0: int, hi: int, n_rounds: int, state: DLGState):
        """(samples [n_rounds, B, ...], block sigmas [n_rounds, B] numpy, new state, NFE per block, classifier
        evaluations per block, the initialisation's NFE and evaluations per chain) or None (eager)."""
        if self.reason is not None:
            return not_captured(self.tally, self.reason)
        key = (g0, hi, n_rounds)
        entry = self.entries.get(key)
        if entry is None:
            self.entries[key] = SEEN
            return None
        if entry == SEEN:
            ids = torch.arange(g0, hi, device=self.dlg.device)
            mk = self.dlg.model_kwargs
            rows = kw.rows(mk, g0, hi, self.dlg.device) if mk else None
            try:
                entry = self.entries[key] = CapturedBlocks(self.dlg, self.network, n_rounds, ids, state, rows)
            except Exception as err:  # capture can fail in many ways: eager, say why
                entry = self.entries[key] = f"dlg: capture failed ({type(err).__name__}: {err})"
                warn_not_captured(entry)
        if isinstance(entry, str):
            return not_captured(self.tally, entry)
        samples, sigma, new = entry(state)
        self.tally["replays"] += 1
        return samples, sigma, new, entry.nfe_block, self.dlg.cfg.n_skip, entry.init_nfe, entry.init_evals
