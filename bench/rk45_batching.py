"""rk45 with batched model calls (`sample_rk45`) vs one scipy `solve_ivp` per sample
(`sample_rk45_scipy`), side by side in one run: same model, same start states, same tolerances.

Both take the same per-sample step-size decisions, so the NFE per sample is compared (equal on an
fp64 analytic model, see tests/test_integrators.py; on a float32 network a batch-1 and a batch-B call
can differ in the last bits, which may move a borderline accept/reject) and so is the result.

    python -m bench.rk45_batching                    # unet-mnist, 64 samples, rtol = atol = 1e-1
    python -m bench.rk45_batching --model gmm-mnist --num 256 --tol 1e-3
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from bench import write_outputs
from dmcmc_fast.integrators.rk45 import sample_rk45, sample_rk45_scipy
from dmcmc_fast.models.builtin import load_model

HERE = os.path.dirname(os.path.abspath(__file__))


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="unet-mnist")
    p.add_argument("--num", type=int, default=64, help="samples (>= 1)")
    p.add_argument("--tol", type=float, default=1e-1, help="rtol = atol, in (0, 1]")
    p.add_argument("--cap", type=int, default=400, help="NFE cap per sample")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=os.path.join(HERE, "results", "rk45_batching"))
    a = p.parse_args(argv)
    if a.num < 1:
        p.error(f"--num must be >= 1, got {a.num}")
    return a


def run(a) -> dict:
    torch.set_num_threads(a.threads)
    model = load_model(a.model)
    shape = tuple(model.shape)
    x = model.sigma_max * torch.randn((a.num, *shape), generator=torch.Generator().manual_seed(0))
    rows = []
    for fn in (sample_rk45_scipy, sample_rk45):  # warm-up (first-call costs), not timed
        fn(model, x[:2], model.sigma_max, a.cap, sigma_min=model.sigma_min, rtol=a.tol, atol=a.tol)
    for name, fn in (("scipy, one sample per call", sample_rk45_scipy), ("ours, batched calls", sample_rk45)):
        t0 = time.perf_counter()
        r = fn(model, x, model.sigma_max, a.cap, sigma_min=model.sigma_min, rtol=a.tol, atol=a.tol)
        sec = time.perf_counter() - t0
        rows.append({"name": name, "seconds": sec, "samples_per_s": a.num / sec, "nfe": r.nfe.tolist(), "x": r.x})
    ref, ours = rows
    same_nfe = sum(int(p == q) for p, q in zip(ref["nfe"], ours["nfe"]))
    diff = (ours.pop("x") - ref.pop("x")).abs().flatten(1).max(1).values
    return {"model": a.model, "num": a.num, "tol": a.tol, "threads": a.threads, "rows": rows,
            "speedup": ref["seconds"] / ours["seconds"], "same_nfe": same_nfe,
            "max_abs_diff_same_nfe": max([float(d) for d, p, q in zip(diff, ref["nfe"], ours["nfe"]) if p == q],
                                         default=float("nan")),
            "median_abs_diff": float(diff.median()),
            "device": f"{platform.machine()} CPU ({os.cpu_count()} cores), torch {torch.__version__}",
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def figure(r: dict, path: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    for row in r["rows"]:
        ax.hist(row["nfe"], bins=20, alpha=0.6, label=f"{row['name']} ({row['samples_per_s']:.2f} samples/s)")
    ax.set_xlabel("NFE per sample"); ax.set_ylabel("samples"); ax.legend(fontsize=7)
    ax.set_title(f"rk45 on {r['model']}, rtol = atol = {r['tol']:g}", fontsize=9)
    fig.tight_layout(); fig.savefig(path, dpi=110); plt.close(fig)


def markdown(r: dict) -> str:
    lines = ["## rk45: batched step control vs one scipy solve per sample", "",
             f"`python -m bench.rk45_batching --model {r['model']} --num {r['num']} --tol {r['tol']:g} "
             f"--threads {r['threads']}` — {r['device']}, {r['when']}.", "",
             "| solver | seconds | samples/s | mean NFE |", "|---|---|---|---|"]
    for row in r["rows"]:
        lines.append(f"| {row['name']} | {row['seconds']:.1f} | {row['samples_per_s']:.2f} | "
                     f"{sum(row['nfe']) / len(row['nfe']):.1f} |")
    lines += ["", f"Speed-up (scipy time / ours): **{r['speedup']:.2f}x**. Same NFE on {r['same_nfe']} of "
              f"{r['num']} samples; on those the largest |difference| of a sample is "
              f"{r['max_abs_diff_same_nfe']:.2e} (median over all samples {r['median_abs_diff']:.2e}; "
              "a batch-1 and a batch-B float32 call differ in the last bits, and a sample near the boundary "
              "of two modes can go either way)."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    a = parse(argv)
    write_outputs(a.out, run(a), figure, markdown)


if __name__ == "__main__":
    main()
