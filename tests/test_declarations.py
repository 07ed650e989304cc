"""One declaration per sampler: the registry, the CLI flags, the façade class and `dmcmc_fast.__all__` all come
from it; an option's default is written once (a declared default that differs from the function's keyword
default fails at import). One validation layer: every check speaks one error format, and a budget that
cannot pay for the options fails before any work or file. The RNG counter has one name per meaning."""
from __future__ import annotations

import inspect
import re

import pytest
import torch

import dmcmc_fast
from dmcmc_fast import api, facade, samplers, validate
from dmcmc_fast.cli import build_parser, main
from dmcmc_fast.integrators import INTEGRATORS, sample_heun, sample_karras_sde
from dmcmc_fast.models.builtin import load_model
from dmcmc_fast.samplers import SIGNATURE, Option, all_samplers, declare, get_sampler, sampler

BASE = set(inspect.signature(facade.Sampler.__init__).parameters) - {"self", "options"}


@pytest.fixture(scope="module")
def model():
    return load_model("gmm-digits", modes=10)


@pytest.fixture
def scratch_registry(monkeypatch):
    """A copy of the registry that a test may declare into (the real one is left as it was)."""
    monkeypatch.setattr(samplers, "SAMPLERS", dict(all_samplers()))
    monkeypatch.setattr(samplers, "FAMILY_MODULES", ())
    return samplers.SAMPLERS


@pytest.mark.parametrize("name", sorted(all_samplers()))
def test_each_declaration_gives_its_facade_class_and_cli_flags(name):
    spec = get_sampler(name)
    cls = getattr(dmcmc_fast, spec.facade)
    assert issubclass(cls, facade.Sampler) and cls.sampler_name == name and spec.facade in dmcmc_fast.__all__
    params = inspect.signature(cls).parameters
    own = {n: p.default for n, p in params.items() if n not in BASE}
    assert own == {o.name: o.default for o in spec.options}  # exactly its options, with their defaults
    assert all(params[n].kind is inspect.Parameter.KEYWORD_ONLY for n in own)
    for o in spec.options:  # the docstring names every option with its default
        assert f"    {o.name} ({o.type.__name__}, " in cls.__doc__ and f"default {o.default!r}" in cls.__doc__
    flags = build_parser(name).parse_args(["sample", "--model", "m", "--sampler", name, "--nfe", "1", "--out", "o"])
    assert flags.sampler_opts == [o.name for o in spec.options]


def test_the_facade_and_all_list_every_sampler_once():
    specs = all_samplers().values()
    assert sorted(facade.CLASSES) == sorted(s.facade for s in specs)
    assert len({s.facade for s in specs}) == len(specs)
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        dmcmc_fast.Nope


def test_integrator_options_take_their_defaults_from_the_function():
    for name, (fn, _) in INTEGRATORS.items():
        params = inspect.signature(fn).parameters
        for o in get_sampler(name).options:
            if o.name in params:  # every option but sigma_max is a keyword, with the same default
                assert o.default == params[o.name].default, (name, o.name)
    assert {o.name: o.default for o in get_sampler("karras_sde").options}["s_churn"] == 40.0


def test_a_default_that_differs_from_the_signature_fails_when_declared(scratch_registry):
    with pytest.raises(TypeError, match=r"bad: option s_churn declares the default 80.0, but sample_karras_sde "
                                        r"defaults it to 40.0"):
        declare("bad", lambda req: None, facade="Bad", help="x", defaults_from=sample_karras_sde,
                options=(Option("s_churn", float, 80.0, lo=0.0, hi=1e4),))
    with pytest.raises(TypeError, match="bad: option eta has no default"):
        declare("bad", lambda req: None, facade="Bad", help="x", defaults_from=sample_heun,
                options=(Option("eta", float, lo=0.0, hi=1.0),))
    with pytest.raises(ValueError, match=r"bad: option rho must be in \[0.1, 1.0\], got 7.0"):  # outside its range
        declare("bad", lambda req: None, facade="Bad", help="x", defaults_from=sample_heun,
                options=(Option("rho", float, lo=0.1, hi=1.0),))
    with pytest.raises(TypeError, match="facade Heun is already sampler heun's"):
        declare("bad", lambda req: None, facade="Heun", help="x")
    assert "bad" not in scratch_registry and Option("x", float).default is SIGNATURE


def test_adding_a_sampler_is_one_function_and_its_declaration(scratch_registry, model, tmp_path):
    @sampler("shrink", facade="Shrink", help="x <- scale D(sigma_max z, sigma_max) (a toy)", options=(
        Option("scale", float, 0.5, lo=0.0, hi=1.0, help="how far to shrink"),
        Option("sigma_max", float, 10.0, lo=1e-3, hi=1e3, help="start level")))
    def shrink(req):
        z = torch.randn(req.batch, *req.model.shape, generator=torch.Generator().manual_seed(0))
        x = req.options["sigma_max"] * z
        return req.options["scale"] * req.model(x, torch.full((req.batch,), req.options["sigma_max"]))

    spec = get_sampler("shrink")
    assert spec.resolve() is shrink and [o.name for o in spec.options] == ["scale", "sigma_max"]
    cls = facade.sampler_class(spec)
    assert cls.__name__ == "Shrink" and "scale (float, in [0.0, 1.0], default 0.5)" in cls.__doc__
    out = cls(model, nfe=1, scale=0.25).sample(3)
    assert out.samples.shape == (3, *model.shape) and out.nfe.tolist() == [1, 1, 1]
    assert main(["sample", "--model", "gmm-digits", "--modes", "10", "--sampler", "shrink", "--nfe", "1", "--num", "2",
                 "--scale", "0.1", "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    with pytest.raises(ValueError, match=r"^shrink: option scale must be in \[0.0, 1.0\], got 2.0$"):
        cls(model, nfe=1, scale=2.0)


LINE = re.compile(r"^(?:[\w: ]+: )?[\w ()]+ must be .+, got .+$")


@pytest.mark.parametrize("call,message", [
    (lambda: validate.check_int("nfe", 0, 1, 100_000), "nfe must be an integer in [1, 100000], got 0"),
    (lambda: validate.check_int("n_den", 2.0, 1, sampler="dlg"), "dlg: n_den must be an integer in [1, inf], got 2.0"),
    (lambda: validate.check_int("chains", True, 1), "chains must be an integer in [1, inf], got True"),
    (lambda: validate.check_real("eta", float("nan"), 0.0, 1.0), "eta must be a number in [0.0, 1.0], got nan"),
    (lambda: validate.check_real("s_tmax", "1", 0.0), "s_tmax must be a number in [0.0, inf], got '1'"),
    (lambda: validate.check_positive("eps", [1.0, -2.0], "ald"), "ald: eps must be finite and > 0, got [1.0, -2.0]"),
    (lambda: validate.check_positive("sigma", torch.tensor([1.0, float("inf")])),
     "sigma must be finite and > 0, got a tensor of shape [2] with min 1, max inf"),
    (lambda: validate.check_choice("gibbs", "max", ("argmax", "sample")),
     "gibbs must be one of argmax, sample, got 'max'"),
    (lambda: get_sampler("heun").validate({"rho": float("inf")}), "heun: option rho must be in [0.1, 100.0], got inf"),
    (lambda: get_sampler("obabo").validate({"n_steps_each": 1.5}),
     "obabo: option n_steps_each must be an integer, in [1, 100000], got 1.5"),
    # the call sites that used their own checks
    (lambda: api.sample(lambda x, s: x, "heun", 0, 5), "num must be an integer in [1, inf], got 0"),
    (lambda: INTEGRATORS["heun"][1](0), "heun: nfe must be an integer in [1, inf], got 0"),
    (lambda: sample_heun(lambda x, s: x, torch.ones(2, 3), float("nan"), 4),
     "sigma_start must be finite and > 0, got nan"),
    (lambda: __import__("dmcmc_fast.models.base").models.base.as_sigma(-1.0, 1),
     "sigma must be finite and > 0, got -1.0"),
    (lambda: __import__("dmcmc_fast.mcmc").mcmc.sample_ald(lambda x, s: x, torch.ones(1, 2), 2, 0, sigma_max=1.0,
                                                           sigma_min=0.1, eps=1e-3),
     "n_steps_each must be an integer in [1, inf], got 0"),
])
def test_every_check_speaks_one_format(call, message):
    with pytest.raises(ValueError) as err:
        call()
    assert str(err.value) == message and LINE.match(message), str(err.value)


@pytest.mark.parametrize("argv", [
    ["--sampler", "obabo", "--nfe", "3"],  # not one annealing level (T + 1 NFE + the final step)
    ["--sampler", "deis", "--nfe", "3", "--warm-start", "runge_kutta"],  # the Runge-Kutta warm start costs more
    ["--sampler", "heun", "--nfe", "5", "--sigma-min", "2", "--sigma-max", "1"],
    ["--sampler", "dlg", "--nfe", "4", "--n-skip", "5", "--n-levels", "20"],
])
def test_a_bad_budget_or_range_fails_before_any_file(tmp_path, capsys, argv):
    out = tmp_path / "run"
    assert main(["sample", "--model", "gmm-digits", "--modes", "10", *argv, "--num", "2", "--out", str(out),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and argv[1] in err, err
    assert not out.exists()


def test_the_facade_checks_the_budget_when_built(model):
    with pytest.raises(ValueError, match="obabo: nfe must be at least 7"):
        dmcmc_fast.OBABO(model, nfe=6)


@pytest.mark.parametrize("name,opts", [("heun", {}),
                                       ("dlg", {"n_levels": 20, "init_nfe": 3, "n_init": 1, "n_skip": 2})])
def test_a_rank_without_work_finishes_cleanly(model, name, opts):
    """One sample under two ranks: rank 0 draws it, rank 1 has none and returns an empty output."""
    one = api.sample(model, name, 1, 8, seed=4, progress=False, **opts)
    r0 = api.sample(model, name, 1, 8, seed=4, progress=False, rank=0, world_size=2, **opts)
    r1 = api.sample(model, name, 1, 8, seed=4, progress=False, rank=1, world_size=2, **opts)
    torch.testing.assert_close(r0.samples, one.samples)
    assert r1.samples.shape[0] == 0 and r1.nfe.shape[0] == 0


def test_the_rng_counter_has_one_name_per_meaning():
    """`step0`: the counter of a call's first step (samplers, integrators, DLG's denoise); `step`: one draw's."""
    from dmcmc_fast.mcmc import dlg, langevin, underdamped
    from dmcmc_fast.kernels import langevin as k_langevin

    calls = [*(fn for fn, _ in INTEGRATORS.values()), langevin.sample_langevin, langevin.sample_ald,
             langevin.sample_mild, underdamped.sample_baoab_limit, underdamped.sample_obabo, dlg.denoise_block]
    for fn in calls:
        assert "step0" in inspect.signature(fn).parameters, fn.__name__
    for fn in (dlg.gibbs_step, dlg.langevin_gibbs_step, k_langevin.langevin_step, dmcmc_fast.rng.chain_randn):
        assert "step" in inspect.signature(fn).parameters, fn.__name__
    assert [f.name for f in dlg.Counters.__dataclass_fields__.values()][0] == "step0"
