"""Continuous batching: `Engine(model, slots=N)` serves sampling requests that join a running batch between
network calls, so a pipeline gets each request at the latency of its own NFE, not of the slowest request in
a batch it waited to fill.

    with dmcmc_fast.Engine(model, slots=64) as engine:
        a = engine.submit("heun", num=3, nfe=9, seed=1)          # a concurrent.futures.Future
        b = engine.submit("dpmpp_2m", num=1, nfe=20, seed=7, model_kwargs={"labels": torch.tensor([3])})
        out = a.result()                                           # == api.sample(model, "heun", 3, 9, seed=1)

How it works. A request is checked as `api.sample` checks it (a bad one fails its own future with the usual
one-line error) and split into *pieces*: each piece is one sampler call on some of the request's chains, run
by the same code `api.sample` runs (`api._Run.request`, `api._run_located`), in its own thread, on a network
stand-in (`_SlotNet`). A piece holds one slot of the running batch per chain. Every network call a piece
makes is posted to the engine; when every running piece has posted its next call (or finished), the engine
packs all posted rows into one batch, calls the network once, and hands each piece its rows back. Between
two network calls new pieces take free slots and finished ones leave: that is the "iteration-level" batching
of LLM serving (Orca, vLLM), at the granularity of one NFE.

Because only the network call is shared, anything `api.sample` runs can share it: every sampler (batch
samplers, the adaptive rk45 / dpm_adaptive, DLG), any NFE, grid, seed, options and `model_kwargs` rows, in
one batch. A request's samples are the ones `api.sample` gives for the same arguments, whatever shares its
batch: sample i is chain i with its own Philox stream and its own sigmas, so they are bit for bit equal with
a batch-invariant (row-wise) network, and equal to rounding with a real one (a GEMM's rounding depends on its
row count). Calls whose `model_kwargs` differ in kind (keys, dtypes, shared values) go to the network as
separate calls of the same step.

The host books (which slot holds which piece and chain, each piece's network calls, FIFO admission into free
slots, the packed layout of a call) are the C++ extension's `SlotBooks` (`csrc/slots.cpp`). A fixed-step
sampler's number of network calls is the same for every piece of its kind: learnt from the first such piece,
it tells the engine, with no device read, which pieces finish at a step, so their slots go to waiting
requests at the very next call.

DLG: a request runs its own chains (its seed, `chains`, options; samples equal `api.sample`'s), as one piece
holding one slot per chain of its group (`chains` <= slots) until its last block. Its network calls share the
batch; its noise-level classifier runs in the piece's thread.

On CUDA the network runs through the engine's `GraphedDenoiser` (graphs per batch-size bucket up to `slots`);
the samplers' updates run eagerly in their pieces (the whole-step graphs of `api.sample` are per batch, not
per slot: not used here).
"""
from __future__ import annotations

import itertools
import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch

from dmcmc_fast import api
from dmcmc_fast.engine.graph import graphed_for_sampling
from dmcmc_fast.models import kwargs as kw
from dmcmc_fast.validate import check_int

MAX_SLOTS = 1 << 16


class EngineClosed(RuntimeError):
    """The engine was closed before the request finished."""


class RequestCancelled(Exception):
    """Raised inside a piece whose request's future was cancelled (its thread unwinds, its slots free)."""


@dataclass(eq=False)
class _Request:
    future: Future
    run: "api._Run"
    whole: bool  # DLG: one piece for the whole run; else chains split anywhere
    next_chain: int = 0  # the first chain not yet given to a piece
    running: int = 0  # pieces running
    batches: list = field(default_factory=list)  # finished SampleBatches
    failed: bool = False

    @property
    def left(self) -> int:
        """Slots this request still wants (chains not yet in a piece; DLG: its group, once)."""
        if self.whole:
            return self.run.batch_size if self.next_chain == 0 else 0
        return self.run.num - self.next_chain


@dataclass(eq=False)
class _Piece:
    owner: int
    request: _Request
    start: int
    stop: int
    call: tuple | None = None  # posted (x, sigma, model_kwargs), waiting for the network
    out: object = None  # the network's rows for it, or the exception to raise in it
    abort: BaseException | None = None
    finished: bool = False
    thread: threading.Thread | None = None


class _SlotNet:
    """The network as a piece sees it: each call is posted to the engine and answered by a shared batch."""

    handles_dtype = True  # the engine's network casts (in_network_dtype)

    def __init__(self, engine: "Engine", piece: _Piece, model):
        self._engine, self._piece = engine, piece
        for attr in ("shape", "sigma_min", "sigma_max", "data_range"):
            if hasattr(model, attr):
                setattr(self, attr, getattr(model, attr))

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **model_kwargs) -> torch.Tensor:
        return self._engine._post(self._piece, x, sigma, model_kwargs)


class Engine:
    """A running batch of `slots` rows that sampling requests join and leave between network calls.

    `model`: any denoiser `api.sample` takes; `device`: as `api.sample`'s (default where the model's weights
    are); `graph` (auto | on | network | off): how the network runs (`engine.graph.graph_mode`).
    `background=True`: a thread serves the requests; `False`: call `step()` (or `run_until_idle()`) yourself.
    `submit(...)` returns a `concurrent.futures.Future` of the `SampleOutput` that `api.sample` gives for the
    same arguments; `future.cancel()` withdraws a request, also midway (its slots free at the next call).
    `close()` (or leaving a `with` block) fails what is still pending with `EngineClosed` and ends every thread.
    `stats`: network calls made, rows run, requests done / failed.
    """

    def __init__(self, model, slots: int = 8, device=None, graph: str = "auto", background: bool = True):
        from dmcmc_fast._C import SlotBooks

        check_int("slots", slots, 1, MAX_SLOTS)
        api.check_model(model)
        if not isinstance(background, bool):
            raise ValueError(f"background must be True or False, got {background!r}")
        self.model, self.slots = model, slots
        self.device = api.sampling_device(model, device)
        self.net, self.graphed = graphed_for_sampling(model, graph, self.device, slots)
        if isinstance(model, torch.nn.Module):
            model.eval()
        self.books = SlotBooks(slots)
        self.stats = {"network_calls": 0, "rows": 0, "requests_done": 0, "requests_failed": 0}
        self._cv = threading.Condition()
        self._queue: deque[_Request] = deque()
        self._pieces: dict[int, _Piece] = {}
        self._owners = itertools.count()
        self._calls_of_kind: dict = {}  # a fixed-step kind -> its network calls per piece (learnt once)
        self._closed = False
        self._thread = None
        if background:
            self._thread = threading.Thread(target=self._serve, name="dmcmc-engine", daemon=True)
            self._thread.start()

    # ---- the door ----
    def submit(self, sampler: str, num: int = 1, nfe: int = 35, seed: int = 0, model_kwargs: dict | None = None,
               sigmas=None, x_T=None, **options) -> Future:
        """A request for `num` samples of `sampler` at `nfe` (as `api.sample`): its Future. A request that
        `api.sample` would refuse fails its future with that error; the engine serves the rest."""
        future: Future = Future()
        if self._closed:
            future.set_exception(EngineClosed("the engine is closed; make a new Engine"))
            return future
        try:
            sigmas = api._default_grid(self.model, sampler, nfe, options, sigmas)
            run = api._Run(self.model, sampler, num, nfe, seed, self.slots, self.device, None, False, None, 0, 1,
                           "off", dict(model_kwargs=model_kwargs, callback=None, sigmas=sigmas, x_T=x_T), options)
        except Exception as err:  # the one-line errors of api.sample
            future.set_exception(err)
            return future
        run.graph = "network"  # DLG: its blocks run step by step (each network call is a shared one here)
        run.graph_info = dict(self.graphed.describe()) if self.graphed is not None else \
            {"mode": "eager", "captured": [], "fallback_reason": None}
        run.graph_info["engine"] = {"slots": self.slots}
        request = _Request(future, run, whole=run.blocks is not None)
        with self._cv:
            if self._closed:
                future.set_exception(EngineClosed("the engine is closed; make a new Engine"))
                return future
            self._queue.append(request)
            self._cv.notify_all()
        return future

    def step(self) -> bool:
        """One network call of the running batch: admit waiting requests into free slots, wait until every
        running piece has posted its next call (or finished), run the network once on all posted rows and
        answer each piece. False when nothing is running or waiting (for your own loop; not with
        `background=True`)."""
        if self._thread is not None and threading.current_thread() is not self._thread:
            raise RuntimeError("step() is for an Engine made with background=False; this one serves in a thread")
        return self._step()

    def run_until_idle(self):
        """`step()` until every submitted request is done (background=False)."""
        while self.step():
            pass

    def close(self):
        """Fail pending requests with `EngineClosed`, stop the pieces and the serving thread (joined)."""
        with self._cv:
            if self._closed:
                return
            self._closed = True
            err = EngineClosed("the engine was closed before this request finished")
            while self._queue:
                self._fail(self._queue.popleft(), err)
            for piece in list(self._pieces.values()):
                self._fail(piece.request, err)
            self._cv.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        for piece in list(self._pieces.values()):
            if piece.thread is not None:
                piece.thread.join()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc):
        self.close()

    def slot_table(self) -> list[tuple[int, int, int]]:
        """Per slot: (piece, chain, network calls made), -1 where free (the C++ books)."""
        with self._cv:
            owners, chains, calls = self.books.table()
        return list(zip(owners, chains, calls))

    # ---- serving ----
    def _serve(self):
        while True:
            with self._cv:
                while not self._closed and not self._queue and not self._pieces:
                    self._cv.wait()
                if self._closed:
                    return
            self._step()

    def _step(self) -> bool:
        with self._cv:
            self._drop_cancelled()
            self._retire_due()
            self._admit()
            # every running piece posts its next call or finishes (its setup or update runs in its thread)
            while not self._closed and any(p.call is None and not p.finished for p in self._pieces.values()):
                self._cv.wait()
            posted = [p for p in self._pieces.values() if p.call is not None]
            calls = [p.call for p in posted]
            for p in posted:
                p.call = None
            if posted:
                offsets = self.books.record_call([p.owner for p in posted], [c[0].shape[0] for c in calls])
            busy = bool(self._pieces or self._queue) and not self._closed
        if posted:
            order = sorted(range(len(posted)), key=offsets.__getitem__)  # the packed batch in slot order
            answers = self._network([posted[i] for i in order], [calls[i] for i in order])
            with self._cv:
                for p, out in answers:
                    p.out = out
                self._cv.notify_all()
        return busy

    def _network(self, pieces: list[_Piece], calls: list[tuple]) -> list[tuple[_Piece, object]]:
        """One shared network call per kind of `model_kwargs` among the posted calls: rows packed, the outputs
        split back; an error goes to every piece of its call (the engine goes on)."""
        groups: dict[tuple, list[int]] = {}
        for i, (x, _, mk) in enumerate(calls):
            groups.setdefault(_call_kind(x, mk), []).append(i)
        answers = []
        for members in groups.values():
            xs = [calls[i][0] for i in members]
            try:
                x = torch.cat(xs) if len(xs) > 1 else xs[0]
                sigma = torch.cat([calls[i][1] for i in members]) if len(xs) > 1 else calls[members[0]][1]
                mk = _pack_kwargs([calls[i][2] for i in members], [t.shape[0] for t in xs])
                with torch.no_grad():
                    out = self.net(x, sigma, **mk) if x.shape[0] else x.clone()
                self.stats["network_calls"] += 1
                self.stats["rows"] += x.shape[0]
                at = 0
                for i, xi in zip(members, xs):
                    answers.append((pieces[i], out[at:at + xi.shape[0]]))
                    at += xi.shape[0]
            except Exception as err:  # a model error fails the requests in this call, not the engine
                answers.extend((pieces[i], err) for i in members)
        return answers

    def _post(self, piece: _Piece, x, sigma, model_kwargs: dict) -> torch.Tensor:
        """A piece's network call: posted, then answered by the engine's next shared call."""
        with self._cv:
            if piece.abort is not None:
                raise piece.abort
            piece.call, piece.out = (x, sigma, model_kwargs), None
            self._cv.notify_all()
            while piece.out is None:
                self._cv.wait()
            out, piece.out = piece.out, None
        if isinstance(out, BaseException):
            raise out
        return out

    # ---- books (under the lock) ----
    def _kind(self, request: _Request):
        run = request.run
        if request.whole or not run.spec.fixed_steps:
            return None
        return (run.spec.name, run.nfe, repr(sorted(run.opts.items())), repr(sorted(run.inputs)))

    def _admit(self):
        """Waiting requests into free slots, in arrival order (the C++ books' `grant`)."""
        if not self._queue or self._closed:
            return
        waiting = list(self._queue)
        grants = self.books.grant([r.left for r in waiting], [not r.whole for r in waiting])
        for request, n in zip(waiting, grants):
            if n == 0:
                continue
            start, stop = request.next_chain, request.next_chain + n
            if request.whole:
                start, stop = 0, request.run.num
            owner = next(self._owners)
            kind = self._kind(request)
            slots = self.books.admit(owner, n, start, self._calls_of_kind.get(kind, 0) if kind else 0)
            assert len(slots) == n, (n, slots)
            request.next_chain = stop
            request.running += 1
            piece = _Piece(owner, request, start, stop)
            self._pieces[owner] = piece
            piece.thread = threading.Thread(target=self._piece_main, args=(piece,), name=f"dmcmc-piece-{owner}",
                                            daemon=True)
            piece.thread.start()
        while self._queue and self._queue[0].left == 0:
            self._queue.popleft()
        if any(r.left == 0 for r in self._queue):
            self._queue = deque(r for r in self._queue if r.left > 0)

    def _retire_due(self):
        """Pieces that made all their expected calls finish now (their last update): wait for them, so their
        slots go to waiting requests at this very call."""
        due = self.books.due() if self._queue else []
        for owner in due:
            piece = self._pieces.get(owner)
            while piece is not None and not piece.finished and piece.call is None and not self._closed:
                self._cv.wait()

    def _drop_cancelled(self):
        for request in list(self._queue):
            if request.future.cancelled():
                self._queue.remove(request)
        for piece in self._pieces.values():
            if piece.request.future.cancelled() and piece.abort is None:
                piece.abort = RequestCancelled()
                if piece.call is not None:  # waiting for an answer: it gets the abort instead
                    piece.call, piece.out = None, piece.abort

    def _fail(self, request: _Request, err: BaseException):
        """`request` failed (or the engine closed): its future gets `err` once, its running pieces abort."""
        if request.failed:
            return
        request.failed = True
        for piece in self._pieces.values():
            if piece.request is request and piece.abort is None:
                piece.abort = RequestCancelled()
                if piece.call is not None:
                    piece.call, piece.out = None, piece.abort
        if request in self._queue:
            self._queue.remove(request)
        if not request.future.cancelled() and request.future.set_running_or_notify_cancel():
            request.future.set_exception(err)
            self.stats["requests_failed"] += 1

    # ---- a piece's thread ----
    def _piece_main(self, piece: _Piece):
        request, run = piece.request, piece.request.run
        result, error = None, None
        try:
            net = _SlotNet(self, piece, self.model)
            if request.whole:  # DLG: the run is this piece's alone
                run.net = net
                result = list(run.batches(progress=False))
            else:  # chains start..stop on a counter of their own that calls the engine
                req = run.request(piece.start, piece.stop)
                req.model.model = net
                x = api._run_located(req, run.spec).float().cpu()
                result = [api.SampleBatch(piece.start, piece.stop, x, req.model.nfe.cpu())]
        except RequestCancelled:
            pass
        except BaseException as err:  # noqa: BLE001 - handed to the request's future
            error = err
        with self._cv:  # the request's future is settled before its last piece leaves (run_until_idle sees it)
            kind = self._kind(request)
            if kind is not None and error is None and result is not None and kind not in self._calls_of_kind:
                self._calls_of_kind[kind] = self.books.calls(piece.owner)
            request.running -= 1
            if error is not None:
                self._fail(request, error)
            elif result is not None and not request.failed:
                request.batches.extend(result)
                if request.left == 0 and request.running == 0:
                    self._finish(request)
            piece.finished = True
            self.books.release(piece.owner)
            del self._pieces[piece.owner]
            self._cv.notify_all()

    def _finish(self, request: _Request):
        """All of `request`'s chains are done: its `SampleOutput`, as `api.sample` joins its batches."""
        out = api._output(sorted(request.batches, key=lambda b: b.start), request.run)
        if request.future.set_running_or_notify_cancel():
            request.future.set_result(out)
            self.stats["requests_done"] += 1


def _call_kind(x: torch.Tensor, model_kwargs: dict) -> tuple:
    """What calls must share to go to the network together: x's dtype and row shape, and the kind of their
    `model_kwargs` (per-row tensors by shape and dtype, anything else by identity)."""
    out = [x.dtype, tuple(x.shape[1:])]
    for path, leaf in kw.leaves(model_kwargs):
        if torch.is_tensor(leaf) and leaf.ndim > 0 and leaf.shape[0] == x.shape[0]:
            out.append((path, "rows", tuple(leaf.shape[1:]), leaf.dtype))
        else:
            out.append((path, "value", id(leaf)))
    return tuple(out)


def _pack_kwargs(kwargs: list[dict], rows: list[int]) -> dict:
    """The calls' `model_kwargs` as one: per-row tensors concatenated in call order, shared values as they are."""
    if len(kwargs) == 1 or not kwargs[0]:
        return kwargs[0]
    leaves = [dict(kw.leaves(k)) for k in kwargs]

    def build(value, path: str):
        if isinstance(value, dict):
            return {k: build(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(build(v, f"{path}[{i}]") for i, v in enumerate(value))
        if torch.is_tensor(value) and value.ndim > 0 and value.shape[0] == rows[0]:
            return torch.cat([lv[path] for lv in leaves])
        return value
    return build(kwargs[0], "")

