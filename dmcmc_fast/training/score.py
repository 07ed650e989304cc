"""`dmcmc-fast train score`: train a small EDM-preconditioned UNet denoiser on an offline data set.

Loss (EDM, Karras et al. 2022, eq. 2 and Table 1): with ln sigma ~ N(P_mean, P_std^2) and
lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2,

    L = E_{x0, sigma, n} lambda(sigma) |D(x0 + sigma n, sigma) - x0|^2 / dim.

Adam with a linear warm-up, an EMA of the weights (what the checkpoint holds), a time budget
(`--minutes`) as well as a step budget, and a checkpoint + card every `--save-every` seconds so an
interrupted run is usable. `--state` keeps the optimizer/EMA state for `--resume` (not committed).

    dmcmc-fast train score --data mnist --out dmcmc_fast/checkpoints/unet-mnist.pt --minutes 35
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import sys
import time

import torch

from dmcmc_fast import data
from dmcmc_fast.models.unet import EDMDenoiser, UNet, save_checkpoint


def parse_args(argv):
    p = argparse.ArgumentParser(prog="dmcmc-fast train score", description=__doc__.split("\n")[0])
    p.add_argument("--data", default="mnist", choices=sorted(data.LOADERS), help="offline data set")
    p.add_argument("--out", required=True, help="checkpoint path (.pt); the card goes beside it as .md")
    p.add_argument("--channels", default="32,64,64", help="UNet channels per level, comma-separated")
    p.add_argument("--blocks", type=int, default=1, help="residual blocks per level (>= 1)")
    p.add_argument("--no-attn", action="store_true", help="no self-attention at the lowest resolution")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (> 0)")
    p.add_argument("--warmup", type=int, default=200, help="linear learning-rate warm-up steps")
    p.add_argument("--ema", type=float, default=0.999, help="EMA decay of the weights, in [0, 1)")
    p.add_argument("--steps", type=int, default=100_000, help="stop after this many steps")
    p.add_argument("--minutes", type=float, default=35.0, help="stop after this much wall time")
    p.add_argument("--sigma-data", type=float, default=None, help="EDM sigma_data (default: the data's std)")
    p.add_argument("--p-mean", type=float, default=-1.2, help="mean of ln sigma in training")
    p.add_argument("--p-std", type=float, default=1.2, help="std of ln sigma in training")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (the machine is shared)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--save-every", type=float, default=120.0, help="seconds between checkpoints")
    p.add_argument("--log-every", type=int, default=50, help="steps between log lines")
    p.add_argument("--state", default=None, help="file for optimizer/EMA state (enables --resume)")
    p.add_argument("--resume", action="store_true", help="continue from --state")
    a = p.parse_args(argv)
    a.channels = tuple(int(c) for c in a.channels.split(","))
    for name, ok, rng in [("batch_size", a.batch_size >= 1, ">= 1"), ("lr", a.lr > 0, "> 0"),
                          ("ema", 0 <= a.ema < 1, "[0, 1)"), ("steps", a.steps >= 1, ">= 1"),
                          ("minutes", a.minutes > 0, "> 0"), ("p_std", a.p_std > 0, "> 0"),
                          ("threads", a.threads >= 1, ">= 1"), ("warmup", a.warmup >= 0, ">= 0")]:
        if not ok:
            raise ValueError(f"--{name.replace('_', '-')} must be {rng}, got {getattr(a, name)}")
    if a.resume and not a.state:
        raise ValueError("--resume needs --state FILE")
    return a


def edm_loss(denoiser: EDMDenoiser, x0: torch.Tensor, gen: torch.Generator, p_mean: float, p_std: float):
    """EDM training loss for one batch (weights lambda(sigma) = 1 / c_out^2)."""
    b = x0.shape[0]
    sigma = (p_mean + p_std * torch.randn(b, generator=gen, device=x0.device)).exp()
    n = torch.randn(x0.shape, generator=gen, device=x0.device)
    sd2 = denoiser.sigma_data ** 2
    w = (sigma ** 2 + sd2) / (sigma ** 2 * sd2)
    err = (denoiser(x0 + sigma[:, None, None, None] * n, sigma) - x0).pow(2).flatten(1).mean(1)
    return (w * err).mean()


def write_card(path: str, card: dict):
    lines = [f"# {card['name']}", "", "EDM-preconditioned UNet denoiser trained by `dmcmc-fast train score`.", ""]
    lines += [f"- **{k}**: {v}" for k, v in card.items() if k != "name"]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main(argv=None) -> int:
    a = parse_args(argv)
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    torch.manual_seed(a.seed)
    gen = torch.Generator(device=dev).manual_seed(a.seed)
    x_all, _ = data.load(a.data)
    x_all = x_all.to(dev)
    sigma_data = a.sigma_data if a.sigma_data is not None else round(float(x_all.std()), 3)
    net = UNet(in_channels=x_all.shape[1], channels=a.channels, blocks=a.blocks, attn=not a.no_attn)
    model = EDMDenoiser(net, sigma_data, x_all.shape[1:], data_range=data.DATA_RANGE,
                        name=os.path.basename(a.out).removesuffix(".pt")).to(dev)
    mf = torch.channels_last if dev.type == "cpu" else torch.contiguous_format  # faster mkldnn convs
    model = model.to(memory_format=mf)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    step, spent = 0, 0.0
    if a.resume and os.path.exists(a.state):
        st = torch.load(a.state, map_location=dev, weights_only=False)
        model.load_state_dict(st["model"]); ema.load_state_dict(st["ema"]); opt.load_state_dict(st["opt"])
        step, spent, gen_state = st["step"], st["spent"], st["gen"]
        gen.set_state(gen_state)
    n_params = sum(p.numel() for p in net.parameters())
    print(json.dumps({"params": n_params, "sigma_data": sigma_data, "data": a.data, "n": x_all.shape[0],
                      "device": str(dev), "threads": a.threads, "resume_step": step}), flush=True)

    def save(final: bool):
        card = {"name": model.name, "data": f"{a.data} ({x_all.shape[0]} images, {tuple(x_all.shape[1:])}, "
                                            f"range {data.DATA_RANGE})",
                "network": f"UNet {net.config}, {n_params:,} parameters, EDM preconditioning, "
                           f"sigma_data {sigma_data}",
                "training": f"EDM loss, ln sigma ~ N({a.p_mean}, {a.p_std}^2), Adam lr {a.lr} "
                            f"(warm-up {a.warmup}), batch {a.batch_size}, EMA {a.ema}, seed {a.seed}",
                "steps": step, "samples seen": step * a.batch_size,
                "wall time": f"{spent / 60:.1f} min", "device": f"{dev} ({platform.processor() or platform.machine()},"
                                                                f" {a.threads} thread(s)), torch {torch.__version__}",
                "final loss": f"{avg_loss:.4f} (mean EDM-weighted loss over the last {len(recent)} steps)",
                "status": "finished" if final else "in progress (periodic save)",
                "command": "dmcmc-fast train score " + " ".join(argv if argv is not None else sys.argv[1:])}
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        save_checkpoint(a.out, ema, card)
        write_card(a.out.removesuffix(".pt") + ".md", card)
        if a.state:
            torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                        "step": step, "spent": spent, "gen": gen.get_state()}, a.state)

    recent: list[float] = []
    avg_loss = float("nan")
    t0, last_save = time.time() - spent, time.time()
    while step < a.steps and spent < a.minutes * 60:
        idx = torch.randint(0, x_all.shape[0], (a.batch_size,), generator=gen, device=dev)
        x0 = x_all[idx].contiguous(memory_format=mf)
        for g in opt.param_groups:
            g["lr"] = a.lr * min(1.0, (step + 1) / max(1, a.warmup))
        loss = edm_loss(model, x0, gen, a.p_mean, a.p_std)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        decay = min(a.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - decay)
        step += 1
        spent = time.time() - t0
        recent = (recent + [loss.item()])[-200:]
        avg_loss = sum(recent) / len(recent)
        if step % a.log_every == 0:
            print(json.dumps({"step": step, "loss": round(avg_loss, 5), "min": round(spent / 60, 2),
                              "samples_per_s": round(step * a.batch_size / max(spent, 1e-9), 1)}), flush=True)
        if time.time() - last_save > a.save_every:
            save(False)
            last_save = time.time()
    save(True)
    print(json.dumps({"done": True, "step": step, "loss": round(avg_loss, 5), "min": round(spent / 60, 2)}),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
