"""Stationary laws of the MCMC samplers on a Gaussian target, against their exact discretised values.

Target p_sigma = N(mu, V I) with V = std^2 + sigma^2 (a one-component mixture noised at sigma). Each
sampler is linear there, so its stationary law is Gaussian with a covariance we derive in closed form
and cross-check with the discrete Lyapunov equation S = A S A^T + Q of the (x[, v]) recursion:
  ULA          a = 1 - eta/(2V):  Var = eta / (1 - a^2) = V / (1 - eta/(4V))
  BAOAB-limit  x' = a x + c (xi + xi'), a = 1 - h/V, c^2 = h/2:  Var = 2 c^2 / (1 - a) = V  (exact)
  OBABO        Verlet conserves p^2/2 + x^2 (1 - h^2/(4V)) / (2V); O keeps p ~ N(0, 1):  Var = V / (1 - h^2/(4V))
  MILD         (u, v) -> ((1-a) u + g(1-a) v + sqrt(2 alpha) z, -a u + g(1-a) v), a = alpha/V: Lyapunov
Monte Carlo: n = chains * dim independent draws after burn-in (isotropic target, independent noise per
coordinate; every recursion here contracts by <= 0.64 per step, so 40-60 steps forget x0),
so the sample variance has relative standard error sqrt(2/n); we accept within 5 of those
and check that the undiscretised V is rejected where the bias is material.
"""
import math

import numpy as np
import pytest
import torch
from scipy.linalg import solve_discrete_lyapunov

from dmcmc_fast.mcmc import (annealed_schedule, sample_ald, sample_baoab_limit, sample_langevin, sample_mild,
                             sample_obabo)
from dmcmc_fast.models.base import CountingDenoiser
from dmcmc_fast.models.gaussian_mixture import gaussian

CHAINS, DIM, MU, STD, SIGMA = 256, 16, 1.5, 0.6, 0.8
V = STD ** 2 + SIGMA ** 2
N = CHAINS * DIM


def _model():
    return CountingDenoiser(gaussian(torch.full((DIM,), MU), STD), CHAINS)


def _check(x, var_true, var_wrong=None):
    x = x.double() - MU
    n_se = 5.0
    mean_tol = n_se * math.sqrt(var_true / N)
    assert abs(x.mean().item()) < mean_tol
    var = (x * x).mean().item()
    tol = n_se * math.sqrt(2.0 / N) * var_true
    assert abs(var - var_true) < tol, (var, var_true)
    if var_wrong is not None:
        assert abs(var - var_wrong) > tol, "the test cannot tell the discretisation bias apart"


def _lyapunov_var(A, Q) -> float:
    return solve_discrete_lyapunov(np.asarray(A), np.asarray(Q))[0, 0]


def test_ula_stationary_variance_has_the_derived_bias():
    eta = V  # eta / (4V) = 1/4: variance 4/3 V
    a = 1 - eta / (2 * V)
    truth = V / (1 - eta / (4 * V))
    assert truth == pytest.approx(_lyapunov_var([[a]], [[eta]]))
    model = _model()
    res = sample_langevin(model, torch.zeros(CHAINS, DIM), SIGMA, eta, 40, seed=1)
    assert res.nfe.tolist() == [40] * CHAINS
    _check(res.x, truth, var_wrong=V)


def test_baoab_limit_is_exact_on_gaussians():
    h = 0.5 * V
    a, c2 = 1 - h / V, h / 2
    # state (x, xi): x' = a x + c xi + c xi', xi' fresh
    A = [[a, math.sqrt(c2)], [0.0, 0.0]]
    Q = [[c2, math.sqrt(c2)], [math.sqrt(c2), 1.0]]
    assert _lyapunov_var(A, Q) == pytest.approx(V)
    model = _model()
    res = sample_baoab_limit(model, torch.zeros(CHAINS, DIM), [SIGMA], [h], 40, seed=2)
    assert res.nfe.tolist() == [40] * CHAINS
    _check(res.x, V)


def test_obabo_stationary_variance_is_the_shadow_energy_one():
    h, friction = math.sqrt(V), 2.0 / math.sqrt(V)  # h^2/(4V) = 1/4, c = exp(-1)
    truth = V / (1 - h * h / (4 * V))
    c = math.exp(-friction * h / 2)
    q = math.sqrt(1 - c * c)
    # one step on (x, p): O, B, A, B, O as matrices; noise enters at both O's
    O, Bk, Ad = np.array([[1, 0], [0, c]]), np.array([[1, 0], [-h / (2 * V), 1]]), np.array([[1, h], [0, 1]])
    BAB = Bk @ Ad @ Bk
    A = O @ BAB @ O
    G1, G2 = O @ BAB @ np.array([[0], [q]]), np.array([[0], [q]])
    assert _lyapunov_var(A, G1 @ G1.T + G2 @ G2.T) == pytest.approx(truth)
    model = _model()
    res = sample_obabo(model, torch.zeros(CHAINS, DIM), [SIGMA], [h], 40, friction=friction, seed=3)
    assert res.nfe.tolist() == [41] * CHAINS  # T + 1 per level
    _check(res.x, truth, var_wrong=V)


def test_mild_single_level_matches_its_lyapunov_variance():
    eps, g = 0.2 * V, 0.5  # one level: alpha = eps
    a = eps / V
    A = [[1 - a, g * (1 - a)], [-a, g * (1 - a)]]
    Q = [[2 * eps, 0.0], [0.0, 0.0]]
    truth = _lyapunov_var(A, Q)
    model = _model()
    res = sample_mild(model, torch.zeros(CHAINS, DIM), 1, 60, sigma_max=SIGMA, sigma_min=SIGMA, eps=eps, gamma=g,
                      final_tweedie=False, seed=4)
    assert res.nfe.tolist() == [60] * CHAINS
    _check(res.x, truth, var_wrong=V)


def test_ald_ends_at_the_last_levels_ula_law_and_counts_the_final_denoise():
    eps = V  # alpha_L = eps at the last level sigma_L = SIGMA
    truth = V / (1 - eps / (4 * V))
    model = _model()
    res = sample_ald(model, torch.zeros(CHAINS, DIM), 2, 30, sigma_max=4.0, sigma_min=SIGMA, eps=eps,
                     final_tweedie=False, seed=5)
    assert res.nfe.tolist() == [60] * CHAINS
    _check(res.x, truth, var_wrong=V)
    model = _model()
    res = sample_ald(model, torch.zeros(CHAINS, DIM), 2, 3, sigma_max=4.0, sigma_min=SIGMA, eps=eps,
                     final_tweedie=True)
    assert res.nfe.tolist() == [7] * CHAINS


def test_annealed_schedules_follow_the_papers_step_rules():
    levels, hs = annealed_schedule(3, 4.0, 1.0, 0.1, power=2)
    assert levels == pytest.approx([4.0, 2.0, 1.0])
    assert hs == pytest.approx([1.6, 0.4, 0.1])
    _, hs1 = annealed_schedule(3, 4.0, 1.0, 0.1, power=1)
    assert hs1 == pytest.approx([0.4, 0.2, 0.1])


def test_a_chain_does_not_depend_on_its_batch():
    model = CountingDenoiser(gaussian(torch.full((DIM,), MU), STD), 4)
    x0 = torch.zeros(4, DIM)
    full = sample_obabo(model, x0, [SIGMA], [0.3], 5, friction=1.0, seed=7).x
    one = sample_obabo(gaussian(torch.full((DIM,), MU), STD), x0[2:3], [SIGMA], [0.3], 5, friction=1.0, seed=7,
                       chain_ids=torch.tensor([2])).x
    torch.testing.assert_close(one, full[2:3])


@pytest.mark.parametrize("bad", [dict(eta=0.0), dict(eta=-1.0), dict(sigma=0.0)])
def test_bad_arguments_name_themselves(bad):
    kw = dict(sigma=SIGMA, eta=0.1) | bad
    name = next(iter(bad))
    with pytest.raises(ValueError, match=name):
        sample_langevin(_model(), torch.zeros(CHAINS, DIM), kw["sigma"], kw["eta"], 3)
