"""Every MCMC sampler runs through the registry (what `dmcmc-fast sample --sampler NAME` calls) within its
NFE budget, spending exactly the cost its levels imply, and rejects bad options by name."""
import json

import pytest
import torch

from dmcmc_fast.api import sample
from dmcmc_fast.cli import main
from dmcmc_fast.models.gaussian_mixture import GaussianMixture

MIX = GaussianMixture(torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0)), std=0.2)

# (sampler, options, NFE spent of a budget of 40): levels L = (40 - final_tweedie) // cost per level
CASES = [("langevin", {}, 40),  # 39 steps + final denoise
         ("ald", {"n_steps_each": 4}, 37),  # 9 levels x 4 + 1
         ("mild", {"n_steps_each": 4}, 37),
         ("baoab_limit", {"n_steps_each": 3}, 40),  # 13 x 3 + 1
         ("obabo", {"n_steps_each": 3}, 37)]  # 9 x (3 + 1) + 1


@pytest.mark.parametrize("name,opts,spent", CASES)
def test_sampler_spends_its_levels_cost_within_budget(name, opts, spent):
    out = sample(MIX, name, 3, 40, seed=2, progress=False, **opts)
    assert out.samples.shape == (3, 1, 4, 4) and torch.isfinite(out.samples).all()
    assert out.nfe.tolist() == [spent] * 3


def test_cli_runs_dlg_on_a_builtin_model(tmp_path, capsys):
    rc = main(["sample", "--model", "gmm-digits", "--sampler", "dlg", "--nfe", "45", "--num", "2", "--n-skip", "2",
               "--n-den", "5", "--eta", "1.0", "--integrator", "euler", "--init-nfe", "5", "--n-init", "1",
               "--out", str(tmp_path / "o"), "--no-progress", "--device", "cpu"])
    assert rc == 0
    rep = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rep["num"] == 2 and 5 * 2 + 1 < rep["nfe_max"] <= 41  # init <= 5 + 1, then 5 blocks of <= 2 + 5


def test_bad_options_are_rejected_by_name():
    with pytest.raises(ValueError, match="gamma"):
        sample(MIX, "mild", 1, 10, progress=False, gamma=1.5)
    with pytest.raises(ValueError, match="nfe must be at least"):
        sample(MIX, "obabo", 1, 3, progress=False, n_steps_each=5)
    with pytest.raises(ValueError, match="friction must be in"):
        sample(MIX, "obabo", 1, 10, progress=False, friction=0.0)
    with pytest.raises(ValueError, match="classifier 'exact' needs an analytic mixture"):
        _not_mixture(classifier="exact")
    with pytest.raises(ValueError, match="no committed noise-level classifier for data shape"):
        _not_mixture()  # the default ('auto'): the committed checkpoint for a network, none for 1x4x4


@pytest.mark.parametrize("sampler,nfe,opts,msg", [
    ("ald", 5, {}, "ald: nfe must be at least 6 (n_steps_each 5 per level + 1 final Tweedie step), got 5"),
    ("mild", 3, {"n_steps_each": 4, "final_tweedie": 0},
     "mild: nfe must be at least 4 (n_steps_each 4 per level + final_tweedie 0), got 3"),
    ("baoab_limit", 2, {"n_steps_each": 2},
     "baoab_limit: nfe must be at least 3 (n_steps_each 2 per level + 1 final Tweedie step), got 2"),
    ("obabo", 6, {}, "obabo: nfe must be at least 7 (n_steps_each 5 + 1 per level + 1 final Tweedie step), got 6"),
])
def test_budget_errors_name_the_sampler_and_its_cost(sampler, nfe, opts, msg):
    with pytest.raises(ValueError) as err:
        sample(MIX, sampler, 1, nfe, progress=False, **opts)
    assert str(err.value) == msg


def _not_mixture(**options):
    class Plain:
        shape, sigma_min, sigma_max, data_range = (1, 4, 4), 0.002, 80.0, (-1, 1)

        def __call__(self, x, sigma):
            return x * 0

    sample(Plain(), "dlg", 1, 100, progress=False, **options)
