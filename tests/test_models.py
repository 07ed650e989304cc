"""Analytic models: exact scores vs finite differences of the exact log density, moments vs Monte
Carlo, the ideal denoiser on a hand-derived case, the counting wrapper and input checks."""
import math

import pytest
import torch

from dmcmc_fast.models import CountingDenoiser, GaussianMixture, IdealDenoiser, check_call, gaussian, score_from_denoiser
from dmcmc_fast.models.base import ChainDiverged, NonFiniteModelOutput


def _mixture(K=5, shape=(2, 3), std=0.3, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(K, *shape, generator=g, dtype=dtype) * 2
    w = torch.rand(K, generator=g, dtype=dtype) + 0.1
    return GaussianMixture(means, std=std, weights=w)


@pytest.mark.parametrize("std", [0.3, 0.0])
@pytest.mark.parametrize("sigma", [0.05, 0.7, 5.0])
def test_score_matches_finite_difference_of_log_density(std, sigma):
    m = _mixture(std=std)
    g = torch.Generator().manual_seed(1)
    x = (m.sample(4, generator=g, sigma=sigma)[0]).double()
    sig = torch.full((4,), sigma, dtype=torch.float64)
    score = score_from_denoiser(m, x, sig)
    h = 1e-5 * max(1.0, sigma)
    fd = torch.zeros_like(x).reshape(4, -1)
    for j in range(fd.shape[1]):
        e = torch.zeros_like(fd)
        e[:, j] = h
        e = e.reshape(x.shape)
        fd[:, j] = (m.log_prob(x + e, sig) - m.log_prob(x - e, sig)) / (2 * h)
    torch.testing.assert_close(score.reshape(4, -1), fd, rtol=1e-6, atol=1e-6 / sigma)


def test_log_prob_is_normalised_in_1d():
    m = GaussianMixture(torch.tensor([[-1.0], [2.0]], dtype=torch.float64), std=0.4, weights=torch.tensor([0.3, 0.7]))
    grid = torch.linspace(-8, 10, 20001, dtype=torch.float64)[:, None]
    p = m.log_prob(grid, torch.full((grid.shape[0],), 0.5, dtype=torch.float64)).exp()
    assert abs(torch.trapezoid(p, grid[:, 0]).item() - 1.0) < 1e-6


def test_exact_moments_match_monte_carlo():
    m = _mixture(K=4, shape=(3,), std=0.5)
    g = torch.Generator().manual_seed(2)
    n = 200_000
    x, _ = m.sample(n, generator=g)
    x = x.double()
    mc_mean, mc_cov = x.mean(0), torch.cov(x.T)
    # Monte-Carlo standard error of a mean is sqrt(var/n); allow 5 standard errors.
    se = (m.covariance().diagonal() / n).sqrt()
    assert ((mc_mean - m.mean()).abs() < 5 * se).all()
    torch.testing.assert_close(mc_cov, m.covariance(), atol=0.05, rtol=0.02)


def test_ideal_denoiser_two_points_hand_derived():
    # Data {-1, +1} in 1-D: D(x, s) = tanh(x / s^2) (posterior mean of +-1 with equal weights).
    d = IdealDenoiser(torch.tensor([[-1.0], [1.0]], dtype=torch.float64))
    x = torch.tensor([[-0.3], [0.0], [0.2], [1.7]], dtype=torch.float64)
    for s in (0.3, 1.0, 4.0):
        sig = torch.full((4,), s, dtype=torch.float64)
        torch.testing.assert_close(d(x, sig), torch.tanh(x / s**2))


def test_gaussian_denoiser_closed_form():
    mu = torch.tensor([1.0, -2.0], dtype=torch.float64)
    m = gaussian(mu, std=0.5)
    x = torch.tensor([[0.0, 0.0], [3.0, 1.0]], dtype=torch.float64)
    sig = torch.tensor([0.1, 2.0], dtype=torch.float64)
    expect = mu + (x - mu) * (0.25 / (0.25 + sig[:, None] ** 2))
    torch.testing.assert_close(m(x, sig), expect)


def test_chunked_call_equals_one_shot():
    m = _mixture(K=7, shape=(5,), std=0.2)
    x = torch.randn(37, 5, dtype=torch.float64)
    sig = torch.rand(37, dtype=torch.float64) + 0.1
    full = m(x, sig)
    m.chunk = 8
    torch.testing.assert_close(m(x, sig), full)


def test_nearest_mode_and_sizes():
    m = _mixture(K=6, shape=(4,), std=0.01)
    x, k = m.sample(50, generator=torch.Generator().manual_seed(3))
    assert torch.equal(m.nearest_mode(x), k)
    assert m.num_modes == 6 and m.dim == 4


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="std"):
        GaussianMixture(torch.zeros(2, 3), std=-1.0)
    with pytest.raises(ValueError, match="weights"):
        GaussianMixture(torch.zeros(2, 3), std=1.0, weights=torch.tensor([1.0, -1.0]))
    m = _mixture(shape=(2, 3))
    with pytest.raises(ValueError, match=r"x must have shape \[B, 2, 3\]"):
        check_call(m, torch.zeros(4, 6), 1.0)
    with pytest.raises(ValueError, match="sigma must be finite and > 0"):
        check_call(m, torch.zeros(4, 2, 3), torch.tensor([1.0, 0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match=r"sigma must be a scalar or of shape \[4\]"):
        check_call(m, torch.zeros(4, 2, 3), torch.ones(3))


def test_counting_denoiser_counts_per_sample_and_rejects_nan():
    m = _mixture(shape=(3,))
    c = CountingDenoiser(m, 5)
    x = torch.randn(5, 3, dtype=torch.float64)
    c(x, torch.ones(5, dtype=torch.float64))
    c(x[[1, 3]], torch.ones(2, dtype=torch.float64), idx=torch.tensor([1, 3]))
    assert c.nfe.tolist() == [1, 2, 1, 2, 1]
    c.raise_if_nonfinite()  # all outputs finite: nothing to raise


def test_counting_denoiser_defers_the_nan_check_and_names_the_first_bad_sigma():
    x = torch.randn(5, 3)
    bad = CountingDenoiser(lambda x, s: torch.where(s[:, None] < 0.5, x * math.nan, x), 5)
    bad.FOLD_EVERY = 3  # cross a fold: the first bad call must survive folding
    for s in (4.0, 2.0, 1.0, 0.25, 0.1, 0.05, 0.01):
        bad(x, torch.full((5,), s))  # no raise here: the check stays on the device
    with pytest.raises(NonFiniteModelOutput, match=r"first at sigma in \[0\.25, 0\.25\]"):
        bad.raise_if_nonfinite()
    bad.defer_check(torch.tensor(True), "sigma_start must be finite and > 0")
    with pytest.raises(ValueError, match="sigma_start must be finite"):  # input checks are named first
        bad.raise_if_nonfinite()


@pytest.mark.parametrize("bad", [None, 0, 3, 5])
def test_positive_checks_of_a_run_are_reduced_once_at_its_end(bad):
    """A run's `defer_positive` tensors (DLG: a start per block) are kept and reduced together at the end: the
    run raises, naming the message, iff one value of one of them is not finite and > 0."""
    c = CountingDenoiser(gaussian(torch.zeros(3), 1.0), 2)
    for k in range(6):
        t = torch.tensor([0.5 + k, 2.0], dtype=torch.float64 if k % 2 else torch.float32)
        if k == bad:
            t[1] = -1.0 if k < 4 else math.nan
        c.defer_positive(t, "sigma_start must be finite and > 0")
    c.defer_positive(torch.ones(3), "sigmas must be positive")
    if bad is None:
        c.raise_if_nonfinite()
    else:
        with pytest.raises(ValueError, match="sigma_start must be finite and > 0"):
            c.raise_if_nonfinite()
    c.raise_if_nonfinite()  # reported once: the checks are consumed


def _stepping(update, fold_every=3):
    """A counter over an identity denoiser, called along a chain x <- update(x, k) (a sampler stand-in)."""
    c = CountingDenoiser(gaussian(torch.zeros(3), 1.0), 2)
    c.FOLD_EVERY = fold_every
    x = torch.ones(2, 3)
    for k in range(8):
        x = update(c(x, torch.full((2,), 0.5)), k)
    return c, x


def test_a_chain_that_went_nan_before_a_call_is_a_divergence_not_the_model():
    c, _ = _stepping(lambda d, k: d * (math.inf if k == 4 else 1.0))  # the state is inf from call 6 on
    c.blame("langevin", "lower the step size eta (got 1e+06)")
    with pytest.raises(ChainDiverged, match=r"^langevin: the chain diverged: the state x was already NaN/Inf when "
                                            r"the model was called, first at sigma in \[0\.5, 0\.5\]; lower the "
                                            r"step size eta \(got 1e\+06\)$") as err:
        c.raise_if_nonfinite()
    assert isinstance(err.value, ValueError)  # the CLI's one-line error


def test_a_runaway_state_is_a_divergence_even_where_the_model_overflows_first():
    m = CountingDenoiser(lambda x, s: x * x, 2)  # overflows float32 for |x| > 1.8e19: finite input, inf output
    m(torch.full((2, 3), 1e20), torch.full((2,), 0.5))
    with pytest.raises(ChainDiverged, match=r"reached \|x\| = 1e\+20 at sigma in \[0\.5, 0\.5\], far outside"):
        m.raise_if_nonfinite()
    plausible = CountingDenoiser(lambda x, s: x * math.nan, 2)  # the model's fault at a data-like input
    plausible(torch.full((2, 3), 3.0), torch.full((2,), 0.5))
    with pytest.raises(NonFiniteModelOutput, match=r"^model returned NaN/Inf for finite input \(\|x\| <= 3\)") as err:
        plausible.raise_if_nonfinite()
    assert not isinstance(err.value, ChainDiverged)


def test_a_final_state_made_nan_after_the_last_call_is_named_too():
    c, x = _stepping(lambda d, k: d * (math.nan if k == 7 else 1.0))  # only the returned state is NaN
    c.raise_if_nonfinite()  # every call saw and returned finite values
    c.check_final(x)
    with pytest.raises(ChainDiverged, match="the final state x is NaN/Inf although every model call"):
        c.raise_if_nonfinite()


def test_a_model_output_of_the_wrong_shape_is_an_error_at_the_first_call():
    class OneChannel:
        shape = (3, 4, 4)

        def __call__(self, x, sigma):
            return x[:, :1]

    c = CountingDenoiser(OneChannel(), 2)
    with pytest.raises(ValueError, match=r"the model returned shape \(2, 1, 4, 4\) for input of shape "
                                         r"\(2, 3, 4, 4\); a denoiser must return its input's shape"):
        c(torch.zeros(2, 3, 4, 4), torch.ones(2))
    with pytest.raises(ValueError, match=r"returned shape \(1, 3, 4, 4\) for input of shape \(2, 3, 4, 4\)"):
        CountingDenoiser(lambda x, s: x[:1], 2)(torch.zeros(2, 3, 4, 4), torch.ones(2))  # a wrong batch
    with pytest.raises(ValueError, match=r"x must have shape \[B, 3, 4, 4\] \(the model's shape\), got \(2, 1, 4, 4\)"):
        c(torch.zeros(2, 1, 4, 4), torch.ones(2))
    assert c.calls == 0 and c.nfe.tolist() == [0, 0]  # nothing counted for a rejected call


def test_api_names_a_one_channel_output_for_three_channel_data():
    from dmcmc_fast import api

    class OneChannel:
        shape, sigma_min, sigma_max, data_range = (3, 4, 4), 0.002, 80.0, (-1.0, 1.0)

        def __call__(self, x, sigma):
            return x.mean(1, keepdim=True)  # [B, 1, H, W]: would broadcast silently in x - D(x)

    with pytest.raises(ValueError, match=r"the model returned shape \(2, 1, 4, 4\) for input of shape \(2, 3, 4, 4\)"):
        api.sample(OneChannel(), "heun", num=2, nfe=5, progress=False)

