"""Continuous batching against one request at a time and static batching, under Poisson arrivals.

    python -m bench.serve                                   # gmm-mnist, unet-mnist, gmm-mnist+4ms on the CPU
    python -m bench.serve --models unet-mnist --rates 2,4,8 --requests 60

A workload: `--requests` requests arriving as a Poisson process at `rate` requests/s, each for 1-4 samples
(uniform) of `--sampler` at an NFE drawn from {10, 20, 35}, with its own seed. Models: the built-ins, and
"gmm-mnist+4ms", the mixture plus a flat 4 ms per network call whatever its batch (`FlatCost`): what a GPU
network costs at small batch, which a CPU network is not (its cost grows with the rows: unet-mnist costs
4.5 ms for 1 row, 27 ms for 16 on one thread). It is a stand-in, labelled as such, not a GPU figure. The same workload (same
arrival times, sizes, NFE, seeds) goes through each server in turn, at each rate:

| server | what |
|---|---|
| continuous | `dmcmc_fast.Engine(model, slots=S)`: requests join and leave the running batch between network calls |
| one at a time | one worker: `api.sample` per request, in arrival order |
| static T ms | what a diffusers-style service does: the worker takes the first waiting request, waits up to T ms from its arrival for more (up to S samples), then runs the batch as one `api.sample` per NFE present (one grid per batch), in turn; each request is done when its NFE's batch is |

Per server and rate: throughput (samples finished / (last finish - first arrival)), the p50 and p99 of request
latency (finish - arrival). The servers run in one process one after the other at each rate (round robin over
servers, rates in turn), every timed torch op on one thread (`torch.set_num_threads(1)`). The summary (`compare`)
gives (a) throughput at equal p99: at each static operating point, the continuous engine's best throughput with
no higher p99, over the point's; (b) p99 at equal load: per rate, continuous over the best static.
`--from-json bench/results/serve.json` rebuilds the summary, markdown and plot without measuring again.

Output: bench/results/serve.json (every request's arrival and finish), serve.md, serve.png (p99 latency against
throughput), and a "Continuous batching" section of bench/RESULTS.md via `python -m bench.build_results`.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import threading
import time

import numpy as np
import torch

from bench import write_outputs
from dmcmc_fast import api
from dmcmc_fast.models.base import take_model_attrs
from dmcmc_fast.models.builtin import load_model
from dmcmc_fast.serve import Engine

HERE = os.path.dirname(os.path.abspath(__file__))
NFES = (10, 20, 35)


class FlatCost:
    """`model` plus a fixed `seconds` per call whatever the batch (a sleep, which frees the CPU as a GPU kernel
    would): a stand-in for a GPU network at small batch, where one call costs about the same for 1 row or 32.
    Labelled as such wherever it is reported; it is not a GPU measurement."""

    def __init__(self, model, seconds: float):
        self.model, self.seconds = model, seconds
        take_model_attrs(self, model)

    def __call__(self, x, sigma, **kw):
        time.sleep(self.seconds)
        return self.model(x, sigma, **kw)


def load(name: str):
    """A built-in model, or "BASE+Nms": BASE with a flat N ms per call (`FlatCost`)."""
    if "+" in name:
        base, ms = name.split("+")
        return FlatCost(load_model(base), float(ms.removesuffix("ms")) / 1e3)
    return load_model(name)


def workload(n: int, rate: float, seed: int) -> list[dict]:
    """`n` requests: Poisson arrival times at `rate`/s (from 0), 1-4 samples, NFE from NFES, seed i."""
    g = np.random.default_rng(seed)
    arrivals = np.cumsum(g.exponential(1.0 / rate, n))
    arrivals -= arrivals[0]
    return [dict(i=i, at=float(a), num=int(g.integers(1, 5)), nfe=int(g.choice(NFES)), seed=i)
            for i, a in enumerate(arrivals)]


def _drive(requests: list[dict], submit) -> float:
    """Call `submit(request, t_arrival)` for each request at its arrival time; -> the clock's zero."""
    t0 = time.perf_counter()
    for r in requests:
        delay = t0 + r["at"] - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        submit(r, time.perf_counter())
    return t0


DEVICE = {"device": None}  # --device: where every server samples (None: where the model is)


def serve_continuous(model, requests, sampler: str, slots: int) -> list[tuple[float, float]]:
    done = [None] * len(requests)
    arrived = [None] * len(requests)
    with Engine(model, slots=slots, device=DEVICE["device"]) as engine:
        futures = []

        def submit(r, now):
            arrived[r["i"]] = now
            f = engine.submit(sampler, num=r["num"], nfe=r["nfe"], seed=r["seed"])
            f.add_done_callback(lambda _f, i=r["i"]: done.__setitem__(i, time.perf_counter()))
            futures.append(f)
        _drive(requests, submit)
        for f in futures:
            f.result()
    return list(zip(arrived, done))


def _worker_server(requests, run_batch, wait_s: float | None, max_samples: int) -> list[tuple[float, float]]:
    """A single worker over a queue. `wait_s` None: one request at a time; else static batching: after the
    first waiting request, wait until `wait_s` after its arrival (or `max_samples` samples) for more."""
    q: queue.Queue = queue.Queue()
    done = [None] * len(requests)
    arrived = [None] * len(requests)
    stop = object()

    def work():
        while True:
            first = q.get()
            if first is stop:
                return
            batch, ended = [first], False
            if wait_s is not None:
                deadline = arrived[first["i"]] + wait_s
                while sum(r["num"] for r in batch) < max_samples:
                    left = deadline - time.perf_counter()
                    try:
                        r = q.get(timeout=left) if left > 0 else q.get_nowait()
                    except queue.Empty:
                        break
                    if r is stop:
                        ended = True
                        break
                    batch.append(r)
            for group in _by_nfe(batch):
                run_batch(group)
                now = time.perf_counter()
                for r in group:
                    done[r["i"]] = now
            if ended:
                return

    worker = threading.Thread(target=work)
    worker.start()

    def submit(r, now):
        arrived[r["i"]] = now
        q.put(r)
    _drive(requests, submit)
    q.put(stop)
    worker.join()
    return list(zip(arrived, done))


def _by_nfe(batch):
    groups: dict[int, list] = {}
    for r in batch:
        groups.setdefault(r["nfe"], []).append(r)
    return list(groups.values())


def serve_one_at_a_time(model, requests, sampler: str, slots: int):
    def run(group):
        for r in group:
            api.sample(model, sampler, r["num"], r["nfe"], seed=r["seed"], progress=False, device=DEVICE["device"])
    return _worker_server(requests, run, None, slots)


def serve_static(model, requests, sampler: str, slots: int, wait_ms: float):
    def run(group):  # one batch, one grid (the requests' own seeds are not kept: one seed per batch)
        api.sample(model, sampler, sum(r["num"] for r in group), group[0]["nfe"], seed=group[0]["seed"],
                   batch_size=max(slots, sum(r["num"] for r in group)), progress=False, device=DEVICE["device"])
    return _worker_server(requests, run, wait_ms / 1e3, slots)


def summary(requests, times) -> dict:
    lat = np.array([d - a for a, d in times]) * 1e3
    first = min(a for a, _ in times)
    last = max(d for _, d in times)
    samples = sum(r["num"] for r in requests)
    return {"throughput": samples / (last - first), "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)), "mean_ms": float(lat.mean())}


def servers(slots: int, waits: list[float]) -> dict:
    out = {"continuous": lambda m, rq, s: serve_continuous(m, rq, s, slots),
           "one at a time": lambda m, rq, s: serve_one_at_a_time(m, rq, s, slots)}
    for w in waits:
        out[f"static {w:g} ms"] = (lambda w: lambda m, rq, s: serve_static(m, rq, s, slots, w))(w)
    return out


def best_within(points: list[dict], budget_ms: float) -> float:
    """The highest throughput among `points` (one per rate) whose p99 is within `budget_ms` (0: none)."""
    ok = [p["throughput"] for p in points if p["p99_ms"] <= budget_ms]
    return max(ok) if ok else 0.0


def compare(rates: dict) -> dict:
    """The issue's two comparisons, from one model's {rate: {server: summary}}:
    - at equal p99: for every operating point of a static server (a rate), the continuous engine's highest
      throughput at a p99 no higher than that point's, over the point's throughput (min and max over the points;
      a continuous engine that stayed within the p99 at every rate is capped by the highest rate measured);
    - at equal load: per rate, the continuous p99 over the lowest static p99."""
    cont = [per["continuous"] for per in rates.values()]
    at_p99 = []
    for rate, per in rates.items():
        for name, point in per.items():
            if name.startswith("static"):
                at_p99.append({"rate": rate, "server": name, "p99_ms": point["p99_ms"],
                               "ratio": best_within(cont, point["p99_ms"]) / point["throughput"]})
    at_load = {rate: per["continuous"]["p99_ms"] / min(p["p99_ms"] for n, p in per.items() if n.startswith("static"))
               for rate, per in rates.items()}
    return {"throughput_at_equal_p99": at_p99, "p99_at_equal_load": at_load,
            "throughput_ratio_min": min(r["ratio"] for r in at_p99),
            "throughput_ratio_max": max(r["ratio"] for r in at_p99),
            "p99_ratio_min": min(at_load.values()), "p99_ratio_max": max(at_load.values())}


def markdown(result: dict) -> str:
    lines = ["## Continuous batching", "",
             f"`{result['command']}` on {result['device']} ({result['when']}, torch {result['torch']}, one thread; "
             f"load average at start {result['load']}). {result['requests']} requests per run, Poisson arrivals, "
             f"1-4 samples each, NFE from {{10, 20, 35}}, sampler `{result['sampler']}`; slots "
             f"{result['slots']} (static batching: up to that many samples per batch). Throughput in samples/s; "
             "latency = finish - arrival." + (f" {result['note']}" if result.get("note") else ""), ""]
    for model, rates in result["models"].items():
        names = list(next(iter(rates.values())).keys())
        lines += [f"### {model}", "", "| rate (req/s) | " + " | ".join(names) + " |",
                  "|---|" + "---|" * len(names)]
        for rate, per in rates.items():
            lines.append(f"| {rate} | " + " | ".join(
                f"{per[n]['throughput']:.1f} /s, p50 {per[n]['p50_ms']:.0f}, p99 {per[n]['p99_ms']:.0f} ms"
                for n in names) + " |")
        s = result["summary"][model]
        lines += ["", "Throughput at equal p99 (continuous / static, at each static operating point's p99): "
                      f"**{s['throughput_ratio_min']:.2f}x to {s['throughput_ratio_max']:.2f}x** (target >= 1.6x). "
                      "p99 at equal load (continuous / best static, per rate): " +
                      ", ".join(f"{r}/s {v:.2f}x" for r, v in s["p99_at_equal_load"].items()) +
                      " (target <= 0.5x).", ""]
    lines += [f"![p99 latency against throughput](results/{os.path.basename(result['plot'])})", ""]
    return "\n".join(lines)


def plot(result: dict, path: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(result["models"])
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models):
        rates = result["models"][model]
        for name in next(iter(rates.values())):
            xs = [rates[r][name]["throughput"] for r in rates]
            ys = [rates[r][name]["p99_ms"] for r in rates]
            ax.plot(xs, ys, "o-" if name == "continuous" else ".--", label=name)
        ax.set_xlabel("throughput (samples/s)")
        ax.set_ylabel("p99 latency (ms)")
        ax.set_yscale("log")
        ax.set_title(f"{model}, {result['device']}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="gmm-mnist,unet-mnist,gmm-mnist+4ms",
                   help="built-in models; BASE+Nms adds a flat N ms per call (a GPU-like cost, see FlatCost)")
    p.add_argument("--rates", default="", help="requests/s, comma-separated (default per model)")
    p.add_argument("--requests", type=int, default=60)
    p.add_argument("--slots", default="", help="slots per model, e.g. 32 (default: gmm-mnist 32, unet-mnist 16: "
                   "the UNet's CPU cost per row grows past batch ~16)")
    p.add_argument("--waits", default="50,200", help="static batching's waits, ms")
    p.add_argument("--sampler", default="heun")
    p.add_argument("--device", default="cpu", help="cpu, or cuda (networks are moved there)")
    p.add_argument("--note", default="", help="a remark printed under the section's first line (e.g. the load)")
    p.add_argument("--from-json", default="", help="rebuild the summary, markdown and plot from a saved run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=os.path.join(HERE, "results", "serve"))
    a = p.parse_args(argv)
    if a.from_json:
        with open(a.from_json) as f:
            result = json.load(f)
        result["summary"] = {name: compare(rates) for name, rates in result["models"].items()}
        result["note"] = a.note or result.get("note", "")
        return _write(result, a.out)
    torch.set_num_threads(1)
    DEVICE["device"] = a.device
    default_rates = {"gmm-mnist": "100,200,400,800", "unet-mnist": "2,4,7,10", "gmm-mnist+4ms": "10,20,40,80,120"}
    default_slots = {"gmm-mnist": 32, "unet-mnist": 16, "gmm-mnist+4ms": 32}
    device = (torch.cuda.get_device_name() if a.device.startswith("cuda") else
              f"CPU ({platform.processor() or platform.machine()}, 1 thread)")
    result = {"command": "python -m bench.serve " + " ".join(argv or []), "device": device,
              "when": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "load": os.getloadavg()[0],
              "requests": a.requests, "slots": {}, "sampler": a.sampler, "models": {}, "summary": {},
              "raw": {}, "plot": a.out + ".png", "note": a.note}
    waits = [float(w) for w in a.waits.split(",") if w]
    for name in a.models.split(","):
        model = load(name)
        if isinstance(model, torch.nn.Module):
            model.to(a.device)
        rates = [float(r) for r in (a.rates or default_rates.get(name, "1,2,4")).split(",")]
        slots = result["slots"][name] = int(a.slots) if a.slots else default_slots.get(name, 32)
        api.sample(model, a.sampler, 2, 10, progress=False, device=a.device)  # warm-up (first calls allocate)
        result["models"][name], result["raw"][name] = {}, {}
        for rate in rates:
            requests = workload(a.requests, rate, a.seed)
            per = {}
            for sname, serve in servers(slots, waits).items():
                times = serve(model, requests, a.sampler)
                per[sname] = summary(requests, times)
                result["raw"][name][f"{rate:g}/{sname}"] = times
                print(f"{name} rate {rate:g}/s {sname}: {per[sname]}", flush=True)
            result["models"][name][f"{rate:g}"] = per
        result["summary"][name] = compare(result["models"][name])
    _write(result, a.out)


def _write(result: dict, out: str):
    result["plot"] = out + ".png"
    write_outputs(out, result, plot, markdown)


if __name__ == "__main__":
    main()
