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


def network_tensors(model) -> list[torch.Tensor]:
    """The weights a network denoiser computes with: the parameters and buffers of the model if it is an
    `nn.Module`, else of the `nn.Module`s an adapter holds as attributes; [] for an analytic model."""
    modules = [model] if isinstance(model, torch.nn.Module) else \
        [v for v in getattr(model, "__dict__", {}).values() if isinstance(v, torch.nn.Module)]
    return [t for m in modules for t in (*m.parameters(), *m.buffers())]


def model_device(model) -> torch.device | None:
    """Where a network denoiser's weights live; None for a model without weights (analytic models run anywhere)."""
    weights = network_tensors(model)
    return weights[0].device if weights else None


def same_device(a, b) -> bool:
    """torch devices equal, with "cuda" meaning the current CUDA device."""
    a, b = torch.device(a), torch.device(b)
    if a.type != b.type:
        return False
    if a.type == "cuda" and (a.index is None or b.index is None):
        current = torch.cuda.current_device()
        return (a.index if a.index is not None else current) == (b.index if b.index is not None else current)
    return a.index == b.index


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
    holds) so only those samples are charged. NaN/Inf outputs are caught on the device, on every
    device alike: each call adds a flag and its sigma range to a deferred check (no host sync per call,
    so the loop stays graph-capturable), and `raise_if_nonfinite()` — called once at the end of a run
    by `run_sampler`, or by an integrator that made its own counter — raises `NonFiniteModelOutput`
    naming the sigma range of the first bad call. Samplers add their own deferred input checks with
    `defer_check`.
    """

    FOLD_EVERY = 256  # pending per-call flags folded into one running result (bounded memory)

    def __init__(self, model: Denoiser, batch: int, device=None, check_finite: bool = True):
        self.model = model
        self.nfe = torch.zeros(batch, dtype=torch.int64, device=device)
        self.calls = 0
        self.check_finite = check_finite
        self.standalone = False  # made by ensure_counting inside a sampler call: that call raises at its end
        self._pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (bad, sigma lo, hi) per call
        self._first_bad: torch.Tensor | None = None  # [3] float64: (seen, sigma lo, sigma hi) of the first bad call
        self._checks: list[tuple[torch.Tensor, str]] = []
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
        if self.check_finite and sigma.numel():
            lo, hi = torch.aminmax(sigma)
            self._pending.append((torch.isfinite(out).all().logical_not(), lo, hi))
            if len(self._pending) >= self.FOLD_EVERY:
                self._fold()
        return out

    def _fold(self):
        """Reduce the pending per-call flags to (seen, lo, hi) of the first bad call, on the device."""
        bad, lo, hi = (torch.stack(v).to(torch.float64) for v in zip(*self._pending))
        self._pending.clear()
        i = bad.argmax().reshape(1)  # the first bad call of this stretch (0 when none); a tensor index: no sync
        new = torch.cat([bad.max().reshape(1), lo.index_select(0, i), hi.index_select(0, i)])
        self._first_bad = new if self._first_bad is None else \
            torch.where(self._first_bad[0] > 0, self._first_bad, new)

    def end_call(self):
        """End of a sampler call: a counter that call made itself (`standalone`) raises its deferred checks
        now (one host sync); a caller's counter leaves them to the caller (`run_sampler`, DLG)."""
        if self.standalone:
            self.raise_if_nonfinite()

    def defer_check(self, bad: torch.Tensor, message: str):
        """Raise `ValueError(message)` at the end of the run if the 0-d device flag `bad` is true."""
        self._checks.append((bad, message))

    def raise_if_nonfinite(self):
        """Raise for the deferred checks and for any NaN/Inf output so far (one host sync)."""
        if self._pending:
            self._fold()
        checks, self._checks = self._checks, []
        flags = [b for b, _ in checks] + ([self._first_bad[0] > 0] if self._first_bad is not None else [])
        if not flags:
            return
        values = torch.stack(flags).tolist()  # the one read back to the host
        for (_, message), failed in zip(checks, values):
            if failed:
                raise ValueError(message)
        if values[-1] and self._first_bad is not None:
            lo, hi = self._first_bad[1:].tolist()
            raise NonFiniteModelOutput(f"model returned NaN/Inf, first at sigma in [{lo:.4g}, {hi:.4g}] "
                                       "(checked on the device, raised at the end of the run)")


def flat_dim(shape) -> int:
    return math.prod(shape)
