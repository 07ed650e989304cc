"""`dmcmc-fast train classifier` and `train_classifier(images, ...)`: DLG's noise-level classifier (the
paper's network, `dmcmc_fast.mcmc.classifier.NoiseLevelNet`) on your own data or an offline data set.

Each step draws a batch of clean images x0, a level m uniformly from the M levels, and minimises the
cross-entropy of NoiseLevelNet(x0 + sigma_m z) against m. The learning rate decays (cosine) over whichever
budget ends first, `steps` or `max_minutes` (default 2 minutes: short on a CPU; raise both for a better
classifier). A held-out share of the data (10%) is noised the same way, with a fixed seed, to measure the
level error by sigma band (`level_error`); the card says what the classifier was trained on, how long,
that error, and whether it meets the targets where DLG chains live (`TARGET_BAND`: |bias| <= 5 and mean
|error| <= 10 levels in every band of sigma 0.1-20, issue 15). The checkpoint holds the levels (one sigma
per class), the data shape and data range, and the card (format: `dmcmc_fast/mcmc/classifier.py`); the
card is also written beside it as `.md`.

Options beyond the paper, each default chosen by the level error on held-out MNIST by sigma band
(`bench/classifier_bias.py`; 1 CPU thread, 2026-11-28):
- `--focus-share P` (default 0.5): a share P of each batch draws its level uniformly over the levels in
  `--focus` (default sigma 0.1-20, where DLG chains live), the rest uniformly over all levels. At 1.35 min
  of training, P = 0.5 cut the worst band's mean |error| over sigma 0.1-20 from 10.4 levels (P = 0, the
  paper's uniform draw) to 6.6; at 38 min, P = 0.5 and 0.8 tie there (3.0 and 2.9) and 0.5 is better
  outside it (sigma 20-100: 3.2 vs 4.3; 0.02-0.1: 8.8 vs 10.8).
- `--input raw`: the paper's input (x as it is) instead of x / rms(x) and log rms(x). At 1.35 min it tied
  over sigma 0.1-20 (worst band 6.2 vs 6.6) and was worse outside (sigma 20-100: 26.9 vs 10.7); not the
  default.
- `--calibrate S` (default 0): keep a share S of the images out of training and fit on them a per-level
  logit offset (`fit_logit_offset`), stored in the checkpoint and added to the logits. The offset is what
  the output layer's bias already learns, and the trained classifiers have no systematic bias to remove
  (|bias| <= 0.4 levels per band over sigma 0.1-20 at 38 min): it left that range unchanged (worst band
  2.9 -> 3.0 and 2.8 -> 2.9 in two runs) and made sigma 0.02-0.1 worse (6.9 -> 8.5, 9.1 -> 11.3).
- The budget: longer is better. P = 0.5 for 1.35 min (~690 steps): worst band 6.6 levels over sigma
  0.1-20; for 38 min (10725 steps): 3.0, near the exact posterior's own error on gmm-mnist (~2).

Data (`--data`):
- a folder of images (png, jpg, jpeg, bmp, webp; read with Pillow, subfolders included, in path order):
  one channel if every image is grayscale, else RGB (`--channels`); all of one size (`--size H,W` resizes);
- an `.npz` or `.npy` (the first array, or `--key`), or a `.pt` holding a tensor (or a dict: `--key`, else
  its first tensor): `[N, C, H, W]`, also `[N, H, W]` or channels-last `[N, H, W, C]` (C in 1, 3, 4);
- a built-in offline data set: digits, faces, mnist (`dmcmc_fast.data`).
Scaling to the model's data range `--data-range LO,HI` (default -1,1): uint8 (or integer) pixels 0..255
map linearly, 0 -> LO and 255 -> HI (for [-1, 1]: x / 127.5 - 1); floating data are the model's data as
they are and must lie in [LO, HI] (no rescaling is guessed).

    dmcmc-fast train classifier --data my_images/ --out my-classifier.pt        # about 2 minutes on a CPU
    dmcmc-fast sample --model unet-mnist --sampler dlg --classifier my-classifier.pt --nfe 25 --out runs/dlg
    api.sample(my_denoiser, "dlg", num=64, nfe=25, classifier="my-classifier.pt")   # your own model
"""
from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import platform
import shlex
import sys
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from dmcmc_fast import data as builtin_data
from dmcmc_fast.mcmc.classifier import (M_LEVELS, NoiseLevelNet, TrainedLevelClassifier, level_sigmas,
                                        levels_from_spec)

WITHIN_K = (0, 1, 2, 5, 10, 25, 50)
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")
N_EVAL = 2048  # held-out noised images the level error is measured on (held-out images cycled)
N_PER_BAND = 500  # ... per band where DLG chains live (`chain_edges`), for the targets
CHAIN_EDGES = (0.02, 0.1, 0.5, 2.0, 5.0, 20.0, 100.0)  # sigma bands of bench/classifier_bias.py
TARGET_BAND = (0.1, 20.0)  # where DLG chains live (issue 15): the targets below hold in its bands
TARGET_BIAS, TARGET_ERROR = 5.0, 10.0  # |bias| and mean |error| in levels, in every band within TARGET_BAND


# ---- data: a folder of images, an array file, or a built-in data set -> [N, C, H, W] in the data range ----

def _nchw(t: torch.Tensor, what: str) -> tuple[torch.Tensor, str]:
    """[N, C, H, W] from [N, C, H, W], [N, H, W] or channels-last [N, H, W, C]; a note on what was done."""
    if t.ndim == 3:
        return t[:, None], "[N, H, W] as one channel"
    if t.ndim == 4 and t.shape[1] in (1, 2, 3, 4):
        return t, ""
    if t.ndim == 4 and t.shape[3] in (1, 3, 4):
        return t.permute(0, 3, 1, 2).contiguous(), "channels-last, transposed to [N, C, H, W]"
    raise ValueError(f"{what} must be images [N, C, H, W] (or [N, H, W], or channels-last [N, H, W, C] with C in "
                     f"1, 3, 4), got shape {tuple(t.shape)}")


def as_data(images, data_range=(-1.0, 1.0), what: str = "images") -> tuple[torch.Tensor, str]:
    """Images in the model's data units: (float32 [N, C, H, W], how they were scaled). Integer pixels
    0..255 map linearly to `data_range` (0 -> lo, 255 -> hi); floating ones are taken as they are and must
    lie in `data_range` (a small tolerance)."""
    t = torch.from_numpy(np.asarray(images)) if not torch.is_tensor(images) else images.detach().cpu()
    t, note = _nchw(t, what)
    lo, hi = (float(v) for v in data_range)
    if not lo < hi:
        raise ValueError(f"data_range must be (lo, hi) with lo < hi, got {data_range}")
    if t.shape[0] < 1 or t.numel() == 0:
        raise ValueError(f"{what} holds no images (shape {tuple(t.shape)})")
    if t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"{what} must be uint8 pixels 0..255 or floating data, got {t.dtype}")
    if not t.is_floating_point():
        mn, mx = int(t.min()), int(t.max())
        if mn < 0 or mx > 255:
            raise ValueError(f"{what}: integer pixels must lie in 0..255 (uint8), got {mn}..{mx}")
        how = f"{str(t.dtype).replace('torch.', '')} pixels 0..255 mapped to [{lo:g}, {hi:g}]"
        return lo + t.float() * ((hi - lo) / 255.0), ", ".join(filter(None, [how, note]))
    t = t.float()
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{what} holds NaN or Inf values")
    mn, mx = float(t.min()), float(t.max())
    tol = 1e-3 * (hi - lo)
    if mn < lo - tol or mx > hi + tol:
        raise ValueError(f"{what}: floating values span [{mn:.4g}, {mx:.4g}], outside the data range [{lo:g}, {hi:g}]; "
                         "floating data are taken as the model's data as they are: rescale them, pass uint8 pixels "
                         "0..255, or give the model's data range (--data-range LO,HI, data_range=(lo, hi))")
    if lo < 0 <= mn:
        warnings.warn(f"{what}: every value is >= 0 while the data range is [{lo:g}, {hi:g}]; if these are images "
                      f"in [0, 1], map them to the model's range first (x * {hi - lo:g} + {lo:g}): the classifier "
                      "learns the data as given", stacklevel=2)
    how = f"floating, taken as they are (data range [{lo:g}, {hi:g}])"
    return t, ", ".join(filter(None, [how, note]))


def load_folder(path: str, channels: int | None = None, size: tuple[int, int] | None = None):
    """(uint8 [N, C, H, W], description) of every image under `path` (subfolders included, path order)."""
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("reading a folder of images needs Pillow: install it with `pip install pillow`, or pass "
                          "the images as an .npz / .pt tensor [N, C, H, W]") from None
    files = sorted(os.path.join(root, f) for root, _, names in os.walk(path) for f in names
                   if f.lower().endswith(IMAGE_EXTS))
    if not files:
        raise ValueError(f"--data {path}: no images ({', '.join(IMAGE_EXTS)}) in this folder or its subfolders")
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    if channels is None:
        modes = []
        for f in files:
            with Image.open(f) as im:  # the header only
                modes.append(im.mode)
        channels = 1 if all(m in GRAY_MODES for m in modes) else 3
    arrays, sizes = [], {}
    for f in files:
        with Image.open(f) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            if size is not None:
                im = im.resize((size[1], size[0]), Image.Resampling.BICUBIC)
            a = np.asarray(im, dtype=np.uint8)
        sizes.setdefault(a.shape[:2], f)
        arrays.append(a)
    if len(sizes) > 1:
        seen = "; ".join(f"{h}x{w} ({os.path.relpath(f, path)})" for (h, w), f in list(sizes.items())[:3])
        raise ValueError(f"--data {path}: the images differ in size (H x W: {seen}); resize them to the model's "
                         "size with --size H,W (size=(H, W))")
    t = torch.from_numpy(np.stack(arrays))
    t = t[:, None] if channels == 1 else t.permute(0, 3, 1, 2).contiguous()
    kind = "grayscale" if channels == 1 else "RGB"
    return t, f"folder {path}: {len(files)} images, {kind}" + (f", resized to {size[0]}x{size[1]}" if size else "")


def _pick(obj, key: str | None, path: str):
    """A tensor out of what a .pt file holds: the tensor, `obj[key]`, or a dict's / list's first tensor."""
    if torch.is_tensor(obj):
        if key is not None:
            raise ValueError(f"--key {key}: {path} holds one tensor, not a dict")
        return obj, ""
    if isinstance(obj, dict):
        if key is not None:
            if key not in obj:
                raise ValueError(f"--key {key}: not in {path} (keys: {', '.join(map(str, obj))})")
            return obj[key], f"key {key!r}"
        for k, v in obj.items():
            if torch.is_tensor(v):
                return v, f"key {k!r} (the first tensor)"
    if isinstance(obj, (list, tuple)) and obj and torch.is_tensor(obj[0]) and key is None:
        return obj[0], "item 0"
    raise ValueError(f"{path} must hold a tensor [N, C, H, W] (or a dict of them: pick one with --key), got "
                     f"{type(obj).__name__}")


def load_data(source: str, key: str | None = None, data_range=(-1.0, 1.0), channels: int | None = None,
              size: tuple[int, int] | None = None) -> tuple[torch.Tensor, str]:
    """(float32 [N, C, H, W] in `data_range`, description) from a folder of images, an .npz / .npy / .pt file or
    a built-in data set name (module docstring)."""
    if (channels is not None or size is not None) and not os.path.isdir(source):
        raise ValueError("--channels and --size apply to a folder of images")
    if os.path.isdir(source):
        raw, desc = load_folder(source, channels, size)
    elif os.path.isfile(source):
        ext = os.path.splitext(source)[1].lower()
        if ext == ".npz":
            with np.load(source) as z:
                if not z.files:
                    raise ValueError(f"{source} holds no arrays")
                if key is not None and key not in z.files:
                    raise ValueError(f"--key {key}: not in {source} (arrays: {', '.join(z.files)})")
                name = key if key is not None else z.files[0]
                raw = z[name]
            desc = f"{source}, array {name!r}" + ("" if key is not None or len(z.files) == 1 else " (the first)")
        elif ext == ".npy":
            raw, desc = np.load(source), source
        elif ext in (".pt", ".pth"):
            try:
                obj = torch.load(source, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError:
                raise ValueError(f"{source} holds objects other than tensors (and dicts, lists, numbers), which "
                                 "torch.load(weights_only=True) refuses; save the images with torch.save(tensor, "
                                 "path) or as an .npz") from None
            raw, which = _pick(obj, key, source)
            desc = f"{source}" + (f", {which}" if which else "")
        else:
            raise ValueError(f"--data {source}: give a folder of images, an .npz / .npy, or a .pt tensor "
                             f"[N, C, H, W] (got a {ext or 'extensionless'} file)")
    elif source in builtin_data.LOADERS:
        x, _ = builtin_data.load(source)
        lo, hi = (float(v) for v in data_range)
        d_lo, d_hi = builtin_data.DATA_RANGE
        raw = (lo + (x - d_lo) * ((hi - lo) / (d_hi - d_lo))).clamp(lo, hi)
        desc = f"built-in data set {source} (offline)"
    else:
        raise FileNotFoundError(f"--data {source!r}: no such file or folder, and not a built-in data set "
                                f"({', '.join(sorted(builtin_data.LOADERS))})")
    x, how = as_data(raw, data_range, what=f"--data {source}")
    return x, f"{desc}; {how}"


# ---- the level error on held-out noised data ----

def noised(x0: torch.Tensor, levels: torch.Tensor, gen: torch.Generator, m: torch.Tensor | None = None):
    """x0 + sigma_m z with m uniform over the levels (or the given indices `m`) -> (x, m)."""
    if m is None:
        m = torch.randint(len(levels), (x0.shape[0],), generator=gen, device=x0.device)
    z = torch.randn(x0.shape, generator=gen, device=x0.device)
    return x0 + levels[m].reshape(-1, 1, 1, 1) * z, m


def chain_edges(levels: torch.Tensor) -> list[float]:
    """`CHAIN_EDGES` within the levels' range, with the range's ends: the bands where DLG chains live."""
    lo, hi = float(levels.min()), float(levels.max())
    return [lo, *[e for e in CHAIN_EDGES if lo < e < hi], hi]


def sigma_bands(lo: float, hi: float) -> list[float]:
    """Band edges: lo, the powers of ten strictly between lo and hi, hi."""
    inner = [10.0 ** k for k in range(math.floor(math.log10(lo)) + 1, math.ceil(math.log10(hi)))
             if lo < 10.0 ** k < hi]
    return [lo, *inner, hi]


def level_range(levels: torch.Tensor, lo: float, hi: float, last: bool = False) -> tuple[int, int]:
    """Indices [i0, i1) of the levels with lo <= sigma < hi (sigma <= hi with `last`); levels decrease."""
    lv = levels.detach().cpu().double()
    inside = ((lv >= lo) & ((lv <= hi) if last else (lv < hi))).nonzero().flatten()
    return (int(inside[0]), int(inside[-1]) + 1) if len(inside) else (0, 0)


def error_stats(err: torch.Tensor) -> dict:
    """Level error summary: n, median (signed), median and mean |error|, bias (mean), share within ±5, ±10."""
    e = err.double()
    if e.numel() == 0:
        return {"n": 0}
    return {"n": int(e.numel()), "median": float(e.quantile(0.5)), "median_abs": float(e.abs().quantile(0.5)),
            "mean_abs": float(e.abs().mean()), "bias": float(e.mean()),
            "within_5": float((e.abs() <= 5).double().mean()), "within_10": float((e.abs() <= 10).double().mean())}


def band_stats(err: torch.Tensor, sigma: torch.Tensor, edges) -> list[dict]:
    """`error_stats` per band [edges[j], edges[j+1]) of the true sigma (the last band closed), empty bands
    left out."""
    sigma, out = sigma.double(), []
    for j, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
        inside = (sigma >= a) & ((sigma < b) if j < len(edges) - 2 else (sigma <= b))
        if bool(inside.any()):
            out.append({"sigma_lo": float(a), "sigma_hi": float(b), **error_stats(err[inside])})
    return out


def target_verdict(err: torch.Tensor, sigma: torch.Tensor) -> dict:
    """Are the targets met where DLG chains live: in every band of `CHAIN_EDGES` within `TARGET_BAND`,
    |bias| <= `TARGET_BIAS` and mean |error| <= `TARGET_ERROR` levels."""
    lo, hi = TARGET_BAND
    edges = [e for e in CHAIN_EDGES if lo <= e <= hi]
    bands = [b for b in band_stats(err, sigma, edges) if b["n"]]
    if not bands:
        return {"sigma": [lo, hi], "n": 0, "met": False}
    worst_bias, worst_err = max(abs(b["bias"]) for b in bands), max(b["mean_abs"] for b in bands)
    return {"sigma": [lo, hi], "n": sum(b["n"] for b in bands), "max_abs_bias": worst_bias,
            "max_mean_abs": worst_err, "bias_limit": TARGET_BIAS, "error_limit": TARGET_ERROR,
            "met": worst_bias <= TARGET_BIAS and worst_err <= TARGET_ERROR}


def draw_levels(levels: torch.Tensor, n: int, gen: torch.Generator, edges=None) -> torch.Tensor:
    """n level indices uniform over the levels, or with `edges`, n per band [edges[j], edges[j+1]), each
    uniform over the levels in its band (bands with no level give none)."""
    if edges is None:
        return torch.randint(len(levels), (n,), generator=gen, device=gen.device)
    parts = []
    for j, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
        i0, i1 = level_range(levels, a, b, last=j == len(edges) - 2)
        if i1 > i0:
            parts.append(torch.randint(i0, i1, (n,), generator=gen, device=gen.device))
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64, device=gen.device)


@torch.no_grad()
def level_error(classify, x0: torch.Tensor, levels: torch.Tensor, n_eval: int = N_EVAL, seed: int = 1,
                batch: int = 512, edges=None, per_band: int | None = None, reference=None) -> dict:
    """The argmax level error on noised copies of the held-out images `x0` (cycled): error = argmax level -
    reference level, in level indices (level 0 = sigma_max, so a positive error means the classifier sees
    less noise than there is). Levels: `n_eval` uniform over all levels, or (`per_band`) that many per band
    of `edges`, uniform within each. `reference(x, m)`: the level to compare with (default the true level
    m; e.g. an exact posterior's argmax). `edges`: the bands (default decades of sigma, `sigma_bands`).
    Returns median and mean |error|, the bias (mean error), the share within ±k levels, the same per band
    (`bands`), and `target` (`target_verdict`: the targets over `TARGET_BAND`)."""
    gen = torch.Generator(device=x0.device).manual_seed(seed)
    edges = list(edges) if edges is not None else sigma_bands(float(levels.min()), float(levels.max()))
    m_all = draw_levels(levels, per_band, gen, edges) if per_band else draw_levels(levels, n_eval, gen)
    idx = torch.arange(len(m_all), device=x0.device) % x0.shape[0]
    errs = []
    for lo in range(0, len(m_all), batch):
        x, m = noised(x0[idx[lo:lo + batch]], levels, gen, m_all[lo:lo + batch])
        ref = m if reference is None else reference(x, m)
        errs.append((classify(x).argmax(1) - ref).cpu())
    err = torch.cat(errs)
    sig = levels.cpu().double()[m_all.cpu()]
    out = error_stats(err)
    out["within"] = {str(k): float((err.abs() <= k).double().mean()) for k in WITHIN_K}
    out["bands"] = band_stats(err, sig, edges)
    out["target"] = target_verdict(err, sig)
    out["level_factor"] = float((levels.max() / levels.min()) ** (1 / max(len(levels) - 1, 1)))
    return out


@torch.no_grad()
def fit_logit_offset(net, x_cal: torch.Tensor, levels: torch.Tensor, draws: int = 8192, seed: int = 2,
                     batch: int = 512, l2: float = 1e-4) -> torch.Tensor:
    """A calibration of the argmax: the per-level logit offset b (float32 [M]) that minimises the
    cross-entropy of softmax(net(x) + b) against the true level on `draws` noised copies of the calibration
    images `x_cal` (levels uniform; the network fixed). It refits the network's prior over levels: a level
    the network picks more often than the data hold it gets a lower offset. The loss is convex in b; a
    small L2 penalty `l2` keeps levels that no draw hit near 0; b is centred (softmax ignores a shift)."""
    gen = torch.Generator(device=x_cal.device).manual_seed(seed)
    idx = torch.arange(draws, device=x_cal.device) % x_cal.shape[0]
    logits, true = [], []
    for lo in range(0, draws, batch):
        x, m = noised(x_cal[idx[lo:lo + batch]], levels, gen)
        logits.append(net(x).float())
        true.append(m)
    z, m = torch.cat(logits), torch.cat(true)
    b = torch.zeros(z.shape[1], device=z.device, requires_grad=True)
    opt = torch.optim.LBFGS([b], lr=1.0, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        with torch.enable_grad():
            loss = F.cross_entropy(z + b, m) + l2 * b.pow(2).sum()
            loss.backward()
        return loss

    opt.step(closure)
    return (b - b.mean()).detach().cpu()


# ---- training ----

def resolve_levels(levels, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """float32 [M] decreasing sigmas from M (geometric from sigma_max to sigma_min), a checkpoint's `levels`
    dict, or the sigmas themselves."""
    if isinstance(levels, bool):
        raise ValueError(f"levels must be a number of levels, a levels dict or a tensor of sigmas, got {levels!r}")
    if isinstance(levels, (int, np.integer)):
        if levels < 2:
            raise ValueError(f"levels (--n-levels) must be an integer >= 2, got {levels}")
        if not 0 < sigma_min < sigma_max < math.inf:
            raise ValueError(f"need 0 < sigma_min < sigma_max (--sigma-min, --sigma-max), got {sigma_min}, {sigma_max}")
        return level_sigmas(int(levels), sigma_min, sigma_max)
    lv = levels_from_spec(levels) if isinstance(levels, dict) else torch.as_tensor(levels).detach().cpu().float()
    if lv.ndim != 1 or len(lv) < 2 or not bool(torch.isfinite(lv).all() & (lv > 0).all()) \
            or not bool((lv[1:] < lv[:-1]).all()):
        raise ValueError("levels must be at least 2 sigmas, finite, > 0 and strictly decreasing (class 0 = the "
                         "highest noise level)")
    return lv


def _positive_int(name: str, v, lo: int = 1):
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")


def split(n: int, held_out: float, calibrate: float, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Indices (test, calibration, train) of n images, a permutation from `seed`: `held_out` and `calibrate`
    are shares (each at least one image where it is > 0 and some image is left to train on)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = min(n - 1, max(1, round(held_out * n))) if held_out > 0 and n >= 2 else 0
    n_cal = min(n - n_test - 1, max(1, round(calibrate * n))) if calibrate > 0 and n - n_test >= 2 else 0
    return perm[:n_test], perm[n_test:n_test + n_cal], perm[n_test + n_cal:]


def train_levels(n_levels_in: tuple[int, int], n_levels: int, n: int, focus_share: float,
                 gen: torch.Generator) -> torch.Tensor:
    """n training level indices: uniform over all `n_levels`, except a `focus_share` of them uniform over
    the levels [i0, i1) = `n_levels_in` (the focus band)."""
    m = torch.randint(n_levels, (n,), generator=gen, device=gen.device)
    i0, i1 = n_levels_in
    if focus_share <= 0 or i1 <= i0:
        return m
    focus = torch.randint(i0, i1, (n,), generator=gen, device=gen.device)
    return torch.where(torch.rand(n, generator=gen, device=gen.device) < focus_share, focus, m)


def train_classifier(images, levels=M_LEVELS, *, sigma_min: float = 0.002, sigma_max: float = 80.0,
                     model=None, steps: int = 2000, batch_size: int = 128, lr: float = 2e-3,
                     max_minutes: float | None = 2.0, held_out: float = 0.1, calibrate: float = 0.0,
                     input: str = "rms", focus=TARGET_BAND, focus_share: float = 0.5, seed: int = 0,
                     device=None, data_range=None, progress: bool = True, source: str | None = None,
                     command: str | None = None) -> TrainedLevelClassifier:
    """DLG's noise-level classifier for `images` (module docstring), with a progress bar.

    images: `[N, C, H, W]` (or `[N, H, W]`, channels-last), uint8 pixels 0..255 (mapped to `data_range`)
        or floating data in `data_range` (taken as they are).
    levels: M (geometric from `sigma_max` down to `sigma_min`), a checkpoint's levels dict, or a
        decreasing tensor of M sigmas. For a network use its own noise range: DLG checks at load time that
        the levels lie within `model.sigma_min`..`model.sigma_max`.
    model: your denoiser; where given, its `shape` must equal the images' and its `sigma_min`, `sigma_max`
        and `data_range` replace the defaults (explicit `levels` tensors or dicts still win).
    steps, batch_size, lr, max_minutes: the budget (Adam, cosine decay over whichever of `steps` and
        `max_minutes` ends first; None or 0: no time limit). held_out: the share of images kept out for
        the level error (at least one image when N >= 2). device: default CUDA if available, else the CPU.
    calibrate: the share of images kept out to fit the argmax calibration (`fit_logit_offset`, stored in
        the checkpoint; default 0: none, as the level error has no systematic bias to remove, module docstring).
    input: "rms" (x / rms(x) and log rms(x)) or "raw" (the paper's input; `NoiseLevelNet`).
    focus, focus_share: a share of each batch draws its levels uniformly over the levels within
        `focus` = (sigma_lo, sigma_hi) (default where DLG chains live), the rest uniformly over all levels
        (default 0.5; 0: the paper's uniform draw).
    source, command: what the card says the data were and what made it.

    Returns a `TrainedLevelClassifier` with `.card`, `.meta` (the held-out `level_error`) and `.save(path)`;
    pass the path as DLG's `classifier`.
    """
    if model is not None:
        m_lo, m_hi = getattr(model, "sigma_min", None), getattr(model, "sigma_max", None)
        if isinstance(levels, (int, np.integer)) and m_lo is not None and m_hi is not None:
            sigma_min, sigma_max = float(m_lo), float(m_hi)
        if data_range is None and getattr(model, "data_range", None) is not None:
            data_range = tuple(float(v) for v in model.data_range)
    data_range = (-1.0, 1.0) if data_range is None else tuple(float(v) for v in data_range)
    x, how = as_data(images, data_range)
    if model is not None and tuple(x.shape[1:]) != tuple(model.shape):
        raise ValueError(f"the images have shape {tuple(x.shape[1:])}, the model's shape is {tuple(model.shape)}")
    if source is None:  # `load_data` describes its own scaling
        source = f"a tensor given to train_classifier; {how}"
    lv = resolve_levels(levels, sigma_min, sigma_max)
    for name, v in (("steps", steps), ("batch_size", batch_size), ("seed", seed)):
        _positive_int(name, v, 0 if name == "seed" else 1)
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if max_minutes is not None and not max_minutes >= 0:
        raise ValueError(f"max_minutes must be >= 0 (0 or None: no time limit), got {max_minutes}")
    for name, v in (("held_out", held_out), ("calibrate", calibrate)):
        if not 0 <= v < 1:
            raise ValueError(f"{name} must be in [0, 1), got {v}")
    if not held_out + calibrate < 1:
        raise ValueError(f"held_out + calibrate must be < 1 (some images to train on), got {held_out + calibrate}")
    if not 0 <= focus_share <= 1:
        raise ValueError(f"focus_share must be in [0, 1], got {focus_share}")
    focus = tuple(float(v) for v in focus)
    if len(focus) != 2 or not 0 < focus[0] < focus[1]:
        raise ValueError(f"focus must be (sigma_lo, sigma_hi) with 0 < sigma_lo < sigma_hi, got {focus}")
    if input not in NoiseLevelNet.INPUTS:
        raise ValueError(f"input must be one of {', '.join(NoiseLevelNet.INPUTS)}, got {input!r}")
    dev = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))

    i_test, i_cal, i_train = split(x.shape[0], held_out, calibrate, seed)
    test, cal, train_x = x[i_test].to(dev), x[i_cal].to(dev), x[i_train].to(dev)
    levels_d, focus_idx = lv.to(dev), level_range(lv, *focus, last=True)
    torch.manual_seed(seed)
    net = NoiseLevelNet(tuple(x.shape[1:]), len(lv), input=input).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    gen = torch.Generator(device=dev).manual_seed(seed)
    budget = 60.0 * max_minutes if max_minutes else math.inf
    t0, losses, done, stopped_by = time.time(), [], 0, "steps"
    bar = tqdm(total=steps, desc="train classifier", unit="step", disable=not progress)
    net.train()
    for step in range(steps):
        frac = max(step / steps, (time.time() - t0) / budget)  # cosine decay over whichever budget ends first
        if frac >= 1:
            stopped_by = "time"
            break
        for g in opt.param_groups:
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * frac))
        idx = torch.randint(train_x.shape[0], (batch_size,), generator=gen, device=dev)
        xb, mb = noised(train_x[idx], levels_d, gen, train_levels(focus_idx, len(lv), batch_size, focus_share, gen))
        loss = F.cross_entropy(net(xb), mb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        done += 1
        bar.update(1)
        if done % 20 == 0:
            bar.set_postfix(loss=f"{sum(losses[-100:]) / len(losses[-100:]):.3f}")
    bar.close()
    minutes = (time.time() - t0) / 60
    net.eval()
    eval_x = test if len(i_test) else train_x
    clf = TrainedLevelClassifier(net, lv.to(dev), "", data_range, source="train_classifier")
    edges = chain_edges(lv)
    by_band = level_error(clf, eval_x, levels_d, edges=edges, per_band=N_PER_BAND)
    errors = {"level_error_by_band_uncalibrated": by_band} if len(i_cal) else {}
    if len(i_cal):
        clf.logit_offset = fit_logit_offset(net, cal, levels_d).to(dev)
        by_band = level_error(clf, eval_x, levels_d, edges=edges, per_band=N_PER_BAND)
    errors.update(level_error=level_error(clf, eval_x, levels_d), level_error_by_band=by_band)
    tail = losses[-100:]
    clf.meta = {"data": source, "shape": list(x.shape[1:]), "n_train": len(i_train), "n_test": len(i_test),
                "n_calibrate": len(i_cal), "held_out": held_out, "calibrate": calibrate, "input": input,
                "focus": list(focus), "focus_share": focus_share, "steps": done, "stopped_by": stopped_by,
                "minutes": round(minutes, 3), "final_loss": sum(tail) / len(tail), "batch_size": batch_size,
                "lr": lr, "seed": seed, "device": str(dev), **errors}
    clf.to("cpu")
    clf.card = card_text(clf, command)
    return clf


def _device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def target_line(t: dict, wrap: bool = False) -> str:
    """One sentence: the worst band's |bias| and mean |error| over the target range, and whether that meets
    the targets (`wrap`: a line break for a card's list item)."""
    lo, hi = t["sigma"]
    if not t["n"]:
        return f"no held-out draw in sigma [{lo:g}, {hi:g}]"
    verdict, gap = ("met" if t["met"] else "not met"), "\n  " if wrap else " "
    return (f"over sigma [{lo:g}, {hi:g}] the worst band has |bias| {t['max_abs_bias']:.1f} and mean |error| "
            f"{t['max_mean_abs']:.1f} levels:{gap}the targets (|bias| <= {t['bias_limit']:g}, mean |error| <= "
            f"{t['error_limit']:g} in every band) are {verdict}")


def band_table(e: dict, first: str = "true sigma") -> str:
    """The markdown table of a `level_error` result: one row for all draws, then one per band."""
    def row(name, b):
        return (f"| {name} | {b['n']} | {b['median_abs']:.1f} | {b['mean_abs']:.1f} | {b['bias']:+.1f} | "
                f"{b['within_5']:.3f} | {b['within_10']:.3f} | {b['median']:+.1f} |")

    last = len(e["bands"]) - 1
    rows = [row(f"[{b['sigma_lo']:.3g}, {b['sigma_hi']:.3g}{']' if i == last else ')'}", b)
            for i, b in enumerate(e["bands"])]
    return "\n".join([f"| {first} | n | median abs error | mean abs error | bias | within ±5 | within ±10 | median |",
                      "|---|---|---|---|---|---|---|---|", row("all", e), *rows])


def card_text(clf: TrainedLevelClassifier, command: str | None = None) -> str:
    m, e = clf.meta, clf.meta["level_error"]
    lv = clf.levels
    within = " · ".join(f"±{k}: {v:.3f}" for k, v in e["within"].items())
    held = (f"{m['n_test']} held out" if m["n_test"] else "none held out (fewer than 2 images): the error below is "
            "on the training images")
    spacing = clf.levels_spec()["spacing"]
    inp = ("x as it is (the paper's input)" if m["input"] == "raw" else
           "x / rms(x) and a constant plane log rms(x)")
    draw = "m uniform over the levels"
    if m["focus_share"] > 0:
        draw += (f", except a share {m['focus_share']:g} of each batch\n  uniform over the levels in sigma "
                 f"[{m['focus'][0]:g}, {m['focus'][1]:g}]")
    if m["n_calibrate"]:
        calib = (f"- calibration of the argmax: a per-level logit offset fitted (cross-entropy, network fixed) on "
                 f"{m['n_calibrate']} images\n  kept out of training; without it, "
                 f"{target_line(m['level_error_by_band_uncalibrated']['target'], wrap=True)}")
    else:
        calib = "- no calibration of the argmax"
    return f"""# Noise-level classifier: {m['data'].split(';')[0]}

DLG's noise-level classifier (Kim & Ye 2023): four 3x3 conv layers (32, 64, 128, 256 channels, ReLU,
2x2 average pooling) and one linear layer to M = {len(lv)} logits over {spacing} levels from
sigma_max = {float(lv[0]):.6g} down to sigma_min = {float(lv[-1]):.6g} (level 0 = sigma_max). Input: {inp}
(see `dmcmc_fast/mcmc/classifier.py`). Unconditional: it sees x only.

- data: {m['data']}
- shape {tuple(m['shape'])}, data range {list(clf.data_range)}; {m['n_train']} training images, {held}
- training: cross-entropy on x0 + sigma_m z with {draw};
  Adam lr {m['lr']} (cosine decay over the step or time budget, whichever ends first), batch {m['batch_size']},
  gradient-norm clip 1.0, {m['steps']} steps (stopped by the {m['stopped_by']} budget), seed {m['seed']}
{calib}
- time: {m['minutes']:.1f} min on {_device_name(m['device'])}; torch {torch.__version__}
- final loss (mean of the last {min(100, m['steps'])} steps): {m['final_loss']:.4f} (uniform guess:
  {math.log(len(lv)):.3f})
- weights stored in float16 (evaluated in float32)

Held-out level error ({e['n']} noised held-out images, levels uniform). Error = predicted level - true level
in level indices (one level = a factor {e['level_factor']:.4f} in sigma); bias (the mean error) > 0: the
classifier sees less noise than there is.

{band_table(e)}

Share within ±k levels: {within}.

By the bands where DLG chains live ({N_PER_BAND} draws per band, levels uniform within it; `bench/classifier_bias.py`
has these against the exact posterior too, and where the chains of a DLG run are):

{band_table(m['level_error_by_band'])}

Targets where DLG chains live: {target_line(m['level_error_by_band']['target'])}.

Made by: `{command or 'train_classifier(...)'}`
"""


# ---- the command ----

def _pair(text: str, name: str, kind=float) -> tuple:
    parts = text.replace("x", ",").split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        return tuple(kind(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name} must be two numbers A,B, got {text!r}") from None


def build_parser():
    p = argparse.ArgumentParser(prog="dmcmc-fast train classifier",
                                description="Train DLG's noise-level classifier on your images (a folder, an .npz, "
                                            "a .pt tensor) or an offline data set, for --classifier FILE.",
                                epilog="Data formats and scaling: see `dmcmc_fast/training/classifier.py`.")
    p.add_argument("--data", required=True, help="a folder of images (png/jpg), an .npz/.npy, a .pt tensor "
                   f"[N, C, H, W], or a built-in data set ({', '.join(sorted(builtin_data.LOADERS))})")
    p.add_argument("--out", required=True, help="checkpoint path (.pt); the card goes beside it as .md")
    p.add_argument("--key", default=None, help="the array of an .npz / the entry of a .pt dict (default: the first)")
    p.add_argument("--data-range", default=None, type=lambda s: _pair(s, "--data-range"),
                   help="LO,HI: the model's data range; uint8 pixels map 0 -> LO, 255 -> HI, floats must lie "
                        "within it (default: --model's, else -1,1; write --data-range=-1,1 when LO is negative)")
    p.add_argument("--channels", type=int, default=None, choices=(1, 3),
                   help="folder of images: 1 (grayscale) or 3 (RGB); default 1 if all are grayscale")
    p.add_argument("--size", default=None, type=lambda s: _pair(s, "--size", int),
                   help="folder of images: resize all to H,W")
    p.add_argument("--steps", type=int, default=2000, help="optimiser steps (>= 1; default 2000)")
    p.add_argument("--max-minutes", type=float, default=2.0,
                   help="time budget in minutes (default 2; 0: none): training stops at whichever of --steps and "
                        "--max-minutes ends first, the learning rate decaying over it")
    p.add_argument("--batch-size", type=int, default=128, help="images per step (>= 1)")
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (> 0)")
    p.add_argument("--n-levels", type=int, default=M_LEVELS, help="M, the number of geometric levels (>= 2)")
    p.add_argument("--sigma-min", type=float, default=None,
                   help="lowest level (> 0); at least your model's sigma_min (default: --model's, else 0.002)")
    p.add_argument("--sigma-max", type=float, default=None,
                   help="highest level (> sigma-min); at most your model's sigma_max (default: --model's, else 80)")
    p.add_argument("--held-out", type=float, default=0.1, help="share of images kept out for the level error")
    p.add_argument("--calibrate", type=float, default=0.0,
                   help="share of images kept out to fit the argmax calibration, a per-level logit offset "
                        "(default 0: none)")
    p.add_argument("--input", default="rms", choices=NoiseLevelNet.INPUTS,
                   help="rms: x / rms(x) and log rms(x) (default); raw: x as it is (the paper's input)")
    p.add_argument("--focus", default=TARGET_BAND, type=lambda s: _pair(s, "--focus"),
                   help=f"LO,HI: the sigma band --focus-share draws from (default {TARGET_BAND[0]:g},"
                        f"{TARGET_BAND[1]:g}, where DLG chains live)")
    p.add_argument("--focus-share", type=float, default=0.5,
                   help="share of each batch whose levels are uniform over the levels in --focus, the rest "
                        "uniform over all levels (default 0.5; 0: the paper's uniform draw)")
    p.add_argument("--model", default=None,
                   help="your model, as `dmcmc-fast sample --model` takes it (a built-in name, a diffusers folder, "
                        "module:callable): its shape, data range and noise range (the levels' default) are checked "
                        "and used")
    p.add_argument("--scheduler", default=None, help="with --model a diffusers UNet folder: its scheduler's folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (1 is fastest on a shared 2-core machine; 0: torch's default)")
    p.add_argument("--no-progress", action="store_true")
    return p


def _model_and_levels(a):
    """`--model` resolved (None without one) and the levels: M geometric over the model's noise range, or over
    --sigma-min/--sigma-max where given (they win over the model's)."""
    if a.model is None:
        if a.scheduler is not None:
            raise ValueError("--scheduler goes with --model (a diffusers UNet folder)")
        return None, a.n_levels
    from dmcmc_fast.models.resolve import resolve_model

    model = resolve_model(a.model, a.scheduler)
    if a.sigma_min is None and a.sigma_max is None:
        return model, a.n_levels  # train_classifier takes the model's range
    lo = a.sigma_min if a.sigma_min is not None else getattr(model, "sigma_min", None) or 0.002
    hi = a.sigma_max if a.sigma_max is not None else getattr(model, "sigma_max", None) or 80.0
    return model, resolve_levels(a.n_levels, float(lo), float(hi))


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = build_parser().parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    model, levels = _model_and_levels(a)
    if a.data_range is None:
        a.data_range = tuple(float(v) for v in getattr(model, "data_range", None) or (-1.0, 1.0))
    images, source = load_data(a.data, a.key, a.data_range, a.channels, a.size)
    clf = train_classifier(images, levels, model=model, sigma_min=a.sigma_min or 0.002, sigma_max=a.sigma_max or 80.0,
                           steps=a.steps,
                           batch_size=a.batch_size, lr=a.lr, max_minutes=a.max_minutes, held_out=a.held_out,
                           calibrate=a.calibrate, input=a.input, focus=a.focus, focus_share=a.focus_share,
                           seed=a.seed, device=a.device, data_range=a.data_range, progress=not a.no_progress,
                           source=source, command=shlex.join(["dmcmc-fast", "train", "classifier", *argv]))
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    clf.save(a.out)
    with open(os.path.splitext(a.out)[0] + ".md", "w") as f:
        f.write(clf.card)
    e, target = clf.meta["level_error"], clf.meta["level_error_by_band"]["target"]  # the card's verdict
    if not target["met"]:
        print(f"dmcmc-fast train classifier: warning: the classifier misses its card's targets: "
              f"{target_line(target)}; DLG's Gibbs step will pick noise levels that far off and DLG refuses it "
              f"without --allow-weak-classifier 1. Train longer (--steps, --max-minutes; {clf.meta['steps']} steps "
              "now) or on more images", file=sys.stderr)
    use = f"--sampler dlg --classifier {a.out}" + ("" if target["met"] else " --allow-weak-classifier 1 (it misses "
                                                  "its targets: DLG refuses it without this)")
    print(json.dumps({"checkpoint": a.out, "shape": list(clf.shape), "levels": [len(clf.levels), float(clf.levels[-1]),
                      float(clf.levels[0])], "steps": clf.meta["steps"], "minutes": clf.meta["minutes"],
                      "final_loss": clf.meta["final_loss"], "median_abs_level_error": e["median_abs"],
                      "mean_abs_level_error": e["mean_abs"], "level_bias": e["bias"], "target": target, "use": use}))
    return 0
