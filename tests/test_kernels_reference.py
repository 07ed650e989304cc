"""The plain-torch references of kernels/ against exact answers (the Triton kernels equal them, see
test_kernels_fused.py), and backend dispatch / argument checks.

Closed forms on a Gaussian target N(m, a^2) per coordinate, whose denoiser at level sigma is
D(x) = m + a^2/(a^2 + sigma^2) (x - m), i.e. the score is -(x - m)/V with V = a^2 + sigma^2:
ULA's stationary variance eta / (1 - (1 - eta/(2V))^2); BAOAB-limit's is exactly V; MILD and OBABO
are linear-Gaussian recursions whose stationary covariance solves a discrete Lyapunov equation.
"""
import math

import numpy as np
import pytest
import scipy.linalg
import torch

from dmcmc_fast import rng
from dmcmc_fast.kernels import deis, gibbs, karras_step, langevin, underdamped

M, A2, SIGMA = 1.5, 1.0, 1.0
V = A2 + SIGMA**2
CHAINS, DIM = 1000, 2  # 2000 independent coordinates


def gauss_denoiser(x, sigma=SIGMA):
    return M + A2 / (A2 + sigma**2) * (x - M)


def _check_moments(samples, mean, var):
    n = samples.numel()
    assert abs(float(samples.mean()) - mean) < 5 * math.sqrt(var / n)
    assert abs(float(samples.var()) - var) < 5 * var * math.sqrt(2 / n)


def _run(step_fn, n_steps, state):
    ids = torch.arange(CHAINS)
    for k in range(n_steps):
        state = step_fn(state, ids, k)
    return state


def test_langevin_stationary_variance():
    eta = 0.5
    x = _run(lambda x, ids, k: langevin.langevin_step(x, gauss_denoiser(x), SIGMA, eta, 11, ids, k),
             50, torch.zeros(CHAINS, DIM, dtype=torch.float64))
    rho = 1 - eta / (2 * V)
    _check_moments(x, M, eta / (1 - rho**2))


def test_baoab_limit_is_exact_on_gaussians():
    h = 0.5
    xi0 = rng.chain_randn(5, torch.arange(CHAINS), 0, (DIM,), stream=rng.STREAM_INIT, dtype=torch.float64)

    def step(state, ids, k):
        x, xi = state
        return underdamped.baoab_limit_step(x, gauss_denoiser(x), SIGMA, h, xi, 5, ids, k)

    x, _ = _run(step, 40, (torch.full((CHAINS, DIM), M, dtype=torch.float64), xi0))
    _check_moments(x, M, V)


def _lyapunov_check(x, v, a_mat, q_mat):
    """Empirical covariance of (x - M, v) against the stationary solution of S = A S A^T + Q."""
    s = scipy.linalg.solve_discrete_lyapunov(a_mat, q_mat)
    _check_moments(x, M, s[0, 0])
    _check_moments(v, 0.0, s[1, 1])
    u = (x - M).flatten().numpy()
    cov = float(np.mean(u * v.flatten().numpy()))
    assert abs(cov - s[0, 1]) < 5 * math.sqrt((s[0, 0] * s[1, 1] + s[0, 1] ** 2) / u.size)


def test_mild_stationary_covariance():
    alpha, gamma = 0.2, 0.5

    def step(state, ids, k):
        x, v = state
        return langevin.mild_step(x, v, gauss_denoiser(x + gamma * v), SIGMA, alpha, gamma, 3, ids, k)

    zeros = torch.zeros(CHAINS, DIM, dtype=torch.float64)
    x, v = _run(step, 50, (zeros + M, zeros))
    k = alpha / V
    a_mat = np.array([[1 - k, gamma * (1 - k)], [-k, gamma * (1 - k)]])
    _lyapunov_check(x, v, a_mat, np.diag([2 * alpha, 0.0]))


def test_obabo_stationary_covariance():
    h, fric = 0.4, 1.5
    c = math.exp(-fric * h / 2)  # one step = O B A B O (matrices right to left)

    def step(state, ids, k):
        x, p = state
        x, p = underdamped.obabo_oba(x, p, gauss_denoiser(x), SIGMA, h, fric, 9, ids, k)
        return x, underdamped.obabo_bo(p, x, gauss_denoiser(x), SIGMA, h, fric, 9, ids, k)

    zeros = torch.zeros(CHAINS, DIM, dtype=torch.float64)
    x, p = _run(step, 50, (zeros + M, zeros))
    o = np.diag([1.0, c])
    b = np.array([[1.0, 0.0], [-h / (2 * V), 1.0]])
    a = np.array([[1.0, h], [0.0, 1.0]])
    q = np.diag([0.0, 1 - c * c])
    kick = o @ b @ a @ b  # what the first O's noise goes through
    _lyapunov_check(x, p, kick @ o, kick @ q @ kick.T + q)


def test_euler_heun_hand_traced():
    x = torch.tensor([[2.0]], dtype=torch.float64)
    x_euler, d = karras_step.euler_step(x, torch.tensor([[1.0]], dtype=torch.float64), 2.0, 1.0)
    assert float(d) == 0.5 and float(x_euler) == 1.5
    out = karras_step.heun_correct(x, d, x_euler, torch.tensor([[1.2]], dtype=torch.float64), 2.0, 1.0)
    assert float(out) == pytest.approx(1.6, abs=1e-12)  # 2 - (0.5 + 0.3)/2


def test_heun_is_second_order_on_the_gaussian_ode():
    """PF-ODE of N(M, A2) data: x(s) = M + (x0 - M) sqrt((A2 + s^2)/(A2 + s0^2)); Heun's error falls ~4x per halving."""
    s0, s1 = 10.0, 0.5
    x0 = torch.tensor([[3.0, -2.0]], dtype=torch.float64)
    exact = M + (x0 - M) * math.sqrt((A2 + s1**2) / (A2 + s0**2))
    errs = []
    for n in (8, 16, 32):
        grid = torch.linspace(s0, s1, n + 1, dtype=torch.float64)
        x = x0
        for s, sn in zip(grid[:-1].tolist(), grid[1:].tolist()):
            xe, d = karras_step.euler_step(x, gauss_denoiser(x, s), s, sn)
            x = karras_step.heun_correct(x, d, xe, gauss_denoiser(xe, sn), s, sn)
        errs.append(float((x - exact).abs().max()))
    assert 3.0 < errs[0] / errs[1] < 5.0 and 3.0 < errs[1] / errs[2] < 5.0


def test_churn():
    x = torch.zeros(CHAINS, DIM, dtype=torch.float64)
    sigma = torch.full((CHAINS,), 2.0, dtype=torch.float64)
    same, s_hat = karras_step.churn(x + 1, sigma, 0.0, 1.003, 0, None, 0)
    assert torch.equal(same, x + 1) and torch.equal(s_hat, sigma)
    gamma, s_noise = 0.4, 1.003
    x_hat, s_hat = karras_step.churn(x, sigma, gamma, s_noise, 0, None, 0)
    assert s_hat.dtype == torch.float64 and torch.allclose(s_hat, sigma * 1.4)
    _check_moments(x_hat, 0.0, s_noise**2 * (2.8**2 - 2.0**2))  # s_noise^2 (sigma_hat^2 - sigma^2)


def test_deis_combine_hand_traced():
    x = torch.tensor([[1.0, 2.0]])
    hist = torch.tensor([[[3.0, 4.0]], [[5.0, 6.0]]])
    out = deis.deis_combine(x, hist, 0.5, torch.tensor([[0.1, 0.2]]))
    torch.testing.assert_close(out, torch.tensor([[1.8, 2.6]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(deis.deis_combine(x, list(hist), 0.5, torch.tensor([0.1, 0.2])), out)


def test_gibbs_select_hand_traced():
    logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, 3.0, 0.0]])
    levels = torch.tensor([10.0, 1.0, 0.1], dtype=torch.float64)
    idx, sig = gibbs.gibbs_select(logits, levels)
    assert idx.tolist() == [1, 0] and sig.tolist() == [1.0, 10.0]  # a tie picks the first level
    idx, sig = gibbs.gibbs_select(logits, levels, torch.tensor([0.0, 0.0, 5.0]))
    assert idx.tolist() == [2, 2] and sig.dtype == torch.float64


def test_block_min_update_hand_traced():
    x, best_x = torch.ones(3, 2), torch.zeros(3, 2)
    best_sigma = torch.tensor([1.0, 1.0, 1.0])
    out = gibbs.block_min_update(x, torch.tensor([0.5, 1.0, 2.0]), best_x, best_sigma)
    assert out[0] is best_x and best_x.tolist() == [[1, 1], [0, 0], [0, 0]] and best_sigma.tolist() == [0.5, 1, 1]


# ---------------- dispatch and argument checks ----------------
def test_dispatch(monkeypatch, device):
    x = torch.zeros(2, 3)
    calls = []
    monkeypatch.setattr(langevin, "langevin_step_triton", lambda *a: calls.append("triton") or x)
    langevin.langevin_step(x, x, 1.0, 0.1, 0, None, 0)  # CPU tensors, auto -> reference
    assert calls == []
    monkeypatch.setenv("DMCMC_KERNELS", "triton")
    xd = x.to(device)  # Triton takes CUDA tensors (CPU ones only under the interpreter, as here without a GPU)
    langevin.langevin_step(xd, xd, 1.0, 0.1, 0, None, 0)
    assert calls == ["triton"]
    langevin.langevin_step(xd, xd, 1.0, 0.1, 0, None, 0, backend="torch")  # the argument beats the env var
    assert calls == ["triton"]
    with pytest.raises(ValueError, match="backend"):
        langevin.langevin_step(x, x, 1.0, 0.1, 0, None, 0, backend="cuda")


@pytest.mark.parametrize("call,arg", [
    (lambda x: langevin.langevin_step(x, x, torch.ones(3), 0.1, 0, None, 0), "sigma"),
    (lambda x: langevin.langevin_step(x, x[:1], 1.0, 0.1, 0, None, 0), "denoised"),
    (lambda x: underdamped.obabo_oba(x, x, x, 1.0, 0.1, 1.0, 0, [0, 1, 2], 0), "chain_ids"),
    (lambda x: karras_step.churn(x, 1.0, 0.1, 1.0, 0, None, torch.zeros(2, 2, dtype=torch.int64)), "step"),
    (lambda x: deis.deis_combine(x, x, 1.0, torch.ones(2, 1)), "eps_hist"),
    (lambda x: deis.deis_combine(x, x[None], 1.0, torch.ones(2, 2)), "coeffs"),
    (lambda x: gibbs.gibbs_select(x[0], torch.ones(5)), "logits"),
    (lambda x: gibbs.gibbs_select(x, torch.ones(4)), "level_sigmas"),
    (lambda x: gibbs.gibbs_select(x, torch.ones(5), torch.zeros(3)), "log_prior"),
    (lambda x: langevin.langevin_step(x, x, 1.0, 0.1, -1, None, 0), "seed"),
])
def test_bad_arguments_name_the_argument(call, arg):
    with pytest.raises(ValueError, match=arg):
        call(torch.zeros(2, 5))
