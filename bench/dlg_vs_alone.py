"""The paper's claim on our trained model: DLG(heun) at ~11 NFE per sample against Heun alone at 11, over
several seeds, with bootstrap intervals.

    # issue 32 (bench/RESULTS.md): five unseen seeds, Heun alone and DLG with n_skip 3 (the default at 10), 2, 1
    python -m bench.dlg_vs_alone --num 400 --chains 20 --seeds 11,12,13,14,15 --nfe 10 --n-skips 3,2,1,5 \
        --boot 200 --resume      # --resume: keep the runs already in --out (one per seed and row)
    # the quality map of every solver, alone and as DLG's denoiser, at 10 and 20 NFE (issue 19):
    python -m bench.dlg_vs_alone --integrators heun,deis,dpmpp_2m_sde,... --nfe 10,20 --seeds 0 \
        --out bench/results/quality_map.json --md bench/results/quality_map.md

Every run goes through `api.sample` (the path users run). Per block budget B (`--nfe`): the integrator
alone at B + 1 NFE from the model's sigma_max to DLG's sigma_min 0.02 (so the end point is not what
differs), DLG with the library's defaults (n_skip from the budget, `mcmc.dlg.n_skip_for_budget`), and DLG
with each n_skip of `--n-skips`; DLG: `--chains` chains, the committed classifier, every block a sample,
NFE per sample amortised (block + initialisation share). With `--integrators`, each listed integrator gets
those rows (alone, DLG) per budget. Quality: the MNIST-feature Fréchet distance of the samples, clamped to
[-1, 1] as `dmcmc-fast sample` saves them (lower is better; it depends on the sample count, the same for
every row), and the predicted class balance (total variation to uniform); DLG rows add the predicted-digit
switch rate between a chain's consecutive samples and the median block sigma.

Intervals (90%): per seed, a bootstrap over chains (`eval.frechet.fd_draws`; Heun alone: over samples);
for the mean over seeds, replicate b is the mean of every seed's replicate b (the seeds are independent
runs); "vs alone" is the DLG row's mean minus the alone row's at the same budget, replicate by replicate.
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
from dmcmc_fast.eval.frechet import fd_draws
from dmcmc_fast.eval.mixing import mixing_report
from dmcmc_fast.mcmc.dlg import n_skip_for_budget
from dmcmc_fast.models.builtin import load_model

HERE = os.path.dirname(os.path.abspath(__file__))


def rows_for(a) -> list[tuple[str, str, int, dict]]:
    """(label, sampler, nfe, options) of every run, budget by budget: the integrator alone, DLG with each n_skip
    of `--n-skips`, and DLG with the defaults unless their n_skip is among those (the same run: `markdown` marks
    that row)."""
    own = json.loads(a.integrator_options or "{}")
    tag = f" {a.integrator_options}" if own else ""
    dlg = dict(classifier="trained", chains=a.chains, **({"integrator_options": a.integrator_options} if own else {}))
    rows = []
    for nfe in a.nfe:
        for name in a.integrators or ["heun"]:
            rows.append((f"{name}{tag} alone", name, nfe + 1, dict(own, sigma_min=0.02)))
            rows += [(f"DLG({name}{tag}), n_skip {k}", "dlg", nfe, dict(dlg, integrator=name, n_skip=k))
                     for k in a.n_skips]
            if n_skip_for_budget(nfe) not in a.n_skips:
                rows.append((f"DLG({name}{tag}), defaults", "dlg", nfe, dict(dlg, integrator=name)))
    return rows


def label(r: dict) -> str:
    """The row's name; a DLG row whose n_skip is the default for its budget says so."""
    if r["sampler"] == "dlg" and is_default(r):
        return f"{r['row'].split(',')[0]}, n_skip {n_skip_for_budget(r['nfe_budget'])} (the default)"
    return r["row"]


def interval(draws) -> list[float] | None:
    return None if draws is None else [float(v) for v in np.quantile(draws, [0.05, 0.95])]


def summarise(rows: list[dict]) -> None:
    """Each row's mean FD over seeds with its interval; each DLG row's difference to the alone row of its budget
    and integrator (rows in `rows_for` order: the alone row leads its group)."""
    alone = None
    for r in rows:
        draws = [np.asarray(s["draws"]) for s in r["seeds"] if s.get("draws") is not None]
        r["fd_mean"] = statistics.mean(s["fd"] for s in r["seeds"])
        r["mean_draws"] = np.mean(draws, axis=0) if len(draws) == len(r["seeds"]) and draws else None
        r["fd_mean_ci90"] = interval(r["mean_draws"])
        if r["sampler"] != "dlg":
            alone = r
            continue
        r["vs_alone"] = r["fd_mean"] - alone["fd_mean"]
        both = r["mean_draws"] is not None and alone["mean_draws"] is not None
        r["vs_alone_ci90"] = interval(r["mean_draws"] - alone["mean_draws"]) if both else None
        r["seeds_better"] = sum(s["fd"] < t["fd"] for s, t in zip(r["seeds"], alone["seeds"]))
    for r in rows:  # each DLG row against the row of its budget and integrator that has the default n_skip
        default = next((d for d in rows if d["sampler"] == "dlg" and d["nfe_budget"] == r["nfe_budget"] and
                        d["options"].get("integrator") == r["options"].get("integrator") and is_default(d)), None)
        if r["sampler"] != "dlg" or default is None or default is r:
            continue
        r["vs_default"] = r["fd_mean"] - default["fd_mean"]
        both = r["mean_draws"] is not None and default["mean_draws"] is not None
        r["vs_default_ci90"] = interval(r["mean_draws"] - default["mean_draws"]) if both else None


def is_default(r: dict) -> bool:
    """A DLG row run with the n_skip the library picks for its budget (given or left to the library)."""
    return r["options"].get("n_skip", n_skip_for_budget(r["nfe_budget"])) == n_skip_for_budget(r["nfe_budget"])


def _ci(v) -> str:
    return " [{:.1f}, {:.1f}]".format(*v) if v else ""


def markdown(meta: dict, rows: list[dict]) -> str:
    lines = [f"\n## DLG vs the integrator alone at block budgets {meta['nfe']} — unet-mnist, {meta['device']}, "
             f"{meta['time']}\n",
             f"- command: `{meta['command']}`; {meta['num']} samples per run, seeds {meta['seeds']}; "
             "MNIST-feature FD (lower is better), in brackets a 90% interval (per seed: a bootstrap over chains, "
             f"{meta['boot']} draws; mean: over seeds and chains); \"vs alone\": the DLG row's mean FD minus the "
             "alone row's at the same budget, with its interval, and the seeds on which DLG was lower; \"vs "
             "default\": a DLG row's mean FD minus the default n_skip's row's. DLG: "
             f"{meta['chains']} chains, {', '.join(meta['integrators'])} denoising, the block budget per sample + "
             "the initialisation's share, the committed classifier; switch: the share of a chain's consecutive "
             "samples whose predicted digit differs; block sigma: median level denoised from. Alone: the block "
             "budget + 1 NFE from sigma_max to sigma_min 0.02.\n",
             "| run | NFE per sample | feature FD per seed | mean | vs alone (seeds better) | vs default | class TV | "
             "switch | block sigma |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        fds = ", ".join(f"{s['fd']:.1f}{_ci(s.get('fd_ci90'))}" for s in r["seeds"])
        tv = statistics.mean(s["class_tv"] for s in r["seeds"])
        nfe = statistics.mean(s["nfe"] for s in r["seeds"])
        vs = (f"{r['vs_alone']:+.1f}{_ci(r.get('vs_alone_ci90'))} ({r['seeds_better']}/{len(r['seeds'])})"
              if "vs_alone" in r else "")
        sw = (f"{statistics.mean(s['class_switch_rate'] for s in r['seeds']):.3f}"
              if r["sampler"] == "dlg" else "")
        bs = (f"{statistics.mean(s['block_sigma_median'] for s in r['seeds']):.2f}" if r["sampler"] == "dlg" else "")
        vd = f"{r['vs_default']:+.1f}{_ci(r.get('vs_default_ci90'))}" if "vs_default" in r else ""
        lines.append(f"| {label(r)} | {nfe:.2f} | {fds} | {r['fd_mean']:.1f}{_ci(r.get('fd_mean_ci90'))} | {vs} | "
                     f"{vd} | {tv:.3f} | {sw} | {bs} |")
    return "\n".join(lines) + "\n"


def measure(model, net, ref, name: str, sampler: str, nfe: int, opts: dict, seed: int, num: int, boot: int) -> dict:
    t = time.perf_counter()
    out = api.sample(model, sampler, num, nfe, seed=seed, progress=False, **opts)
    x = out.samples.clamp(-1, 1)
    chain = out.meta["chain"] if "chain" in out.meta else np.arange(len(x))  # alone: every sample a chain
    fd, draws = fd_draws(apply_batched(net.features, x), chain, *ref, boot, seed)
    res = {"seed": seed, "nfe": float(out.nfe.double().mean()), "fd": fd, "fd_ci90": interval(draws),
           "class_tv": class_balance(x, net)["class_share_tv_pred"], "seconds": time.perf_counter() - t}
    if "chain" in out.meta:  # DLG: how its chains moved
        labels = apply_batched(net, x).argmax(1).numpy()
        mix = mixing_report(x, out.meta["chain"], out.meta["block"], out.meta["sigma"], labels, "class")
        res.update(class_switch_rate=mix["class_switch_rate"], block_sigma_median=mix["block_sigma_q10_50_90"][1])
    print(name, json.dumps(res), flush=True)
    res["draws"] = None if draws is None else [float(v) for v in draws]
    return res


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--num", type=int, default=2000)
    p.add_argument("--nfe", default="10", help="DLG's block budgets, e.g. 10,20; alone gets nfe + 1 (default 10)")
    p.add_argument("--n-skips", default="", help="comma list: DLG rows with these n_skip besides the defaults' row")
    p.add_argument("--integrators", default="", help="comma list: the quality map of these integrators "
                   "(default: heun)")
    p.add_argument("--integrator-options", default="", help="JSON options of the listed integrators, alone and in "
                   "DLG, e.g. '{\"rtol\": 0.2}' for dpm_adaptive (its --nfe is then a cap)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--boot", type=int, default=100, help="bootstrap draws (over chains) for FD's 90%% interval; 0: none")
    p.add_argument("--chains", type=int, default=100)
    p.add_argument("--seeds", default="11,12,13,14,15", help="comma list (0, 1 and 7 were used before issue 32)")
    p.add_argument("--out", default=os.path.join(HERE, "results", "dlg_vs_alone.json"))
    p.add_argument("--md", default=os.path.join(HERE, "results", "dlg_vs_alone.md"))
    p.add_argument("--resume", action="store_true", help="reuse the rows of --out measured with the same --num, "
                   "--chains, --seeds and --boot (a run cut short, or one more n_skip)")
    p.add_argument("--render", action="store_true", help="only rewrite --md from --out (the defaults' row marked "
                   "by the library's n_skip rule as it is now)")
    a = p.parse_args(argv)
    if a.render:
        with open(a.out) as f:
            done = json.load(f)
        summarise(done["rows"])
        save_json_md(None, {}, a.md, markdown(done["meta"], done["rows"]))
        return done["rows"]
    a.nfe = [int(n) for n in a.nfe.split(",")]
    a.n_skips = [int(n) for n in a.n_skips.split(",") if n.strip()]
    a.integrators = [n.strip() for n in a.integrators.split(",") if n.strip()]
    torch.set_num_threads(a.threads)
    model, net = load_model("unet-mnist"), load_feature_net()
    ref = real_stats(net)
    seeds = [int(s) for s in a.seeds.split(",")]
    done = measured(a) if a.resume else {}
    results = []
    for name, sampler, nfe, opts in rows_for(a):
        have = {s["seed"]: s for s in done.get(key(sampler, nfe, opts), [])}
        row = {"row": name, "sampler": sampler, "nfe_budget": nfe, "options": opts, "seeds": []}
        results.append(row)
        for seed in seeds:
            row["seeds"].append(have.get(seed) or measure(model, net, ref, name, sampler, nfe, opts, seed, a.num,
                                                          a.boot))
            save(a, argv, results)  # after every run: a run cut short keeps what it measured (`--resume`)
    return results


def key(sampler: str, nfe: int, opts: dict) -> str:
    return json.dumps([sampler, nfe, opts], sort_keys=True)


def measured(a) -> dict:
    """`--resume`: the runs of `--out` measured with the same samples, chains, seeds and bootstrap: row `key` ->
    its seeds' results."""
    if not os.path.exists(a.out):
        return {}
    with open(a.out) as f:
        old = json.load(f)
    m = old["meta"]
    if (m["num"], m["chains"], m["seeds"], m["boot"]) != (a.num, a.chains, a.seeds, a.boot):
        raise SystemExit(f"--resume: {a.out} was measured with other settings: {m['command']}")
    return {key(r["sampler"], r["nfe_budget"], r["options"]): r["seeds"] for r in old["rows"]}


def save(a, argv, results: list[dict]):
    summarise(results)
    meta = {"model": "unet-mnist", "num": a.num, "seeds": a.seeds, "chains": a.chains, "nfe": a.nfe,
            "n_skips": a.n_skips, "integrators": a.integrators or ["heun"], "boot": a.boot,
            "device": f"cpu ({a.threads} threads)", "time": time.strftime("%Y-%m-%d %H:%M"),
            "command": "python -m bench.dlg_vs_alone " + " ".join(sys.argv[1:] if argv is None else argv)}
    rows = [{k: v for k, v in r.items() if k != "mean_draws"} for r in results]
    save_json_md(a.out, {"meta": meta, "rows": rows}, a.md, markdown(meta, results))


if __name__ == "__main__":
    main()
