"""The sampler registry: every name `--sampler` accepts, its options (with ranges) and entry point.

An entry point is `fn(req: SampleRequest) -> torch.Tensor` (the final samples `[B, *shape]`). It
calls the model only through `req.model`, a `CountingDenoiser`, so the engine counts NFE at the
call site; it must spend at most `req.nfe` per sample (checked by `run_sampler`). Families add
their samplers here by name; the CLI builds its flags from these specs.
"""
from __future__ import annotations

import importlib
import json
import math
import numbers
import operator
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from dmcmc_fast.models.base import CountingDenoiser

_KIND = {int: "an integer", float: "a number", str: "a string"}


@dataclass(frozen=True)
class Option:
    """One sampler option. A float must be finite (inf only where the range ends at inf, e.g. EDM's S_tmax)
    and within [lo, hi]; an int must be an integer (not a bool, not a float); a str one of `choices`."""
    name: str
    type: type
    default: Any
    lo: float | None = None
    hi: float | None = None
    choices: tuple | None = None
    help: str = ""

    def range_text(self) -> str:
        return f"[{self.lo if self.lo is not None else '-inf'}, {self.hi if self.hi is not None else 'inf'}]"

    def validate(self, value, sampler: str = ""):
        """`value` converted to the option's type (None: the default); else a one-line ValueError naming the
        sampler, the option, what it accepts and the value."""
        if value is None:
            return self.default
        who = f"{sampler}: option {self.name}" if sampler else f"option {self.name}"
        kind = _KIND.get(self.type, self.type.__name__)
        numeric = self.choices is None and self.type in (int, float)
        if self.choices is not None:
            accepts = f"one of {', '.join(map(str, self.choices))}"
        else:
            accepts = f"in {self.range_text()}" if numeric else kind
        if not _is_a(value, self.type):
            typed = kind if accepts == kind else f"{kind}, {accepts}"
            raise ValueError(f"{who} must be {typed}, got {_show(value)}")
        try:
            v = self.type(value)
        except OverflowError:  # an int too large for a float
            v = math.inf if value > 0 else -math.inf
        if (self.choices is not None and v not in self.choices) or (numeric and not self._in_range(v)):
            raise ValueError(f"{who} must be {accepts}, got {_show(value)}")
        return v

    def _in_range(self, v) -> bool:
        if math.isnan(v) or (math.isinf(v) and v not in (self.lo, self.hi)):
            return False  # inf only where the range ends there
        return (self.lo is None or v >= self.lo) and (self.hi is None or v <= self.hi)


def _is_a(value, typ: type) -> bool:
    if typ is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if typ is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    return isinstance(value, typ)


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


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
        raise ValueError(f"option {name} must be a JSON object, got {_show(text)}")
    return d


# The options that are a step size, by their papers' names: a diverging chain names them.
STEP_SIZES = ("eta", "eps")


@dataclass(frozen=True)
class SamplerSpec:
    name: str
    target: str  # "module:function"
    options: tuple[Option, ...] = ()
    help: str = ""
    checks: tuple[Check, ...] = COMMON_CHECKS
    # "batch": target(req) -> the batch's samples, one per chain. "blocks": target is a runner class
    # that yields several samples per chain (DLG: one per block; see engine/dlg_run.py).
    kind: str = "batch"
    # Inputs of `api.sample` beyond model_kwargs and callback (which every "batch" sampler takes) that this
    # sampler's entry uses: "x_T" (the start state, `SampleRequest.x_T`) and "sigmas" (a given grid,
    # `SampleRequest.sigmas`).
    takes: tuple[str, ...] = ()
    # sigma_min / sigma_max are the range the sampler integrates over: they default to the model's own
    # declared range, and a network's range bounds them (`api.resolve_options`).
    model_range: bool = False

    def resolve(self) -> Callable:
        mod, fn = self.target.split(":")
        return getattr(importlib.import_module(mod), fn)

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


# Options shared by the integrators: the grid from the prior to sigma_min.
SIGMA_OPTIONS = (
    Option("sigma_max", float, 80.0, lo=1e-6, hi=1e6, help="start noise level of the prior N(0, sigma_max^2 I)"),
    Option("sigma_min", float, 0.002, lo=1e-6, hi=1e3, help="last nonzero noise level"),
    Option("rho", float, 7.0, lo=0.1, hi=100.0, help="Karras schedule exponent (EDM eq. 5)"),
)

# The last step sigma_min -> 0, one name in every family (integrators and MCMC).
FINAL_TWEEDIE = Option("final_tweedie", int, 1, choices=(0, 1),
                       help="1: end with the Tweedie step x <- D(x, sigma) at the last noise level (1 NFE); "
                            "0: return the state at that level")

SAMPLERS: dict[str, SamplerSpec] = {}


def register(spec: SamplerSpec):
    SAMPLERS[spec.name] = spec
    return spec


# Each family registers its samplers in its own `register` module (keeps families independent).
FAMILY_MODULES = ("dmcmc_fast.integrators.register", "dmcmc_fast.mcmc.register")


def all_samplers() -> dict[str, SamplerSpec]:
    for mod in FAMILY_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as err:
            if err.name != mod:
                raise
    return SAMPLERS


def get_sampler(name: str) -> SamplerSpec:
    if name not in all_samplers():
        raise ValueError(f"unknown sampler {name!r}; available: {', '.join(sorted(SAMPLERS))}")
    return SAMPLERS[name]


def run_sampler(req: SampleRequest, spec: SamplerSpec) -> torch.Tensor:
    req.model.blame(spec.name, spec.divergence_advice(req.options, req.nfe))  # a diverged chain names these
    x = spec.resolve()(req)
    req.model.check_final(x)
    req.model.raise_if_nonfinite()
    spent = int(req.model.nfe.max())
    if spent > req.nfe:
        raise RuntimeError(f"sampler {spec.name} spent {spent} NFE per sample, over the budget --nfe {req.nfe}")
    return x
