"""`model_kwargs`: extra inputs of a network (class labels, text embeddings, ...), one row per sample.

A `model_kwargs` dict holds tensors with a leading `[num]` dimension (row i belongs to sample i) and
other values (flags, scales) that every call gets as they are; dicts, lists and tuples nest
(diffusers' `added_cond_kwargs`). The engine slices the tensors per batch by chain id (`rows`), per
call by the rows an integrator evaluates (`take`, a device index: no host read), and casts floating
tensors to a network's dtype (`cast`). Everything here works on host metadata only.
"""
from __future__ import annotations

from typing import Any, Callable

import torch


def tree_map(fn: Callable[[torch.Tensor], Any], value):
    """`value` with every tensor `t` in it replaced by `fn(t)` (through dicts, lists and tuples)."""
    if torch.is_tensor(value):
        return fn(value)
    if isinstance(value, dict):
        return {k: tree_map(fn, v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(tree_map(fn, v) for v in value)
    return value


def leaves(value, path: str = "") -> list[tuple[str, Any]]:
    """[(path, leaf)] of a nested value, e.g. ("added_cond_kwargs.time_ids", tensor)."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in leaves(v, f"{path}.{k}" if path else str(k))]
    if isinstance(value, (list, tuple)):
        return [p for i, v in enumerate(value) for p in leaves(v, f"{path}[{i}]")]
    return [(path, value)]


def check(model_kwargs, num: int, *, dim: str = "num", rows_are: str = " (row i for sample i),",
          prefix: str = "", hint: Callable[[tuple], str] = lambda shape: "") -> dict:
    """`model_kwargs` (None: {}) checked: a dict whose tensors all have a leading dimension `num` (named
    `dim` in the error, which says what a row is and adds `hint(shape)`; DLG's rows are its chains)."""
    if model_kwargs is None:
        return {}
    if not isinstance(model_kwargs, dict) or not all(isinstance(k, str) for k in model_kwargs):
        raise ValueError(f"model_kwargs must be a dict of keyword arguments of the model, got "
                         f"{type(model_kwargs).__name__}")
    for path, leaf in leaves(model_kwargs):
        if torch.is_tensor(leaf) and (leaf.ndim == 0 or leaf.shape[0] != num):
            raise ValueError(f"{prefix}model_kwargs[{path!r}] must have a leading dimension of {dim}={num}"
                             f"{rows_are} got shape {tuple(leaf.shape)}{hint(tuple(leaf.shape))}")
    return model_kwargs


def rows(model_kwargs: dict, start: int, stop: int, device=None) -> dict:
    """The rows `start:stop` of every tensor (on `device`); other values as they are."""
    return tree_map(lambda t: t[start:stop].to(device) if device is not None else t[start:stop], model_kwargs)


def take(model_kwargs: dict, idx: torch.Tensor) -> dict:
    """The rows `idx` (a device index tensor, e.g. an adaptive solver's running rows) of every tensor."""
    return tree_map(lambda t: t.index_select(0, idx.to(t.device)), model_kwargs)


def cast(model_kwargs: dict, dtype: torch.dtype) -> dict:
    """Floating tensors cast to `dtype` (a network's own); integer ones (labels) as they are."""
    return tree_map(lambda t: t.to(dtype) if t.is_floating_point() else t, model_kwargs)


def concat(cond: dict, uncond: dict, batch: int) -> dict:
    """Classifier-free guidance's doubled batch: cond rows then uncond rows. A tensor of `uncond` with one
    row (or a 0-d tensor) is repeated for the whole batch; a key `uncond` lacks takes `cond`'s value for
    both halves (e.g. SDXL's time_ids); other values must be equal (one call takes one of them)."""
    def join(c, u, path):
        if isinstance(c, dict) and isinstance(u, dict):
            extra = sorted(set(u) - set(c))
            if extra:
                raise ValueError(f"guidance: the unconditional kwargs have {', '.join(extra)}, which model_kwargs "
                                 "lacks (give both halves the same keys)")
            return {k: join(v, u.get(k, v), f"{path}.{k}" if path else k) for k, v in c.items()}
        if isinstance(c, (list, tuple)) and isinstance(u, (list, tuple)) and len(c) == len(u):
            return type(c)(join(a, b, f"{path}[{i}]") for i, (a, b) in enumerate(zip(c, u)))
        if torch.is_tensor(c) and torch.is_tensor(u):
            return torch.cat([_rows_for(c, batch, path), _rows_for(u, batch, path).to(c.device, c.dtype)])
        if torch.is_tensor(c) or torch.is_tensor(u) or c != u:
            raise ValueError(f"guidance: model_kwargs[{path!r}] differs in kind or value between cond ({_short(c)}) "
                             f"and uncond ({_short(u)}); one network call takes one value")
        return c

    return join(cond, uncond, "")


def _rows_for(t: torch.Tensor, batch: int, path: str) -> torch.Tensor:
    """`t` as `batch` rows: a 1-row or 0-d tensor repeated, a per-sample one as it is."""
    if t.ndim == 0:
        return t.reshape(1).expand(batch)
    if t.shape[0] == 1:
        return t.expand(batch, *t.shape[1:])
    if t.shape[0] == batch:
        return t
    raise ValueError(f"guidance: model_kwargs[{path!r}] must have 1 row or one per sample ({batch}), "
                     f"got shape {tuple(t.shape)}")


def _short(v) -> str:
    return f"a tensor of shape {tuple(v.shape)}" if torch.is_tensor(v) else repr(v)[:40]


def signature(model_kwargs: dict, batch: int) -> tuple:
    """A hashable description of a call's kwargs for a captured graph: per leaf its path and, for a tensor,
    whether it is per-sample (leading dimension `batch`), its other dimensions and dtype; other values by
    value (by identity where unhashable). Equal signatures can share static buffers and a graph."""
    out = []
    for path, leaf in leaves(model_kwargs):
        if torch.is_tensor(leaf):
            per_sample = leaf.ndim > 0 and leaf.shape[0] == batch
            out.append((path, "tensor", per_sample, tuple(leaf.shape[1:] if per_sample else leaf.shape), leaf.dtype))
        else:
            try:
                hash(leaf)
                out.append((path, "value", leaf))
            except TypeError:
                out.append((path, "object", id(leaf)))
    return tuple(out)
