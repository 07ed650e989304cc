"""Sigma grids: endpoints, monotonicity, the EDM formula, per-sample rows, and input errors."""
import math

import pytest
import torch

from dmcmc_fast import schedules as S


def test_karras_matches_edm_eq5_and_ends_at_zero():
    s = S.karras(10, 0.002, 80.0, rho=7.0)
    assert s.shape == (11,) and s[-1] == 0
    assert math.isclose(s[0].item(), 80.0, rel_tol=1e-12) and math.isclose(s[-2].item(), 0.002, rel_tol=1e-12)
    i = 3
    expect = (80 ** (1 / 7) + i / 9 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    assert math.isclose(s[i].item(), expect, rel_tol=1e-12)
    assert (s[1:] < s[:-1]).all()


def test_geometric_is_log_uniform():
    s = S.geometric(1000, 0.01, 50.0)
    r = s[1:] / s[:-1]
    torch.testing.assert_close(r, torch.full_like(r, r[0].item()))
    assert math.isclose(s[0].item(), 50.0) and math.isclose(s[-1].item(), 0.01)


def test_vesde_grid():
    s = S.vesde(5, 0.01, 50.0, eps=1e-5)
    t = torch.linspace(1, 1e-5, 5, dtype=torch.float64)
    torch.testing.assert_close(s[:-1], 0.01 * (5000.0 ** t))


def test_per_sample_rows_equal_shared_grids():
    starts = torch.tensor([80.0, 3.0, 0.5], dtype=torch.float64)
    g = S.karras_per_sample(starts, 6, 0.002)
    for b in range(3):
        torch.testing.assert_close(g[b], S.karras(6, 0.002, starts[b].item()))
    gg = S.geometric_per_sample(starts, 4, 0.01)
    for b in range(3):
        torch.testing.assert_close(gg[b, :-1], S.geometric(4, 0.01, starts[b].item()))


def test_start_below_sigma_min_is_constant_then_zero():
    g = S.karras_per_sample(torch.tensor([0.001], dtype=torch.float64), 4, 0.002)
    assert torch.allclose(g[0, :-1], torch.full((4,), 0.002, dtype=torch.float64)) and g[0, -1] == 0


@pytest.mark.parametrize("call,match", [
    (lambda: S.karras(0, 0.1, 1.0), "number of steps"),
    (lambda: S.karras(5, -0.1, 1.0), "sigma_min must be > 0"),
    (lambda: S.karras(5, 1.0, 0.1), "sigma_max must be >= sigma_min"),
    (lambda: S.karras(5, 0.1, 1.0, rho=0), "rho must be > 0"),
    (lambda: S.vesde_times(5, eps=2.0), "eps must be in"),
    (lambda: S.karras_per_sample(torch.tensor([[1.0, 2.0]]), 3, 0.01), "sigma_start must be \\[B\\]"),
    (lambda: S.geometric_per_sample(torch.tensor([1.0]), 3, 0.0), "sigma_min must be finite and > 0"),
])
def test_bad_input_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
