"""Mode coverage and class balance of samples from a mixture whose modes (and labels) are known."""
from __future__ import annotations

from typing import Callable

import torch


def mode_report(samples: torch.Tensor, model, reduce: Callable[[torch.Tensor], torch.Tensor] = lambda t: t) -> dict:
    """Assign each sample to its nearest mode; report coverage and class shares vs the truth.

    `reduce` sums the per-mode counts across processes (`distributed.all_reduce_sum`) so each rank
    passes only its own samples.
    """
    K = model.num_modes
    counts = reduce(torch.bincount(model.nearest_mode(samples), minlength=K).to(torch.int64))
    total = int(counts.sum())
    out = {"modes": K, "modes_covered": int((counts > 0).sum()), "mode_coverage": float((counts > 0).double().mean())}
    if model.labels is not None:
        labels = model.labels
        n_cls = int(labels.max()) + 1
        got = torch.zeros(n_cls, dtype=torch.float64).index_add_(0, labels, counts.double()) / total
        truth = torch.zeros(n_cls, dtype=torch.float64).index_add_(0, labels, model.weights.double())
        out["class_share"] = [round(v, 4) for v in got.tolist()]
        out["class_share_truth"] = [round(v, 4) for v in truth.tolist()]
        out["class_share_tv"] = float(0.5 * (got - truth).abs().sum())  # total variation distance
    return out
