"""Reverse S/ODE integrators against exact answers on Gaussian data.

For data N(mu, s^2 I) the VE probability-flow ODE is solved exactly by
x(sigma) = mu + (x(sigma0) - mu) sqrt((s^2 + sigma^2) / (s^2 + sigma0^2)); the deterministic integrators'
observed convergence orders are fitted against it, the stochastic ones' output moments are compared with
N(mu, (s^2 + sigma_min^2) I), and Heun / Karras-stochastic are compared with a line-by-line transcription
of k-diffusion's `sample_heun` (k_diffusion/sampling.py, the EDM Alg. 2 implementation) written below.
"""
import math

import numpy as np
import pytest
import torch

from dmcmc_fast import rng
from dmcmc_fast.integrators import (INTEGRATORS, sample_deis, sample_dpmpp_2m, sample_dpmpp_2m_sde,
                                    sample_dpmpp_2s_ancestral, sample_dpmpp_3m_sde, sample_dpmpp_sde, sample_heun,
                                    sample_karras_sde, sample_rk45, sample_unipc)
from dmcmc_fast.integrators.deis import deis_coefficients, deis_steps_for_nfe
from dmcmc_fast.models.gaussian_mixture import GaussianMixture, gaussian
from dmcmc_fast.schedules import karras

MU, S = torch.tensor([0.5, -1.0, 2.0]), 1.0
F64 = torch.float64
ADAPTIVE = {"rk45", "dpm_adaptive"}  # n_steps is an NFE cap; they spend what their tolerances need




def exact_flow(x0, s0, sigma):
    mu = MU.to(F64)
    return mu + (x0 - mu) * torch.sqrt((S ** 2 + sigma ** 2) / (S ** 2 + s0[:, None] ** 2))


def start_state(s0, seed=0):
    z = rng.chain_randn(seed, torch.arange(len(s0)), 0, (3,), stream=rng.STREAM_INIT, dtype=F64)
    return MU.to(F64) + torch.sqrt(S ** 2 + s0[:, None] ** 2) * z


# ---- observed convergence order of the deterministic integrators ----
# Setup: starts 10, 5, 2.5 (per sample), to sigma_min 0.1 on Karras grids with rho = 3, error measured at
# sigma_min (no final jump), N - 1 = 24, 48, 96 steps, slope of log(max error) vs log(N - 1) by least squares.
# Tolerance [p - 0.3, p + 0.5]: a wrong update loses at least a whole order (-1.0), far outside; the fit
# is still pre-asymptotic (the next term of the error expansion, relative size O(h)), which in this setup
# moves the slope by up to 0.23 (rhoAB r = 3: 3.77), and up where the leading constant is small
# (tAB-vp r = 2: 3.36).
# Everything is float64 (the kernels compute in float64 for float64 state), errors stay above 1e-7.
ORDER_CASES = [("euler", {}, 1), ("heun", {}, 2), ("dpmpp_2m", {}, 2), ("unipc", dict(order=1), 2),
               ("unipc", dict(order=2), 3), ("unipc", dict(order=2, corrector=0), 2),
               ("deis", dict(order=1, warm_start="lower_order"), 2)] + [
    ("deis", dict(order=r, ab_time=t, warm_start="runge_kutta"), r + 1)
    for t in ("rho", "ve", "vp") for r in range(4) if r > 0 or t == "ve"]


@pytest.mark.parametrize("name,kw,order", ORDER_CASES, ids=lambda v: str(v))
def test_convergence_order(name, kw, order):
    s0 = torch.tensor([10.0, 5.0, 2.5], dtype=F64)
    x0, m = start_state(s0), gaussian(MU, S)
    truth = exact_flow(x0, s0, 0.1)
    steps, errs = [25, 49, 97], []
    for n in steps:
        res = INTEGRATORS[name][0](m, x0, s0, n, sigma_min=0.1, rho=3.0, final_tweedie=False, **kw)
        errs.append((res.x - truth).norm(dim=1).max().item())
    slope = -np.polyfit(np.log(np.array(steps) - 1.0), np.log(errs), 1)[0]
    assert order - 0.3 <= slope <= order + 0.5, (errs, slope)


def test_lower_order_warm_start_caps_order_at_two():
    """The paper's warm start (an Euler first step, local error O(h^2)) limits tAB3 to order 2 from a start
    where eps is curved (measured 2.04 here), the Runge-Kutta warm start keeps order 4 (measured 4.01)."""
    s0 = torch.tensor([2.0], dtype=F64)
    x0, m = start_state(s0), gaussian(MU, S)

    def err(n, warm_start):
        res = sample_deis(m, x0, s0, n, sigma_min=0.1, rho=3.0, order=3, warm_start=warm_start, final_tweedie=False)
        return (res.x - exact_flow(x0, s0, 0.1)).norm().item()

    assert 1.8 < math.log2(err(33, "lower_order") / err(65, "lower_order")) < 2.3
    assert 3.8 < math.log2(err(33, "runge_kutta") / err(65, "runge_kutta")) < 4.3


def test_rk45_meets_tolerance_and_reports_solver_nfe():
    s0 = torch.tensor([40.0, 3.0], dtype=F64)
    x0, m = start_state(s0), gaussian(MU, S)
    nfev = {}  # the callback reports each sample as it finishes (in any order)
    res = sample_rk45(m, x0, s0, 500, sigma_min=0.01, rtol=1e-7, atol=1e-7, final_tweedie=False,
                      callback=lambda info: nfev.__setitem__(info["i"], info["nfev"]))
    assert (res.x - exact_flow(x0, s0, 0.01)).abs().max() < 1e-5
    assert res.nfe.tolist() == [nfev[0], nfev[1]]  # counted at the call site == the solver's own count
    loose = sample_rk45(m, x0, s0, 500, sigma_min=0.01, rtol=1e-3, atol=1e-3)
    assert (loose.nfe < res.nfe + 1).all() and (loose.nfe >= 7).all()
    with pytest.raises(ValueError, match="rtol=1e-07, atol=1e-07"):
        sample_rk45(m, x0, s0, 20, sigma_min=0.01, rtol=1e-7, atol=1e-7)



@pytest.mark.parametrize("tol", [1e-1, 1e-3, 1e-6])
def test_batched_rk45_takes_scipys_steps_sample_by_sample(tol):
    """The batched controller (one model call per stage for all samples) against one scipy solve per
    sample: same NFE per sample (so the same accepted and rejected steps) and the same end state."""
    from dmcmc_fast.integrators.rk45 import sample_rk45_scipy

    m = GaussianMixture(torch.tensor([[-2.0, 0.5, 1.0], [1.5, -1.0, 0.0], [0.0, 2.0, -2.0]], dtype=F64),
                        0.4, torch.tensor([0.3, 0.5, 0.2]))
    s0 = torch.tensor([80.0, 12.0, 3.0, 0.7, 0.3, 0.001], dtype=F64)  # the last starts below sigma_min
    x0 = s0[:, None] * rng.chain_randn(4, torch.arange(6), 0, (3,), stream=rng.STREAM_INIT, dtype=F64)
    fast = sample_rk45(m, x0, s0, 1000, sigma_min=0.002, rtol=tol, atol=tol)
    ref = sample_rk45_scipy(m, x0, s0, 1000, sigma_min=0.002, rtol=tol, atol=tol)
    assert fast.nfe.tolist() == ref.nfe.tolist()
    assert fast.nfe[-1] == 1 and (fast.nfe[:-1] >= 8).all()  # below sigma_min: only the Tweedie step
    torch.testing.assert_close(fast.x, ref.x, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match=f"rtol={tol}, atol={tol}"):
        sample_rk45(m, x0, s0, int(ref.nfe.max()) - 1, sigma_min=0.002, rtol=tol, atol=tol)

# ---- Heun / KAR2 against the published implementation ----
def kdiffusion_sample_heun(model, x, sigmas, s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0,
                           seed=0, chain_ids=None):
    """Transcription of k-diffusion's `sample_heun` (EDM Alg. 2), its `torch.randn_like` replaced by our
    per-chain stream (step i, STREAM_CHURN) so both draw the same numbers; one grid shared by the batch."""
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        gamma = min(s_churn / (len(sigmas) - 1), 2 ** 0.5 - 1) if s_tmin <= sigmas[i] <= s_tmax else 0.0
        eps = rng.chain_randn(seed, chain_ids, i, x.shape[1:], stream=rng.STREAM_CHURN, dtype=x.dtype) * s_noise
        sigma_hat = sigmas[i] * (gamma + 1)
        if gamma > 0:
            x = x + eps * (sigma_hat ** 2 - sigmas[i] ** 2) ** 0.5
        denoised = model(x, sigma_hat * s_in)
        d = (x - denoised) / sigma_hat
        dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = (x_2 - model(x_2, sigmas[i + 1] * s_in)) / sigmas[i + 1]
            x = x + (d + d_2) / 2 * dt
    return x


def two_mode_model():
    return GaussianMixture(torch.tensor([[1.0, -1.0], [-2.0, 0.5]]), std=0.3, weights=torch.tensor([0.3, 0.7]))


@pytest.mark.parametrize("churn", [dict(), dict(s_churn=30.0, s_tmin=0.3, s_tmax=5.0, s_noise=1.007)])
def test_heun_and_kar2_match_kdiffusion(churn):
    m, n = two_mode_model(), 8
    ids = torch.tensor([4, 9, 1])
    x = 10.0 * rng.chain_randn(2, ids, 0, (2,), stream=rng.STREAM_INIT, dtype=F64)
    sigmas = karras(n, 0.02, 10.0, 7.0).tolist()
    ref = kdiffusion_sample_heun(m, x, sigmas, seed=5, chain_ids=ids, **churn)
    if churn:
        ours = sample_karras_sde(m, x, 10.0, n, sigma_min=0.02, seed=5, chain_ids=ids, **churn)
        off = sample_karras_sde(m, x, 10.0, n, sigma_min=0.02, seed=5, chain_ids=ids, **dict(churn, s_churn=0.0))
        assert (ours.x - off.x).abs().max() > 1e-2  # the churn does act
    else:
        ours = sample_heun(m, x, 10.0, n, sigma_min=0.02)
    torch.testing.assert_close(ours.x, ref, rtol=1e-5, atol=1e-5)
    assert ours.nfe.tolist() == [2 * n - 1] * 3


def test_dpmpp_2m_matches_kdiffusion():
    """Against the installed k-diffusion's `sample_dpmpp_2m` (deterministic) on its shared Karras grid: same
    samples, N model calls for N grid points plus the step to 0."""
    from bench.baselines import load_k_diffusion_sampling

    kd = load_k_diffusion_sampling()
    assert kd is not None, "k-diffusion is installed by scripts/setup.sh"
    m, n = two_mode_model(), 9
    x = 10.0 * rng.chain_randn(2, torch.tensor([4, 9, 1]), 0, (2,), stream=rng.STREAM_INIT, dtype=F64)
    calls = []
    ref = kd.sample_dpmpp_2m(lambda x_, s_: calls.append(1) or m(x_, s_), x, karras(n, 0.02, 10.0, 7.0).to(F64),
                             disable=True)
    ours = sample_dpmpp_2m(m, x, 10.0, n, sigma_min=0.02)
    torch.testing.assert_close(ours.x, ref, rtol=1e-9, atol=1e-9)
    assert ours.nfe.tolist() == [n] * 3 == [len(calls)] * 3
    # per-sample starts: each row equals that row run alone from its own start; a row below sigma_min stands
    starts = torch.tensor([10.0, 0.5, 0.01], dtype=F64)
    both = sample_dpmpp_2m(m, x, starts, n, sigma_min=0.02, final_tweedie=False)
    for b in range(3):
        alone = sample_dpmpp_2m(m, x[b:b + 1], starts[b:b + 1], n, sigma_min=0.02, final_tweedie=False)
        torch.testing.assert_close(both.x[b:b + 1], alone.x, rtol=1e-12, atol=1e-12)
    assert torch.equal(both.x[2], x[2])


def _kdiffusion_case(n):
    """(k-diffusion's sampling module, the two-mode model, chain ids, x at sigma 10, a k-diffusion noise
    sampler that returns our chain noise of step i, STREAM_SDE, on its i-th call)."""
    from bench.baselines import load_k_diffusion_sampling

    ids = torch.tensor([4, 9, 1])
    x = 10.0 * rng.chain_randn(2, ids, 0, (2,), stream=rng.STREAM_INIT, dtype=F64)
    steps = iter(range(n))
    noise = lambda s, s_next: rng.chain_randn(5, ids, next(steps), (2,), stream=rng.STREAM_SDE, dtype=F64)  # noqa
    return load_k_diffusion_sampling(), two_mode_model(), ids, x, noise


@pytest.mark.parametrize("solver_type", ["midpoint", "heun"])
def test_dpmpp_2m_sde_matches_kdiffusion(solver_type):
    """k-diffusion's `sample_dpmpp_2m_sde` with its noise sampler drawing our per-chain noise of step i:
    same samples (eta = 0, DPM-Solver++(2M), is checked against k-diffusion's own 2M above)."""
    n = 9
    kd, m, ids, x, noise = _kdiffusion_case(n)
    ref = kd.sample_dpmpp_2m_sde(m, x, karras(n, 0.02, 10.0, 7.0).to(F64), disable=True, eta=0.8, s_noise=1.1,
                                 noise_sampler=noise, solver_type=solver_type)
    ours = sample_dpmpp_2m_sde(m, x, 10.0, n, sigma_min=0.02, eta=0.8, s_noise=1.1, solver_type=solver_type,
                               seed=5, chain_ids=ids)
    torch.testing.assert_close(ours.x, ref, rtol=1e-9, atol=1e-9)
    assert ours.nfe.tolist() == [n] * 3


@pytest.mark.parametrize("eta", [1.0, 0.3, 0.0])
def test_dpmpp_3m_sde_matches_kdiffusion(eta):
    n = 10
    kd, m, ids, x, noise = _kdiffusion_case(n)
    ref = kd.sample_dpmpp_3m_sde(m, x, karras(n, 0.02, 10.0, 7.0).to(F64), disable=True, eta=eta, s_noise=1.1,
                                 noise_sampler=noise)
    ours = sample_dpmpp_3m_sde(m, x, 10.0, n, sigma_min=0.02, eta=eta, s_noise=1.1, seed=5, chain_ids=ids)
    torch.testing.assert_close(ours.x, ref, rtol=1e-9, atol=1e-9)
    assert ours.nfe.tolist() == [n] * 3


@pytest.mark.parametrize("eta", [1.0, 0.4, 0.0])
def test_dpmpp_2s_ancestral_matches_kdiffusion(eta):
    n, calls = 8, []
    kd, m, ids, x, noise = _kdiffusion_case(n)
    ref = kd.sample_dpmpp_2s_ancestral(lambda x_, s_: calls.append(1) or m(x_, s_), x,
                                       karras(n, 0.02, 10.0, 7.0).to(F64), disable=True, eta=eta, s_noise=1.1,
                                       noise_sampler=noise)
    ours = sample_dpmpp_2s_ancestral(m, x, 10.0, n, sigma_min=0.02, eta=eta, s_noise=1.1, seed=5, chain_ids=ids)
    torch.testing.assert_close(ours.x, ref, rtol=1e-9, atol=1e-9)
    assert ours.nfe.tolist() == [2 * n - 1] * 3 == [len(calls)] * 3


@pytest.mark.parametrize("eta,r", [(1.0, 0.5), (0.5, 0.3), (0.0, 0.5)])
def test_dpmpp_sde_matches_kdiffusion(eta, r):
    """k-diffusion's noise sampler is called twice per step (to the midpoint, then to the next sigma): it gets
    the chain's Brownian increments of that step (module docstring), as its Brownian tree would give."""
    from dmcmc_fast.integrators.dpm_solver import STREAM_SDE_SECOND

    n = 8
    kd, m, ids, x, _ = _kdiffusion_case(n)
    calls, first = iter(range(4 * n)), {}

    def increments(s, s_next):  # call 2i: sigma_i -> sigma_s; call 2i + 1: sigma_i -> sigma_{i+1}
        k = next(calls)
        w = rng.chain_randn(5, ids, k // 2, (2,), stream=rng.STREAM_SDE, dtype=F64)
        if k % 2 == 0:
            first["span"] = float(s - s_next)
            return w
        a = first["span"] / float(s - s_next)
        return math.sqrt(a) * w + math.sqrt(1 - a) * rng.chain_randn(5, ids, k // 2, (2,), stream=STREAM_SDE_SECOND,
                                                                    dtype=F64)

    ref = kd.sample_dpmpp_sde(m, x, karras(n, 0.02, 10.0, 7.0).to(F64), disable=True, eta=eta, s_noise=1.1,
                              noise_sampler=increments, r=r)
    ours = sample_dpmpp_sde(m, x, 10.0, n, sigma_min=0.02, eta=eta, s_noise=1.1, r=r, seed=5, chain_ids=ids)
    torch.testing.assert_close(ours.x, ref, rtol=1e-9, atol=1e-9)
    assert ours.nfe.tolist() == [2 * n - 1] * 3


def _diffusers_unipc(m, x0, n, order, variant, stop_before_last=False):
    """diffusers' UniPCMultistepScheduler on a VE table from 10 to 0.02 (its Karras grid, then 0) with the
    eps network of our denoiser evaluated at the scheduler's own sigmas; -> (x, sigmas)."""
    import diffusers

    from bench import baselines as bl

    abar = bl.ve_alphas_cumprod(0.02, 10.0)
    sched = diffusers.UniPCMultistepScheduler(
        use_karras_sigmas=True, timestep_spacing="linspace", prediction_type="epsilon", solver_order=order,
        solver_type=variant, trained_betas=bl.betas_from_alphas_cumprod(abar), num_train_timesteps=len(abar),
        final_sigmas_type="zero", lower_order_final=True)
    sched.alphas_cumprod = abar.clone()
    sched.set_timesteps(n)
    sig = sched.sigmas.to(F64)
    x = x0 / math.sqrt(1 + float(sig[0]) ** 2)
    for i, t in enumerate(sched.timesteps[:n - 1] if stop_before_last else sched.timesteps):
        xve = x * torch.sqrt(1 + sig[i] ** 2)
        x = sched.step((xve - m(xve, sig[i].expand(x.shape[0]))) / sig[i], t, x).prev_sample
    return x * torch.sqrt(1 + sig[n - 1] ** 2) if stop_before_last else x, sig


@pytest.mark.parametrize("order,n", [(1, 6), (2, 8), (3, 10), (3, 4)])
def test_unipc_matches_diffusers(order, n):
    """Against diffusers' UniPC (bh2, corrector on, lower order final) on the same Karras grid: the samples
    (its last step to sigma = 0 is our final Tweedie step), N model calls; and bh1, compared at the state
    before the last step (diffusers' bh1 turns NaN on a step to sigma = 0: B(h) = -h = -inf times 0)."""
    m = two_mode_model()
    x0 = 10.0 * rng.chain_randn(2, torch.tensor([4, 9, 1]), 0, (2,), stream=rng.STREAM_INIT, dtype=F64)
    ref, sig = _diffusers_unipc(m, x0, n, order, "bh2")
    ours = sample_unipc(m, x0, float(sig[0]), n, sigma_min=float(sig[-2]), order=order)
    torch.testing.assert_close(ours.x, ref, rtol=1e-5, atol=1e-5)
    assert ours.nfe.tolist() == [n] * 3
    ref1, _ = _diffusers_unipc(m, x0, n, order, "bh1", stop_before_last=True)
    states = []
    sample_unipc(m, x0, float(sig[0]), n, sigma_min=float(sig[-2]), order=order, variant="bh1",
                 callback=lambda d: states.append(d["x"]))
    torch.testing.assert_close(states[-1], ref1, rtol=1e-5, atol=1e-5)


def test_heun_one_step_hand_traced():
    """N(0, 1) in 1-D, x = 2, sigma 2 -> 1: D = x/(1+sigma^2); d = (2-0.4)/2 = 0.8, x_e = 1.2,
    d' = (1.2-0.6)/1 = 0.6, x' = 2 - (0.8+0.6)/2 = 1.3."""
    m = gaussian(torch.zeros(1), 1.0)
    res = sample_heun(m, torch.tensor([[2.0]], dtype=F64), 2.0, 2, sigma_min=1.0, final_tweedie=False)
    assert abs(res.x.item() - 1.3) < 1e-6 and res.nfe.tolist() == [2]


# ---- stochastic integrators: moments on Gaussian data ----
@pytest.mark.parametrize("name,n_steps,kw", [
    ("karras_sde", 60, dict(s_churn=10.0, s_tmin=0.0, s_tmax=1e9, s_noise=1.0)),
    ("reverse_diffusion", 400, {}), ("euler_maruyama", 100, {}), ("dpmpp_2m_sde", 40, {}),
    ("dpmpp_2m_sde", 40, dict(eta=0.5, solver_type="heun")), ("dpmpp_3m_sde", 40, {}),
    ("dpmpp_2s_ancestral", 30, {}), ("dpmpp_sde", 30, {})])
def test_stochastic_moments_match_truth(name, n_steps, kw):
    """4000 chains in 2-D from the exact marginal at sigma 5 to sigma_min 0.05: mean within 4 standard
    errors (sd 1/sqrt(4000) = 0.016) per coordinate, pooled variance within 4 sd (rel. sd sqrt(2/8000)),
    of N(mu, s^2 + sigma_min^2). Step counts are where the discretisation bias is < 1% (measured)."""
    n, mu = 4000, torch.tensor([0.5, -1.0])
    m = gaussian(mu, S)
    x0 = mu.double() + math.sqrt(S ** 2 + 25.0) * rng.chain_randn(1, torch.arange(n), 0, (2,),
                                                                   stream=rng.STREAM_INIT, dtype=F64)
    res = INTEGRATORS[name][0](m, x0, 5.0, n_steps, sigma_min=0.05, seed=3, final_tweedie=False, **kw)
    var = S ** 2 + 0.05 ** 2
    assert ((res.x.mean(0) - mu.double()).abs() < 4 * math.sqrt(var / n)).all()
    assert abs(res.x.var(0).mean().item() / var - 1) < 4 * math.sqrt(2 / (2 * n))


# ---- per-sample start sigma: a batch equals each sample run alone ----
@pytest.mark.parametrize("name", sorted(INTEGRATORS))
def test_batch_equals_each_sample_alone(name):
    fn, _ = INTEGRATORS[name]
    m = two_mode_model()
    s0 = torch.tensor([80.0, 5.0, 0.5, 0.001], dtype=F64)  # the last one starts below sigma_min
    ids = torch.tensor([7, 3, 11, 2])
    x = s0[:, None] * rng.chain_randn(0, ids, 0, (2,), stream=rng.STREAM_INIT, dtype=F64)
    kw = dict(sigma_min=0.002, seed=9, step0=torch.tensor([0, 5, 5, 1]))
    n = 300 if name in ADAPTIVE else 6
    batch = fn(m, x, s0, n, chain_ids=ids, **kw)
    for b in range(4):
        alone = fn(m, x[b:b + 1], s0[b:b + 1], n, chain_ids=ids[b:b + 1], **dict(kw, step0=kw["step0"][b:b + 1]))
        torch.testing.assert_close(batch.x[b:b + 1], alone.x, rtol=1e-6, atol=1e-6)
        assert batch.nfe[b] == alone.nfe[0]


@pytest.mark.parametrize("name", ["karras_sde", "reverse_diffusion", "euler_maruyama", "dpmpp_2m_sde",
                                  "dpmpp_3m_sde", "dpmpp_2s_ancestral", "dpmpp_sde"])
def test_step0_and_chain_id_select_the_noise(name):
    fn, _ = INTEGRATORS[name]
    m, x = two_mode_model(), torch.full((1, 2), 3.0, dtype=F64)
    a = fn(m, x, 3.0, 5, chain_ids=torch.tensor([1]), seed=2).x
    assert torch.equal(a, fn(m, x, 3.0, 5, chain_ids=torch.tensor([1]), seed=2).x)
    assert not torch.allclose(a, fn(m, x, 3.0, 5, chain_ids=torch.tensor([1]), seed=2, step0=100).x)
    assert not torch.allclose(a, fn(m, x, 3.0, 5, chain_ids=torch.tensor([2]), seed=2).x)


# ---- NFE accounting and budgets ----
@pytest.mark.parametrize("name", sorted(set(INTEGRATORS) - ADAPTIVE))
@pytest.mark.parametrize("final_tweedie", [True, False])
def test_steps_for_nfe_fits_the_budget(name, final_tweedie):
    fn, steps_for_nfe = INTEGRATORS[name]
    m, x = gaussian(MU, S), torch.ones(2, 3, dtype=F64)
    for budget in (3, 8):
        n = steps_for_nfe(budget, final_tweedie)
        spent = fn(m, x, 20.0, n, final_tweedie=final_tweedie).nfe
        over = fn(m, x, 20.0, n + 1, final_tweedie=final_tweedie).nfe
        assert (spent <= budget).all() and (over > budget).all(), (n, spent, over)


def test_deis_runge_kutta_warm_start_budget():
    m, x = gaussian(MU, S), torch.ones(1, 3, dtype=F64)
    for order, extra in ((1, 0), (2, 1), (3, 4)):
        n = deis_steps_for_nfe(12, order=order, warm_start="runge_kutta")
        res = sample_deis(m, x, 20.0, n, order=order, warm_start="runge_kutta")
        assert res.nfe.item() == 12 == n + extra


def test_final_tweedie_is_the_denoiser_at_sigma_min():
    m, x = two_mode_model(), torch.tensor([[4.0, -3.0]], dtype=F64)
    for name in ("deis", "euler_maruyama", "heun"):
        fn, _ = INTEGRATORS[name]
        at_min = fn(m, x, 10.0, 6, sigma_min=0.05, final_tweedie=False)
        done = fn(m, x, 10.0, 6, sigma_min=0.05)
        torch.testing.assert_close(done.x, m(at_min.x, torch.tensor([0.05], dtype=F64)), rtol=1e-5, atol=1e-6)
        assert (done.nfe - at_min.nfe).item() == 1


# ---- DEIS coefficients ----
def test_deis_coefficients_closed_forms():
    sig = karras(7, 0.1, 10.0, 3.0, append_zero_=False)[None].to(F64)
    h = sig[0, 1:] - sig[0, :-1]
    c0 = deis_coefficients(sig, 0, "ve")
    torch.testing.assert_close(c0[0, :, 0], h)  # order 0: Euler (DDIM)
    c1 = deis_coefficients(sig, 1, "rho")  # int_{s_i}^{s_i+1} (s - s_{i-1})/(s_i - s_{i-1}) ds
    s_prev, s_i, s_next = sig[0, :-2], sig[0, 1:-1], sig[0, 2:]
    closed = ((s_next - s_prev) ** 2 - (s_i - s_prev) ** 2) / (2 * (s_i - s_prev))
    torch.testing.assert_close(c1[0, 1:, 0], closed, rtol=1e-12, atol=1e-12)
    for t in ("rho", "ve", "vp"):  # the Lagrange basis sums to 1: sum_j C_ij = sigma_{i+1} - sigma_i
        c3 = deis_coefficients(sig, 3, t)
        torch.testing.assert_close(c3[0].sum(1), h, rtol=1e-12, atol=1e-12)
        assert (c3[0, 0, 1:] == 0).all() and (c3[0, 2, 3] == 0)  # warm start: order min(i, r)


@pytest.mark.parametrize("call,match", [
    (lambda m, x: sample_karras_sde(m, x, 5.0, 4, s_tmin=2.0, s_tmax=1.0), "s_tmin"),
    (lambda m, x: sample_deis(m, x, 5.0, 4, order=4), "order"),
    (lambda m, x: sample_deis(m, x, 5.0, 4, ab_time="t"), "ab_time"),
    (lambda m, x: sample_deis(m, x, 5.0, 4, warm_start="rk"), "warm_start"),
    (lambda m, x: sample_heun(m, x, 5.0, 0), "n_steps"),
    (lambda m, x: sample_heun(m, x, torch.tensor([1.0, 2.0, 3.0]), 4), "sigma_start"),
    (lambda m, x: sample_heun(m, x, -1.0, 4), "sigma_start must be finite and > 0"),
    # a tensor start is checked on the device and reported when the call ends (no host sync per grid)
    (lambda m, x: sample_heun(m, x, torch.tensor([1.0, -1.0]), 4), "sigma_start must be finite and > 0"),
    (lambda m, x: sample_deis(m, x, torch.tensor([math.nan, 1.0]), 4), "sigma_start must be finite and > 0"),
    (lambda m, x: sample_dpmpp_2m(m, x, torch.tensor([1.0, math.inf]), 4), "sigma_start must be finite and > 0"),
    (lambda m, x: sample_rk45(m, x, 5.0, 50, rtol=0.0), "rtol"),
])
def test_bad_input_names_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call(gaussian(MU, S), torch.ones(2, 3))
