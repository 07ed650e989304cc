"""The samplers' math steps (what the CPU runs) against the fused kernels' torch references (what the Triton kernels
are tested against): the same bits, float32 and bfloat16 state; and `api.sample` reaches a step in at most 10 calls
(ARCHITECTURE.md, "One api.sample call")."""
import traceback

import pytest
import torch

from dmcmc_fast import api
from dmcmc_fast.integrators import dpm_solver, karras
from dmcmc_fast.integrators.common import exponential_update
from dmcmc_fast.integrators.plans import EdmPlan, ExponentialPlan
from dmcmc_fast.kernels import deis as fused_deis, karras_step as fused_karras
from dmcmc_fast.models.builtin import load_model


def state(dtype, seed=0, b=3):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, 2, 5, generator=g).to(dtype) for _ in range(4)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_edm_steps_equal_the_kernels_references_bit_for_bit(dtype):
    x, den, den_next, _ = state(dtype)
    sigmas = torch.tensor([[80.0, 3.0, 0.5, 0.0], [10.0, 2.0, 0.1, 0.0], [1.0, 0.7, 0.2, 0.0]], dtype=torch.float64)
    plan = EdmPlan(x, sigmas, 3, None, 1.0, heun=True, math=(karras.euler_step, karras.heun_correct))
    cols = sigmas.float()
    for i in range(2):
        st = plan.steps[i]
        got_x, got_d = plan.op.euler_step(x, den, st)
        ref_x, ref_d = fused_karras.euler_step_reference(x, den, cols[:, i], cols[:, i + 1])
        assert got_x.dtype == dtype and torch.equal(got_x, ref_x) and torch.equal(got_d, ref_d)
        got = plan.op.heun_correct(x, got_d, got_x, den_next, st)
        ref = fused_karras.heun_correct_reference(x, ref_d, ref_x, den_next, cols[:, i], cols[:, i + 1])
        assert got.dtype == dtype and torch.equal(got, ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_exponential_updates_equal_deis_combine_reference_bit_for_bit(dtype):
    x, u0, u1, u2 = state(dtype, seed=1)
    g = torch.Generator().manual_seed(2)
    psi, c = torch.rand(3, 4, generator=g, dtype=torch.float64), torch.randn(3, 4, 3, generator=g, dtype=torch.float64)
    terms = [1, 2, 3, 2]
    plan = ExponentialPlan(x, (psi, c, terms), math=(exponential_update, dpm_solver.dpmpp_2m_step))
    for i, j in enumerate(terms):
        u = [u0, u1, u2][:j]
        ref = fused_deis.deis_combine_reference(x, torch.stack(u), psi[:, i], c[:, i, :j])
        got = plan.op.exponential_update(x, u, plan.steps[i])
        assert got.dtype == dtype and torch.equal(got, ref), i
        if j <= 2:  # DPM-Solver++(2M): first order on its first step, else x0_i and x0_{i-1}
            two = plan.op.dpmpp_2m_step(x, u0, u1 if j == 2 else None, plan.steps[i])
            assert torch.equal(two, ref), i


def test_api_sample_reaches_the_step_in_at_most_10_calls(monkeypatch):
    frames = []
    math = karras.euler_step

    def spy(x, denoised, st):
        frames.append(traceback.extract_stack()[:-1])
        return math(x, denoised, st)
    spy.__name__, spy.fused = "euler_step", math.fused
    monkeypatch.setattr(karras, "euler_step", spy)
    api.sample(load_model("gmm-digits", modes=4), "heun", 2, 5, seed=11, progress=False)
    assert frames, "the spy was not called: the loop does not run karras.euler_step"
    stack = frames[0]
    start = max(k for k, f in enumerate(stack) if f.name == "sample" and f.filename.endswith("api.py"))
    path = [f.name for f in stack[start:]]
    assert path[-1] == "edm_on_grid" and len(path) <= 10, path
