"""The engine's overhead: time per network call of pipelined DLG over the graphed network's bare forward
time, and samples/s of pipelined DLG against the plain torch loop (`run_dlg`).

    python -m bench.engine                  # on a CUDA GPU: a randomly initialised DDPM CIFAR-10 UNet
                                            # (diffusers UNet2DModel; timing needs no weights), table +
                                            # JSON lines appended to --out
    python -m bench.engine --cpu-smoke      # no GPU: a tiny conv denoiser at 1x8x8; proves the script
                                            # runs, its timings mean nothing

For each batch B (default 1, 16, 256): `bare_ms` is one forward of the network at batch B (CUDA-graph
replay where capture works, else eager; median with 20%/80% quantiles over --reps); the engine runs
pipelined DLG with network batches of B rows (C = B // (1 + ceil(calls per job / n_skip)) chains, so
every batch is full in steady state) through a `GraphedDenoiser` with one bucket, B; `per_call_ms` is
its wall time over its network calls and `ratio = per_call_ms / bare_ms` (target <= 1.05: sampler work
and launch gaps hidden). `plain` is `run_dlg` on the same chains, eager. Both start from the same
initialised state (initialisation not timed).
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time

import torch

from bench import append_jsonl  # noqa: E402

if "--cpu-smoke" in sys.argv[1:] and not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported

from dmcmc_fast.engine.graph import GraphedDenoiser  # noqa: E402
from dmcmc_fast.engine.runner import integrator_calls, run_dlg_pipelined  # noqa: E402
from dmcmc_fast.mcmc.classifier import NoiseLevelNet, TrainedLevelClassifier, level_sigmas  # noqa: E402
from dmcmc_fast.mcmc.dlg import DLGConfig, dlg_init, run_dlg  # noqa: E402


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
    """DDPM CIFAR-10 architecture (google/ddpm-cifar10-32 config), random weights, as a VE denoiser."""
    from diffusers import DDPMScheduler, UNet2DModel

    from dmcmc_fast.models.adapters import DiffusersUNetAdapter

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=32, in_channels=3, out_channels=3, layers_per_block=2,
                       block_out_channels=(128, 256, 256, 256),
                       down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D")).to(device).eval()
    return DiffusersUNetAdapter(unet, DDPMScheduler(num_train_timesteps=1000))


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def _time_ms(fn, reps: int, device) -> tuple[float, float, float]:
    """(median, q20, q80) milliseconds of `fn()` after one warm-up call."""
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


class _Calls:
    def __init__(self, f):
        self.f, self.n = f, 0

    def __call__(self, x, sigma):
        self.n += 1
        return self.f(x, sigma)


def run(model, classifier, cfg: DLGConfig, batches, blocks: int, reps: int, device: str) -> list[dict]:
    shape = tuple(model.shape)
    evals = integrator_calls(cfg, shape, device, torch.float32)
    rows = []
    for B in batches:
        g = torch.Generator().manual_seed(B)
        graphed = GraphedDenoiser(model, shape, buckets=(B,), mode="auto", device=device)
        x = torch.randn(B, *shape, generator=g).to(device)
        s = torch.full((B,), 1.0, device=device)
        with torch.no_grad():
            graphed(x, s)  # captures on CUDA
            bk = graphed._buckets.get(B)
            bare = bk.graph.replay if bk is not None and bk.graph is not None else (lambda: model(x, s))
            bare_ms = _time_ms(bare, reps, device)
        C = max(1, B // (1 + math.ceil(evals / cfg.n_skip)))
        ids = torch.arange(C, device=device)
        state = dlg_init(model, classifier, cfg, ids, seed=0)
        calls = _Calls(graphed)
        runs = max(1, reps // 10)
        engine = lambda: run_dlg_pipelined(model, classifier, blocks, cfg, chain_ids=ids,  # noqa: E731
                                           state=state, device=device, batch_size=B, denoiser=calls)
        times = {"engine": _time_ms(engine, runs, device)}
        n_calls = calls.n // (runs + 1)  # the same calls in the warm-up and every timed run
        times["plain"] = _time_ms(lambda: run_dlg(model, classifier, blocks, cfg, chain_ids=ids, state=state,
                                                  device=device), runs, device)
        per_call = times["engine"][0] / n_calls
        rows.append({"batch": B, "chains": C, "blocks": blocks, "calls_per_job": evals, "bare_ms": bare_ms,
                     "engine_ms": times["engine"], "plain_ms": times["plain"], "engine_calls": n_calls,
                     "per_call_ms": per_call, "ratio": per_call / bare_ms[0],
                     "engine_samples_s": 1e3 * C * blocks / times["engine"][0],
                     "plain_samples_s": 1e3 * C * blocks / times["plain"][0],
                     "graph": graphed.fallback_reason or ("captured" if graphed.captured else "eager")})
    return rows


def _device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"cpu ({platform.processor() or platform.machine()})"


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, nargs="*", default=[1, 16, 256], help="network batch sizes")
    p.add_argument("--blocks", type=int, default=4, help="DLG blocks per timed run")
    p.add_argument("--n-skip", type=int, default=5)
    p.add_argument("--n-den", type=int, default=10)
    p.add_argument("--reps", type=int, default=50, help="timed forwards per bare measurement (runs: reps // 10)")
    p.add_argument("--out", default=None, help="append JSON lines here (default on GPU: bench/results/engine.jsonl)")
    p.add_argument("--cpu-smoke", action="store_true", help="no GPU: tiny model, batches 1 and 16, 1 block, 3 reps")
    a = p.parse_args(argv)
    if torch.cuda.is_available():
        device, out = "cuda", a.out or os.path.join(os.path.dirname(__file__), "results", "engine.jsonl")
        model, n_levels, what = cifar_unet(device), 1000, "DDPM CIFAR-10 UNet2DModel (random init)"
    elif a.cpu_smoke:
        device, out, a.batches, a.blocks, a.reps = "cpu", a.out, [1, 16], 1, 3
        torch.manual_seed(0)
        model, n_levels, what = TinyDenoiser((1, 8, 8)), 50, "tiny conv denoiser 1x8x8"
    else:
        raise SystemExit("bench/engine.py needs a CUDA GPU; use --cpu-smoke to check that it runs without one")
    net = NoiseLevelNet(tuple(model.shape), n_levels).to(device)
    classifier = TrainedLevelClassifier(net, level_sigmas(n_levels).to(device))
    cfg = DLGConfig(n_skip=a.n_skip, n_den=a.n_den, init_nfe=3, n_init=1)
    rows = run(model, classifier, cfg, a.batches, a.blocks, a.reps, device)
    meta = {"bench": "engine", "device": _device_name(device), "model": what,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "torch": torch.__version__, "n_skip": cfg.n_skip,
            "n_den": cfg.n_den}
    print(f"# {meta['device']} | torch {meta['torch']} | {what} | DLG n_skip {cfg.n_skip}, n_den {cfg.n_den}")
    print(f"{'batch':>5s} {'chains':>6s} {'bare ms':>9s} {'per call':>9s} {'ratio':>6s} {'engine/s':>9s} "
          f"{'plain/s':>9s} graph")
    for r in rows:
        print(f"{r['batch']:5d} {r['chains']:6d} {r['bare_ms'][0]:9.3f} {r['per_call_ms']:9.3f} {r['ratio']:6.2f} "
              f"{r['engine_samples_s']:9.1f} {r['plain_samples_s']:9.1f} {r['graph']}")
    if device == "cpu":
        print("# CPU smoke run: these timings say nothing about GPU performance")
    append_jsonl(out, meta, rows)
    return rows


if __name__ == "__main__":
    main()
