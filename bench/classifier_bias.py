"""The noise-level classifier's argmax level error by sigma band, and where DLG chains live (issue 15).

    python -m bench.classifier_bias                               # the committed mnist classifier
    python -m bench.classifier_bias --classifier mnist,new.pt     # several, side by side

Error = argmax level - reference level, in level indices (one level = a factor ~1.0107 in sigma; level 0 is
the highest sigma, so a positive error means the classifier sees less noise than there is). Per sigma band
(`--edges`, default [0.02, 0.1), [0.1, 0.5), [0.5, 2), [2, 5), [5, 20), [20, 100]), `--per-band` draws with
levels uniform over the classifier's levels in the band; reported: median, mean (the bias), mean |error| and
the share within ±5 / ±10 levels, against
- (a) the true level of held-out MNIST images noised as x0 + sigma_m z: the images the classifier's training
  kept out (`training.classifier.split` with the seed and shares in its meta; checkpoints older than
  issue 15 record none, and their card says seed 0 with 10% held out, which is what is used);
- (b) the exact posterior's argmax (`ExactLevelPosterior` of gmm-mnist over the classifier's own levels,
  uniform prior) on gmm-mnist samples noised the same way. gmm-mnist's modes have std 0.05, so below
  sigma ~0.05 the exact posterior cannot tell levels apart and column (b) means little there.
Where the chain lives: the share of the block sigmas of a DLG run (`api.sample(load_model("unet-mnist"),
"dlg", ...)`, default settings, this classifier) in each band, and the errors averaged with those shares
(the chain-weighted row). The targets (issue 15): |bias| <= 5 and mean |error| <= 10 levels in every band
within sigma [0.1, 20] (`training.classifier.target_verdict`).
Output: the table, bench/results/classifier_bias.json and .md (a section of RESULTS.md).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time

import numpy as np
import torch

from bench import save_json_md
from dmcmc_fast import api
from dmcmc_fast.mcmc.classifier import ExactLevelPosterior, checkpoint_path, load_classifier
from dmcmc_fast.models.builtin import load_model
from dmcmc_fast.training.classifier import (CHAIN_EDGES, band_table, level_error, load_data, split,
                                            target_line)

HERE = os.path.dirname(os.path.abspath(__file__))
OLD_SPLIT = {"seed": 0, "held_out": 0.1, "calibrate": 0.0}  # checkpoints from before issue 15 (their card)


def held_out_mnist(meta: dict) -> torch.Tensor:
    """The MNIST images a classifier's training kept out for its level error."""
    x, _ = load_data("mnist")
    s = {k: meta.get(k, v) for k, v in OLD_SPLIT.items()}
    return x[split(x.shape[0], s["held_out"], s["calibrate"], s["seed"])[0]]


def chain_sigmas(classifier: str, num: int, chains: int, nfe: int, seed: int = 0) -> np.ndarray:
    """Block sigmas of a DLG run on unet-mnist with this classifier (a committed name or a path), DLG's
    default settings otherwise."""
    out = api.sample(load_model("unet-mnist"), "dlg", num, nfe, seed=seed, progress=False, chains=chains,
                     classifier=classifier)
    return np.asarray(out.meta["sigma"], dtype=np.float64)


def chain_shares(sigmas: np.ndarray, edges) -> list[float]:
    """The share of `sigmas` in each band [edges[j], edges[j+1]) (the last band closed)."""
    if len(sigmas) == 0:
        return [0.0] * (len(edges) - 1)
    hist = [((sigmas >= a) & ((sigmas < b) if j < len(edges) - 2 else (sigmas <= b))).mean()
            for j, (a, b) in enumerate(zip(edges[:-1], edges[1:]))]
    return [float(h) for h in hist]


def chain_weighted(err: dict, shares: list[float], edges) -> dict | None:
    """The band statistics averaged with the chain's share of each band (bands with no draw left out, the
    rest renormalised); None when the chain visited no band that has draws."""
    by_lo = {b["sigma_lo"]: b for b in err["bands"]}
    pairs = [(s, by_lo[float(a)]) for s, a in zip(shares, edges[:-1]) if s > 0 and float(a) in by_lo]
    total = sum(s for s, _ in pairs)
    if not total:
        return None
    keys = ("mean_abs", "bias", "within_5", "within_10")
    return {k: sum(s * b[k] for s, b in pairs) / total for k in keys}


def evaluate(clf, x_mnist: torch.Tensor, gmm, edges, per_band: int, seed: int = 1) -> dict:
    """Level errors of `clf` (a callable x -> logits with `.levels`) against (a) the true level of the
    noised held-out images `x_mnist` ("true") and (b) the exact posterior's argmax on noised gmm-mnist
    samples ("exact"); "floor": the exact posterior's own error against the true level on those samples
    (what no classifier can beat on gmm-mnist)."""
    levels = clf.levels
    exact = ExactLevelPosterior(gmm, levels)
    x_gmm = gmm.sample(max(1, x_mnist.shape[0]), generator=torch.Generator().manual_seed(seed))[0]
    return {"true": level_error(clf, x_mnist, levels, seed=seed, edges=edges, per_band=per_band),
            "exact": level_error(clf, x_gmm, levels, seed=seed, edges=edges, per_band=per_band,
                                 reference=lambda x, m: exact(x).argmax(1)),
            "floor": level_error(exact, x_gmm, levels, seed=seed, edges=edges, per_band=per_band)}


def run(name: str, label: str, a, gmm) -> dict:
    """One classifier's row (named `label`): its errors (a) and (b), the chain's band shares and chain-weighted
    errors."""
    clf = load_classifier(name)
    if tuple(clf.shape) != (1, 28, 28):
        raise ValueError(f"classifier {name} is for data of shape {clf.shape}; this bench is for MNIST (1, 28, 28)")
    t = time.perf_counter()
    path = os.path.abspath(checkpoint_path(name))
    root = os.path.dirname(HERE)
    row = {"classifier": label, "source": os.path.relpath(path, root) if path.startswith(root + os.sep) else path,
           "steps": clf.meta.get("steps"), "minutes": clf.meta.get("minutes"),
           "input": clf.meta.get("input", "rms"), "calibrated": clf.logit_offset is not None,
           **evaluate(clf, held_out_mnist(clf.meta), gmm, a.edges, a.per_band, a.seed + 1)}
    sig = chain_sigmas(name, a.dlg_num, a.dlg_chains, a.dlg_nfe, a.seed) if a.dlg_num else np.zeros(0)
    row["chain"] = {"n": int(len(sig)), "shares": chain_shares(sig, a.edges),
                    "sigma_q10_50_90": [float(v) for v in np.quantile(sig, [0.1, 0.5, 0.9])] if len(sig) else None}
    row["chain_weighted"] = {k: chain_weighted(row[k], row["chain"]["shares"], a.edges) for k in ("true", "exact")}
    row["seconds"] = time.perf_counter() - t
    return row


def _weighted_row(w: dict | None) -> str:
    if w is None:
        return "| chain-weighted | - | - | - | - | - | - | - |"
    return (f"| chain-weighted | - | - | {w['mean_abs']:.1f} | {w['bias']:+.1f} | {w['within_5']:.3f} | "
            f"{w['within_10']:.3f} | - |")


def markdown(meta: dict, rows: list[dict]) -> str:
    lines = [f"\n## Noise-level classifier bias by sigma band — {meta['device']}, {meta['time']}\n",
             f"- command: `{meta['command']}`",
             f"- {meta['per_band']} draws per band, levels uniform within it. Error = argmax level - reference "
             "level (one level = a factor 1.0107 in sigma; > 0: the classifier sees less noise than there is). "
             "(a) against the true level of held-out MNIST images; (b) against the exact posterior's argmax on "
             "gmm-mnist samples (meaningless below sigma ~0.05, the modes' std). Chain: block sigmas of "
             f"{meta['dlg_num']} DLG samples on unet-mnist ({meta['dlg_chains']} chains, {meta['dlg_nfe']} NFE per "
             "block, DLG's defaults otherwise) with that classifier; chain-weighted: the band rows averaged "
             "with the chain's shares. Targets: |bias| <= 5 and mean |error| <= 10 levels in every band within "
             "sigma [0.1, 20]."]
    for r in rows:
        ch = r["chain"]
        q = "/".join(f"{v:.3g}" for v in ch["sigma_q10_50_90"]) if ch["sigma_q10_50_90"] else "-"
        shares = " · ".join(f"[{a:g}, {b:g}{']' if j == len(meta['edges']) - 2 else ')'}: {s:.2f}"
                            for j, (a, b, s) in enumerate(zip(meta["edges"][:-1], meta["edges"][1:], ch["shares"])))
        took = f"{r['minutes']:.1f} min" if r["minutes"] is not None else "time not recorded"
        floor = " · ".join(f"{b['mean_abs']:.1f}" for b in r["floor"]["bands"])
        lines += [f"\n### {r['classifier']} (`{r['source']}`: {r['steps']} steps, {took}, input "
                  f"{r['input']}, {'calibrated' if r['calibrated'] else 'no calibration'})\n",
                  f"Where the chain lives ({ch['n']} block sigmas, q10/50/90 {q}): {shares or '-'}.\n",
                  f"Floor: the exact posterior's own mean |error| against the true level on gmm-mnist, by band: "
                  f"{floor}.\n"]
        for key, what in (("true", "(a) against the true level, held-out MNIST"),
                          ("exact", "(b) against the exact posterior's argmax, gmm-mnist")):
            lines += [f"{what}: {target_line(r[key]['target'])}.\n", band_table(r[key], "sigma"),
                      _weighted_row(r["chain_weighted"][key]), ""]
    return "\n".join(lines) + "\n"


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--classifier", default="mnist", help="comma list of committed names or checkpoint paths")
    p.add_argument("--names", default=None, help="comma list of names for the tables (default: --classifier's)")
    p.add_argument("--per-band", type=int, default=1000, help="noised draws per band (default 1000)")
    p.add_argument("--edges", default=",".join(f"{e:g}" for e in CHAIN_EDGES), help="sigma band edges")
    p.add_argument("--dlg-num", type=int, default=200, help="DLG samples for the chain's bands (0: no run)")
    p.add_argument("--dlg-chains", type=int, default=20, help="DLG chains (default 20: 10 blocks each)")
    p.add_argument("--dlg-nfe", type=int, default=15, help="NFE per DLG block (DLG's n_skip + n_den defaults)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=os.path.join(HERE, "results", "classifier_bias.json"))
    p.add_argument("--md", default=os.path.join(HERE, "results", "classifier_bias.md"))
    a = p.parse_args(argv)
    a.edges = [float(e) for e in a.edges.split(",")]
    if len(a.edges) < 2 or any(lo >= hi for lo, hi in zip(a.edges[:-1], a.edges[1:])) or a.edges[0] <= 0:
        p.error(f"--edges must be increasing positive sigmas, got {a.edges}")
    torch.set_num_threads(1)
    gmm = load_model("gmm-mnist")
    meta = {"bench": "classifier_bias", "device": "cpu (1 thread)", "per_band": a.per_band, "edges": a.edges,
            "dlg_num": a.dlg_num, "dlg_chains": a.dlg_chains, "dlg_nfe": a.dlg_nfe, "seed": a.seed,
            "time": time.strftime("%Y-%m-%d %H:%M"),
            "command": "python -m bench.classifier_bias " + shlex.join(sys.argv[1:] if argv is None else argv)}
    names = a.classifier.split(",")
    labels = a.names.split(",") if a.names else names
    if len(labels) != len(names):
        p.error(f"--names has {len(labels)} names for {len(names)} classifiers")
    rows = []
    for name, label in zip(names, labels):
        rows.append(run(name, label, a, gmm))
        print(json.dumps({k: rows[-1][k] for k in ("classifier", "chain", "chain_weighted", "seconds")}), flush=True)
    save_json_md(a.out, {"meta": meta, "rows": rows}, a.md, markdown(meta, rows))
    print(markdown(meta, rows))
    return rows


if __name__ == "__main__":
    main()
