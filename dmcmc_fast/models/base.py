"""The one model interface: a VE denoiser `D(x, sigma) -> E[x0 | x]` with per-sample sigma.

`x = x0 + sigma * z`, `x` of shape `[B, *shape]`, `sigma` of shape `[B]`; the score is
`s(x, sigma) = (D(x, sigma) - x) / sigma**2` (Tweedie). Every sampler calls models only through this
shape, and only through `check_call`-validated inputs at the public entry points.
"""
from __future__ import annotations

import itertools
import math
from typing import Protocol, runtime_checkable

import torch

from dmcmc_fast.models import kwargs as kw
from dmcmc_fast.validate import check_positive


@runtime_checkable
class Denoiser(Protocol):
    """What a sampler needs of a model.

    Attributes: `shape` (per-sample data shape, e.g. `(1, 28, 28)`), `sigma_min`, `sigma_max` (the
    noise range the model is meant for: the integrators' default range, and for a network a bound the
    sampling API checks), `data_range` (`(lo, hi)` of clean data).

    Optional: keyword arguments after `sigma` (`model_kwargs`: class labels, text embeddings, one row
    per sample; see `dmcmc_fast.models.kwargs`), and `handles_dtype = True` for a model that takes the
    sampler's float32 state and runs its network in the network's own dtype itself (the adapters,
    `EDMDenoiser`); any other network is called with its inputs cast to its dtype (`in_network_dtype`).
    """

    shape: tuple[int, ...]
    sigma_min: float
    sigma_max: float
    data_range: tuple[float, float]

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **model_kwargs) -> torch.Tensor: ...


def as_sigma(sigma, batch: int, device=None, dtype=torch.float32, name: str = "sigma") -> torch.Tensor:
    """A scalar or `[B]` sigma -> a `[B]` tensor, checked finite and > 0."""
    s = torch.as_tensor(sigma, dtype=dtype, device=device)
    if s.ndim == 0:
        s = s.expand(batch)
    if s.ndim != 1 or s.shape[0] != batch:
        raise ValueError(f"{name} must be a scalar or of shape [{batch}] (one per sample), got shape {tuple(s.shape)}")
    check_positive(name, s)
    return s.contiguous()


def check_call(model: Denoiser, x: torch.Tensor, sigma) -> torch.Tensor:
    """Validate `x` against the model's shape and return sigma as `[B]`."""
    if not torch.is_tensor(x):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    shape = tuple(getattr(model, "shape", x.shape[1:]))
    if tuple(x.shape[1:]) != shape:
        raise ValueError(f"x must have shape [B, {', '.join(map(str, shape))}], got {tuple(x.shape)}")
    return as_sigma(sigma, x.shape[0], device=x.device, dtype=x.dtype if x.is_floating_point() else torch.float32)


def _weight_modules(model) -> list:
    """The `nn.Module`s whose weights a denoiser computes with: the model itself if it is one, else those an
    adapter holds as attributes; [] for an analytic model."""
    if isinstance(model, torch.nn.Module):
        return [model]
    return [v for v in getattr(model, "__dict__", {}).values() if isinstance(v, torch.nn.Module)]


def _weights(model):
    """The parameters and buffers of `_weight_modules(model)`, lazily (usually the first one answers)."""
    return itertools.chain.from_iterable(itertools.chain(m.parameters(), m.buffers()) for m in _weight_modules(model))


def network_tensors(model) -> list[torch.Tensor]:
    """The weights a network denoiser computes with: the parameters and buffers of the model if it is an
    `nn.Module`, else of the `nn.Module`s an adapter holds as attributes; [] for an analytic model."""
    return list(_weights(model))


def model_device(model) -> torch.device | None:
    """Where a network denoiser's weights live; None for a model without weights (analytic models run anywhere)."""
    return next((t.device for t in _weights(model)), None)


def network_dtype(model) -> torch.dtype | None:
    """The floating dtype a network denoiser computes in: that of its first floating parameter (or
    buffer), looked up without a list of all weights (cheap enough per call); None without weights."""
    return next((t.dtype for t in _weights(model) if t.is_floating_point()), None)


MODEL_ATTRS = ("shape", "sigma_min", "sigma_max", "data_range")  # what a wrapper of a denoiser passes on


def take_model_attrs(wrapper, model):
    """`wrapper` takes the attributes of `model` that the samplers read (`MODEL_ATTRS`), those it has."""
    for attr in MODEL_ATTRS:
        if hasattr(model, attr):
            setattr(wrapper, attr, getattr(model, attr))


class InNetworkDtype:
    """A network denoiser called in its own dtype (bf16, fp16, fp64): `x`, `sigma` and floating
    `model_kwargs` cast to the network's dtype, the output cast back to `x`'s (the sampler's state
    stays float32). The dtype is looked up per call, so a later `model.to(torch.bfloat16)` is seen."""

    handles_dtype = True

    def __init__(self, model):
        self.model = model
        take_model_attrs(self, model)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **model_kwargs) -> torch.Tensor:
        dt = network_dtype(self.model)
        if dt is None or dt == x.dtype:
            return self.model(x, sigma, **model_kwargs)
        return self.model(x.to(dt), sigma.to(dt), **kw.cast(model_kwargs, dt)).to(x.dtype)


def in_network_dtype(model):
    """`model` as it is when it handles dtypes itself (`handles_dtype`) or has no weights (analytic);
    else wrapped in `InNetworkDtype`."""
    if getattr(model, "handles_dtype", False) or network_dtype(model) is None:
        return model
    return InNetworkDtype(model)


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
    """The model returned NaN/Inf for a finite input at a plausible scale: the model's fault."""


class ChainDiverged(NonFiniteModelOutput, ValueError):
    """The sampler's state went NaN/Inf or ran away (before a model call, or in the last step): the step
    size's fault, not the model's. `where` says what was seen; `run_sampler` names the sampler and its step
    size (`CountingDenoiser.blame`). A ValueError: a bad option value, the CLI's one-line error."""

    ADVICE = "lower the step size (or take more steps)"

    def __init__(self, where: str, sampler: str = "", advice: str = ADVICE):
        super().__init__(f"{sampler + ': ' if sampler else ''}the chain diverged: {where}; {advice}")
        self.where = where


class NonFiniteFinalState(FloatingPointError):
    """The run's final state is NaN/Inf and its counter made no per-call checks (`per_call_checks=False`):
    the run's owner replays it with a checking counter to say where it happened (`run_located`)."""


class CountingDenoiser:
    """Wraps a denoiser and counts evaluations per sample (NFE) at the call site.

    `nfe` is a `[B]` int64 tensor; a call on a subset passes `idx` (the rows of the full batch it
    holds) so only those samples are charged. `model_kwargs` (the batch's rows, see
    `dmcmc_fast.models.kwargs`) go to the model on every call, their rows `idx` on a subset call (an
    index on the device: no host read). A network is called in its own dtype (`in_network_dtype`).
    `on_call(rows)` (host) is told the rows of every call: the API's progress bar in NFE.
    Shapes are checked at every call (host metadata, free): `x` must be `[B, *model.shape]` and the
    output must have `x`'s shape. NaN/Inf are caught on the device, on every device alike: each call adds
    flags to a deferred check (no host sync per call, so the loop stays graph-capturable) — whether the
    output was finite, and the input's range `(min, max)` and sigma range — and `raise_if_nonfinite()`
    (called once at the end of a run by `run_sampler`, or by an integrator that made its own counter)
    looks at the first bad call: an input that was already NaN/Inf, or far outside any noised data
    (|x| > RUNAWAY * (1 + sigma)), is `ChainDiverged`; a finite, plausible input with a NaN/Inf output is
    `NonFiniteModelOutput`. Samplers add their own deferred input checks with `defer_check`.

    `per_call_checks=False` (what `api.sample` and a direct integrator call use): a call only counts, and
    NaN/Inf is caught in the final state (`check_final`; a NaN/Inf output reaches it through every update
    of these samplers). A bad final state raises `NonFiniteFinalState`, and the run's owner replays the
    run, deterministic by its per-chain RNG, with per-call checks to name the first bad call
    (`run_located`): the check costs nothing per step, and a failure still says where it happened.
    """

    FOLD_EVERY = 256  # pending per-call flags folded into one running result (bounded memory)
    RUNAWAY = 1e4  # |x| above RUNAWAY * (1 + sigma) at a model call: the chain ran away (noised data: ~1 + 6 sigma)

    def __init__(self, model: Denoiser, batch: int, device=None, check_finite: bool = True,
                 model_kwargs: dict | None = None, on_call=None, per_call_checks: bool = True):
        self.model = in_network_dtype(model)
        self.model_kwargs = model_kwargs or {}
        self.on_call = on_call
        self._batch, self._device = batch, device
        self._nfe: torch.Tensor | None = None  # [B] counts, made when first read or charged per row
        self._full_calls = 0  # whole-batch calls not yet added to _nfe (host ints: no op per call)
        self._even: int | None = 0  # every sample's count (before _full_calls) while all are equal, else None
        self.calls = 0
        self.check_finite = check_finite
        self.per_call_checks = check_finite and per_call_checks
        self.standalone = False  # made by ensure_counting inside a sampler call: that call raises at its end
        self._pending: list[tuple[torch.Tensor, ...]] = []  # (out min, max, x min, max, sigma lo, hi) per call
        self._first_bad: torch.Tensor | None = None  # [5] float64: seen, input bad, |x| max, sigma lo, hi
        self._final_range: tuple | None = None  # the run's final state's (min, max) (`check_final`)
        self._checks: list[tuple] = []  # (device values, failed(their host values), message)
        self._positive: dict[str, list[torch.Tensor]] = {}  # message -> tensors that must be finite and > 0
        self._blame = ("", ChainDiverged.ADVICE)  # (sampler, what to change) a ChainDiverged names
        take_model_attrs(self, model)
        self._shape = torch.Size(self.shape) if hasattr(self, "shape") else None  # compared per call

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        shape = self._shape
        if shape is not None and x.shape[1:] != shape:
            raise ValueError(f"x must have shape [B, {', '.join(map(str, shape))}] (the model's shape), "
                             f"got {tuple(x.shape)}")
        if idx is None and x.shape[0] != self._batch:
            raise ValueError(f"CountingDenoiser: batch {x.shape[0]} != {self._batch}; pass idx for a subset")
        if not self.model_kwargs:
            out = self.model(x, sigma)
        else:
            out = self.model(x, sigma, **(self.model_kwargs if idx is None else kw.take(self.model_kwargs, idx)))
        if out.shape != x.shape:
            raise ValueError(f"the model returned shape {tuple(out.shape)} for input of shape {tuple(x.shape)}; "
                             f"a denoiser must return its input's shape {tuple(x.shape)}")
        if idx is None:
            self._full_calls += 1
        else:
            self.nfe[idx] += 1
            self._even = None
        self.calls += 1
        if self.on_call is not None:
            self.on_call(x.shape[0])
        if self.per_call_checks and sigma.numel():
            # three reductions per call; min/max propagate NaN and are +-inf at an Inf, so finiteness is
            # decided from them when the flags are folded (ops per NFE: bench/op_counts.py)
            self._pending.append((*torch.aminmax(out), *torch.aminmax(x), *torch.aminmax(sigma)))
            if len(self._pending) >= self.FOLD_EVERY:
                self._fold()
        return out

    @property
    def nfe(self) -> torch.Tensor:
        """`[B]` int64: the evaluations charged to each sample. Whole-batch calls are counted on the host and
        added here when read (a read is one op; a call is none)."""
        if self._nfe is None:  # every sample charged alike so far (`_even`): the counts made in one op
            self._nfe = torch.full((self._batch,), self._even + self._full_calls, dtype=torch.int64,
                                   device=self._device)
            self._even += self._full_calls
            self._full_calls = 0
        elif self._full_calls:
            self._nfe += self._full_calls
            if self._even is not None:
                self._even += self._full_calls
            self._full_calls = 0
        return self._nfe

    @nfe.setter
    def nfe(self, value: torch.Tensor):  # `counting.nfe += spent` (a graph that charged its own calls)
        self._full_calls, self._nfe, self._even = 0, value, None
        self._batch = value.shape[0]

    def _even_count(self) -> int | None:
        """Every sample's count, a host int, while all were charged alike (whole-batch calls only); else None."""
        return None if self._even is None else self._even + self._full_calls

    def max_nfe(self) -> int:
        """The most evaluations charged to one sample: read without a sync while every sample was charged alike."""
        even = self._even_count()
        return even if even is not None else int(self.nfe.max())

    def mark(self):
        """The counts so far, for `spent`: a host int while every sample was charged alike (no op), else a
        copy of `nfe`."""
        even = self._even_count()
        return even if even is not None else self.nfe.clone()

    def spent(self, mark, lazy: bool = False):
        """`[B]` int64: the evaluations charged to each sample since `mark()`. `lazy`: while every sample was
        charged alike, a function that makes that tensor (the count taken now: later calls do not change it)."""
        even = self._even_count()
        if even is not None and not torch.is_tensor(mark):
            batch, n, device = self._batch, even - mark, self._device
            counts = lambda: torch.full((batch,), n, dtype=torch.int64, device=device)  # noqa: E731
            return counts if lazy else counts()
        return self.nfe - mark

    def _fold(self):
        """Reduce the pending per-call flags to the first bad call's record, on the device."""
        o_lo, o_hi, x_lo, x_hi, lo, hi = (torch.stack(v).to(torch.float64) for v in zip(*self._pending))
        self._pending.clear()
        out_bad = (~(torch.isfinite(o_lo) & torch.isfinite(o_hi))).to(torch.float64)
        in_bad = (~(torch.isfinite(x_lo) & torch.isfinite(x_hi))).to(torch.float64)
        bad = torch.maximum(out_bad, in_bad)
        i = bad.argmax().reshape(1)  # the first bad call of this stretch (0 when none); a tensor index: no sync
        x_abs = torch.maximum(x_lo.abs(), x_hi.abs())
        new = torch.cat([bad.max().reshape(1)] + [t.index_select(0, i) for t in (in_bad, x_abs, lo, hi)])
        self._first_bad = new if self._first_bad is None else \
            torch.where(self._first_bad[0] > 0, self._first_bad, new)

    def end_call(self, x: torch.Tensor | None = None):
        """End of a sampler call with result `x`: a counter that call made itself (`standalone`) checks `x`
        and raises its deferred checks now (one host sync); a caller's counter leaves them to the caller
        (`run_sampler`, DLG)."""
        if self.standalone:
            if x is not None:
                self.check_final(x)
            self.raise_if_nonfinite()

    def check_final(self, x: torch.Tensor):
        """Defer a check of the run's final state `x` (no model call sees it): NaN/Inf there after finite
        model calls is a last step that diverged."""
        if self.check_finite:
            if x.numel():  # min and max propagate NaN and are +-inf at an Inf: one reduction, not isfinite's four ops
                self._final_range = torch.aminmax(x)

    def blame(self, sampler: str, advice):
        """What a `ChainDiverged` raised by this counter names: the sampler and what to change (its step size;
        a string, or a function giving it, called only when a chain diverged)."""
        self._blame = (sampler, advice)

    def _blamed(self) -> tuple[str, str]:
        sampler, advice = self._blame
        return sampler, advice() if callable(advice) else advice

    def defer_check(self, bad: torch.Tensor, message: str):
        """Raise `ValueError(message)` at the end of the run if the 0-d device flag `bad` is true."""
        self._checks.append(((bad,), _flag_set, message))

    def defer_positive(self, t: torch.Tensor, message: str):
        """Raise `ValueError(message)` at the end of the run unless every value of `t` is finite and > 0 (`t` is
        kept as it is until then: the run must not change it). Decided on the host from the (min, max) of all
        the run's tensors of that message at once (one reduction at the end, none per call: DLG checks a start
        per block; NaN propagates into both)."""
        if t.numel():
            self._positive.setdefault(message, []).append(t)

    def _reduce_positive(self):
        """The deferred `defer_positive` tensors as checks: one (min, max) per message."""
        for message, ts in self._positive.items():
            v = ts[0] if len(ts) == 1 else torch.cat([t.reshape(-1) for t in ts])
            self._checks.append((tuple(torch.aminmax(v)), _not_positive, message))
        self._positive = {}

    def pending_checks(self) -> "DeferredChecks":
        """The deferred checks so far, reduced on the device (no host read) and handed over (the first bad call's
        record stays: a later check still sees it). A captured run (`engine.whole_run`) takes them inside its graph and reads them after every replay."""
        if self._pending:
            self._fold()
        if self._positive:
            self._reduce_positive()
        checks, self._checks = self._checks, []
        final, self._final_range = self._final_range, None
        return DeferredChecks(checks, final, self._first_bad, self.per_call_checks, self._blamed)

    def raise_if_nonfinite(self):
        """Raise for the deferred checks and for any NaN/Inf so far (one host sync)."""
        self.pending_checks().raise_if_failed()


class DeferredChecks:
    """A run's deferred checks as device values (`CountingDenoiser.pending_checks`): `raise_if_failed()` reads
    them in one host sync and raises the first that failed; it may be called again after the values change
    (a graph replayed)."""

    def __init__(self, checks: list, final, first_bad, per_call_checks: bool, blamed):
        self.checks, self.final, self.first_bad = checks, final, first_bad
        self.per_call_checks, self.blamed = per_call_checks, blamed

    def raise_if_failed(self):
        checks, final, first_bad = self.checks, self.final, self.first_bad
        if final is not None and not checks and first_bad is None and final[0].device.type == "cpu" \
                and _finite_range([final[0].item(), final[1].item()]):  # the CPU's common case: two reads, no stack
            return
        seen = first_bad[0] > 0 if first_bad is not None else None
        read = [t for ts, _, _ in checks for t in ts] + ([seen] if seen is not None else []) + list(final or ())
        if not read:
            return
        values = torch.stack(read).tolist()  # the one read to the host (stack promotes to a common dtype)
        pos = 0
        for ts, failed, message in checks:
            if failed(values[pos:pos + len(ts)]):
                raise ValueError(message)
            pos += len(ts)
        if final is not None:  # the final state's (min, max): finite iff both are (they propagate NaN)
            values[-2:] = [not _finite_range(values[-2:])]
        rest = iter(values[pos:])
        if seen is not None and next(rest):
            _, in_bad, x_abs, lo, hi = first_bad.tolist()
            at = f"sigma in [{lo:.4g}, {hi:.4g}]"
            if in_bad:
                raise ChainDiverged(f"the state x was already NaN/Inf when the model was called, first at {at}",
                                    *self.blamed())
            if x_abs > CountingDenoiser.RUNAWAY * (1 + hi):
                raise ChainDiverged(f"the state x reached |x| = {x_abs:.3g} at {at}, far outside the data, and the "
                                    "model returned NaN/Inf there", *self.blamed())
            raise NonFiniteModelOutput(f"model returned NaN/Inf for finite input (|x| <= {x_abs:.3g}), first at {at} "
                                       "(checked on the device, raised at the end of the run)")
        if final is not None and next(rest):
            if not self.per_call_checks:
                raise NonFiniteFinalState("the final state x is NaN/Inf (no per-call checks: replay to locate)")
            raise ChainDiverged("the final state x is NaN/Inf although every model call saw and returned finite "
                                "values (the last step diverged)", *self.blamed())


def _flag_set(values: list) -> bool:
    return bool(values[0])


def _not_positive(values: list) -> bool:  # (min, max) of values that must be finite and > 0
    return not (values[0] > 0 and math.isfinite(values[1]))


def _finite_range(values: list) -> bool:  # (min, max): finite iff both are (they propagate NaN)
    return math.isfinite(values[0]) and math.isfinite(values[1])


def flat_dim(shape) -> int:
    return math.prod(shape)


def run_located(run, counter: CountingDenoiser):
    """`run(counter, replay=False)` on a counter without per-call checks; `run` checks its own final state
    (`check_final`, `raise_if_nonfinite`). When that state is NaN/Inf (`NonFiniteFinalState`), `run(twin,
    replay=True)` on a checking twin of `counter` (per-call checks, no progress; `replay` tells the run to
    leave out what must not happen twice, the user's callback) raises the error naming the first bad call;
    if the replay finishes clean (a nondeterministic model), a `ChainDiverged` that says so."""
    try:
        return run(counter, False)
    except NonFiniteFinalState:
        pass
    twin = CountingDenoiser(counter.model, counter.nfe.shape[0], counter.nfe.device, model_kwargs=counter.model_kwargs)
    twin._blame = counter._blame
    run(twin, True)
    twin.raise_if_nonfinite()
    raise ChainDiverged("the final state x was NaN/Inf, but a replay with per-call checks finished clean (is the "
                        "model nondeterministic?)", *counter._blamed())
