"""A simulated CUDA device on the CPU: the GPU path's Python runs here as it would on a GPU.

No GPU has run this project yet, and a lent one gives minutes. What breaks at first contact is mostly
not arithmetic (the kernels are checked against references, the sync audit holds the hot loop) but
plumbing: a tensor made on the host and mixed with device tensors, a CPU-only C++ call handed device
tensors, a Triton kernel handed a host pointer, a value baked into a captured graph, a host read during
capture. `simulated_cuda()` makes those fail here:

    with simulated_cuda():
        out = api.sample(model, "heun", num=4, nfe=9, device="cuda:0")   # the CUDA branches, graphs and all

- `SimCuda` tensors hold CPU data and say `device='cuda:0'`; every branch on `x.is_cuda` takes its CUDA
  side. Factory calls with `device='cuda'` make them (`_Factories`, a dispatch mode).
- CUDA's device rules are enforced per op: CPU tensors mix with CUDA ones only as 0-d operands of
  pointwise ops (and as index tensors); `.numpy()` refuses. `torch.Generator(device='cuda')` is a host
  generator that says 'cuda' (which generator fills which tensor is not checked).
- Triton kernels (under TRITON_INTERPRET=1) run on the data behind the device tensors, and a host
  tensor handed to one fails as on a GPU.
- `torch.cuda.CUDAGraph` / `torch.cuda.graph` record the device ops and kernel launches of the captured
  call; `replay()` runs them again on the same tensors, the way a graph replays kernels on fixed
  addresses: Python values (a step counter, a scalar) stay as they were at capture, fresh outputs land in
  the captured output tensors. During capture, a host read (`.item()`, `bool(t)`, `.tolist()`, a copy to
  or from the host, `nonzero`, boolean-mask indexing) raises as it does under real stream capture.
- `torch.cuda.is_available()` is True, streams and events are no-ops (events time with the host clock),
  `torch.save` / `torch.load` write and read device tensors through the host, and the C++ extension sees
  device tensors (its CPU-only functions refuse them, as on a GPU).

What it cannot tell: speed, memory, the numerics of the compiled kernels (the interpreter runs them in
NumPy), which generator fills which tensor, subprocesses (they start without the simulation), and
training (autograd's backward pass wants a real CUDA context).
"""
from __future__ import annotations

import collections
import contextlib
import os
import threading
import time
import unittest.mock as mock

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

from dmcmc_fast.engine.audit import INDEX_OPS, host_sync_reason

CUDA = torch.device("cuda", 0)
aten = torch.ops.aten
# what ran on the simulated device (tests and bench.launches read it): "triton launches", "graph captures",
# "graph replays", and "eager launches": what a GPU would launch outside a graph replay, i.e. every device
# op that computes or writes (not a view, not an allocation) and every Triton launch, eagerly run
COUNTS: collections.Counter = collections.Counter()

# ops that move data between host and device (their operands may be on both)
_COPIES = {aten._to_copy.default, aten.copy_.default, aten._copy_from.default, aten._copy_from_and_resize.default}
# host reads besides the audit's (`engine.audit.host_sync_reason`): illegal under stream capture too
_HOST_READS = {aten.equal.default, aten.is_nonzero.default}
_UNINITIALISED = {aten.empty.memory_format, aten.empty_strided.default, aten.empty_like.default}


class DeviceError(RuntimeError):
    """What CUDA would refuse: mixed devices, a host pointer in a kernel, a host read under capture."""


class SimCuda(torch.Tensor):
    """A tensor that says it is on cuda:0 and keeps its data in a CPU tensor, `elem`."""

    elem: torch.Tensor

    @staticmethod
    def __new__(cls, elem: torch.Tensor):
        assert type(elem) is torch.Tensor and elem.device.type == "cpu", type(elem)
        r = torch.Tensor._make_wrapper_subclass(cls, elem.shape, strides=elem.stride(),
                                                storage_offset=elem.storage_offset(), dtype=elem.dtype,
                                                device=CUDA, requires_grad=elem.requires_grad, layout=elem.layout)
        r.elem = elem
        return r

    __torch_function__ = torch._C._disabled_torch_function_impl

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        return _run(func, args, kwargs or {})

    def tolist(self):  # a device-to-host copy
        _no_host_read_in_capture("Tensor.tolist")
        return self.elem.tolist()

    def numpy(self, *args, **kwargs):
        raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the tensor "
                        "to host memory first.")

    def data_ptr(self):
        return self.elem.data_ptr()

    def __repr__(self):
        return f"SimCuda({self.elem!r})"


def to_device(t):
    """A CPU tensor (or an nn.Module's tensors) on the simulated device."""
    if isinstance(t, torch.nn.Module):
        return t._apply(lambda p: SimCuda(p.detach()) if type(p) is torch.Tensor else p)
    return SimCuda(t.detach() if type(t) is torch.Tensor else t)


# ---------------------------------------------------------------------------------------------- capture
_state = threading.local()


def _capturing():
    return getattr(_state, "graph", None)


def _eager() -> bool:
    """Neither capturing nor replaying: what runs now is launched eagerly, one launch per kernel."""
    return _capturing() is None and not getattr(_state, "replaying", False)


def _launches(func) -> bool:
    """Whether an op on device tensors launches a kernel: not a view or alias (metadata only), not an
    allocation of uninitialised memory."""
    if func in _UNINITIALISED:
        return False
    returns = func._schema.returns
    return func._schema.is_mutable or not any(r.alias_info is not None for r in returns)


def _no_host_read_in_capture(what: str):
    if _capturing() is not None:
        raise DeviceError(f"{what}: operation not permitted when stream is capturing (a host read or host copy "
                          "inside a CUDA graph capture)")


class SimGraph:
    """`torch.cuda.CUDAGraph`: the captured call's device ops and kernel launches, replayed on the same tensors."""

    def __init__(self, *args, **kwargs):
        self.records: list = []
        self.captured = False

    def replay(self):
        if not self.captured:
            raise RuntimeError("replay of a graph that was never captured")
        _state.replaying = True
        try:
            for rec in self.records:
                rec()
        finally:
            _state.replaying = False
        COUNTS["graph replays"] += 1

    def reset(self):
        self.records, self.captured = [], False


@contextlib.contextmanager
def _graph(cuda_graph: SimGraph, pool=None, stream=None, capture_error_mode="global"):
    if _capturing() is not None:
        raise RuntimeError("a CUDA graph capture is already under way")
    cuda_graph.reset()
    _state.graph = cuda_graph
    try:
        yield
        cuda_graph.captured = True
        COUNTS["graph captures"] += 1
    finally:
        _state.graph = None


def _snapshot(v):
    """A host tensor argument as it is now (a graph holds the value it had at capture)."""
    return v.clone() if type(v) is torch.Tensor else v


def _record_op(func, args, kwargs, out):
    args, kwargs = tree_map(_snapshot, (args, kwargs))
    outs = out if isinstance(out, (tuple, list)) else (out,)
    aliased = [r.alias_info is not None for r in func._schema.returns]

    def again():
        fresh = _run(func, args, kwargs)
        fresh = fresh if isinstance(fresh, (tuple, list)) else (fresh,)
        for old, new, alias in zip(outs, fresh, aliased):
            # a view or an in-place result sees the replayed data already; a fresh output lands where the
            # captured one lives (its "address"); uninitialised memory keeps what it holds
            if isinstance(old, SimCuda) and not alias and func not in _UNINITIALISED:
                old.elem.copy_(new.elem)

    _capturing().records.append(again)


# ------------------------------------------------------------------------------------------ device rules
def _device_of(t) -> str:
    return "cuda" if isinstance(t, SimCuda) else t.device.type


def _is_cuda(device) -> bool:
    return device is not None and torch.device(device).type == "cuda"


def _check_devices(func, args, tensors):
    on = {_device_of(t) for t in tensors}
    if not ("cuda" in on and "cpu" in on) or func in _COPIES:
        return
    host = [t for t in tensors if _device_of(t) == "cpu"]
    if func in INDEX_OPS and isinstance(args[0], SimCuda):  # index tensors may live on the host
        indices = [i for i in (args[1] if len(args) > 1 else ()) if i is not None]
        host = [t for t in host if not any(t is i for i in indices)]
    if torch.Tag.pointwise in func.tags or func in INDEX_OPS:
        host = [t for t in host if t.dim() != 0]  # a 0-d host tensor (`x[i] = 1.0`) is passed by value
    if host:
        raise DeviceError(f"{func}: expected all tensors on the same device, got cuda:0 and cpu "
                          f"(operands {', '.join(f'{_device_of(t)}{list(t.shape)}' for t in tensors)})")


def _lands_on_cuda(func, args, kwargs, tensors) -> bool:
    if func is aten._to_copy.default:
        return _is_cuda(kwargs["device"]) if kwargs.get("device") is not None else isinstance(args[0], SimCuda)
    if func in _COPIES:  # copy_(dst, src): where dst is
        return isinstance(args[0], SimCuda)
    return _is_cuda(kwargs.get("device")) or any(isinstance(t, SimCuda) for t in tensors)


def _run(func, args, kwargs):
    flat, _ = tree_flatten((args, kwargs))
    tensors = [t for t in flat if isinstance(t, torch.Tensor)]
    _check_devices(func, args, tensors)
    on_cuda = _lands_on_cuda(func, args, kwargs, tensors)
    if _capturing() is not None:
        # a copy between host and device: _to_copy(src, device=...) or copy_(dst, src)
        src = args[0] if func is aten._to_copy.default else (args[1] if func in _COPIES else None)
        crosses = src is not None and (_device_of(src) == "cuda") != on_cuda
        if func in _HOST_READS or crosses or host_sync_reason(func, args, kwargs) is not None:
            _no_host_read_in_capture(str(func))
    plain_args, plain_kwargs = tree_map(lambda t: t.elem if isinstance(t, SimCuda) else t, (args, kwargs))
    if _is_cuda(plain_kwargs.get("device")):
        plain_kwargs = dict(plain_kwargs, device=torch.device("cpu"))
    if plain_kwargs.get("pin_memory"):
        plain_kwargs = dict(plain_kwargs, pin_memory=False)
    out = func(*plain_args, **plain_kwargs)
    if func._schema.is_mutable and isinstance(args[0], SimCuda) and out is plain_args[0]:
        out = args[0]  # an in-place op returns its (device) self
    elif on_cuda:
        out = tree_map(lambda t: SimCuda(t) if type(t) is torch.Tensor else t, out)
    if _capturing() is not None and on_cuda:
        _record_op(func, args, kwargs, out)
    elif on_cuda and _eager() and _launches(func):
        COUNTS["eager launches"] += 1
    return out


class _Factories(TorchDispatchMode):
    """Factory calls with device='cuda' (no tensor operand to dispatch on) make SimCuda tensors."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if any(issubclass(t, SimCuda) for t in types) or _is_cuda(kwargs.get("device")):
            return _run(func, args, kwargs)
        return func(*args, **kwargs)


_thread_run = threading.Thread.run


def _thread_run_simulated(self):
    """Threads started on the simulated device see it too (dispatch modes are per thread)."""
    with _Factories():
        _thread_run(self)


# ------------------------------------------------------------------------------------------------ Triton
def _triton_launch(orig):
    """`InterpretedFunction.run`: device tensors only (a host pointer fails as on a GPU), run on their data,
    recorded when a graph is being captured."""

    def run(self, *args, grid, warmup, **kwargs):
        for i, a in enumerate(args):
            if isinstance(a, torch.Tensor) and not isinstance(a, SimCuda):
                raise DeviceError(f"{self.__name__}: Pointer argument (at {i}) cannot be accessed from Triton "
                                  f"(cpu tensor?)")
        plain = [a.elem if isinstance(a, SimCuda) else a for a in args]

        def launch():
            return orig(self, *plain, grid=grid, warmup=warmup, **kwargs)

        out = launch()
        COUNTS["triton launches"] += 1
        if _eager() and not warmup:
            COUNTS["eager launches"] += 1
        if _capturing() is not None and not warmup:
            _capturing().records.append(launch)
        return out

    return run


# ------------------------------------------------------------------------------------------- torch.cuda
class _Stream:
    def __init__(self, *args, **kwargs):
        pass

    def wait_stream(self, other):
        pass

    def synchronize(self):
        _no_host_read_in_capture("Stream.synchronize")

    def wait_event(self, event):
        pass


class _Event:
    """Timing events read the host clock (the simulated device runs in line with the host)."""

    def __init__(self, enable_timing=False, **kwargs):
        self.enable_timing, self.at = enable_timing, None

    def record(self, stream=None):
        self.at = time.perf_counter()

    def synchronize(self):
        _no_host_read_in_capture("Event.synchronize")

    def query(self):
        return True

    def elapsed_time(self, end: "_Event") -> float:
        if not (self.enable_timing and end.enable_timing) or self.at is None or end.at is None:
            raise RuntimeError("Both events must be recorded with enable_timing=True before elapsed_time")
        return (end.at - self.at) * 1e3


class _Properties:
    name, major, minor, multi_processor_count, total_memory = "SimCuda (CPU)", 9, 0, 132, 141 * 2**30


def _synchronize(device=None):
    _no_host_read_in_capture("torch.cuda.synchronize")


_save = torch.save


def _save_from_device(obj, f, *args, **kwargs):
    """`torch.save`: device tensors are written from their host data (on a GPU they are copied to the host
    and tagged 'cuda'; loading with `map_location` is the same either way)."""
    return _save(tree_map(lambda t: t.elem if isinstance(t, SimCuda) else t, obj), f, *args, **kwargs)


class _Generator(torch.Generator):
    """`torch.Generator(device='cuda')`: a host generator whose `.device` says cuda:0."""

    def __new__(cls, device="cpu"):
        g = super().__new__(cls)
        g._sim = _is_cuda(device)
        return g

    def __init__(self, device="cpu"):
        super().__init__()

    @property
    def device(self):
        return CUDA if self._sim else torch.device("cpu")


_load = torch.load


def _load_to_device(f, map_location=None, *args, **kwargs):
    """`torch.load(..., map_location='cuda')`: loaded on the host, then moved (SimCuda)."""
    if isinstance(map_location, (str, torch.device)) and _is_cuda(map_location):
        obj = _load(f, *args, map_location="cpu", **kwargs)
        return tree_map(lambda t: SimCuda(t) if type(t) is torch.Tensor else t, obj)
    return _load(f, *args, map_location=map_location, **kwargs)


@contextlib.contextmanager
def simulated_cuda():
    """Run the `with` block as if a CUDA device cuda:0 were here (module docstring). Needs TRITON_INTERPRET=1
    (set before triton is first imported: tests/conftest.py does) for the Triton kernels."""
    if torch.cuda.is_available():
        raise RuntimeError("simulated_cuda() is for machines without a CUDA device")
    if os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError("simulated_cuda() needs TRITON_INTERPRET=1 set before triton is imported")
    from triton.runtime.interpreter import InterpretedFunction

    torch._C._ensureCUDADeviceGuardSet()  # a no-op device guard where there is no CUDA device (as FakeTensorMode)
    lift = torch._C._only_lift_cpu_tensors()
    torch._C._set_only_lift_cpu_tensors(True)  # torch.tensor(..., device='cuda') goes host -> device by dispatch
    patches = dict(is_available=lambda: True, device_count=lambda: 1, current_device=lambda: 0,
                   get_device_name=lambda *a: _Properties.name, get_device_properties=lambda *a: _Properties(),
                   _lazy_init=lambda: None, set_device=lambda d: None, synchronize=_synchronize,
                   empty_cache=lambda: None, Stream=_Stream, current_stream=lambda *a: _Stream(),
                   stream=lambda s: contextlib.nullcontext(), Event=_Event, CUDAGraph=SimGraph, graph=_graph,
                   graph_pool_handle=lambda: object())
    try:
        with contextlib.ExitStack() as stack:
            for name, value in patches.items():
                stack.enter_context(mock.patch.object(torch.cuda, name, value))
            stack.enter_context(mock.patch.object(torch, "save", _save_from_device))
            stack.enter_context(mock.patch.object(torch, "load", _load_to_device))
            stack.enter_context(mock.patch.object(torch, "Generator", _Generator))
            stack.enter_context(mock.patch.object(InterpretedFunction, "run", _triton_launch(InterpretedFunction.run)))
            # model.to('cuda') swaps each parameter for a SimCuda one (a parameter whose data is set to a
            # wrapper tensor would dispatch as neither)
            stack.enter_context(mock.patch.object(torch.__future__, "get_swap_module_params_on_conversion",
                                                  lambda: True))
            stack.enter_context(mock.patch.object(threading.Thread, "run", _thread_run_simulated))
            stack.enter_context(_Factories())
            yield
    finally:
        torch._C._set_only_lift_cpu_tensors(lift)
        _state.graph = None


def main(argv: list[str]) -> int:
    """`python tests/sim_cuda.py -m MODULE | -c CODE | - | SCRIPT [ARGS...]`: run it as `python` would, on the
    simulated device (scripts/gpu_check.sh --sim runs its device stages so). Sets TRITON_INTERPRET=1 itself,
    before triton is imported."""
    import runpy
    import sys

    if not argv or (argv[0] in ("-m", "-c") and len(argv) < 2):
        print("usage: python tests/sim_cuda.py -m MODULE | -c CODE | - | SCRIPT [ARGS...]", file=sys.stderr)
        return 2
    os.environ["TRITON_INTERPRET"] = "1"
    sys.path.insert(0, os.getcwd())  # as `python -m` / `-c` do
    with simulated_cuda():
        try:
            if argv[0] == "-m":
                sys.argv = [argv[1], *argv[2:]]
                runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
            elif argv[0] in ("-c", "-"):
                code = argv[1] if argv[0] == "-c" else sys.stdin.read()
                sys.argv = [argv[0], *argv[2 if argv[0] == "-c" else 1:]]
                exec(compile(code, "<string>" if argv[0] == "-c" else "<stdin>", "exec"), {"__name__": "__main__"})
            else:
                sys.argv = list(argv)
                runpy.run_path(argv[0], run_name="__main__")
        except SystemExit as done:
            return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
