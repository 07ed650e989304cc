"""Launch helpers shared by the Triton launchers: rows view, block size and grid, seed words.

Every elementwise kernel runs on a grid (B, cdiv(N, BLOCK)) over the [B, N] row view of the state:
program (b, k) loads sample b's parameters once and handles elements [k*BLOCK, (k+1)*BLOCK) of row b;
the element index within the row is the Philox counter c0, so a chain's noise is independent of its
slot and of B.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from dmcmc_fast import rng


def _fix_old_interpreter_index():
    """Under TRITON_INTERPRET=1 with Triton < 3.7, a loop over a runtime bound (gibbs' `range(0, m, BLOCK)`)
    fails with NumPy >= 2.4: that interpreter holds an int argument as a 1-element array and reads it as an
    index with `int(array)`, which NumPy now refuses ("only 0-dimensional arrays can be converted"). Triton
    3.7 reads it with `.squeeze()`; give the older interpreter the same (torch 2.11 brings Triton 3.6). The
    compiled kernels are not concerned."""
    if os.environ.get("TRITON_INTERPRET", "0") != "1":
        return
    if tuple(int(p) for p in triton.__version__.split(".")[:2]) >= (3, 7):
        return
    from triton.runtime import interpreter

    patch_tensor = interpreter._patch_lang_tensor

    def patch_tensor_with_squeezed_index(tensor, scope):  # the scope restores both settings, in reverse
        patch_tensor(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

    interpreter._patch_lang_tensor = patch_tensor_with_squeezed_index


_fix_old_interpreter_index()

MAX_BLOCK = 1024  # elements per program (tests lower it to get several blocks per row)


def as_rows(t: torch.Tensor) -> torch.Tensor:
    """[B, ...] -> contiguous [B, N] (a view when t is contiguous)."""
    return t.reshape(t.shape[0], -1).contiguous()


def block_for(n: int) -> int:
    return max(16, min(MAX_BLOCK, triton.next_power_of_2(max(n, 1))))


def grid_for(b: int, n: int):
    block = block_for(n)
    return (b, triton.cdiv(n, block)), block


@triton.jit
def row_tile(n, BLOCK: tl.constexpr):
    """Device side of that grid: (row b, element indices of this block, in-row mask, flat offsets)."""
    row = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    return row, cols, cols < n, row.to(tl.int64) * n + cols


def seed_words(seed: int) -> tuple[int, int]:
    return rng._seed_words(seed)
