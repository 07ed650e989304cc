"""The paper's claim on our trained model: DLG(heun) at ~11 NFE per sample against Heun alone at 11.

    python -m bench.dlg_vs_alone                  # unet-mnist, 2000 samples, seeds 0 and 1 (~10 min, 2 cores)
    # the quality map of every solver, alone and as DLG's denoiser, at 10 and 20 NFE (issue 19):
    python -m bench.dlg_vs_alone --integrators heun,deis,dpmpp_2m_sde,... --nfe 10,20 --seeds 0 \
        --out bench/results/quality_map.json --md bench/results/quality_map.md

Every run goes through `api.sample` (the path users run). DLG: `--chains` chains, n_skip 3, heun
denoising with the rest of a 10-NFE block, the trained noise-level classifier, every block a sample, NFE
per sample amortised (block + initialisation share). Heun alone at 11 NFE, from the model's sigma_max,
once to the EDM default sigma_min 0.002 and once to DLG's 0.02 (so the end point is not what differs).
With `--integrators`, each listed integrator gets two rows per budget: alone to sigma_min 0.02 and as
DLG's denoiser with the paper's defaults. Quality: the MNIST-feature Fréchet distance of the samples,
clamped to [-1, 1] as `dmcmc-fast sample` saves them (lower is better; it depends on the sample count, the
same for every row), and the predicted class balance (total variation to uniform). Several seeds show the
spread.
Output: the table, bench/results/dlg_vs_alone.json and .md (a section of RESULTS.md).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch

from bench import save_json_md
from dmcmc_fast import api
from dmcmc_fast.eval.features import apply_batched, class_balance, load_feature_net, real_stats
from dmcmc_fast.eval.frechet import fd_with_interval
from dmcmc_fast.models.builtin import load_model

HERE = os.path.dirname(os.path.abspath(__file__))


def rows_for(a) -> list[tuple[str, str, int, dict]]:
    dlg = dict(classifier="trained", n_skip=3, chains=a.chains)
    if a.integrators:  # the quality map: each integrator alone and as DLG's denoiser, per budget
        own, tag = json.loads(a.integrator_options or "{}"), f" {a.integrator_options}" if a.integrator_options else ""
        dlg_own = {"integrator_options": a.integrator_options} if own else {}
        return [row for nfe in a.nfe for name in a.integrators for row in (
            (f"{name}{tag} alone, sigma_min 0.02", name, nfe + 1, dict(own, sigma_min=0.02)),
            (f"DLG({name}{tag}), paper defaults", "dlg", nfe, dict(dlg, integrator=name, **dlg_own)))]
    nfe = a.nfe[0]
    return [("heun alone, sigma_min 0.002", "heun", nfe + 1, {}),
            ("heun alone, sigma_min 0.02", "heun", nfe + 1, {"sigma_min": 0.02}),
            ("DLG(heun), paper defaults (eta 2)", "dlg", nfe, dlg),
            ("DLG(heun), eta 4", "dlg", nfe, dict(dlg, eta=4.0))]


def markdown(meta: dict, rows: list[dict]) -> str:
    budgets = "~11 NFE" if meta.get("integrators") is None else f"block budgets {meta['nfe']}"
    lines = [f"\n## DLG vs the integrator alone at {budgets} — unet-mnist, {meta['device']}, {meta['time']}\n",
             f"- command: `{meta['command']}`; {meta['num']} samples per run, seeds {meta['seeds']}; "
             "MNIST-feature FD (lower is better; in brackets, where measured, a 90% interval from a bootstrap "
             "over chains), predicted-class TV to uniform. DLG: "
             f"{meta['chains']} chains, n_skip 3, {', '.join(meta.get('integrators') or ['heun'])} denoising, "
             f"{meta['nfe']} NFE per block + the initialisation's share, the committed classifier; alone: "
             "the block budget + 1 NFE from sigma_max.\n",
             "| run | NFE per sample | feature FD per seed | mean | class TV per seed |", "|---|---|---|---|---|"]
    for r in rows:
        fds = ", ".join(f"{s['fd']:.1f}" + (" [{:.1f}, {:.1f}]".format(*s["fd_ci90"]) if s.get("fd_ci90") else "")
                        for s in r["seeds"])
        tvs = ", ".join(f"{s['class_tv']:.3f}" for s in r["seeds"])
        lines.append(f"| {r['row']} | {r['seeds'][0]['nfe']:.2f} | {fds} | {r['fd_mean']:.1f} | {tvs} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--num", type=int, default=2000)
    p.add_argument("--nfe", default="10", help="DLG's block budgets, e.g. 10,20; alone gets nfe + 1 (default 10)")
    p.add_argument("--integrators", default="", help="comma list: the quality map of these integrators "
                   "(default: the heun comparison above)")
    p.add_argument("--integrator-options", default="", help="JSON options of the listed integrators, alone and in "
                   "DLG, e.g. '{\"rtol\": 0.2}' for dpm_adaptive (its --nfe is then a cap)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--boot", type=int, default=100, help="bootstrap draws (over chains) for FD's 90%% interval; 0: none")
    p.add_argument("--chains", type=int, default=100)
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--out", default=os.path.join(HERE, "results", "dlg_vs_alone.json"))
    p.add_argument("--md", default=os.path.join(HERE, "results", "dlg_vs_alone.md"))
    a = p.parse_args(argv)
    a.nfe = [int(n) for n in a.nfe.split(",")]
    a.integrators = [n.strip() for n in a.integrators.split(",") if n.strip()]
    torch.set_num_threads(a.threads)
    model, net = load_model("unet-mnist"), load_feature_net()
    seeds = [int(s) for s in a.seeds.split(",")]
    results = []
    for name, sampler, nfe, opts in rows_for(a):
        per_seed = []
        for seed in seeds:
            t = time.perf_counter()
            out = api.sample(model, sampler, a.num, nfe, seed=seed, progress=False, **opts)
            x = out.samples.clamp(-1, 1)
            chain = out.meta["chain"] if "chain" in out.meta else np.arange(len(x))  # alone: every sample a chain
            fd, ci = fd_with_interval(apply_batched(net.features, x), chain, *real_stats(net), a.boot, seed)
            per_seed.append({"seed": seed, "nfe": float(out.nfe.double().mean()), "fd": fd, "fd_ci90": ci,
                             "class_tv": class_balance(x, net)["class_share_tv_pred"],
                             "seconds": time.perf_counter() - t})
            print(name, json.dumps(per_seed[-1]), flush=True)
        results.append({"row": name, "sampler": sampler, "nfe_budget": nfe, "options": opts, "seeds": per_seed,
                        "fd_mean": statistics.mean(r["fd"] for r in per_seed)})
        save(a, argv, results)  # after every row: a run cut short keeps what it measured
    return results


def save(a, argv, results: list[dict]):
    meta = {"model": "unet-mnist", "num": a.num, "seeds": a.seeds, "chains": a.chains,
            "nfe": a.nfe if a.integrators else a.nfe[0], "integrators": a.integrators or None,
            "device": f"cpu ({a.threads} threads)", "time": time.strftime("%Y-%m-%d %H:%M"),
            "command": "python -m bench.dlg_vs_alone " + " ".join(sys.argv[1:] if argv is None else argv)}
    save_json_md(a.out, {"meta": meta, "rows": results}, a.md, markdown(meta, results))


if __name__ == "__main__":
    main()
