"""DLG through the library's doors (`api.sample`/`stream`, the façade, the CLI, torchrun, resume).

A DLG chain yields one sample per block, at n_skip + n_den NFE, after an initialisation it pays once.
So `num` samples come from `chains` = C chains: sample i is block i // C of chain i % C, and `nfe` is
the block's budget (n_den = nfe - n_skip unless given). Chain c yields n_c = ceil((num - c) / C)
samples, and each is charged its block's own NFE plus the initialisation's NFE / n_c (likewise the
classifier evaluations): that amortised sum is the sample's `nfe`. With restart_every = R the chain
re-initialises at its blocks R, 2R, ...: each initialisation serves the R blocks from it (fewer at the
chain's end, `blocks_served`) and is charged to them alone, so a chain's charges still add up to all it spent.

The chains run in groups of `batch_size` consecutive ids that advance one block per round: round b of
group [g0, g1) gives samples b*C + g0 .. b*C + g1 - 1, a contiguous range, so batches come out in
sample order. A group smaller than `batch_size` (few chains) runs several of its rounds per call, up to
batch_size rows: streamed (`api.stream`), 1, 2, 4, ... rounds, so the first samples come at once and the
per-call setup fades; for `api.sample`, which returns them all together, as many as fit from the first
call (`first_soon=False`). Each round is still its own batch (and shard). A chain's samples depend only on (seed, chain id), never on C
or the batch size. Under torchrun, rank r runs the groups j with j % world_size == r. With `parts_dir`,
every batch is a shard (`part_START_STOP.npz`, with the per-sample books) and after each round the
group's chain state (x, sigma, RNG counter, NFE books) is saved (`dlg_chains_G0_G1.pt`), so a killed run
continues its chains where they were: no sample lost, duplicated or changed.

Conditioning (`model_kwargs`) is per chain, since a chain is one trajectory: every tensor has a leading
`[chains]` dimension and row c goes to every network call of chain c (initialisation, Langevin steps,
denoising), so sample i sees row i % C. (With chains = num each chain yields one sample and this is
the batch samplers' "sample i sees row i".) Other values pass as they are. The noise-level classifier is
unconditional: it sees x only.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from dmcmc_fast import shards
from dmcmc_fast.engine.dlg_whole import DLGGraphs
from dmcmc_fast.engine.graph import GraphedDenoiser
from dmcmc_fast.mcmc.dlg import DLGConfig, DLGState, dlg_init, n_skip_for_budget, run_dlg
from dmcmc_fast.mcmc.dlg_watch import MixingWatch, labeller
from dmcmc_fast.mcmc.entry import make_classifier
from dmcmc_fast.models import kwargs as kw
from dmcmc_fast.models.base import CountingDenoiser, run_located
from dmcmc_fast.samplers import get_sampler, json_object

DEFAULT_CHAINS = 256  # chains when `chains` is 0: min(num, 256)


def resolve(opts: dict, num: int, nfe: int) -> tuple[DLGConfig, int]:
    """(DLGConfig, number of chains) from the registry's options; budgets checked here, before any work."""
    chains = opts["chains"] or min(num, DEFAULT_CHAINS)
    if chains > num:
        raise ValueError(f"dlg: chains must be in [1, num={num}] (each chain yields at least one sample), "
                         f"got chains={chains}")
    n_skip = opts["n_skip"] or n_skip_for_budget(nfe)
    n_den = opts["n_den"] or nfe - n_skip
    if n_den < 1:
        raise ValueError(f"dlg: nfe (NFE per sample: n_skip + n_den) must be at least n_skip + 1 = {n_skip + 1}, "
                         f"got nfe={nfe}")
    if n_skip + n_den > nfe:
        raise ValueError(f"dlg: n_skip + n_den = {n_skip} + {n_den} = {n_skip + n_den} exceeds nfe={nfe} (the NFE "
                         "per sample); raise nfe or lower n_den (0: nfe - n_skip)")
    cfg = DLGConfig(eta=opts["eta"], n_skip=n_skip, n_den=n_den, integrator=opts["integrator"],
                    integrator_options=json_object(opts["integrator_options"], "integrator_options"),
                    sigma_min=opts["sigma_min"], sigma_max=opts["sigma_max"], gibbs=opts["gibbs"],
                    init_integrator=opts["init_integrator"],
                    init_integrator_options=(json_object(opts["init_integrator_options"], "init_integrator_options")
                                             if opts["init_integrator_options"] else None),
                    init_nfe=opts["init_nfe"], init_noise=opts["init_noise"], n_init=opts["n_init"],
                    eta_scaling=opts["eta_scaling"], gibbs_temperature=opts["gibbs_temperature"],
                    level_prior_power=opts["level_prior_power"], restart_every=opts["restart_every"])
    return cfg, chains


def chain_kwargs(model_kwargs, chains: int, num: int) -> dict:
    """`model_kwargs` checked for DLG: a dict whose tensors have a leading `[chains]` dimension (row c
    conditions chain c); {} for None."""
    def hint(shape):
        return (f"; one row per sample ([num={num}]) needs chains={num}, one sample per chain"
                if shape and shape[0] == num else "")
    return kw.check(model_kwargs, chains, dim="chains", prefix="dlg: ", hint=hint,
                    rows_are=f": row c conditions chain c, whose samples are c, c + {chains}, c + {2 * chains}, ... "
                             "(sample i is block i // C of chain i % C);")


def blocks_of_chain(chain: torch.Tensor, num: int, chains: int) -> torch.Tensor:
    """n_c = ceil((num - c) / C): the samples chain c yields."""
    return (num - 1 - chain) // chains + 1


def blocks_served(block, n_c: torch.Tensor, restart_every: int) -> torch.Tensor:
    """The blocks that the initialisation serving block `block` (an int, or a column of them: one row each)
    serves, of chains with n_c blocks: all n_c without restarts, else the R = restart_every blocks from the
    latest restart (fewer at the chain's end)."""
    if not restart_every:
        return n_c
    first = block - block % restart_every
    return torch.clamp(n_c - first, max=restart_every)


@dataclass
class Batch:
    """Samples `start .. stop-1` of one round of one chain group, with their books (CPU)."""
    start: int
    stop: int
    samples: torch.Tensor
    meta: dict  # name -> [stop - start] array: nfe (amortised), nfe_block, nfe_init_share, classifier_evals,
    #             chain, block, sigma


class DLGRun:
    """One process's share of a DLG run: options resolved and the classifier loaded when built (so bad
    input fails before any work); `batches(net)` yields `Batch`es in sample order."""

    def __init__(self, model, opts: dict, num: int, nfe: int, seed: int, batch_size: int, device,
                 rank: int = 0, world_size: int = 1, model_kwargs: dict | None = None):
        self.cfg, self.chains = resolve(opts, num, nfe)
        self.model_kwargs = chain_kwargs(model_kwargs, self.chains, num)  # row c: chain c (module docstring)
        self.classifier = make_classifier(model, opts["classifier"], opts["n_levels"], opts["sigma_min"],
                                          opts["sigma_max"], device, bool(opts.get("allow_weak_classifier")))
        top = float(self.classifier.levels.max())
        self.watch = MixingWatch(top, *labeller(model), self.cfg.eta, self.cfg.init_nfe)  # `_seen`, end of `batches`
        self.num, self.nfe, self.seed, self.device = num, nfe, seed, device
        self.advice = get_sampler("dlg").divergence_advice(opts, nfe)  # what a diverged chain's error names
        self.net, self.parts_dir, self.first_soon = None, None, True
        self.graphs = None  # on CUDA: the captured blocks of this run (`engine.dlg_whole`), made by `batches`
        # chains per group: at most batch_size, and few enough that every rank gets a group when it can
        self.group_size = min(batch_size, -(-self.chains // world_size))
        groups = [(g0, min(self.chains, g0 + self.group_size)) for g0 in range(0, self.chains, self.group_size)]
        self.groups = [g for j, g in enumerate(groups) if j % world_size == rank]
        self.rounds = (num - 1) // self.chains + 1
        self.batch_size = batch_size
        # a denoiser of fixed cost gives every block the same NFE, so several rounds can run in one call
        self.fixed_cost = "sigmas" in get_sampler(self.cfg.integrator).takes

    def size(self) -> int:
        """Samples this process yields."""
        return sum(int((blocks_of_chain(torch.arange(g0, g1), self.num, self.chains)).sum()) for g0, g1 in self.groups)

    def batches(self, net, parts_dir: str | None = None, first_soon: bool = True,
                whole: bool = True) -> Iterator[Batch]:
        """Runs the network `net` (the model, or its graphed wrapper); with `parts_dir`, shards and chain
        states are written there and read back on resume; `first_soon`: a group's first calls run 1, 2, 4, ...
        rounds (else as many as fit at once: module docstring); `whole`: where `net` is a CUDA graph, capture the
        blocks whole (`engine.dlg_whole`), else the network alone."""
        self.net, self.parts_dir, self.first_soon = net, parts_dir, first_soon
        captured = whole and isinstance(net, GraphedDenoiser) and net.whole_runs() is not None  # a CUDA graph
        self.graphs = DLGGraphs(self, net.model) if captured else None
        states: dict[int, DLGState] = {}
        ahead: dict[tuple[int, int], Batch] = {}  # (g0, round) -> a batch computed in an earlier call
        calls: dict[int, int] = {}  # calls per group so far: the rounds per call double (`_rounds_per_call`)
        for b in range(self.rounds):
            for g0, g1 in self.groups:
                hi = min(g1, self.num - b * self.chains)  # chains g0..hi-1 have a block b
                if hi <= g0:
                    continue
                if (g0, b) in ahead:  # computed (and written) with an earlier round of this group
                    yield self._seen(ahead.pop((g0, b)))
                    continue
                start, stop = b * self.chains + g0, b * self.chains + hi
                if g0 not in states:
                    states[g0] = self._initial_state(g0, g1)
                shard = shards.shard_path(self.parts_dir, start, stop) if self.parts_dir else None
                if shard and os.path.exists(shard) and states[g0].blocks > b:  # done before the run was resumed
                    x, meta = shards.load_shard(shard)
                    yield self._seen(Batch(start, stop, x, meta))
                    continue
                if states[g0].blocks != b:
                    raise RuntimeError(f"{self._state_path(g0, g1)} holds chains {g0}..{g1 - 1} after "
                                       f"{states[g0].blocks} blocks, but the shard of block {b} is missing")
                n_rounds = self._rounds_per_call(b, g0, g1, hi, calls.get(g0, 0))
                calls[g0] = calls.get(g0, 0) + 1
                done, states[g0] = self._blocks(b, n_rounds, g0, hi, states[g0])
                if self.parts_dir:
                    for batch in done:
                        shards.save_npz_atomic(shards.shard_path(self.parts_dir, batch.start, batch.stop),
                                               samples=batch.samples.numpy(), **batch.meta)
                    if hi == g1:  # after a partial last round nothing follows
                        self._save_state(g0, g1, states[g0])
                ahead.update({(g0, b + r): batch for r, batch in enumerate(done[1:], 1)})
                yield self._seen(done[0])
        self.watch.warn()  # one line if the chains did not mix (`mcmc.dlg_watch`)

    def _seen(self, batch: Batch) -> Batch:
        self.watch.add(batch.samples, batch.meta["chain"], batch.meta["block"], batch.meta["sigma"])
        return batch

    def _rounds_per_call(self, b: int, g0: int, g1: int, hi: int, calls: int) -> int:
        """How many rounds of group [g0, g1) from round b one `run_dlg` call runs: 1, 2, 4, ... with `first_soon`
        (so the first samples come at once and the per-call setup fades), at most batch_size // group rows in
        all, only whole rounds, and 1 for an adaptive denoiser (whose NFE differs per block)."""
        if hi < g1 or not self.fixed_cost:
            return 1
        whole = (self.num - g1) // self.chains - b + 1  # rounds b, b+1, ... in which every chain has a block
        fit = self.batch_size // (g1 - g0)
        return max(1, min(2 ** calls if self.first_soon else fit, fit, whole))

    def _initial_state(self, g0: int, g1: int) -> DLGState:
        path = self._state_path(g0, g1)
        if path and os.path.exists(path):
            return DLGState.load(path, self.device)
        ids = torch.arange(g0, g1, device=self.device)
        state = self._located(g0, g1, lambda counting: dlg_init(counting, self.classifier, self.cfg, ids, self.seed),
                              lambda st: st.x)
        if path:
            self._save_state(g0, g1, state)
        return state

    def _blocks(self, b: int, n_rounds: int, g0: int, hi: int, state: DLGState) -> tuple[list[Batch], DLGState]:
        """Blocks b .. b + n_rounds - 1 of chains g0..hi-1 (the first hi - g0 rows of the group's state), in one
        call (on CUDA a captured graph from the second call of its kind on, `engine.dlg_whole`): one Batch per round."""
        part = state.rows(0, hi - g0) if hi - g0 < state.x.shape[0] else state
        whole = self.graphs.run(g0, hi, n_rounds, part) if self.graphs is not None else None
        if whole is not None:
            samples, sigma, new, nfe_block, evals_block, init_nfe, init_evals = whole
            nfe_block = np.full(hi - g0, nfe_block, dtype=np.int64)
            evals_block = np.full(hi - g0, float(evals_block))
            init_nfe, init_evals = np.broadcast_to(init_nfe, (n_rounds, hi - g0)), \
                np.broadcast_to(init_evals, (n_rounds, hi - g0))
        else:
            samples, sigma, new, nfe_block, evals_block, init_nfe, init_evals = \
                self._blocks_eager(n_rounds, g0, hi, part)
        chain = torch.arange(g0, hi)
        n_c = blocks_of_chain(chain, self.num, self.chains)
        # the books of every round at once ([n_rounds, chains]; each Batch gets its row): each block carries
        # the share of the initialisation that serves it
        served = blocks_served(torch.arange(b, b + n_rounds)[:, None], n_c, self.cfg.restart_every).double().numpy()
        share, cls_share = init_nfe / served, init_evals / served
        books = {"nfe": nfe_block + share, "nfe_block": np.broadcast_to(nfe_block, share.shape).copy(),
                 "nfe_init_share": share, "classifier_evals": evals_block + cls_share,
                 "chain": np.broadcast_to(chain.numpy(), share.shape).copy(),
                 "block": np.broadcast_to(np.arange(b, b + n_rounds)[:, None], share.shape).copy(),
                 "sigma": sigma}
        out = [Batch((b + r) * self.chains + g0, (b + r) * self.chains + hi, samples[r],
                     {k: v[r] for k, v in books.items()}) for r in range(n_rounds)]
        return out, new

    def _blocks_eager(self, n_rounds: int, g0: int, hi: int, part: DLGState):
        """`run_dlg` step by step: (samples, block sigmas, new state, NFE and classifier evaluations per block per
        chain, the initialisation's NFE and evaluations that serve each block)."""
        ids = torch.arange(g0, hi, device=self.device)
        res = self._located(g0, hi, lambda counting: run_dlg(counting, self.classifier, n_rounds, self.cfg,
                                                            chain_ids=ids, seed=self.seed, state=part,
                                                            device=self.device),
                            lambda r: torch.stack((r.samples.abs().amax(), r.state.x.abs().amax())))  # NaN stays
        new = res.state
        # the blocks' own cost: what the call spent less its restarts (counted with the initialisation)
        restarts = (new.nfe_init - part.nfe_init).cpu()
        restart_evals = (new.classifier_evals_init - (0 if part.classifier_evals_init is None
                                                       else part.classifier_evals_init)).cpu()
        spent = (new.nfe - part.nfe).cpu() - restarts
        evals = (new.classifier_evals - part.classifier_evals).cpu() - restart_evals
        if bool((spent % n_rounds).any()) or bool((evals % n_rounds).any()):
            raise RuntimeError(f"dlg blocks of {self.cfg.integrator} cost different NFE: {spent.tolist()} over "
                               f"{n_rounds} blocks")
        nfe_block, evals_block = spent // n_rounds, (evals // n_rounds).double()  # every block costs the same
        if int(nfe_block.max()) > self.nfe:
            raise RuntimeError(f"dlg spent {int(nfe_block.max())} NFE in a block, over nfe={self.nfe}")
        return (res.samples.float().cpu(), res.block_sigma.float().cpu().numpy(), new, nfe_block.numpy(),
                evals_block.numpy(), res.block_init_nfe.cpu().double().numpy(),
                res.block_init_evals.cpu().double().numpy())

    def _located(self, c0: int, c1: int, run, final):
        """`run(counting)` for chains c0..c1-1 (the initialisation or a block) on a counter that only counts;
        NaN/Inf in its `final(result)` state replays it, deterministic from the same state and counters, with
        per-call checks to name the first bad call (`models.base.run_located`)."""
        def checked(counting, replay: bool):  # no callback here: a replay runs the same
            out = run(counting)
            counting.check_final(final(out))
            counting.raise_if_nonfinite()
            return out
        return run_located(checked, self._counting(c0, c1))

    def _counting(self, c0: int, c1: int) -> CountingDenoiser:
        """The network for chains c0..c1-1, counted (no per-call checks: `_located`), with their rows of
        `model_kwargs`."""
        mk = kw.rows(self.model_kwargs, c0, c1, self.device) if self.model_kwargs else None
        counting = CountingDenoiser(self.net, c1 - c0, self.device, model_kwargs=mk, per_call_checks=False)
        counting.blame("dlg", self.advice)
        return counting

    def _state_path(self, g0: int, g1: int) -> str | None:
        return os.path.join(self.parts_dir, f"dlg_chains_{g0:09d}_{g1:09d}.pt") if self.parts_dir else None

    def _save_state(self, g0: int, g1: int, state: DLGState):
        path = self._state_path(g0, g1)
        state.save(path + ".tmp")
        os.replace(path + ".tmp", path)
