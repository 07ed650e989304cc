"""Pipelined DLG (engine/runner.py) against plain DLG (mcmc/dlg.py run_dlg), same seed and chain ids.

With a model and classifier that evaluate each row on its own (so a row's value cannot depend on the
batch it was packed into), the pipelined run must reproduce run_dlg bit for bit: samples, block
sigmas, final chain state, RNG counter, NFE and classifier ledgers. With the batched mixture itself
the two agree to float64 rounding. Streaming yields every sample id once, in order, the first ones
before the run ends; the pipeline needs n_blocks * n_skip + (job calls) network calls.
"""
import dataclasses

import pytest
import torch

from dmcmc_fast.engine.graph import GraphedDenoiser
from dmcmc_fast.engine.runner import integrator_calls, run_dlg_pipelined, stream_dlg
from dmcmc_fast.mcmc.classifier import ExactLevelPosterior, level_sigmas
from dmcmc_fast.mcmc.dlg import DLGConfig, run_dlg
from dmcmc_fast.models.base import CountingDenoiser
from dmcmc_fast.models.gaussian_mixture import GaussianMixture
from rowwise import RowWise

SIGMA_MAX = 20.0
C, N_BLOCKS = 5, 3


def _problem():
    g = torch.Generator().manual_seed(0)
    gmm = GaussianMixture(torch.randn(4, 2, 3, 3, generator=g), std=0.1, sigma_max=SIGMA_MAX)
    clf = ExactLevelPosterior(gmm, level_sigmas(40, 0.002, SIGMA_MAX))
    return gmm, clf


def _cfg(**kw):
    return DLGConfig(**{**dict(eta=0.05, n_skip=2, n_den=5, sigma_max=SIGMA_MAX, init_nfe=3, n_init=1), **kw})


def _same_result(a, b):
    assert torch.equal(a.samples, b.samples)
    assert torch.equal(a.block_sigma, b.block_sigma)
    for f in ("x", "sigma", "nfe", "nfe_init", "classifier_evals"):
        assert torch.equal(getattr(a.state, f), getattr(b.state, f)), f
    assert (a.state.step, a.state.blocks) == (b.state.step, b.state.blocks)


@pytest.mark.parametrize("integrator,gibbs,batch_size,n_jobs", [
    ("heun", "argmax", None, None),  # everything fits: no chain ever waits
    ("karras_sde", "sample", 4, 2),  # tight: chains wait for rows and job slots; stochastic denoiser
    ("euler", "sample", 7, None),
])
def test_pipelined_equals_plain_dlg_bit_for_bit(integrator, gibbs, batch_size, n_jobs):
    gmm, clf = _problem()
    model, classifier = RowWise(gmm), RowWise(clf)
    cfg = _cfg(integrator=integrator, gibbs=gibbs)
    ids = torch.tensor([3, 11, 4, 0, 7])  # arbitrary global chain ids
    plain_counter = CountingDenoiser(model, C)
    plain = run_dlg(plain_counter, classifier, N_BLOCKS, cfg, chain_ids=ids, seed=5)
    piped_counter = CountingDenoiser(model, C)
    piped = run_dlg_pipelined(piped_counter, classifier, N_BLOCKS, cfg, chain_ids=ids, seed=5,
                              batch_size=batch_size, n_jobs=n_jobs)
    _same_result(plain, piped)
    assert torch.equal(plain_counter.nfe, piped_counter.nfe)
    assert plain.samples.shape == (N_BLOCKS, C, 2, 3, 3) and plain.samples.std() > 0


def test_pipelined_matches_batched_mixture_in_float64_and_resumes_from_state():
    gmm, clf = _problem()
    cfg = _cfg()
    plain = run_dlg(gmm, clf, N_BLOCKS, cfg, chains=C, seed=1, dtype=torch.float64)
    piped = run_dlg_pipelined(gmm, clf, N_BLOCKS, cfg, chains=C, seed=1, dtype=torch.float64)
    assert (piped.samples - plain.samples).abs().max() <= 1e-10
    assert torch.equal(piped.block_sigma, plain.block_sigma)
    # continuing from the returned state: the next blocks match run_dlg's continuation too
    more_plain = run_dlg(gmm, clf, 1, cfg, chains=C, seed=1, state=plain.state)
    more_piped = run_dlg_pipelined(gmm, clf, 1, cfg, chains=C, seed=1, state=piped.state)
    assert (more_piped.samples - more_plain.samples).abs().max() <= 1e-10
    assert more_piped.state.step == more_plain.state.step and more_piped.state.blocks == N_BLOCKS + 1


class CallLog:
    def __init__(self, f):
        self.f, self.batches = f, []

    def __call__(self, x, sigma):
        self.batches.append(x.shape[0])
        return self.f(x, sigma)


def test_network_calls_and_graphed_static_buckets():
    gmm, clf = _problem()
    model, classifier = RowWise(gmm), RowWise(clf)
    cfg = _cfg()
    plain = run_dlg(model, classifier, N_BLOCKS, cfg, chains=C, seed=2)
    evals = integrator_calls(cfg, (2, 3, 3), "cpu", torch.float32)
    assert evals == 5  # heun within n_den = 5: N = 3 steps, 2N - 1 calls (the last one the step to 0)
    net = CallLog(model)
    piped = run_dlg_pipelined(model, classifier, N_BLOCKS, cfg, chains=C, seed=2, denoiser=net)
    _same_result(plain, piped)
    assert len(net.batches) == N_BLOCKS * cfg.n_skip + evals  # plain DLG: N_BLOCKS * (n_skip + evals) calls
    assert max(net.batches) <= C * (1 + -(-evals // cfg.n_skip))
    # the same through the static-buffer bucketed path of the graph wrapper (padding rows included)
    seen = CallLog(model)
    graphed = GraphedDenoiser(seen, (2, 3, 3), buckets=(8, 16), mode="static", device="cpu")  # no weights: say where
    piped_g = run_dlg_pipelined(model, classifier, N_BLOCKS, cfg, chains=C, seed=2, denoiser=graphed)
    _same_result(plain, piped_g)
    assert set(seen.batches) <= {8, 16} and len(seen.batches) == len(net.batches)


def test_stream_yields_each_sample_once_in_order_and_early():
    gmm, clf = _problem()
    model, classifier = RowWise(gmm), RowWise(clf)
    cfg = _cfg()
    plain = run_dlg(model, classifier, N_BLOCKS, cfg, chains=C, seed=4)
    net = CallLog(model)
    chunks, calls_at = [], []
    for ch in stream_dlg(model, classifier, N_BLOCKS, cfg, chains=C, seed=4, denoiser=net, batch_size=6):
        chunks.append(ch)
        calls_at.append(len(net.batches))
    assert chunks[0].start == 0 and chunks[-1].stop == N_BLOCKS * C
    assert all(a.stop == b.start for a, b in zip(chunks, chunks[1:]))
    assert sum(len(c) for c in chunks) == N_BLOCKS * C
    assert torch.equal(torch.cat([c.samples for c in chunks]), plain.samples.reshape(N_BLOCKS * C, 2, 3, 3))
    assert calls_at[0] < calls_at[-1]  # the first samples came out while the run went on


def test_bad_arguments():
    gmm, clf = _problem()
    with pytest.raises(ValueError, match="batch_size"):
        run_dlg_pipelined(gmm, clf, 1, _cfg(), chains=2, batch_size=0)
    with pytest.raises(ValueError, match="n_blocks"):
        run_dlg_pipelined(gmm, clf, 0, _cfg(), chains=2)
    with pytest.raises(ValueError, match="chains"):
        run_dlg_pipelined(gmm, clf, 1, _cfg())
    with pytest.raises(ValueError, match="restart_every=2 is not supported by the pipelined runner"):
        run_dlg_pipelined(gmm, clf, 1, dataclasses.replace(_cfg(), restart_every=2), chains=2)


def test_doors_equal_the_pipelined_engine(tmp_path):
    """api.sample's DLG (the plain loop, sample i = block i // C of chain i % C) and the pipelined engine
    give the same samples for the same seed and chains."""
    from dmcmc_fast import api
    from dmcmc_fast.mcmc.classifier import ExactLevelPosterior, level_sigmas
    from dmcmc_fast.models.builtin import load_model

    m = load_model("gmm-digits", modes=30)
    opts = dict(n_skip=2, n_den=6, n_levels=50, init_nfe=5, n_init=2)
    out = api.sample(m, "dlg", 6, 8, seed=2, progress=False, chains=3, **opts)
    cfg = DLGConfig(n_skip=2, n_den=6, init_nfe=5, n_init=2)
    clf = ExactLevelPosterior(m, level_sigmas(50, cfg.sigma_min, cfg.sigma_max))
    res = run_dlg_pipelined(m, clf, 2, cfg, chains=3, seed=2)
    torch.testing.assert_close(out.samples, res.samples.reshape(6, *m.shape), atol=1e-4, rtol=1e-4)
    assert out.meta["chain"].tolist() == [0, 1, 2, 0, 1, 2] and out.meta["block"].tolist() == [0, 0, 0, 1, 1, 1]
