"""Reverse S/ODE integrators from a per-sample start sigma to 0 (see `common.py` for the call shape)."""
from dmcmc_fast.integrators.common import IntegratorResult
from dmcmc_fast.integrators.karras import sample_heun

__all__ = ["IntegratorResult", "sample_heun"]
