"""Throughput of our samplers against the ones people use today, side by side in one run.

    python -m bench.throughput [--device cpu] [--models gmm-mnist,unet-mnist,cifar-unet] [--batches 1,16,256]

For every (model, batch, sampler kind in heun/euler) the same initial state (sigma_max times
per-chain Philox normals) goes once through each method (the samples are compared), then every timed call
draws its own start as users' calls do (ours its per-chain Philox prior; the baselines sigma_max * torch.randn,
on a grid prepared once), through
  ours         what users run: dmcmc_fast.api.sample(model, kind, num=B, nfe, device=..., batch_size=B,
               graph="auto") (on CUDA the network runs through the captured graph; eager on CPU); the
               path it took (graph mode, fallback reason) is reported; its time includes what the
               call does besides sampling (graph capture, the copy of the samples to the host)
  façade       our class, dmcmc_fast.<Kind>(model, nfe, seed=0, batch_size=B, ...).sample(B), built once
  integrator   our function, dmcmc_fast.integrators.sample_<kind>(model, x_T, sigma_max, N) (eager)
  plain        the papers' loop (bench.baselines.plain_<kind>, NVlabs/edm style)
  k-diffusion  k_diffusion.sampling.sample_<kind> on the same grid
  diffusers    <Kind>DiscreteScheduler (use_karras_sigmas) on an eps network: the CIFAR UNet itself,
               or our VE denoiser through VPEpsFromVE (the inverse of VPAdapter)
  compiled     the plain loop with its step under torch.compile(mode="reduce-overhead")
with the same NFE (counted in every method and asserted equal before timing), after warm-up, in
round-robin repetitions (so load drifting on a shared machine hits every method alike; each round in a
shuffled order, so no method always follows the same one). Reported:
median wall time, its 10/90% quantiles, samples/s, ms per NFE, each method's time over ours, the
largest difference of its samples from ours, and the overhead ratio: ours' time per NFE over the
bare forward time of a GraphedDenoiser at that batch (on CPU the graph falls back to eager, and
the ratio is labelled so).
Output: bench/results/throughput-<device>-<timestamp>.json (rewritten after every cell, so a run cut
short keeps what it measured), a section appended to bench/results/throughput.md, and
bench/results/throughput-<device>-<timestamp>.png. --max-seconds starts no new cell after that many
seconds (the cells left out are listed).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import shlex
import statistics
import sys
import time
from dataclasses import dataclass

import torch

from bench import Section
from bench import baselines as bl
from bench.engine import _path_str, check_api, path_taken
import dmcmc_fast
from dmcmc_fast import api, rng
from dmcmc_fast.engine.graph import GraphedDenoiser
from dmcmc_fast.integrators import INTEGRATORS
from dmcmc_fast.models.adapters import DiffusersUNetAdapter
from dmcmc_fast.models.builtin import BUILTIN_MODELS, load_model
from dmcmc_fast.samplers import get_sampler
from dmcmc_fast.schedules import karras

METHODS = ("ours", "façade", "integrator", "plain", "k-diffusion", "diffusers", "compiled")
OUR_DOORS = ("façade", "integrator")  # ours too, besides api.sample: never a "baseline"
ANALYTIC = tuple(n for n in BUILTIN_MODELS if n.startswith(("gmm-", "ideal-")))
CIFAR = "cifar-unet"
VE_RANGE = (0.002, 80.0)  # EDM's grid ends, the registry's defaults
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


@dataclass
class Case:
    """One model as every method needs it: VE denoiser, eps network, VP table, grid ends."""
    name: str
    denoiser: object  # D(x, sigma [B])
    eps_net: object  # eps(x_vp, t)
    alphas_cumprod: torch.Tensor
    sigma_min: float
    sigma_max: float
    shape: tuple
    scheduler_config: dict  # for bl.diffusers_scheduler


def build_case(name: str, device: torch.device) -> Case:
    if name == CIFAR:
        unet, ddpm = bl.ddpm_cifar10_unet()
        unet = unet.to(device)
        d = DiffusersUNetAdapter(unet, ddpm)
        cfg = {k: ddpm.config[k] for k in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule")}
        return Case(name, d, bl.unet_eps(unet), ddpm.alphas_cumprod, d.sigma_min, d.sigma_max, d.shape, cfg)
    model = load_model(name)
    if isinstance(model, torch.nn.Module):
        model = model.to(device).eval()
    abar = bl.ve_alphas_cumprod(*VE_RANGE)
    return Case(name, model, bl.VPEpsFromVE(model, abar), abar, *VE_RANGE, tuple(model.shape),
                {"alphas_cumprod": abar})


def steps_for(kind: str, nfe: int) -> int:
    """Grid points N whose cost is exactly `nfe` (heun: 2N - 1, euler: N)."""
    n = INTEGRATORS[kind][1](nfe)
    cost = 2 * n - 1 if kind == "heun" else n
    if cost != nfe:
        raise ValueError(f"nfe must be odd for heun (2N - 1), got {nfe}")
    return n


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def _stats(ts: list[float]) -> dict:
    q = statistics.quantiles(ts, n=10, method="inclusive") if len(ts) > 1 else [ts[0]] * 9
    return {"median_s": statistics.median(ts), "q10_s": q[0], "q90_s": q[-1], "min_s": min(ts), "reps": len(ts),
            "times_s": ts}


def run_cell(case: Case, kind: str, batch: int, nfe: int, device, reps: int, warmup: int, budget_s: float,
             compiled, log) -> dict:
    """All methods on one (model, kind, batch): NFE check, sample agreement, round-robin timing."""
    n = steps_for(kind, nfe)
    x0 = case.sigma_max * rng.chain_randn(0, torch.arange(batch, device=device), 0, case.shape,
                                          stream=rng.STREAM_INIT, device=device)
    grid = karras(n, case.sigma_min, case.sigma_max, device=device).to(torch.float32)
    counted = bl.CallCounter(case.denoiser)
    eps_counted = bl.CallCounter(case.eps_net)
    # the baselines start from `start()`: x0 for the agreement check, a fresh torch.randn prior in the timed
    # rounds (every generation draws its start; ours draws its per-chain Philox prior inside each call)
    start = {"x": lambda: x0}
    # ours: the API users call; it draws the same prior (seed 0, chains 0..B-1, STREAM_INIT) as x0
    runs = {"ours": lambda: api.sample(case.denoiser, kind, num=batch, nfe=nfe, seed=0, batch_size=batch,
                                       device=device, progress=False, graph="auto", sigma_max=case.sigma_max,
                                       sigma_min=case.sigma_min)}
    # our other doors: the façade class (built once; the same prior, seed 0) and the integrator function (the
    # baselines' start, its own counter)
    facade = getattr(dmcmc_fast, get_sampler(kind).facade)(case.denoiser, nfe, seed=0, batch_size=batch,
                                                            device=device, sigma_max=case.sigma_max,
                                                            sigma_min=case.sigma_min)
    runs["façade"] = lambda: facade.sample(batch)
    integrate = INTEGRATORS[kind][0]
    runs["integrator"] = lambda: integrate(case.denoiser, start["x"](), case.sigma_max, n, sigma_min=case.sigma_min)
    runs["plain"] = lambda: bl.PLAIN[kind](counted, start["x"](), grid)
    kd = bl.k_diffusion_sampler(kind)
    unavailable = {}
    if kd is not None:
        runs["k-diffusion"] = lambda: kd(counted, start["x"](), grid)
    else:
        unavailable["k-diffusion"] = "not installed (pip install --no-deps k-diffusion; see bench/README.md)"
    sched = bl.diffusers_scheduler(kind, **case.scheduler_config)
    runs["diffusers"] = lambda: bl.diffusers_loop(eps_counted, sched, start["x"](), n)
    if compiled is not None:
        compiled_runner, counting_runner, compiled_counted = compiled
        runs["compiled"] = lambda: compiled_runner(start["x"](), grid)
    else:
        unavailable["compiled"] = "not run (see --compile-models)"

    # 1. one counted run each: equal NFE, samples compared with ours; the compiled run compiles here
    res, outs = {}, {}
    for m, fn in runs.items():
        counter = {"diffusers": eps_counted, "compiled": compiled and compiled_counted}.get(m, counted)
        counter.reset()
        if m == "compiled":  # counted through the same loop traced by dynamo (see compiled_pair)
            counting_runner(x0, grid)
        t = _timed(lambda: outs.__setitem__(m, fn()), device)
        out = outs[m]
        if m == "ours":
            got, outs[m], ours_path = int(out.nfe.max()), out.samples, path_taken(out)
        elif m == "façade":
            got, outs[m] = int(out.nfe.max()), out.samples
        elif m == "integrator":
            got, outs[m] = int(out.nfe.max()), out.x
        else:
            got = counter.rows // batch
            if counter.rows != counter.calls * batch:
                raise RuntimeError(f"{m}: a model call did not carry the whole batch")
        if got != nfe:
            raise RuntimeError(f"{m} spent {got} NFE per sample on {case.name} {kind}, expected {nfe}")
        res[m] = {"nfe": got, "first_call_s": t}
    scale = float(outs["ours"].abs().max())
    for m in runs:
        res[m]["max_abs_diff_vs_ours"] = float((outs[m].float().cpu() - outs["ours"].float()).abs().max())
        res[m]["max_abs_ours"] = scale

    # 2. warm-up, then round-robin repetitions (fewer if one round would blow the budget), each baseline from
    # a fresh prior
    start["x"] = lambda: case.sigma_max * torch.randn(batch, *case.shape, device=device)
    for _ in range(warmup):
        for fn in runs.values():
            fn()
    one_round = sum(_timed(fn, device) for fn in runs.values())
    reps = max(3, min(reps, int(budget_s / max(one_round, 1e-9))))
    times, order, shuffle = {m: [] for m in runs}, list(runs), random.Random(0).shuffle
    for _ in range(reps):  # each round in its own order: no method always runs after the same one
        shuffle(order)
        for m in order:
            times[m].append(_timed(runs[m], device))
    ours = statistics.median(times["ours"])
    for m in runs:
        st = _stats(times[m])
        res[m].update(st, samples_per_s=batch / st["median_s"], ms_per_nfe=1e3 * st["median_s"] / nfe,
                      time_over_ours=st["median_s"] / ours)

    # 3. overhead ratio: ours' time per NFE over the (graphed) network's bare forward at this batch
    graphed = GraphedDenoiser(case.denoiser, case.shape, buckets=(batch,), mode="auto", device=device)
    sig = torch.full((batch,), case.sigma_max, device=device)
    with torch.no_grad():
        for _ in range(max(warmup, 1)):
            graphed(x0, sig)
        fwd = [_timed(lambda: graphed(x0, sig), device) for _ in range(max(reps, 5))]
    label = "graphed" if graphed.captured else f"eager fallback ({graphed.mode} on {device.type})"
    bare = _stats(fwd)
    cell = {"model": case.name, "kind": kind, "batch": batch, "nfe": nfe, "n_steps": n,
            "sigma_min": case.sigma_min, "sigma_max": case.sigma_max, "methods": res, "unavailable": unavailable,
            "bare_forward": bare, "forward_label": label, "ours_path": ours_path,
            "overhead_ratio": (ours / nfe) / bare["median_s"]}
    log(f"{case.name:12s} {kind:5s} B={batch:<4d} NFE={nfe:<3d} ours {1e3 * ours / nfe:8.3f} ms/NFE  "
        + "  ".join(f"{m} x{res[m]['time_over_ours']:.2f}" for m in runs if m != "ours")
        + f"  overhead {cell['overhead_ratio']:.2f} ({label}); ours ran {_path_str(ours_path)}")
    return cell


def compiled_pair(kind: str, denoiser):
    """(compiled loop on the bare network, the same step functions uncompiled around a CallCounter, the
    counter). The timed loop holds no counter: a Python-int side effect in a compiled step makes dynamo
    guard on the count and recompile. One compiled loop per (model, kind) serves every batch size."""
    counter = bl.CallCounter(denoiser)
    return bl.compiled(kind, denoiser), bl.compiled(kind, counter, backend=None), counter


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "torch": torch.__version__}
    for pkg in ("dmcmc-fast", "diffusers", "k-diffusion", "triton", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def parse_args(argv):
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if cuda else "cpu")
    p.add_argument("--models", default=None,
                   help=f"comma list of built-in models and/or {CIFAR} (default: gmm-mnist, gmm-digits, "
                        f"ideal-digits, unet-mnist, {CIFAR})")
    p.add_argument("--kinds", default="heun,euler", help="samplers: heun, euler")
    p.add_argument("--batches", default="1,16,256", help="batch sizes (default 1,16,256)")
    p.add_argument("--unet-batches", default=None,
                   help="batch sizes for unet-mnist and cifar-unet (default: --batches on CUDA, 1,16 / 1 on CPU)")
    p.add_argument("--nfe", type=int, default=None, help="NFE per sample, odd (default 35 on CUDA, 9 on CPU)")
    p.add_argument("--cifar-nfe", type=int, default=None, help="NFE for cifar-unet (default --nfe on CUDA, 3 on CPU)")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions per method (default 20 CUDA, 7 CPU)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds before timing (>= 0)")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds of timing per cell; reps shrink (not below 3) to fit (default 60 CUDA, 15 CPU)")
    p.add_argument("--compile-models", default=None,
                   help="models whose plain loop is also run under torch.compile: 'all', 'none' or a comma "
                        "list (default: all on CUDA; the analytic models on CPU, where compiling a UNet takes "
                        "minutes of the run)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for the run (default: torch's)")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="start no new cell after this many seconds (the rest are listed as not run)")
    p.add_argument("--out", default=RESULTS, help="results folder (default bench/results)")
    p.add_argument("--no-plot", action="store_true")
    a = p.parse_args(argv)
    a.device = torch.device(a.device)
    gpu = a.device.type == "cuda"
    a.models = (a.models or f"gmm-mnist,gmm-digits,ideal-digits,unet-mnist,{CIFAR}").split(",")
    bad = [m for m in a.models if m not in BUILTIN_MODELS and m != CIFAR]
    if bad:
        raise ValueError(f"--models: unknown {bad}; accepted: {', '.join(sorted(BUILTIN_MODELS))}, {CIFAR}")
    a.kinds = a.kinds.split(",")
    if any(k not in bl.KINDS for k in a.kinds):
        raise ValueError(f"--kinds must be a comma list of {', '.join(bl.KINDS)}, got {a.kinds}")
    a.batches = [int(b) for b in a.batches.split(",")]
    a.unet_batches = [int(b) for b in a.unet_batches.split(",")] if a.unet_batches else None
    if any(b < 1 for b in a.batches + (a.unet_batches or [])):
        raise ValueError("batch sizes must be >= 1")
    a.nfe = a.nfe or (35 if gpu else 9)
    a.cifar_nfe = a.cifar_nfe or (a.nfe if gpu else 3)
    for name, v in (("--nfe", a.nfe), ("--cifar-nfe", a.cifar_nfe)):
        if v < 1 or v % 2 == 0:
            raise ValueError(f"{name} must be an odd integer >= 1 (heun costs 2N - 1), got {v}")
    a.reps = a.reps or (20 if gpu else 7)
    a.budget = a.budget or (60.0 if gpu else 15.0)
    if a.reps < 1 or a.warmup < 0 or a.budget <= 0:
        raise ValueError("--reps must be >= 1, --warmup >= 0, --budget > 0")
    cm = a.compile_models or ("all" if gpu else ",".join(m for m in a.models if m in ANALYTIC))
    a.compile_models = set(a.models) if cm == "all" else set() if cm == "none" else set(cm.split(","))
    return a


def batches_for(a, name: str) -> list[int]:
    if name in ANALYTIC:
        return a.batches
    if a.unet_batches:
        return a.unet_batches
    if a.device.type == "cuda":
        return a.batches
    return [1] if name == CIFAR else [b for b in a.batches if b <= 16]


def main(argv=None) -> int:
    a = parse_args(argv)
    check_api()
    if a.threads:
        torch.set_num_threads(a.threads)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    command = "python -m bench.throughput " + " ".join(map(shlex.quote, sys.argv[1:] if argv is None else argv))
    log = lambda s: print(s, flush=True)  # noqa: E731
    load0 = os.getloadavg()
    run = {"device": str(a.device), "device_name": device_name(a.device), "threads": torch.get_num_threads(),
           "versions": versions(), "command": command.strip(), "timestamp": stamp, "loadavg_start": load0,
           "cells": [], "unavailable_models": {}, "not_run": []}
    log(f"# {run['device_name']}, torch {torch.__version__}, {run['threads']} threads, load {load0[0]:.1f}")
    os.makedirs(a.out, exist_ok=True)
    base = os.path.join(a.out, f"throughput-{a.device.type}-{stamp}")
    t0 = time.perf_counter()

    section = Section(os.path.join(a.out, "throughput.md"))  # rewritten after every cell, plot last

    def save():
        with open(base + ".json", "w") as f:
            json.dump(run, f, indent=1)
        section.write(markdown(run, os.path.basename(base + ".json"), None))

    for name in a.models:
        try:
            case = build_case(name, a.device)
        except (FileNotFoundError, ImportError, RuntimeError, KeyError) as err:  # unet-mnist may be mid-training
            run["unavailable_models"][name] = f"{type(err).__name__}: {err}"
            log(f"{name}: unavailable ({run['unavailable_models'][name]})")
            continue
        nfe = a.cifar_nfe if name == CIFAR else a.nfe
        for kind in a.kinds:
            compiled = compiled_pair(kind, case.denoiser) if name in a.compile_models else None
            for batch in batches_for(a, name):
                if a.max_seconds is not None and time.perf_counter() - t0 > a.max_seconds:
                    run["not_run"].append(f"{name} {kind} B={batch} (--max-seconds {a.max_seconds:g})")
                    continue
                try:
                    run["cells"].append(run_cell(case, kind, batch, nfe, a.device, a.reps, a.warmup, a.budget,
                                                 compiled, log))
                except torch.OutOfMemoryError as err:
                    run["cells"].append({"model": name, "kind": kind, "batch": batch, "nfe": nfe, "oom": str(err)})
                    log(f"{name} {kind} B={batch}: out of memory")
                    torch.cuda.empty_cache()
                run["loadavg_end"] = os.getloadavg()
                save()
    run["loadavg_end"] = os.getloadavg()
    save()
    plot = None if a.no_plot else write_plot(run, base + ".png")
    section.write(markdown(run, os.path.basename(base + ".json"), plot and os.path.basename(plot)))
    log(f"wrote {base}.json, {os.path.join(a.out, 'throughput.md')}" + (f", {plot}" if plot else ""))
    for what in run["not_run"]:
        log(f"# not run: {what}")
    log("# summary: " + summary(run))
    return 0


def summary(run: dict) -> str:
    """One line: cells measured, and for each the largest and smallest baseline time over ours."""
    cells = [c for c in run["cells"] if "methods" in c]
    parts = []
    for c in cells:
        others = {m: d["time_over_ours"] for m, d in c["methods"].items() if m != "ours" and m not in OUR_DOORS}
        lo = min(others, key=others.get) if others else None
        parts.append(f"{c['model']} {c['kind']} B={c['batch']}: overhead {c['overhead_ratio']:.2f}"
                     + (f", fastest baseline {lo} x{others[lo]:.2f}" if lo else ""))
    extra = [f"{len(run['not_run'])} not run"] if run["not_run"] else []
    extra += [f"{len(run['cells']) - len(cells)} out of memory"] if len(run["cells"]) > len(cells) else []
    return f"{len(cells)} cells; " + "; ".join(parts + extra)


def _fmt_ms(v: float) -> str:
    return f"{v:.3g}" if v < 100 else f"{v:.0f}"


def markdown(run: dict, json_name: str, png_name: str | None) -> str:
    v = run["versions"]
    la0, la1 = run["loadavg_start"][0], run["loadavg_end"][0]
    lines = [f"\n## Throughput — {run['device']} ({run['device_name']}), {run['timestamp']}\n",
             f"- command: `{run['command']}`",
             f"- versions: torch {v['torch']}, diffusers {v['diffusers']}, k-diffusion {v['k-diffusion']}, "
             f"triton {v['triton']}, python {v['python']}; {run['threads']} torch threads",
             f"- load average at start / end: {la0:.1f} / {la1:.1f}"
             + (f" on {os.cpu_count()} cores: the CPU was shared with other work, so absolute times are noisy; "
                "the ratios (each method's median over ours, measured round-robin in the same run) are the "
                "headline" if run["device"] == "cpu" else ""),
             f"- data: `bench/results/{json_name}`" + (f", plot `bench/results/{png_name}`" if png_name else ""),
             "- cells: ours (`api.sample`) ms per NFE (median, [10%, 90%] quantiles); for each other method its "
             "median time over ours (> 1: ours is faster): our façade class and integrator function, then the "
             "baselines; overhead = ours' time per NFE / bare forward of the network (GraphedDenoiser) at that "
             "batch\n"]
    for name, why in run["unavailable_models"].items():
        lines.insert(-1, f"- {name}: unavailable ({why})")
    for what in run.get("not_run", []):
        lines.insert(-1, f"- not run: {what}")
    paths = sorted({_path_str(c["ours_path"]) for c in run["cells"] if "ours_path" in c})
    if paths:
        lines.insert(-1, f"- ours ran: {'; '.join(paths)}")
    hdr = ["model", "sampler", "B", "NFE", "ours ms/NFE", "ours samples/s"] + [m for m in METHODS if m != "ours"] \
        + ["overhead (forward)"]
    lines += ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    for c in run["cells"]:
        if "oom" in c:
            lines.append(f"| {c['model']} | {c['kind']} | {c['batch']} | {c['nfe']} | out of memory |" + " |" * (len(hdr) - 5))
            continue
        o = c["methods"]["ours"]
        row = [c["model"], c["kind"], str(c["batch"]), str(c["nfe"]),
               f"{_fmt_ms(o['ms_per_nfe'])} [{_fmt_ms(1e3 * o['q10_s'] / c['nfe'])}, {_fmt_ms(1e3 * o['q90_s'] / c['nfe'])}]",
               f"{o['samples_per_s']:.3g}"]
        for m in METHODS[1:]:
            row.append(f"{c['methods'][m]['time_over_ours']:.2f}" if m in c["methods"] else "n/a")
        row.append(f"{c['overhead_ratio']:.2f} ({'graphed' if c['forward_label'] == 'graphed' else 'eager fallback'})")
        lines.append("| " + " | ".join(row) + " |")
    diffs = [(c["model"], c["kind"], c["batch"], m, d["max_abs_diff_vs_ours"] / max(d["max_abs_ours"], 1e-12))
             for c in run["cells"] if "methods" in c for m, d in c["methods"].items() if m != "ours"]
    if diffs:
        worst = max(diffs, key=lambda t: t[-1])
        lines.append(f"\nSame algorithm, same grid: the largest difference of any baseline's samples from ours, "
                     f"relative to max |ours|, is {worst[-1]:.1e} ({worst[3]}, {worst[0]} {worst[1]} B={worst[2]}).")
    return "\n".join(lines) + "\n"


def write_plot(run: dict, path: str) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    cells = [c for c in run["cells"] if "methods" in c]
    if not cells:
        return None
    models = list(dict.fromkeys(c["model"] for c in cells))
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.8), squeeze=False)
    width = 0.8 / len(METHODS)
    for ax, model in zip(axes[0], models):
        mc = [c for c in cells if c["model"] == model]
        for j, m in enumerate(METHODS):
            xs = [i + (j - len(METHODS) / 2 + 0.5) * width for i, c in enumerate(mc) if m in c["methods"]]
            ys = [c["methods"][m]["ms_per_nfe"] for c in mc if m in c["methods"]]
            lo = [c["methods"][m]["ms_per_nfe"] - 1e3 * c["methods"][m]["q10_s"] / c["nfe"] for c in mc if m in c["methods"]]
            hi = [1e3 * c["methods"][m]["q90_s"] / c["nfe"] - c["methods"][m]["ms_per_nfe"] for c in mc if m in c["methods"]]
            ax.bar(xs, ys, width, yerr=[lo, hi], label=m, capsize=2)
        ax.set_xticks(range(len(mc)), [f"{c['kind']}\nB={c['batch']}" for c in mc], fontsize=8)
        ax.set_yscale("log")
        ax.set_title(f"{model} (NFE {mc[0]['nfe']})", fontsize=9)
        ax.set_ylabel("ms per NFE (median, 10-90%)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{run['device_name']} — {run['timestamp']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    sys.exit(main())
