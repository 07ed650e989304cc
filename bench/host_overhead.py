"""Never slower than a plain loop: our integrator call and façade against the papers' loops, side by side.

    python -m bench.host_overhead                 # gmm-digits, heun/euler/karras_sde/deis, B = 1, 16, 256

On a small analytic model the network costs little, so what a sampler does besides calling it (building
its grid, per-step casts and checks, counting NFE, drawing noise) is what the time shows. Per cell
(sampler, B), in round-robin repetitions on one thread (medians):
  plain        the loop the paper's code writes (`bench.baselines`: NVlabs/edm `edm_sampler` for heun,
               euler and karras_sde, with its grid built per call and noise from `torch.randn_like`;
               tAB-DEIS with its coefficients computed once, as the DEIS code's `get_sampler` does),
               started from `sigma_max * torch.randn(B, ...)` drawn in the timed call
  integrator   `dmcmc_fast.integrators.sample_<name>(model, sigma_max * torch.randn(B, ...), sigma_max, N)`
  façade       `dmcmc_fast.<Class>(model, nfe=...).sample(B)` (built once; each call draws its own prior
               from the per-chain Philox streams, counts NFE and checks the samples, as users get it)
All three spend the same NFE (checked before timing); each round runs them in a shuffled order (`round_robin`).
Reported: each method's median time and the median over rounds of plain's time over the method's in the same
round (`paired_ratio`; >= 1: ours is at least as fast as the plain loop), and each method's fixed host work per
call: the cells at B = 1 on a model that costs nothing (`ZeroCostModel`). Output:
bench/results/host_overhead.{json,md}.
"""
from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time

import torch

import dmcmc_fast
from bench import baselines as bl
from bench import save_json_md
from dmcmc_fast.integrators import INTEGRATORS
from dmcmc_fast.mcmc.entry import make_classifier
from dmcmc_fast.models.builtin import load_model
from dmcmc_fast.samplers import get_sampler

HERE = os.path.dirname(os.path.abspath(__file__))
KINDS = tuple(bl.PLAIN)  # the samplers with a plain loop to compare against
METHODS = ("plain", "integrator", "façade")


def runs_for(model, kind: str, batch: int, nfe: int) -> dict:
    """The three timed callables of one cell, each returning (samples, NFE per sample)."""
    fn, steps_for_nfe = INTEGRATORS[kind]
    n = steps_for_nfe(nfe)
    s_min, s_max, shape = model.sigma_min, model.sigma_max, tuple(model.shape)
    counted = bl.CallCounter(model)
    plain = bl.PLAIN[kind]
    extra = (bl.deis_ve_coefficients(bl.edm_grid(n, s_min, s_max)),) if kind == "deis" else ()

    def run_plain():
        counted.reset()
        x = plain(counted, s_max * torch.randn(batch, *shape), bl.edm_grid(n, s_min, s_max), *extra)
        return x, counted.calls

    def run_integrator():
        res = fn(model, s_max * torch.randn(batch, *shape), s_max, n, sigma_min=s_min)
        return res.x, res.nfe

    facade = getattr(dmcmc_fast, get_sampler(kind).facade)(model, nfe=nfe, sigma_min=s_min, sigma_max=s_max)

    def run_facade():
        out = facade.sample(batch)
        return out.samples, out.nfe

    return {"plain": run_plain, "integrator": run_integrator, "façade": run_facade}


def round_robin(runs: dict, reps: int) -> dict:
    """Wall times of every callable of `runs`, `reps` rounds of one call each (load drifting on a shared machine
    hits every method alike), each round in its own shuffled order (seeded): a call runs in the caches and
    allocator state the call before it left, so a fixed order biases each method by its predecessor (two
    identical façade calls, one always after the integrator call, measured 4-6% apart at B = 1)."""
    times = {key: [] for key in runs}
    order, shuffle = list(runs), random.Random(0).shuffle
    for _ in range(reps):
        shuffle(order)
        for key in order:
            t0 = time.perf_counter()
            runs[key]()
            times[key].append(time.perf_counter() - t0)
    return times


def run_cell(model, kind: str, batch: int, nfe: int, reps: int) -> dict:
    runs = runs_for(model, kind, batch, nfe)
    with torch.no_grad():
        spent = {}
        for m, fn in runs.items():  # warm-up, and the NFE each method spends
            _, got = fn()
            spent[m] = int(got) if isinstance(got, int) else int(torch.as_tensor(got).max())
        if len(set(spent.values())) != 1:
            raise RuntimeError(f"{kind} B={batch}: the methods spent different NFE: {spent}")
        times = round_robin(runs, reps)
    med = {m: statistics.median(t) for m, t in times.items()}
    return {"kind": kind, "batch": batch, "nfe": spent["plain"], "median_s": med,
            "q10_s": {m: statistics.quantiles(t, n=10)[0] if len(t) > 1 else t[0] for m, t in times.items()},
            "plain_over": {m: paired_ratio(times["plain"], times[m]) for m in runs if m != "plain"},
            "plain_over_medians": {m: med["plain"] / med[m] for m in runs if m != "plain"}}


def paired_ratio(plain: list[float], ours: list[float]) -> float:
    """The median over rounds of plain's time over ours in the same round: paired, so a burst of load on the
    shared machine, which slows a round's calls alike, cancels (a ratio of medians keeps it when it hits the
    methods' calls unevenly)."""
    return statistics.median(p / o for p, o in zip(plain, ours))


class ZeroCostModel:
    """A denoiser that costs nothing (it returns its input) with `like`'s shape and noise range: with it, a
    call's time is all host work besides the model, the fixed cost a method adds to every call."""

    def __init__(self, like):
        self.shape, self.sigma_min, self.sigma_max = tuple(like.shape), like.sigma_min, like.sigma_max

    def __call__(self, x, sigma):
        return x


def fixed_cell(model, kind: str, nfe: int, reps: int) -> dict:
    """`run_cell` at batch 1 on `ZeroCostModel(model)`: each method's fixed host work per call."""
    return run_cell(ZeroCostModel(model), kind, 1, nfe, reps)


DLG_BLOCKS = (1, 9)  # blocks per chain of the two timed runs: their difference is the per-block time


def dlg_cell(model, batch: int, reps: int, nfe: int = 14, n_skip: int = 5) -> dict:
    """DLG's per-block host work: the façade `DLG(model, nfe, chains=B).sample(B * K)` (trained classifier,
    its defaults otherwise, default batch size) against `bench.baselines.plain_dlg_blocks`, the paper's
    loop, with the same classifier, eta, n_skip and Heun denoiser; each timed at K = 1 and 9 blocks per
    chain, per block = the difference / 8 (so the façade's initialisation, which the plain loop does not
    run, cancels)."""
    dlg = dmcmc_fast.DLG(model, nfe=nfe, chains=batch, classifier="trained", n_skip=n_skip)
    clf, cfg = make_classifier(model, "trained", 0, 0.0, 0.0, "cpu"), dlg.options
    heun_steps = INTEGRATORS["heun"][1](nfe - n_skip)
    counted = bl.CallCounter(model)
    x0 = cfg["sigma_max"] * torch.randn(batch, *model.shape)
    s0 = clf.levels[clf(x0).argmax(1)]

    def plain(k):
        return bl.plain_dlg_blocks(counted, clf, x0, s0, k, cfg["eta"], n_skip, heun_steps, cfg["sigma_min"])

    runs = {("plain", k): (lambda k=k: plain(k)) for k in DLG_BLOCKS}
    runs.update({("façade", k): (lambda k=k: dlg.sample(batch * k)) for k in DLG_BLOCKS})
    with torch.no_grad():
        counted.reset()
        plain(1)
        out = dlg.sample(batch)
        if counted.calls != int(out.meta["nfe_block"].max()):
            raise RuntimeError(f"dlg B={batch}: plain loop {counted.calls} NFE per block, ours "
                               f"{int(out.meta['nfe_block'].max())}")
        nfe_block = counted.calls
        times = round_robin(runs, reps)
    med = {key: statistics.median(t) for key, t in times.items()}
    (k1, k2), per_block, rounds = DLG_BLOCKS, {}, {}
    for m in ("plain", "façade"):
        per_block[m] = (med[(m, k2)] - med[(m, k1)]) / (k2 - k1)
        rounds[m] = [(a - b) / (k2 - k1) for a, b in zip(times[(m, k2)], times[(m, k1)])]  # per block, per round
    return {"kind": "dlg", "batch": batch, "nfe": nfe_block, "per_block_s": per_block,
            "plain_over": {"façade": paired_ratio(rounds["plain"], rounds["façade"])},
            "plain_over_medians": {"façade": per_block["plain"] / per_block["façade"]}}


def markdown(meta: dict, rows: list[dict], fixed: list[dict] = ()) -> str:
    lines = [f"\n## Host overhead: ours vs the plain loop — {meta['model']}, {meta['device']}, {meta['time']}\n",
             f"- command: `{meta['command']}`; {meta['versions']}; {meta['reps']} round-robin repetitions (each round in a "
             "shuffled order), "
             f"medians; load average at start / end {meta['load'][0]:.1f} / {meta['load'][1]:.1f}",
             "- cells: the median over rounds of plain's time over ours in the same round (paired; >= 1: ours is at "
             "least as fast as the plain loop; the target is >= 0.95); ms = median per call\n",
             "| sampler | B | NFE | plain ms | integrator ms | façade ms | plain/integrator | plain/façade | "
             "verdict |", "|---|---|---|---|---|---|---|---|---|"]
    dlg = [r for r in rows if r["kind"] == "dlg"]
    rows = [r for r in rows if r["kind"] != "dlg"]
    for r in rows:
        ms = {m: 1e3 * r["median_s"][m] for m in METHODS}
        worst = min(r["plain_over"].values())
        verdict = "ours as fast" if worst >= 0.95 else f"plain loop {1 / worst:.2f}x faster"
        lines.append(f"| {r['kind']} | {r['batch']} | {r['nfe']} | {ms['plain']:.3g} | {ms['integrator']:.3g} | "
                     f"{ms['façade']:.3g} | {r['plain_over']['integrator']:.2f} | {r['plain_over']['façade']:.2f} | "
                     f"{verdict} |")
    if dlg:
        lines += ["", "DLG, per block of every chain (NFE = n_skip 5 + Heun 9; B = chains; the façade's "
                  "initialisation cancels; 9 blocks per chain, see `dlg_cell`):", "",
                  "| sampler | B (chains) | NFE per block | plain ms/block | façade ms/block | plain/façade "
                  "| verdict |",
                  "|---|---|---|---|---|---|---|"]
        for r in dlg:
            ms, ratio = {m: 1e3 * v for m, v in r["per_block_s"].items()}, r["plain_over"]["façade"]
            verdict = "ours as fast" if ratio >= 0.95 else f"plain loop {1 / ratio:.2f}x faster"
            lines.append(f"| dlg | {r['batch']} | {r['nfe']} | {ms['plain']:.3g} | {ms['façade']:.3g} | {ratio:.2f} | "
                         f"{verdict} |")
    if fixed:
        lines += ["", "Fixed host work per call: the same cells at B = 1 on a zero-cost model (`ZeroCostModel`, it returns "
                  "its input), so the time is all the method's own work besides the model:", "",
                  "| sampler | NFE | plain us | integrator us | façade us | façade - plain us |", "|---|---|---|---|---|---|"]
        for r in fixed:
            us = {m: 1e6 * r["median_s"][m] for m in METHODS}
            lines.append(f"| {r['kind']} | {r['nfe']} | {us['plain']:.0f} | {us['integrator']:.0f} | {us['façade']:.0f} | "
                         f"{us['façade'] - us['plain']:+.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="gmm-digits")
    p.add_argument("--samplers", default="heun,euler,karras_sde,deis,dlg")
    p.add_argument("--batches", default="1,16,256")
    p.add_argument("--nfe", type=int, default=9)
    p.add_argument("--reps", type=int, default=31)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=os.path.join(HERE, "results", "host_overhead.json"))
    p.add_argument("--md", default=os.path.join(HERE, "results", "host_overhead.md"))
    a = p.parse_args(argv)
    kinds = [k for k in a.samplers.split(",") if k]
    bad = [k for k in kinds if k not in KINDS and k != "dlg"]
    if bad:
        p.error(f"--samplers must be among {', '.join(KINDS)}, dlg; got {', '.join(bad)}")
    torch.set_num_threads(a.threads)
    model = load_model(a.model)
    if isinstance(model, torch.nn.Module):
        model.eval()
    load0 = os.getloadavg()[0]
    rows = []
    for kind in kinds:
        for batch in [int(b) for b in a.batches.split(",")]:
            cell = dlg_cell(model, batch, a.reps) if kind == "dlg" else run_cell(model, kind, batch, a.nfe, a.reps)
            rows.append(cell)
            r = rows[-1]
            print(f"{kind:10s} B={batch:<4d} " + "  ".join(f"plain/{m} {v:.2f}" for m, v in r["plain_over"].items()),
                  flush=True)
    fixed = [fixed_cell(model, kind, a.nfe, a.reps) for kind in kinds if kind != "dlg"]
    meta = {"model": a.model, "reps": a.reps, "device": f"{platform.machine()} CPU, {a.threads} thread(s)",
            "time": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load": [load0, os.getloadavg()[0]],
            "versions": f"torch {torch.__version__}, python {platform.python_version()}",
            "command": "python -m bench.host_overhead " + " ".join(sys.argv[1:] if argv is None else argv)}
    save_json_md(a.out, {"meta": meta, "rows": rows, "fixed": fixed}, a.md, markdown(meta, rows, fixed))
    print(markdown(meta, rows, fixed))
    return rows


if __name__ == "__main__":
    main()
