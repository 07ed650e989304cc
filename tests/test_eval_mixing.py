"""DLG's mixing diagnostics: the effective sample size of independent draws is about their number, of a
sticky AR(1) chain about n (1 - rho) / (1 + rho); switch rates and distinct labels count exactly."""
import numpy as np
import torch

from dmcmc_fast.eval.mixing import mixing_report


def _layout(chains, blocks):
    return np.tile(np.arange(chains), blocks), np.repeat(np.arange(blocks), chains)  # sample i = block i // C


def test_ess_of_independent_draws_is_their_number():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 3, generator=g)
    chain, block = _layout(8, 500)
    r = mixing_report(x, chain, block, np.ones(4000))
    assert 0.85 < r["ess_per_sample"] < 1.15 and r["chains"] == 8


def test_ess_of_an_ar1_chain_matches_its_integrated_autocorrelation():
    rho, n, chains = 0.9, 4000, 4
    g = torch.Generator().manual_seed(1)
    z = torch.randn(chains, n, generator=g).double()
    y = torch.zeros(chains, n, dtype=torch.float64)
    for t in range(1, n):
        y[:, t] = rho * y[:, t - 1] + (1 - rho**2) ** 0.5 * z[:, t]
    x = torch.stack([y.T.reshape(-1), 0.01 * torch.randn(chains * n, generator=g).double()], 1)  # [block*C + c]
    chain, block = _layout(chains, n)
    r = mixing_report(x, chain, block, np.ones(chains * n))
    expect = (1 - rho) / (1 + rho)  # 0.0526
    assert 0.6 * expect < r["ess_per_sample"] < 1.5 * expect


def test_switch_rate_and_distinct_labels():
    x = torch.randn(6, 2)
    chain, block = _layout(2, 3)  # chain 0: samples 0, 2, 4; chain 1: 1, 3, 5
    labels = np.array([0, 5, 0, 5, 1, 5])  # chain 0: 0 0 1 (one switch in two), chain 1: 5 5 5 (none)
    r = mixing_report(x, chain, block, np.array([1.0, 2, 3, 4, 5, 6]), labels)
    assert r["mode_switch_rate"] == 0.25 and r["distinct_modes_per_chain"] == 1.5
    assert r["block_sigma_q10_50_90"][1] == 3.5
