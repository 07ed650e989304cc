"""The engine's overhead on the path users run: time per NFE of `dmcmc_fast.api.sample(model, sampler,
num, nfe, device=..., batch_size=B, graph=...)` over the bare forward of the network at batch B,
captured in a CUDA graph.

    python -m bench.engine                  # on a CUDA GPU: a randomly initialised DDPM CIFAR-10 UNet
                                            # (diffusers UNet2DModel; timing needs no weights)
    python -m bench.engine --cpu-smoke      # no GPU: a tiny conv denoiser at 1x8x8; proves the script
                                            # runs, its timings mean nothing

For each sampler (default `heun`, and `dlg` with a randomly initialised noise-level classifier passed as
a checkpoint path, as users pass theirs) and batch B (default 1, 16, 256):
  bare_ms     one forward at batch B: replay of a `GraphedDenoiser` with the one bucket B (eager where
              capture fails, and on the CPU); median with 20%/80% quantiles over --reps
  api         `api.sample(..., graph="auto")` with num = K x B (K = --batches-per-call), batch_size = B:
              median and quantiles over --runs calls. Each call builds its graphs anew (api.sample captures
              per call), so per_nfe_ms = median / (K x NFE per sample) carries the capture spread over K
              batches; ratio = per_nfe_ms / bare_ms. Before the timed calls one untimed `api.stream` call
              (what api.sample iterates) times each batch as it is yielded: first_batch_ms (capture
              included) and steady_batch_ms (median of the others), steady_ratio = steady_batch_ms / NFE /
              bare_ms (target <= 1.05: sampler work and launch gaps hidden behind the network).
              NFE per sample is the engine's count; for DLG (B chains, one block each per batch) the
              block's NFE plus the sample's share of its chain's initialisation.
  eager       the same call with graph="off": what the graph buys
  path        what the api call ran (`SampleOutput.graph`: mode, captured buckets, fallback reason)
The samples of every variant are compared with the api call's (max abs difference; same seed).
Output: the table; with --out one JSON line per row, appended as each row finishes (default on the GPU
bench/results/engine.jsonl); with --md a markdown section (default on the GPU bench/results/engine.md);
'' writes nothing. --max-seconds stops starting new rows after that many seconds (the rest are listed
as not run), so a time-limited run still reports what it measured.
"""
from __future__ import annotations

import argparse
import inspect
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time

import torch

from bench import Section, append_jsonl  # noqa: E402

if "--cpu-smoke" in sys.argv[1:] and not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported

from dmcmc_fast import api  # noqa: E402
from dmcmc_fast.engine.graph import GraphedDenoiser  # noqa: E402
from dmcmc_fast.mcmc.classifier import NoiseLevelNet, save_classifier  # noqa: E402

DLG_OPTIONS = {"n_skip": 5, "n_den": 10, "init_nfe": 3, "n_init": 1}  # init 4 NFE, blocks of 15


class TinyDenoiser(torch.nn.Module):
    """CPU smoke model: two 3x3 convolutions with log-sigma as an input channel."""

    def __init__(self, shape):
        super().__init__()
        self.shape, self.sigma_min, self.sigma_max, self.data_range = tuple(shape), 0.002, 80.0, (-1.0, 1.0)
        c = shape[0]
        self.net = torch.nn.Sequential(torch.nn.Conv2d(c + 1, 16, 3, padding=1), torch.nn.SiLU(),
                                       torch.nn.Conv2d(16, c, 3, padding=1))

    def forward(self, x, sigma):
        s = torch.log(sigma).reshape(-1, 1, 1, 1).expand(-1, 1, *x.shape[2:])
        return x + self.net(torch.cat([x, s], 1))


def cifar_unet(device):
    """DDPM CIFAR-10 architecture (bench.baselines.ddpm_cifar10_unet), random weights, as a VE denoiser."""
    from bench.baselines import ddpm_cifar10_unet
    from dmcmc_fast.models.adapters import DiffusersUNetAdapter

    unet, ddpm = ddpm_cifar10_unet()
    return DiffusersUNetAdapter(unet.to(device).eval(), ddpm)


def random_classifier(model, n_levels: int, folder: str) -> str:
    """A randomly initialised NoiseLevelNet saved as a checkpoint (timing needs no trained weights), with its
    levels on the model's noise range (DLG refuses a classifier whose levels leave a network's range)."""
    torch.manual_seed(1)
    path = os.path.join(folder, "classifier-random.pt")
    levels = {"n_levels": n_levels, "sigma_min": float(model.sigma_min), "sigma_max": float(model.sigma_max)}
    save_classifier(path, NoiseLevelNet(tuple(model.shape), n_levels), levels, "random weights (bench.engine)")
    return path


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def _time_ms(fn, reps: int, device, warmup: bool = True) -> tuple[float, float, float]:
    """(median, q20, q80) milliseconds of `fn()` (after one untimed call with `warmup`)."""
    if warmup:
        fn()
    ts = []
    for _ in range(reps):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        ts.append(1e3 * (time.perf_counter() - t))
    q = statistics.quantiles(ts, n=5) if len(ts) > 1 else ts * 4
    return statistics.median(ts), q[0], q[-1]


def bare_forward_ms(model, batch: int, reps: int, device: str) -> tuple[tuple, str]:
    """The network's forward at `batch`, as a graph replay where capture works: ((median, q20, q80), label)."""
    shape = tuple(model.shape)
    g = GraphedDenoiser(model, shape, buckets=(batch,), mode="auto", device=device)
    gen = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, *shape, generator=gen).to(device)
    s = torch.full((batch,), 1.0, device=device)
    with torch.no_grad():
        g(x, s)  # captures on CUDA
        bk = g._buckets.get(batch)
        if bk is not None and bk.graph is not None:
            return _time_ms(bk.graph.replay, reps, device), "graph replay"
        label = f"eager ({g.fallback_reason})" if g.fallback_reason else f"eager ({device})"
        return _time_ms(lambda: model(x, s), reps, device), label


def check_api():
    """api.sample must take graph=: the path users run is what this benchmark times."""
    if "graph" not in inspect.signature(api.sample).parameters:
        raise SystemExit("bench/engine.py times api.sample(..., graph=...); this dmcmc_fast.api.sample has no "
                         "graph keyword")


def path_taken(out) -> dict:
    """What an api.sample call ran: `SampleOutput.graph` (graph mode, captured buckets, fallback reason)."""
    return dict(getattr(out, "graph", None) or {"mode": "unknown (SampleOutput has no graph report)"})


def variants(sampler: str) -> dict[str, dict]:
    """name -> extra keywords of api.sample."""
    v = {"api": {"graph": "auto"}, "eager": {"graph": "off"}}
    return v


def _stream_batch_ms(kw: dict, device: str) -> list[float]:
    """Wall milliseconds of each batch of one api.stream call, as yielded (each ends in a copy to the host)."""
    ms = []
    _sync(device)
    t = time.perf_counter()
    for _ in api.stream(**kw):
        _sync(device)
        now = time.perf_counter()
        ms.append(1e3 * (now - t))
        t = now
    return ms


def run_row(model, sampler: str, batch: int, nfe: int, options: dict, runs: int, reps: int, device: str,
            per_call: int = 1) -> dict:
    bare, bare_label = bare_forward_ms(model, batch, reps, device)
    row = {"sampler": sampler, "batch": batch, "batches_per_call": per_call, "nfe_budget": nfe,
           "options": options, "bare_ms": bare, "bare_forward": bare_label, "variants": {}}
    if sampler == "dlg":  # B chains: each batch is one block of every chain
        options = dict(options, chains=batch)
    ref = None
    for name, extra in variants(sampler).items():
        kw = dict(model=model, sampler=sampler, num=per_call * batch, nfe=nfe, seed=0, batch_size=batch,
                  device=device, progress=False, **options, **extra)
        per_batch = _stream_batch_ms(kw, device)  # also the warm-up of the timed calls
        outs = []
        t = _time_ms(lambda: outs.append(api.sample(**kw)), runs, device, warmup=False)
        out = outs[-1]
        spent = float(out.nfe.float().mean())
        steady = statistics.median(per_batch[1:]) if len(per_batch) > 1 else None
        ref = out.samples if ref is None else ref
        row["variants"][name] = {
            "keywords": extra, "ms": t, "nfe": spent, "per_nfe_ms": t[0] / (per_call * spent),
            "samples_s": 1e3 * per_call * batch / t[0], "first_batch_ms": per_batch[0], "steady_batch_ms": steady,
            "steady_per_nfe_ms": steady / spent if steady is not None else None, "path": path_taken(out),
            "max_abs_diff_vs_api": float((out.samples - ref).abs().max())}
    api_row = row["variants"]["api"]
    steady = api_row["steady_per_nfe_ms"]
    row.update(per_nfe_ms=api_row["per_nfe_ms"], ratio=api_row["per_nfe_ms"] / bare[0],
               steady_ratio=steady / bare[0] if steady is not None else None,
               graph_gain=row["variants"]["eager"]["ms"][0] / api_row["ms"][0], path=api_row["path"])
    return row


def _device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"cpu ({platform.processor() or platform.machine()})"


def _path_str(p: dict) -> str:
    """`mode=graph, captured=[16]` (the fallback reason, when there is one, last)."""
    return ", ".join(f"{k}={v}" for k, v in p.items() if v is not None and v != []) or "?"


def _f(v, fmt=".2f") -> str:
    return "-" if v is None else format(v, fmt)


def markdown(meta: dict, rows: list[dict], not_run: list[str]) -> str:
    lines = [f"\n## Engine overhead — {meta['device']}, {meta['time']}\n",
             f"- command: `{meta['command']}`",
             f"- model: {meta['model']}; torch {meta['torch']}; NFE per sample: heun {meta['nfe']['heun']}, "
             f"dlg {meta['nfe']['dlg']} (budget; {DLG_OPTIONS})",
             f"- api: `api.sample(..., graph=\"auto\")`, {meta['batches_per_call']} batches of B per call (each "
             "call captures its graphs anew); ms/NFE = median call time / (batches x NFE per sample); bare: the "
             "network's forward at batch B; ratio = ms/NFE / bare; steady: batches after the first of an "
             "api.stream call (capture excluded; target <= 1.05); eager / api: the same call with graph=\"off\", over "
             "it\n",
             "| sampler | B | bare ms | api ms/NFE [20%, 80%] | ratio | steady ratio | first batch ms | eager / api "
             "| samples/s | path |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        v = r["variants"]
        a = v["api"]
        q = [x / (a["nfe"] * r["batches_per_call"]) for x in a["ms"]]
        lines.append(f"| {r['sampler']} | {r['batch']} | {r['bare_ms'][0]:.3f} ({r['bare_forward']}) | "
                     f"{q[0]:.3f} [{q[1]:.3f}, {q[2]:.3f}] | {r['ratio']:.2f} | {_f(r['steady_ratio'])} | "
                     f"{a['first_batch_ms']:.1f} | {r['graph_gain']:.2f} | {a['samples_s']:.1f} | "
                     f"{_path_str(r['path'])} |")
    for what in not_run:
        lines.append(f"\n- not run: {what}")
    if meta["device"].startswith("cpu"):
        lines.append("\nCPU smoke run: these timings say nothing about GPU performance.")
    return "\n".join(lines) + "\n"


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, nargs="*", default=[1, 16, 256], help="batch sizes (default 1 16 256)")
    p.add_argument("--samplers", default="heun,dlg", help="comma list: heun and/or dlg (default both)")
    p.add_argument("--nfe", type=int, default=35, help="heun's NFE per sample (odd; default 35)")
    p.add_argument("--reps", type=int, default=30, help="timed bare forwards (default 30)")
    p.add_argument("--runs", type=int, default=3, help="timed api.sample calls per variant (default 3)")
    p.add_argument("--batches-per-call", type=int, default=3,
                   help="K: each call draws num = K x B samples in batches of B (default 3)")
    p.add_argument("--max-seconds", type=float, default=None, help="start no new row after this many seconds")
    p.add_argument("--out", default=None, help="append JSON lines here (default on GPU: bench/results/engine.jsonl; "
                                               "'' writes nothing)")
    p.add_argument("--md", default=None, help="append a markdown section here (default on GPU: "
                                              "bench/results/engine.md; '' writes nothing)")
    p.add_argument("--cpu-smoke", action="store_true", help="no GPU: tiny model, batches 1 and 4, heun NFE 5, "
                                                            "1 DLG block, 3 reps, 1 run of 2 batches")
    a = p.parse_args(argv)
    samplers = [s for s in a.samplers.split(",") if s]
    if not samplers or any(s not in ("heun", "dlg") for s in samplers):
        p.error(f"--samplers must be a comma list of heun, dlg; got {a.samplers!r}")
    check_api()
    results = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    if torch.cuda.is_available():
        device = "cuda"
        out = os.path.join(results, "engine.jsonl") if a.out is None else a.out
        md = os.path.join(results, "engine.md") if a.md is None else a.md
        model, n_levels, what = cifar_unet(device), 1000, "DDPM CIFAR-10 UNet2DModel, 35.7M parameters (random init)"
    elif a.cpu_smoke:
        device, out, md = "cpu", a.out, a.md
        a.batches, a.nfe, a.reps, a.runs, a.batches_per_call = [1, 4], 5, 3, 1, 2
        torch.manual_seed(0)
        model, n_levels, what = TinyDenoiser((1, 8, 8)), 50, "tiny conv denoiser 1x8x8"
    else:
        raise SystemExit("bench/engine.py needs a CUDA GPU; use --cpu-smoke to check that it runs without one")
    nfe = {"heun": a.nfe, "dlg": DLG_OPTIONS["n_skip"] + DLG_OPTIONS["n_den"]}  # DLG: per block
    if min(a.batches + [a.runs, a.reps, a.batches_per_call]) < 1:
        p.error("--batches, --runs, --reps and --batches-per-call must be >= 1")
    meta = {"bench": "engine", "device": _device_name(device), "model": what,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "torch": torch.__version__, "nfe": nfe,
            "batches_per_call": a.batches_per_call,
            "command": "python -m bench.engine " + shlex.join(sys.argv[1:] if argv is None else argv)}
    print(f"# {meta['device']} | torch {meta['torch']} | {what}")
    print(f"{'sampler':>7s} {'batch':>5s} {'bare ms':>9s} {'ms/NFE':>9s} {'ratio':>6s} {'steady':>6s} "
          f"{'eager/api':>9s} {'samples/s':>10s} path")
    t0, rows, not_run = time.perf_counter(), [], []
    section = Section(md)  # rewritten after every row: a run cut short keeps its rows
    with tempfile.TemporaryDirectory() as tmp:
        opts = {"heun": {}, "dlg": dict(DLG_OPTIONS, classifier=random_classifier(model, n_levels, tmp))}
        for sampler in samplers:
            for B in a.batches:
                if a.max_seconds is not None and time.perf_counter() - t0 > a.max_seconds:
                    not_run.append(f"{sampler} B={B} (--max-seconds {a.max_seconds:g})")
                    continue
                r = run_row(model, sampler, B, nfe[sampler], opts[sampler], a.runs, a.reps, device,
                            a.batches_per_call)
                r["options"] = {k: v for k, v in r["options"].items() if k != "classifier"}
                rows.append(r)
                append_jsonl(out, meta, [r])
                section.write(markdown(meta, rows, not_run))
                print(f"{sampler:>7s} {B:5d} {r['bare_ms'][0]:9.3f} {r['per_nfe_ms']:9.3f} {r['ratio']:6.2f} "
                      f"{_f(r['steady_ratio']):>6s} {r['graph_gain']:9.2f} {r['variants']['api']['samples_s']:10.1f} "
                      f"{_path_str(r['path'])}", flush=True)
    for what in not_run:
        print(f"# not run: {what}")
    if device == "cpu":
        print("# CPU smoke run: these timings say nothing about GPU performance")
    if rows:
        print(f"# summary: {len(rows)} rows; api per NFE over the bare forward (steady) "
              + ", ".join(f"{r['sampler']} B={r['batch']} {r['ratio']:.2f} ({_f(r['steady_ratio'])})" for r in rows)
              + f"; ran {'; '.join(sorted({_path_str(r['path']) for r in rows}))}"
              + (f"; {len(not_run)} not run" if not_run else ""))
    section.write(markdown(meta, rows, not_run))
    return rows


if __name__ == "__main__":
    main()
