"""Built-in models by name (what `--model` accepts). Nothing is downloaded.

| name        | what                                                                              |
|-------------|-----------------------------------------------------------------------------------|
| gmm-mnist   | isotropic mixture, one mode per real MNIST image (1000: the first 100 of each class), std 0.05 |
| gmm-digits  | isotropic mixture, one mode per sklearn digit image (all 1797), std 0.05          |
| ideal-mnist | ideal denoiser of the 5000 offline MNIST digits                                   |
| ideal-digits| ideal denoiser of the 1797 sklearn digits                                         |
| gmm-faces   | isotropic mixture at the 100 LFW faces of scikit-image, std 0.05                  |
| unet-mnist  | EDM-preconditioned UNet trained on the 5000 MNIST digits (checkpoints/unet-mnist.md) |

Options: `modes` (how many images, balanced over classes where labels exist) and `std`.
"""
from __future__ import annotations

import os
from typing import Callable

import torch

from dmcmc_fast import data
from dmcmc_fast.models.gaussian_mixture import GaussianMixture, IdealDenoiser
from dmcmc_fast.validate import check_int, check_real

DEFAULT_STD = 0.05


def _balanced(images: torch.Tensor, labels: torch.Tensor | None, n: int | None):
    """The first n/10 images of each class (labels present), else the first n."""
    if n is None or n >= images.shape[0]:
        return images, labels
    if n < 1:
        raise ValueError(f"modes must be >= 1, got {n}")
    if labels is None:
        return images[:n], None
    classes = labels.unique()
    per = -(-n // len(classes))
    idx = torch.cat([torch.nonzero(labels == c).flatten()[:per] for c in classes])[:n]
    idx = idx.sort().values
    return images[idx], labels[idx]


def _gmm(dataset: str, default_modes: int | None):
    def build(modes: int | None = default_modes, std: float = DEFAULT_STD, **_):
        x, y = _balanced(*data.load(dataset), modes)
        return GaussianMixture(x, std=std, labels=y, name=f"gmm-{dataset}", data_range=data.DATA_RANGE)
    return build


def _ideal(dataset: str):
    def build(modes: int | None = None, **_):
        x, y = _balanced(*data.load(dataset), modes)
        return IdealDenoiser(x, labels=y, name=f"ideal-{dataset}", data_range=data.DATA_RANGE)
    return build


def _checkpoint(name: str):
    def build(**_):
        from dmcmc_fast.models.unet import load_checkpoint

        path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "checkpoints", f"{name}.pt")
        if not os.path.exists(path):
            raise FileNotFoundError(f"checkpoint {path} is missing; train it with `dmcmc-fast train score`")
        return load_checkpoint(path, name=name)
    return build


BUILTIN_MODELS: dict[str, Callable] = {
    "gmm-mnist": _gmm("mnist", 1000),
    "gmm-digits": _gmm("digits", None),
    "gmm-faces": _gmm("faces", None),
    "ideal-mnist": _ideal("mnist"),
    "ideal-digits": _ideal("digits"),
    "unet-mnist": _checkpoint("unet-mnist"),
}


def load_model(name: str, **options):
    """A built-in model by name; options (e.g. `modes`, `std`) go to its builder."""
    if name not in BUILTIN_MODELS:
        raise ValueError(f"unknown model {name!r}; built-in models are: {', '.join(sorted(BUILTIN_MODELS))}")
    std, modes = options.get("std"), options.get("modes")
    if std is not None:  # data live in [-1, 1]: a component std beyond 1000 only makes the mixture's numbers overflow
        check_real("std", std, 0.0, 1e3)
    if modes is not None:
        check_int("modes", modes, 1)
    return BUILTIN_MODELS[name](**{k: v for k, v in options.items() if v is not None})
