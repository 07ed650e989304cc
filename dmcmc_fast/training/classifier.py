"""`dmcmc-fast train classifier`: DLG's noise-level classifier (paper's network) on an offline data set.

Each step draws a batch of clean images x0, a level m uniformly from the M geometric levels, and
minimises the cross-entropy of NoiseLevelNet(x0 + sigma_m z) against m. A held-out 10% of the data is
noised the same way (fixed seed) to report accuracy within ±k levels. Writes the checkpoint (float16
weights, levels, card) and the card as markdown beside it.

    dmcmc-fast train classifier --data mnist --steps 1500 --out dmcmc_fast/checkpoints/classifier-mnist.pt
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch
import torch.nn.functional as F

from dmcmc_fast import data
from dmcmc_fast.mcmc.classifier import M_LEVELS, NoiseLevelNet, level_sigmas, save_classifier

WITHIN_K = (0, 1, 2, 5, 10, 25, 50)


def build_parser():
    p = argparse.ArgumentParser(prog="dmcmc-fast train classifier", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, choices=sorted(data.LOADERS), help="offline data set")
    p.add_argument("--out", required=True, help="checkpoint path (.pt); the card goes beside it as .md")
    p.add_argument("--steps", type=int, default=1500, help="optimiser steps (>= 1)")
    p.add_argument("--batch-size", type=int, default=128, help="images per step (>= 1)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (> 0)")
    p.add_argument("--n-levels", type=int, default=M_LEVELS, help="M, the number of levels (>= 2)")
    p.add_argument("--sigma-min", type=float, default=0.002, help="lowest level (> 0)")
    p.add_argument("--sigma-max", type=float, default=80.0, help="highest level (> sigma-min)")
    p.add_argument("--max-minutes", type=float, default=None, help="stop early after this wall time")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a shared 2-core machine)")
    return p


def _check(a):
    for name, v, lo in (("--steps", a.steps, 1), ("--batch-size", a.batch_size, 1), ("--n-levels", a.n_levels, 2)):
        if v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {v}")
    if not a.lr > 0:
        raise ValueError(f"--lr must be > 0, got {a.lr}")
    if not 0 < a.sigma_min < a.sigma_max:
        raise ValueError(f"need 0 < --sigma-min < --sigma-max, got {a.sigma_min}, {a.sigma_max}")


def noised(x0: torch.Tensor, levels: torch.Tensor, gen: torch.Generator):
    """x0 + sigma_m z with m uniform over the levels -> (x, m)."""
    m = torch.randint(len(levels), (x0.shape[0],), generator=gen, device=x0.device)
    z = torch.randn(x0.shape, generator=gen, device=x0.device)
    return x0 + levels[m].reshape(-1, 1, 1, 1) * z, m


@torch.no_grad()
def level_accuracy(classify, x0: torch.Tensor, levels: torch.Tensor, seed: int = 1, repeats: int = 4,
                   batch: int = 512) -> dict:
    """Share of held-out noised images whose argmax level is within ±k of the true one; mean |error|."""
    gen = torch.Generator(device=x0.device).manual_seed(seed)
    errs = []
    for _ in range(repeats):
        for lo in range(0, x0.shape[0], batch):
            x, m = noised(x0[lo:lo + batch], levels, gen)
            errs.append((classify(x).argmax(1) - m).abs())
    e = torch.cat(errs).float()
    out = {f"within_{k}": float((e <= k).float().mean()) for k in WITHIN_K}
    out["mean_abs_level_error"] = float(e.mean())
    out["n_eval"] = int(e.numel())
    return out


def train(a) -> dict:
    _check(a)
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    dev = torch.device(a.device)
    images, _ = data.load(a.data)
    perm = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(a.seed))
    n_test = images.shape[0] // 10
    test, train_x = images[perm[:n_test]].to(dev), images[perm[n_test:]].to(dev)
    levels = level_sigmas(a.n_levels, a.sigma_min, a.sigma_max).to(dev)
    net = NoiseLevelNet(tuple(images.shape[1:]), a.n_levels).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=a.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, a.steps)
    gen = torch.Generator(device=dev).manual_seed(a.seed)
    t0, losses, step = time.time(), [], 0
    for step in range(1, a.steps + 1):
        idx = torch.randint(train_x.shape[0], (a.batch_size,), generator=gen, device=dev)
        x, m = noised(train_x[idx], levels, gen)
        loss = F.cross_entropy(net(x), m)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 100 == 0:
            print(json.dumps({"step": step, "loss": round(sum(losses[-100:]) / len(losses[-100:]), 4),
                              "minutes": round((time.time() - t0) / 60, 2)}), flush=True)
        if a.max_minutes is not None and time.time() - t0 > 60 * a.max_minutes:
            break
    minutes = (time.time() - t0) / 60
    net.eval()
    acc = level_accuracy(net, test, levels)
    tail = losses[-100:]
    return {"net": net, "steps": step, "minutes": minutes, "final_loss": sum(tail) / len(tail), "accuracy": acc,
            "n_train": int(train_x.shape[0]), "n_test": int(n_test)}


def card_text(a, r: dict) -> str:
    acc = r["accuracy"]
    rows = "\n".join(f"| ±{k} | {acc[f'within_{k}']:.3f} |" for k in WITHIN_K)
    dev = torch.cuda.get_device_name() if a.device.startswith("cuda") else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    return f"""# Noise-level classifier: {a.data}

DLG's noise-level classifier (Kim & Ye 2023): four 3x3 conv layers (32, 64, 128, 256 channels, ReLU,
2x2 average pooling) and one linear layer to M = {a.n_levels} logits over geometric levels from
sigma_max = {a.sigma_max} down to sigma_min = {a.sigma_min} (level 0 = sigma_max). Input: x / rms(x) and a
constant plane log rms(x) (see `dmcmc_fast/mcmc/classifier.py`).

- data: `{a.data}` (offline, scaled to [-1, 1]); {r['n_train']} training images, {r['n_test']} held out
- training: cross-entropy on x0 + sigma_m z with m uniform over the levels; Adam lr {a.lr} (cosine decay),
  batch {a.batch_size}, gradient-norm clip 1.0, {r['steps']} steps, seed {a.seed}
- time: {r['minutes']:.1f} min on {dev}; torch {torch.__version__}
- final loss (mean of the last 100 steps): {r['final_loss']:.4f} (uniform guess: {torch.log(torch.tensor(float(a.n_levels))).item():.3f})
- weights stored in float16 (evaluated in float32)

Held-out accuracy of the argmax level ({acc['n_eval']} noised held-out images, levels uniform):

| within | share |
|---|---|
{rows}

Mean |level error|: {acc['mean_abs_level_error']:.1f} levels (one level = a factor
{(a.sigma_max / a.sigma_min) ** (1 / (a.n_levels - 1)):.4f} in sigma).

Command: `dmcmc-fast train classifier --data {a.data} --steps {a.steps} --batch-size {a.batch_size} --lr {a.lr} --seed {a.seed}{f' --max-minutes {a.max_minutes}' if a.max_minutes else ''}`
"""


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    r = train(a)
    card = card_text(a, r)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    spec = {"n_levels": a.n_levels, "sigma_min": a.sigma_min, "sigma_max": a.sigma_max}
    save_classifier(a.out, r["net"], spec, card, meta={"data": a.data, "accuracy": r["accuracy"], "steps": r["steps"]})
    with open(os.path.splitext(a.out)[0] + ".md", "w") as f:
        f.write(card)
    print(json.dumps({"checkpoint": a.out, "final_loss": r["final_loss"], **r["accuracy"]}))
    return 0
