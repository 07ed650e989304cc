"""The sampler registry: every name `--sampler` accepts, its options (with ranges) and entry point.

An entry point is `fn(req: SampleRequest) -> torch.Tensor` (the final samples `[B, *shape]`). It
calls the model only through `req.model`, a `CountingDenoiser`, so the engine counts NFE at the
call site; it must spend at most `req.nfe` per sample (checked by `run_sampler`). Families add
their samplers here by name; the CLI builds its flags from these specs.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from dmcmc_fast.models.base import CountingDenoiser


@dataclass(frozen=True)
class Option:
    name: str
    type: type
    default: Any
    lo: float | None = None
    hi: float | None = None
    choices: tuple | None = None
    help: str = ""

    def validate(self, value):
        if value is None:
            return self.default
        try:
            v = self.type(value)
        except (TypeError, ValueError):
            raise ValueError(f"option {self.name} must be of type {self.type.__name__}, got {value!r}") from None
        if self.choices is not None and v not in self.choices:
            raise ValueError(f"option {self.name} must be one of {', '.join(map(str, self.choices))}, got {v!r}")
        if (self.lo is not None and v < self.lo) or (self.hi is not None and v > self.hi):
            rng = f"[{self.lo if self.lo is not None else '-inf'}, {self.hi if self.hi is not None else 'inf'}]"
            raise ValueError(f"option {self.name} must be in {rng}, got {v}")
        return v


@dataclass(frozen=True)
class SamplerSpec:
    name: str
    target: str  # "module:function"
    options: tuple[Option, ...] = ()
    help: str = ""

    def resolve(self) -> Callable:
        mod, fn = self.target.split(":")
        return getattr(importlib.import_module(mod), fn)

    def validate(self, given: dict) -> dict:
        known = {o.name: o for o in self.options}
        unknown = sorted(k for k, v in given.items() if v is not None and k not in known)
        if unknown:
            raise ValueError(f"sampler {self.name} does not take option(s) {', '.join(unknown)}; "
                             f"it takes: {', '.join(known) or 'none'}")
        return {k: o.validate(given.get(k)) for k, o in known.items()}


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

    @property
    def batch(self) -> int:
        return int(self.chain_ids.shape[0])


# Options shared by the integrators: the grid from the prior to sigma_min.
SIGMA_OPTIONS = (
    Option("sigma_max", float, 80.0, lo=1e-6, hi=1e6, help="start noise level of the prior N(0, sigma_max^2 I)"),
    Option("sigma_min", float, 0.002, lo=1e-6, hi=1e3, help="last nonzero noise level"),
    Option("rho", float, 7.0, lo=0.1, hi=100.0, help="Karras schedule exponent (EDM eq. 5)"),
)

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
    x = spec.resolve()(req)
    req.model.raise_if_nonfinite()
    spent = int(req.model.nfe.max())
    if spent > req.nfe:
        raise RuntimeError(f"sampler {spec.name} spent {spent} NFE per sample, over the budget --nfe {req.nfe}")
    return x
