"""Per-step host work made visible: aten ops dispatched per NFE by each sampler, beside a plain loop.

    python -m bench.op_counts            # every registered sampler on gmm-digits, B = 4

Every op of a run is counted by dispatch (a TorchDispatchMode), for `api.sample` (the path users run)
at two budgets, each counted on its second call (what is built once per grid, the shared Karras grid and
DEIS/UniPC's coefficients, is cached by then: setup, not per-step work); ops per NFE = (ops at the larger
budget - ops at the smaller) / (NFE difference), so setup and the end of a run cancel out. The model's own ops (counted on one call) are subtracted, which
leaves what the sampler itself dispatches per model evaluation: on a GPU each op is a kernel launch
(or graph node), on the CPU each costs microseconds of Python and dispatch. DLG's figure includes its
classifier (the exact noise-level posterior). The reference row is a plain EDM Heun loop (20 lines,
`bench.baselines`-style) with the same model. Output: the table, bench/results/op_counts.{json,md}.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from bench import save_json_md
from dmcmc_fast import api
from dmcmc_fast.models.builtin import load_model
from dmcmc_fast.samplers import all_samplers

HERE = os.path.dirname(os.path.abspath(__file__))
# two budgets per sampler that differ in steps (defaults: 9 and 19); adaptive solvers are left out
BUDGETS = {"dlg": (7, 12)}
OPTIONS = {"dlg": {"n_levels": 50, "init_nfe": 8, "n_init": 1, "n_skip": 2, "chains": 1}}
ADAPTIVE = ("rk45", "dpm_adaptive")


class OpCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.ops.values())


def count(fn) -> tuple[int, Counter]:
    with torch.no_grad(), OpCounter() as c:
        fn()
    return c.total, c.ops


def plain_heun(model, x, n_steps: int, sigma_min=0.002, sigma_max=80.0, rho=7.0):
    """EDM Alg. 1 as users write it: one grid, a Python loop, 2N - 1 NFE."""
    i = torch.arange(n_steps, dtype=torch.float64)
    t = (sigma_max ** (1 / rho) + i / (n_steps - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    t = torch.cat([t, torch.zeros(1, dtype=torch.float64)]).tolist()
    ones = torch.ones(x.shape[0])
    for j in range(n_steps):
        d = (x - model(x, t[j] * ones)) / t[j]
        x_next = x + (t[j + 1] - t[j]) * d
        if t[j + 1] > 0:
            d = 0.5 * (d + (x_next - model(x_next, t[j + 1] * ones)) / t[j + 1])
            x_next = x + (t[j + 1] - t[j]) * d
        x = x_next
    return x


def per_nfe(model, sampler: str, batch: int, model_ops: int) -> dict:
    lo, hi = BUDGETS.get(sampler, (9, 19))
    runs = []
    for nfe in (lo, hi):
        out = {}

        def run():
            out.update(r=api.sample(model, sampler, batch, nfe, progress=False, **OPTIONS.get(sampler, {})))
        run()  # warm: what is built once per grid (shared grids, DEIS/UniPC coefficients) is setup, not per step
        ops, hist = count(run)
        runs.append((ops, float(out["r"].nfe.double().mean()), hist))
    (o1, n1, h1), (o2, n2, h2) = runs
    extra = (o2 - o1) / (n2 - n1)
    top = (h2 - h1).most_common(5)
    return {"sampler": sampler, "nfe": [n1, n2], "ops_per_nfe": extra, "sampler_ops_per_nfe": extra - model_ops,
            "top_ops": [(k, round(v / (n2 - n1), 2)) for k, v in top]}


def markdown(meta: dict, rows: list[dict]) -> str:
    lines = ["\n## Ops per NFE — what each sampler dispatches besides the model\n",
             f"- command: `{meta['command']}`; model gmm-digits ({meta['model_ops_per_call']} aten ops per call, "
             f"subtracted), B = {meta['batch']}, torch {meta['torch']}; counted by dispatch, so the figure is the same "
             "on any machine. DLG includes its classifier (the exact posterior). Each budget's run is counted on "
             "its second call (per-grid setup cached, as in repeated sampling).\n",
             "| sampler | sampler ops per NFE | most frequent (per NFE) |", "|---|---|---|"]
    for r in rows:
        top = ", ".join(f"{k} {v:g}" for k, v in r["top_ops"])
        lines.append(f"| {r['sampler']} | {r['sampler_ops_per_nfe']:.1f} | {top or '-'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--samplers", default="", help="comma list (default: every registered non-adaptive sampler)")
    p.add_argument("--out", default=os.path.join(HERE, "results", "op_counts.json"))
    p.add_argument("--md", default=os.path.join(HERE, "results", "op_counts.md"))
    a = p.parse_args(argv)
    model = load_model("gmm-digits")
    x = torch.randn(a.batch, *model.shape)
    model_ops, _ = count(lambda: model(x, torch.ones(a.batch)))
    names = a.samplers.split(",") if a.samplers else sorted(n for n in all_samplers() if n not in ADAPTIVE)
    rows = []
    o1, _ = count(lambda: plain_heun(model, x.clone(), 5))
    o2, _ = count(lambda: plain_heun(model, x.clone(), 10))
    rows.append({"sampler": "plain Heun loop", "nfe": [9, 19], "ops_per_nfe": (o2 - o1) / 10,
                 "sampler_ops_per_nfe": (o2 - o1) / 10 - model_ops, "top_ops": []})
    for name in names:
        rows.append(per_nfe(model, name, a.batch, model_ops))
        print(f"{name:>20s} {rows[-1]['sampler_ops_per_nfe']:7.1f} ops/NFE  {rows[-1]['top_ops'][:3]}", flush=True)
    meta = {"model": "gmm-digits", "model_ops_per_call": model_ops, "batch": a.batch, "torch": torch.__version__,
            "command": "python -m bench.op_counts " + " ".join(sys.argv[1:] if argv is None else argv)}
    save_json_md(a.out, {"meta": meta, "rows": rows}, a.md, markdown(meta, rows))
    return rows


if __name__ == "__main__":
    main()
