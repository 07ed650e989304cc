"""DLG's bookkeeping on a hand-traceable case (scripted classifier, probe integrator), its NFE budget,
resume and batch independence, and `--sampler dlg` with every integrator."""
import pytest
import torch
import torch.nn.functional as F

from dmcmc_fast.api import sample
from dmcmc_fast.integrators import INTEGRATORS, IntegratorResult
from dmcmc_fast.mcmc import DLGConfig, ExactLevelPosterior, blocks_for_budget, level_sigmas, run_dlg
from dmcmc_fast.models.base import CountingDenoiser
from dmcmc_fast.models.gaussian_mixture import GaussianMixture, gaussian

LEVELS = torch.tensor([8.0, 4.0, 2.0, 1.0, 0.5])


class Scripted:
    """Returns level script[i][b] on its i-th call; records its inputs (every Langevin iterate)."""
    levels = LEVELS

    def __init__(self, script):
        self.script, self.inputs = script, []

    def __call__(self, x):
        idx = torch.tensor(self.script[len(self.inputs)])
        self.inputs.append(x.clone())
        return 10.0 * F.one_hot(idx, len(LEVELS)).float()


class Recorder:
    """A Gaussian denoiser that records every call (x, sigma)."""

    def __init__(self, dim=3):
        self.inner = gaussian(torch.zeros(dim), 1.0)
        self.shape, self.calls = self.inner.shape, []

    def __call__(self, x, sigma):
        self.calls.append((x.clone(), sigma.clone()))
        return self.inner(x, sigma)


@pytest.fixture
def probe(monkeypatch):
    """An integrator that spends exactly its budget (one model call per step), returns its input, records."""
    seen = []

    def sample_probe(model, x, sigma_start, n_steps, *, sigma_min, seed, chain_ids, step0, final_tweedie, **kw):
        sig = torch.as_tensor(sigma_start, dtype=x.dtype).expand(x.shape[0])
        seen.append({"x": x.clone(), "sigma": sig.clone(), "n": n_steps, "step0": step0})
        before = model.nfe.clone()
        for _ in range(n_steps):
            model(x, sig)
        return IntegratorResult(x.clone(), model.nfe - before)

    monkeypatch.setitem(INTEGRATORS, "probe", (sample_probe, lambda nfe, final_tweedie=True, **kw: nfe))
    return seen


# classifier calls: init Gibbs, n_init=1 step, block 1 (3 steps), block 2 (3 steps); two chains
SCRIPT = [[0, 2], [1, 3],
          [2, 2], [3, 0], [3, 3],  # chain 0: min 1.0 first reached at call 3 (tie at 4 kept out); chain 1: call 4
          [0, 4], [1, 4], [4, 0]]  # chain 0: min 0.5 at call 7; chain 1: 0.5 at call 5 (tie at 6 kept out)


def test_dlg_bookkeeping_on_a_hand_traced_case(probe):
    cfg = DLGConfig(eta=0.1, n_skip=3, n_den=2, integrator="probe", init_integrator="probe", init_nfe=3, n_init=1,
                    sigma_max=8.0)
    clf, rec = Scripted(SCRIPT), Recorder()
    model = CountingDenoiser(rec, 2)
    res = run_dlg(model, clf, 2, cfg, chains=2, seed=3)
    xs = clf.inputs
    init, b1, b2 = probe
    assert init["n"] == 3 and torch.equal(init["sigma"], torch.tensor([8.0, 8.0]))
    # block 1 starts at the init's last state (inputs[1]; sigma 4.0 and 1.0)
    assert torch.equal(b1["sigma"], torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(b1["x"][0], xs[3][0])  # chain 0: first iterate at the minimum, not the tie after it
    # chain 1 starts at the minimum (1.0) and reaches it again at its 3rd step: the block's start state is not
    # a candidate (it was the previous block's), so that iterate is denoised
    torch.testing.assert_close(b1["x"][1], xs[4][1])
    # block 2 continues from block 1's *last* state, not from the denoised one or the minimum
    first_b2 = rec.calls[3 + 1 + 3 + 2]
    torch.testing.assert_close(first_b2[0], xs[4])
    assert torch.equal(first_b2[1], LEVELS[torch.tensor(SCRIPT[4])])
    assert torch.equal(b2["sigma"], torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(b2["x"][0], xs[7][0])
    torch.testing.assert_close(b2["x"][1], xs[5][1])
    # each Langevin step runs at the sigma the previous Gibbs step chose
    for j, call in enumerate(rec.calls[3:4] + rec.calls[4:7]):
        assert torch.equal(call[1], LEVELS[torch.tensor(SCRIPT[j])])
    torch.testing.assert_close(res.samples[0], b1["x"])
    torch.testing.assert_close(res.samples[1], b2["x"])
    assert torch.equal(res.block_sigma, torch.tensor([[1.0, 1.0], [0.5, 0.5]]))
    # NFE: init 3 + 1, blocks 2 x (3 + 2); classifier: 1 + 1 + 2 x 3
    s = res.state
    assert s.nfe.tolist() == [14, 14] and s.nfe_init.tolist() == [4, 4] and s.classifier_evals.tolist() == [8, 8]
    assert res.nfe_per_sample().tolist() == [7.0, 7.0]
    assert res.nfe_per_sample(include_init=False).tolist() == [5.0, 5.0]
    # RNG counters never reused: init run at 1; noise+Gibbs 5; L-G 6, 7, 8, 9; denoise 10..12; 13, 14, 15; 16..18
    assert [p["step0"] for p in probe] == [1, 10, 16] and s.step == 19


def test_budget_stops_before_a_block_would_overrun(probe):
    cfg = DLGConfig(n_skip=3, n_den=2, integrator="probe", init_integrator="probe", init_nfe=3, n_init=1)
    assert blocks_for_budget(14, cfg) == 2
    assert blocks_for_budget(13, cfg) == 1
    assert blocks_for_budget(10, cfg, with_init=False) == 2
    with pytest.raises(ValueError, match="nfe must be at least 9"):
        blocks_for_budget(8, cfg)


def _mixture():
    g = torch.Generator().manual_seed(0)
    return GaussianMixture(2.0 * torch.randn(3, 4, generator=g), std=0.3)


def test_resume_and_batch_independence():
    mix = _mixture()
    clf = ExactLevelPosterior(mix, level_sigmas(50, 0.01, 10.0))
    cfg = DLGConfig(eta=0.2, n_skip=2, n_den=3, integrator="karras_sde", init_integrator="heun", init_nfe=3,
                    n_init=2, sigma_min=0.01, sigma_max=10.0)
    full = run_dlg(mix, clf, 3, cfg, chains=3, seed=11)
    first = run_dlg(mix, clf, 2, cfg, chains=3, seed=11)
    rest = run_dlg(mix, clf, 1, cfg, chains=3, seed=11, state=first.state)
    torch.testing.assert_close(rest.samples[0], full.samples[2])
    assert torch.equal(rest.state.nfe, full.state.nfe) and rest.state.blocks == 3
    alone = run_dlg(mix, clf, 3, cfg, chain_ids=torch.tensor([1]), seed=11)
    torch.testing.assert_close(alone.samples, full.samples[:, 1:2])


@pytest.mark.parametrize("predraw", [10**9, 2 * 3 * 4, 1])
def test_langevin_noise_drawn_ahead_or_per_step_is_the_same(monkeypatch, predraw):
    """The Langevin normals of a call's blocks come from one draw when they fit in PREDRAW_ELEMENTS, else one per
    block, else one per step (here 3 chains x 4 dims, 2 steps a block): the same numbers, the same chains."""
    from dmcmc_fast.kernels import noise

    mix = _mixture()
    clf = ExactLevelPosterior(mix, level_sigmas(50, 0.01, 10.0))
    cfg = DLGConfig(eta=0.2, n_skip=2, n_den=3, integrator="heun", init_integrator="heun", init_nfe=3, n_init=1,
                    sigma_min=0.01, sigma_max=10.0)
    ref = run_dlg(mix, clf, 3, cfg, chains=3, seed=5)
    monkeypatch.setattr(noise, "PREDRAW_ELEMENTS", predraw)
    got = run_dlg(mix, clf, 3, cfg, chains=3, seed=5)
    assert torch.equal(got.samples, ref.samples) and torch.equal(got.state.x, ref.state.x)


@pytest.mark.parametrize("name", sorted(INTEGRATORS))
def test_dlg_runs_with_every_integrator_within_budget(name):
    mix = _mixture()
    adaptive = name in ("rk45", "dpm_adaptive")  # spends what its tolerance needs, up to n_den
    opts = '{"rtol": 0.05, "atol": 0.05}' if adaptive else ""
    n_den = 30 if adaptive else 6
    nfe = 10 + 3 * (2 + n_den)
    out = sample(mix, "dlg", 2, nfe, seed=1, progress=False, integrator=name, integrator_options=opts, n_skip=2,
                 n_den=n_den, eta=0.2, init_nfe=8, n_init=2, n_levels=50, sigma_min=0.01, sigma_max=10.0)
    assert out.samples.shape == (2, 4) and torch.isfinite(out.samples).all()
    # budget: init <= 8 + 2, then 3 blocks of <= 2 + n_den (6 Langevin-Gibbs steps at least)
    assert (out.nfe <= nfe).all() and (out.nfe >= 2 + 6 + 3).all()


def test_bad_dlg_options_name_themselves():
    with pytest.raises(ValueError, match="n_skip"):
        DLGConfig(n_skip=0)
    with pytest.raises(ValueError, match="integrator"):
        DLGConfig(integrator="nope")
    with pytest.raises(ValueError, match="gibbs"):
        DLGConfig(gibbs="max")


def test_mixing_options_change_the_gibbs_step_and_the_langevin_step():
    """level_prior_power sends argmax Gibbs to the top level; a hot temperature spreads the draws over the
    levels; eta_scaling="sigma2" makes the Langevin step eta sigma^2 at each row's sigma."""
    from dmcmc_fast.kernels.langevin import langevin_step_reference
    from dmcmc_fast.mcmc.dlg import langevin_gibbs_step, level_log_prior

    mix = _mixture()
    levels = level_sigmas(50, 0.02, 100.0)
    clf = ExactLevelPosterior(mix, levels)
    up = run_dlg(mix, clf, 3, DLGConfig(n_skip=2, n_den=4, init_nfe=8, n_init=1, level_prior_power=100.0),
                 chains=4, seed=0)
    assert torch.all(up.block_sigma == levels.max())
    flat = run_dlg(mix, clf, 6, DLGConfig(n_skip=2, n_den=4, init_nfe=8, n_init=1), chains=4, seed=0)
    hot = run_dlg(mix, clf, 6, DLGConfig(n_skip=2, n_den=4, init_nfe=8, n_init=1, gibbs="sample",
                                         gibbs_temperature=1000.0), chains=4, seed=0)
    assert hot.block_sigma.max() > 3 * flat.block_sigma.max()  # the chains roam far higher
    assert level_log_prior(DLGConfig(), levels) is None  # flat: the posterior as is

    x, sigma = torch.randn(3, *mix.shape), levels[[0, 20, 40]]
    cfg = DLGConfig(eta=0.5, eta_scaling="sigma2")
    ids = torch.arange(3)
    got, _ = langevin_gibbs_step(x, mix(x, sigma), sigma, cfg, clf, levels, None, 7, ids, 3)
    want = langevin_step_reference(x, mix(x, sigma), sigma, 0.5 * sigma**2, 7, ids, 3)
    torch.testing.assert_close(got, want)
