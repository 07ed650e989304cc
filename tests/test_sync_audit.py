"""The hot loop reads nothing back to the host (DESIGN.md, "The hot path"), checked on the CPU.

Every registered sampler runs through `api.sample` (the path users run) at two budgets under
`HostSyncAudit`; the ops that would stall a GPU or break graph capture may appear in setup and at the
end of a run, but their number must not grow with the number of steps: zero per extra step. The
adaptive solvers (rk45, dpm_adaptive) are the samplers with a genuine host decision: one read per
attempted step, documented in their modules.
"""
from __future__ import annotations

import math

import pytest
import torch

from dmcmc_fast import api
from dmcmc_fast.engine.audit import HostSyncAudit
from dmcmc_fast.models.builtin import load_model
from dmcmc_fast.samplers import all_samplers

DLG_SMALL = dict(n_levels=50, init_nfe=5, n_init=2, n_skip=2, chains=1)  # 3 samples = 3 blocks of one chain
# sampler -> (two runs (nfe, options) that differ in the number of steps)
RUNS = {
    "dlg": [(7, dict(DLG_SMALL, classifier="exact")), (12, dict(DLG_SMALL, classifier="exact"))],
    "rk45": [(400, dict(rtol=1e-2, atol=1e-2)), (400, dict(rtol=1e-4, atol=1e-4))],
    "dpm_adaptive": [(400, dict(rtol=1e-2, atol=1e-2)), (400, dict(rtol=1e-4, atol=1e-4))],
}
ADAPTIVE = {"rk45": 6, "dpm_adaptive": 3}  # model calls per attempted step (dpm_adaptive: its default order 3)
EXTRA_CASES = {  # more configurations of one sampler: (sampler, runs)
    "dlg-trained": ("dlg", [(7, dict(DLG_SMALL, classifier="trained")), (12, dict(DLG_SMALL, classifier="trained"))]),
    "dlg-sample-deis": ("dlg", [(7, dict(DLG_SMALL, classifier="exact", gibbs="sample", integrator="deis")),
                                (12, dict(DLG_SMALL, classifier="exact", gibbs="sample", integrator="deis"))]),
    "karras_sde-churn": ("karras_sde", [(9, dict(s_churn=10.0, s_tmin=0.0, s_tmax=100.0)),
                                        (19, dict(s_churn=10.0, s_tmin=0.0, s_tmax=100.0))]),
    "deis-rk-warm-start": ("deis", [(12, dict(warm_start="runge_kutta")), (22, dict(warm_start="runge_kutta"))]),
}


def audited_runs(model, sampler, runs, device=None):
    """[(events, NFE per sample)] of `api.sample` for each (nfe, options), audited on its second call: what a
    loop sets up once per shared grid (`integrators.common.derived`) is cached by then whatever ran before,
    as in repeated sampling (setup may read back; steps may not)."""
    out = []
    for nfe, options in runs:
        api.sample(model, sampler, num=3, nfe=nfe, progress=False, device=device, **options)
        with HostSyncAudit() as audit:
            res = api.sample(model, sampler, num=3, nfe=nfe, progress=False, device=device, **options)
        out.append((audit.counts(), float(res.nfe.max())))
    return out


def extra_syncs(model, sampler, runs, device=None):
    (few, nfe_few), (many, nfe_many) = audited_runs(model, sampler, runs, device)
    assert nfe_many > nfe_few, f"{sampler}: the two runs must differ in steps ({nfe_few} vs {nfe_many} NFE)"
    return many - few, nfe_many - nfe_few


@pytest.fixture(scope="module")
def digits():
    return load_model("gmm-digits")


@pytest.fixture(autouse=True)
def device_branches(monkeypatch):
    """Audit the branch a GPU runs where the CPU takes a cheaper one that reads back (free on a CPU)."""
    from dmcmc_fast.mcmc.classifier import ExactLevelPosterior

    monkeypatch.setattr(ExactLevelPosterior, "STATIC_WIDTH_ON_CPU", True)


CASES = {name: (name, RUNS.get(name, [(9, {}), (19, {})])) for name in sorted(all_samplers()) if name not in ADAPTIVE}
CASES.update(EXTRA_CASES)


def assert_no_sync_per_step(case, model, device=None):
    """`case` (of CASES) run at its two budgets: no more host syncs in the longer one."""
    sampler, runs = CASES[case]
    extra, dnfe = extra_syncs(model, sampler, runs, device)
    assert not extra, (f"{case}: {sum(extra.values())} host syncs more over {dnfe} more NFE per sample "
                       f"(must be 0 per step):\n" + "\n".join(f"  {n} x {e}" for e, n in extra.most_common()))


@pytest.mark.parametrize("case", sorted(CASES))
def test_no_host_sync_per_step(case, digits):
    assert_no_sync_per_step(case, digits)


def test_every_registered_sampler_is_audited():
    assert set(all_samplers()) == {s for s, _ in CASES.values()} | set(ADAPTIVE)


@pytest.mark.parametrize("sampler", sorted(ADAPTIVE))
def test_adaptive_solver_reads_back_once_per_step(digits, sampler):
    extra, dnfe = extra_syncs(digits, sampler, RUNS[sampler])
    steps = math.ceil(dnfe / ADAPTIVE[sampler])
    reads = {e: n for e, n in extra.items() if not e.startswith("index ")}  # index: compaction of finished rows
    assert len(reads) == 1, reads  # one place: the step's accept/finish decision in the solver's own module
    (read,) = reads
    assert f"integrators/{sampler}.py" in read and read.split()[0] in ("Tensor.tolist", "_local_scalar_dense"), read
    assert sum(reads.values()) <= steps, f"{sum(reads.values())} reads for {steps} more steps"


def test_network_model_and_trained_classifier_are_sync_free():
    unet = load_model("unet-mnist")
    for sampler, runs in [("heun", [(3, {}), (5, {})]),
                          ("dlg", [(5, dict(classifier="trained", init_nfe=3, n_init=1, n_skip=2)),
                                   (8, dict(classifier="trained", init_nfe=3, n_init=1, n_skip=2))])]:
        extra, _ = extra_syncs(unet, sampler, runs)
        assert not extra, f"{sampler} on unet-mnist: {extra}"


def test_the_audit_sees_each_kind_of_sync():
    x = torch.randn(5)
    with HostSyncAudit() as audit:
        x.sum().item()
        bool((x > 0).any())
        x[x > 0]
        torch.nonzero(x)
        torch.tensor([1.0, 2.0])
        x.tolist()
        x.cpu()
        y = x * 2 + torch.full((5,), 0.5)  # fine: fills and elementwise ops
    ops = [e.op for e in audit.events]
    assert ops == ["_local_scalar_dense", "_local_scalar_dense", "index", "nonzero", "lift_fresh", "Tensor.tolist",
                   "Tensor.cpu"], ops
    assert y.shape == (5,)
    assert torch.Tensor.cpu is not None and "patched" not in torch.Tensor.cpu.__name__  # methods restored


def test_vp_adapter_copies_its_table_to_the_device_once():
    from dmcmc_fast.models import VPAdapter

    abar = torch.linspace(0.999, 0.01, 100)
    model = VPAdapter(lambda x, t: torch.zeros_like(x), abar, shape=(2,))
    sigma, x = torch.full((3,), 0.5), torch.randn(3, 2)
    model(x, sigma)  # first call: setup
    with HostSyncAudit() as audit:
        model(x, sigma)
    assert not audit.events, audit.counts()
    assert len(model._log_sigmas_on) == 1
