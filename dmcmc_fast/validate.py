"""The argument checks of the whole library: a few primitives with ONE error format.

Every check raises a one-line `ValueError`

    [SAMPLER: ]NAME must be ACCEPTED, got VALUE

naming the sampler (when known), the argument or option (`option eta` for a sampler option), what it
accepts (a range, a set of choices) and the value given. Checks run on the host, before any work
starts: the registry's options (`samplers.Option.validate`), the API's arguments (`api.stream`), the
samplers' and integrators' own arguments, the engine's books. Only torch, math and numbers are imported
here, so any layer may use it.
"""
from __future__ import annotations

import math
import numbers

import torch


def show(value) -> str:
    """A value as an error shows it: its repr, cut at 40 characters; a tensor by its shape and range."""
    if torch.is_tensor(value) and value.numel() > 1:
        v = value.detach().double()
        return f"a tensor of shape {list(value.shape)} with min {float(v.min()):.4g}, max {float(v.max()):.4g}"
    text = repr(value.item() if torch.is_tensor(value) and value.numel() == 1 else value)
    return text if len(text) <= 40 else text[:37] + "..."


def fail(name: str, accepts: str, value, sampler: str = ""):
    """Raise the one error format: `[SAMPLER: ]NAME must be ACCEPTS, got VALUE`."""
    raise ValueError(f"{sampler + ': ' if sampler else ''}{name} must be {accepts}, got {show(value)}")


def range_text(lo=None, hi=None) -> str:
    """`[lo, hi]`, an open end shown as -inf / inf."""
    return f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"


def is_int(value) -> bool:
    """An integer (Python or numpy), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value) -> bool:
    """A real number (int, float, numpy scalar), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def in_range(v: float, lo=None, hi=None) -> bool:
    """lo <= v <= hi; NaN never, inf only where the range ends there (e.g. EDM's S_tmax)."""
    if math.isnan(v) or (math.isinf(v) and v not in (lo, hi)):
        return False
    return (lo is None or v >= lo) and (hi is None or v <= hi)


def check_int(name: str, value, lo: int | None = None, hi: int | None = None, sampler: str = "") -> int:
    """`value` as an int if it is an integer in [lo, hi]."""
    if type(value) is int and (lo is None or value >= lo) and (hi is None or value <= hi):
        return value  # the common case, without the numbers ABC checks (the API checks several per call)
    if not is_int(value) or not in_range(value, lo, hi):
        fail(name, f"an integer in {range_text(lo, hi)}", value, sampler)
    return int(value)


def check_real(name: str, value, lo: float | None = None, hi: float | None = None, sampler: str = "") -> float:
    """`value` as a float if it is a finite number in [lo, hi] (inf only where the range ends there)."""
    try:
        v = float(value) if is_real(value) else math.nan
    except OverflowError:  # an int too large for a float
        v = math.inf if value > 0 else -math.inf
    if not is_real(value) or not in_range(v, lo, hi):
        fail(name, f"a number in {range_text(lo, hi)}", value, sampler)
    return v


def check_positive(name: str, value, sampler: str = ""):
    """A number, a list of numbers or a tensor whose values are all finite and > 0 (a tensor is read back:
    use it on host values and before a run, not inside a sampler's loop). Returns `value`."""
    if is_real(value):  # a plain number: no tensor, no device
        if not (0 < value < math.inf and value == value):  # NaN fails value == value; huge ints compare fine
            fail(name, "finite and > 0", value, sampler)
        return value
    try:
        t = value.detach().double() if torch.is_tensor(value) else torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):  # not numbers
        t = torch.full((1,), math.nan)
    if t.numel() == 0 or not bool((torch.isfinite(t) & (t > 0)).all()):
        fail(name, "finite and > 0", value, sampler)
    return value


def check_choice(name: str, value, choices, sampler: str = ""):
    """`value` if it is one of `choices`."""
    if value not in tuple(choices):
        fail(name, f"one of {', '.join(map(str, choices))}", value, sampler)
    return value


# A noise range bounds what a network was trained on. Its ends are compared with this relative tolerance: a tenth
# of the step between DLG's 1000 geometric levels over [0.01, 157] (1%), so a range that a conversion rounds
# (a DDPM's 0.0100013 against a classifier's 0.01) is the same range, and any real excess is not.
RANGE_RTOL = 1e-3


def inside_range(lo: float, hi: float, range_lo: float, range_hi: float, rtol: float = RANGE_RTOL) -> bool:
    """[lo, hi] within [range_lo, range_hi] up to a relative `rtol` at each end."""
    return lo >= range_lo * (1 - rtol) and hi <= range_hi * (1 + rtol)


def distinct(a: float, b: float, digits: int = 4, rtol: float = RANGE_RTOL) -> tuple[str, str]:
    """`a` and `b` with `digits` significant digits, or with more where they differ by more than `rtol` (relative)
    and would print alike: 0.0098 and 0.01, not 0.01 and 0.01; 0.0020000001 and 0.002 (equal up to `rtol`) stay
    0.002 and 0.002."""
    same = abs(a - b) <= rtol * max(abs(a), abs(b))
    for d in range(digits, 18):
        sa, sb = f"{a:.{d}g}", f"{b:.{d}g}"
        if sa != sb or same:
            return sa, sb
    return repr(a), repr(b)


def ranges_text(lo: float, hi: float, range_lo: float, range_hi: float) -> tuple[str, str]:
    """`[lo, hi]` and `[range_lo, range_hi]`, each end with the digits that tell it from the other's."""
    (a, c), (b, d) = distinct(lo, range_lo), distinct(hi, range_hi)
    return f"[{a}, {b}]", f"[{c}, {d}]"
