"""Every cache of dmcmc-fast, named in one place: what it holds, where it lives and what invalidates it
(ARCHITECTURE.md's cache table is this list; `tests/test_caches.py` holds the two together).

A process-wide cache is created here (`process_cache`), so it is registered where it is made and
`clear_process_caches` empties every one of them; a cache that lives on an object (a façade's kept runs, a
run's DLG graphs, a mixture's device copies, the plans kept on a shared table) is declared in `ON_OBJECTS`.
This module imports nothing of the project: every layer may register here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Cache:
    """A cache's name, where it lives, what it holds, what invalidates it, and its bound (entries, oldest out;
    None: unbounded, its keys few)."""
    name: str
    where: str
    holds: str
    invalidated_by: str
    capacity: int | None = None


_PROCESS: dict[str, tuple[Cache, Callable[[], None]]] = {}  # name -> (what it is, how to empty it)


def process_cache(name: str, where: str, holds: str, invalidated_by: str, capacity: int | None = None,
                  store=None, clear: Callable[[], None] | None = None):
    """A process-wide cache registered under `name`: `store` (default a new dict; any mapping with `clear`) is
    returned for its module to keep; `clear` empties it where that is not `store.clear` (an `lru_cache`)."""
    if name in _PROCESS:
        raise ValueError(f"a cache named {name!r} is registered already ({_PROCESS[name][0].where})")
    store = {} if store is None and clear is None else store
    _PROCESS[name] = (Cache(name, where, holds, invalidated_by, capacity), clear or store.clear)
    return store


def keep(store: dict, key, value, capacity: int):
    """`store[key] = value`, then the oldest entries out until at most `capacity` remain; -> value."""
    store[key] = value
    while len(store) > capacity:
        store.pop(next(iter(store)))
    return value


ON_OBJECTS = (
    Cache("kept runs", "`facade.Sampler._runs` (per façade object)",
          "the checked `_Run` of a plain `sample(n)` call", "`_Run.again` fetches the graph wrapper anew "
          "(recaptured if the weights moved); the object going away", 8),
    Cache("chain ids", "`api._Run._chain_ids` (per run)", "each batch's chain ids on the run's device",
          "the run going away"),
    Cache("DLG round graphs", "`engine.dlg_run.DLGRun.graphs` (per run)",
          "`CapturedBlocks` per (group, rows, rounds)", "the run ending (they live with it)"),
    Cache("per-grid plans", "`_derived` on the tables of `shared tables` (`integrators.common.derived`)",
          "what a loop derives from a shared grid: `plans.EdmPlan`, `plans.DeisPlan`, `plans.ExponentialPlan`, "
          "KAR2's churn table", "their table's eviction (read-only, a pure function of the table and the key)"),
    Cache("mixture tensors", "`GaussianMixture._device_cache` (per model)", "the means on each device and dtype",
          "the model object going away"),
    Cache("DLG pools", "`serve.Engine._pools` (per engine)", "warm DLG chains per (sampler, nfe, options) for "
          "requests without a seed, and their buffered blocks", "`close()`; a pool's run used up starts the next "
          "seed's"),
)


def every_cache() -> list[Cache]:
    """The process-wide caches (in the order they were registered; a module registers its own when imported),
    then those on objects."""
    return [c for c, _ in _PROCESS.values()] + list(ON_OBJECTS)


def clear_process_caches():
    """Empty every process-wide cache (a test's fresh start; nothing else is needed for correctness: each one is a
    pure function of its key or checks what it holds)."""
    for _, clear in _PROCESS.values():
        clear()
