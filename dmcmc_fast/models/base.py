"""The one model interface: a VE denoiser `D(x, sigma) -> E[x0 | x]` with per-sample sigma.

`x = x0 + sigma * z`, `x` of shape `[B, *shape]`, `sigma` of shape `[B]`; the score is
`s(x, sigma) = (D(x, sigma) - x) / sigma**2` (Tweedie). Every sampler calls models only through this
shape, and only through `check_call`-validated inputs at the public entry points.
"""
from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Denoiser(Protocol):
    """What a sampler needs of a model.

    Attributes: `shape` (per-sample data shape, e.g. `(1, 28, 28)`), `sigma_min`, `sigma_max` (the
    noise range the model is meant for), `data_range` (`(lo, hi)` of clean data).
    """

    shape: tuple[int, ...]
    sigma_min: float
    sigma_max: float
    data_range: tuple[float, float]

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor: ...


def as_sigma(sigma, batch: int, device=None, dtype=torch.float32, name: str = "sigma") -> torch.Tensor:
    """A scalar or `[B]` sigma -> a `[B]` tensor, checked finite and > 0."""
    s = torch.as_tensor(sigma, dtype=dtype, device=device)
    if s.ndim == 0:
        s = s.expand(batch)
    if s.ndim != 1 or s.shape[0] != batch:
        raise ValueError(f"{name} must be a scalar or of shape [{batch}] (one per sample), got shape {tuple(s.shape)}")
    if not torch.isfinite(s).all() or (s <= 0).any():
        raise ValueError(f"{name} must be finite and > 0, got min {s.min().item():.4g}")
    return s.contiguous()


def check_call(model: Denoiser, x: torch.Tensor, sigma) -> torch.Tensor:
    """Validate `x` against the model's shape and return sigma as `[B]`."""
    if not torch.is_tensor(x):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    shape = tuple(getattr(model, "shape", x.shape[1:]))
    if tuple(x.shape[1:]) != shape:
        raise ValueError(f"x must have shape [B, {', '.join(map(str, shape))}], got {tuple(x.shape)}")
    return as_sigma(sigma, x.shape[0], device=x.device, dtype=x.dtype if x.is_floating_point() else torch.float32)


def bcast(sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """`[B]` -> `[B, 1, ..., 1]` so it broadcasts against `x`."""
    return sigma.reshape(-1, *([1] * (x.ndim - 1)))


def score_from_denoiser(model: Denoiser, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Tweedie: s(x, sigma) = (D(x, sigma) - x) / sigma^2."""
    s = bcast(sigma, x)
    return (model(x, sigma) - x) / (s * s)


class NonFiniteModelOutput(FloatingPointError):
    pass


class CountingDenoiser:
    """Wraps a denoiser and counts evaluations per sample (NFE) at the call site.

    `nfe` is a `[B]` int64 tensor; a call on a subset passes `idx` (the rows of the full batch it
    holds) so only those samples are charged. Also rejects NaN/Inf model outputs with a clear error:
    at once on the CPU; on CUDA the check is kept on the device (no host sync per call, so the loop
    stays graph-capturable) and raised by `raise_if_nonfinite()`, which `run_sampler` calls at the end.
    """

    def __init__(self, model: Denoiser, batch: int, device=None, check_finite: bool = True):
        self.model = model
        self.nfe = torch.zeros(batch, dtype=torch.int64, device=device)
        self.calls = 0
        self.check_finite = check_finite
        self._nonfinite = None  # device flag (CUDA): any non-finite output so far
        self._nonfinite_sigma = None
        for attr in ("shape", "sigma_min", "sigma_max", "data_range"):
            if hasattr(model, attr):
                setattr(self, attr, getattr(model, attr))

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        out = self.model(x, sigma)
        if idx is None:
            if x.shape[0] != self.nfe.shape[0]:
                raise ValueError(f"CountingDenoiser: batch {x.shape[0]} != {self.nfe.shape[0]}; pass idx for a subset")
            self.nfe += 1
        else:
            self.nfe[idx] += 1
        self.calls += 1
        if self.check_finite:
            if out.is_cuda:
                bad = ~torch.isfinite(out).all()
                self._nonfinite = bad if self._nonfinite is None else self._nonfinite | bad
            elif not torch.isfinite(out).all():
                raise NonFiniteModelOutput(
                    f"model returned NaN/Inf at sigma in [{sigma.min().item():.4g}, {sigma.max().item():.4g}]")
        return out

    def raise_if_nonfinite(self):
        """Raise if any output so far was NaN/Inf (the deferred CUDA check; a no-op on the CPU)."""
        if self._nonfinite is not None and bool(self._nonfinite):
            raise NonFiniteModelOutput("model returned NaN/Inf during sampling (checked on the device)")


def flat_dim(shape) -> int:
    return math.prod(shape)
