"""Mode coverage and class balance of samples from a mixture whose modes (and labels) are known."""
from __future__ import annotations

import torch


def mode_report(samples: torch.Tensor, model) -> dict:
    """Assign each sample to its nearest mode; report coverage and class shares vs the truth."""
    k = model.nearest_mode(samples)
    K = model.num_modes
    counts = torch.bincount(k, minlength=K)
    out = {"modes": K, "modes_covered": int((counts > 0).sum()), "mode_coverage": float((counts > 0).float().mean())}
    if model.labels is not None:
        labels = model.labels
        n_cls = int(labels.max()) + 1
        got = torch.bincount(labels[k], minlength=n_cls).double() / k.numel()
        truth = torch.zeros(n_cls, dtype=torch.float64).index_add_(0, labels, model.weights.double())
        out["class_share"] = [round(v, 4) for v in got.tolist()]
        out["class_share_truth"] = [round(v, 4) for v in truth.tolist()]
        out["class_share_tv"] = float(0.5 * (got - truth).abs().sum())  # total variation distance
    return out
