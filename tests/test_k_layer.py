"""`dmcmc_fast.k`, the k-diffusion-compatible layer, against the installed k-diffusion on the same model, x and
grid: the deterministic samplers agree, the stochastic ones agree given the same noise sampler, extra_args
reach the model (also on dpm_adaptive's shrinking batch), the callback sees k-diffusion's values once per
step, and the signatures are k-diffusion's (extensions only after them)."""
from __future__ import annotations

import inspect
import math

import pytest
import torch

from dmcmc_fast import k as K
from dmcmc_fast.models.builtin import load_model
from dmcmc_fast.models.gaussian_mixture import gaussian

F64 = torch.float64
# float32: k-diffusion's coefficients are float32 (e.g. phi_2 = expm1(-h)/h + 1 of 3M SDE: up to 1.5e-5 apart), ours
# float64; in float64 the two agree to ~1e-14
TOL = dict(rtol=1e-5, atol=3e-5)
TOL64 = dict(rtol=1e-10, atol=1e-10)
CLASSIC = ["sample_lms", "sample_dpm_2", "sample_dpm_2_ancestral", "sample_dpm_fast"]  # dmcmc_fast/k/classic.py
HELPERS = ["get_sigmas_karras", "get_sigmas_exponential", "get_sigmas_polyexponential", "get_sigmas_vp", "to_d",
           "get_ancestral_step", "default_noise_sampler", "append_zero"]
SAMPLERS = ["sample_euler", "sample_heun", "sample_euler_ancestral", "sample_dpmpp_2m", "sample_dpmpp_2m_sde",
            "sample_dpmpp_3m_sde", "sample_dpmpp_2s_ancestral", "sample_dpmpp_sde", "sample_dpm_adaptive"]


@pytest.fixture(scope="module")
def kd():
    """The real k-diffusion: scripts/setup.sh installs it and what its package imports (its import must work)."""
    import importlib

    import k_diffusion  # noqa: F401

    return importlib.import_module("k_diffusion.sampling")


@pytest.fixture(scope="module")
def digits():
    return load_model("gmm-digits", modes=20)


def k_model(m, seen=None):
    """A builtin denoiser as a k-diffusion model `model(x, sigma, **extra_args)`: `shift` (per sample) moves
    the denoised value, `scale` (a number) scales it; `seen` records every call's extra args."""
    def model(x, sigma, shift=None, scale=1.0):
        if seen is not None:
            seen.append({"shift": shift, "scale": scale, "batch": x.shape[0]})
        out = m(x, sigma) * scale
        return out if shift is None else out + shift.to(x.dtype)[:, None, None, None]
    return model


def case(m, n=10, batch=4, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    sigmas = K.get_sigmas_karras(n, 0.002, 80.0).to(dtype)
    return torch.randn(batch, *m.shape, generator=g).to(dtype) * sigmas[0], sigmas


def seeded_noise(x, seed=1):
    """A k-diffusion noise sampler: the next normals of its own generator (both sides get one each)."""
    g = torch.Generator().manual_seed(seed)
    return lambda sigma, sigma_next: torch.randn(x.shape, generator=g).to(x.dtype)


def test_grids_match_kdiffusion(kd):
    for ours, ref in [(K.get_sigmas_karras(12, 0.002, 80.0), kd.get_sigmas_karras(12, 0.002, 80.0)),
                      (K.get_sigmas_karras(5, 0.1, 10.0, rho=3.0), kd.get_sigmas_karras(5, 0.1, 10.0, rho=3.0)),
                      (K.get_sigmas_exponential(7, 0.01, 50.0), kd.get_sigmas_exponential(7, 0.01, 50.0))]:
        assert ours.dtype == ref.dtype == torch.float32 and ours.shape == ref.shape and ours[-1] == 0
        torch.testing.assert_close(ours, ref, rtol=1e-6, atol=0)


def test_signatures_are_kdiffusions(kd):
    """Every parameter of k-diffusion's function, in order, with its default; ours may add keyword-only ones."""
    for name in SAMPLERS + CLASSIC + HELPERS:
        theirs = list(inspect.signature(getattr(kd, name)).parameters.values())
        ours = list(inspect.signature(getattr(K, name)).parameters.values())
        assert [(p.name, p.default) for p in ours[:len(theirs)]] == [(p.name, p.default) for p in theirs], name
        assert all(p.kind is p.KEYWORD_ONLY for p in ours[len(theirs):]), name


@pytest.mark.parametrize("name,kw", [
    ("sample_euler", {}), ("sample_heun", {}), ("sample_heun", dict(s_churn=0.0, s_tmin=0.5)),
    ("sample_dpmpp_2m", {})])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, TOL), (F64, TOL64)])
def test_deterministic_samplers_match_kdiffusion(kd, digits, name, kw, dtype, tol):
    x, sigmas = case(digits, dtype=dtype)
    model = k_model(digits)
    torch.testing.assert_close(getattr(K, name)(model, x, sigmas, disable=True, **kw),
                               getattr(kd, name)(model, x, sigmas, disable=True, **kw), **tol)


@pytest.mark.parametrize("name", ["sample_euler", "sample_heun"])
def test_churn_matches_kdiffusion_on_the_same_global_noise(kd, digits, name):
    """k-diffusion's churn draws torch.randn_like(x) at every step; a noise sampler doing the same after the
    same torch.manual_seed gives its samples (the churn acts only where s_tmin <= sigma_i <= s_tmax)."""
    x, sigmas = case(digits)
    model, churn = k_model(digits), dict(s_churn=20.0, s_tmin=0.05, s_tmax=30.0, s_noise=1.003)
    torch.manual_seed(3)
    ref = getattr(kd, name)(model, x, sigmas, disable=True, **churn)
    torch.manual_seed(3)
    ours = getattr(K, name)(model, x, sigmas, disable=True, noise_sampler=lambda s, s_next: torch.randn_like(x),
                            **churn)
    torch.testing.assert_close(ours, ref, **TOL)
    assert (ours - getattr(K, name)(model, x, sigmas, disable=True)).abs().max() > 1e-2  # the churn does act


@pytest.mark.parametrize("name,kw", [
    ("sample_euler_ancestral", {}), ("sample_euler_ancestral", dict(eta=0.5, s_noise=1.1)),
    ("sample_dpmpp_2m_sde", {}), ("sample_dpmpp_2m_sde", dict(eta=0.7, solver_type="heun")),
    ("sample_dpmpp_3m_sde", {}), ("sample_dpmpp_3m_sde", dict(eta=0.4, s_noise=0.9)),
    ("sample_dpmpp_2s_ancestral", {}), ("sample_dpmpp_2s_ancestral", dict(eta=0.5)),
    ("sample_dpmpp_sde", {}), ("sample_dpmpp_sde", dict(eta=0.6, r=0.3))])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, TOL), (F64, TOL64)])
def test_stochastic_samplers_match_kdiffusion_given_the_noise_sampler(kd, digits, name, kw, dtype, tol):
    x, sigmas = case(digits, dtype=dtype)
    model = k_model(digits)
    ref = getattr(kd, name)(model, x, sigmas, disable=True, noise_sampler=seeded_noise(x), **kw)
    ours = getattr(K, name)(model, x, sigmas, disable=True, noise_sampler=seeded_noise(x), **kw)
    torch.testing.assert_close(ours, ref, **tol)


@pytest.mark.filterwarnings("ignore:To copy construct from a tensor:UserWarning")  # k-diffusion's torch.tensor(t)
def test_dpm_adaptive_matches_kdiffusion_per_sample(kd, digits):
    """Per-sample step control: each row of the batch is k-diffusion's run of that sample alone (its sigmas as
    float64 tensors: from Python floats k-diffusion makes float32 lambdas, see test_dpm_adaptive.py)."""
    x, _ = case(digits, batch=3, dtype=F64)
    model = k_model(digits)
    ours, info = K.sample_dpm_adaptive(model, x, 0.002, 80.0, disable=True, return_info=True, rtol=0.02)
    for b in range(3):
        ref, ref_info = kd.sample_dpm_adaptive(model, x[b:b + 1], torch.tensor(0.002, dtype=F64),
                                               torch.tensor(80.0, dtype=F64), disable=True, return_info=True,
                                               rtol=0.02)
        torch.testing.assert_close(ours[b:b + 1], ref, **TOL)
        assert int(info["nfe_per_sample"][b]) == ref_info["nfe"]
    assert info["nfe"] == int(info["nfe_per_sample"].max())
    with pytest.raises(NotImplementedError, match="eta"):
        K.sample_dpm_adaptive(model, x, 0.002, 80.0, eta=1.0, disable=True)


@pytest.mark.parametrize("name", ["sample_heun", "sample_dpmpp_2m_sde", "sample_dpmpp_sde"])
def test_extra_args_reach_the_model(kd, digits, name):
    x, sigmas = case(digits)
    extra = {"shift": torch.tensor([0.0, 0.1, -0.2, 0.3]), "scale": 0.9}
    seen = []
    ours = getattr(K, name)(k_model(digits, seen), x, sigmas, extra_args=extra, disable=True,
                            **({} if name == "sample_heun" else {"noise_sampler": seeded_noise(x)}))
    ref = getattr(kd, name)(k_model(digits), x, sigmas, extra_args=extra, disable=True,
                            **({} if name == "sample_heun" else {"noise_sampler": seeded_noise(x)}))
    torch.testing.assert_close(ours, ref, **TOL)
    assert seen and all(s["shift"] is extra["shift"] and s["scale"] == 0.9 for s in seen)
    plain = getattr(K, name)(k_model(digits), x, sigmas, disable=True,
                             **({} if name == "sample_heun" else {"noise_sampler": seeded_noise(x)}))
    assert (ours - plain).abs().max() > 1e-2  # they act


def test_dpm_adaptive_gives_each_sample_its_own_extra_args_rows(digits):
    """Finished samples leave the batch: the model then sees only the running rows of per-sample extra args."""
    x, _ = case(digits, batch=3, dtype=F64)
    x = x * torch.tensor([1.0, 0.05, 0.002], dtype=F64)[:, None, None, None]  # very different step counts
    shift = torch.tensor([0.0, 0.3, -0.3], dtype=F64)
    seen = []
    both = K.sample_dpm_adaptive(k_model(digits, seen), x, 0.002, 80.0, extra_args={"shift": shift, "scale": 1.1},
                                 disable=True)
    assert len({s["batch"] for s in seen}) > 1  # the batch did shrink
    for b in range(3):
        alone = K.sample_dpm_adaptive(k_model(digits), x[b:b + 1], 0.002, 80.0,
                                      extra_args={"shift": shift[b:b + 1], "scale": 1.1}, disable=True)
        torch.testing.assert_close(both[b:b + 1], alone, rtol=1e-10, atol=1e-10)


CALLBACK_CASES = {  # sampler -> (options, its noise: none, k-diffusion's global RNG, or a noise sampler)
    "sample_heun": (dict(s_churn=20.0, s_tmin=0.05, s_tmax=30.0), "global"), "sample_euler": ({}, None),
    "sample_dpmpp_2m": ({}, None), "sample_dpmpp_2m_sde": ({}, "sampler"), "sample_euler_ancestral": ({}, "sampler")}


@pytest.mark.parametrize("name", sorted(CALLBACK_CASES))
def test_callback_once_per_step_with_kdiffusions_values(kd, digits, name):
    x, sigmas = case(digits, n=6)
    model = k_model(digits)
    kw, noise = CALLBACK_CASES[name]
    ours, ref = [], []
    for fn, seen in ((getattr(kd, name), ref), (getattr(K, name), ours)):
        extra = {"noise_sampler": seeded_noise(x)} if noise == "sampler" else {}
        if noise == "global" and fn is getattr(K, name):  # k-diffusion's heun draws torch.randn_like(x)
            extra = {"noise_sampler": lambda s, s_next: torch.randn_like(x)}
        torch.manual_seed(5)
        fn(model, x, sigmas, disable=True, callback=seen.append, **kw, **extra)
    assert [d["i"] for d in ours] == list(range(len(sigmas) - 1)) == [d["i"] for d in ref]
    for a, b in zip(ours, ref):
        assert set(a) == set(b) == {"x", "i", "sigma", "sigma_hat", "denoised"}
        for key in ("x", "sigma", "sigma_hat", "denoised"):
            torch.testing.assert_close(torch.as_tensor(a[key]), torch.as_tensor(b[key]), **TOL)


def test_progress_bar(digits, capsys):
    x, sigmas = case(digits, n=7)
    K.sample_dpmpp_2m(k_model(digits), x, sigmas, disable=False)
    assert "7/7" in capsys.readouterr().err
    K.sample_dpmpp_2m(k_model(digits), x, sigmas, disable=True)
    assert capsys.readouterr().err == ""
    _, info = K.sample_dpm_adaptive(k_model(digits), x, 0.002, 80.0, disable=False, return_info=True)
    assert f"{info['nfe']}it" in capsys.readouterr().err  # dpm_adaptive's bar counts model calls


def test_grid_ending_above_zero_stops_there(kd, digits):
    x, sigmas = case(digits)
    model = k_model(digits)
    for name in ("sample_heun", "sample_dpmpp_2m"):
        torch.testing.assert_close(getattr(K, name)(model, x, sigmas[:-3], disable=True),
                                   getattr(kd, name)(model, x, sigmas[:-3], disable=True), **TOL)


@pytest.mark.parametrize("name,steps", [("sample_euler_ancestral", 400), ("sample_dpmpp_2m_sde", 40),
                                        ("sample_dpmpp_sde", 40)])
def test_own_noise_is_seeded_and_right_in_distribution(name, steps):
    """Without a noise sampler: torch.manual_seed repeats a run, two calls differ, and on N(mu, s^2) data the
    samples have the right mean and variance (4000 samples, 4 standard errors; step counts where the
    discretisation bias is < 2%, measured: Euler ancestral is first order, -12% variance at 40 steps, as
    k-diffusion's own)."""
    mu, s, n = torch.tensor([0.5, -1.0], dtype=F64), 0.5, 4000
    m = gaussian(mu, s)
    model = lambda x, sigma: m(x, sigma)  # noqa: E731
    sigmas = K.get_sigmas_karras(steps, 0.05, 5.0).to(F64)[:-1]  # stop at 0.05: N(mu, s^2 + 0.05^2)
    x0 = mu + math.sqrt(s ** 2 + 25.0) * torch.randn(n, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    torch.manual_seed(7)
    a = getattr(K, name)(model, x0, sigmas, disable=True)
    torch.manual_seed(7)
    assert torch.equal(a, getattr(K, name)(model, x0, sigmas, disable=True))
    assert not torch.equal(a, getattr(K, name)(model, x0, sigmas, disable=True))
    assert torch.equal(a, getattr(K, name)(model, x0, sigmas, disable=True, seed=_seed_after(7)))
    var = s ** 2 + 0.05 ** 2
    assert ((a.mean(0) - mu).abs() < 4 * math.sqrt(var / n)).all()
    assert abs(a.var(0).mean().item() / var - 1) < 4 * math.sqrt(2 / (2 * n))


def _seed_after(manual_seed: int) -> int:
    """The Philox seed a call draws from torch's global RNG after torch.manual_seed(manual_seed)."""
    torch.manual_seed(manual_seed)
    return int(torch.randint(0, 2 ** 63 - 1, ()))


def test_errors(digits):
    x, sigmas = case(digits)
    model = k_model(digits)
    for bad, match in [(sigmas.flip(0), "> 0 except the last"), (torch.tensor([5.0, 1.0, 2.0, 0.0]), "non-increasing"),
                       (torch.tensor([5.0, 0.0, 1.0, 0.0]), "> 0 except the last"), (sigmas[None], "1-D"),
                       (sigmas[:1], "at least 2")]:
        with pytest.raises(ValueError, match=match):
            K.sample_heun(model, x, bad, disable=True)
    with pytest.raises(ValueError, match="eta"):
        K.sample_dpmpp_2s_ancestral(model, x, sigmas, eta=1.5, disable=True)
    with pytest.raises(ValueError, match="noise_sampler returned shape"):
        K.sample_euler_ancestral(model, x, sigmas, noise_sampler=lambda s, t: torch.randn(3), disable=True)
    with pytest.raises(AttributeError, match="sample_nothing has no counterpart"):
        K.sample_nothing  # noqa: B018


# ---- the whole sampling module: names, the first samplers, the helpers, the Brownian tree ----

def test_every_sampler_grid_and_helper_is_here_in_both_forms(kd):
    import dmcmc_fast.k.sampling as sampling_module

    names = [n for n in dir(kd) if n.startswith(("sample_", "get_sigmas_"))]
    names += ["to_d", "get_ancestral_step", "default_noise_sampler", "BrownianTreeNoiseSampler", "append_zero"]
    assert len(names) >= 22
    for n in names:
        assert callable(getattr(K, n)) and getattr(K.sampling, n) is getattr(K, n), n
    assert K.sampling is sampling_module and set(names) <= set(K.__all__)


@pytest.mark.parametrize("name,kw", [("sample_lms", {}), ("sample_lms", dict(order=2)), ("sample_dpm_2", {}),
                                     ("sample_dpm_2", dict(s_churn=0.0, s_tmin=0.5))])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, TOL), (F64, TOL64)])
def test_lms_and_dpm_2_match_kdiffusion(kd, digits, name, kw, dtype, tol):
    x, sigmas = case(digits, dtype=dtype)
    model, calls = k_model(digits), []
    counted = lambda x, s, **a: calls.append(x.shape[0]) or model(x, s, **a)  # noqa: E731
    ours = getattr(K.sampling, name)(counted, x, sigmas, disable=True, **kw)
    torch.testing.assert_close(ours, getattr(kd, name)(model, x, sigmas, disable=True, **kw), **tol)
    assert len(calls) == (10 if name == "sample_lms" else 2 * 10 - 1)  # LMS: N NFE; DPM-2: 2N - 1 on N levels


def test_dpm_2_churn_matches_kdiffusion_on_the_same_global_noise(kd, digits):
    """k-diffusion's DPM-2 draws torch.randn_like(x) at every step; churn at every step keeps the two aligned."""
    x, sigmas = case(digits)
    model, churn = k_model(digits), dict(s_churn=5.0, s_noise=1.003)
    torch.manual_seed(4)
    ref = kd.sample_dpm_2(model, x, sigmas, disable=True, **churn)
    torch.manual_seed(4)
    ours = K.sample_dpm_2(model, x, sigmas, disable=True, noise_sampler=lambda s, t: torch.randn_like(x), **churn)
    torch.testing.assert_close(ours, ref, **TOL)
    assert (ours - K.sample_dpm_2(model, x, sigmas, disable=True)).abs().max() > 1e-2


@pytest.mark.parametrize("kw", [{}, dict(eta=0.5, s_noise=1.1), dict(eta=3.0)])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, TOL), (F64, TOL64)])
def test_dpm_2_ancestral_matches_kdiffusion_given_the_noise_sampler(kd, digits, kw, dtype, tol):
    x, sigmas = case(digits, dtype=dtype)
    model = k_model(digits)
    ref = kd.sample_dpm_2_ancestral(model, x, sigmas, disable=True, noise_sampler=seeded_noise(x), **kw)
    ours = K.sampling.sample_dpm_2_ancestral(model, x, sigmas, disable=True, noise_sampler=seeded_noise(x), **kw)
    torch.testing.assert_close(ours, ref, **tol)


@pytest.mark.parametrize("n,kw", [(10, {}), (9, {}), (5, {}), (2, {}), (7, dict(eta=0.5, s_noise=1.1)),
                                  (6, dict(eta=1.0))])
def test_dpm_fast_matches_kdiffusion(kd, n, kw):
    """k-diffusion's step times are float32 whatever x's dtype, its coefficients too: on a smooth model (one
    Gaussian) float64 states agree to 1e-5. (On gmm-digits' 20 sharp modes a 2-step run moves by 6e-3 in
    k-diffusion itself when sigma_max moves by 1e-6: rounding there is amplified past any tolerance.)"""
    m = gaussian(0.3 * torch.randn(1, 4, 4, generator=torch.Generator().manual_seed(2)), 0.5)
    x = 80.0 * torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(3), dtype=F64)
    model, calls = k_model(m), []
    counted = lambda x, s, **a: calls.append(x.shape[0]) or model(x, s, **a)  # noqa: E731
    noise = {"noise_sampler": seeded_noise(x)} if kw else {}
    ref = kd.sample_dpm_fast(model, x, 0.002, 80.0, n, disable=True, **noise, **kw)
    noise = {"noise_sampler": seeded_noise(x)} if kw else {}
    ours = K.sample_dpm_fast(counted, x, 0.002, 80.0, n, disable=True, **noise, **kw)
    # the float32 step times (and, for eta > 0, k-diffusion's float32 sigma_down and t(sigma_down)) put the two
    # 4.9e-5 apart at n = 5 and 3.4e-4 at n = 6, eta = 1 (4e-6 of the start's scale, 80; with 0 noise alike)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=5e-4)
    assert len(calls) == n


def test_brownian_tree_noise_is_kdiffusions(kd, digits):
    x, sigmas = case(digits)
    for seed in (7, [3, 1, 4, 1]):
        ours, ref = K.BrownianTreeNoiseSampler(x, 0.002, 80.0, seed=seed), kd.BrownianTreeNoiseSampler(x, 0.002, 80.0,
                                                                                                      seed=seed)
        for s, s_next in ((sigmas[0], sigmas[1]), (sigmas[3], sigmas[5]), (sigmas[1], sigmas[2])):
            a, b = ours(s, s_next), ref(s, s_next)
            assert a.shape == x.shape
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    model = k_model(digits)  # k-diffusion's SDE sampler with its own default noise equals ours given the same tree
    ref = kd.sample_dpmpp_2m_sde(model, x, sigmas, disable=True,
                                 noise_sampler=kd.BrownianTreeNoiseSampler(x, sigmas[-2], sigmas[0], seed=9))
    ours = K.sampling.sample_dpmpp_2m_sde(model, x, sigmas, disable=True,
                                          noise_sampler=K.BrownianTreeNoiseSampler(x, sigmas[-2], sigmas[0], seed=9))
    torch.testing.assert_close(ours, ref, **TOL)


def test_helpers_and_grids_match_kdiffusion(kd):
    g = torch.Generator().manual_seed(0)
    x, den = torch.randn(3, 2, 2, generator=g), torch.randn(3, 2, 2, generator=g)
    for sigma in (torch.tensor(0.7), torch.tensor([0.5, 1.0, 2.0])):
        torch.testing.assert_close(K.to_d(x, sigma, den), kd.to_d(x, sigma, den), rtol=0, atol=0)
    torch.testing.assert_close(K.to_d(x, 0.7, den), (x - den) / 0.7)  # a number too (k-diffusion: tensors only)
    for a, b, eta in ((10.0, 5.0, 1.0), (2.0, 1.9, 0.5), (3.0, 0.0, 1.0), (1.0, 0.5, 0.0), (4.0, 1.0, 5.0)):
        for ours, ref in zip(K.get_ancestral_step(a, b, eta), kd.get_ancestral_step(a, b, eta)):
            assert float(ours) == pytest.approx(float(ref), rel=1e-12, abs=1e-15)
        ta, tb = torch.tensor(a), torch.tensor(b)
        for ours, ref in zip(K.get_ancestral_step(ta, tb, eta), kd.get_ancestral_step(ta, tb, eta)):
            torch.testing.assert_close(torch.as_tensor(ours, dtype=torch.float32),
                                       torch.as_tensor(ref, dtype=torch.float32))
    torch.manual_seed(1)
    a = K.default_noise_sampler(x)(1.0, 0.5)
    torch.manual_seed(1)
    torch.testing.assert_close(a, kd.default_noise_sampler(x)(1.0, 0.5), rtol=0, atol=0)
    torch.testing.assert_close(K.append_zero(x[0, 0]), kd.append_zero(x[0, 0]), rtol=0, atol=0)
    for ours, ref in ((K.get_sigmas_polyexponential(9, 0.01, 50.0), kd.get_sigmas_polyexponential(9, 0.01, 50.0)),
                      (K.get_sigmas_polyexponential(6, 0.1, 10.0, rho=2.5),
                       kd.get_sigmas_polyexponential(6, 0.1, 10.0, rho=2.5))):
        assert ours.dtype == ref.dtype and ours[-1] == 0
        torch.testing.assert_close(ours, ref, rtol=1e-6, atol=0)
    # VP: exp(.) - 1 (k-diffusion) loses float32 digits near t = eps_s; expm1 does not: ours is the closer to exact
    ours, ref = K.get_sigmas_vp(12), kd.get_sigmas_vp(12)
    t = torch.linspace(1, 1e-3, 12, dtype=F64)
    exact = torch.sqrt(torch.expm1(19.9 * t ** 2 / 2 + 0.1 * t))
    assert ours.shape == ref.shape == (13,) and ours[-1] == 0
    torch.testing.assert_close(ours, ref, rtol=1e-3, atol=0)
    assert ((ours[:-1].double() - exact).abs() <= (ref[:-1].double() - exact).abs() + 1e-9).all()
