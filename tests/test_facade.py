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
