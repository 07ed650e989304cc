"""Every cache is named in one place (`dmcmc_fast/caches.py`) and ARCHITECTURE.md's cache table is that list; emptying
the process-wide caches changes no sample."""
import os
import re

import pytest
import torch

import dmcmc_fast.api  # noqa: F401  (each module registers its caches when imported)
import dmcmc_fast.data  # noqa: F401
import dmcmc_fast.integrators  # noqa: F401
import dmcmc_fast.mcmc  # noqa: F401
from dmcmc_fast import api, caches
from dmcmc_fast.integrators import common
from dmcmc_fast.models.builtin import load_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def architecture_cache_rows() -> dict[str, str]:
    text = open(os.path.join(ROOT, "ARCHITECTURE.md")).read()
    section = text.split("## Caches", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| cache |")]
    return {line.split("|")[1].strip(): line for line in rows}


def test_the_architecture_table_lists_every_registered_cache_and_only_those():
    registered = {c.name: c for c in caches.every_cache()}
    table = architecture_cache_rows()
    assert set(table) == set(registered), (sorted(set(table) ^ set(registered)))
    for name, c in registered.items():
        assert c.where.split(" (")[0] in table[name] and c.invalidated_by in table[name], name


def test_a_name_is_registered_once_and_keep_bounds_a_store():
    with pytest.raises(ValueError, match="registered already"):
        caches.process_cache("shared tables", "x", "y", "z")
    store: dict = {}
    for k in range(10):
        caches.keep(store, k, k * k, capacity=4)
    assert list(store.items()) == [(6, 36), (7, 49), (8, 64), (9, 81)]  # the oldest out


def test_emptying_the_process_caches_changes_no_sample():
    m = load_model("gmm-digits", modes=4)
    runs = [("heun", {}), ("deis", {}), ("unipc", {}), ("karras_sde", {})]
    before = [api.sample(m, s, 4, 7, seed=3, progress=False, **o).samples for s, o in runs]
    assert common._SHARED and api._CHECKED  # the runs filled them
    caches.clear_process_caches()
    assert not common._SHARED and not api._CHECKED  # the stores the modules use are the registered ones
    after = [api.sample(m, s, 4, 7, seed=3, progress=False, **o).samples for s, o in runs]
    for (s, _), a, b in zip(runs, before, after):
        assert torch.equal(a, b), s  # same process, same row counts: the same BLAS path
