"""A small UNet and the EDM preconditioning that makes it a VE denoiser `D(x, sigma)`.

EDM (Karras et al. 2022, Table 1, "Ours" column) writes the denoiser as

    D(x, sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma))
    c_skip  = sigma_data^2 / (sigma^2 + sigma_data^2)
    c_out   = sigma sigma_data / sqrt(sigma^2 + sigma_data^2)
    c_in    = 1 / sqrt(sigma^2 + sigma_data^2)
    c_noise = ln(sigma) / 4

so the network `F` sees unit-variance input and predicts a unit-variance target at every sigma. The
training loss (eq. 2 with the weight lambda = 1 / c_out^2) lives in `dmcmc_fast/training/score.py`.

`UNet(channels=(32, 64, 64), blocks=1, attn=True)`: one level per entry of `channels` (28 -> 14 -> 7
for MNIST), `blocks` residual blocks per level, a self-attention block at the lowest resolution, and
the noise level entering every residual block through a sinusoidal embedding and an MLP.
Checkpoints (`save_checkpoint` / `load_checkpoint`) hold the config, the (EMA) weights and a card.
"""
from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from torch import nn

from dmcmc_fast.files import load_weights, read_checkpoint
from dmcmc_fast.models import kwargs as kw
from dmcmc_fast.models.base import bcast, network_dtype


def edm_preconditioning(sigma: torch.Tensor, sigma_data: float):
    """(c_skip, c_out, c_in, c_noise) of EDM Table 1 for a `[B]` sigma."""
    s2, d2 = sigma * sigma, sigma_data * sigma_data
    c_skip = d2 / (s2 + d2)
    c_out = sigma * sigma_data / (s2 + d2).sqrt()
    c_in = 1.0 / (s2 + d2).sqrt()
    c_noise = sigma.log() / 4.0
    return c_skip, c_out, c_in, c_noise


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, c), c)


class NoiseEmbedding(nn.Module):
    """Sinusoidal features of c_noise (as in DDPM/EDM positional embeddings), then a 2-layer MLP."""

    def __init__(self, dim: int, freqs: int = 32, max_period: float = 1000.0):
        super().__init__()
        self.register_buffer("freqs", torch.exp(-math.log(max_period) * torch.arange(freqs) / freqs),
                             persistent=False)
        self.mlp = nn.Sequential(nn.Linear(2 * freqs, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        # the phases in float32 whatever the weights' dtype (bf16 would round 250 c_noise f to ~1 rad)
        a = (c_noise.float()[:, None] * 250.0) * self.freqs.float()[None]  # c_noise = ln(sigma)/4, ~[-1.6, 1.1]
        return self.mlp(torch.cat([a.cos(), a.sin()], dim=1).to(self.mlp[0].weight.dtype))


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb: int):
        super().__init__()
        self.n1, self.c1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb, 2 * cout)  # scale and shift
        self.n2, self.c2 = _norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, e):
        h = self.c1(F.silu(self.n1(x)))
        scale, shift = self.emb(e)[:, :, None, None].chunk(2, dim=1)
        h = self.n2(h) * (1 + scale) + shift
        return self.skip(x) + self.c2(F.silu(h))


class Attention(nn.Module):
    def __init__(self, c: int, heads: int = 4):
        super().__init__()
        self.norm, self.qkv, self.proj, self.heads = _norm(c), nn.Conv2d(c, 3 * c, 1), nn.Conv2d(c, c, 1), heads

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        a = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.proj(a.transpose(-1, -2).reshape(b, c, h, w))


class UNet(nn.Module):
    """`F(x, c_noise)`: `[B, C, H, W]`, `[B]` -> `[B, C, H, W]`; H, W divisible by 2^(levels-1)."""

    def __init__(self, in_channels: int = 1, channels=(32, 64, 64), blocks: int = 1, emb: int = 128,
                 attn: bool = True):
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if not channels or min(channels) < 8 or any(c % 8 for c in channels):
            raise ValueError(f"channels must be multiples of 8 (>= 8), got {channels}")
        if blocks < 1:
            raise ValueError(f"blocks must be >= 1, got {blocks}")
        self.config = {"in_channels": in_channels, "channels": list(channels), "blocks": blocks, "emb": emb,
                       "attn": attn}
        self.embed = NoiseEmbedding(emb)
        self.conv_in = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.down = nn.ModuleList()
        c = channels[0]
        for ch in channels:
            self.down.append(nn.ModuleList([ResBlock(c if j == 0 else ch, ch, emb) for j in range(blocks)]))
            c = ch
        self.mid = nn.ModuleList([ResBlock(c, c, emb), ResBlock(c, c, emb)])
        self.mid_attn = Attention(c) if attn else nn.Identity()
        self.up = nn.ModuleList()
        for ch in reversed(channels):
            self.up.append(nn.ModuleList([ResBlock(c + ch if j == 0 else ch, ch, emb) for j in range(blocks)]))
            c = ch
        self.norm_out, self.conv_out = _norm(c), nn.Conv2d(c, in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x, c_noise):
        e = self.embed(c_noise)
        h, skips = self.conv_in(x), []
        for i, level in enumerate(self.down):
            if i > 0:
                h = F.avg_pool2d(h, 2)
            for blk in level:
                h = blk(h, e)
            skips.append(h)
        h = self.mid[1](self.mid_attn(self.mid[0](h, e)), e)
        for i, level in enumerate(self.up):
            if i > 0:
                h = F.interpolate(h, scale_factor=2, mode="nearest")
            h = torch.cat([h, skips.pop()], dim=1)
            for blk in level:
                h = blk(h, e)
        return self.conv_out(F.silu(self.norm_out(h)))


class EDMDenoiser(nn.Module):
    """A network `F` with EDM preconditioning as a `Denoiser`: `D(x, sigma, **model_kwargs)`, sigma `[B]`.

    The preconditioning runs in float32 and `F` in its weights' dtype (`.to(torch.bfloat16)` gives a bf16
    network that samples from a float32 state); `model_kwargs` (e.g. EDM-style `class_labels`) go to `F`."""

    handles_dtype = True

    def __init__(self, net: nn.Module, sigma_data: float, shape, sigma_min: float = 0.002,
                 sigma_max: float = 80.0, data_range=(-1.0, 1.0), name: str = "edm"):
        super().__init__()
        if not sigma_data > 0:
            raise ValueError(f"sigma_data must be > 0, got {sigma_data}")
        self.net, self.sigma_data, self.shape = net, float(sigma_data), tuple(shape)
        self.sigma_min, self.sigma_max, self.data_range, self.name = sigma_min, sigma_max, tuple(data_range), name

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, **model_kwargs) -> torch.Tensor:
        dtype = x.dtype
        x, sigma = x.float(), sigma.float()
        c_skip, c_out, c_in, c_noise = edm_preconditioning(sigma, self.sigma_data)
        net_dtype = network_dtype(self.net) or torch.float32
        f = self.net((bcast(c_in, x) * x).to(net_dtype), c_noise, **kw.cast(model_kwargs, net_dtype)).float()
        return (bcast(c_skip, x) * x + bcast(c_out, x) * f).to(dtype)


def save_checkpoint(path: str, denoiser: EDMDenoiser, card: dict):
    """Config, weights (fp32) and the card in one small file."""
    cfg = {"net": denoiser.net.config, "sigma_data": denoiser.sigma_data, "shape": list(denoiser.shape),
           "sigma_min": denoiser.sigma_min, "sigma_max": denoiser.sigma_max,
           "data_range": list(denoiser.data_range)}
    state = {k: v.detach().float().cpu().clone() for k, v in denoiser.net.state_dict().items()}
    tmp = path + ".tmp"
    torch.save({"config": cfg, "state_dict": state, "card": card}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str, name: str = "edm", device="cpu") -> EDMDenoiser:
    """An `EDMDenoiser` in eval mode with frozen weights; `.card` holds how it was made."""
    ck = read_checkpoint(path, "network", needs=("config", "state_dict"))
    cfg = ck["config"]
    try:
        net = UNet(**cfg["net"])
    except Exception as err:  # a config of another kind of network
        raise ValueError(f"network {path}: its config does not describe a UNet ({type(err).__name__}: {err})"[:300]) \
            from None
    load_weights(net, ck["state_dict"], path, "network")
    d = EDMDenoiser(net, cfg["sigma_data"], cfg["shape"], cfg["sigma_min"], cfg["sigma_max"],
                    cfg["data_range"], name=name)
    d.card = ck.get("card", {})
    return d.to(device).eval().requires_grad_(False)
