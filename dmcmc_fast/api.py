"""The sampling API (the classes of `facade.py` call it): `sample(...)` runs any registered sampler on
any model, in batches, with per-chain RNG (sample i is chain i, whatever the batch size), NFE counted per
sample, a progress bar, and — given `out_dir` — every finished batch saved at once as a shard, so an
interrupted run resumes (`resume=True`) without losing or recomputing finished samples.

DLG (a "blocks" sampler) yields one sample per block of each chain: sample i is block i // C of chain
i % C for C = `chains`, and each sample's `nfe` is its block's NFE plus its share of its chain's
initialisation (`engine/dlg_run.py`); `SampleOutput.meta` holds the per-sample books.

Your own model and inputs (every "batch" sampler; DLG takes `model_kwargs` only, per chain):
- `model_kwargs`: extra network inputs (class labels, text embeddings) as a dict whose tensors have a
  leading `[num]` dimension; sample i always sees row i (any batch size, torchrun, resume): each batch
  gets its rows, each model call the rows it evaluates. Other values pass as they are. DLG conditions
  chains, not samples: its tensors have a leading `[chains]` dimension, row c for chain c, so sample i
  (block i // C of chain i % C) sees row i % C (`engine/dlg_run.py`); its classifier is unconditional.
- `callback(info)`: after every step, the sampler's dict (`i`, `x`, `sigma`, `denoised`, ...) plus
  `ids`, the batch's sample ids (a CPU int64 tensor).
- `sigmas`: your own grid for the integrators that step on one (not rk45 / dpm_adaptive): `[N]` for all
  samples or `[num, N]`, decreasing, > 0, with or without k-diffusion's trailing 0; it must fit `nfe`.
- `x_T`: your own start `[num, *shape]` (the state at sigma_max, or at `sigmas[:, 0]`, e.g.
  `sigma_max * z`), sliced per batch like `model_kwargs`.
- The integrators' `sigma_min`/`sigma_max` default to the model's own range (`model.sigma_min`,
  `model.sigma_max`); for a network (a model with weights) that range is also a bound (`resolve_options`).
- A bf16/fp16 network samples from a float32 state: it is called in its own dtype (`in_network_dtype`).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from dmcmc_fast import caches, shards
from dmcmc_fast.files import check_out_dir
from dmcmc_fast.engine.graph import graph_mode, graphed_for_sampling
from dmcmc_fast.models import kwargs as kw
from dmcmc_fast.models.base import CountingDenoiser, model_device, run_located, same_device
from dmcmc_fast.samplers import SampleRequest, SamplerSpec, all_samplers, get_sampler, run_sampler
from dmcmc_fast.validate import check_int, distinct, inside_range


@dataclass
class SampleOutput:
    samples: torch.Tensor  # [N, *shape], float32, data range of the model
    nfe: torch.Tensor  # [N] int64; float64 for DLG (amortised: block NFE + initialisation share)
    config: dict
    graph: dict = field(default_factory=dict)  # how the network ran: mode, captured buckets, fallback reason
    meta: dict = field(default_factory=dict)  # DLG: per-sample arrays chain, block, sigma, nfe_block, ...


@dataclass
class SampleBatch:
    """One finished batch: samples `start .. stop-1` (chain ids), as `stream` yields them."""
    start: int
    stop: int
    samples: torch.Tensor  # [stop - start, *shape], float32 on the CPU
    nfe: torch.Tensor  # [stop - start] int64 (DLG: float64, amortised)
    meta: dict = field(default_factory=dict)  # DLG: per-sample numpy arrays (see SampleOutput.meta)


def sample(model, sampler: str, num: int, nfe: int, seed: int = 0, batch_size: int = 256,
           device: str | torch.device | None = None, out_dir: str | None = None, resume: bool = False,
           progress: bool = True, config: dict | None = None, rank: int = 0, world_size: int = 1,
           graph: str = "auto", model_kwargs: dict | None = None, callback=None, sigmas=None, x_T=None,
           _resolved: dict | None = None, **options) -> SampleOutput:
    """Draw `num` samples with `sampler` spending at most `nfe` model evaluations per sample.

    `model_kwargs`, `callback`, `sigmas`, `x_T`: your own conditioning, per-step callback, grid and start
    (module docstring). `progress`: a bar in NFE, moved by every model call (DLG: per finished batch).
    `out_dir`: every batch saved as a shard (resumable), and at the end `samples.npz` and `grid.png` as the CLI
    writes them (`save_samples`; under torchrun the CLI's rank 0 writes them after `merge_shards`).
    A diffusers model's default grid is its scheduler's own (`dmcmc_fast.own_grid`).

    `device`: where to sample, default where the model's weights are (the CPU for analytic models); a
    network on another device is an error, never moved behind the caller's back.
    `graph` (auto | on | off): on a CUDA device the network runs as CUDA graphs captured once per batch
    size (`engine.graph.GraphedDenoiser`; samples equal eager ones); "auto" does so on CUDA and calls the
    model plainly elsewhere, "off" never. A capture that fails falls back to eager with a logged warning
    naming the reason; `SampleOutput.graph` says what ran.

    With `world_size > 1` (torchrun), this process draws the batches `j` with `j % world_size == rank`
    and returns only those; sample `i` is chain `i` on every rank, so the union over ranks equals a
    one-process run with the same seed (`merge_shards` rebuilds it from `out_dir`).
    """
    run = _Run.from_arguments(model, sampler, num, nfe, seed=seed, batch_size=batch_size, device=device,
                              out_dir=out_dir, resume=resume, config=config, rank=rank, world_size=world_size,
                              graph=graph, model_kwargs=model_kwargs, callback=callback, sigmas=sigmas, x_T=x_T,
                              _resolved=_resolved, **options)
    if out_dir is None and not progress and run.blocks is None:  # nothing to save or show: the batches in turn
        return run.collect()
    out = _output(list(run.batches(progress, first_soon=False)), run)  # DLG: as many rounds per call as fit
    if out_dir is not None and world_size == 1:  # what the CLI writes: samples.npz and grid.png beside the shards
        save_samples(out, out_dir, getattr(model, "data_range", (-1.0, 1.0)))
    return out


def _output(batches: list, run: "_Run") -> SampleOutput:
    """The batches of `run` joined (in order) into its `SampleOutput` (with its own copy of the configuration: a
    caller's edit never reaches a run drawn again)."""
    meta = {k: np.concatenate([b.meta[k] for b in batches]) for k in (batches[0].meta if batches else {})}
    cfg = dict(run.cfg, options=dict(run.cfg["options"]))
    if not batches:  # a torchrun rank with no work
        return SampleOutput(torch.zeros(0), torch.zeros(0, dtype=torch.int64), cfg, run.graph_info, meta)
    if len(batches) == 1:  # nothing to join (no copy)
        return SampleOutput(batches[0].samples, batches[0].nfe, cfg, run.graph_info, meta)
    return SampleOutput(torch.cat([b.samples for b in batches]), torch.cat([b.nfe for b in batches]), cfg,
                        run.graph_info, meta)


class _Stream:
    """The generator behind `stream`, with the run's resolved configuration as `.config` and how the
    network runs as `.graph` (filled as batches are drawn)."""

    def __init__(self, gen, config, graph: dict):
        self._gen, self.config, self.graph = gen, config, graph

    def __iter__(self):
        return self._gen


def stream(model, sampler: str, num: int, nfe: int, seed: int = 0, batch_size: int = 256,
           device: str | torch.device | None = None, out_dir: str | None = None, resume: bool = False,
           progress: bool = True, config: dict | None = None, rank: int = 0, world_size: int = 1,
           graph: str = "auto", model_kwargs: dict | None = None, callback=None, sigmas=None, x_T=None,
           _resolved: dict | None = None, **options) -> _Stream:
    """`sample`, as an iterator of `SampleBatch`es in chain order, each yielded as soon as it is done
    (and, with `out_dir`, after its shard is on disk): for pipelines that want the first samples early.
    Arguments are checked before the first batch is drawn; a run that fails before its first shard removes
    what it created under `out_dir` (config.json, empty folders; one process only). `_resolved`: the
    façade's options, resolved and checked against this model and `nfe` when it was built (used as they
    are unless a grid `sigmas` resolves them anew)."""
    run = _Run.from_arguments(model, sampler, num, nfe, seed=seed, batch_size=batch_size, device=device,
                              out_dir=out_dir, resume=resume, config=config, rank=rank, world_size=world_size,
                              graph=graph, model_kwargs=model_kwargs, callback=callback, sigmas=sigmas, x_T=x_T,
                              _resolved=_resolved, **options)
    return _Stream(run.batches(progress), run.cfg, run.graph_info)


@dataclass(frozen=True)
class RunSpec:
    """What one run of `sample` / `stream` (or a façade's kept run) is asked for, as given: the arguments of
    `sample` less `progress`, its own inputs (`model_kwargs`, `callback`, `sigmas`, `x_T`), the sampler's
    `options` and, from a façade, those options already resolved (`resolved`). `_Run` checks it, all of it,
    before any work or file."""
    model: object
    sampler: str
    num: int
    nfe: int
    seed: int = 0
    batch_size: int = 256
    device: str | torch.device | None = None
    out_dir: str | None = None
    resume: bool = False
    config: dict | None = None
    rank: int = 0
    world_size: int = 1
    graph: str = "auto"
    model_kwargs: dict | None = None
    callback: object = None
    sigmas: object = None
    x_T: torch.Tensor | None = None
    options: dict = field(default_factory=dict)
    resolved: dict | None = None

    def inputs(self) -> dict:
        return dict(model_kwargs=self.model_kwargs, callback=self.callback, sigmas=self.sigmas, x_T=self.x_T)


class _Run:
    """One run of `sample` / `stream`, its `RunSpec` checked (all of it, before any work or file): the
    resolved configuration `cfg`, the batches this process draws (`mine`, their first chains), how the
    network runs (`net`, `graph_info`), and the batches themselves: `chain_batch(start)` one at a time,
    `batches(progress)` as `stream` yields them (shards saved and resumed, a bar)."""

    @classmethod
    def from_arguments(cls, model, sampler: str, num: int, nfe: int, *, seed: int = 0, batch_size: int = 256,
                       device=None, out_dir: str | None = None, resume: bool = False, config: dict | None = None,
                       rank: int = 0, world_size: int = 1, graph: str = "auto", model_kwargs: dict | None = None,
                       callback=None, sigmas=None, x_T=None, _resolved: dict | None = None, **options) -> "_Run":
        """The run `sample(model, sampler, num, nfe, ...)` draws, from its keyword arguments (`progress` aside): a
        model's own default grid where it has one (`own_grid`), then `RunSpec` checked."""
        sigmas = _default_grid(model, sampler, nfe, options, sigmas)
        return cls(RunSpec(model, sampler, num, nfe, seed=seed, batch_size=batch_size, device=device,
                           out_dir=out_dir, resume=resume, config=config, rank=rank, world_size=world_size,
                           graph=graph, model_kwargs=model_kwargs, callback=callback, sigmas=sigmas, x_T=x_T,
                           options=options, resolved=_resolved))

    def __init__(self, run_spec: RunSpec):
        self.run_spec = r = run_spec
        model, sampler, num, nfe, seed, batch_size = r.model, r.sampler, r.num, r.nfe, r.seed, r.batch_size
        device, out_dir, config, rank, world_size, graph = r.device, r.out_dir, r.config, r.rank, r.world_size, r.graph
        spec = get_sampler(sampler)
        check_int("num", num, 1)
        check_model(model)
        inputs = _check_inputs(spec, model, num, **r.inputs())
        check_int("nfe", nfe, 1, 100_000)
        if r.resolved is not None and "sigmas" not in inputs:
            opts = r.resolved
        else:
            opts = _checked_options(model, spec, r.options, nfe, inputs.get("sigmas"))
        check_int("seed", seed, 0, 2**63 - 1)
        check_int("batch_size", batch_size, 1)
        check_int("world_size", world_size, 1)
        check_int("rank", rank, 0, world_size - 1)
        if "sigmas" in inputs:
            _check_grid_budget(sampler, nfe, opts, inputs["sigmas"].shape[-1])
        device = sampling_device(model, device)
        graph_mode(graph, device)  # checks `graph` before any work
        if isinstance(model, torch.nn.Module):
            model.eval()
        self.blocks = None
        if spec.kind == "blocks":  # DLG: options resolved (chains, n_den) and its classifier loaded before any file
            self.blocks = spec.resolve()(model, opts, num, nfe, seed, batch_size, device, rank, world_size,
                                         model_kwargs=inputs.get("model_kwargs"))  # per chain: checked there
            batch_size = self.blocks.group_size
            opts = dict(opts, chains=self.blocks.chains, n_skip=self.blocks.cfg.n_skip, n_den=self.blocks.cfg.n_den)
        cfg = dict(config or {}, sampler=sampler, num=num, nfe=nfe, seed=seed, options=opts)
        if self.blocks is not None:  # a chain group's saved state is keyed by its chain range
            cfg["batch_size"] = batch_size
        fingerprints = {k: _fingerprint(v) for k, v in inputs.items() if k != "callback"}
        if fingerprints:  # a resumed run must be given the same inputs
            cfg["inputs"] = fingerprints

        self.parts_dir, self.created = None, []
        if out_dir is not None:
            self.created = _check_resumable(out_dir, cfg, r.resume, rank)
            if world_size > 1:  # every rank has checked out_dir before any rank writes a shard
                from dmcmc_fast.distributed import barrier
                barrier()
                self.created = []  # the ranks share out_dir: none of them removes it
            self.parts_dir = os.path.join(out_dir, "parts")

        batch_size = min(batch_size, -(-num // world_size))  # under torchrun every rank gets work if there is any
        self.mine = range(rank * batch_size, num, world_size * batch_size)  # batches j = rank, rank + world, ...
        self.spec, self.model, self.inputs, self.opts, self.cfg = spec, model, inputs, opts, cfg
        self.num, self.nfe, self.seed, self.batch_size, self.device = num, nfe, seed, batch_size, device
        self.graph, self.label = graph, f"{sampler}" + (f" [rank {rank}]" if world_size > 1 else "")
        self._chain_ids: dict[int, torch.Tensor] = {}  # batch start -> its chain ids (`request`)
        self.start(fetch=True)

    def mine_samples(self) -> int:
        """How many samples this process draws: its batches are full but the run's last one."""
        if not self.mine:
            return 0
        return (len(self.mine) - 1) * self.batch_size + min(self.num, self.mine[-1] + self.batch_size) - self.mine[-1]

    def start(self, fetch: bool):
        """Before the run draws: with `fetch`, the network through its graph wrapper (captured anew if its tensors
        moved); a fresh account of how it ran (`graph_info`)."""
        if fetch:
            self.net, self.graphed = graphed_for_sampling(self.model, self.graph, self.device,
                                                          min(self.batch_size, self.num))
        self.graph_info = {"mode": "eager", "captured": [], "fallback_reason": None}

    def again(self) -> "_Run":
        """This run, checked once, to draw again (a façade keeps its call's run, `facade.Sampler.sample`): the
        network back in eval mode, then `start`, which fetches a graph wrapper anew (captured again if the
        network's tensors moved); a plain eager call keeps its network, the same object."""
        if isinstance(self.model, torch.nn.Module):
            self.model.eval()
        self.start(fetch=self.graphed is not None)
        return self

    def collect(self) -> SampleOutput:
        """The run in memory, its batches in turn (no shards, no bar): one `SampleOutput`."""
        batches = []
        for start in self.mine:
            batches.append(self.chain_batch(start))
        self.note_graph()
        return _output(batches, self)

    def request(self, start: int, stop: int, on_call=None) -> SampleRequest:
        """Batch start..stop-1: its chains, its rows of the inputs, a counter that calls `on_call` (the bar)."""
        device, inputs = self.device, self.inputs
        chain_ids = self._chain_ids.get(start)  # read only for every sampler: kept for a run drawn again
        if chain_ids is None:
            chain_ids = self._chain_ids[start] = torch.arange(start, stop, dtype=torch.int64, device=device)
        mk = inputs.get("model_kwargs")
        counting = CountingDenoiser(self.net, stop - start, device, model_kwargs=kw.rows(mk, start, stop, device)
                                    if mk else None, on_call=on_call, per_call_checks=False)
        cb, callback = None, inputs.get("callback")
        if callback is not None:
            ids = torch.arange(start, stop, dtype=torch.int64)

            def cb(info):
                callback({**info, "ids": ids})
        grid = inputs.get("sigmas")
        if grid is not None:
            grid = (grid[start:stop] if grid.ndim == 2 else grid.expand(stop - start, -1)).to(device)
        x0 = inputs.get("x_T")
        x0 = x0[start:stop].to(device, torch.float32) if x0 is not None else None
        return SampleRequest(counting, chain_ids, self.seed, self.nfe, self.opts, device, callback=cb,
                             extra={"base_model": self.model}, x_T=x0, sigmas=grid)

    def chain_batch(self, start: int, on_call=None) -> SampleBatch:
        """The batch of chains start.. (one sample per chain), drawn: on CUDA as one captured graph when a batch of
        its kind ran before (`engine.whole_run`), else step by step."""
        stop = min(self.num, start + self.batch_size)
        req = self.request(start, stop, on_call)
        whole = self.graphed.whole_runs() if self.graphed is not None and self.graph != "network" else None
        if whole is not None:
            from dmcmc_fast.engine.whole_run import new_tally

            tally = self.graph_info.setdefault("whole_runs", new_tally())
            done = whole.run(self.spec, self.opts, self.nfe, self.seed, req, self.graphed.model, tally)
            tally["captured"] = whole.captured
            if done is not None:
                return SampleBatch(start, stop, done[0].float().cpu(), done[1])
        x = run_located(functools.partial(run_sampler, req, self.spec), req.model)  # as `_run_located`
        return SampleBatch(start, stop, x.float().cpu(), req.model.nfe.cpu())

    def note_graph(self):
        """`graph_info` after a batch: how the network ran (captured buckets, a fallback's reason)."""
        if self.graphed is not None:
            self.graph_info.update(self.graphed.describe())
        if self.blocks is not None and self.blocks.graphs is not None:  # DLG's captured blocks (engine/dlg_whole.py)
            self.graph_info["whole_runs"] = self.blocks.graphs.describe()

    def batches(self, progress: bool, first_soon: bool = True):
        """The run's `SampleBatch`es in chain order, each after its shard is saved (a saved one is loaded), with
        a bar; a run that fails before its first shard removes what it created. `first_soon`: DLG's first
        calls run few rounds of blocks, so the first samples come early (`engine.dlg_run`)."""
        if not progress:
            bar = _Count()
        elif self.blocks is not None:
            bar = tqdm(total=self.blocks.size(), desc=self.label, unit="sample")
        else:  # in NFE (sample-evaluations), moved by every model call
            bar = tqdm(total=self.nfe * self.mine_samples(),
                       desc=self.label, unit="NFE", unit_scale=True)
        try:
            for batch in (self._block_batches(bar, first_soon) if self.blocks is not None
                          else self._chain_batches(bar, progress)):
                self.note_graph()
                yield batch
        except BaseException:  # a run that fails before its first shard leaves nothing it created
            _remove_created(self.created, self.parts_dir)
            bar.leave = False  # the bar's line is cleared: the error (or Ctrl-C's line) stands alone
            bar.close()
            raise
        bar.close()

    def _chain_batches(self, bar, progress: bool):  # one sample per chain: batch j holds chains start..stop-1
        done, total = 0, self.mine_samples()
        for start in self.mine:
            stop = min(self.num, start + self.batch_size)
            before = bar.n
            shard = shards.shard_path(self.parts_dir, start, stop) if self.parts_dir else None
            if shard and os.path.exists(shard):
                x, meta = shards.load_shard(shard)
                batch = SampleBatch(start, stop, x, torch.from_numpy(meta["nfe"]))
            else:
                batch = self.chain_batch(start, bar.update if progress else None)
                if shard:
                    shards.save_npz_atomic(shard, samples=batch.samples.numpy(), nfe=batch.nfe.numpy())
            bar.update(self.nfe * (stop - start) - (bar.n - before))  # the budget a batch did not spend
            done += stop - start
            if progress:
                bar.set_postfix(samples=f"{done}/{total}", nfe=f"{batch.nfe.double().mean().item():.1f}")
            yield batch

    def _block_batches(self, bar, first_soon: bool):  # DLG: one batch per round of blocks of a chain group
        for bt in self.blocks.batches(self.net, self.parts_dir, first_soon, whole=self.graph != "network"):
            meta = {k: v for k, v in bt.meta.items() if k != "nfe"}
            bar.update(bt.stop - bt.start)
            yield SampleBatch(bt.start, bt.stop, bt.samples, torch.from_numpy(bt.meta["nfe"]), meta)


def _default_grid(model, sampler: str, nfe, options: dict, sigmas):
    """`sigmas`, else the grid of a model that has its own (a diffusers scheduler's; `dmcmc_fast.own_grid`)."""
    from dmcmc_fast.own_grid import default_grid

    return default_grid(model, sampler, nfe, options, sigmas)


class _Count:
    """The progress bar's count without a bar (`progress=False`): what the loop reads of it, nothing drawn."""
    n = 0

    def update(self, k: int = 1):
        self.n += k

    def set_postfix(self, **_):
        pass

    def close(self):
        pass


def _run_located(req: SampleRequest, spec) -> torch.Tensor:
    """`run_sampler` on a counter without per-call checks; a NaN/Inf result replays the batch (same chains,
    same noise, no callback) on a checking counter, which names the first bad call (`models.base.run_located`)."""
    return run_located(functools.partial(run_sampler, req, spec), req.model)


_CHECKED: dict[tuple, dict] = caches.process_cache(
    "checked options", "`api._CHECKED`", "resolved options per (sampler, nfe, model range, network?, options) "
    "(`_checked_options`)", "nothing needed: a pure function of its key", capacity=64)


def _checked_options(model, spec: SamplerSpec, options: dict, nfe: int, sigmas: torch.Tensor | None = None) -> dict:
    """`resolve_options` and the NFE budget check (before any work or file), kept per (sampler, nfe, the model's
    declared range, whether it is a network, the options given): what they depend on, so a repeated `sample`
    call checks once. A copy each time (a caller may change its output's config); with a grid `sigmas`, or an
    unhashable option, they run every time."""
    key, opts = None, None
    if sigmas is None:
        given = tuple(sorted((k, v) for k, v in options.items() if v is not None))
        key = (spec.name, nfe, _model_range(model), model_device(model) is not None, given)
        try:
            opts = _CHECKED.get(key)
        except TypeError:  # an unhashable value: no key
            key = None
    if opts is None:
        opts = resolve_options(model, spec.name, options, sigmas)
        spec.check_budget(nfe, opts)  # NFE budget vs the options: before any work or file
        if key is not None:
            caches.keep(_CHECKED, key, opts, 64)
    return dict(opts)


def resolve_options(model, sampler: str, options: dict, sigmas: torch.Tensor | None = None) -> dict:
    """The sampler's options, checked (`SamplerSpec.validate`), with the model's own noise range where the
    sampler integrates over one (`SamplerSpec.model_range`: the integrators):

    - `sigma_min` / `sigma_max` not given default to `model.sigma_min` / `model.sigma_max`; with a grid
      `sigmas` they are its ends (and may not be given too, nor `rho`);
    - for a network (a model with weights: it learned its range only) they must lie in that range; an
      analytic model is exact at every sigma, so its range is a default only. An inverted pair is an
      error either way, naming where each value came from.
    """
    spec = get_sampler(sampler)
    options = {k: v for k, v in options.items() if v is not None}
    names = {o.name for o in spec.options}
    if not (spec.model_range and {"sigma_min", "sigma_max"} <= names):
        return spec.validate(options)
    source = {k: "given" for k in ("sigma_min", "sigma_max") if k in options}
    if sigmas is not None:
        clash = sorted(set(options) & {"sigma_min", "sigma_max", "rho"})
        if clash:
            raise ValueError(f"{sampler}: sigmas sets the noise levels; do not also pass {', '.join(clash)}")
        options.update(sigma_max=float(sigmas[..., 0].max()), sigma_min=float(sigmas[..., -1].min()))
        source = {"sigma_min": "the grid sigmas", "sigma_max": "the grid sigmas"}
    lo, hi = _model_range(model)
    for name, value in (("sigma_min", lo), ("sigma_max", hi)):
        if name not in options and value is not None:
            options[name] = value
            source[name] = f"the model's {name}"
    try:
        opts = spec.validate(options)
    except ValueError as err:
        if "sigma_min must be" in str(err) and any(v != "given" for v in source.values()):
            raise ValueError(f"{err} (sigma_min: {source.get('sigma_min', 'the default')}, sigma_max: "
                             f"{source.get('sigma_max', 'the default')})") from None
        raise
    if lo is not None and hi is not None and model_device(model) is not None:  # a network: its range bounds
        for name, bad, side in (("sigma_max", not inside_range(lo, opts["sigma_max"], lo, hi), "above"),
                                ("sigma_min", not inside_range(opts["sigma_min"], hi, lo, hi), "below")):
            if bad:  # up to validate.RANGE_RTOL; each figure with the digits that tell it from the range's end
                given, end = distinct(opts[name], lo if side == "below" else hi)
                span = f"[{end}, {distinct(hi, lo)[0]}]" if side == "below" else f"[{distinct(lo, hi)[0]}, {end}]"
                raise ValueError(f"{sampler}: {name}={given} ({source.get(name, 'the default')}) is "
                                 f"{side} the model's noise range {span} that the network was "
                                 f"trained; pass {name} within it (or set model.{name} if the network is valid "
                                 "beyond it)")
    return opts


def _model_range(model) -> tuple[float | None, float | None]:
    """(sigma_min, sigma_max) the model declares (None where it does not); a declared range must be
    0 < sigma_min < sigma_max < inf."""
    lo, hi = getattr(model, "sigma_min", None), getattr(model, "sigma_max", None)
    lo = float(lo) if isinstance(lo, (int, float, np.floating)) else None
    hi = float(hi) if isinstance(hi, (int, float, np.floating)) else None
    if lo is not None and hi is not None and not 0 < lo < hi < float("inf"):
        raise ValueError(f"the model declares the noise range sigma_min={lo}, sigma_max={hi}; it must satisfy "
                         "0 < sigma_min < sigma_max < inf")
    return lo, hi


def check_model(model):
    """A model is a callable denoiser `D(x, sigma)` with `shape`, the shape of one sample (a tuple of ints >= 1):
    the sampler draws its start noise in that shape."""
    if not callable(model):
        raise ValueError(f"model must be a callable denoiser D(x, sigma), got {type(model).__name__}")
    shape = getattr(model, "shape", None)
    ok = isinstance(shape, (tuple, list, torch.Size)) and len(shape) >= 1 and all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape)
    if not ok:
        got = "no attribute shape" if shape is None else f"shape={shape!r}"[:60]
        raise ValueError(f"model {type(model).__name__} must have `shape`, the shape of one sample as a tuple of "
                         f"ints >= 1 (e.g. model.shape = (1, 28, 28)); it has {got}")


def _takers(what: str) -> str:
    return ", ".join(sorted(n for n, sp in all_samplers().items() if what in sp.takes))


def _check_inputs(spec: SamplerSpec, model, num: int, model_kwargs, callback, sigmas, x_T) -> dict:
    """The given ones of model_kwargs, callback, sigmas and x_T, checked (once, on the host, before any
    work) and in the form the batches slice: model_kwargs as given, sigmas float64 `[N]` or `[num, N]`
    without a trailing 0, x_T as given."""
    given = {k: v for k, v in (("model_kwargs", model_kwargs), ("callback", callback), ("sigmas", sigmas),
                               ("x_T", x_T)) if v is not None}
    if spec.kind == "blocks":  # DLG: model_kwargs per chain (leading [chains], checked by its runner)
        for name in given:
            if name != "model_kwargs":
                raise ValueError(f"{name} is not supported for {spec.name} yet")
        return given
    for name in ("sigmas", "x_T"):
        if name in given and name not in spec.takes:
            raise ValueError(f"{spec.name} does not take {name}; the samplers that do: {_takers(name)}")
    if "model_kwargs" in given:
        given["model_kwargs"] = kw.check(model_kwargs, num)
    if "callback" in given and not callable(callback):
        raise ValueError(f"callback must be callable (called with a dict after every step), got "
                         f"{type(callback).__name__}")
    if "sigmas" in given:
        given["sigmas"] = _check_grid(sigmas, num)
    if "x_T" in given:
        shape = (num, *tuple(model.shape))
        if not torch.is_tensor(x_T) or tuple(x_T.shape) != shape or not x_T.is_floating_point():
            raise ValueError(f"x_T must be a floating tensor of shape {list(shape)} (num, *model.shape), got "
                             f"{tuple(x_T.shape) if torch.is_tensor(x_T) else type(x_T).__name__}")
        if not bool(torch.isfinite(x_T).all()):
            raise ValueError("x_T must be finite")
    return given


def _check_grid(sigmas, num: int) -> torch.Tensor:
    g = torch.as_tensor(sigmas).detach().to("cpu", torch.float64)
    if g.ndim not in (1, 2) or (g.ndim == 2 and g.shape[0] != num):
        raise ValueError(f"sigmas must be one grid [N] for all samples or one per sample [num={num}, N], got "
                         f"shape {tuple(g.shape)}")
    if g.shape[-1] > 1 and bool((g[..., -1] == 0).all()):
        g = g[..., :-1]  # k-diffusion's trailing 0: the final step to 0 is the sampler's (final_tweedie)
    if g.shape[-1] < 2:
        raise ValueError(f"sigmas must have at least 2 noise levels > 0, got {g.shape[-1]}")
    if not bool((torch.isfinite(g) & (g > 0)).all()) or not bool((g[..., 1:] < g[..., :-1]).all()):
        raise ValueError("sigmas must be finite, > 0 and strictly decreasing (a trailing 0 is allowed)")
    return g.contiguous()


def _check_grid_budget(sampler: str, nfe: int, opts: dict, points: int):
    from dmcmc_fast.integrators.entry import max_grid_points

    most = max_grid_points(sampler, nfe, opts)
    if points > most:
        raise ValueError(f"{sampler}: sigmas has {points} noise levels, which cost more than nfe={nfe}; "
                         f"at most {most} fit (or raise nfe)")


def _fingerprint(value) -> str:
    """A short hash of an input (tensors by dtype, shape and bytes; other values by repr): a resumed run's
    inputs must be the ones its shards were made with."""
    h = hashlib.sha256()
    for path, leaf in kw.leaves(value):
        h.update(path.encode())
        if torch.is_tensor(leaf):
            t = leaf.detach().to("cpu").contiguous().reshape(-1)
            h.update(f"{t.dtype}{tuple(leaf.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        else:
            h.update(repr(leaf).encode())
    return h.hexdigest()[:16]


def sampling_device(model, device) -> torch.device:
    """The device to sample on: `device` if given, else where the model's weights are, else the CPU.
    Nothing is moved: a network whose weights live elsewhere than `device` is an error naming both."""
    where = model_device(model)
    if device is None:
        return where if where is not None else torch.device("cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device must be a torch device such as 'cpu', 'cuda' or 'cuda:1', got {device!r}") from None
    if where is not None and not same_device(where, device):
        raise ValueError(f"device={str(device)!r}, but the model's weights are on {str(where)!r}: move the model "
                         f"first (model.to({str(device)!r})) or sample where it is (device={str(where)!r})")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be the CPU or a CUDA device ('cpu', 'cuda', 'cuda:1'), got {str(device)!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r}, but no CUDA device is available here; use device='cpu'")
    return device


def _check_resumable(out_dir: str, cfg: dict, resume: bool, rank: int) -> list[str]:
    """Refuse to mix runs: an existing `out_dir` needs `resume=True` and the same configuration.
    (batch_size is not part of a run's identity: samples depend on (seed, chain id) only.)
    -> the paths this call created (folders, config.json), for `_remove_created`."""
    check_out_dir(out_dir, "out_dir")
    parts_dir = os.path.join(out_dir, "parts")
    cfg_path = os.path.join(out_dir, "config.json")
    created = [d for d in (out_dir, parts_dir) if not os.path.isdir(d)]
    if os.path.exists(cfg_path) and resume:
        with open(cfg_path) as f:
            old = json.load(f)
        new = json.loads(json.dumps(cfg, default=_json_value))
        if old != new:
            diff = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(_differences(old, new).items()))
            raise ValueError(f"--resume: {cfg_path} was written by a different run configuration ({diff}); "
                             "use a new --out directory or the same options")
    elif os.path.isdir(parts_dir) and os.listdir(parts_dir) and not resume:
        raise FileExistsError(f"{out_dir} holds samples of an earlier run; pass --resume to continue it "
                              "or choose another --out")
    os.makedirs(parts_dir, exist_ok=True)  # after the checks: a refused run creates nothing
    if rank == 0:
        if not os.path.exists(cfg_path):
            created.append(cfg_path)
        with open(cfg_path + ".tmp", "w") as f:
            json.dump(cfg, f, indent=2, default=_json_value)
        os.replace(cfg_path + ".tmp", cfg_path)
    return created


def _json_value(value) -> str:
    """A configuration value JSON cannot hold (an object given as an option, e.g. DLG's classifier): its type."""
    return f"<{type(value).__module__}.{type(value).__qualname__} object>"


def _remove_created(created: list[str], parts_dir: str | None):
    """A run failed: while `parts_dir` holds no shard yet, remove what `_check_resumable` created (newest
    first; a folder only if empty). A resumed run's files, or any shard, are never touched."""
    if not created or (parts_dir and os.path.isdir(parts_dir) and os.listdir(parts_dir)):
        return
    for path in reversed(created):
        try:
            if os.path.isdir(path):
                os.rmdir(path)
            else:
                os.remove(path)
        except OSError:  # not empty (another writer), or gone
            pass


def _differences(old: dict, new: dict, prefix: str = "") -> dict:
    """{dotted key: (old value, new value)} of two JSON configurations."""
    out = {}
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out.update(_differences(a, b, f"{prefix}{k}."))
        elif a != b:
            out[prefix + k] = (a, b)
    return out


def merge_shards(out_dir: str, num: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """All shards of `out_dir/parts` in sample order: (samples, nfe, per-sample books); see `dmcmc_fast.shards`."""
    return shards.merge_shards(out_dir, num)


def save_samples(out: SampleOutput, out_dir: str, data_range=(-1.0, 1.0), grid: bool = True) -> str:
    """`out_dir/samples.npz` (samples, nfe, config JSON) and `out_dir/grid.png`."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "samples.npz")
    lo, hi = data_range
    shards.save_npz_atomic(path, samples=out.samples.clamp(lo, hi).numpy(), nfe=out.nfe.numpy(),
                           config=np.array(json.dumps(out.config, default=_json_value)), **out.meta)
    if grid and out.samples.ndim == 4:
        from dmcmc_fast.images import save_grid

        save_grid(out.samples[:256], os.path.join(out_dir, "grid.png"), data_range)
    return path


def load_samples(path: str, with_meta: bool = False):
    """(samples, nfe, config) of a samples.npz; with `with_meta`, also its per-sample books (DLG). A file that is
    not such an archive is one line naming it and what is wrong (`files.read_samples_npz`)."""
    from dmcmc_fast.files import read_samples_npz

    samples, nfe, config, meta = read_samples_npz(path)
    return (samples, nfe, config, meta) if with_meta else (samples, nfe, config)
