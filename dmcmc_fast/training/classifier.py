"""`dmcmc-fast train classifier` and `train_classifier(images, ...)`: DLG's noise-level classifier (the
paper's network, `dmcmc_fast.mcmc.classifier.NoiseLevelNet`) on your own data or an offline data set.

Each step draws a batch of clean images x0, a level m uniformly from the M levels, and minimises the
cross-entropy of NoiseLevelNet(x0 + sigma_m z) against m. The learning rate decays (cosine) over whichever
budget ends first, `steps` or `max_minutes` (default 2 minutes: short on a CPU; raise both for a better
classifier). A held-out share of the data (10%) is noised the same way, with a fixed seed, to measure the
level error by sigma band (`level_error`); the card says what the classifier was trained on, how long,
and that error. The checkpoint holds the levels (one sigma per class), the data shape and data range,
and the card (format: `dmcmc_fast/mcmc/classifier.py`); the card is also written beside it as `.md`.

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

def noised(x0: torch.Tensor, levels: torch.Tensor, gen: torch.Generator):
    """x0 + sigma_m z with m uniform over the levels -> (x, m)."""
    m = torch.randint(len(levels), (x0.shape[0],), generator=gen, device=x0.device)
    z = torch.randn(x0.shape, generator=gen, device=x0.device)
    return x0 + levels[m].reshape(-1, 1, 1, 1) * z, m


def sigma_bands(lo: float, hi: float) -> list[float]:
    """Band edges: lo, the powers of ten strictly between lo and hi, hi."""
    inner = [10.0 ** k for k in range(math.floor(math.log10(lo)) + 1, math.ceil(math.log10(hi)))
             if lo < 10.0 ** k < hi]
    return [lo, *inner, hi]


def _stats(err: torch.Tensor) -> dict:
    e = err.double()
    return {"n": int(e.numel()), "median_abs": float(e.abs().quantile(0.5)), "mean_abs": float(e.abs().mean()),
            "bias": float(e.mean()), "within_5": float((e.abs() <= 5).double().mean())}


@torch.no_grad()
def level_error(classify, x0: torch.Tensor, levels: torch.Tensor, n_eval: int = N_EVAL, seed: int = 1,
                batch: int = 512) -> dict:
    """The level error on `n_eval` noised copies of the held-out images `x0` (cycled), levels uniform:
    error = argmax level - true level, in level indices (level 0 = sigma_max, so a positive error means the
    classifier sees less noise than there is). Returns median and mean |error|, the bias (mean error), the
    share within ±k levels, and the same per sigma band (decades of the true sigma): `bands`."""
    gen = torch.Generator(device=x0.device).manual_seed(seed)
    idx = torch.arange(n_eval, device=x0.device) % x0.shape[0]
    errs, true = [], []
    for lo in range(0, n_eval, batch):
        x, m = noised(x0[idx[lo:lo + batch]], levels, gen)
        errs.append((classify(x).argmax(1) - m).cpu())
        true.append(m.cpu())
    err, m = torch.cat(errs), torch.cat(true)
    sig = levels.cpu().double()[m]
    out = _stats(err)
    out["within"] = {str(k): float((err.abs() <= k).double().mean()) for k in WITHIN_K}
    edges = sigma_bands(float(levels.min()), float(levels.max()))
    out["bands"] = []
    for j, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
        inside = (sig >= a) & ((sig < b) if j < len(edges) - 2 else (sig <= b))
        if bool(inside.any()):
            out["bands"].append({"sigma_lo": a, "sigma_hi": b, **_stats(err[inside])})
    out["level_factor"] = float((levels.max() / levels.min()) ** (1 / max(len(levels) - 1, 1)))
    return out


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


def train_classifier(images, levels=M_LEVELS, *, sigma_min: float = 0.002, sigma_max: float = 80.0,
                     model=None, steps: int = 2000, batch_size: int = 128, lr: float = 2e-3,
                     max_minutes: float | None = 2.0, held_out: float = 0.1, seed: int = 0, device=None,
                     data_range=None, progress: bool = True, source: str | None = None,
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
    if not 0 <= held_out < 1:
        raise ValueError(f"held_out must be in [0, 1), got {held_out}")
    dev = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))

    n = x.shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = min(n - 1, max(1, round(held_out * n))) if held_out > 0 and n >= 2 else 0
    test, train_x = x[perm[:n_test]].to(dev), x[perm[n_test:]].to(dev)
    levels_d = lv.to(dev)
    torch.manual_seed(seed)
    net = NoiseLevelNet(tuple(x.shape[1:]), len(lv)).to(dev)
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
        xb, mb = noised(train_x[idx], levels_d, gen)
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
    err = level_error(net, test if n_test else train_x, levels_d)
    tail = losses[-100:]
    meta = {"data": source, "shape": list(x.shape[1:]), "n_train": int(train_x.shape[0]), "n_test": int(n_test),
            "steps": done, "stopped_by": stopped_by, "minutes": round(minutes, 3), "final_loss": sum(tail) / len(tail),
            "batch_size": batch_size, "lr": lr, "seed": seed, "device": str(dev), "level_error": err}
    clf = TrainedLevelClassifier(net.cpu(), lv, "", data_range, meta, source="train_classifier")
    clf.card = card_text(clf, command)
    return clf


def _device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def card_text(clf: TrainedLevelClassifier, command: str | None = None) -> str:
    m, e = clf.meta, clf.meta["level_error"]
    lv = clf.levels
    def row(name, b):
        return (f"| {name} | {b['n']} | {b['median_abs']:.1f} | {b['mean_abs']:.1f} | {b['bias']:+.1f} | "
                f"{b['within_5']:.3f} |")

    last = len(e["bands"]) - 1
    rows = "\n".join(row(f"[{b['sigma_lo']:.3g}, {b['sigma_hi']:.3g}{']' if i == last else ')'}", b)
                     for i, b in enumerate(e["bands"]))
    within = " · ".join(f"±{k}: {v:.3f}" for k, v in e["within"].items())
    held = (f"{m['n_test']} held out" if m["n_test"] else "none held out (fewer than 2 images): the error below is "
            "on the training images")
    spacing = clf.levels_spec()["spacing"]
    return f"""# Noise-level classifier: {m['data'].split(';')[0]}

DLG's noise-level classifier (Kim & Ye 2023): four 3x3 conv layers (32, 64, 128, 256 channels, ReLU,
2x2 average pooling) and one linear layer to M = {len(lv)} logits over {spacing} levels from
sigma_max = {float(lv[0]):.6g} down to sigma_min = {float(lv[-1]):.6g} (level 0 = sigma_max). Input: x / rms(x)
and a constant plane log rms(x) (see `dmcmc_fast/mcmc/classifier.py`). Unconditional: it sees x only.

- data: {m['data']}
- shape {tuple(m['shape'])}, data range {list(clf.data_range)}; {m['n_train']} training images, {held}
- training: cross-entropy on x0 + sigma_m z with m uniform over the levels; Adam lr {m['lr']} (cosine decay over
  the step or time budget, whichever ends first), batch {m['batch_size']}, gradient-norm clip 1.0,
  {m['steps']} steps (stopped by the {m['stopped_by']} budget), seed {m['seed']}
- time: {m['minutes']:.1f} min on {_device_name(m['device'])}; torch {torch.__version__}
- final loss (mean of the last {min(100, m['steps'])} steps): {m['final_loss']:.4f} (uniform guess:
  {math.log(len(lv)):.3f})
- weights stored in float16 (evaluated in float32)

Held-out level error ({e['n']} noised held-out images, levels uniform). Error = predicted level - true level
in level indices (one level = a factor {e['level_factor']:.4f} in sigma); bias > 0: the classifier sees less
noise than there is.

| true sigma | n | median abs error | mean abs error | bias | within ±5 |
|---|---|---|---|---|---|
{row("all", e)}
{rows}

Share within ±k levels: {within}.

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
    p.add_argument("--data-range", default=(-1.0, 1.0), type=lambda s: _pair(s, "--data-range"),
                   help="LO,HI: the model's data range; uint8 pixels map 0 -> LO, 255 -> HI, floats must lie "
                        "within it (default -1,1; write --data-range=-1,1 when LO is negative)")
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
    p.add_argument("--sigma-min", type=float, default=0.002,
                   help="lowest level (> 0); at least your model's sigma_min (default 0.002)")
    p.add_argument("--sigma-max", type=float, default=80.0,
                   help="highest level (> sigma-min); at most your model's sigma_max (default 80)")
    p.add_argument("--held-out", type=float, default=0.1, help="share of images kept out for the level error")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (1 is fastest on a shared 2-core machine; 0: torch's default)")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = build_parser().parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    images, source = load_data(a.data, a.key, a.data_range, a.channels, a.size)
    clf = train_classifier(images, a.n_levels, sigma_min=a.sigma_min, sigma_max=a.sigma_max, steps=a.steps,
                           batch_size=a.batch_size, lr=a.lr, max_minutes=a.max_minutes, held_out=a.held_out,
                           seed=a.seed, device=a.device, data_range=a.data_range, progress=not a.no_progress,
                           source=source, command=shlex.join(["dmcmc-fast", "train", "classifier", *argv]))
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    clf.save(a.out)
    with open(os.path.splitext(a.out)[0] + ".md", "w") as f:
        f.write(clf.card)
    e = clf.meta["level_error"]
    print(json.dumps({"checkpoint": a.out, "shape": list(clf.shape), "levels": [len(clf.levels), float(clf.levels[-1]),
                      float(clf.levels[0])], "steps": clf.meta["steps"], "minutes": clf.meta["minutes"],
                      "final_loss": clf.meta["final_loss"], "median_abs_level_error": e["median_abs"],
                      "mean_abs_level_error": e["mean_abs"], "level_bias": e["bias"],
                      "use": f"--sampler dlg --classifier {a.out}"}))
    return 0
