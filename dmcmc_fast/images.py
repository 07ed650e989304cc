"""Image grids: a batch `[N, C, H, W]` in the data range -> one PNG, upscaled so small digits are visible."""
from __future__ import annotations

import math

import numpy as np
from PIL import Image

from dmcmc_fast.data import to_uint8


def make_grid(x, data_range=(-1.0, 1.0), pad: int = 1, ncol: int | None = None) -> np.ndarray:
    n, c, h, w = x.shape
    ncol = ncol or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    imgs = to_uint8(x, data_range)  # [N, C, H, W]
    grid = np.zeros((c, nrow * (h + pad) + pad, ncol * (w + pad) + pad), dtype=np.uint8)
    for i in range(n):
        r, q = divmod(i, ncol)
        grid[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = imgs[i]
    return grid[0] if c == 1 else grid.transpose(1, 2, 0)


def save_grid(x, path: str, data_range=(-1.0, 1.0), min_size: int = 512):
    g = make_grid(x, data_range)
    img = Image.fromarray(g)
    scale = max(1, min_size // max(img.size))
    if scale > 1:
        img = img.resize((img.size[0] * scale, img.size[1] * scale), Image.NEAREST)
    img.save(path)
    return path
