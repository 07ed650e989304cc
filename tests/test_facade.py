"""The façade: `Sampler(...).sample(n)` / `.stream(n)` give the same samples as the API, options are
checked when the object is built, and streaming yields every sample once, in chain order."""
import pytest
import torch

import dmcmc_fast
from dmcmc_fast import api
from dmcmc_fast.models.builtin import load_model


@pytest.fixture(scope="module")
def model():
    return load_model("gmm-digits", modes=25)


def test_sample_equals_api_and_stream_is_in_order(model):
    heun = dmcmc_fast.Heun(model, nfe=9, seed=3, batch_size=4)
    out = heun.sample(10)
    ref = api.sample(model, "heun", 10, 9, seed=3, batch_size=4, progress=False)
    torch.testing.assert_close(out.samples, ref.samples)
    assert out.nfe.tolist() == [9] * 10
    batches = list(heun.stream(10))
    assert [(b.start, b.stop) for b in batches] == [(0, 4), (4, 8), (8, 10)]
    torch.testing.assert_close(torch.cat([b.samples for b in batches]), out.samples)


def test_dlg_and_deis_facades(model):
    dlg = dmcmc_fast.DLG(model, nfe=60, eta=1.0, n_skip=2, n_den=6, n_levels=50, seed=1)
    out = dlg.sample(3)
    assert out.samples.shape == (3, 1, 8, 8) and int(out.nfe.max()) <= 60
    deis = dmcmc_fast.DEIS(model, nfe=10, order=2)
    assert deis.sample(2).nfe.tolist() == [10, 10]


def test_bad_option_fails_when_built(model):
    with pytest.raises(ValueError, match=r"option order must be in \[0, 3\]"):
        dmcmc_fast.DEIS(model, nfe=10, order=7)
    with pytest.raises(ValueError, match="does not take option"):
        dmcmc_fast.Heun(model, nfe=10, eta=0.1)
    with pytest.raises(AttributeError):
        dmcmc_fast.NoSuchSampler


def test_facade_names_match_the_lazy_list():
    from dmcmc_fast import facade
    assert set(facade.__all__) <= set(dmcmc_fast.__all__)


def test_a_repeated_call_reuses_its_checked_run_and_gives_fresh_outputs(model):
    """`sample(n)` in memory keeps its checked run per (n, nfe, seed, batch size, graph, device): a repeated call
    gives the same samples in new tensors and a fresh account of the graph, and a changed seed is a new run."""
    kar2 = dmcmc_fast.KarrasSDE(model, nfe=9, seed=2, batch_size=3, s_churn=10.0)
    first = kar2.sample(7)
    first.nfe += 100  # a caller's changes to one output never reach the next
    first.graph["mode"] = "changed"
    first.config["options"]["s_churn"] = 0.0
    second = kar2.sample(7)
    assert len(kar2._runs) == 1 and second.nfe.tolist() == [9] * 7 and second.graph["mode"] == "eager"
    assert second.config["options"]["s_churn"] == 10.0 and kar2.options["s_churn"] == 10.0
    torch.testing.assert_close(second.samples, first.samples, rtol=0, atol=0)
    assert second.samples.data_ptr() != first.samples.data_ptr()
    kar2.seed = 5
    other = kar2.sample(7)
    ref = api.sample(model, "karras_sde", 7, 9, seed=5, batch_size=3, progress=False, s_churn=10.0)
    assert len(kar2._runs) == 2 and torch.equal(other.samples, ref.samples)
    assert not torch.equal(other.samples, first.samples)


def test_a_kept_run_puts_a_network_back_in_eval_mode():
    unet = load_model("unet-mnist")
    euler = dmcmc_fast.Euler(unet, nfe=2)
    euler.sample(1)
    unet.train()
    euler.sample(1)
    assert not unet.training


def test_api_sample_checks_its_options_once_per_kind_of_call_and_every_bad_call(model):
    """api.sample keeps the checked options of a (sampler, nfe, model range, options) it has seen: a repeated call
    gives the same config (a copy: a caller's edit of one output reaches no other), a bad one still fails."""
    first = api.sample(model, "heun", 2, 9, progress=False, rho=5.0)
    first.config["options"]["rho"] = 99.0
    second = api.sample(model, "heun", 2, 9, progress=False, rho=5.0)
    assert second.config["options"]["rho"] == 5.0 and torch.equal(second.samples, first.samples)
    for _ in range(2):
        with pytest.raises(ValueError, match="rho must be in"):
            api.sample(model, "heun", 2, 9, progress=False, rho=-1.0)
        with pytest.raises(ValueError, match="nfe"):
            api.sample(model, "deis", 2, 1, progress=False, order=3, warm_start="runge_kutta")


def test_a_kept_run_on_the_graph_path_fetches_its_wrapper_again(model):
    """graph="on" off CUDA runs the captured path's static buffers eagerly: a kept run fetches that wrapper
    again on every call (the one the model's tensors still fit) and gives the eager samples each time."""
    heun = dmcmc_fast.Heun(model, nfe=5, graph="on", batch_size=3)
    ref = api.sample(model, "heun", 5, 5, batch_size=3, graph="off", progress=False).samples
    for _ in range(2):
        out = heun.sample(5)
        assert out.graph["mode"] == "static" and torch.equal(out.samples, ref)
    assert len(heun._runs) == 1
