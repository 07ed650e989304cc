"""DLG's restart_every (issue 15, part 5: "mixing in a fraction of fresh initialisations"): blocks R, 2R, ...
of a chain start from a fresh initialisation at counters of their own, forget the chain before them, stay
independent of the batch and the number of chains, charge each restart's NFE to the blocks it serves, and
read nothing back to the host per block."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from dmcmc_fast import api
from dmcmc_fast.engine.audit import HostSyncAudit
from dmcmc_fast.integrators import INTEGRATORS, IntegratorResult
from dmcmc_fast.mcmc import DLGConfig, ExactLevelPosterior, level_sigmas, run_dlg
from dmcmc_fast.mcmc.dlg import DLGState, dlg_init
from dmcmc_fast.models.base import CountingDenoiser
from dmcmc_fast.models.builtin import load_model
from dmcmc_fast.models.gaussian_mixture import GaussianMixture, gaussian
from rowwise import RowWise, rowwise_dlg, rowwise_mixture

SMALL = dict(n_skip=2, n_levels=50, init_nfe=8, n_init=1)


def _mixture():
    g = torch.Generator().manual_seed(0)
    return GaussianMixture(2.0 * torch.randn(3, 4, generator=g), std=0.3)


def _cfg(**kw):
    return DLGConfig(**{**dict(eta=0.2, n_skip=2, n_den=3, integrator="karras_sde", init_integrator="heun",
                               init_nfe=3, n_init=2, sigma_min=0.01, sigma_max=10.0), **kw})


@pytest.fixture(scope="module")
def digits():
    return load_model("gmm-digits", modes=30)


def test_counters_of_restarts_are_fresh_and_never_reused(monkeypatch):
    """A probe integrator records where each integrator call starts its counters: the first initialisation at
    1, each restart at its block's reserved lead, and every Langevin-Gibbs step and denoise after it."""
    seen = []

    def sample_probe(model, x, sigma_start, n_steps, *, sigma_min, seed, chain_ids, step0, final_tweedie, **kw):
        seen.append(step0)
        sig = torch.as_tensor(sigma_start, dtype=x.dtype).expand(x.shape[0])
        before = model.nfe.clone()
        for _ in range(n_steps):
            model(x, sig)
        return IntegratorResult(x.clone(), model.nfe - before)

    monkeypatch.setitem(INTEGRATORS, "probe", (sample_probe, lambda nfe, final_tweedie=True, **kw: nfe))
    mix = _mixture()
    clf = ExactLevelPosterior(mix, level_sigmas(50, 0.01, 10.0))
    cfg = _cfg(integrator="probe", init_integrator="probe", n_skip=3, n_den=2, init_nfe=3, n_init=1, restart_every=1)
    # an initialisation: prior 0, integrator 1..4, noise + Gibbs 5, one L-G step 6: span 7
    assert cfg.init_span() == 7 and DLGConfig(n_init=3, init_nfe=20).init_span() == 1 + 10 + 1 + 1 + 3
    ctr = cfg.counters(7)
    assert ctr.stride == 7 + 3 + 2 + 1 and ctr.restart(1) == 20 and ctr.step(1, 0) == 27 and ctr.denoise(1) == 30
    res = run_dlg(CountingDenoiser(mix, 2), clf, 3, cfg, chains=2, seed=3)
    # init at 1; block 0 (served by it): L-G 14-16, denoise 17; block 1: restart at 20 (integrator 21), L-G 27-29,
    # denoise 30; block 2: restart at 33 (integrator 34), denoise 43
    assert seen == [1, 17, 21, 30, 34, 43] and res.state.step == 7 + 3 * 13
    used = [range(0, 7), range(14, 17), range(17, 20), range(20, 27), range(27, 30), range(30, 33), range(33, 40),
            range(40, 43), range(43, 46)]
    flat = [k for r in used for k in r]
    assert len(flat) == len(set(flat)) and max(flat) < res.state.step


def test_a_restart_block_forgets_the_chain_before_it():
    """With R = 2, block 2 starts from a fresh initialisation: resuming at block 2 from a garbled state gives
    the same blocks 2, 3 as the run straight through; at R = 3 block 2 continues the chain and differs."""
    mix = _mixture()
    clf = ExactLevelPosterior(mix, level_sigmas(50, 0.01, 10.0))
    for R, forgets in ((2, True), (3, False)):
        cfg = _cfg(restart_every=R)
        full = run_dlg(mix, clf, 4, cfg, chains=3, seed=11)
        first = run_dlg(mix, clf, 2, cfg, chains=3, seed=11)
        garbled = replace(first.state, x=first.state.x + 5.0, sigma=torch.full_like(first.state.sigma, 10.0))
        rest = run_dlg(mix, clf, 2, cfg, chains=3, seed=11, state=garbled)
        assert torch.equal(rest.samples, full.samples[2:]) == forgets
        assert torch.equal(rest.state.nfe, full.state.nfe)  # the books do not depend on the state's values
    # the restart is the chain's own initialisation at fresh counters: a new state, not a copy of the first
    cfg = _cfg(restart_every=1)
    ids = torch.arange(3)
    start = dlg_init(mix, clf, cfg, ids, 11)
    again = dlg_init(mix, clf, cfg, ids, 11, step0=cfg.counters(start.step).restart(1))
    assert not torch.equal(start.x, again.x)
    # and a chain alone gives what it gives among others (bit for bit through a row-wise model: tests/rowwise.py)
    one_row, one_row_clf = rowwise_mixture(mix), RowWise(clf)
    full = run_dlg(one_row, one_row_clf, 3, cfg, chains=3, seed=11)
    alone = run_dlg(one_row, one_row_clf, 3, cfg, chain_ids=torch.tensor([1]), seed=11)
    assert torch.equal(alone.samples, full.samples[:, 1:2])


def test_restart_books_in_the_state_and_result():
    mix = _mixture()
    clf = ExactLevelPosterior(mix, level_sigmas(50, 0.01, 10.0))
    plain = run_dlg(mix, clf, 5, _cfg(), chains=2, seed=1)
    res = run_dlg(mix, clf, 5, _cfg(restart_every=2), chains=2, seed=1)
    init, blocks = plain.state.nfe_init, plain.state.nfe - plain.state.nfe_init
    s = res.state
    assert torch.equal(s.nfe_init, 3 * init)  # the first initialisation and the restarts at blocks 2 and 4
    assert torch.equal(s.nfe - s.nfe_init, blocks)  # blocks cost what they cost without restarts
    assert torch.equal(res.block_init_nfe, init.expand(5, 2)) and torch.equal(s.nfe_last_init, init)
    assert torch.equal(s.classifier_evals_init, 3 * plain.state.classifier_evals_init)
    assert torch.equal(res.block_init_evals, torch.full((5, 2), 1 + 2))  # a Gibbs step + n_init steps
    torch.testing.assert_close(res.nfe_per_sample(), s.nfe.double() / 5)


def test_nfe_per_sample_charges_each_restart_to_the_blocks_it_serves(digits):
    """10 samples from 2 chains (5 blocks each); R = 2: initialisations at blocks 0, 2, 4 serve 2, 2, 1 blocks."""
    plain = api.sample(digits, "dlg", 10, 9, seed=1, progress=False, chains=2, **SMALL)
    out = api.sample(digits, "dlg", 10, 9, seed=1, progress=False, chains=2, restart_every=2, **SMALL)
    m, p = out.meta, plain.meta
    np.testing.assert_array_equal(m["nfe_block"], p["nfe_block"])
    np.testing.assert_allclose(out.nfe.numpy(), m["nfe_block"] + m["nfe_init_share"])
    init = p["nfe_init_share"] * 5  # one initialisation's NFE, per sample of the plain run
    served = np.array([2, 2, 2, 2, 1])[m["block"]]
    np.testing.assert_allclose(m["nfe_init_share"], init / served)
    for c in range(2):  # a chain's charges add up to everything it spent: its blocks and three initialisations
        mine = m["chain"] == c
        np.testing.assert_allclose(out.nfe[mine].sum().item(), m["nfe_block"][mine].sum() + 3 * init[mine][0])
    # NFE per sample rises by two more initialisations over 5 samples; classifier evaluations likewise
    np.testing.assert_allclose(out.nfe.mean().item() - plain.nfe.mean().item(), 2 * init[0] / 5)
    np.testing.assert_allclose(m["classifier_evals"] - p["classifier_evals"], (1 + 1) * (1 / served - 1 / 5))
    # restart_every=1: every block its own initialisation
    one = api.sample(digits, "dlg", 10, 9, seed=1, progress=False, chains=2, restart_every=1, **SMALL)
    np.testing.assert_allclose(one.meta["nfe_init_share"], init)


def _restart_runs(model):
    return {(C, bs): api.sample(model, "dlg", 4 * C, 8, seed=4, progress=False, chains=C, batch_size=bs,
                                restart_every=2, **SMALL) for C, bs in [(3, 256), (5, 2), (4, 3)]}


def _largest_chain_difference(runs: dict) -> float:
    """The largest difference of chains 0-2's 4 blocks between each run and the first (3 chains, one batch)."""
    ref = runs[(3, 256)].samples
    return max(float((out.samples[c::C][:4] - ref[c::3]).abs().max()) for (C, bs), out in runs.items()
               for c in range(3))


def test_restarting_samples_do_not_depend_on_chains_or_batch_size(digits, monkeypatch):
    """Our code through a row-wise model and classifier (tests/rowwise.py): bit for bit on any CPU."""
    assert _largest_chain_difference(_restart_runs(rowwise_dlg(monkeypatch, digits))) == 0.0


def test_restarting_samples_through_the_batched_mixture_agree_to_rounding(digits):
    """The batched mixture (BLAS rounding varies with the row count on some CPUs: ~1e-4 after a run on an AVX-512
    machine): within 2e-3, 20x the largest difference seen."""
    assert _largest_chain_difference(_restart_runs(digits)) < 2e-3


def test_a_run_resumed_from_a_saved_state_keeps_the_restart_books(tmp_path):
    """Block 3 is served by block 2's restart: a state saved after block 2 and loaded carries its cost."""
    mix = _mixture()
    clf = ExactLevelPosterior(mix, level_sigmas(50, 0.01, 10.0))
    cfg = _cfg(restart_every=2, init_nfe=4)
    full = run_dlg(mix, clf, 5, cfg, chains=2, seed=5)
    first = run_dlg(mix, clf, 3, cfg, chains=2, seed=5)
    first.state.save(str(tmp_path / "s.pt"))
    rest = run_dlg(mix, clf, 2, cfg, chains=2, seed=5, state=DLGState.load(str(tmp_path / "s.pt")))
    assert torch.equal(rest.samples, full.samples[3:])
    assert torch.equal(rest.block_init_nfe, full.block_init_nfe[3:])
    for f in ("nfe", "nfe_init", "classifier_evals", "classifier_evals_init", "nfe_last_init"):
        assert torch.equal(getattr(rest.state, f), getattr(full.state, f)), f


@pytest.mark.parametrize("value,match", [(-1, r"restart_every must be an integer in \[0, inf\], got -1"),
                                         (1.5, "restart_every must be an integer")])
def test_bad_restart_every_names_the_option_and_its_range(value, match):
    with pytest.raises(ValueError, match=match):
        DLGConfig(restart_every=value)


def test_bad_restart_every_through_the_api(digits):
    with pytest.raises(ValueError, match=r"option restart_every must be .*\[0, 1000000\], got -2"):
        api.sample(digits, "dlg", 4, 8, progress=False, restart_every=-2, **SMALL)


def test_restarts_read_nothing_back(monkeypatch, digits):
    """As tests/test_sync_audit.py: 3 blocks of one chain restarting at every block (R = 1) make no more host
    syncs than with no restart in reach (R = 1000, the same counter layout), at two budgets."""
    monkeypatch.setattr(ExactLevelPosterior, "STATIC_WIDTH_ON_CPU", True)  # the branch a GPU runs
    for nfe in (7, 12):
        counts = []
        for R in (1000, 1):
            with HostSyncAudit() as audit:
                out = api.sample(digits, "dlg", 3, nfe, progress=False, classifier="exact", chains=1, restart_every=R,
                                 **dict(SMALL, init_nfe=5, n_init=2))
            counts.append(audit.counts())
        assert out.meta["nfe_init_share"][1] > out.meta["nfe_init_share"][0] / 3  # it did restart
        extra = counts[1] - counts[0]
        assert not extra, f"nfe={nfe}: {sum(extra.values())} host syncs more with restarts: {extra}"


def test_restart_every_reaches_the_facade_and_the_cli_help():
    import dmcmc_fast
    from dmcmc_fast.samplers import get_sampler

    opt = {o.name: o for o in get_sampler("dlg").options}["restart_every"]
    assert opt.default == 0 and (opt.lo, opt.hi) == (0, 1_000_000) and "fresh initialisation" in opt.help
    dlg = dmcmc_fast.DLG(gaussian(torch.zeros(2), 1.0), nfe=8, chains=2, restart_every=3, **SMALL)
    assert dlg.sample(4).config["options"]["restart_every"] == 3
