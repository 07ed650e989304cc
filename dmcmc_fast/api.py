"""The Python façade: `sample(...)` runs any registered sampler on any model, in batches, with
per-chain RNG (sample i is chain i, whatever the batch size), NFE counted per sample, a progress bar,
and — given `out_dir` — every finished batch saved at once as a shard, so an interrupted run
resumes (`resume=True`) without losing or recomputing finished samples.

DLG (a "blocks" sampler) yields one sample per block of each chain: sample i is block i // C of chain
i % C for C = `chains`, and each sample's `nfe` is its block's NFE plus its share of its chain's
initialisation (`engine/dlg_run.py`); `SampleOutput.meta` holds the per-sample books.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from dmcmc_fast import shards
from dmcmc_fast.engine.graph import graph_mode, graphed_for_sampling
from dmcmc_fast.models.base import CountingDenoiser, model_device, same_device
from dmcmc_fast.samplers import SampleRequest, get_sampler, run_sampler


@dataclass
class SampleOutput:
    samples: torch.Tensor  # [N, *shape], float32, data range of the model
    nfe: torch.Tensor  # [N] int64; float64 for DLG (amortised: block NFE + initialisation share)
    config: dict
    graph: dict = field(default_factory=dict)  # how the network ran: mode, captured buckets, fallback reason
    meta: dict = field(default_factory=dict)  # DLG: per-sample arrays chain, block, sigma, nfe_block, ...


def _check_int(name, v, lo, hi=None):
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < lo or (hi is not None and v > hi):
        raise ValueError(f"{name} must be an integer in [{lo}, {hi if hi is not None else 'inf'}], got {v!r}")


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
           graph: str = "auto", **options) -> SampleOutput:
    """Draw `num` samples with `sampler` spending at most `nfe` model evaluations per sample.

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
    it = stream(model, sampler, num, nfe, seed=seed, batch_size=batch_size, device=device, out_dir=out_dir,
                resume=resume, progress=progress, config=config, rank=rank, world_size=world_size, graph=graph,
                **options)
    batches = list(it)
    meta = {k: np.concatenate([b.meta[k] for b in batches]) for k in (batches[0].meta if batches else {})}
    if not batches:  # a torchrun rank with no work
        return SampleOutput(torch.zeros(0), torch.zeros(0, dtype=torch.int64), it.config, it.graph, meta)
    return SampleOutput(torch.cat([b.samples for b in batches]), torch.cat([b.nfe for b in batches]), it.config,
                        it.graph, meta)


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
           graph: str = "auto", **options) -> _Stream:
    """`sample`, as an iterator of `SampleBatch`es in chain order, each yielded as soon as it is done
    (and, with `out_dir`, after its shard is on disk): for pipelines that want the first samples early.
    Arguments are checked before the first batch is drawn."""
    spec = get_sampler(sampler)
    opts = spec.validate(options)
    _check_int("num", num, 1)
    _check_int("nfe", nfe, 1, 100_000)
    _check_int("seed", seed, 0, 2**63 - 1)
    _check_int("batch_size", batch_size, 1)
    _check_int("world_size", world_size, 1)
    _check_int("rank", rank, 0, world_size - 1)
    device = sampling_device(model, device)
    graph_mode(graph, device)  # checks `graph` before any work
    if isinstance(model, torch.nn.Module):
        model.eval()
    blocks = None
    if spec.kind == "blocks":  # DLG: options resolved (chains, n_den) and its classifier loaded before any file
        blocks = spec.resolve()(model, opts, num, nfe, seed, batch_size, device, rank, world_size)
        batch_size = blocks.group_size
        opts = dict(opts, chains=blocks.chains, n_den=blocks.cfg.n_den)
    cfg = dict(config or {}, sampler=sampler, num=num, nfe=nfe, seed=seed, options=opts)
    if blocks is not None:  # a chain group's saved state is keyed by its chain range
        cfg["batch_size"] = batch_size

    parts_dir = None
    if out_dir is not None:
        _check_resumable(out_dir, cfg, resume, rank)
        if world_size > 1:  # every rank has checked out_dir before any rank writes a shard
            from dmcmc_fast.distributed import barrier
            barrier()
        parts_dir = os.path.join(out_dir, "parts")

    batch_size = min(batch_size, -(-num // world_size))  # under torchrun every rank gets work if there is any
    mine = [start for j, start in enumerate(range(0, num, batch_size)) if j % world_size == rank]
    net, graphed = graphed_for_sampling(model, graph, device, min(batch_size, num))
    graph_info = {"mode": "eager", "captured": [], "fallback_reason": None}

    def chain_batches():  # one sample per chain: batch j holds chains start..stop-1
        for start in mine:
            stop = min(num, start + batch_size)
            shard = shards.shard_path(parts_dir, start, stop) if parts_dir else None
            if shard and os.path.exists(shard):
                x, meta = shards.load_shard(shard)
                yield SampleBatch(start, stop, x, torch.from_numpy(meta["nfe"]))
                continue
            chain_ids = torch.arange(start, stop, dtype=torch.int64, device=device)
            counting = CountingDenoiser(net, stop - start, device)
            req = SampleRequest(counting, chain_ids, seed, nfe, opts, device, extra={"base_model": model})
            x, n = run_sampler(req, spec).float().cpu(), counting.nfe.cpu()
            if shard:
                shards.save_npz_atomic(shard, samples=x.numpy(), nfe=n.numpy())
            yield SampleBatch(start, stop, x, n)

    def block_batches():  # DLG: one batch per round of blocks of a chain group
        for bt in blocks.batches(net, parts_dir):
            meta = {k: v for k, v in bt.meta.items() if k != "nfe"}
            yield SampleBatch(bt.start, bt.stop, bt.samples, torch.from_numpy(bt.meta["nfe"]), meta)

    def batches():
        total = blocks.size() if blocks is not None else sum(min(num, s + batch_size) - s for s in mine)
        bar = tqdm(total=total, desc=f"{sampler}" + (f" [rank {rank}]" if world_size > 1 else ""),
                   unit="sample", disable=not progress)
        for batch in (block_batches() if blocks is not None else chain_batches()):
            if graphed is not None:
                graph_info.update(graphed.describe())
            bar.set_postfix(nfe=f"{batch.nfe.double().mean().item():.1f}")
            bar.update(batch.stop - batch.start)
            yield batch
        bar.close()

    return _Stream(batches(), cfg, graph_info)


def sampling_device(model, device) -> torch.device:
    """The device to sample on: `device` if given, else where the model's weights are, else the CPU.
    Nothing is moved: a network whose weights live elsewhere than `device` is an error naming both."""
    where = model_device(model)
    if device is None:
        return where if where is not None else torch.device("cpu")
    device = torch.device(device)
    if where is not None and not same_device(where, device):
        raise ValueError(f"device={str(device)!r}, but the model's weights are on {str(where)!r}: move the model "
                         f"first (model.to({str(device)!r})) or sample where it is (device={str(where)!r})")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r}, but no CUDA device is available here; use device='cpu'")
    return device


def _check_resumable(out_dir: str, cfg: dict, resume: bool, rank: int):
    """Refuse to mix runs: an existing `out_dir` needs `resume=True` and the same configuration.
    (batch_size is not part of a run's identity: samples depend on (seed, chain id) only.)"""
    parts_dir = os.path.join(out_dir, "parts")
    cfg_path = os.path.join(out_dir, "config.json")
    os.makedirs(parts_dir, exist_ok=True)
    if os.path.exists(cfg_path) and resume:
        with open(cfg_path) as f:
            old = json.load(f)
        new = json.loads(json.dumps(cfg))
        if old != new:
            diff = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(_differences(old, new).items()))
            raise ValueError(f"--resume: {cfg_path} was written by a different run configuration ({diff}); "
                             "use a new --out directory or the same options")
    elif os.listdir(parts_dir) and not resume:
        raise FileExistsError(f"{out_dir} holds samples of an earlier run; pass --resume to continue it "
                              "or choose another --out")
    if rank == 0:
        with open(cfg_path + ".tmp", "w") as f:
            json.dump(cfg, f, indent=2)
        os.replace(cfg_path + ".tmp", cfg_path)


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
                           config=np.array(json.dumps(out.config)), **out.meta)
    if grid and out.samples.ndim == 4:
        from dmcmc_fast.images import save_grid

        save_grid(out.samples[:256], os.path.join(out_dir, "grid.png"), data_range)
    return path


def load_samples(path: str, with_meta: bool = False):
    """(samples, nfe, config) of a samples.npz; with `with_meta`, also its per-sample books (DLG)."""
    with np.load(path) as z:
        samples, nfe = torch.from_numpy(z["samples"]), torch.from_numpy(z["nfe"])
        config = json.loads(str(z["config"])) if "config" in z else {}
        meta = {k: z[k] for k in z.files if k not in ("samples", "nfe", "config")}
    return (samples, nfe, config, meta) if with_meta else (samples, nfe, config)
