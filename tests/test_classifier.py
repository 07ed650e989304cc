"""Noise-level classifiers: the exact posterior over levels against brute force, the Gibbs draw against
that posterior, the paper's network shape, checkpoints (save/load, the committed ones), and training."""
import math

import pytest
import torch

from dmcmc_fast.kernels.gibbs import gibbs_select
from dmcmc_fast.mcmc.classifier import (ExactLevelPosterior, NoiseLevelNet, level_sigmas, load_classifier,
                                        save_classifier)
from dmcmc_fast.models.gaussian_mixture import GaussianMixture


def _mixture(d=3, k=4, std=0.3):
    g = torch.Generator().manual_seed(0)
    return GaussianMixture(2.0 * torch.randn(k, d, generator=g), std=std, weights=torch.arange(1.0, k + 1))


def _brute_log_lik(mix, x, levels):
    """log p_sigma_m(x) by explicit sums over modes of N(x; mu_k, (s^2 + sigma_m^2) I), float64."""
    out = torch.empty(x.shape[0], len(levels), dtype=torch.float64)
    mu, w, d = mix.means.double(), mix.weights.double(), mix.dim
    for b in range(x.shape[0]):
        for m, s in enumerate(levels.double()):
            var = mix.std ** 2 + s ** 2
            dens = sum(w[k] * torch.exp(-((x[b].double().flatten() - mu[k]) ** 2).sum() / (2 * var))
                       / (2 * math.pi * var) ** (d / 2) for k in range(len(w)))
            out[b, m] = torch.log(dens)
    return out


def test_exact_posterior_matches_brute_force():
    mix, levels = _mixture(), level_sigmas(40, 0.05, 20.0)
    x = torch.cat([mix.sample(3, sigma=s, generator=torch.Generator().manual_seed(1))[0] for s in (0.1, 1.0, 8.0)])
    bf = _brute_log_lik(mix, x, levels)
    exact = ExactLevelPosterior(mix, levels, prune=float("inf"))(x.double())
    torch.testing.assert_close(exact, bf, rtol=0, atol=1e-9)
    pruned = ExactLevelPosterior(mix, levels)(x.double())  # pruned levels carry < M e^-40 posterior mass
    torch.testing.assert_close(pruned.softmax(1), bf.softmax(1), rtol=0, atol=1e-12)
    # with a prior over levels, softmax(logits + log prior) is the posterior prior_m p_m(x) / Z
    prior = torch.linspace(1, 3, len(levels), dtype=torch.float64)
    post = prior * bf.exp()
    torch.testing.assert_close((pruned + prior.log()).softmax(1), post / post.sum(1, keepdim=True), rtol=0,
                               atol=1e-12)


def test_static_and_batch_windows_give_the_same_logits(monkeypatch):
    """The device branch (a static window bounded over all inputs) and the CPU one (the batch's widest kept
    window) compute the same logits, near the data and far from it."""
    mix = GaussianMixture(torch.randn(30, 50, generator=torch.Generator().manual_seed(4)), std=0.05)
    clf = ExactLevelPosterior(mix, level_sigmas(400, 0.002, 80.0))
    x = torch.cat([mix.sample(4, sigma=s, generator=torch.Generator().manual_seed(5))[0] for s in (0.003, 0.3, 4.0, 60.0)])
    batch = clf(x.double())
    monkeypatch.setattr(ExactLevelPosterior, "STATIC_WIDTH_ON_CPU", True)
    static = clf(x.double())
    torch.testing.assert_close(static, batch, rtol=0, atol=1e-12)
    full = ExactLevelPosterior(mix, level_sigmas(400, 0.002, 80.0), prune=float("inf"))(x.double())
    torch.testing.assert_close(static.softmax(1), full.softmax(1), rtol=0, atol=1e-12)


def test_exact_posterior_recovers_the_noise_level_in_high_dimension():
    mix = GaussianMixture(torch.randn(5, 400, generator=torch.Generator().manual_seed(2)), std=0.05)
    levels = level_sigmas(1000, 0.002, 80.0)
    m = torch.tensor([100, 400, 600, 900])  # sigma 27, 1.1, 0.14 (all >> std) and 6e-4 (<< std)
    z = torch.randn(4, 400, generator=torch.Generator().manual_seed(3))
    x = mix.means[torch.tensor([0, 1, 2, 3])] + (mix.std ** 2 + levels[m, None] ** 2).sqrt() * z
    got = ExactLevelPosterior(mix, levels)(x).argmax(1)
    # d = 400: sigma is known to ~1/sqrt(2d) = 3.5 %, i.e. ~3.3 levels of 1.07 % (5 sd = 17 levels)
    assert (got[:3] - m[:3]).abs().max() <= 17
    assert levels[got[3]] < 0.03  # below std the data cannot tell levels apart: some low level


def test_gibbs_draw_follows_the_exact_posterior():
    mix, levels = _mixture(d=2), level_sigmas(12, 0.1, 10.0)
    x = torch.tensor([[0.7, -1.2]], dtype=torch.float64)
    logits = ExactLevelPosterior(mix, levels)(x)
    n = 20000
    idx, sig = gibbs_select(logits.expand(n, -1).float(), levels, sample=True, seed=5, chain_ids=torch.arange(n),
                            step=3)
    assert torch.equal(sig, levels[idx])
    freq = torch.bincount(idx, minlength=len(levels)).double() / n
    p = logits.softmax(1)[0]
    assert (freq - p).abs().max() < 5 * math.sqrt(0.25 / n)
    top, _ = gibbs_select(logits.float(), levels)
    assert top.item() == int(p.argmax())


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 8, 8)])
def test_network_is_the_papers_and_round_trips_through_a_checkpoint(shape, tmp_path):
    net = NoiseLevelNet(shape, 1000)
    convs = [m for m in net.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 128, 256] and net.fc.out_features == 1000
    x = 3.0 * torch.randn(5, *shape)
    assert net(x).shape == (5, 1000)
    path = str(tmp_path / "c.pt")
    save_classifier(path, net, {"n_levels": 1000, "sigma_min": 0.002, "sigma_max": 80.0}, "card")
    clf = load_classifier(path)
    with torch.no_grad():  # stored in float16: the reference is the float16-rounded network
        for p in net.parameters():
            p.copy_(p.half().float())
        torch.testing.assert_close(clf(x), net(x), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(clf.levels, level_sigmas(1000, 0.002, 80.0))


def test_committed_digits_classifier_is_far_better_than_chance():
    from dmcmc_fast.data import load_digits

    clf = load_classifier("digits")
    x0 = load_digits()[0][:200]
    g = torch.Generator().manual_seed(0)
    m = torch.randint(1000, (200,), generator=g)
    x = x0 + clf.levels[m].reshape(-1, 1, 1, 1) * torch.randn(x0.shape, generator=g)
    err = (clf(x).argmax(1) - m).abs()
    assert (err <= 50).float().mean() > 0.5  # chance: ~0.1
    assert "Noise-level classifier" in clf.card


def test_train_classifier_command_writes_checkpoint_and_card(tmp_path):
    from dmcmc_fast.cli import main

    out = tmp_path / "clf.pt"
    assert main(["train", "classifier", "--data", "digits", "--steps", "2", "--batch-size", "8", "--n-levels",
                 "50", "--out", str(out)]) == 0
    clf = load_classifier(str(out))
    assert clf.levels.shape == (50,)
    card = (tmp_path / "clf.md").read_text()
    assert "final loss" in card and "| true sigma | n | median abs error | mean abs error | bias | within ±5 |" in card
    assert main(["train", "classifier", "--data", "digits", "--steps", "0", "--out", str(out)]) == 2
