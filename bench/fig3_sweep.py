"""DLG paper Figure 3 analogue on our trained model: quality vs NFE per sample for six integrators, each
alone and as DLG's denoiser, on `unet-mnist`.

- Quality: the MNIST-feature Fréchet distance (`dmcmc_fast.eval.features`, 128-d features of the
  project's MNIST classifier) of the samples (clamped to [-1, 1], as `dmcmc-fast sample` saves them)
  against the cached statistics of the 5000 real digits. Lower is better; it shrinks with the sample
  count, so every point of a run uses the same count (`--samples`, >= 5000 for the committed figure).
- Without DLG: the registered sampler (`dmcmc-fast sample --sampler NAME`: N(0, sigma_max^2 I) prior,
  integrate to 0) at an NFE budget n, batches of `--batch` samples, one chain id per sample.
- With DLG: `run_dlg` with that integrator as the denoiser; `--chains` chains x (samples / chains)
  blocks, every block's denoised sample kept; NFE per sample = n_skip + n_den (the Langevin steps
  and the denoising budget), plus the amortised initialisation share (init_nfe + n_init per chain,
  reported apart). Gibbs step: argmax of the trained classifier `classifier-mnist`.
- rk45 is adaptive: instead of a budget, its tolerances (rtol = atol) are swept and each point is
  plotted at the NFE the solver spent; with DLG the looser `--dlg-rk45-tol` go in integrator_options.
Every NFE in the output is counted by the engine (`CountingDenoiser`): "nfe" = the mean per sample,
"nfe_min"/"nfe_max" its range. Before the sweep a small probe runs DLG(heun) at several eta (the
Langevin step sets the level the chains settle at), recorded with the block-sigma quantiles.

Work is split into chunks of chain ids run by `--workers` processes (one thread each): per-chain
Philox noise makes a chunk's samples independent of how the work is split.

    .venv/bin/python -m bench.fig3_sweep --quick --out /tmp/f3   # seconds: a smoke test
    # on 2 CPU cores one point costs about samples x NFE x 3.5 ms (rk45 alike: its per-sample step
    # control batches the model calls), so the sweep can run in parts, each adding to OUT.json (--extend):
    .venv/bin/python -m bench.fig3_sweep --integrators heun,karras_sde,euler,reverse_diffusion,euler_maruyama
    .venv/bin/python -m bench.fig3_sweep --extend --integrators rk45 --probe-etas=
    .venv/bin/python -m bench.fig3_sweep --extend --nfe 20 --integrators heun,karras_sde,euler,... --probe-etas=
Writes OUT.json (every point, settings, timings), OUT.png (one panel per integrator) and OUT.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import torch

from bench import write_outputs

HERE = os.path.dirname(os.path.abspath(__file__))
PAPER_INTEGRATORS = ("heun", "karras_sde", "euler", "rk45", "reverse_diffusion", "euler_maruyama")  # the default
# and the solvers users run today (issue 19), beside them
INTEGRATOR_NAMES = PAPER_INTEGRATORS + ("deis", "dpmpp_2m", "unipc")
TITLES = {"heun": "heun (EDM Alg. 1)", "karras_sde": "karras_sde (EDM Alg. 2)", "euler": "euler (probability flow)",
          "rk45": "rk45 (probability flow, adaptive)", "reverse_diffusion": "reverse_diffusion (VE SDE)",
          "euler_maruyama": "euler_maruyama (VE SDE)", "deis": "deis (tAB3, VE time)",
          "dpmpp_2m": "dpmpp_2m (DPM-Solver++(2M))", "unipc": "unipc (UniPC-2, bh2)"}
MODEL = "unet-mnist"


def _floats(s: str) -> list[float]:
    return [float(v) for v in s.split(",") if v.strip()]


def _ints(s: str) -> list[int]:
    return [int(v) for v in s.split(",") if v.strip()]


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samples", type=int, default=5000, help="samples per point (with DLG: chains x blocks)")
    p.add_argument("--chains", type=int, default=100, help="DLG chains; blocks per chain = samples / chains")
    p.add_argument("--nfe", default="10", help="NFE budgets per sample of the fixed-step integrators, e.g. 10,20,35")
    p.add_argument("--rk45-tol", default="1e-1", help="rk45 rtol = atol values, without DLG, e.g. 1e-1,1e-2")
    p.add_argument("--dlg-rk45-tol", default="1e-1", help="rk45 rtol = atol values as DLG's denoiser")
    p.add_argument("--rk45-cap", type=int, default=400, help="NFE cap of one rk45 solve (it raises above it)")
    p.add_argument("--eta", type=float, default=4.0, help="DLG Langevin step (see the eta probe)")
    p.add_argument("--n-skip", type=int, default=3, help="DLG Langevin-Gibbs steps per block")
    p.add_argument("--init-nfe", type=int, default=20, help="DLG initialisation integrator budget (karras_sde)")
    p.add_argument("--n-init", type=int, default=10, help="DLG initialisation Langevin-Gibbs steps")
    p.add_argument("--integrators", default=",".join(PAPER_INTEGRATORS),
                   help=f"comma list from {', '.join(INTEGRATOR_NAMES)} (default: the paper's six)")
    p.add_argument("--probe-etas", default="0.25,1,4,8", help="eta values of the probe ('' skips it)")
    p.add_argument("--probe-chains", type=int, default=25)
    p.add_argument("--probe-blocks", type=int, default=10)
    p.add_argument("--probe-nfe", type=int, default=10, help="n_skip + n_den of the probe (heun denoiser)")
    p.add_argument("--batch", type=int, default=250, help="samples per chunk without DLG")
    p.add_argument("--dlg-chunk", type=int, default=50, help="DLG chains per chunk")
    p.add_argument("--workers", type=int, default=2, help="processes (1: run in this process)")
    p.add_argument("--threads", type=int, default=2, help="torch threads in all (split over the workers)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny smoke run: 4 samples, one point per curve, no probe")
    p.add_argument("--out", default=os.path.join(HERE, "results", "fig3_sweep"))
    p.add_argument("--replot", action="store_true", help="only redraw figure and text from OUT.json")
    p.add_argument("--extend", action="store_true",
                   help="add this run's points to OUT.json (same model and DLG settings; same keys are replaced), "
                        "so a sweep too long for one sitting runs in parts")
    a = p.parse_args(argv)
    if a.quick:
        a.samples, a.chains, a.nfe, a.rk45_tol, a.dlg_rk45_tol = 4, 2, "6", "1e-1", "1e-1"
        a.n_skip, a.init_nfe, a.n_init, a.batch, a.dlg_chunk, a.workers, a.threads = 2, 3, 1, 4, 2, 1, 1
        a.probe_etas = ""
    a.integrators = [s.strip() for s in a.integrators.split(",") if s.strip()]
    bad = [s for s in a.integrators if s not in INTEGRATOR_NAMES]
    if bad:
        p.error(f"--integrators must be among {', '.join(INTEGRATOR_NAMES)}, got {', '.join(bad)}")
    if a.samples < 2 or a.chains < 1 or a.samples % a.chains:
        p.error(f"--samples must be >= 2 and a multiple of --chains, got {a.samples} and {a.chains}")
    if a.workers < 1 or a.threads < 1:
        p.error("--workers and --threads must be >= 1")
    if min(_ints(a.nfe), default=0) <= a.n_skip:
        p.error(f"every --nfe must exceed --n-skip ({a.n_skip}) so DLG has a denoising budget, got {a.nfe}")
    return a


# ---- one unit of work: a chunk of chain ids at one point (runs in a worker process) ----

_W: dict = {}


def _worker_init(threads: int):
    torch.set_num_threads(threads)
    from dmcmc_fast.mcmc.classifier import load_classifier
    from dmcmc_fast.models.builtin import load_model

    _W["model"] = load_model(MODEL)
    _W["clf"] = load_classifier("mnist")


def _run_task(t: dict) -> dict:
    """-> samples [n, 1, 28, 28] clamped to the data range, per-sample engine NFE, and DLG's books."""
    if not _W:
        _worker_init(torch.get_num_threads())
    t0 = time.perf_counter()
    model = _W["model"]
    ids = torch.arange(t["start"], t["stop"], dtype=torch.int64)
    out = {"key": t["key"], "start": t["start"]}
    if t["dlg"] is None:
        from dmcmc_fast.models.base import CountingDenoiser
        from dmcmc_fast.samplers import SampleRequest, get_sampler, run_sampler

        spec = get_sampler(t["integrator"])
        counting = CountingDenoiser(model, len(ids))
        x = run_sampler(SampleRequest(counting, ids, t["seed"], t["nfe"], spec.validate(t["options"]), "cpu"), spec)
        out["nfe"] = counting.nfe.clone()
    else:
        from dmcmc_fast.mcmc.dlg import DLGConfig, run_dlg

        cfg = DLGConfig(**t["dlg"], sigma_min=model.sigma_min, sigma_max=model.sigma_max)
        res = run_dlg(model, _W["clf"], t["blocks"], cfg, chain_ids=ids, seed=t["seed"])
        x = res.samples.reshape(-1, *res.samples.shape[2:])  # block-major: [blocks * chains, ...]
        s = res.state
        out.update(nfe_chain=s.nfe.clone(), nfe_init=s.nfe_init.clone(), blocks=s.blocks,
                   classifier_evals=s.classifier_evals.clone(), block_sigma=res.block_sigma.flatten().clone())
    lo, hi = model.data_range
    out["x"] = x.float().clamp(lo, hi)
    out["seconds"] = time.perf_counter() - t0
    return out


# ---- the plan: points and their chunks ----

def _dlg_opts(a, integrator: str, n_den: int, eta: float, options: dict | None = None) -> dict:
    return {"eta": eta, "n_skip": a.n_skip, "n_den": n_den, "integrator": integrator,
            "integrator_options": options or {}, "init_nfe": a.init_nfe, "n_init": a.n_init}


def plan(a) -> list[dict]:
    """Every point of the sweep (and of the eta probe) with its settings."""
    pts = []
    for eta in _floats(a.probe_etas):
        pts.append({"key": f"probe/dlg/eta={eta:g}", "group": "probe", "integrator": "heun", "eta": eta,
                    "chains": a.probe_chains, "blocks": a.probe_blocks,
                    "dlg": _dlg_opts(a, "heun", a.probe_nfe - a.n_skip, eta)})
    if pts:
        pts.append({"key": "probe/heun", "group": "probe", "integrator": "heun", "budget": a.probe_nfe,
                    "num": a.probe_chains * a.probe_blocks, "options": {}, "dlg": None})
    for name in a.integrators:
        if name == "rk45":
            base = [({"rtol": tol, "atol": tol}, a.rk45_cap, f"tol={tol:g}") for tol in _floats(a.rk45_tol)]
            dlg = [({"rtol": tol, "atol": tol}, a.rk45_cap, f"tol={tol:g}") for tol in _floats(a.dlg_rk45_tol)]
        else:
            base = [({}, n, f"nfe={n}") for n in _ints(a.nfe)]
            dlg = [({}, n - a.n_skip, f"nfe={n}") for n in _ints(a.nfe)]
        for opts, budget, tag in base:
            pts.append({"key": f"{name}/alone/{tag}", "group": "alone", "integrator": name, "budget": budget,
                        "num": a.samples, "options": opts, "dlg": None})
        for opts, n_den, tag in dlg:
            pts.append({"key": f"{name}/dlg/{tag}", "group": "dlg", "integrator": name, "chains": a.chains,
                        "blocks": a.samples // a.chains, "dlg": _dlg_opts(a, name, n_den, a.eta, opts)})
    return pts


def tasks(a, pts: list[dict]) -> list[dict]:
    """Chunks of chain ids, the most expensive first (rk45 by a guess of its NFE, as it is adaptive)."""
    out = []
    for p in pts:
        if p["dlg"] is None:
            for s in range(0, p["num"], a.batch):
                out.append({"key": p["key"], "integrator": p["integrator"], "start": s,
                            "stop": min(p["num"], s + a.batch), "nfe": p["budget"], "options": p["options"],
                            "seed": a.seed, "dlg": None})
        else:
            for s in range(0, p["chains"], a.dlg_chunk):
                out.append({"key": p["key"], "integrator": p["integrator"], "start": s,
                            "stop": min(p["chains"], s + a.dlg_chunk), "blocks": p["blocks"], "dlg": p["dlg"],
                            "seed": a.seed})

    def cost(t):
        n = (t["stop"] - t["start"]) * (t.get("blocks", 1))
        per = t["nfe"] if t["dlg"] is None else t["dlg"]["n_skip"] + t["dlg"]["n_den"]
        return n * min(per, 40)
    return sorted(out, key=cost, reverse=True)


def _execute(a, todo: list[dict]):
    """Yield every task's result, as they finish."""
    if a.workers == 1:
        if not _W:
            _worker_init(a.threads)
        for t in todo:
            yield _run_task(t)
        return
    with ProcessPoolExecutor(a.workers, mp_context=get_context("spawn"), initializer=_worker_init,
                             initargs=(max(1, a.threads // a.workers),)) as ex:
        for fut in [ex.submit(_run_task, t) for t in todo]:
            yield fut.result()


# ---- turning chunks into points ----

def _summary(p: dict, parts: list[dict], net) -> dict:
    from dmcmc_fast.eval.features import class_balance, mnist_feature_fd

    parts = sorted(parts, key=lambda r: r["start"])
    x = torch.cat([r["x"] for r in parts])
    r = dict(p)
    if p["dlg"] is None:
        nfe = torch.cat([q["nfe"] for q in parts]).double()
        r.update(samples=x.shape[0])
    else:
        blocks = parts[0]["blocks"]
        spent = torch.cat([q["nfe_chain"] for q in parts]).double()
        init = torch.cat([q["nfe_init"] for q in parts]).double()
        nfe = (spent - init) / blocks  # per sample, without the initialisation (engine counts)
        sig = torch.cat([q["block_sigma"] for q in parts]).double()
        r.update(samples=x.shape[0], dlg=dict(p["dlg"]), nfe_with_init=float((spent / blocks).mean()),
                 init_share=float((init / blocks).mean()), init_nfe_per_chain=float(init.mean()),
                 classifier_evals_per_sample=float(torch.cat([q["classifier_evals"] for q in parts]).double().mean()
                                                   / blocks),
                 block_sigma_quantiles={str(q): float(sig.quantile(q)) for q in (0.1, 0.5, 0.9)})
    r.update(nfe=float(nfe.mean()), nfe_min=float(nfe.min()), nfe_max=float(nfe.max()),
             fd=mnist_feature_fd(x, net), worker_seconds=sum(q["seconds"] for q in parts))
    r.update(class_balance(x, net))
    return r


def run(a) -> dict:
    from dmcmc_fast.eval.features import load_feature_net
    from dmcmc_fast.models.builtin import load_model

    torch.set_num_threads(a.threads if a.workers == 1 else 1)
    net = load_feature_net()
    model = load_model(MODEL)
    pts = plan(a)
    todo = tasks(a, pts)
    left = {p["key"]: sum(t["key"] == p["key"] for t in todo) for p in pts}
    parts: dict[str, list] = {p["key"]: [] for p in pts}
    by_key = {p["key"]: p for p in pts}
    done, t0 = {}, time.time()
    for res in _execute(a, todo):
        k = res["key"]
        parts[k].append(res)
        left[k] -= 1
        if left[k] == 0:
            done[k] = _summary(by_key[k], parts.pop(k), net)
            d = done[k]
            print(f"[{time.time() - t0:6.0f} s] {k:34s} nfe {d['nfe']:6.2f}  fd {d['fd']:8.2f}  "
                  f"({d['worker_seconds']:.0f} worker-s)", flush=True)
    from dmcmc_fast.eval.features import DEFAULT_CHECKPOINT, file_hash
    from dmcmc_fast.models.builtin import __file__ as builtin_file

    ckpt = os.path.join(os.path.dirname(os.path.dirname(builtin_file)), "checkpoints", f"{MODEL}.pt")
    return {
        "settings": {"model": MODEL, "model_sha": file_hash(ckpt), "model_card": getattr(model, "card", {}),
                     "feature_net_sha": file_hash(DEFAULT_CHECKPOINT), "samples_per_point": a.samples,
                     "dlg": {"chains": a.chains, "blocks": a.samples // a.chains, "eta": a.eta,
                             "n_skip": a.n_skip, "n_den": "nfe - n_skip (rk45: the NFE cap, spent adaptively)",
                             "init": f"karras_sde {a.init_nfe} NFE + noise 0.5 + Gibbs + {a.n_init} L-G steps",
                             "classifier": "classifier-mnist (trained), argmax over M=1000 geometric levels",
                             "sigma_min": model.sigma_min, "sigma_max": model.sigma_max},
                     "nfe": _ints(a.nfe), "rk45_tol": _floats(a.rk45_tol), "dlg_rk45_tol": _floats(a.dlg_rk45_tol),
                     "rk45_cap": a.rk45_cap, "seed": a.seed, "batch": a.batch, "workers": a.workers,
                     "threads": a.threads, "quick": a.quick,
                     "probe": {"etas": _floats(a.probe_etas), "chains": a.probe_chains, "blocks": a.probe_blocks,
                               "nfe": a.probe_nfe},
                     "fd": "MNIST-feature Fréchet distance vs the 5000 real digits (cached statistics), samples "
                           "clamped to [-1, 1]"},
        "points": [done[p["key"]] for p in pts],
        "seconds": time.time() - t0,
        "machine": f"{platform.machine()} CPU ({os.cpu_count()} cores), {a.workers} worker(s), "
                   f"torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "",
    }


# ---- figure and text ----

def curves(r: dict, name: str) -> dict:
    return {g: sorted([p for p in r["points"] if p["integrator"] == name and p["group"] == g],
                      key=lambda p: p["nfe"]) for g in ("alone", "dlg")}


def figure(r: dict, path: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in INTEGRATOR_NAMES if any(p["integrator"] == n and p["group"] != "probe" for p in r["points"])]
    cols = 3
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        c = curves(r, name)
        for g, col, lab in (("alone", "tab:red", "alone (from the prior)"), ("dlg", "tab:blue", "with DLG")):
            if c[g]:
                ax.plot([p["nfe"] for p in c[g]], [p["fd"] for p in c[g]], "o-", color=col, label=lab)
        ax.set(title=TITLES[name], xlabel="NFE per sample (counted)", ylabel="MNIST-feature FD")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    st = r["settings"]
    fig.suptitle(f"{st['model']}: FD vs NFE, {st['samples_per_point']} samples per point; DLG {st['dlg']['chains']} "
                 f"chains x {st['dlg']['blocks']} blocks, eta={st['dlg']['eta']}, n_skip={st['dlg']['n_skip']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def verdict(alone: list[dict], dlg: list[dict]) -> str:
    """Compare each DLG point with the alone curve interpolated (in log FD) at the same NFE."""
    import numpy as np

    if not alone or not dlg:
        return "—"
    xs, ys = np.array([p["nfe"] for p in alone]), np.log([p["fd"] for p in alone])
    words = []
    for p in dlg:
        if len(xs) > 1 and xs[0] <= p["nfe"] <= xs[-1]:
            ref = float(np.exp(np.interp(p["nfe"], xs, ys)))
            words.append(f"{'helps' if p['fd'] < ref else 'hurts'} at {p['nfe']:.1f} NFE ({p['fd']:.1f} vs {ref:.1f})")
        else:
            near = min(alone, key=lambda q: abs(q["nfe"] - p["nfe"]))
            rel = "lower" if p["fd"] < near["fd"] else "higher"
            where = "; outside the alone curve's NFE range" if len(xs) > 1 else ""
            words.append(f"{'helps' if rel == 'lower' else 'hurts'}: at {p['nfe']:.1f} NFE FD {p['fd']:.1f}, {rel} "
                         f"than alone at {near['nfe']:.1f} NFE ({near['fd']:.1f}{where})")
    return "; ".join(words)


def markdown(r: dict) -> str:
    st, d = r["settings"], r["settings"]["dlg"]
    rows = []
    order = {n: i for i, n in enumerate(INTEGRATOR_NAMES)}
    for p in sorted(r["points"], key=lambda p: (order[p["integrator"]], p["group"], p["nfe"])):
        if p["group"] == "probe":
            continue
        extra = ""
        if p["group"] == "dlg":
            q = p["block_sigma_quantiles"]
            extra = (f"+{p['init_share']:.2f} init = {p['nfe_with_init']:.2f}; block sigma {q['0.5']:.2f} "
                     f"({q['0.1']:.2f}-{q['0.9']:.2f})")
        opts = p.get("options") or (p["dlg"] or {}).get("integrator_options") or {}
        setting = (f"tol {opts['rtol']:g}" if "rtol" in opts else
                   f"n_den {p['dlg']['n_den']}" if p["group"] == "dlg" else f"budget {p['budget']}")
        rows.append(f"| {p['integrator']} | {p['group']} | {setting} | {p['nfe']:.2f} ({p['nfe_min']:.0f}-"
                    f"{p['nfe_max']:.0f}) | {p['fd']:.2f} | {p['class_share_tv_pred']:.3f} | {extra} |")
    probe = [p for p in r["points"] if p["group"] == "probe"]
    prow = []
    for p in probe:
        if p["dlg"] is None:
            prow.append(f"| heun alone | {p['nfe']:.2f} | — | {p['fd']:.1f} |")
        else:
            q = p["block_sigma_quantiles"]
            prow.append(f"| DLG(heun) eta {p['eta']:g} | {p['nfe']:.2f} | {q['0.5']:.2f} ({q['0.1']:.2f}-{q['0.9']:.2f}) "
                        f"| {p['fd']:.1f} |")
    verdicts = [f"- **{n}**: {verdict(curves(r, n)['alone'], curves(r, n)['dlg'])}" for n in INTEGRATOR_NAMES if any(p["integrator"] == n and p["group"] != "probe" for p in r["points"])]
    probe_text = _probe_text(st["probe"], d["n_skip"], prow)
    return f"""## DLG vs integrators on unet-mnist (DLG paper, Figure 3 analogue)

`bench/fig3_sweep.py`: for each integrator, the MNIST-feature Fréchet distance (FD; features of the
project's MNIST classifier, vs the 5000 real digits; lower is better) of {st['samples_per_point']} samples per point
against the NFE per sample counted by the engine, alone (from N(0, {d['sigma_max']:g}^2 I)) and as DLG's denoiser.
DLG: {d['chains']} chains x {d['blocks']} blocks (every block's denoised sample kept), eta = {d['eta']:g},
n_skip = {d['n_skip']}, n_den = NFE - n_skip, Gibbs step = argmax of {d['classifier']};
initialisation per chain: {d['init']}, amortised over the blocks (column "DLG books").
rk45 points are tolerance settings (rtol = atol) plotted at the NFE spent. Model: {st['model']} (sha
{st['model_sha']}). Seed {st['seed']}.

Command: `{r['command']}` — {r['seconds'] / 60:.1f} min on {r['machine']} ({r['date']}).

| integrator | DLG | setting | NFE per sample (range) | FD | class TV | DLG books: NFE + init share; block sigma median (10-90%) |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Where DLG helps and where it does not (DLG point vs the alone curve, log-interpolated at the same NFE):

{chr(10).join(verdicts)}
{probe_text}
Figure: `bench/results/fig3_sweep.png`; data: `bench/results/fig3_sweep.json`.
"""


def _probe_text(pr: dict, n_skip: int, prow: list[str]) -> str:
    if not prow:
        return ""
    return f"""
Eta probe (DLG(heun), n_skip = {n_skip}, NFE {pr['nfe']} per sample, {pr['chains']} chains x {pr['blocks']} blocks =
{pr['chains'] * pr['blocks']} samples; FD at this small count is biased upward, compare within the table only):

| sampler | NFE | block sigma median (10-90%) | FD |
|---|---|---|---|
{chr(10).join(prow)}
"""


def _load(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


SAME = ("model_sha", "feature_net_sha", "samples_per_point", "dlg", "seed")


def merge(old: dict, new: dict) -> dict:
    """`old`'s points plus `new`'s (new wins on the same key); the settings that make points comparable
    must agree. Commands, times and the swept values accumulate."""
    diff = [k for k in SAME if old["settings"][k] != new["settings"][k]]
    if diff:
        raise ValueError(f"--extend: {', '.join(diff)} differ from the earlier run's; use another --out")
    keys = {p["key"] for p in new["points"]}
    out = dict(new, points=[p for p in old["points"] if p["key"] not in keys] + new["points"])
    out["command"] = f"{old['command']} && {new['command']}"
    out["seconds"] = old["seconds"] + new["seconds"]
    out["date"] = f"{old['date']}; {new['date']}"
    for k in ("nfe", "rk45_tol", "dlg_rk45_tol"):
        out["settings"][k] = sorted(set(old["settings"][k]) | set(new["settings"][k]))
    if not new["settings"]["probe"]["etas"]:
        out["settings"]["probe"] = old["settings"]["probe"]
    return out


def main(argv=None):
    import sys

    a = parse(argv)
    if a.replot:
        r = _load(a.out + ".json")
    else:
        r = run(a)
        r["command"] = "python -m bench.fig3_sweep " + " ".join(sys.argv[1:] if argv is None else argv)
        if a.extend and os.path.exists(a.out + ".json"):
            r = merge(_load(a.out + ".json"), r)
    write_outputs(a.out, r, figure, markdown)


if __name__ == "__main__":
    main()
