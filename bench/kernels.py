"""Bandwidth of the fused Triton kernels (kernels/API.md) against a device-to-device copy of the same
state and against the unfused plain-torch reference (the same math as separate torch ops, noise from
the torch Philox of dmcmc_fast.rng).

    python -m bench.kernels                      # on a CUDA GPU: table + JSON lines appended to --out
    python -m bench.kernels --cpu-smoke          # no GPU: tiny sizes, Triton under TRITON_INTERPRET=1,
                                                 # proves the script runs; its timings mean nothing

For each kernel: bytes = (state tensors read + written) x elements x element size (per-sample
parameters are negligible; the Gibbs cases count the logits, plus x read and written for the fused
block-minimum variant). Every timed launch does the work it counts: the block-minimum cases copy a row
only where sigma < best_sigma, so best_sigma is reset before each launch, outside the timed region,
and every row copies. GB/s = bytes / median time; `copy` is `dst.copy_(src)` of one state tensor
(2 x elements x size bytes), the practical bandwidth ceiling. Times are medians over --reps launches
with the 20% and 80% quantiles; on the GPU each launch is timed alone between two CUDA events, after
a 256 MB write that flushes the L2 (as triton.testing.do_bench does).

Output: the table on stdout; with --out, one JSON line per kernel appended there (default on the GPU:
bench/results/kernels.jsonl) and with --md a markdown section appended there (default on the GPU:
bench/results/kernels.md); an empty string writes nothing (tests use that).
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import time

import torch

from bench import Section, append_jsonl  # noqa: E402

if "--cpu-smoke" in sys.argv[1:] and not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported

import triton  # noqa: E402

from dmcmc_fast.kernels import deis, gibbs, karras_step, langevin, underdamped  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
N_LEVELS = 1000  # DLG's classifier levels
SEED = 0x7BADF00DDEADBEEF


def _cases(b: int, n: int, dtype, device):
    """name -> (entry point, args, state tensors moved: reads + writes, setup run before each launch)."""
    g = torch.Generator(device="cpu").manual_seed(0)

    def st():
        return torch.randn(b, n, generator=g).to(device=device, dtype=dtype)

    def ps(lo, hi):
        return (lo + (hi - lo) * torch.rand(b, generator=g)).to(device)

    ids, step = torch.arange(b, device=device), torch.full((b,), 7, dtype=torch.int64, device=device)
    sig = ps(0.5, 2.0)
    best_sigma = sig.clone()  # > 0.5 sig: every row copies, once best_sigma is reset to sig
    return {
        "langevin_step": (langevin.langevin_step, (st(), st(), sig, ps(0.01, 0.1), SEED, ids, step), 3),
        "mild_step": (langevin.mild_step, (st(), st(), st(), sig, ps(0.01, 0.1), 0.9, SEED, ids, step), 5),
        "baoab_limit_step": (underdamped.baoab_limit_step, (st(), st(), sig, ps(0.01, 0.1), st(), SEED, ids, step), 5),
        "obabo_oba": (underdamped.obabo_oba, (st(), st(), st(), sig, ps(0.01, 0.1), 1.0, SEED, ids, step), 5),
        "obabo_bo": (underdamped.obabo_bo, (st(), st(), st(), sig, ps(0.01, 0.1), 1.0, SEED, ids, step), 4),
        "euler_step": (karras_step.euler_step, (st(), st(), sig, 0.5 * sig), 4),
        "heun_correct": (karras_step.heun_correct, (st(), st(), st(), st(), sig, 0.5 * sig), 5),
        "churn": (karras_step.churn, (st(), sig, ps(0.0, 0.4), 1.003, SEED, ids, step), 2),
        "deis_combine_J3": (deis.deis_combine, (st(), torch.stack([st(), st(), st()]), 1.0,
                                                torch.randn(b, 3, generator=g).to(device)), 5),
        "block_min_update": (gibbs.block_min_update, (st(), 0.5 * sig, st(), best_sigma), 2,
                             lambda: best_sigma.copy_(sig)),  # reset: every row copies in every launch
    }


def _gibbs_cases(b: int, n: int, dtype, device):
    """Gibbs draw over N_LEVELS levels; the fused variant also copies every row of x (best_sigma reset to
    inf before each launch). name -> (call(backend), bytes, setup)."""
    logits = torch.randn(b, N_LEVELS, device=device).to(dtype)
    levels = torch.logspace(2.0, -3.0, N_LEVELS, device=device)
    x = torch.randn(b, n, device=device).to(dtype)
    best_x, best_sigma = torch.empty_like(x), torch.full((b,), float("inf"), device=device)
    nbytes = logits.numel() * logits.element_size()

    def fused(backend):
        return gibbs.gibbs_select_block_min(logits, levels, x, best_x, best_sigma, None, True, SEED, None, 3,
                                            backend=backend)

    return {"gibbs_select_M1000": (lambda backend: gibbs.gibbs_select(logits, levels, None, True, SEED, None, 3,
                                                                       backend=backend), nbytes, None),
            "gibbs_block_min_M1000": (fused, nbytes + 2 * x.numel() * x.element_size(),
                                      lambda: best_sigma.fill_(float("inf")))}


def _time_ms(fn, reps: int, device, setup=None) -> tuple[float, float, float]:
    """(median, q20, q80) milliseconds of `fn()` alone; `setup()` runs before every call, untimed."""
    def once():
        if setup is not None:
            setup()
        fn()

    once()  # warm-up (compilation / interpreter set-up)
    if device == "cuda":
        for _ in range(4):
            once()
        flush = torch.empty(64 * 2**20, dtype=torch.int32, device=device)  # 256 MB > the L2
        ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
        for start, end in ev:
            if setup is not None:
                setup()
            flush.zero_()
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize()
        ts = [start.elapsed_time(end) for start, end in ev]
    else:
        ts = []
        for _ in range(reps):
            if setup is not None:
                setup()
            t = time.perf_counter()
            fn()
            ts.append(1e3 * (time.perf_counter() - t))
    q = statistics.quantiles(ts, n=5) if len(ts) > 1 else ts * 4
    return statistics.median(ts), q[0], q[-1]


def run(batch: int, dim: int, dtype_name: str, reps: int, device: str, only=None, on_row=None) -> list[dict]:
    """One row per kernel (`on_row(rows so far)` after each: the caller writes as it goes)."""
    dtype = DTYPES[dtype_name]
    elem = torch.empty((), dtype=dtype).element_size()
    src = torch.randn(batch, dim, device=device).to(dtype)
    dst = torch.empty_like(src)
    copy_ms = _time_ms(lambda: dst.copy_(src), reps, device)
    copy_gbs = 2 * src.numel() * elem / copy_ms[0] / 1e6
    cases = {name: (lambda backend, fn=fn, args=args: fn(*args, backend=backend), k * batch * dim * elem,
                    rest[0] if rest else None)
             for name, (fn, args, k, *rest) in _cases(batch, dim, dtype, device).items()}
    cases.update(_gibbs_cases(batch, dim, dtype, device))
    rows = []
    for name, (call, nbytes, setup) in cases.items():
        if only and name not in only:
            continue
        fused = _time_ms(lambda: call("triton"), reps, device, setup)
        unfused = _time_ms(lambda: call("torch"), reps, device, setup)
        rows.append({"kernel": name, "batch": batch, "dim": dim, "dtype": dtype_name, "bytes": nbytes,
                     "fused_ms": fused, "torch_ms": unfused, "copy_ms": copy_ms,
                     "fused_gbs": nbytes / fused[0] / 1e6, "copy_gbs": copy_gbs,
                     "frac_of_copy": nbytes / fused[0] / 1e6 / copy_gbs, "speedup_vs_torch": unfused[0] / fused[0]})
        if on_row is not None:
            on_row(rows)
    return rows


def _device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"cpu ({platform.processor() or platform.machine()}), Triton interpreter"


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=512, help="chains per launch (default 512)")
    p.add_argument("--dim", type=int, default=3 * 64 * 64, help="elements per chain (default 3x64x64)")
    p.add_argument("--dtype", choices=list(DTYPES), default="float32")
    p.add_argument("--reps", type=int, default=100, help="timed launches per measurement (default 100)")
    p.add_argument("--kernels", nargs="*", help="subset of kernel names (default: all)")
    p.add_argument("--out", default=None, help="append JSON lines here (default on GPU: bench/results/kernels.jsonl; "
                                               "'' writes nothing)")
    p.add_argument("--md", default=None, help="append a markdown section here (default on GPU: "
                                              "bench/results/kernels.md; '' writes nothing)")
    p.add_argument("--cpu-smoke", action="store_true", help="no GPU: batch 2, dim 300, 2 reps under the interpreter")
    a = p.parse_args(argv)
    results = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    if torch.cuda.is_available():
        device = "cuda"
        out = os.path.join(results, "kernels.jsonl") if a.out is None else a.out
        md = os.path.join(results, "kernels.md") if a.md is None else a.md
    elif a.cpu_smoke:
        device, a.batch, a.dim, a.reps, out, md = "cpu", 2, 300, 2, a.out, a.md
    else:
        raise SystemExit("bench/kernels.py needs a CUDA GPU; use --cpu-smoke to check that it runs without one")
    meta = {"device": _device_name(device), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "torch": torch.__version__,
            "triton": triton.__version__, "interpreted": os.environ.get("TRITON_INTERPRET", "0") == "1",
            "command": "python -m bench.kernels " + shlex.join(sys.argv[1:] if argv is None else argv)}
    section = Section(md)

    def written(rows):  # each row to the JSON lines and the section as it comes (a run cut short keeps them)
        append_jsonl(out, meta, rows[-1:])
        section.write(markdown(meta, rows, a))

    rows = run(a.batch, a.dim, a.dtype, a.reps, device, a.kernels, on_row=written)
    print(f"# {meta['device']} | torch {meta['torch']} | triton {meta['triton']} | {a.dtype} | "
          f"batch {a.batch} x dim {a.dim} | copy {rows[0]['copy_gbs'] if rows else float('nan'):.1f} GB/s")
    print(f"{'kernel':22s} {'MB':>8s} {'fused ms':>9s} {'GB/s':>8s} {'/copy':>6s} {'torch ms':>9s} {'speedup':>8s}")
    for r in rows:
        print(f"{r['kernel']:22s} {r['bytes'] / 1e6:8.2f} {r['fused_ms'][0]:9.4f} {r['fused_gbs']:8.1f} "
              f"{r['frac_of_copy']:6.2f} {r['torch_ms'][0]:9.4f} {r['speedup_vs_torch']:8.1f}")
    if meta["interpreted"]:
        print("# Triton interpreter on CPU: these timings say nothing about GPU performance")
    if rows:
        frac = sorted(r["frac_of_copy"] for r in rows)
        print(f"# summary: {a.dtype}, copy {rows[0]['copy_gbs']:.0f} GB/s; {len(rows)} fused kernels at "
              f"{frac[0]:.2f}..{frac[-1]:.2f} of it (median {statistics.median(frac):.2f}); "
              f"median speedup vs torch {statistics.median(r['speedup_vs_torch'] for r in rows):.1f}x")
    return rows


def markdown(meta: dict, rows: list[dict], a) -> str:
    """One section: device, versions, command, then a row per kernel (medians, [20%, 80%] quantiles)."""
    copy = rows[0]["copy_gbs"] if rows else float("nan")
    lines = [f"\n## Kernel bandwidth — {meta['device']}, {a.dtype}, {meta['time']}\n",
             f"- command: `{meta['command'].strip()}`",
             f"- torch {meta['torch']}, triton {meta['triton']}" + (" (interpreter: timings say nothing about a GPU)"
                                                                     if meta["interpreted"] else ""),
             f"- batch {a.batch} x dim {a.dim}; device-to-device copy {copy:.1f} GB/s (read + write); "
             "fused ms: median [20%, 80%] over each launch alone\n",
             "| kernel | MB moved | fused ms | GB/s | / copy | torch ms | speedup vs torch |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        f, t = r["fused_ms"], r["torch_ms"]
        lines.append(f"| {r['kernel']} | {r['bytes'] / 1e6:.2f} | {f[0]:.4f} [{f[1]:.4f}, {f[2]:.4f}] | "
                     f"{r['fused_gbs']:.1f} | {r['frac_of_copy']:.2f} | {t[0]:.4f} | {r['speedup_vs_torch']:.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
