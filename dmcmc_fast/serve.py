"""Continuous batching: `Engine(model, slots=N)` serves sampling requests that join a running batch between
network calls, so a pipeline gets each request at the latency of its own NFE, not of the slowest request in
a batch it waited to fill.

    with dmcmc_fast.Engine(model, slots=64) as engine:
        a = engine.submit("heun", num=3, nfe=9, seed=1)          # a concurrent.futures.Future
        b = engine.submit("dpmpp_2m", num=1, nfe=20, seed=7, model_kwargs={"labels": torch.tensor([3])})
        out = a.result()                                           # == api.sample(model, "heun", 3, 9, seed=1)

How it works. A request is checked as `api.sample` checks it (a bad one fails its own future with the usual
one-line error) and split into *pieces*: each piece is one sampler call on some of the request's chains, run
by the same code `api.sample` runs (`api._Run.request`, `api._run_located`) on a network stand-in
(`_SlotNet`), as a coroutine: on a worker thread that runs only while the engine has handed it the baton, so
exactly one thread runs at a time (no lock contention, no GIL convoy); workers are reused piece after piece. A piece holds one slot of the running batch
per chain. A piece's network call posts its rows and hands the baton back; once every running piece has
posted, the engine packs all posted rows into one batch, calls the network once, and resumes each piece in
turn with its rows, which runs its update up to its next call (or to its end). Between two network calls
new pieces take free slots (they run their setup up to their first call) and finished ones leave: the
"iteration-level" batching of LLM serving (Orca, vLLM), at the granularity of one NFE.

Because only the network call is shared, anything `api.sample` runs can share it: every sampler (batch
samplers, the adaptive rk45 / dpm_adaptive, DLG), any NFE, grid, seed, options and `model_kwargs` rows, in
one batch. A request's samples are the ones `api.sample` gives for the same arguments, whatever shares its
batch: sample i is chain i with its own Philox stream and its own sigmas, so they are bit for bit equal with
a batch-invariant (row-wise) network, and equal to rounding with a real one (a GEMM's rounding depends on its
row count). Calls whose `model_kwargs` differ in kind (keys, dtypes, shared values) go to the network as
separate calls of the same step.

The host books (which slot holds which piece and chain, each piece's network calls, FIFO admission into free
slots, the packed layout of a call) are the C++ extension's `SlotBooks` (`csrc/slots.cpp`). Nothing is read
back from the device to decide who leaves: a piece that finishes has returned from its sampler during its
resume, so its slots go to waiting requests at the very next call.

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

import numpy as np
import torch

from dmcmc_fast import api
from dmcmc_fast.engine.graph import graphed_for_sampling
from dmcmc_fast.models import kwargs as kw
from dmcmc_fast.models.base import take_model_attrs
from dmcmc_fast.samplers import get_sampler
from dmcmc_fast.validate import check_int

MAX_SLOTS = 1 << 16
POOL_BLOCKS = 64  # blocks per chain of one DLG pool run: its chains' initialisation is shared by as many samples


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
    pool: "_Pool | None" = None  # a DLG request without a seed: samples from the pool's warm chains
    want: int = 0  # ... how many
    taken: list = field(default_factory=list)  # ... taken so far: (x [1, ...], nfe, meta of one sample)
    runs_pool: "_Pool | None" = None  # the internal request whose piece runs the pool's chains

    @property
    def left(self) -> int:
        """Slots this request still wants (chains not yet in a piece; DLG: its group, once; a pool's: none)."""
        if self.pool is not None:
            return 0
        if self.whole:
            return self.run.batch_size if self.next_chain == 0 else 0
        return self.run.num - self.next_chain


@dataclass(eq=False)
class _Pool:
    """Warm DLG chains for the requests that give no seed (one pool per nfe and options): a DLG run of
    `chains` chains x `blocks` blocks (seed `seed0 + epoch`) whose blocks go to waiting requests in arrival
    order, k samples to a request for k; between requests the chains wait, warm, in their piece (parked,
    keeping their slots). A run that ends starts the next epoch's (the next seed) when requests wait."""
    make_run: object  # epoch -> the epoch's api._Run
    epoch: int = 0
    waiting: deque = field(default_factory=deque)
    buffer: list = field(default_factory=list)  # finished samples no request took yet
    runner: "_Piece | None" = None  # the piece running the chains (None: none yet, or between epochs)
    queued: bool = False  # a runner request waits for slots
    first: object = None  # epoch 0's run, made when the pool is (its options checked then)

    def runner_request(self) -> _Request:
        """The internal request whose piece runs this epoch's chains (`Engine._run_pool`)."""
        self.queued = True
        return _Request(Future(), self.make_run(self.epoch), whole=True, runs_pool=self)

@dataclass(eq=False)
class _Piece:
    owner: int
    request: _Request
    start: int
    stop: int
    call: tuple | None = None  # posted (x, sigma, model_kwargs), waiting for the network
    out: object = None  # the network's rows for it, or the exception to raise in it
    abort: BaseException | None = None  # raised in it at its next resume (cancelled, failed, closed)
    finished: bool = False
    parked: bool = False  # a pool's chains, waiting for requests (no call posted)
    worker: "_Worker | None" = None


def _locked() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


class _Worker:
    """A thread that runs pieces one after another (`Engine._work`), each only while it holds the baton: the
    engine releases `baton` to let it run, and it releases the engine's `_yielded` when it stops."""

    def __init__(self, engine: "Engine"):
        self.baton = _locked()
        self.piece: _Piece | None = None  # None when resumed: leave
        self.thread = threading.Thread(target=engine._work, args=(self,), name="dmcmc-worker", daemon=True)
        self.thread.start()


class _SlotNet:
    """The network as a piece sees it: each call is posted to the engine and answered by a shared batch."""

    handles_dtype = True  # the engine's network casts (in_network_dtype)

    def __init__(self, engine: "Engine", piece: _Piece, model):
        self._engine, self._piece = engine, piece
        take_model_attrs(self, model)

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

    def __init__(self, model, slots: int = 8, device=None, graph: str = "auto", background: bool = True,
                 pool_seed: int = 0, pool_blocks: int = POOL_BLOCKS):
        from dmcmc_fast._C import SlotBooks

        check_int("slots", slots, 1, MAX_SLOTS)
        api.check_model(model)
        if not isinstance(background, bool):
            raise ValueError(f"background must be True or False, got {background!r}")
        check_int("pool_seed", pool_seed, 0, 2**63 - 1)
        check_int("pool_blocks", pool_blocks, 1, 1 << 20)
        self.pool_seed, self.pool_blocks = pool_seed, pool_blocks
        self._pools: dict[tuple, _Pool] = {}
        self.model, self.slots = model, slots
        self.device = api.sampling_device(model, device)
        self.net, self.graphed = graphed_for_sampling(model, graph, self.device, slots)
        if isinstance(model, torch.nn.Module):
            model.eval()
        self.books = SlotBooks(slots)
        self.stats = {"network_calls": 0, "rows": 0, "requests_done": 0, "requests_failed": 0}
        self._lock = threading.Condition()  # guards the queue and `_closed` (submit / close from any thread)
        self._queue: deque[_Request] = deque()
        self._pieces: dict[int, _Piece] = {}  # running pieces, in admission order (the serving thread's alone)
        self._owners = itertools.count()
        self._yielded = _locked()  # released by a worker when it hands the baton back
        self._workers: list[_Worker] = []
        self._idle: list[_Worker] = []  # workers without a piece (threads are reused: a start costs ~0.1-3 ms)
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
            if seed is None:  # DLG's warm chains
                request = self._pool_request(future, sampler, num, nfe, model_kwargs, sigmas, x_T, options)
            else:
                request = _Request(future, self._run(sampler, num, nfe, seed, model_kwargs, sigmas, x_T, options),
                                   whole=get_sampler(sampler).kind == "blocks")
        except Exception as err:  # the one-line errors of api.sample
            future.set_exception(err)
            return future
        with self._lock:
            if self._closed:
                future.set_exception(EngineClosed("the engine is closed; make a new Engine"))
                return future
            self._queue.append(request)
            self._lock.notify_all()
        return future

    def _run(self, sampler, num, nfe, seed, model_kwargs, sigmas, x_T, options) -> "api._Run":
        """The request's run, checked as `api.sample` checks it; its network is the engine's shared call."""
        run = api._Run.from_arguments(self.model, sampler, num, nfe, seed=seed, batch_size=self.slots,
                                      device=self.device, graph="off", model_kwargs=model_kwargs, sigmas=sigmas,
                                      x_T=x_T, **options)
        run.graph = "network"  # DLG: its blocks run step by step (each network call is a shared one here)
        run.graph_info = dict(self.graphed.describe()) if self.graphed is not None else \
            {"mode": "eager", "captured": [], "fallback_reason": None}
        run.graph_info["engine"] = {"slots": self.slots}
        return run

    def _pool_request(self, future, sampler, num, nfe, model_kwargs, sigmas, x_T, options) -> _Request:
        """A request without a seed: `num` samples from the warm chains of DLG's pool for (nfe, options)."""
        if get_sampler(sampler).kind != "blocks":
            raise ValueError(f"seed must be an integer in [0, 2**63 - 1] for {sampler} (seed=None, the warm "
                             "chains of a pool, is for DLG), got None")
        check_int("num", num, 1)
        if model_kwargs is not None or sigmas is not None or x_T is not None:
            raise ValueError("seed=None (DLG's shared warm chains) takes no model_kwargs, sigmas or x_T: give a "
                             "seed for chains of your own")
        opts = dict(options)
        opts["chains"] = opts.get("chains") or min(self.slots, 32)
        key = (sampler, nfe, repr(sorted(opts.items())))
        pool = self._pools.get(key)
        if pool is None:
            def make_run(epoch: int, opts=opts):
                return self._run(sampler, opts["chains"] * self.pool_blocks, nfe, self.pool_seed + epoch, None,
                                 None, None, opts)
            pool = _Pool(make_run)
            pool.first = make_run(0)  # checks the options (and loads the classifier) now, before any work
            self._pools[key] = pool
        return _Request(future, pool.first, whole=True, pool=pool, want=num)

    def step(self) -> bool:
        """One network call of the running batch: admit waiting requests into free slots (each runs up to its
        first call), run the network once on every posted row, resume each piece with its rows (each runs up
        to its next call or its end). False when nothing is running or waiting (for your own loop; not with
        `background=True`)."""
        if self._thread is not None:
            raise RuntimeError("step() is for an Engine made with background=False; this one serves in a thread")
        if self._closed:
            return False
        return self._step()

    def run_until_idle(self):
        """`step()` until every submitted request is done (background=False)."""
        while self.step():
            pass

    def close(self):
        """Fail pending requests with `EngineClosed`, stop the pieces and the serving thread (joined). Called from
        inside the engine (a future's done-callback), it only marks the engine closed: the serving loop (or the
        `step()` under way) shuts it down when the callback returns."""
        me = threading.current_thread()
        inside = me is self._thread or any(me is w.thread for w in self._workers)
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._lock.notify_all()
        if inside:
            return
        if self._thread is not None:
            self._thread.join()  # it stops the pieces on its way out (`_shut_down`)
        else:
            self._shut_down()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc):
        self.close()

    def slot_table(self) -> list[tuple[int, int, int]]:
        """Per slot: (piece, chain, network calls made), -1 where free (the C++ books)."""
        owners, chains, calls = self.books.table()
        return list(zip(owners, chains, calls))

    # ---- serving (the serving thread, or the caller of step()) ----
    def _serve(self):
        while True:
            with self._lock:
                while not self._closed and not self._queue and all(p.parked for p in self._pieces.values()):
                    self._lock.wait()
                if self._closed:
                    break
            self._step()
        self._shut_down()

    def _step(self) -> bool:
        self._drop_cancelled()
        self._admit()
        for piece in [p for p in self._pieces.values() if p.abort is not None]:
            self._resume(piece)  # a cancelled or failed request's piece unwinds instead of calling
        for pool in self._pools.values():  # warm chains with requests waiting: they run again
            if pool.runner is not None and pool.runner.parked and pool.waiting:
                self._resume(pool.runner)
        posted = [p for p in self._pieces.values() if p.call is not None]
        if posted:
            calls = [p.call for p in posted]
            offsets = self.books.record_call([p.owner for p in posted], [c[0].shape[0] for c in calls])
            order = sorted(range(len(posted)), key=offsets.__getitem__)  # the packed batch in slot order
            for piece, out in self._network([posted[i] for i in order], [calls[i] for i in order]):
                piece.call = None
                self._resume(piece, out)
        if self._closed and self._thread is None:  # closed during this step (from a done-callback)
            self._shut_down()
        with self._lock:
            return bool(self._queue or not all(p.parked for p in self._pieces.values())) and not self._closed

    def _resume(self, piece: _Piece, out=None):
        """Hand `piece` the baton (with the answer to its call) and wait until it posts its next call or ends."""
        piece.out = piece.abort if piece.abort is not None else out
        piece.worker.baton.release()
        self._yielded.acquire()
        if piece.finished:
            self._pieces.pop(piece.owner, None)
            self.books.release(piece.owner)
            self._idle.append(piece.worker)

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

    def _admit(self):
        """Waiting requests into free slots, in arrival order (the C++ books' `grant`); each new piece runs its
        setup up to its first network call."""
        with self._lock:
            if not self._queue or self._closed:
                return
            for request in [r for r in self._queue if r.pool is not None]:  # they wait on their pool
                self._queue.remove(request)
                pool = request.pool
                pool.waiting.append(request)
                if pool.runner is None and not pool.queued:  # no chains yet: a piece to run them
                    self._queue.append(pool.runner_request())
            waiting = list(self._queue)
            grants = self.books.grant([r.left for r in waiting], [not r.whole for r in waiting])
            new = []
            for request, n in zip(waiting, grants):
                if n == 0:
                    continue
                start, stop = (0, request.run.num) if request.whole else (request.next_chain, request.next_chain + n)
                owner = next(self._owners)
                slots = self.books.admit(owner, n, start)
                assert len(slots) == n, (n, slots)
                request.next_chain, request.running = stop, request.running + 1
                new.append(_Piece(owner, request, start, stop))
            self._queue = deque(r for r in self._queue if r.left > 0)
        for piece in new:
            self._pieces[piece.owner] = piece
            if not self._idle:
                self._workers.append(_Worker(self))
                self._idle.append(self._workers[-1])
            piece.worker = self._idle.pop()
            piece.worker.piece = piece
            self._resume(piece)

    def _drop_cancelled(self):
        """Requests whose future was cancelled: out of the queue; their running pieces abort at their resume."""
        with self._lock:
            for request in [r for r in self._queue if r.future.cancelled()]:
                self._queue.remove(request)
        for piece in self._pieces.values():
            if piece.abort is None and (piece.request.future.cancelled() or piece.request.failed):
                piece.abort = RequestCancelled()

    def _shut_down(self):
        """After `close()`: queued requests fail with `EngineClosed`; running pieces are resumed with an abort,
        unwind and end; their requests fail too."""
        err = EngineClosed("the engine was closed before this request finished")
        with self._lock:
            queued, self._queue = list(self._queue), deque()
        for pool in self._pools.values():
            queued += list(pool.waiting)
            pool.waiting.clear()
        for request in queued:
            self._fail(request, err)
        for piece in list(self._pieces.values()):
            self._fail(piece.request, err)
            piece.abort = RequestCancelled()
            self._resume(piece)
        for worker in self._workers:  # every worker is idle now: resumed without a piece, it leaves
            worker.piece = None
            worker.baton.release()
            worker.thread.join()
        self._workers, self._idle = [], []

    def _fail(self, request: _Request, err: BaseException):
        """`request` failed (or the engine closed): its future gets `err` once; its other pieces abort at their
        next resume (`_drop_cancelled`)."""
        if request.failed:
            return
        request.failed = True
        if not request.future.cancelled() and request.future.set_running_or_notify_cancel():
            request.future.set_exception(err)
            self.stats["requests_failed"] += 1

    def _post(self, piece: _Piece, x, sigma, model_kwargs: dict) -> torch.Tensor:
        """A piece's network call (in its thread): posted, the baton handed back, the answer when resumed."""
        piece.call = (x, sigma, model_kwargs)
        self._yielded.release()
        piece.worker.baton.acquire()
        out, piece.out = piece.out, None
        if isinstance(out, BaseException):
            piece.call = None
            raise out
        return out

    # ---- a worker's thread: runs only while it holds the baton ----
    def _work(self, worker: _Worker):
        while True:
            worker.baton.acquire()  # a piece's first resume
            if worker.piece is None:
                return
            self._run_piece(worker.piece)

    def _run_piece(self, piece: _Piece):
        request, run = piece.request, piece.request.run
        result, error = None, None
        try:
            if piece.abort is not None:
                raise piece.abort
            net = _SlotNet(self, piece, self.model)
            if request.runs_pool is not None:  # DLG's warm chains: blocks to whoever waits
                run.net = net
                self._run_pool(piece, request.runs_pool)
            elif request.whole:  # DLG: the run is this piece's alone
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
        request.running -= 1
        if request.runs_pool is not None:
            self._pool_ended(request.runs_pool, error)
        elif error is not None:
            self._fail(request, error)
        elif result is not None and not request.failed:
            request.batches.extend(result)
            if request.left == 0 and request.running == 0:
                self._finish(request)
        piece.finished = True
        self._yielded.release()  # the baton back, for good

    def _park(self, piece: _Piece):
        """A pool's piece with nobody waiting: the baton back without a call; it goes on when resumed."""
        piece.parked = True
        self._yielded.release()
        piece.worker.baton.acquire()
        piece.parked = False
        out, piece.out = piece.out, None
        if isinstance(out, BaseException):
            raise out

    def _run_pool(self, piece: _Piece, pool: _Pool):
        """The pool's chains (this epoch's run): each round's blocks go to the waiting requests, the rest wait in
        `buffer`; with nobody waiting and a round's blocks in hand, the chains park (warm)."""
        pool.runner, pool.queued = piece, False
        run = piece.request.run
        for batch in run.batches(progress=False):
            for i in range(batch.stop - batch.start):
                pool.buffer.append((batch.samples[i:i + 1], batch.nfe[i:i + 1],
                                    {k: v[i:i + 1] for k, v in batch.meta.items()}, run.seed))
            self._hand_out(pool)
            while not pool.waiting and len(pool.buffer) >= run.blocks.chains:
                self._park(piece)
                self._hand_out(pool)

    def _hand_out(self, pool: _Pool):
        """Buffered samples to the waiting requests, in arrival order; a request with all it wants is done."""
        while pool.waiting and pool.buffer:
            request = pool.waiting[0]
            if request.future.cancelled():
                pool.waiting.popleft()
                continue
            k = min(request.want - len(request.taken), len(pool.buffer))
            request.taken += pool.buffer[:k]
            del pool.buffer[:k]
            if len(request.taken) == request.want:
                pool.waiting.popleft()
                self._finish_pooled(request)

    def _pool_ended(self, pool: _Pool, error):
        """The pool's run ended (all its blocks) or failed: the next epoch's chains start if requests wait; a
        failure fails the waiting requests."""
        pool.runner = None
        pool.epoch += 1
        if error is not None:
            while pool.waiting:
                self._fail(pool.waiting.popleft(), error)
        if pool.waiting:
            with self._lock:
                self._queue.append(pool.runner_request())

    def _finish_pooled(self, request: _Request):
        """A pool request's `SampleOutput`: its samples in the order the chains gave them, their amortised NFE,
        DLG's per-sample books, and which pool run (seed) each came from."""
        xs, nfes, metas, seeds = zip(*request.taken)
        meta = {k: np.concatenate([m[k] for m in metas]) for k in metas[0]}
        meta["pool_seed"] = np.array(seeds, dtype=np.int64)
        run = request.run
        cfg = dict(run.cfg, num=request.want, seed=None, options=dict(run.cfg["options"]),
                   pool={"seed0": self.pool_seed, "blocks_per_chain": self.pool_blocks})
        self._settle(request, api.SampleOutput(torch.cat(xs), torch.cat(nfes), cfg, dict(run.graph_info), meta))

    def _finish(self, request: _Request):
        """All of `request`'s chains are done: its `SampleOutput`, as `api.sample` joins its batches."""
        self._settle(request, api._output(sorted(request.batches, key=lambda b: b.start), request.run))

    def _settle(self, request: _Request, out):
        """`request`'s future gets `out`, unless it was cancelled."""
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
    """The calls' `model_kwargs` as one (they are of one kind, `_call_kind`): per-row tensors concatenated in call
    order, shared values as they are."""
    if len(kwargs) == 1 or not kwargs[0]:
        return kwargs[0]

    def join(values: list):
        first = values[0]
        if isinstance(first, dict):
            return {k: join([v[k] for v in values]) for k in first}
        if isinstance(first, (list, tuple)):
            return type(first)(join(list(parts)) for parts in zip(*values))
        if torch.is_tensor(first) and first.ndim > 0 and first.shape[0] == rows[0]:
            return torch.cat(values)
        return first
    return join(kwargs)
