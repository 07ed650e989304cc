"""Fréchet distance between Gaussians, d^2 = |mu1 - mu2|^2 + tr(C1 + C2 - 2 (C1 C2)^(1/2))
(Dowson & Landau 1982; FID's formula), via pytorch-fid's `calculate_frechet_distance` in float64."""
from __future__ import annotations

import numpy as np
import torch


def gaussian_stats(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of flattened samples, float64."""
    f = x.reshape(x.shape[0], -1).double()
    if f.shape[0] < 2:
        raise ValueError(f"need at least 2 samples for a covariance, got {f.shape[0]}")
    mu = f.mean(0)
    c = f - mu
    return mu.numpy(), (c.T @ c / (f.shape[0] - 1)).numpy()


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    from pytorch_fid.fid_score import calculate_frechet_distance

    return float(calculate_frechet_distance(np.asarray(mu1, np.float64), np.asarray(cov1, np.float64),
                                            np.asarray(mu2, np.float64), np.asarray(cov2, np.float64)))
