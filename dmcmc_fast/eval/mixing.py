"""How well DLG's chains mix, from the per-sample books a DLG run writes (chain, block, sigma):

- the distribution of the levels the samples were denoised from (quantiles of the block sigma);
- with a label per sample (the nearest mode of an analytic mixture, or the feature net's predicted
  digit): the per-block switch rate (how often a chain's next sample has another label) and the
  distinct labels per chain;
- an effective sample size: per chain, the samples projected on the leading principal direction of
  all samples, ESS = n / (1 + 2 sum of autocorrelations), summed by Geyer's initial positive sequence
  (pairs of lags summed while positive); summed over chains. Independent draws give ESS ~ N.
"""
from __future__ import annotations

import numpy as np
import torch


def _ess_1d(y: np.ndarray) -> float:
    n = y.shape[0]
    if n < 4:
        return float(n)
    y = y - y.mean()
    var = float(y @ y) / n
    if var == 0.0:
        return 1.0
    acf = np.correlate(y, y, mode="full")[n - 1:] / (n * var)
    tau, k = 1.0, 1
    while k + 1 < n:  # Geyer: add pairs (rho_k + rho_k+1) while they stay positive
        pair = acf[k] + acf[k + 1]
        if pair <= 0:
            break
        tau += 2 * pair
        k += 2
    return float(n / tau)


def mixing_report(samples: torch.Tensor, chain: np.ndarray, block: np.ndarray, sigma: np.ndarray,
                  labels: np.ndarray | None = None, label_name: str = "mode") -> dict:
    chain, block = np.asarray(chain), np.asarray(block)
    flat = samples.reshape(samples.shape[0], -1).double()
    centred = flat - flat.mean(0)
    direction = torch.linalg.svd(centred, full_matrices=False).Vh[0] if flat.shape[0] > 1 else None
    proj = (centred @ direction).numpy() if direction is not None else np.zeros(flat.shape[0])
    q = np.quantile(np.asarray(sigma, dtype=np.float64), [0.1, 0.5, 0.9])
    out = {"chains": int(np.unique(chain).size), "block_sigma_q10_50_90": [round(float(v), 4) for v in q]}
    ess, switches, pairs, distinct = 0.0, 0, 0, []
    for c in np.unique(chain):
        idx = np.nonzero(chain == c)[0]
        idx = idx[np.argsort(block[idx])]
        ess += _ess_1d(proj[idx])
        if labels is not None:
            lab = np.asarray(labels)[idx]
            switches += int((lab[1:] != lab[:-1]).sum())
            pairs += max(len(idx) - 1, 0)
            distinct.append(np.unique(lab).size)
    out["ess"] = round(ess, 1)
    out["ess_per_sample"] = round(ess / samples.shape[0], 4)
    if labels is not None:
        out[f"{label_name}_switch_rate"] = round(switches / pairs, 4) if pairs else None
        out[f"distinct_{label_name}s_per_chain"] = round(float(np.mean(distinct)), 2)
    return out
