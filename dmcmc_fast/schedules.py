"""Sigma grids: Karras rho schedule, geometric, VE-SDE time grid, and per-sample versions.

Shared-grid functions return a decreasing 1-D tensor of `n` sigmas (plus a trailing 0 with
`append_zero=True`). Per-sample functions take a `[B]` start sigma and return `[B, n(+1)]`: row `b`
runs from `sigma_start[b]` down to `sigma_min` (DLG denoises every chain from its own level).
Grids are float64 for the coefficients; samplers cast as they need.
"""
from __future__ import annotations

import math

import torch

from dmcmc_fast import caches


def _check_range(n: int, sigma_min, sigma_max, min_n: int = 1):
    if not isinstance(n, int) or n < min_n:
        raise ValueError(f"number of steps n must be an integer >= {min_n}, got {n!r}")
    smin = torch.as_tensor(sigma_min, dtype=torch.float64)
    smax = torch.as_tensor(sigma_max, dtype=torch.float64)
    if (smin <= 0).any() or not torch.isfinite(smax).all():
        raise ValueError(f"sigma_min must be > 0 and sigma_max finite, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    if (smax < smin).any():
        raise ValueError(f"sigma_max must be >= sigma_min, got sigma_max={sigma_max}, sigma_min={sigma_min}")
    return smin, smax


def append_zero(s: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.pad(s, (0, 1))  # one op (a cat with new zeros is two)


# Small read-only device tensors built once per (value or n, device) and shared by every grid: no op per grid
# inside DLG's loop. Kept here, not in an LRU, so a captured CUDA graph that reads them by address can hold
# them (`kept_tensors`); they are tiny and their keys few (the grids' option values and lengths).
_KEPT: dict = caches.process_cache("small tensors", "`schedules._KEPT`",
                                   "ramps and scalars of the grids per (value, device)", "never (tiny, few keys)")


def _kept(key, make) -> torch.Tensor:
    t = _KEPT.get(key)
    if t is None:
        t = _KEPT[key] = make()
    return t


def kept_tensors() -> list[torch.Tensor]:
    """Every tensor this module keeps (what a captured graph holds alive, `engine.whole_run`)."""
    return list(_KEPT.values())


def _scalar(value: float, device=None) -> torch.Tensor:
    """A 0-d float64 tensor of `value`, filled on the device (no host copy; read only: kept per (value, device))."""
    return _kept(("scalar", value, device), lambda: torch.full((), value, dtype=torch.float64, device=device))


def _ramp(n: int, device=None) -> torch.Tensor:
    """[n] float64 0 .. 1 (read only: kept per (n, device), so a per-sample grid inside DLG's loop makes none)."""
    return _kept(("ramp", n, device), lambda: torch.linspace(0, 1, n, dtype=torch.float64, device=device)
                 if n > 1 else torch.zeros(1, dtype=torch.float64, device=device))


def karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0, append_zero_: bool = True,
           device=None) -> torch.Tensor:
    """EDM eq. (5): sigma_i = (smax^(1/rho) + i/(n-1) (smin^(1/rho) - smax^(1/rho)))^rho."""
    smin, smax = _check_range(n, sigma_min, sigma_max)
    if rho <= 0:
        raise ValueError(f"rho must be > 0, got {rho}")
    r = _ramp(n, device)
    # torch.lerp is exact at both ends (r = 1 gives smin^(1/rho) even where smax^(1/rho) is 1e20 times larger,
    # rho < 1) and constant where the ends are equal
    s = torch.lerp(torch.full_like(r, smax ** (1 / rho)), torch.full_like(r, smin ** (1 / rho)), r) ** rho
    return append_zero(s) if append_zero_ else s


def geometric(n: int, sigma_min: float, sigma_max: float, append_zero_: bool = False, device=None) -> torch.Tensor:
    """sigma_i = smax (smin/smax)^(i/(n-1)): decreasing, log-uniform (NCSN, DLG's M levels)."""
    smin, smax = _check_range(n, sigma_min, sigma_max)
    r = _ramp(n, device)
    s = torch.exp(math.log(float(smax)) + r * (math.log(float(smin)) - math.log(float(smax))))
    return append_zero(s) if append_zero_ else s


def vesde_times(n: int, eps: float = 1e-5, device=None) -> torch.Tensor:
    """Song et al. 2021 VE-SDE time grid: t from 1 down to eps, n points."""
    if not (0 < eps < 1):
        raise ValueError(f"eps must be in (0, 1), got {eps}")
    _check_range(n, 1.0, 1.0)
    return torch.linspace(1.0, eps, n, dtype=torch.float64, device=device)


def vesde_sigma(t: torch.Tensor, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """sigma(t) = smin (smax/smin)^t."""
    return sigma_min * (sigma_max / sigma_min) ** t


def vesde(n: int, sigma_min: float, sigma_max: float, eps: float = 1e-5, append_zero_: bool = True,
          device=None) -> torch.Tensor:
    s = vesde_sigma(vesde_times(n, eps, device), sigma_min, sigma_max)
    return append_zero(s) if append_zero_ else s


def _start_row(sigma_start, n: int, sigma_min: float) -> torch.Tensor:
    """Checks of the Python arguments (on the host, free) and the start sigmas clamped to >= sigma_min.

    The values of a start tensor are not read back (a grid is built inside DLG's loop); a start that is
    not finite gives a non-finite grid, which the sampler's deferred check reports at the end of the run.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"number of steps n must be an integer >= 1, got {n!r}")
    if not (0 < sigma_min < math.inf):
        raise ValueError(f"sigma_min must be finite and > 0, got {sigma_min}")
    s0 = torch.as_tensor(sigma_start, dtype=torch.float64)
    if s0.ndim != 1:
        raise ValueError(f"sigma_start must be [B], got shape {tuple(s0.shape)}")
    return torch.clamp(s0, min=sigma_min)


def karras_per_sample(sigma_start: torch.Tensor, n: int, sigma_min: float, rho: float = 7.0,
                      append_zero_: bool = True) -> torch.Tensor:
    """`[B, n(+1)]`: row b is the Karras grid from sigma_start[b] down to sigma_min.

    A start at or below sigma_min gives a constant row (no movement until the final step to 0).
    """
    if not rho > 0:
        raise ValueError(f"rho must be > 0, got {rho}")
    s0 = _start_row(sigma_start, n, sigma_min)
    # as `karras`, row by row (lerp broadcasts its start column, its 0-d end and the ramp: the same values)
    s = torch.lerp((s0 ** (1 / rho))[:, None], _scalar(sigma_min ** (1 / rho), s0.device), _ramp(n, s0.device)) ** rho
    return append_zero(s) if append_zero_ else s


def geometric_per_sample(sigma_start: torch.Tensor, n: int, sigma_min: float, append_zero_: bool = True) -> torch.Tensor:
    """`[B, n(+1)]`: row b is geometric from sigma_start[b] down to sigma_min."""
    s0 = _start_row(sigma_start, n, sigma_min)
    r = _ramp(n, s0.device)[None, :]
    s = torch.exp(torch.log(s0)[:, None] + r * (math.log(sigma_min) - torch.log(s0)[:, None]))
    return append_zero(s) if append_zero_ else s


SCHEDULES = {"karras": karras, "geometric": geometric, "vesde": vesde}
