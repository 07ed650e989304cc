"""Per-chain counter-based random numbers (Philox-4x32-10) in plain torch.

Noise for chain `c` at step `step` depends only on `(seed, c, step)` (DESIGN.md, "one stream per chain"):
element `i` of the `stream`-th draw of that step is

    philox(key=(seed_lo, seed_hi), counter=(i, c, step, stream))  ->  4 uint32 words

and the first two words are turned into one standard normal by Box-Muller (or word 0 into a uniform
in [0, 1)).

Names of the counter, everywhere: `step` is the counter of one draw (here, in the kernels and the one-step
helpers); `step0` is the counter of the first step of a sampler or integrator call, whose i-th step draws
at `step0 + i` (`DLGState.step`: the counter a resumed chain continues from).
The Triton kernels (`dmcmc_fast.kernels._philox`) implement the same function, so a kernel and its
torch reference agree element by element.

All arithmetic is on int64 tensors holding uint32 values; `_mulhilo` splits one factor into 16-bit
halves so no product leaves the int64 range (no reliance on overflow wrapping).
"""
from __future__ import annotations

import math

import torch

MASK32 = 0xFFFFFFFF
PHILOX_ROUND_A = 0xD2511F53
PHILOX_ROUND_B = 0xCD9E8D57
PHILOX_KEY_A = 0x9E3779B9
PHILOX_KEY_B = 0xBB67AE85
N_ROUNDS = 10
# int32 -> (0, 1): the largest scale with MAX_INT * scale < 1 in float32 (as Triton's uint_to_uniform_float)
UNIFORM_SCALE = 4.6566127342e-10

# Named streams: independent draws within one (chain, step). Samplers use these, never ad-hoc ints.
STREAM_LANGEVIN = 0
STREAM_CHURN = 1
STREAM_MOMENTUM = 2
STREAM_GIBBS = 3
STREAM_INIT = 4
STREAM_SDE = 5


def _mulhilo(a: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hi, lo) 32-bit words of the 64-bit product of constant `a` and uint32 tensor `b`."""
    a_hi, a_lo = a >> 16, a & 0xFFFF
    t_lo = a_lo * b  # < 2**48
    t_hi = a_hi * b  # < 2**48
    hi = (t_hi + (t_lo >> 16)) >> 16
    lo = ((t_hi << 16) + t_lo) & MASK32
    return hi & MASK32, lo


def philox4x32(c0, c1, c2, c3, k0: int, k1: int, n_rounds: int = N_ROUNDS):
    """Philox-4x32 with `n_rounds` rounds on int64 tensors holding uint32 counters (broadcasting)."""
    c0, c1, c2, c3 = torch.broadcast_tensors(c0, c1, c2, c3)
    c0, c1, c2, c3 = (c & MASK32 for c in (c0, c1, c2, c3))
    k0, k1 = k0 & MASK32, k1 & MASK32
    for _ in range(n_rounds):
        hi_b, lo_b = _mulhilo(PHILOX_ROUND_B, c2)
        hi_a, lo_a = _mulhilo(PHILOX_ROUND_A, c0)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0 = (k0 + PHILOX_KEY_A) & MASK32
        k1 = (k1 + PHILOX_KEY_B) & MASK32
    return c0, c1, c2, c3


def uint32_to_uniform(u: torch.Tensor) -> torch.Tensor:
    """uint32 word (int64 tensor) -> float32 in [0, 1) (words 0 and 2**32-1 give 0), as Triton's
    `uint_to_uniform_float`."""
    s = torch.where(u >= 2**31, u - 2**32, u)  # reinterpret as int32
    s = torch.where(s < 0, -s - 1, s)
    return s.to(torch.float32) * UNIFORM_SCALE


def box_muller(u1: torch.Tensor, u2: torch.Tensor) -> torch.Tensor:
    """Two uniforms -> one standard normal (the cosine branch)."""
    u1 = torch.clamp(u1, min=1.0e-7)
    r = torch.sqrt(-2.0 * torch.log(u1))
    return r * torch.cos((2.0 * math.pi) * u2)


def _int64(v, device) -> torch.Tensor:
    """An int (filled on the device: no host-to-device copy, so capturable), a list or a tensor -> int64."""
    if isinstance(v, int):
        return torch.full((1,), v, dtype=torch.int64, device=device)
    return torch.as_tensor(v, dtype=torch.int64, device=device)


def _counters(chain_ids: torch.Tensor, step, n: int, device):
    chain_ids = _int64(chain_ids, device).reshape(-1, 1)
    step = _int64(step, device).reshape(-1, 1)
    elem = torch.arange(n, dtype=torch.int64, device=device).reshape(1, -1)
    return elem, chain_ids, step


def _seed_words(seed: int) -> tuple[int, int]:
    if not (0 <= int(seed) < 2**63):
        raise ValueError(f"seed must be an integer in [0, 2**63), got {seed}")
    seed = int(seed)
    return seed & MASK32, (seed >> 32) & MASK32


def chain_randn(seed: int, chain_ids, step, shape, stream: int = 0, device=None,
                dtype=torch.float32) -> torch.Tensor:
    """Standard normals of shape `[B, *shape]`, row `b` from chain `chain_ids[b]`'s stream at `step`.

    `step` is an int or a `[B]` tensor (chains may be at different steps). The result does not
    depend on B or on the row a chain sits in.
    """
    device = device if device is not None else (chain_ids.device if torch.is_tensor(chain_ids) else "cpu")
    n = math.prod(shape)
    elem, c, s = _counters(chain_ids, step, n, device)
    k0, k1 = _seed_words(seed)
    w0, w1, _, _ = philox4x32(elem, c, s, torch.full_like(elem, stream), k0, k1)
    z = box_muller(uint32_to_uniform(w0), uint32_to_uniform(w1))
    return z.reshape(-1, *shape).to(dtype)


def chain_rand(seed: int, chain_ids, step, shape, stream: int = 0, device=None) -> torch.Tensor:
    """Uniforms in [0, 1) of shape `[B, *shape]` from the same per-chain streams (word 0)."""
    device = device if device is not None else (chain_ids.device if torch.is_tensor(chain_ids) else "cpu")
    n = math.prod(shape)
    elem, c, s = _counters(chain_ids, step, n, device)
    k0, k1 = _seed_words(seed)
    w0, _, _, _ = philox4x32(elem, c, s, torch.full_like(elem, stream), k0, k1)
    return uint32_to_uniform(w0).reshape(-1, *shape)


def default_chain_ids(batch: int, device=None) -> torch.Tensor:
    return torch.arange(batch, dtype=torch.int64, device=device)


def resolve_chain_ids(chains: int | None, chain_ids, device) -> torch.Tensor:
    """`chain_ids` as an int64 tensor on `device`, or `0..chains-1` when only `chains` is given."""
    if chain_ids is None:
        if chains is None:
            raise ValueError("pass chains (how many chains) or chain_ids")
        if not isinstance(chains, int) or chains < 1:
            raise ValueError(f"chains must be an integer >= 1, got {chains!r}")
        return default_chain_ids(chains, device)
    return torch.as_tensor(chain_ids, dtype=torch.int64, device=device)
