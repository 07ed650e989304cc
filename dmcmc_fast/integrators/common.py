"""Shared pieces of the reverse S/ODE integrators (k-diffusion-style tiny helpers).

Every integrator has one call shape:

    sample_X(model, x, sigma_start, n_steps, *, sigma_min=0.002, seed=0, chain_ids=None, step0=0,
             callback=None, final_tweedie=True, **options_named_as_in_the_paper) -> IntegratorResult

- `model` is a denoiser, wrapped in a `CountingDenoiser` if it is not one already (`counted_call`), so NFE
  is counted where the model is called; `IntegratorResult.nfe` is the per-sample NFE this call spent.
  NaN/Inf is caught in the result, and a bad result replays the call with per-call checks to name the
  first bad sigma (`CountingDenoiser`, `run_located`).
- `x` is the state at `sigma_start` (a scalar or `[B]`: one start per sample; the grid integrators also
  take a `[B, N]` grid there, `per_sample_grid`). Sample b is integrated
  on its own grid sigma_0 = sigma_start[b] > ... > sigma_{N-1} = sigma_min (N = `n_steps` grid points,
  EDM's N; a start at or below sigma_min gives a constant grid, i.e. no movement), and then
- the final step sigma_min -> 0, taken iff `final_tweedie`: the Tweedie denoise x <- D(x, sigma_min)
  (one NFE; for the ODE it *is* the Euler step to 0). With `final_tweedie=False` the result is the
  state at sigma_min.
- Stochastic integrators draw the noise of their step i from `rng.chain_randn(seed, chain_ids,
  step0 + i, ...)`, so a sample's result depends only on (seed, chain id, step0), never on its batch.
  A caller that integrates the same chain more than once (DLG) passes a fresh `step0` each time.
  Deterministic integrators accept and ignore `seed`, `chain_ids`, `step0`.
- `callback(dict(i, n, x, sigma, sigma_next, denoised))` after every step.
- Each integrator's loop is also a function of an explicit per-sample grid (`*_on_grid`, beside it), which
  the sample_X above builds from (sigma_start, n_steps) and `dmcmc_fast.k` takes from the user; its noise
  comes from a `StepNoise` (the per-chain stream above, or a k-diffusion `noise_sampler`).
- `steps_for_nfe(nfe, final_tweedie=True)` beside each integrator: the largest `n_steps` whose cost
  fits `nfe` model evaluations per sample.
"""
from __future__ import annotations

import functools
import numbers
from dataclasses import dataclass
from typing import Callable

import torch

from dmcmc_fast import caches, rng
from dmcmc_fast.kernels import noise  # per-chain normals: one launch on CUDA, rng.chain_randn on the CPU
from dmcmc_fast.kernels._args import in_dtype
from dmcmc_fast.kernels.deis import deis_combine_triton
from dmcmc_fast.models.base import CountingDenoiser, bcast, run_located
from dmcmc_fast.validate import check_int, check_positive


class IntegratorResult:
    """An integrator call's samples `x` and `nfe`, the `[B]` int64 evaluations it spent per sample (given, or a
    function giving them: counted when first read, so a caller that needs only `x`, DLG's blocks, pays no op)."""

    def __init__(self, x: torch.Tensor, nfe):
        self.x, self._nfe = x, nfe

    @property
    def nfe(self) -> torch.Tensor:
        if callable(self._nfe):
            self._nfe = self._nfe()
        return self._nfe


def counted_call(integrator):
    """An integrator's entry, run with grad off (without entering `torch.no_grad` when grad is already off: a loop
    that turned it off, DLG's block after block, pays nothing per call). A `CountingDenoiser` passed in is used as
    it is (its owner checks). A plain `model` runs on its own counter that only counts (no per-call checks: the
    result is checked once); a NaN/Inf result replays the call, without its callback, on a checking counter, which
    raises the error naming the first bad call."""
    @functools.wraps(integrator)
    def call(model, x, *args, **kw):
        if isinstance(model, CountingDenoiser):
            if not torch.is_grad_enabled():
                return integrator(model, x, *args, **kw)
            with torch.no_grad():
                return integrator(model, x, *args, **kw)

        def run(counting, replay: bool):
            counting.standalone = True  # this call checks and raises at its end (`finish`)
            with torch.no_grad():
                return integrator(counting, x, *args, **(dict(kw, callback=None) if replay else kw))
        return run_located(run, CountingDenoiser(model, x.shape[0], x.device, per_call_checks=False))
    return call


def ensure_counting(model, batch: int, device) -> CountingDenoiser:
    """The caller's `CountingDenoiser`, or a new one owned by this sampler call (`standalone`): then
    `finish` raises its deferred checks at the end of the call."""
    if isinstance(model, CountingDenoiser):
        return model
    counting = CountingDenoiser(model, batch, device)
    counting.standalone = True
    return counting


def finish(model: CountingDenoiser, x: torch.Tensor, mark) -> IntegratorResult:
    """The call's result, after `model.end_call(x)` (a counter this call made checks `x` and raises its
    deferred checks); `mark`: `model.mark()` at the call's start."""
    model.end_call(x)
    return IntegratorResult(x, model.spent(mark, lazy=True))


def to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """dx/dsigma of the VE probability-flow ODE: (x - D(x, sigma)) / sigma (EDM eq. 3 with sigma(t)=t)."""
    return (x - denoised) / bcast(in_dtype(sigma, x.dtype), x)


def fused(kernel: Callable):
    """Decorator: `kernel` is the fused (Triton) form of the decorated math step, same arguments, same result
    (`plans.implementations` runs one or the other)."""
    def mark(math_step: Callable) -> Callable:
        math_step.fused = kernel
        return math_step
    return mark


def _exponential_update_fused(x, u, w):
    return deis_combine_triton(x, u[0][None] if len(u) == 1 else torch.stack(list(u)), w.psi, w.fused_c)


@fused(_exponential_update_fused)
def exponential_update(x, u, w):
    """x' = psi x + sum_j c_j u_j: the update of an exponential integrator in data prediction on the VE ODE (the
    linear part solved exactly, psi = sigma'/sigma (e^{-eta h} for the SDE); u_j the model's predictions x0, or
    DEIS's eps), with `w` the step's `plans.Weights`; in that order of operations (the fused kernel's reference,
    `kernels.deis.deis_combine`)."""
    out = w.psi * x
    for c, u_j in zip(w.c, u):
        out = out + c * u_j
    return out


def tweedie(model, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Final denoising step x + sigma^2 s(x, sigma) = D(x, sigma) (one NFE)."""
    return model(x, sigma.to(x.dtype))


def check_steps(n_steps: int, name: str = "n_steps", lo: int = 1):
    check_int(name, n_steps, lo)


def check_nfe(nfe: int, sampler: str, lo: int = 1):
    check_int("nfe", nfe, lo, sampler=sampler)


def start_sigma(sigma_start, x: torch.Tensor, model: CountingDenoiser) -> torch.Tensor:
    """`[B]` float64 start sigmas on x's device. A number is checked here, on the host; a tensor's values
    are checked on the device and reported at the end of the run (`model.defer_check`), so a start that
    comes from inside a sampler's loop (DLG's blocks) costs no host sync."""
    b = x.shape[0]
    if isinstance(sigma_start, numbers.Real):
        check_positive("sigma_start", sigma_start)
        return torch.full((b,), float(sigma_start), dtype=torch.float64, device=x.device)
    s = torch.as_tensor(sigma_start).to(x.device, torch.float64)
    if s.ndim == 0:
        s = s.expand(b)
    if s.shape != (b,):
        raise ValueError(f"sigma_start must be a scalar or of shape [{b}] (one per sample), got shape {tuple(s.shape)}")
    model.defer_positive(s, "sigma_start must be finite and > 0")
    return s.contiguous()


def per_sample_grid(schedule, sigma_start, x: torch.Tensor, n_steps: int, sigma_min: float,
                    model: CountingDenoiser, **kw) -> torch.Tensor:
    """`[B, N+1]` float64 rows sigma_start[b] .. sigma_min, 0 from a per-sample schedule of
    `dmcmc_fast.schedules` (starts at or below sigma_min give constant rows).

    A 2-D `sigma_start` `[B, N]` is the grid itself (the user's `sigmas` of `api.sample`, N = `n_steps`
    points, decreasing and > 0, the 0 appended here): `schedule`, `sigma_min` and its options are then
    unused. Its values are checked on the device and reported at the end of the run (`explicit_grid`)."""
    if torch.is_tensor(sigma_start) and sigma_start.ndim == 2:
        return explicit_grid(sigma_start, x, n_steps, model)
    check_steps(n_steps)
    if not (sigma_min > 0):
        raise ValueError(f"sigma_min must be > 0, got {sigma_min}")
    if not isinstance(sigma_start, numbers.Real):
        return schedule(start_sigma(sigma_start, x, model), n_steps, sigma_min, **kw)
    # one start for every sample: one row, built once per (schedule, numbers, device) and shared read-only
    key = ("grid", schedule, float(sigma_start), n_steps, float(sigma_min), tuple(kw.items()), x.device)
    return shared_rows(key, lambda: schedule(start_sigma(sigma_start, x.new_empty(1), model), n_steps, sigma_min,
                                             **kw), x.shape[0])


SHARED_CAPACITY = 128
_SHARED: dict = caches.process_cache(  # shared_rows' tables and their expansions per batch, oldest first
    "shared tables", "`integrators.common._SHARED`", "per-grid tables (grids, coefficients) every sample shares "
    "and their expansions per batch; on each, what loops derive from it (`derived`)",
    "nothing needed: read-only, a pure function of their host key", capacity=SHARED_CAPACITY)


def shared_rows(key, compute: Callable, batch: int):
    """Per-sample tables (tensors [B, ...]: a grid, its coefficients) that every sample shares: `compute()` on
    one row, built once per `key` (the host numbers that made it) and expanded to `batch` rows (read-only
    views, the same objects for the same batch, so what a loop derives from them is kept too: `derived`);
    `key` None: per-sample rows, `compute()` as is."""
    if key is None:
        return compute()
    out = _SHARED.get(("expanded", key, batch))
    if out is not None:
        return out
    rows = _SHARED.get(key)
    if rows is None:
        rows = _SHARED[key] = compute()
    if torch.is_tensor(rows):
        out = rows.expand(batch, *rows.shape[1:])
        out._derived = {}
    else:
        out = tuple(r.expand(batch, *r.shape[1:]) for r in rows)
        for r in out:
            r._derived = {}
    caches.keep(_SHARED, ("expanded", key, batch), out, SHARED_CAPACITY)
    return out


def derived(table: torch.Tensor, key, compute: Callable):
    """`compute()`: what a loop derives from `table` alone (with `key`'s host numbers; `key` may be a function
    giving them), kept on the table when it is a shared one (`shared_rows`, read-only, built once; or itself
    derived from one): a loop on the same grid then sets up once, not once per call. Any other tensor (a
    caller's own grid, DLG's per-block grids) gets `compute()` every time, no key made."""
    memo = getattr(table, "_derived", None)
    if memo is None:
        return compute()
    key = key() if callable(key) else key
    out = memo.get(key)
    if out is None:
        out = memo[key] = compute()
        if torch.is_tensor(out):  # a table derived from a shared one is shared too (e.g. KAR2's churn per step)
            out._derived = {}
    return out


def explicit_grid(sigmas: torch.Tensor, x: torch.Tensor, n_steps: int, model: CountingDenoiser) -> torch.Tensor:
    """A given `[B, N]` grid as `[B, N+1]` float64 on x's device with the trailing 0; its values (finite,
    > 0, strictly decreasing along each row) are a deferred device check, not a host read."""
    check_steps(n_steps)
    g = sigmas.to(x.device, torch.float64)
    if g.shape != (x.shape[0], n_steps):
        raise ValueError(f"an explicit grid must be [B={x.shape[0]}, n_steps={n_steps}], got shape {tuple(g.shape)}")
    message = "sigmas must be finite, > 0 and strictly decreasing along each row"
    model.defer_positive(g, message)
    if n_steps > 1:
        model.defer_check((g[:, 1:] >= g[:, :-1]).any(), message)
    return torch.cat([g, g.new_zeros(g.shape[0], 1)], dim=1)


def n_loop(n_steps: int, final_tweedie: bool) -> int:
    """Steps taken between grid points: N - 1 to reach sigma_min, plus the step to 0 if requested."""
    return n_steps if final_tweedie else n_steps - 1


def step_noise(x: torch.Tensor, seed: int, chain_ids, step, stream: int) -> torch.Tensor:
    """Per-chain standard normals shaped like x (chain_ids None = 0..B-1), in x's dtype."""
    ids = rng.default_chain_ids(x.shape[0], x.device) if chain_ids is None else chain_ids
    return noise.chain_randn(seed, ids, step, tuple(x.shape[1:]), stream=stream, device=x.device, dtype=x.dtype)


@dataclass(frozen=True)
class StepNoise:
    """Where a stochastic integrator's standard normals come from.

    By default the chain's own stream: the draw of step i in `stream` is chain_randn(seed, chain_ids,
    step0 + i, stream) (`step_noise`), the same numbers the fused kernels draw. With `sampler` (k-diffusion's
    `noise_sampler(sigma, sigma_next)` protocol) the draw is `sampler(sigma, sigma_next)`, given the step's
    per-sample `[B]` float64 sigmas; such a sampler is assumed to give Brownian increments over
    [sigma_next, sigma] (k-diffusion's `BrownianTreeNoiseSampler`), so a sampler needing two correlated
    draws per step asks for the second one over its own interval (see `dpm_solver.dpmpp_sde_on_grid`).
    """
    seed: int = 0
    chain_ids: torch.Tensor | None = None
    step0: int | torch.Tensor = 0
    sampler: Callable | None = None

    def __call__(self, x: torch.Tensor, i: int, stream: int, sigma: torch.Tensor, sigma_next: torch.Tensor):
        """Standard normals shaped like x, in x's dtype, for step i."""
        if self.sampler is None:
            return step_noise(x, self.seed, self.chain_ids, self.step0 + i, stream)
        z = self.sampler(sigma, sigma_next)
        if tuple(z.shape) != tuple(x.shape):
            raise ValueError(f"noise_sampler returned shape {tuple(z.shape)}; it must return x's shape "
                             f"{tuple(x.shape)}")
        return z.to(x.dtype)


NO_NOISE = StepNoise()  # the default (per-chain streams, seed 0): one shared frozen object, none made per call


def ancestral_step(s_from: torch.Tensor, s_to: torch.Tensor, eta: float):
    """(sigma_down, sigma_up) of an ancestral step sigma_from -> sigma_to: sigma_up = min(sigma_to, eta sigma_to
    sqrt(1 - sigma_to^2 / sigma_from^2)), sigma_down = sqrt(sigma_to^2 - sigma_up^2) (the min only acts for
    eta > 1)."""
    s_up = torch.minimum(s_to, eta * s_to * torch.sqrt((1.0 - (s_to / s_from) ** 2).clamp_min(0.0)))
    return torch.sqrt(s_to ** 2 - s_up ** 2), s_up


def report_finished(callback, done_rows: list[int], out: torch.Tensor, sigma_start: torch.Tensor, sigma_min: float,
                    model: CountingDenoiser, nfe_before: torch.Tensor):
    """An adaptive solver's callback for samples that just finished (`done_rows`: their indices in the
    call's batch): each sample's result, start sigma and the NFE it spent."""
    for b in done_rows:
        callback({"i": b, "n": out.shape[0], "x": out[b:b + 1], "sigma": sigma_start[b:b + 1],
                  "sigma_next": torch.full((1,), sigma_min, dtype=torch.float64),
                  "nfev": int(model.nfe[b] - nfe_before[b])})
