"""Host-sync audit: which ops of a piece of code would stall a GPU or break CUDA-graph capture.

On a GPU a sampler's step must never read a device value on the host, make a tensor from Python data
(a pageable host-to-device copy), or produce a data-dependent shape (DESIGN.md, "The hot path"). On
the CPU nothing stalls, so these ops are invisible in timings; `HostSyncAudit` makes them visible by
op dispatch, on any device, so a CPU test can hold the GPU path to the rule:

    with HostSyncAudit() as audit:
        api.sample(model, "heun", num=4, nfe=9)
    audit.events        # [SyncEvent(op, where), ...]

Flagged: `aten._local_scalar_dense` (`.item()`, `bool(t)`, `int(t)`, `float(t)`), `nonzero`,
`masked_select`, `unique*`, `repeat_interleave` without an output size, boolean-mask indexing
(`x[mask]`, `x[mask] = v`), `lift_fresh` (`torch.tensor(...)`, `torch.as_tensor(python data)`,
`torch.from_numpy(...)`), and the tensor methods that copy to the host without dispatching on a CPU
tensor (`.cpu()`, `.numpy()`, `.tolist()`). Each event records the first frame of this package that
led to it, so a failing audit names the line to fix.
"""
from __future__ import annotations

import os
import traceback
from collections import Counter
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

def _package_roots() -> tuple[str, ...]:
    """Folders whose frames are ours to fix: the package and its kernels (`kernels/` in a checkout)."""
    import dmcmc_fast
    import dmcmc_fast.kernels

    return tuple(os.path.dirname(os.path.abspath(m.__file__)) for m in (dmcmc_fast, dmcmc_fast.kernels))


SYNC_OPS = {
    aten._local_scalar_dense.default: "reads a device value on the host (.item/bool/int/float)",
    aten.nonzero.default: "data-dependent shape (nonzero)",
    aten.masked_select.default: "data-dependent shape (masked_select)",
    aten.lift_fresh.default: "tensor from Python data (host-to-device copy)",
    aten.lift_fresh_copy.default: "tensor from Python data (host-to-device copy)",
    aten._unique2.default: "data-dependent shape (unique)",
    aten.unique_dim.default: "data-dependent shape (unique)",
    aten.unique_consecutive.default: "data-dependent shape (unique_consecutive)",
    aten.repeat_interleave.Tensor: "data-dependent shape (repeat_interleave)",
}
INDEX_OPS = (aten.index.Tensor, aten.index_put.default, aten.index_put_.default, aten._index_put_impl_.default)
_HOST_METHODS = ("cpu", "numpy", "tolist")


@dataclass(frozen=True)
class SyncEvent:
    op: str
    why: str
    where: str  # "path/to/file.py:line in function" (first frame of this package), or "?"

    def __str__(self):
        return f"{self.op} ({self.why}) at {self.where}"


def _caller() -> str:
    roots = _package_roots()
    top = os.path.dirname(roots[0])
    for frame in reversed(traceback.extract_stack()[:-3]):
        fn = os.path.abspath(frame.filename)
        if fn.startswith(roots) and fn != os.path.abspath(__file__):
            return f"{os.path.relpath(fn, top)}:{frame.lineno} in {frame.name}"
    return "?"


def host_sync_reason(func, args, kwargs: dict) -> str | None:
    """Why dispatching `func(*args, **kwargs)` would stall a GPU or break graph capture (the module docstring's
    list), or None. Also what tests/sim_cuda.py refuses under a simulated graph capture."""
    if func is aten.repeat_interleave.Tensor and kwargs.get("output_size") is not None:
        return None
    why = SYNC_OPS.get(func)
    if why is None and func in INDEX_OPS:
        indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
        if any(t is not None and t.dtype in (torch.bool, torch.uint8) for t in indices):
            why = "data-dependent shape (boolean-mask indexing)"
    return why


class HostSyncAudit(TorchDispatchMode):
    """Records every host-syncing or shape-dynamic op run inside the `with` block (see the module
    docstring). `events` lists them in order; `counts()` groups them by place."""

    def __init__(self):
        super().__init__()
        self.events: list[SyncEvent] = []
        self._saved = {}

    def _record(self, op: str, why: str):
        self.events.append(SyncEvent(op, why, _caller()))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        why = host_sync_reason(func, args, kwargs)
        if why is not None:
            self._record(str(func.overloadpacket.__name__), why)
        return func(*args, **kwargs)

    def __enter__(self):
        audit = self
        for name in _HOST_METHODS:
            orig = getattr(torch.Tensor, name)
            self._saved[name] = orig

            def patched(t, *a, _orig=orig, _name=name, **kw):
                audit._record(f"Tensor.{_name}", "copies a device tensor to the host")
                return _orig(t, *a, **kw)

            setattr(torch.Tensor, name, patched)
        return super().__enter__()

    def __exit__(self, *exc):
        for name, orig in self._saved.items():
            setattr(torch.Tensor, name, orig)
        self._saved.clear()
        return super().__exit__(*exc)

    def counts(self) -> Counter:
        """{str(event): how often} (ops at one place counted together)."""
        return Counter(str(e) for e in self.events)
