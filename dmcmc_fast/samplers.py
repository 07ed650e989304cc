"""The sampler registry: every name `--sampler` accepts, its options (with ranges) and entry point.

A sampler is declared once, next to its entry, with `sampler(...)` (a decorator) or, for the integrators,
`integrators.entry.integrator(...)`:

    @sampler("mild", facade="MILD", help="momentum-imbued Langevin dynamics (MILD Alg. 1)", options=(
        Option("eps", float, 2e-5, lo=1e-12, hi=1e3, help="step: alpha_i = eps sigma_i^2 / sigma_L^2"), ...))
    def mild(req): ...

From that declaration come the registry (`SAMPLERS`, `get_sampler`), the CLI flags (`cli.py`), the façade
class (`dmcmc_fast.MILD`, `facade.py`) and `dmcmc_fast.__all__`. An option's default is written once: an
option that is a keyword of the function named by `defaults_from` takes that keyword's default (declare
it without one), and a declared default that differs from it fails at import.

An entry point is `fn(req: SampleRequest) -> torch.Tensor` (the final samples `[B, *shape]`). It
calls the model only through `req.model`, a `CountingDenoiser`, so the engine counts NFE at the
call site; it must spend at most `req.nfe` per sample (checked by `run_sampler`). Argument checks use
`dmcmc_fast.validate` (one error format).
"""
from __future__ import annotations

import dataclasses

import importlib
import inspect
import json
import math
import operator
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch

from dmcmc_fast.models.base import CountingDenoiser
from dmcmc_fast.validate import fail, in_range, is_int, is_real, range_text

_KIND = {int: "an integer", float: "a number", str: "a string"}


class _FromSignature:
    def __repr__(self):
        return "<the default of the function's keyword>"


SIGNATURE = _FromSignature()  # an Option's default taken from the `defaults_from` function's signature


@dataclass(frozen=True)
class Option:
    """One sampler option. A float must be finite (inf only where the range ends at inf, e.g. EDM's S_tmax)
    and within [lo, hi]; an int must be an integer (not a bool, not a float); a str one of `choices`.
    `default` omitted: the default of the keyword of the same name of the declaration's `defaults_from`.
    `keyword=False`: the option is not that keyword although it shares its name (e.g. DLG's n_den, where
    0 means nfe - n_skip), so it keeps its own default. `objects`: what Python objects it also takes (the
    command line gives strings only), passed on unconverted and checked where they are used (DLG's classifier)."""
    name: str
    type: type
    default: Any = SIGNATURE
    lo: float | None = None
    hi: float | None = None
    choices: tuple | None = None
    help: str = ""
    keyword: bool = True
    objects: str = ""

    def range_text(self) -> str:
        return range_text(self.lo, self.hi)

    def accepts(self) -> str:
        """What the option accepts, as its errors and its `--help` say it."""
        if self.choices is not None:
            return f"one of {', '.join(map(str, self.choices))}"
        return f"in {self.range_text()}" if self.type in (int, float) else _KIND.get(self.type, self.type.__name__)

    def validate(self, value, sampler: str = ""):
        """`value` converted to the option's type (None: the default); else a one-line ValueError naming the
        sampler, the option, what it accepts and the value (`validate.fail`)."""
        if value is None:
            return self.default
        if self.objects and not isinstance(value, (str, int, float, bool)):
            return value  # a Python object (e.g. a classifier): checked where it is used
        if not _is_a(value, self.type):
            kind, accepts = _KIND.get(self.type, self.type.__name__), self.accepts()
            fail(f"option {self.name}", kind if accepts == kind else f"{kind}, {accepts}", value, sampler)
        try:
            v = self.type(value)
        except OverflowError:  # an int too large for a float
            v = math.inf if value > 0 else -math.inf
        numeric = self.choices is None and self.type in (int, float)
        if (self.choices is not None and v not in self.choices) or (numeric and not in_range(v, self.lo, self.hi)):
            fail(f"option {self.name}", self.accepts(), value, sampler)  # the text is built only on failure
        return v


def _is_a(value, typ: type) -> bool:
    if typ is int:
        return is_int(value)
    if typ is float:
        return is_real(value)
    return isinstance(value, typ)


@dataclass(frozen=True)
class Check:
    """A rule over options, checked after each option alone; a sampler without all of `names` skips it, so
    shared rules are declared once (`COMMON_CHECKS`). `holds(*values)` says whether the rule holds, or
    raises ValueError with its own reason; either way the error names the sampler."""
    names: tuple[str, ...]
    rule: str  # what must hold, as the error says it
    holds: Callable[..., bool]

    def __call__(self, sampler: str, opts: dict):
        if not all(n in opts for n in self.names):
            return
        try:
            ok = self.holds(*(opts[n] for n in self.names))
        except ValueError as err:
            raise ValueError(f"{sampler}: {err}") from None
        if not ok:
            raise ValueError(f"{sampler}: {self.rule}, got {', '.join(f'{n}={opts[n]!r}' for n in self.names)}")


def less(a: str, b: str, or_equal: bool = False) -> Check:
    return Check((a, b), f"{a} must be {'<=' if or_equal else '<'} {b}", operator.le if or_equal else operator.lt)


SIGMA_ORDER = less("sigma_min", "sigma_max")
SIGMA_ORDER_ONE_LEVEL = less("sigma_min", "sigma_max", or_equal=True)  # annealed samplers: equal = one level
COMMON_CHECKS = (SIGMA_ORDER,)


def json_object(text: str, name: str) -> dict:
    """A string option holding a JSON object ('' = {}), e.g. DLG's integrator_options."""
    try:
        d = json.loads(text) if text else {}
    except json.JSONDecodeError as err:
        raise ValueError(f"option {name} must be a JSON object such as '{{\"rtol\": 1e-3}}': {err}") from None
    if not isinstance(d, dict):
        fail(f"option {name}", "a JSON object", text)
    return d


# The options that are a step size, by their papers' names: a diverging chain names them.
STEP_SIZES = ("eta", "eps")


@dataclass(frozen=True)
class SamplerSpec:
    """One registered sampler, made by its declaration (`declare`, `@sampler`; see the module docstring)."""
    name: str
    # The entry itself, or "module:attr" imported when first run: DLG's runner class lives in the engine,
    # which the samplers' modules must not import (the engine imports them).
    entry: Callable | str
    options: tuple[Option, ...] = ()
    help: str = ""
    checks: tuple[Check, ...] = COMMON_CHECKS
    # "batch": entry(req) -> the batch's samples, one per chain. "blocks": entry is a runner class
    # that yields several samples per chain (DLG: one per block; see engine/dlg_run.py).
    kind: str = "batch"
    # Inputs of `api.sample` beyond model_kwargs and callback (which every "batch" sampler takes) that this
    # sampler's entry uses: "x_T" (the start state, `SampleRequest.x_T`) and "sigmas" (a given grid,
    # `SampleRequest.sigmas`).
    takes: tuple[str, ...] = ()
    # sigma_min / sigma_max are the range the sampler integrates over: they default to the model's own
    # declared range, and a network's range bounds them (`api.resolve_options`).
    model_range: bool = False
    facade: str = ""  # its class in the Python façade: `dmcmc_fast.<facade>` (facade.py)
    # budget(nfe, options) raises a ValueError naming the sampler when `nfe` per sample cannot pay for the
    # options (e.g. one annealing level), so a run fails before any work or file; None: any nfe >= 1 does.
    budget: Callable[[int, dict], Any] | None = None
    # every batch takes the same steps whatever its values (no step control reading the state): a batch can be
    # captured whole as one CUDA graph (`engine.whole_run`). False for the adaptive solvers (rk45, dpm_adaptive).
    fixed_steps: bool = True

    def resolve(self) -> Callable:
        if not isinstance(self.entry, str):
            return self.entry
        mod, attr = self.entry.split(":")
        return getattr(importlib.import_module(mod), attr)

    def validate(self, given: dict) -> dict:
        """All options, given or default, each checked alone and then against each other (`checks`)."""
        known = {o.name: o for o in self.options}
        unknown = sorted(k for k, v in given.items() if v is not None and k not in known)
        if unknown:
            raise ValueError(f"sampler {self.name} does not take option(s) {', '.join(unknown)}; "
                             f"it takes: {', '.join(known) or 'none'}")
        opts = {k: o.validate(given.get(k), self.name) for k, o in known.items()}
        for check in self.checks:
            check(self.name, opts)
        return opts

    def check_budget(self, nfe: int, options: dict):
        """Raise the sampler's own ValueError when `nfe` cannot pay for the (validated) `options`."""
        if self.budget is not None:
            self.budget(nfe, options)

    def divergence_advice(self, options: dict, nfe: int) -> str:
        """What to change when a chain of this sampler diverged: its step size, else more steps."""
        steps = [f"{k} (got {options[k]:g})" for k in STEP_SIZES if k in options]
        advice = f"lower the step size {' or '.join(steps)}" if steps else \
            f"take more steps (a larger nfe, got {nfe})"
        changed = [f"{o.name}={options[o.name]!r}" for o in self.options
                   if o.name not in STEP_SIZES and o.name in options and options[o.name] != o.default]
        return advice + (f"; options changed from their defaults: {', '.join(changed)}" if changed else "")


@dataclass
class SampleRequest:
    model: CountingDenoiser
    chain_ids: torch.Tensor  # [B] int64, global sample/chain ids (the RNG stream of each row)
    seed: int
    nfe: int  # budget per sample
    options: dict
    device: torch.device
    callback: Callable | None = None
    extra: dict = field(default_factory=dict)
    x_T: torch.Tensor | None = None  # [B, *shape] the start state (at sigma_max, or at sigmas[:, 0]), if given
    sigmas: torch.Tensor | None = None  # [B, N] float64 the grid each row integrates on, if given (no trailing 0)

    @property
    def batch(self) -> int:
        return int(self.chain_ids.shape[0])


# The last step sigma_min -> 0, one name in every family (integrators and MCMC).
FINAL_TWEEDIE = Option("final_tweedie", int, 1, choices=(0, 1),
                       help="1: end with the Tweedie step x <- D(x, sigma) at the last noise level (1 NFE); "
                            "0: return the state at that level")

SAMPLERS: dict[str, SamplerSpec] = {}


def bind_defaults(options: tuple[Option, ...], fn: Callable | None, sampler: str) -> tuple[Option, ...]:
    """`options` with every default settled: an option that is a keyword of `fn` with a default takes that
    default (declared without one) or must declare the same; a TypeError (at import) otherwise."""
    params = inspect.signature(fn).parameters if fn is not None else {}
    where = getattr(fn, "__qualname__", repr(fn))
    out = []
    for o in options:
        p = params.get(o.name) if o.keyword else None
        own = p.default if p is not None and p.default is not inspect.Parameter.empty else SIGNATURE
        if own is not SIGNATURE and o.default is not SIGNATURE and o.default != own:
            raise TypeError(f"{sampler}: option {o.name} declares the default {o.default!r}, but {where} "
                            f"defaults it to {own!r}; write a default in one place (omit it from the Option)")
        if o.default is SIGNATURE:
            if own is SIGNATURE:
                raise TypeError(f"{sampler}: option {o.name} has no default: declare one, or take it from a "
                                f"keyword default of defaults_from ({where if fn is not None else 'not given'})")
            o = replace(o, default=o.type(own))
        o.validate(o.default, sampler)  # a default outside its own range is a declaration error
        out.append(o)
    return tuple(out)


def register(spec: SamplerSpec) -> SamplerSpec:
    """Add `spec` to the registry (a declaration's last step); its façade class name must be new."""
    if not spec.facade.isidentifier() or not spec.facade[0].isupper():
        raise TypeError(f"{spec.name}: facade must be a class name (CamelCase), got {spec.facade!r}")
    clash = [n for n, s in SAMPLERS.items() if s.facade == spec.facade and n != spec.name]
    if clash:
        raise TypeError(f"{spec.name}: facade {spec.facade} is already sampler {clash[0]}'s")
    SAMPLERS[spec.name] = spec
    return spec


def declare(name: str, entry: Callable | str, *, facade: str, help: str, options: tuple[Option, ...] = (),
            checks=COMMON_CHECKS, kind: str = "batch", takes: tuple[str, ...] = (), model_range: bool = False,
            defaults_from: Callable | None = None, budget: Callable | None = None,
            fixed_steps: bool = True) -> SamplerSpec:
    """Declare and register sampler `name` with its `entry` (a callable, or "module:attr" imported when first
    run). `facade`: its class name in `dmcmc_fast`; `options`: its `Option`s, defaults settled from
    `defaults_from`'s signature (`bind_defaults`); the other arguments are `SamplerSpec`'s fields."""
    return register(SamplerSpec(name, entry, bind_defaults(tuple(options), defaults_from, name), help,
                                tuple(checks), kind, tuple(takes), model_range, facade, budget, fixed_steps))


def sampler(name: str, **declaration):
    """`declare` as a decorator of the entry `fn(req) -> samples`: `@sampler("mild", facade="MILD", ...)`."""
    def decorate(fn):
        declare(name, fn, **declaration)
        return fn
    return decorate


# Each family declares its samplers in its own entry module (keeps families independent).
FAMILY_MODULES = ("dmcmc_fast.integrators.entry", "dmcmc_fast.mcmc.entry")


def all_samplers() -> dict[str, SamplerSpec]:
    for mod in FAMILY_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as err:
            if err.name != mod:
                raise
    return SAMPLERS


def get_sampler(name: str) -> SamplerSpec:
    spec = SAMPLERS.get(name)
    if spec is not None:  # registered already: no import
        return spec
    if name not in all_samplers():
        raise ValueError(f"unknown sampler {name!r}; available: {', '.join(sorted(SAMPLERS))}")
    return SAMPLERS[name]


def run_sampler(req: SampleRequest, spec: SamplerSpec, counting=None, replay: bool = False) -> torch.Tensor:
    """The request's samples by `spec`'s entry, then its deferred checks (one host read) and the NFE budget.
    `counting`, `replay` (as `models.base.run_located` calls it): the counter to run on instead of the request's,
    and whether this run replays one that failed (then without the user's callback)."""
    if counting is not None and counting is not req.model:
        req = dataclasses.replace(req, model=counting, callback=None if replay else req.callback)
    req.model.blame(spec.name, lambda: spec.divergence_advice(req.options, req.nfe))  # what a diverged chain names
    x = spec.resolve()(req)
    req.model.check_final(x)
    req.model.raise_if_nonfinite()
    spent = req.model.max_nfe()
    if spent > req.nfe:
        raise RuntimeError(f"sampler {spec.name} spent {spent} NFE per sample, over the budget --nfe {req.nfe}")
    return x
