"""Continuous batching (`dmcmc_fast.Engine`, dmcmc_fast/serve.py): requests that share a running batch get the
samples `api.sample` gives them alone — bit for bit through a row-wise model (tests/rowwise.py), to rounding
through the batched mixture — with interleaved arrivals, cancellation midway, bad requests, model errors and
close(); and the C++ slot books on their own."""
import threading
import time

import numpy as np
import pytest
import torch

import dmcmc_fast
from dmcmc_fast import api
from dmcmc_fast._C import SlotBooks
from dmcmc_fast.models.builtin import load_model
from dmcmc_fast.samplers import all_samplers
from dmcmc_fast.serve import Engine, EngineClosed
from rowwise import RowWise, rowwise_dlg, rowwise_mixture

# NFE and options per sampler where the defaults do not fit a small budget (as tests/reference/make_reference.py)
NFE = {"dlg": 8, "ald": 12, "mild": 12, "baoab_limit": 12, "obabo": 12, "rk45": 400, "dpm_adaptive": 60}
OPTIONS = {"dlg": dict(chains=3, n_skip=3, init_nfe=5, n_init=2), "rk45": dict(rtol=1e-2, atol=1e-2),
           "dpm_adaptive": dict(rtol=0.05)}


@pytest.fixture(scope="module")
def mixture():
    return load_model("gmm-digits", modes=20)


def _reference(model, sampler, num, nfe, seed, **kw):
    return api.sample(model, sampler, num, nfe, seed=seed, progress=False, **kw)


def _no_engine_threads():
    return not [t for t in threading.enumerate() if t.name.startswith("dmcmc-")]


def test_done_when_heun_with_interleaved_others_equals_api_sample(mixture):
    """The issue's check: Engine(model, slots=8).submit("heun", num=3, nfe=9, seed=1) among interleaved others
    returns api.sample(model, "heun", 3, 9, seed=1)'s samples and NFE, bit for bit (row-wise model)."""
    model = rowwise_mixture(mixture)
    engine = Engine(model, slots=8, background=False)
    early = engine.submit("dpmpp_2m", num=4, nfe=20, seed=5)
    for _ in range(3):  # dpmpp_2m runs alone for three calls, then heun and euler join midway
        engine.step()
    heun = engine.submit("heun", num=3, nfe=9, seed=1)
    late = engine.submit("euler", num=2, nfe=15, seed=2)
    engine.step()
    shared = [row for row in engine.slot_table() if row[0] >= 0]
    assert len(shared) == 8 and len({owner for owner, _, _ in shared}) >= 2  # every slot busy, requests mixed
    engine.run_until_idle()
    for fut, (s, n, nfe, seed) in ((heun, ("heun", 3, 9, 1)), (early, ("dpmpp_2m", 4, 20, 5)),
                                   (late, ("euler", 2, 15, 2))):
        ref, out = _reference(model, s, n, nfe, seed), fut.result(0)
        assert torch.equal(out.samples, ref.samples), s
        assert torch.equal(out.nfe, ref.nfe), s
        assert out.config == ref.config
    # 8 slots, 4 + 3 + 2 chains: the requests shared network calls (fewer calls than their NFE summed)
    assert engine.stats["network_calls"] < 20 + 9 + 15
    assert engine.stats["requests_done"] == 3
    engine.close()
    assert _no_engine_threads()


def test_every_sampler_shares_one_engine_and_gets_its_own_samples(mixture, monkeypatch):
    """All registered samplers at once in one 8-slot engine (different NFE, options, seeds; DLG with its own
    chains): each request equals api.sample's, bit for bit through row-wise models."""
    model = rowwise_dlg(monkeypatch, mixture)
    names = sorted(all_samplers())
    with Engine(model, slots=8) as engine:
        futures = {s: engine.submit(s, num=3, nfe=NFE.get(s, 9), seed=i, **OPTIONS.get(s, {}))
                   for i, s in enumerate(names)}
        outs = {s: f.result(300) for s, f in futures.items()}
        rows_per_call = engine.stats["rows"] / engine.stats["network_calls"]
    for i, s in enumerate(names):
        ref = _reference(model, s, 3, NFE.get(s, 9), i, **OPTIONS.get(s, {}))
        assert torch.equal(outs[s].samples, ref.samples), s
        assert torch.equal(outs[s].nfe, ref.nfe), s
        for k in ref.meta:  # DLG's books per sample
            assert (outs[s].meta[k] == ref.meta[k]).all(), (s, k)
    assert rows_per_call > 3  # calls were shared across requests
    assert _no_engine_threads()


def test_dlg_without_a_seed_takes_the_next_blocks_of_warm_chains(mixture, monkeypatch):
    """DLG as a service: requests without a seed take, in arrival order, the next blocks of one pool of warm
    chains, which are exactly the samples of api.sample's DLG run with the pool's seed (then the next seed's when
    a run of `pool_blocks` blocks per chain is used up); between requests the chains park, warm."""
    model = rowwise_dlg(monkeypatch, mixture)
    opts = OPTIONS["dlg"]  # 3 chains: 6 samples per pool run of 2 blocks per chain
    engine = Engine(model, slots=8, background=False, pool_seed=5, pool_blocks=2)
    a = engine.submit("dlg", num=2, nfe=8, seed=None, **opts)
    b = engine.submit("dlg", num=5, nfe=8, seed=None, **opts)  # the first run's last 4, the next run's first
    engine.run_until_idle()
    runs = [_reference(model, "dlg", 6, 8, seed, **opts) for seed in (5, 6)]
    got = torch.cat([a.result(0).samples, b.result(0).samples])
    assert torch.equal(got, torch.cat([runs[0].samples, runs[1].samples[:1]]))
    assert torch.equal(torch.cat([a.result(0).nfe, b.result(0).nfe]), torch.cat([runs[0].nfe, runs[1].nfe[:1]]))
    assert list(b.result(0).meta["pool_seed"]) == [5, 5, 5, 5, 6]
    assert (b.result(0).meta["chain"] == np.concatenate([runs[0].meta["chain"][2:], runs[1].meta["chain"][:1]])).all()
    assert a.result(0).config["seed"] is None and a.result(0).config["num"] == 2
    # warm: the chains wait parked in their 3 slots, and the engine is idle
    assert sum(owner >= 0 for owner, _, _ in engine.slot_table()) == 3 and not engine.step()
    calls = engine.stats["network_calls"]
    c = engine.submit("dlg", num=2, nfe=8, seed=None, **opts)
    engine.run_until_idle()
    assert torch.equal(c.result(0).samples, runs[1].samples[1:3])  # buffered already: no call made for them
    assert engine.stats["network_calls"] == calls
    d = engine.submit("dlg", num=3, nfe=8, seed=None, **opts)
    engine.run_until_idle()  # 2 buffered, then the chains' next round: no initialisation again
    assert torch.equal(d.result(0).samples, runs[1].samples[3:6])
    assert engine.stats["network_calls"] <= calls + 8  # at most one round of n_skip + n_den = 8 calls
    bad = engine.submit("heun", num=1, nfe=9, seed=None)
    assert "seed=None" in str(bad.exception(0)) and "DLG" in str(bad.exception(0))
    engine.close()
    assert _no_engine_threads()


def test_a_real_batched_network_agrees_to_rounding(mixture):
    """Through the batched mixture (a GEMM whose rounding depends on its row count): equal to rounding."""
    with Engine(mixture, slots=16) as engine:
        futs = [engine.submit("heun", num=5, nfe=11, seed=3), engine.submit("karras_sde", num=7, nfe=15, seed=4),
                engine.submit("heun", num=20, nfe=7, seed=9)]  # 20 > 16 slots: split into pieces
        outs = [f.result(120) for f in futs]
    for out, (s, n, nfe, seed) in zip(outs, [("heun", 5, 11, 3), ("karras_sde", 7, 15, 4), ("heun", 20, 7, 9)]):
        ref = _reference(mixture, s, n, nfe, seed)
        assert out.samples.shape == ref.samples.shape
        assert (out.samples - ref.samples).abs().max() < 2e-3, s
        assert torch.equal(out.nfe, ref.nfe)


class _Labelled:
    """A conditional row-wise denoiser: data N(labels, v) per coordinate, so D(x, sigma, labels) =
    (v x + sigma^2 labels) / (v + sigma^2) (the Gaussian posterior mean)."""
    v = 1e-4
    shape = (3,)
    sigma_min, sigma_max = 0.002, 80.0

    def __call__(self, x, sigma, labels):
        s2 = (sigma.to(torch.float64) ** 2)[:, None]
        return ((self.v * x.double() + s2 * labels.double()[:, None]) / (self.v + s2)).to(x.dtype)


def test_model_kwargs_rows_follow_their_samples():
    """Each request's `model_kwargs` rows reach the network beside its own samples in the packed batch."""
    model = _Labelled()
    labels = [torch.tensor([1, 2, 3]), torch.tensor([-4, 5]), torch.tensor([7])]
    with Engine(model, slots=4) as engine:
        futs = [engine.submit("heun", num=len(lb), nfe=9 + 2 * i, seed=i, model_kwargs={"labels": lb})
                for i, lb in enumerate(labels)]
        outs = [f.result(60) for f in futs]
    for i, (lb, out) in enumerate(zip(labels, outs)):
        ref = _reference(model, "heun", len(lb), 9 + 2 * i, i, model_kwargs={"labels": lb})
        assert torch.equal(out.samples, ref.samples)
        assert (out.samples.mean(1) - lb).abs().max() < 0.3  # near its own label (labels are >= 1 apart)


def test_cancelled_midway_frees_its_slots_and_the_rest_is_unchanged(mixture):
    model = rowwise_mixture(mixture)
    engine = Engine(model, slots=6, background=False)
    long = engine.submit("heun", num=4, nfe=35, seed=1)
    other = engine.submit("dpmpp_2m", num=2, nfe=10, seed=2)
    waiting = engine.submit("euler", num=3, nfe=8, seed=3)  # no slot free until one of them leaves
    for _ in range(5):
        engine.step()
    assert long.cancel()  # midway: five of its calls made
    engine.run_until_idle()
    assert long.cancelled()
    for fut, (s, n, nfe, seed) in ((other, ("dpmpp_2m", 2, 10, 2)), (waiting, ("euler", 3, 8, 3))):
        assert torch.equal(fut.result(0).samples, _reference(model, s, n, nfe, seed).samples)
    assert all(owner == -1 for owner, _, _ in engine.slot_table())
    engine.close()
    assert _no_engine_threads()


def test_a_bad_request_fails_its_own_future_and_the_engine_serves_the_rest(mixture):
    with Engine(mixture, slots=4) as engine:
        bad = [engine.submit("no_such_sampler", num=1, nfe=9), engine.submit("heun", num=1, nfe=0),
               engine.submit("heun", num=2, nfe=9, rho=-1.0)]
        good = engine.submit("heun", num=2, nfe=9, seed=0)
        for fut, words in zip(bad, ("no_such_sampler", "nfe", "rho")):
            err = fut.exception(60)
            assert isinstance(err, ValueError) and words in str(err) and "\n" not in str(err)
        assert good.result(60).samples.shape == (2, 1, 8, 8)


class _Flaky:
    """A row-wise denoiser that raises while `broken` is set (and takes `delay` seconds per call)."""

    def __init__(self, model):
        self.model, self.broken, self.delay = model, False, 0.0
        self.shape, self.sigma_min, self.sigma_max = model.shape, model.sigma_min, model.sigma_max

    def __call__(self, x, sigma):
        if self.broken:
            raise RuntimeError("the network failed")
        time.sleep(self.delay)
        return self.model(x, sigma)


def test_a_model_error_fails_the_requests_in_that_call_and_the_engine_goes_on(mixture):
    model = _Flaky(rowwise_mixture(mixture))
    engine = Engine(model, slots=4, background=False)
    hit = [engine.submit("heun", num=2, nfe=9, seed=0), engine.submit("euler", num=1, nfe=5, seed=1)]
    engine.step()
    model.broken = True
    engine.step()
    model.broken = False
    after = engine.submit("heun", num=2, nfe=9, seed=0)
    engine.run_until_idle()
    for fut in hit:
        assert isinstance(fut.exception(0), RuntimeError) and "the network failed" in str(fut.exception(0))
    assert torch.equal(after.result(0).samples, _reference(model, "heun", 2, 9, 0).samples)
    assert engine.stats["requests_failed"] == 2 and engine.stats["requests_done"] == 1
    engine.close()
    assert _no_engine_threads()


def test_close_fails_pending_requests_and_leaves_no_thread(mixture):
    slow = _Flaky(rowwise_mixture(mixture))
    slow.delay = 0.02  # 35 calls of 20 ms per request: none is done when the engine closes
    engine = dmcmc_fast.Engine(slow, slots=2)
    futs = [engine.submit("heun", num=2, nfe=35, seed=s) for s in range(4)]  # one runs, three wait for slots
    time.sleep(0.1)
    engine.close()
    assert all(isinstance(f.exception(0), EngineClosed) for f in futs)
    assert _no_engine_threads()
    late = engine.submit("heun", num=1, nfe=9)
    assert isinstance(late.exception(0), EngineClosed)


def test_bad_engine_arguments_are_one_line_errors(mixture):
    for kwargs, words in ((dict(slots=0), "slots"), (dict(slots=2.5), "slots"), (dict(graph="fast"), "graph"),
                          (dict(background="yes"), "background")):
        with pytest.raises(ValueError, match=words):
            Engine(mixture, **kwargs)
    engine = Engine(mixture, slots=2)
    with pytest.raises(RuntimeError, match="background=False"):
        engine.step()
    engine.close()


def test_slot_books():
    """The C++ books: lowest free slots first, FIFO grants (a whole piece waits and lets later ones pass), the
    packed layout in slot order, calls counted per piece."""
    books = SlotBooks(8)
    assert books.admit(1, 3, 0) == [0, 1, 2]
    assert books.admit(2, 2, 10) == [3, 4]
    assert books.admit(3, 4, 0) == [] and books.free_slots() == 3  # does not fit: nothing reserved
    assert books.grant([4, 2, 5], [False, True, True]) == [0, 2, 1]
    assert books.record_call([2, 1], [2, 3]) == [3, 0]  # owner 1 holds slot 0: its rows come first
    assert books.record_call([1], [1]) == [0] and books.calls(1) == 2
    owners, chains, calls = books.table()
    assert owners[:5] == [1, 1, 1, 2, 2] and chains[:5] == [0, 1, 2, 10, 11] and calls[:5] == [2, 2, 2, 1, 1]
    assert books.release(1) == 3 and books.free_slots() == 6 and books.calls(1) == -1
    assert books.admit(4, 4, 0) == [0, 1, 2, 5]
    with pytest.raises(ValueError, match="holds 4 slots"):
        books.record_call([4], [5])
    with pytest.raises(ValueError, match="slots must be >= 1"):
        SlotBooks(0)


def test_on_the_simulated_cuda_device_the_network_runs_as_captured_graphs(mixture):
    """On CUDA (the simulated device of tests/sim_cuda.py) the engine's shared calls go through its
    GraphedDenoiser (graphs per batch bucket up to `slots`), and the requests get the CPU's samples."""
    from sim_cuda import COUNTS, simulated_cuda

    with simulated_cuda():
        replays = COUNTS["graph replays"]
        with Engine(mixture, slots=8, device="cuda") as engine:
            futs = [engine.submit("heun", num=3, nfe=9, seed=1), engine.submit("dpmpp_2m", num=4, nfe=12, seed=2)]
            outs = [f.result(120) for f in futs]
            graph = engine.graphed.describe()
        replayed = COUNTS["graph replays"] - replays
    assert graph["mode"] == "graph" and graph["captured"] and replayed >= 12  # every shared call a replay
    assert outs[0].graph["engine"] == {"slots": 8}
    for out, (s, n, nfe, seed) in zip(outs, [("heun", 3, 9, 1), ("dpmpp_2m", 4, 12, 2)]):
        ref = _reference(mixture, s, n, nfe, seed)
        torch.testing.assert_close(out.samples, ref.samples, rtol=1e-4, atol=2e-3)
        assert torch.equal(out.nfe, ref.nfe)


def test_many_threads_submit_at_once_and_callbacks_may_submit_or_close(mixture):
    """Requests from several threads at once, a done-callback that submits a follow-up and one that closes the
    engine: every request equals api.sample's, nothing hangs, no thread is left."""
    model = rowwise_mixture(mixture)
    args = [(("heun", "euler", "dpmpp_2m")[i % 3], 1 + i % 3, 5 + i % 7, i) for i in range(24)]
    futures = {}
    engine = Engine(model, slots=8)

    def client(part):
        for a in part:
            futures[a] = engine.submit(a[0], num=a[1], nfe=a[2], seed=a[3])
    clients = [threading.Thread(target=client, args=(args[k::4],)) for k in range(4)]
    for c in clients:
        c.start()
    for c in clients:
        c.join()
    follow = []
    futures[args[0]].add_done_callback(lambda f: follow.append(engine.submit("heun", num=2, nfe=9, seed=99)))
    for a, f in futures.items():
        assert torch.equal(f.result(60).samples, _reference(model, a[0], a[1], a[2], a[3]).samples), a
    assert torch.equal(follow[0].result(60).samples, _reference(model, "heun", 2, 9, 99).samples)
    last = engine.submit("heun", num=2, nfe=35, seed=1)
    last.add_done_callback(lambda f: engine.close())  # from inside the engine: it shuts down after the callback
    last.result(60)
    engine._thread.join(10)
    assert _no_engine_threads()
    stepped = Engine(model, slots=4, background=False)
    first = stepped.submit("heun", num=1, nfe=9, seed=0)
    pending = stepped.submit("heun", num=4, nfe=35, seed=1)  # waits for slots while `first` runs
    first.add_done_callback(lambda f: stepped.close())
    stepped.run_until_idle()
    assert first.result(0) is not None and isinstance(pending.exception(0), EngineClosed)
    assert _no_engine_threads()
