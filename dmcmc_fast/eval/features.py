"""Offline quality metric for MNIST samples: the Fréchet distance in the feature space of a small
MNIST classifier trained by the project (`dmcmc-fast train features`), used where pytorch-fid's
Inception weights are absent. The features are the classifier's penultimate layer (128-d, before
its ReLU); the real data's statistics (all 5000 offline digits) are cached in an `.npz` beside the
checkpoint, keyed by the checkpoint's hash so a retrained network never meets stale statistics.

The same classifier gives the class balance of samples (predicted class shares vs the data's).
"""
from __future__ import annotations

import hashlib
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dmcmc_fast.eval.frechet import frechet_distance, gaussian_stats
from dmcmc_fast.files import load_weights, read_checkpoint

CHECKPOINT_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "checkpoints")
DEFAULT_CHECKPOINT = os.path.join(CHECKPOINT_DIR, "mnist-features.pt")
DEFAULT_STATS = os.path.join(CHECKPOINT_DIR, "mnist-features-stats.npz")


class FeatureNet(nn.Module):
    """Four 3x3 convs (32, 32, 64, 64; max-pool after each pair), a 128-d feature layer, 10 logits.

    Input `[B, 1, 28, 28]` in [-1, 1]."""

    def __init__(self, features: int = 128, classes: int = 10):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(1, 32, 3, padding=1), nn.Conv2d(32, 32, 3, padding=1),
                                    nn.Conv2d(32, 64, 3, padding=1), nn.Conv2d(64, 64, 3, padding=1)])
        self.fc = nn.Linear(64 * 7 * 7, features)
        self.head = nn.Linear(features, classes)
        self.dropout = nn.Dropout(0.3)
        self.config = {"features": features, "classes": classes}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        for i, conv in enumerate(self.convs):
            x = F.relu(conv(x))
            if i % 2 == 1:
                x = F.max_pool2d(x, 2)
        return self.fc(x.flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(F.relu(self.features(x))))


def file_hash(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def load_feature_net(path: str = DEFAULT_CHECKPOINT, device="cpu") -> FeatureNet:
    if not os.path.exists(path):
        raise FileNotFoundError(f"MNIST feature network {path} is missing; train it with "
                                f"`dmcmc-fast train features --out {path}`")
    ck = read_checkpoint(path, "MNIST feature network", needs=("config", "state_dict"))
    net = FeatureNet(**ck["config"])
    load_weights(net, ck["state_dict"], path, "MNIST feature network")
    net.card = ck.get("card", {})
    net.sha = file_hash(path)
    return net.to(device).eval().requires_grad_(False)


@torch.no_grad()
def apply_batched(fn, x: torch.Tensor, batch_size: int = 500, device="cpu") -> torch.Tensor:
    """`fn` over `x` in batches, results on the CPU in float64."""
    return torch.cat([fn(x[i:i + batch_size].to(device)).double().cpu() for i in range(0, x.shape[0], batch_size)])


def feature_stats(fn, x: torch.Tensor, batch_size: int = 500, device="cpu", stats=gaussian_stats):
    """(mu, cov) of `fn`'s features over `x`, float64 numpy; `stats` maps features to them (under
    torchrun: the all-reduced statistics of every rank's features)."""
    return stats(apply_batched(fn, x, batch_size, device))[:2]


def real_stats(net: FeatureNet, path: str = DEFAULT_STATS, device="cpu"):
    """Feature statistics of the 5000 offline MNIST digits, read from / written to `path`."""
    if os.path.exists(path):
        with np.load(path) as z:
            if str(z["net_sha"]) == net.sha:
                return z["mu"], z["sigma"]
    from dmcmc_fast.data import load_mnist

    mu, sigma = feature_stats(net.features, load_mnist()[0], device=device)
    np.savez(path, mu=mu, sigma=sigma, net_sha=np.array(net.sha), n=np.array(5000))
    return mu, sigma


def mnist_feature_fd(samples: torch.Tensor, net: FeatureNet | None = None, stats_path: str = DEFAULT_STATS,
                     device="cpu", stats=gaussian_stats) -> float:
    """Fréchet distance between samples `[N, 1, 28, 28]` (range [-1, 1]) and the real digits, in the
    classifier's feature space."""
    if tuple(samples.shape[1:]) != (1, 28, 28):
        raise ValueError(f"the MNIST feature distance needs samples of shape [N, 1, 28, 28], got {tuple(samples.shape)}")
    net = net or load_feature_net(device=device)
    mu, sigma = feature_stats(net.features, samples.float(), device=device, stats=stats)
    return frechet_distance(mu, sigma, *real_stats(net, stats_path, device))


def class_balance(samples: torch.Tensor, net: FeatureNet | None = None, device="cpu", reduce=lambda t: t) -> dict:
    """Predicted class shares of the samples and their total-variation distance to uniform (the
    offline MNIST set has 500 of each digit); `reduce` sums the counts over ranks."""
    net = net or load_feature_net(device=device)
    pred = apply_batched(net, samples.float(), device=device).argmax(1)
    counts = reduce(torch.bincount(pred, minlength=10).double())
    share = counts / counts.sum()
    return {"class_share_pred": [round(v, 4) for v in share.tolist()],
            "class_share_tv_pred": float(0.5 * (share - 0.1).abs().sum())}
