"""FID with pytorch-fid's Inception, offline only.

pytorch-fid's `InceptionV3` loads `pt_inception-2015-12-05-6726825d.pth` through the torch hub cache
(`$TORCH_HOME/hub/checkpoints/`, i.e. `torch.hub.get_dir()/checkpoints`) and would download it if
absent; we never let it: `inception_net()` first checks that the file is there and otherwise raises
`MissingInceptionWeights` naming the file and the folder.

`fid(samples, reference, net)` takes images `[N, C, H, W]` in `data_range`, maps them to [0, 1] with
3 channels (grey images repeated, as pytorch-fid does for its image files), runs `net` (anything
taking such a batch to `[B, D]` features: the Inception pool3 wrapper, or a stand-in in tests) and
returns the Fréchet distance of the two feature Gaussians. The reference may also be precomputed
statistics: a pytorch-fid `.npz` (`mu`, `sigma`, as `python -m pytorch_fid --save-stats` writes), or
an offline data set's name, whose Inception statistics are computed once and cached.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from dmcmc_fast.eval.features import feature_stats
from dmcmc_fast.eval.frechet import frechet_distance, gaussian_stats

INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"


class MissingInceptionWeights(FileNotFoundError):
    pass


def inception_weights_path() -> str:
    return os.path.join(torch.hub.get_dir(), "checkpoints", INCEPTION_FILE)


def inception_net(device="cpu"):
    """pytorch-fid's InceptionV3 returning the 2048-d pool3 features as `[B, 2048]`."""
    path = inception_weights_path()
    if not os.path.exists(path):
        raise MissingInceptionWeights(
            f"FID needs pytorch-fid's Inception weights {INCEPTION_FILE} in {os.path.dirname(path)} "
            f"(the torch hub cache: $TORCH_HOME/hub/checkpoints/); nothing is downloaded here. Copy the "
            f"file there, or use the offline MNIST-feature distance instead")
    from pytorch_fid.inception import InceptionV3

    net = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).to(device).eval()
    return lambda x: net(x)[0].flatten(1)


def to_unit_rgb(x: torch.Tensor, data_range=(-1.0, 1.0)) -> torch.Tensor:
    """Images in `data_range` -> [0, 1], grey repeated to 3 channels (pytorch-fid's input)."""
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"FID needs images [N, 1 or 3, H, W], got shape {tuple(x.shape)}")
    lo, hi = data_range
    x = ((x.float() - lo) / (hi - lo)).clamp(0, 1)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def image_stats(net, x: torch.Tensor, data_range=(-1.0, 1.0), batch_size: int = 100, device="cpu",
                stats=gaussian_stats):
    return feature_stats(lambda b: net(to_unit_rgb(b, data_range)), x, batch_size, device, stats)


def load_stats(path: str):
    with np.load(path) as z:
        if "mu" not in z or "sigma" not in z:
            raise ValueError(f"{path} must hold arrays 'mu' and 'sigma' (pytorch-fid statistics)")
        return z["mu"], z["sigma"]


def cache_dir() -> str:
    """Where Inception statistics of the offline data sets are kept: $DMCMC_FAST_CACHE, else
    ~/.cache/dmcmc_fast."""
    return os.environ.get("DMCMC_FAST_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "dmcmc_fast"))


def fid(samples: torch.Tensor, reference, net=None, data_range=(-1.0, 1.0), batch_size: int = 100,
        device="cpu", stats=gaussian_stats) -> float:
    """FID between `samples` and `reference`: images `[M, C, H, W]`, a statistics `.npz` path, or an
    offline data set name (its statistics computed once, then read from `cache_dir()`). `stats` maps
    the samples' features to (mu, cov) (under torchrun: all-reduced over ranks)."""
    if net is None:
        net = inception_net(device)
    if isinstance(reference, str) and not reference.endswith(".npz"):
        from dmcmc_fast import data

        images = data.load(reference)[0]
        if tuple(images.shape[1:]) != tuple(samples.shape[1:]):
            raise ValueError(f"FID reference {reference!r} has images of shape {tuple(images.shape[1:])}, "
                             f"the samples {tuple(samples.shape[1:])}")
        path = os.path.join(cache_dir(), f"fid-{reference}-{images.shape[0]}.npz")
        if not os.path.exists(path):
            os.makedirs(cache_dir(), exist_ok=True)
            mu_r, sig_r = image_stats(net, images, data_range, batch_size, device)
            tmp = f"{path}.{os.getpid()}.tmp.npz"  # atomic: ranks may write at once
            np.savez(tmp, mu=mu_r, sigma=sig_r)
            os.replace(tmp, path)
        reference = path
    if isinstance(reference, (str, os.PathLike)):
        mu_r, sig_r = load_stats(reference)
    else:
        mu_r, sig_r = image_stats(net, reference, data_range, batch_size, device)
    mu, sig = image_stats(net, samples, data_range, batch_size, device, stats)
    if mu.shape != mu_r.shape:
        raise ValueError(f"feature sizes differ: samples {mu.shape[0]}, reference {mu_r.shape[0]}")
    return frechet_distance(mu, sig, mu_r, sig_r)
