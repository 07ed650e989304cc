"""The offline MNIST-feature Fréchet distance: the FD on known Gaussians, the committed classifier
(held-out accuracy, statistics that match it), and that the distance ranks real digits above noise."""
import math

import numpy as np
import pytest
import torch

from dmcmc_fast.data import load_mnist
from dmcmc_fast.eval.features import (DEFAULT_STATS, class_balance, feature_stats, load_feature_net,
                                      mnist_feature_fd, real_stats)
from dmcmc_fast.eval.frechet import fd_by_eigenvalues, frechet_distance
from dmcmc_fast.training.features import split


def test_fd_of_known_gaussians():
    # commuting covariances: d^2 = |mu1 - mu2|^2 + sum (sqrt(a_i) - sqrt(b_i))^2 = 5 + 1 + 1
    assert frechet_distance([0, 0], np.diag([1.0, 4.0]), [1, 2], np.diag([4.0, 9.0])) == pytest.approx(7.0, abs=1e-9)
    # C1 = [[2, 1], [1, 2]] (eigenvalues 3, 1) vs I: tr C1 + 2 - 2 (sqrt 3 + 1) = 4 - 2 sqrt 3
    c1 = np.array([[2.0, 1.0], [1.0, 2.0]])
    assert frechet_distance([0, 0], c1, [0, 0], np.eye(2)) == pytest.approx(4 - 2 * math.sqrt(3), abs=1e-9)


def test_fd_of_random_gaussians_matches_the_eigenvalue_route_and_needs_no_sqrtm_disp(monkeypatch):
    """Non-commuting covariances in 30 dimensions, full rank and rank-deficient (5 samples' covariance, as a
    small FID batch gives), against the eigenvalue route; and with SciPy 1.18's sqrtm (no `disp` argument,
    which pytorch-fid's own calculate_frechet_distance passes, so it fails there) stood in for the installed one."""
    import scipy.linalg

    rng = np.random.default_rng(0)
    cases = []
    for rows in (60, 5):
        a, b = rng.standard_normal((rows, 30)), rng.standard_normal((rows, 30)) * 1.5 + 0.3
        cases.append((a.mean(0), np.cov(a.T), b.mean(0), np.cov(b.T)))
    sqrtm = scipy.linalg.sqrtm

    def sqrtm_of_scipy_1_18(A):  # the keyword-less signature: disp=... raises TypeError as there
        return sqrtm(A)
    for patched in (False, True):
        if patched:
            monkeypatch.setattr(scipy.linalg, "sqrtm", sqrtm_of_scipy_1_18)
        for mu1, c1, mu2, c2 in cases:
            fd = frechet_distance(mu1, c1, mu2, c2)
            assert fd == pytest.approx(fd_by_eigenvalues(mu1, c1, mu2, c2), rel=1e-6, abs=1e-6)
            assert frechet_distance(mu1, c1, mu1, c1) == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(ValueError, match="means must be"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))


def test_feature_stats_of_gaussian_samples_give_the_closed_form_fd():
    """Features = a fixed linear map A of N(m, I) samples: exactly N(A m, A A^T)."""
    g = torch.Generator().manual_seed(0)
    a = torch.tensor([[1.0, 0.0], [0.5, 2.0]], dtype=torch.float64)
    x = torch.randn(40000, 2, generator=g, dtype=torch.float64) + torch.tensor([1.0, -1.0], dtype=torch.float64)
    mu, cov = feature_stats(lambda b: b @ a.T, x, batch_size=7000)
    m_true, c_true = (a @ torch.tensor([1.0, -1.0], dtype=torch.float64)).numpy(), (a @ a.T).numpy()
    assert frechet_distance(mu, cov, m_true, c_true) < 2e-3  # sampling error only, O(d/N)
    assert frechet_distance(mu, cov, np.zeros(2), c_true) == pytest.approx(float(m_true @ m_true), rel=0.02)


@pytest.fixture(scope="module")
def net():
    return load_feature_net()


def test_committed_classifier_is_accurate_on_held_out_digits(net):
    x, y = load_mnist()
    test = split(y, 100)[1][::2]  # 500 of the 1000 held-out digits
    with torch.no_grad():
        acc = (net(x[test]).argmax(1) == y[test]).double().mean().item()
    assert acc >= 0.95
    assert "held-out accuracy" in net.card


def test_committed_statistics_belong_to_the_committed_network(net):
    with np.load(DEFAULT_STATS) as z:
        assert str(z["net_sha"]) == net.sha
        assert z["mu"].shape == (128,) and z["sigma"].shape == (128, 128)


def test_real_stats_are_recomputed_for_another_network(net, tmp_path, monkeypatch):
    import dmcmc_fast.data

    few = load_mnist()[0][:300]
    monkeypatch.setattr(dmcmc_fast.data, "load_mnist", lambda: (few, None))
    path = str(tmp_path / "stats.npz")
    np.savez(path, mu=np.zeros(128), sigma=np.eye(128), net_sha=np.array("stale"), n=np.array(1))
    mu, sigma = real_stats(net, path)
    mu_direct, sigma_direct = feature_stats(net.features, few)
    np.testing.assert_allclose(mu, mu_direct, rtol=1e-12)
    np.testing.assert_allclose(sigma, sigma_direct, rtol=1e-12)
    with np.load(path) as z:
        assert str(z["net_sha"]) == net.sha
        np.testing.assert_allclose(z["sigma"], sigma_direct, rtol=1e-12)


def test_fd_ranks_real_digits_above_degraded_ones(net):
    x = load_mnist()[0]
    real = x[1::16]  # 313 real digits
    g = torch.Generator().manual_seed(0)
    noisy = (real + 0.5 * torch.randn(real.shape, generator=g)).clamp(-1, 1)
    fd_real, fd_noisy = mnist_feature_fd(real, net), mnist_feature_fd(noisy, net)
    fd_one_class = mnist_feature_fd(x[load_mnist()[1] == 3][:200], net)
    assert fd_real < 0.1 * min(fd_noisy, fd_one_class)
    with pytest.raises(ValueError, match=r"\[N, 1, 28, 28\]"):
        mnist_feature_fd(torch.zeros(4, 1, 8, 8), net)


def test_class_balance(net):
    x, y = load_mnist()
    assert class_balance(x[::10], net)["class_share_tv_pred"] < 0.03
    sevens = class_balance(x[y == 7][:100], net)
    assert sevens["class_share_pred"][7] > 0.9 and sevens["class_share_tv_pred"] > 0.8
