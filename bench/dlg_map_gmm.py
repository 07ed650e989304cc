"""DLG's quality map on gmm-mnist (issue 15, part 6): each integrator alone and as DLG's denoiser, at ~10
and ~20 NFE per sample, with the exact noise-level classifier, at two mixture widths.

    python -m bench.dlg_map_gmm                                  # std 0.05 and 0.3, 7 integrators, ~10 and ~20
    python -m bench.dlg_map_gmm --std 0.3 --integrators heun --nfe 20 --variants eta2,restart10

Every run goes through `api.sample` and is measured as `bench.dlg_mixing` measures it (its `run`): the
exact Fréchet distance to the mixture with a 90% interval from a bootstrap over chains, mode coverage,
and, for DLG, the mixing diagnostics. At a target T:
- alone: the integrator from the model's sigma_max to sigma_min 0.02 (DLG's end point), T + 1 NFE, one
  chain per sample (heun also to its EDM default 0.002);
- DLG: n_skip 3 and a block budget chosen so the NFE per sample, the initialisation's share (and the
  restarts', `restart_every`) included, stays within T + 1: block = T + 1 - ceil(expected share), the
  share counted from init_nfe + n_init per initialisation (an upper bound). Each `--variants` name is a
  `bench.dlg_mixing.VARIANTS` entry (eta2: the paper's settings in our units).
The DLG rows of one budget share their Langevin-Gibbs chains across denoisers of equal step count (the
chains do not depend on the denoiser, only on the RNG counters), so they are not independent of each other.
Output: the table, bench/results/dlg_map_gmm.json and .md (a section of RESULTS.md).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from dataclasses import fields
from types import SimpleNamespace

import torch

from bench import save_json_md
from bench.dlg_mixing import VARIANTS, run, verdict
from dmcmc_fast.mcmc.dlg import DLGConfig
from dmcmc_fast.models.builtin import load_model

HERE = os.path.dirname(os.path.abspath(__file__))
ALONE_SIGMA_MIN = 0.02  # DLG's denoising end point (the paper's 0.01 on [0, 1] data)
N_SKIP = 3


def block_budget(target: int, opts: dict, num: int, chains: int) -> int:
    """DLG's block budget at a target of `target` NFE per sample: target + 1 less the initialisations' share,
    rounded up, so the amortised NFE per sample stays within target + 1."""
    cfg = DLGConfig(**{f.name: opts[f.name] for f in fields(DLGConfig) if f.name in opts})
    blocks = num / chains  # per chain, on average
    inits = math.ceil(blocks / cfg.restart_every) if cfg.restart_every else 1
    block = target + 1 - math.ceil(cfg.init_cost() * inits / blocks)
    if block <= opts["n_skip"]:
        raise ValueError(f"target {target} NFE leaves no denoising budget for {opts}: block budget {block}")
    return block


def rows_for(a, skipped: list[str]) -> list[tuple]:
    """(std, target, integrator, row name, sampler, nfe, options) of every run, alone rows first; a DLG variant
    whose initialisations leave no block budget at a target is skipped (named in `skipped`)."""
    out = []
    for std in a.std:
        for target in a.nfe:
            for name in a.integrators:
                if name == "heun":
                    out.append((std, target, name, "heun alone, sigma_min 0.002", "heun", target + 1, {}))
                out.append((std, target, name, f"{name} alone", name, target + 1, {"sigma_min": ALONE_SIGMA_MIN}))
                for v in a.variants:
                    opts = dict(VARIANTS[v], chains=a.chains, n_skip=N_SKIP, integrator=name)
                    try:
                        block = block_budget(target, opts, a.num, a.chains)
                    except ValueError as err:
                        skipped.append(f"std {std}, DLG({name}), {v}: {err}")
                        continue
                    out.append((std, target, name, f"DLG({name}), {v}", "dlg", block, opts))
    return out


def markdown(meta: dict, rows: list[dict]) -> str:
    lines = [f"\n## DLG vs each integrator alone, quality map — gmm-mnist, {meta['device']}, {meta['time']}\n",
             f"- command: `{meta['command']}`",
             f"- {meta['num']} samples per run; exact classifier; DLG: {meta['chains']} chains, n_skip {N_SKIP}, block "
             "budget chosen so that NFE per sample (block + the initialisations' share) stays within target + 1; "
             f"alone: target + 1 NFE from sigma_max to sigma_min {ALONE_SIGMA_MIN}. FD: exact Fréchet distance to "
             "the mixture, 90% interval from a bootstrap over chains; \"vs alone\": the DLG row's interval against "
             "the same integrator alone at the same target. The DLG rows of one variant and budget share their "
             "Langevin-Gibbs chains across denoisers of equal step count (the chains depend on the RNG counters, "
             "not on the denoiser), so they are not independent of each other. Variants: "
             + "; ".join(f"{v} = {VARIANTS[v] or 'the paper settings (eta 2)'}" for v in meta["variants"]) + "."]
    lines += [f"- not run: {s}" for s in meta["skipped"]] + [""]
    for std in meta["std"]:
        lines += [f"\n### std {std}\n",
                  "| ~NFE | run | block | NFE/sample | FD [90% CI] | vs alone | mode coverage | block sigma q10/50/90 "
                  "| switch rate | modes/chain | ESS/sample |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        mine = [r for r in rows if r["std"] == std]
        for r in mine:
            alone = next((q for q in mine if q["target"] == r["target"] and q["variant"] == f"{r['integrator']} alone"),
                         None)
            vs = verdict(r, alone) if r["sampler"] == "dlg" and alone and r["fd_ci90"] and alone["fd_ci90"] else ""
            ci = " [{:.2f}, {:.2f}]".format(*r["fd_ci90"]) if r["fd_ci90"] else ""
            q = "/".join(f"{v:.3g}" for v in r["block_sigma_q10_50_90"]) if "block_sigma_q10_50_90" in r else "-"
            block = r["nfe_budget"] if r["sampler"] == "dlg" else "-"
            lines.append(f"| {r['target']} | {r['variant']} | {block} | {r['nfe_per_sample']:.2f} | {r['fd']:.2f}{ci} "
                         f"| {vs} | {r['mode_coverage']:.3f} | {q} | {r.get('mode_switch_rate', '-')} | "
                         f"{r.get('distinct_modes_per_chain', '-')} | {r.get('ess_per_sample', '-')} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--std", default="0.05,0.3", help="gmm-mnist mode widths (default 0.05,0.3)")
    p.add_argument("--integrators", default="heun,karras_sde,euler,deis,dpmpp_2m,dpmpp_2m_sde,unipc")
    p.add_argument("--nfe", default="10,20", help="targets: NFE per sample (alone gets target + 1)")
    p.add_argument("--variants", default="eta2,sigma2_eta1,sigma2_eta1_restart10",
                   help="DLG variants (bench.dlg_mixing.VARIANTS)")
    p.add_argument("--model", default="gmm-mnist")
    p.add_argument("--num", type=int, default=2000)
    p.add_argument("--chains", type=int, default=50)
    p.add_argument("--boot", type=int, default=30, help="bootstrap draws for the FD interval (0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=os.path.join(HERE, "results", "dlg_map_gmm.json"))
    p.add_argument("--md", default=os.path.join(HERE, "results", "dlg_map_gmm.md"))
    a = p.parse_args(argv)
    a.std = [float(s) for s in a.std.split(",")]
    a.nfe = [int(n) for n in a.nfe.split(",")]
    a.integrators = [n.strip() for n in a.integrators.split(",") if n.strip()]
    a.variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    unknown = [v for v in a.variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    torch.set_num_threads(1)
    meta = {"bench": "dlg_map_gmm", "model": a.model, "device": "cpu (1 thread)", "num": a.num, "chains": a.chains,
            "std": a.std, "nfe": a.nfe, "integrators": a.integrators, "variants": a.variants,
            "time": time.strftime("%Y-%m-%d %H:%M"), "skipped": [],
            "command": "python -m bench.dlg_map_gmm " + shlex.join(sys.argv[1:] if argv is None else argv)}
    models, rows = {}, []
    for std, target, integ, name, sampler, nfe, opts in rows_for(a, meta["skipped"]):
        if std not in models:
            models[std] = load_model(a.model, std=std)
        row = run(models[std], name, sampler, opts, SimpleNamespace(num=a.num, nfe=nfe, seed=a.seed, boot=a.boot))
        rows.append({"std": std, "target": target, "integrator": integ, "nfe_budget": nfe, **row})
        print(json.dumps(rows[-1]), flush=True)
        save_json_md(a.out, {"meta": meta, "rows": rows}, a.md, markdown(meta, rows))  # a cut run keeps its rows
    return rows


if __name__ == "__main__":
    main()
