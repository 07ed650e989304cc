"""The benchmark's baselines run the same algorithm as ours: same samples, same NFE, exact adapters.
(bench/ is importable through pytest's `pythonpath`, pyproject.toml.)"""
import math
import sys

import pytest
import torch

from bench import baselines as bl
from bench import throughput as tp
from dmcmc_fast.integrators import sample_euler, sample_heun
from dmcmc_fast.models import GaussianMixture, VPAdapter, gaussian
from dmcmc_fast.schedules import karras

SMIN, SMAX = 0.002, 80.0
OURS = {"heun": sample_heun, "euler": sample_euler}


def _mixture(dim=6, k=5, std=0.3):
    g = torch.Generator().manual_seed(0)
    return GaussianMixture(torch.randn(k, dim, generator=g, dtype=torch.float64), std=std)


def _x0(model, batch, dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    return SMAX * torch.randn(batch, *model.shape, generator=g, dtype=dtype)


@pytest.mark.parametrize("kind,n,nfe", [("heun", 6, 11), ("euler", 7, 7)])
def test_plain_loop_equals_ours_with_same_nfe(kind, n, nfe):
    model = _mixture()
    x = _x0(model, 5)
    ours = OURS[kind](model, x, SMAX, n, sigma_min=SMIN)
    counted = bl.CallCounter(model)
    plain = bl.PLAIN[kind](counted, x, karras(n, SMIN, SMAX))
    assert ours.nfe.tolist() == [nfe] * 5
    assert (counted.calls, counted.rows) == (nfe, 5 * nfe)
    torch.testing.assert_close(plain, ours.x, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", ["heun", "euler"])
def test_compiled_loop_structure_equals_plain(kind):
    """The compiled runner's step split (Heun steps, Euler to 0) and NFE counting under dynamo;
    the eager backend keeps the test fast (inductor itself is exercised by the benchmark)."""
    model = _mixture()
    x, grid = _x0(model, 3), karras(4, SMIN, SMAX)
    counted = bl.CallCounter(model)
    run = bl.compiled(kind, counted, backend="eager")
    out = run(x, grid)
    assert counted.rows == 3 * {"heun": 7, "euler": 4}[kind]
    torch.testing.assert_close(out, bl.PLAIN[kind](model, x, grid), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["heun", "euler"])
def test_k_diffusion_equals_ours(kind):
    if bl.load_k_diffusion_sampling() is None:
        pytest.skip("k-diffusion is a bench extra (bench/README.md); not installed here")
    if getattr(sys.modules["k_diffusion"], "__file__", None) is None:  # the loader's bare package (no __init__ ran;
        assert "k_diffusion.models" not in sys.modules  # test_k_layer imports the real one): no training side
    model, n = _mixture(), 5
    x = _x0(model, 4)
    counted = bl.CallCounter(model)
    out = bl.k_diffusion_sampler(kind)(counted, x, karras(n, SMIN, SMAX))
    ours = OURS[kind](model, x, SMAX, n, sigma_min=SMIN)
    assert counted.rows // 4 == int(ours.nfe.max())
    torch.testing.assert_close(out, ours.x, rtol=1e-10, atol=1e-10)


def test_vp_eps_from_ve_inverts_vp_adapter():
    """VPAdapter(VPEpsFromVE(D)) = D at per-sample sigmas across the table (float32 log-sigma table)."""
    model = _mixture()
    abar = bl.ve_alphas_cumprod(SMIN, SMAX, 1000)
    back = VPAdapter(bl.VPEpsFromVE(model, abar), abar, model.shape)
    sigma = torch.tensor([0.0021, 0.05, 0.7, 3.3, 41.0, 79.9], dtype=torch.float64)
    x = torch.randn(6, *model.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) \
        * (1 + sigma[:, None])
    torch.testing.assert_close(back(x, sigma), model(x, sigma), rtol=2e-5, atol=2e-5)


def test_vp_eps_from_ve_closed_form_gaussian():
    """Data N(0, c^2 I): E[eps | x_vp] = b x_vp / (a^2 c^2 + b^2), a = sqrt(abar_t), b = sqrt(1 - abar_t)."""
    c = 0.7
    model = gaussian(torch.zeros(3, dtype=torch.float64), c)
    abar = bl.ve_alphas_cumprod(SMIN, SMAX, 50)
    net = bl.VPEpsFromVE(model, abar)
    t = torch.tensor([0, 17, 49])
    x_vp = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    a, b = abar[t].sqrt()[:, None], (1 - abar[t]).sqrt()[:, None]
    torch.testing.assert_close(net(x_vp, t), b * x_vp / (a * a * c * c + b * b), rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["heun", "euler"])
def test_diffusers_loop_equals_ours_with_same_nfe(kind):
    model, n, batch = _mixture(), 5, 4
    abar = bl.ve_alphas_cumprod(SMIN, SMAX)
    sched = bl.diffusers_scheduler(kind, abar)
    counted = bl.CallCounter(bl.VPEpsFromVE(model, abar))
    x = _x0(model, batch, torch.float32)
    out = bl.diffusers_loop(counted, sched, x, n)
    ours = OURS[kind](model, x, SMAX, n, sigma_min=SMIN)
    torch.testing.assert_close(sched.sigmas[0], torch.tensor(SMAX))
    assert counted.rows // batch == int(ours.nfe.max()) == {"heun": 2 * n - 1, "euler": n}[kind]
    torch.testing.assert_close(out, ours.x, rtol=1e-4, atol=1e-4)


def test_betas_rebuild_the_table():
    abar = bl.ve_alphas_cumprod(SMIN, SMAX, 100)
    betas = torch.tensor(bl.betas_from_alphas_cumprod(abar), dtype=torch.float64)
    torch.testing.assert_close(torch.cumprod(1 - betas, 0), abar, rtol=1e-12, atol=0)
    sig = ((1 - abar) / abar).sqrt()
    assert math.isclose(sig[0], SMIN, rel_tol=1e-9) and math.isclose(sig[-1], SMAX, rel_tol=1e-9)


def test_steps_for_nfe():
    assert tp.steps_for("heun", 35) == 18 and tp.steps_for("euler", 35) == 35
    with pytest.raises(ValueError, match="odd"):
        tp.steps_for("heun", 10)


def test_run_cell_reports_every_method_at_equal_nfe():
    """A whole benchmark cell on a tiny analytic model: NFE asserted, ratios, agreement, markdown."""
    model = _mixture(dim=4, k=3)
    abar = bl.ve_alphas_cumprod(SMIN, SMAX)
    case = tp.Case("tiny", model, bl.VPEpsFromVE(model, abar), abar, SMIN, SMAX, model.shape,
                   {"alphas_cumprod": abar})
    cell = tp.run_cell(case, "heun", 2, 5, torch.device("cpu"), reps=3, warmup=0, budget_s=5.0, compiled=None,
                       log=lambda s: None)
    got = cell["methods"]
    assert {"ours", "plain", "diffusers"} <= set(got) and "compiled" in cell["unavailable"]
    assert all(m["nfe"] == 5 and m["reps"] == 3 for m in got.values())
    assert got["ours"]["time_over_ours"] == 1.0 and cell["overhead_ratio"] > 0
    assert got["plain"]["max_abs_diff_vs_ours"] < 1e-4 * (1 + got["plain"]["max_abs_ours"])
    assert cell["forward_label"].startswith("eager fallback")
    assert cell["ours_path"]["mode"] == "eager"  # ours is api.sample(graph="auto"): plain eager on the CPU
    run = {"device": "cpu", "device_name": "test", "threads": 1, "versions": tp.versions(), "command": "x",
           "timestamp": "t", "loadavg_start": (1.0,), "loadavg_end": (1.0,), "cells": [cell],
           "unavailable_models": {"unet-mnist": "FileNotFoundError: missing"}, "not_run": ["tiny euler B=2"]}
    md = tp.markdown(run, "r.json", None)
    assert "| tiny | heun | 2 | 5 |" in md and "unet-mnist: unavailable" in md
    assert "- not run: tiny euler B=2" in md and "- ours ran: mode=eager" in md
    assert tp.summary(run).startswith("1 cells; tiny heun B=2: overhead ") and "1 not run" in tp.summary(run)


def test_ours_is_the_facade(monkeypatch):
    """The 'ours' column times dmcmc_fast.api.sample with graph="auto" (the path users run)."""
    calls = []
    real = tp.api.sample
    monkeypatch.setattr(tp.api, "sample", lambda *a, **k: calls.append(k) or real(*a, **k))
    model = _mixture(dim=4, k=3)
    abar = bl.ve_alphas_cumprod(SMIN, SMAX)
    case = tp.Case("tiny", model, bl.VPEpsFromVE(model, abar), abar, SMIN, SMAX, model.shape,
                   {"alphas_cumprod": abar})
    tp.run_cell(case, "euler", 3, 3, torch.device("cpu"), reps=3, warmup=0, budget_s=5.0, compiled=None,
                log=lambda s: None)
    assert len(calls) >= 4 and all(k["graph"] == "auto" and k["num"] == k["batch_size"] == 3 for k in calls)


def test_ddpm_cifar10_unet_has_the_papers_size():
    """Ho et al. 2020 report 35.7M parameters for their CIFAR-10 model."""
    unet, sched = bl.ddpm_cifar10_unet()
    n = sum(p.numel() for p in unet.parameters())
    assert 35.6e6 < n < 35.8e6
    assert sched.config.num_train_timesteps == 1000 and sched.config.beta_end == 0.02
