"""Issue 18's host work cuts keep every answer: the counter that only counts still names the first bad call
(by replaying the run), the shared grid is the per-sample one, the plain loops of bench/host_overhead.py
are the algorithms ours runs (same samples or same NFE), and the bench itself runs."""
import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from bench import baselines as bl
from bench import host_overhead as ho
from dmcmc_fast import api
from dmcmc_fast.integrators import INTEGRATORS, sample_deis, sample_heun
from dmcmc_fast.integrators.common import per_sample_grid
from dmcmc_fast.models import GaussianMixture
from dmcmc_fast.models.base import ChainDiverged, CountingDenoiser, NonFiniteFinalState, NonFiniteModelOutput
from dmcmc_fast.models.builtin import load_model
from dmcmc_fast.schedules import karras_per_sample


def _mixture(dim=6, k=5, std=0.3):
    g = torch.Generator().manual_seed(0)
    return GaussianMixture(torch.randn(k, dim, generator=g), std=std)


class _Ops(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += 1
        return func(*args, **(kwargs or {}))


def test_a_counting_call_without_per_call_checks_dispatches_nothing_but_the_model():
    model, x, sigma = _mixture(), torch.randn(4, 6), torch.full((4,), 0.5)
    with _Ops() as bare:
        model(x, sigma)
    counting = CountingDenoiser(model, 4, per_call_checks=False)
    with _Ops() as counted:
        for _ in range(3):
            counting(x, sigma)
    assert counted.n == 3 * bare.n
    assert counting.nfe.tolist() == [3] * 4  # counted on the host, added when read
    counting(x[:2], sigma[:2], idx=torch.tensor([0, 1]))
    assert counting.nfe.tolist() == [4, 4, 3, 3]


def test_a_nan_final_state_without_per_call_checks_asks_for_a_replay():
    c = CountingDenoiser(lambda x, s: x * math.nan, 2, per_call_checks=False)
    x = c(torch.ones(2, 3), torch.full((2,), 0.5))
    c.check_final(x)
    with pytest.raises(NonFiniteFinalState):
        c.raise_if_nonfinite()


def _nan_below(threshold):
    """A mixture denoiser that returns NaN below `threshold`, and how often it was called."""
    model, calls = _mixture(), []

    class Broken:
        shape, sigma_min, sigma_max = model.shape, 0.002, 80.0

        def __call__(self, x, sigma):
            calls.append(1)
            out = model(x, sigma)
            return torch.where((sigma < threshold).reshape(-1, 1), out * math.nan, out)
    return Broken(), calls


def test_a_direct_integrator_call_replays_to_name_the_first_bad_sigma_and_calls_back_once():
    broken, calls = _nan_below(1.0)
    seen = []
    with pytest.raises(NonFiniteModelOutput, match=r"model returned NaN/Inf for finite input .* first at sigma in "
                                                  r"\[0\.\d+, 0\.\d+\]"):
        sample_heun(broken, 80.0 * torch.randn(3, 6), 80.0, 6, callback=seen.append)
    assert len(calls) == 2 * 11  # the run and its replay
    assert len(seen) == 6  # the replay runs without the user's callback


def test_api_sample_replays_a_bad_batch_to_name_the_sigma():
    broken, _ = _nan_below(5.0)
    with pytest.raises(NonFiniteModelOutput, match=r"first at sigma in \[[1-4]\.\d+"):
        api.sample(broken, "euler", 4, 9, progress=False)


def test_a_diverging_langevin_chain_is_still_named_through_the_replay():
    with pytest.raises(ChainDiverged, match=r"langevin: the chain diverged.*eta"):
        api.sample(load_model("gmm-digits"), "langevin", 4, 20, eta=1e6, progress=False)


def test_a_shared_start_grid_is_the_per_sample_grid_and_is_not_written():
    x = torch.zeros(5, 6)
    counting = CountingDenoiser(_mixture(), 5)
    shared = per_sample_grid(karras_per_sample, 80.0, x, 7, 0.002, counting, rho=7.0)
    fresh = karras_per_sample(torch.full((5,), 80.0, dtype=torch.float64), 7, 0.002, rho=7.0)
    assert torch.equal(shared, fresh)
    again = per_sample_grid(karras_per_sample, 80.0, x, 7, 0.002, counting, rho=7.0)
    assert again.data_ptr() == shared.data_ptr()  # built once
    with pytest.raises(RuntimeError):
        again.add_(1.0)  # an expanded view: a write cannot corrupt the shared row


def test_the_plain_deis_loop_is_ours():
    model = _mixture()
    x = 80.0 * torch.randn(4, 6, generator=torch.Generator().manual_seed(1))
    grid = bl.edm_grid(9, 0.002, 80.0)
    plain = bl.plain_deis(model, x, grid, bl.deis_ve_coefficients(grid))
    torch.testing.assert_close(plain, sample_deis(model, x, 80.0, 9).x, rtol=1e-4, atol=1e-4)


def test_the_plain_karras_sde_loop_without_churn_is_heun_and_spends_the_same_nfe():
    model = _mixture()
    x = 80.0 * torch.randn(4, 6, generator=torch.Generator().manual_seed(2))
    grid = bl.edm_grid(5, 0.002, 80.0)
    counted = bl.CallCounter(model)
    churned = bl.plain_karras_sde(counted, x, grid)
    assert counted.calls == 9 == int(INTEGRATORS["karras_sde"][0](model, x, 80.0, 5).nfe.max())
    assert torch.isfinite(churned).all()
    torch.testing.assert_close(bl.plain_karras_sde(model, x, grid, s_churn=0.0), bl.plain_heun(model, x, grid))


def test_the_plain_dlg_loop_spends_a_block_as_ours_and_denoises():
    model = load_model("gmm-digits")
    from dmcmc_fast.mcmc.entry import make_classifier

    clf = make_classifier(model, "trained", 0, 0.0, 0.0, "cpu")
    counted = bl.CallCounter(model)
    x = torch.randn(3, *model.shape)
    samples, x_end, sigma = bl.plain_dlg_blocks(counted, clf, x, clf.levels[clf(x).argmax(1)], 2, 2.0, 5, 5, 0.02)
    assert counted.calls == 2 * (5 + 9) and len(samples) == 2
    assert all(s.shape == x.shape and torch.isfinite(s).all() for s in samples)
    assert bool((samples[0].abs() <= 1.5).all())  # denoised to data scale


def test_host_overhead_bench_runs_and_reports_every_cell(tmp_path):
    rows = ho.main(["--samplers", "heun,dlg", "--batches", "2", "--reps", "1", "--out", str(tmp_path / "h.json"),
                    "--md", str(tmp_path / "h.md")])
    assert [(r["kind"], r["batch"]) for r in rows] == [("heun", 2), ("dlg", 2)]
    assert rows[0]["nfe"] == 9 and rows[1]["nfe"] == 14
    assert all(v > 0 for r in rows for v in r["plain_over"].values())
    text = (tmp_path / "h.md").read_text()
    assert "| heun | 2 | 9 |" in text and "| dlg | 2 | 14 |" in text
    assert "Fixed host work per call" in text and "\n| heun | 9 | " in text  # the zero-cost model's row


def test_the_zero_cost_model_costs_nothing_and_every_method_runs_on_it():
    zero = ho.ZeroCostModel(load_model("gmm-digits"))
    x = torch.randn(2, *zero.shape)
    assert zero(x, torch.ones(2)) is x
    cell = ho.fixed_cell(load_model("gmm-digits"), "deis", 9, reps=1)
    assert cell["batch"] == 1 and cell["nfe"] == 9 and all(t > 0 for t in cell["median_s"].values())


def test_rounds_run_every_method_once_in_shuffled_orders_and_the_ratio_is_paired():
    seen = []
    times = ho.round_robin({k: (lambda k=k: seen.append(k)) for k in "abc"}, 8)
    assert all(len(t) == 8 for t in times.values())
    orders = [tuple(seen[i:i + 3]) for i in range(0, 24, 3)]
    assert all(sorted(o) == ["a", "b", "c"] for o in orders) and len(set(orders)) > 1  # no fixed predecessor
    # ours takes twice plain's time in every round; a burst slows plain's calls in rounds 3-5 and ours in 4-5
    plain, ours = [1.0, 1.0, 10.0, 10.0, 10.0], [2.0, 2.0, 2.0, 20.0, 20.0]
    assert ho.paired_ratio(plain, ours) == 0.5  # the ratio of medians would say 10 / 2 = 5
