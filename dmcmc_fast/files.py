"""The files the doors read and write, checked before any work: each problem is one `ValueError` line that names
the file and what is wrong with it (never a loader's traceback, nor numpy's misleading allow_pickle message).

- `read_checkpoint(path, what, needs)`: a torch checkpoint (classifier, network, DLG resume state), read with
  `weights_only=True`; it must be a dict holding the keys `needs`.
- `load_weights(net, state_dict, path, what)`: `net.load_state_dict`, a mismatch said in one line.
- `read_npz(path, what, needs)`: an `.npz` archive, read whole, without pickles; it must hold `needs`.
- `finite_rows(x, path)`: samples must be finite; else how many are not and the first indices.
- `check_out_dir(path)`: an output folder that can be made: no existing file on its way.
Only os, json, numpy and torch are imported here, so any layer may use it.
"""
from __future__ import annotations

import os
import zipfile

import numpy as np
import torch


def _reason(err: BaseException) -> str:
    """An exception as a few words on one line: its type and its message's first line, cut at 120 characters."""
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    text = f"{type(err).__name__}: {first}" if first else type(err).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def _check_file(path: str, what: str):
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what} {path}: no such file")
    if os.path.isdir(path):
        raise ValueError(f"{what} {path}: is a folder, not a file")
    if os.path.getsize(path) == 0:
        raise ValueError(f"{what} {path}: the file is empty")


def read_checkpoint(path: str, what: str, needs: tuple[str, ...] = (), device="cpu") -> dict:
    """The dict saved in torch checkpoint `path` (loaded onto `device`), which must hold the keys `needs`;
    `what` names the kind of file in the error ("noise-level classifier", "DLG resume state", ...)."""
    _check_file(path, what)
    try:
        ck = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # a truncated zip, a pickle of other objects, random bytes: all unreadable
        why = _reason(err) if zipfile.is_zipfile(path) else "not a zip archive: truncated, or another kind of file"
        raise ValueError(f"{what} {path}: not a readable torch checkpoint ({why})") from None
    if not isinstance(ck, dict):
        raise ValueError(f"{what} {path}: not a {what} checkpoint (it holds a {type(ck).__name__}, not a dict)")
    missing = [k for k in needs if k not in ck]
    if missing:
        raise ValueError(f"{what} {path}: not a {what} checkpoint (it has no {', '.join(map(repr, missing))}; "
                         f"it has {', '.join(map(repr, list(ck)[:8])) or 'nothing'})")
    return ck


def load_weights(net: torch.nn.Module, state_dict, path: str, what: str):
    """`net.load_state_dict(state_dict)`; weights that do not fit the network the file describes are one line."""
    try:
        net.load_state_dict(state_dict)
    except (RuntimeError, TypeError, AttributeError, KeyError) as err:
        raise ValueError(f"{what} {path}: its weights do not fit the network it describes ({_reason(err)})") from None


def read_npz(path: str, what: str, needs: tuple[str, ...] = ()) -> dict:
    """{name: array} of the `.npz` archive `path`, read whole and without pickles; it must hold `needs`."""
    _check_file(path, what)
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError(f"{what} {path}: a single .npy array, not an .npz archive")
        with z:
            arrays = {k: z[k] for k in z.files}
    except ValueError as err:
        if str(err).startswith(f"{what} {path}"):
            raise
        if "allow_pickle" in str(err) or "Object arrays" in str(err):
            raise ValueError(f"{what} {path}: holds Python objects (pickles), which are never loaded; "
                             "an .npz of numeric arrays is expected") from None
        raise ValueError(f"{what} {path}: not a readable .npz archive ({_reason(err)})") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError, UnicodeError) as err:
        raise ValueError(f"{what} {path}: not a readable .npz archive ({_reason(err)})") from None
    missing = [k for k in needs if k not in arrays]
    if missing:
        raise ValueError(f"{what} {path}: has no {', '.join(map(repr, missing))} (it has "
                         f"{', '.join(map(repr, arrays)) or 'nothing'})")
    return arrays


def finite_rows(x: torch.Tensor, path: str, shown: int = 5):
    """Every sample (row) of `x` finite; else one line: how many rows hold NaN/Inf, and the first `shown`."""
    bad = ~torch.isfinite(x.reshape(x.shape[0], -1)).all(1)
    n_bad = int(bad.sum())
    if n_bad:
        first = torch.nonzero(bad)[:shown, 0].tolist()
        more = ", ..." if n_bad > shown else ""
        raise ValueError(f"samples {path}: {n_bad} of {x.shape[0]} samples are not finite (NaN or Inf), at indices "
                         f"{', '.join(map(str, first))}{more}; their statistics are undefined: drop them or "
                         "draw the run again")


def check_out_dir(path: str, name: str = "--out"):
    """`path` is a folder or can be made one: it is not a file, and no file stands on its way."""
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ValueError(f"{name} must be a folder path, got {path!r}")
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{name} {path}: is a file, not a folder; choose a folder")
    up = os.path.dirname(path)
    while up and not os.path.exists(up):
        up = os.path.dirname(up) if os.path.dirname(up) != up else ""
    if up and not os.path.isdir(up):
        raise ValueError(f"{name} {path}: {up} is a file, so no folder can be made under it; choose another "
                         f"{name}")
    if up and not os.access(up, os.W_OK | os.X_OK):
        raise ValueError(f"{name} {path}: {up} is not writable")


def read_samples_npz(path: str) -> tuple[torch.Tensor, torch.Tensor, dict, dict]:
    """(samples [N, ...], nfe [N], config, {name: per-sample array}) of a `samples.npz` (`api.save_samples`)."""
    import json

    what = "samples"
    z = read_npz(path, what, needs=("samples", "nfe"))
    samples, nfe = z.pop("samples"), z.pop("nfe")
    if samples.dtype.kind not in "fiu" or samples.ndim < 2 or samples.shape[0] < 1:
        raise ValueError(f"{what} {path}: 'samples' must be a numeric array [N, ...] with N >= 1, got dtype "
                         f"{samples.dtype} and shape {list(samples.shape)}")
    if nfe.dtype.kind not in "fiu" or nfe.shape != samples.shape[:1]:
        raise ValueError(f"{what} {path}: 'nfe' must be numbers, one per sample ([{samples.shape[0]}]), got dtype "
                         f"{nfe.dtype} and shape {list(nfe.shape)}")
    config = {}
    if "config" in z:
        try:
            config = json.loads(str(z.pop("config")))
        except ValueError as err:
            raise ValueError(f"{what} {path}: its 'config' is not JSON ({_reason(err)})") from None
        if not isinstance(config, dict) or not isinstance(config.get("model_options", {}), dict):
            raise ValueError(f"{what} {path}: its 'config' must be a JSON object (with 'model_options' an object), "
                             f"got {json.dumps(config)[:60]}")
    meta = {k: v for k, v in z.items() if v.shape[:1] == samples.shape[:1]}  # per-sample books (DLG)
    books = ("chain", "block", "sigma")  # DLG's: the mixing report reads all three
    if any(k in meta for k in books) and not all(k in meta for k in books):
        raise ValueError(f"{what} {path}: has DLG books {', '.join(k for k in books if k in meta)} but not "
                         f"{', '.join(k for k in books if k not in meta)} (one value per sample each)")
    x = torch.from_numpy(samples if samples.dtype.kind == "f" else samples.astype(np.float32))
    return x, torch.from_numpy(nfe), config, meta
