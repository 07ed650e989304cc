"""CUDA-graph capture of the score network and of whole sampler steps.

`GraphedDenoiser(model, shape)` wraps any denoiser `D(x, sigma)` (a module or a callable). Per
batch-size bucket it keeps static input buffers `x [b, *shape]`, `sigma [b]` and captures one forward
into a CUDA graph (warm-up on a side stream first; all buckets share one memory pool, captured
lazily on first use). A call with batch B copies its rows into the smallest bucket b >= B (batches
above the largest bucket run in chunks of it), replays, and returns the first B output rows. Rows
B..b are padding: they keep earlier, finite inputs, which is harmless for a row-independent model
(eval mode; no batch norm in training mode). Sigma travels as a device buffer, so a sampler loop
never reads a value back to the host.

`model_kwargs` (class labels, text embeddings: `dmcmc_fast.models.kwargs`) are captured too, with static
buffers: a call's tensors whose leading dimension is the batch B are copied into `[b, ...]` buffers like
`x` (padding rows keep earlier rows), other tensors into buffers of their own shape, and the other values
(flags, scales) are part of the bucket's key, so each distinct signature (names, shapes, dtypes, values)
gets its own buffers and graph. No eager fallback is needed for conditioning.

`GraphedStep(fn, buffers)` captures a whole step `fn(buffers)` (forward + fused update + classifier +
argmax) that reads and writes only the device tensors in `buffers`: the step counter, sigma and any
other value that varies between steps live there, so every replay advances the state with no host
sync. Warm-up runs on a snapshot of the buffers, so capturing does not advance the state. DLG's rounds of
blocks run so (`engine.dlg_whole`); a batch sampler's whole batch is captured by `engine.whole_run`.

Modes: "auto" (graphs on CUDA, plain eager elsewhere: a no-op on CPU), "graph" (graphs; where capture
fails the wrapper falls back to eager and logs the reason, kept in `.fallback_reason`), "static"
(the static-buffer, bucketed path of a graph but run eagerly: the CPU twin of replay, used to test
bucketing and padding without a GPU), "eager" (call the model directly).
"""
from __future__ import annotations

import bisect
import logging
import weakref
from typing import Callable

import torch

from dmcmc_fast import caches
from dmcmc_fast.models import kwargs as kw
from dmcmc_fast.models.base import in_network_dtype, model_device, network_tensors

log = logging.getLogger("dmcmc_fast.engine")

MODES = ("auto", "graph", "static", "eager")
DEFAULT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def _check_mode(mode: str, device: torch.device) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "auto":
        return "graph" if device.type == "cuda" else "eager"
    return mode


def capture_graph(fn: Callable[[], object], warmup: int, device: torch.device, pool=None):
    """Warm `fn` up `warmup` times (on a side stream on CUDA), then capture one call into a CUDA graph.

    Returns `(graph, result of the captured call)`; the result's tensors are the graph's static
    outputs. Off CUDA the warm-up still runs (so callers exercise it everywhere) and capture raises.
    """
    if device.type != "cuda":
        for _ in range(warmup):
            fn()
        raise RuntimeError(f"CUDA graphs need a CUDA device, the buffers are on {device}")
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool):
        out = fn()
    return graph, out


class _Bucket:
    """Static buffers of one batch size (and kwargs signature) and the way to run the model on them."""

    def __init__(self, size: int, shape, device, dtype, fill_sigma: float, model_kwargs: dict, batch: int):
        self.size = size
        self.x = torch.zeros(size, *shape, device=device, dtype=dtype)
        self.sigma = torch.full((size,), fill_sigma, device=device, dtype=dtype)

        def buffer(t):  # per-sample rows padded to the bucket, or a copy of a shared tensor
            per_sample = t.ndim > 0 and t.shape[0] == batch
            return torch.zeros((size, *t.shape[1:]) if per_sample else t.shape, device=device, dtype=t.dtype)

        self.kwargs = kw.tree_map(buffer, model_kwargs)  # the same tree, tensors replaced by static buffers
        self.out: torch.Tensor | None = None
        self.graph = None

    def load(self, x: torch.Tensor, sigma: torch.Tensor, model_kwargs: dict):
        """Copy a call's inputs into the static buffers (rows 0..B-1)."""
        B = x.shape[0]
        self.x[:B].copy_(x)
        self.sigma[:B].copy_(sigma)
        for (_, buf), (_, t) in zip(kw.leaves(self.kwargs), kw.leaves(model_kwargs)):
            if torch.is_tensor(t):  # per-sample as in `kw.signature`, which keyed this bucket
                (buf[:B] if t.ndim > 0 and t.shape[0] == B else buf).copy_(t)

    def run(self, model):
        return model(self.x, self.sigma, **self.kwargs)


class GraphedDenoiser:
    """A denoiser whose forward is a CUDA graph per batch-size bucket (see the module docstring).

    Args: `model` a denoiser `D(x, sigma [B], **model_kwargs)`; `shape` the per-sample shape (default `model.shape`);
    `buckets` the captured batch sizes (positive, any order); `mode` one of MODES; `warmup` forward
    passes before capture (>= 1 on CUDA); `fill_sigma` the sigma of padding rows before first use
    (> 0); `dtype` of the static buffers (default: that of the first input); `copy_out` return a copy (True) or a view of the static
    output that the next call overwrites (False).
    """

    handles_dtype = True  # the model it captures is called as it is (`graphed_for_sampling` wraps it first)

    def __init__(self, model, shape=None, buckets=DEFAULT_BUCKETS, mode: str = "auto", device=None,
                 dtype: torch.dtype | None = None, warmup: int = 3, fill_sigma: float = 1.0, copy_out: bool = True):
        shape = tuple(shape if shape is not None else getattr(model, "shape", ()))
        if not shape:
            raise ValueError("shape must be given (the per-sample shape) when the model has no .shape")
        buckets = sorted({int(b) for b in buckets})
        if not buckets or buckets[0] < 1:
            raise ValueError(f"buckets must be a non-empty list of batch sizes >= 1, got {buckets}")
        if not isinstance(warmup, int) or warmup < 0:
            raise ValueError(f"warmup must be an integer >= 0, got {warmup!r}")
        if not fill_sigma > 0:
            raise ValueError(f"fill_sigma must be > 0, got {fill_sigma}")
        self.model, self.shape, self.buckets = model, shape, buckets
        self.device = torch.device(device) if device is not None else _model_device(model)
        self.mode = _check_mode(mode, self.device)
        self.dtype, self.warmup, self.fill_sigma, self.copy_out = dtype, warmup, fill_sigma, copy_out
        self.fallback_reason: str | None = None
        self._buckets: dict = {}  # size, or (size, kwargs signature) -> static buffers (and graph)
        self._pool = None
        self.runs = None  # whole batches captured with this network (`engine.whole_run`), made when first used
        for attr in ("sigma_min", "sigma_max", "data_range"):
            if hasattr(model, attr):
                setattr(self, attr, getattr(model, attr))

    def describe(self) -> dict:
        """What ran: the mode, the captured bucket sizes and why it is not a CUDA graph (if so)."""
        return {"mode": self.mode, "captured": self.captured, "fallback_reason": self.fallback_reason}

    def whole_runs(self):
        """The whole-batch graphs of this network (`engine.whole_run.WholeRunGraphs`), or None where the network
        itself is not captured (eager or static mode, a failed capture): they share its fate."""
        if self.mode != "graph":
            return None
        if self.runs is None:
            from dmcmc_fast.engine.whole_run import WholeRunGraphs

            self.runs = WholeRunGraphs()
        return self.runs

    # ---- bucketing ----
    def bucket_for(self, batch: int) -> int:
        """The smallest captured batch size >= `batch` (the largest one when `batch` exceeds all)."""
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        i = bisect.bisect_left(self.buckets, batch)
        return self.buckets[min(i, len(self.buckets) - 1)]

    @property
    def captured(self) -> list[int]:
        """Bucket sizes that hold a captured CUDA graph."""
        return sorted({bk.size for bk in self._buckets.values() if bk.graph is not None})

    def _bucket(self, size: int, dtype: torch.dtype, model_kwargs: dict, batch: int) -> _Bucket:
        key = (size, kw.signature(model_kwargs, batch)) if model_kwargs else size
        bk = self._buckets.get(key)
        if bk is None:
            bk = _Bucket(size, self.shape, self.device, self.dtype or dtype, self.fill_sigma, model_kwargs, batch)
            if self.mode == "graph":
                self._capture(bk)
            self._buckets[key] = bk
        return bk

    def _capture(self, bk: _Bucket):
        try:
            if self._pool is None and self.device.type == "cuda":
                self._pool = torch.cuda.graph_pool_handle()
            with torch.no_grad():
                bk.graph, bk.out = capture_graph(lambda: bk.run(self.model), max(1, self.warmup), self.device,
                                                 self._pool)
        except Exception as err:  # capture of an arbitrary model can fail in many ways: fall back, say why
            self.fallback_reason = f"{type(err).__name__}: {err}"
            log.warning("GraphedDenoiser: capture of batch %d failed, running eagerly (%s)", bk.size,
                        self.fallback_reason)
            self.mode = "eager"
            bk.graph, bk.out = None, None

    # ---- calls ----
    @torch.no_grad()
    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **model_kwargs) -> torch.Tensor:
        if self.mode == "eager":
            return self.model(x, sigma, **model_kwargs)
        B = x.shape[0]
        if tuple(x.shape[1:]) != self.shape or sigma.shape != (B,):
            raise ValueError(f"x must be [B, {', '.join(map(str, self.shape))}] and sigma [B]; "
                             f"got {tuple(x.shape)} and {tuple(sigma.shape)}")
        top = self.buckets[-1]
        if B > top:
            def chunk(i):  # per-sample kwargs (leading dimension B) follow their rows
                return kw.tree_map(lambda t: t[i:i + top] if t.ndim > 0 and t.shape[0] == B else t, model_kwargs)
            return torch.cat([self(x[i:i + top], sigma[i:i + top], **chunk(i)) for i in range(0, B, top)])
        bk = self._bucket(self.bucket_for(B), x.dtype, model_kwargs, B)
        if self.mode == "eager":  # capture just failed
            return self.model(x, sigma, **model_kwargs)
        bk.load(x, sigma, model_kwargs)
        if bk.graph is not None:
            bk.graph.replay()
        elif bk.out is None:
            bk.out = bk.run(self.model)
        else:  # the static twin of replay: the same output buffer, overwritten by every call
            bk.out.copy_(bk.run(self.model))
        out = bk.out[:B]
        return out.clone() if self.copy_out else out


class GraphedStep:
    """A whole sampler step `fn(buffers)` captured once and replayed (see the module docstring).

    `fn` must read and write only the tensors of `buffers` (a dict of device tensors, updated in
    place, e.g. `buffers["x"].copy_(...)`, `buffers["step"].add_(1)`) and must not sync with the host.
    Warm-up runs `warmup` times on the live buffers and then restores them from a snapshot.
    """

    def __init__(self, fn: Callable[[dict], None], buffers: dict, mode: str = "auto", warmup: int = 2):
        if not buffers or not all(torch.is_tensor(t) for t in buffers.values()):
            raise ValueError("buffers must be a non-empty dict of tensors (the step's device state)")
        if not isinstance(warmup, int) or warmup < 0:
            raise ValueError(f"warmup must be an integer >= 0, got {warmup!r}")
        devices = {t.device for t in buffers.values()}
        if len(devices) != 1:
            raise ValueError(f"buffers must all live on one device, got {sorted(map(str, devices))}")
        self.fn, self.buffers, self.warmup = fn, buffers, warmup
        self.device = devices.pop()
        self.mode = _check_mode(mode, self.device)
        if self.mode == "static":
            self.mode = "eager"  # a step has no batch buckets: static and eager are the same
        self.fallback_reason: str | None = None
        self.graph = None
        if self.mode == "graph":
            self._capture()

    def _capture(self):
        snapshot = {k: t.clone() for k, t in self.buffers.items()}
        try:
            with torch.no_grad():
                self.graph, _ = capture_graph(lambda: self.fn(self.buffers), max(1, self.warmup), self.device)
        except Exception as err:  # fall back to eager, say why
            self.fallback_reason = f"{type(err).__name__}: {err}"
            log.warning("GraphedStep: capture failed, running eagerly (%s)", self.fallback_reason)
            self.mode, self.graph = "eager", None
        finally:
            for k, t in self.buffers.items():
                t.copy_(snapshot[k])

    @torch.no_grad()
    def __call__(self):
        if self.graph is not None:
            self.graph.replay()
        else:
            self.fn(self.buffers)


GRAPH_CHOICES = ("auto", "on", "network", "off")


def graph_mode(graph: str, device) -> tuple[str, str | None]:
    """The GraphedDenoiser mode the sampling path uses for `graph` (auto | on | network | off) on `device`, and
    the reason when that is not a captured CUDA graph although graphs were asked for (None otherwise).

    auto:    CUDA graphs on a CUDA device (whole batches of a fixed-step sampler, DLG's blocks, else the network:
             `engine.whole_run`, `engine.dlg_whole`), the plain eager call elsewhere (nothing to capture on a CPU).
    on:      the same; off CUDA the static-buffer path run eagerly (the captured path's CPU twin), named.
    network: the network alone as CUDA graphs, every update launched eagerly (what ran before whole batches
             were captured: a baseline, and a way around a whole-batch capture that misbehaves).
    off:     the plain eager call.
    """
    if graph not in GRAPH_CHOICES:
        raise ValueError(f"graph must be one of {', '.join(GRAPH_CHOICES)}, got {graph!r}")
    cuda = (device if isinstance(device, torch.device) else torch.device(device)).type == "cuda"
    if graph == "off":
        return "eager", None
    if cuda:
        return "graph", None
    if graph == "network":
        return "eager", None
    if graph == "on":
        return "static", f"CUDA graphs need a CUDA device, sampling on {torch.device(device)}: running the " \
                         "graph path's static buffers eagerly"
    return "eager", None


# model -> {(mode, device, buckets): (storage key, GraphedDenoiser)}: a later run on the same model reuses
# the graphs captured by an earlier one (a capture costs warm-up forwards; a low-latency caller pays it once)
_REUSE: "weakref.WeakKeyDictionary" = caches.process_cache(
    "graph wrappers", "`engine.graph._REUSE` (weak per model)", "a `GraphedDenoiser` per (mode, device, buckets) with "
    "its bucket graphs and its whole-batch graphs (`.runs`)", "the weights' storage moving (`.to()`, reassigned "
    "parameters): a new wrapper replaces it; the model going away", store=weakref.WeakKeyDictionary())


def _storage_key(model) -> tuple:
    """Where the model's tensors live (data pointer, shape): a captured graph reads them by address, so it
    is reused only while they stay put (`.to()` round trips or reassigned parameters make new ones)."""
    return tuple((t.data_ptr(), tuple(t.shape)) for t in network_tensors(model))


def graphed_for_sampling(model, graph: str, device, batch_size: int):
    """`(denoiser to sample with, GraphedDenoiser or None)`: the model (called in its network's dtype,
    `in_network_dtype`) behind a GraphedDenoiser whose
    buckets hold `batch_size` and the powers of two below it (the last batch, DLG's and rk45's subsets),
    the one an earlier run on this model made when its tensors have not moved since."""
    mode, reason = graph_mode(graph, device)
    if mode == "eager":
        return in_network_dtype(model), None
    if reason is not None:
        log.warning("graph=%s: %s", graph, reason)
    buckets = tuple(sorted({b for b in DEFAULT_BUCKETS if b < batch_size} | {batch_size}))
    key, storage = (mode, str(torch.device(device)), buckets), _storage_key(model)
    try:
        runs = _REUSE.setdefault(model, {})
    except TypeError:  # not weak-referenceable (or unhashable): no reuse
        runs = {}
    if key in runs and runs[key][0] == storage:
        return runs[key][1], runs[key][1]
    graphed = GraphedDenoiser(in_network_dtype(model), shape=getattr(model, "shape", None), buckets=buckets,
                              mode=mode, device=device)
    graphed.fallback_reason = graphed.fallback_reason or reason
    runs[key] = (storage, graphed)  # replaces graphs of moved tensors: they would read stale memory
    return graphed, graphed


def _model_device(model) -> torch.device:
    where = model_device(model)
    return where if where is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
