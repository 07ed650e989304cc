"""Launches per NFE on the simulated CUDA device: what each sampler launches on a GPU besides its graphs.

    python -m bench.launches                      # every fixed-step sampler, unet-mnist, batch 1
    python -m bench.launches --model gmm-digits --batch 256 --samplers heun,dpmpp_2m,dlg

Runs `api.sample(model, sampler, ..., device="cuda")` (the path users run, graph="auto") on the simulated
device of `tests/sim_cuda.py`, which counts every eager launch (a device op that computes or writes, or a
Triton kernel, outside a graph replay) and every graph replay. Per NFE = (count at the larger budget - count
at the smaller) / (NFE difference), so what a call does once (copying inputs in, reading the result and its
checks out) cancels. Each budget is counted on its third call: the steady state of a caller that samples
repeatedly (the first call of a configuration runs eagerly with the network graphed, the second captures).
`--first` counts first calls instead. DLG (chains = batch) is counted within one call, between runs of 4 and 8
blocks per chain: its first two rounds run eagerly and capture, the later ones replay. Speed is not simulated:
these are counts, the same on any machine.
Output: the table, bench/results/launches_MODEL_bBATCH.{json,md} (`bench.build_results` puts them in
bench/RESULTS.md under "Launches per NFE").
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402

from bench import save_json_md  # noqa: E402
from dmcmc_fast import api  # noqa: E402
from dmcmc_fast.models.builtin import load_model  # noqa: E402
from dmcmc_fast.samplers import all_samplers  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ADAPTIVE = ("rk45", "dpm_adaptive")
BUDGETS = {"dlg": (7, 10), "ald": (12, 22), "mild": (12, 22), "baoab_limit": (12, 22), "obabo": (12, 22)}
OPTIONS = {"dlg": {"n_levels": 50, "init_nfe": 8, "n_init": 1, "n_skip": 2}}


def _sim():
    """tests/sim_cuda.py, the copy already imported if any: the test suite imports it as `sim_cuda`, and two copies
    would be two devices (their tensors are not each other's)."""
    mod = sys.modules.get("sim_cuda") or sys.modules.get("tests.sim_cuda")
    if mod is None:
        import tests.sim_cuda as mod
    return mod


def counted(model, sampler: str, batch: int, nfe: int, calls: int, num: int | None = None,
            graph: str = "auto") -> tuple[int, int, float]:
    """(eager launches, graph replays, NFE per chain) of the `calls`-th call of this configuration (NFE per chain:
    all the call's NFE over its chains; DLG's chains are `batch`, each yielding num / batch samples)."""
    COUNTS = _sim().COUNTS

    opts = dict(OPTIONS.get(sampler, {}))
    num = batch if num is None else num
    if sampler == "dlg":
        opts.update(chains=batch, batch_size=batch)
    for _ in range(calls - 1):
        api.sample(model, sampler, num, nfe, device="cuda", progress=False, graph=graph, **opts)
    e0, r0 = COUNTS["eager launches"], COUNTS["graph replays"]
    out = api.sample(model, sampler, num, nfe, device="cuda", progress=False, graph=graph, **opts)
    return COUNTS["eager launches"] - e0, COUNTS["graph replays"] - r0, float(out.nfe.double().sum()) / batch


def per_nfe(model, sampler: str, batch: int, calls: int, graph: str = "auto") -> dict:
    """Eager launches and replays per NFE: differenced between two budgets (DLG: between 8 and 16 blocks per chain
    at one budget, after a warm-up call, so its steady state is counted within a call, as a long run reaches it)."""
    if sampler == "dlg":
        nfe = BUDGETS["dlg"][1]
        counted(model, sampler, batch, nfe, 1, num=2 * batch, graph=graph)  # first use: classifier to the device
        (e1, r1, n1), (e2, r2, n2) = (counted(model, sampler, batch, nfe, 1, num=k * batch, graph=graph)
                                      for k in (8, 16))
    else:
        lo, hi = BUDGETS.get(sampler, (9, 19))
        (e1, r1, n1), (e2, r2, n2) = (counted(model, sampler, batch, nfe, calls, graph=graph) for nfe in (lo, hi))
    return {"sampler": sampler, "graph": graph, "nfe": [n1, n2], "eager_per_nfe": (e2 - e1) / (n2 - n1),
            "replays_per_nfe": (r2 - r1) / (n2 - n1), "eager_per_call": [e1, e2], "replays_per_call": [r1, r2]}


def markdown(meta: dict, rows: list[dict]) -> str:
    lines = [f"\n### {meta['model']}, batch {meta['batch']}, {'first' if meta['calls'] == 1 else 'third'} call\n",
             f"- command: `{meta['command']}` (simulated CUDA device, torch {meta['torch']}); per NFE = difference "
             "between two budgets over the difference of their NFE.\n",
             "| sampler | graph | NFE per chain (two runs) | eager launches per NFE | graph replays per NFE | "
             "eager launches per call |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['sampler']} | {r['graph']} | {r['nfe'][0]:g}, {r['nfe'][1]:g} | {r['eager_per_nfe']:.2f} | "
                     f"{r['replays_per_nfe']:.2f} | {r['eager_per_call'][0]}, {r['eager_per_call'][1]} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="unet-mnist")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--samplers", default="", help="comma list (default: every registered non-adaptive sampler)")
    p.add_argument("--first", action="store_true", help="count each configuration's first call")
    p.add_argument("--graph", default="auto,network", help="graph modes to count, comma list (api.sample's graph=; "
                   "network: the network alone captured, what ran before whole batches were)")
    p.add_argument("--out", default=None, help="default bench/results/launches_MODEL_bBATCH.json")
    p.add_argument("--md", default=None, help="default bench/results/launches_MODEL_bBATCH.md")
    a = p.parse_args(argv)
    stem = os.path.join(HERE, "results", f"launches_{a.model}_b{a.batch}")
    a.out, a.md = a.out or stem + ".json", a.md or stem + ".md"
    simulated_cuda = _sim().simulated_cuda

    names = a.samplers.split(",") if a.samplers else sorted(n for n in all_samplers() if n not in ADAPTIVE)
    calls = 1 if a.first else 3
    rows = []
    with simulated_cuda():
        model = load_model(a.model)
        if hasattr(model, "to"):  # a network: its weights on the (simulated) device
            model = model.to("cuda")
        for name in names:
            for graph in a.graph.split(","):
                rows.append(per_nfe(model, name, a.batch, calls, graph))
                r = rows[-1]
                print(f"{name:>20s} {graph:>8s} {r['eager_per_nfe']:6.2f} eager/NFE {r['replays_per_nfe']:5.2f} "
                      f"replays/NFE (per call {r['eager_per_call']})", flush=True)
    meta = {"model": a.model, "batch": a.batch, "calls": calls, "torch": torch.__version__,
            "command": "python -m bench.launches " + " ".join(sys.argv[1:] if argv is None else argv)}
    save_json_md(a.out, {"meta": meta, "rows": rows}, a.md, markdown(meta, rows))
    return rows


if __name__ == "__main__":
    main()
