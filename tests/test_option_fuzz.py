"""Every bad option is named: property-based, over every registered sampler, through `api.sample`.

For any option values (NaN, inf, negative, huge, wrong types, valid ones), `api.sample` either raises a
one-line ValueError that names one of the options given, or returns finite samples: never another
exception type, never a traceback from deep inside. Then the issue's examples, one by one.
"""
from __future__ import annotations

import math
import re

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dmcmc_fast import api
from dmcmc_fast.models.base import ChainDiverged
from dmcmc_fast.models.builtin import load_model
from dmcmc_fast.samplers import all_samplers

DLG_SMALL = dict(n_levels=50, init_nfe=5, n_init=2, n_skip=2, n_den=5)
# sampler -> (a small budget, base options) that run as they are; drawn options override the base
BASE = {"dlg": (40, DLG_SMALL), "rk45": (100, dict(rtol=1e-2, atol=1e-2)), "dpm_adaptive": (100, {}),
        **{name: (30, {}) for name in ("ald", "mild", "baoab_limit", "obabo")}}  # T + 2 <= 13 NFE per level
SAMPLERS = sorted(all_samplers())


@pytest.fixture(scope="module")
def model():
    return load_model("gmm-digits", modes=20)


def values(option):
    """(valid, wrong) strategies for an option: wrong types, NaN, inf, negative and huge numbers. Integers
    inside an option's range stay small (a valid n_init = 100000 is valid work, not a bad input)."""
    junk = st.one_of(st.sampled_from([math.nan, math.inf, -math.inf, -1.0, 0.0, 1e308, -(2**70), 2**70]),
                     st.booleans(), st.text(max_size=4), st.just([1.0]), st.just("{}"))
    if option.choices is not None:
        return st.sampled_from(option.choices), st.one_of(junk, st.integers(), st.floats())
    if option.type is float:
        lo = option.lo if option.lo is not None else -1e6
        hi = option.hi if option.hi is not None else 1e6
        return st.floats(lo, hi), st.one_of(junk, st.floats(allow_nan=True, allow_infinity=True), st.integers())
    if option.type is int:
        outside = st.integers(max_value=option.lo - 1)
        if option.hi is not None:
            outside |= st.integers(min_value=option.hi + 1)
        return st.integers(option.lo, option.lo + 10), st.one_of(junk, outside, st.floats())
    return st.sampled_from([option.default, *STRINGS.get(option.name, [])]), junk


# plausible values of the free-form string options
STRINGS = {"classifier": ["exact", "trained", "no/such/checkpoint.pt"],
           "integrator_options": ['{"rho": 3.0}', '{"rho": NaN}', '{"rtol": 1e-3}', "[1]", "{"]}


@st.composite
def option_draws(draw, spec, valid_only: bool):
    """One or two of the sampler's options, each with a drawn value."""
    names = draw(st.lists(st.sampled_from([o.name for o in spec.options]), min_size=1, max_size=2, unique=True))
    by_name = {o.name: o for o in spec.options}
    return {n: draw(values(by_name[n])[0] if valid_only else st.one_of(*values(by_name[n]))) for n in names}


def named_error_or_finite_samples(model, sampler, drawn):
    nfe, base = BASE.get(sampler, (10, {}))
    try:
        out = api.sample(model, sampler, num=2, nfe=nfe, progress=False, **{**base, **drawn})
    except ValueError as err:
        msg = str(err)
        assert "\n" not in msg, f"{sampler} {drawn}: a multi-line error: {msg!r}"
        # names an option given, or the choice given (an integrator DLG runs, over its own budget)
        named = [name for name, v in drawn.items() if name in msg or (_is_choice(sampler, name, v) and v in msg)]
        assert named, f"{sampler} {drawn}: the error names no option given: {msg}"
    else:
        assert torch.isfinite(out.samples).all(), f"{sampler} {drawn}: non-finite samples without an error"


def _is_choice(sampler, name, value) -> bool:
    choices = next(o.choices for o in all_samplers()[sampler].options if o.name == name)
    return isinstance(value, str) and choices is not None and value in choices


FUZZ = settings(max_examples=20, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_any_option_value_is_named_or_gives_finite_samples(sampler, model):
    given(drawn=option_draws(all_samplers()[sampler], valid_only=False))(FUZZ(
        lambda drawn: named_error_or_finite_samples(model, sampler, drawn)))()


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_values_in_range_give_finite_samples_or_a_named_cross_check(sampler, model):
    given(drawn=option_draws(all_samplers()[sampler], valid_only=True))(FUZZ(
        lambda drawn: named_error_or_finite_samples(model, sampler, drawn)))()


# ---- the examples ----

@pytest.mark.parametrize("sampler, options, message", [
    ("heun", dict(rho=math.nan), r"^heun: option rho must be in \[0.1, 100.0\], got nan$"),
    ("karras_sde", dict(s_churn=math.nan), r"^karras_sde: option s_churn must be in \[0.0, 10000.0\], got nan$"),
    ("karras_sde", dict(s_noise=math.inf), r"^karras_sde: option s_noise must be in \[0.0, 10.0\], got inf$"),
    ("langevin", dict(eta=-math.inf), r"^langevin: option eta must be in \[1e-12, 1000000.0\], got -inf$"),
    ("heun", dict(sigma_min=10.0, sigma_max=1.0),
     r"^heun: sigma_min must be < sigma_max, got sigma_min=10.0, sigma_max=1.0$"),
    ("karras_sde", dict(sigma_min=5.0, sigma_max=5.0), r"^karras_sde: sigma_min must be < sigma_max"),
    ("ald", dict(sigma_min=2.0, sigma_max=1.0), r"^ald: sigma_min must be <= sigma_max"),
    ("mild", dict(sigma_min=2.0, sigma_max=1.0), r"^mild: sigma_min must be <= sigma_max"),
    ("dlg", dict(sigma_min=2.0, sigma_max=1.0), r"^dlg: sigma_min must be < sigma_max"),
    ("dlg", dict(n_skip=2.0), r"^dlg: option n_skip must be an integer, in \[0, 100000\], got 2.0$"),
    ("dlg", dict(n_skip=True), r"^dlg: option n_skip must be an integer, in \[0, 100000\], got True$"),
    ("heun", dict(final_tweedie=True), r"^heun: option final_tweedie must be an integer, one of 0, 1, got True$"),
    ("heun", dict(rho="7"), r"^heun: option rho must be a number, in \[0.1, 100.0\], got '7'$"),
    ("heun", dict(rho=10**400), r"^heun: option rho must be in \[0.1, 100.0\], got 1000000000.*\.\.\.$"),
    ("deis", dict(ab_time="x"), r"^deis: option ab_time must be one of rho, ve, vp, got 'x'$"),
])
def test_bad_options_are_one_line_errors_naming_sampler_option_range_and_value(model, sampler, options, message):
    with pytest.raises(ValueError, match=message):
        api.sample(model, sampler, num=2, nfe=10, progress=False, **options)


def test_inf_is_accepted_where_the_range_ends_at_inf(model):
    """EDM's S_tmax = inf (churn at every level) is a value, not an overflow; an equal sigma pair is one
    level for the annealed samplers."""
    assert torch.isfinite(api.sample(model, "karras_sde", num=2, nfe=9, progress=False, s_tmax=math.inf).samples).all()
    assert torch.isfinite(api.sample(model, "obabo", num=2, nfe=10, progress=False,
                                     sigma_min=0.5, sigma_max=0.5).samples).all()


@pytest.mark.parametrize("eta, seen", [(1e6, "was already NaN/Inf when the model was called"),
                                       (1e3, r"reached \|x\| = .* far outside the data")])
def test_a_diverging_chain_names_the_sampler_and_its_step_size_not_the_model(model, eta, seen):
    advice = re.escape(f"lower the step size eta (got {eta:g})")
    with pytest.raises(ChainDiverged, match=rf"^langevin: the chain diverged: the state x {seen}.*; {advice}$") \
            as err:
        api.sample(model, "langevin", num=2, nfe=10, progress=False, eta=eta)
    assert isinstance(err.value, ValueError)  # the CLI's one-line error (exit 2), not the model's NaN


def test_a_diverging_integrator_names_more_steps_and_the_options_changed(model):
    """A sampler without a step size whose chain ran away (here: a model whose outputs are 1e30 times too
    large, so the state leaves the data's scale after one step) names the budget and the options set."""
    with pytest.raises(ChainDiverged, match=r"^karras_sde: the chain diverged: the state x (was already NaN/Inf|"
                                            r"reached).*; take more steps \(a larger nfe, got 9\); options changed "
                                            r"from their defaults: s_noise=2.0$"):
        api.sample(_Scaled(model, 1e30), "karras_sde", num=2, nfe=9, progress=False, s_noise=2.0)


class _Scaled:
    def __init__(self, model, scale):
        self.model, self.scale = model, scale
        self.shape, self.sigma_min, self.sigma_max, self.data_range = \
            model.shape, model.sigma_min, model.sigma_max, model.data_range

    def __call__(self, x, sigma):
        return self.scale * self.model(x, sigma)
