"""Per-chain counter-based random numbers (Philox-4x32-10) in plain torch.

Noise for chain `c` at step `step` depends only on `(seed, c, step)` (DESIGN.md, "one stream per chain"):
elements `4q .. 4q+3` of the `stream`-th draw of that step come from one Philox call,

    philox(key=(seed_lo, seed_hi), counter=(q, c, step, stream))  ->  4 uint32 words (w0, w1, w2, w3)

all four words used: two Box-Muller pairs give the normals (r_a cos t_a, r_a sin t_a, r_b cos t_b,
r_b sin t_b), radius r from w0 (w2) and angle t from w1 (w3), `box_muller4`; the uniforms are the four
words mapped to [0, 1) (`chain_rand`). A row of n elements takes ceil(n / 4) calls.

The Box-Muller functions are float32 arithmetic only (no library log/cos/sin; `neg2_log`, `cos_sin`), so the
Triton kernels, this reference and the C++ CPU draw (`csrc/philox.cpp`) compute the same operations: the C++
draw is bit-identical to this reference, a kernel agrees with it to a few float32 ulps (the compiler fuses
multiply-adds). Maximum error against float64 evaluation of the same words: bench/philox_accuracy.py and
bench/RESULTS.md.

The stream changed once (issue 34, from one normal per Philox call of words 0 and 1 with library log/cos, and one
uniform per call of word 0): every sample drawn before that changed; a seed still names a chain's stream, and the
(chain, step, stream) addressing is the same.

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

# Box-Muller on float32 without library functions (fits made for this project: weighted least squares on
# Chebyshev nodes, coefficients rounded to float32; bench/philox_accuracy.py measures the result).
# -2 ln u: u = 2^e m with m in [sqrt(1/2), sqrt(2)), ln m = f - f^2/2 + f^3 P(f), f = m - 1 (P of degree 6:
# relative error 3.5e-8 in exact arithmetic).
SQRT_HALF_BITS = 0x3F3504F3  # float32 bits of sqrt(1/2)
MANTISSA_MASK = 0x007FFFFF
LN2 = 0.693147182464599609375  # float32(ln 2)
LOG1P_P = (0.33333972096443176, -0.250009685754776, 0.19960597157478333, -0.165879487991333,
           0.14950978755950928, -0.14197471737861633, 0.08506953716278076)
# cos t and sin t, t = 2 pi w / 2^32: t = k pi/2 + a with a in [-pi/4, pi/4) read off the word's bits,
# sin a = a + a^3 S(a^2), cos a = 1 - a^2/2 + a^4 C(a^2) (S, C of degree 2: absolute error 4.5e-9, 3.1e-10).
SIN_S = (-0.16666650772094727, 0.008331958204507828, -0.0001949349680216983)
COS_C = (0.04166664555668831, -0.0013887342065572739, 2.4435852537862957e-05)
ANGLE_SCALE = 3.65729529994141e-10  # float32((pi/2) / 2^32): int32(w << 2) -> a
WORD_SCALE = 2.0**-32  # uint32 -> (0, 1]: (w + 1/2) 2^-32 in float32 (never 0: no clamp before the log)
WORD_HALF = 2.0**-33

# The draw this module makes (2: four words per Philox call, issue 34); csrc/philox.cpp reports the one it makes.
STREAM_VERSION = 2

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


def open_uniform(w: torch.Tensor) -> torch.Tensor:
    """uint32 word (int64 tensor) -> float32 u in (0, 1]: float32(w) 2^-32 + 2^-33 (w = 0 gives 2^-33)."""
    return w.to(torch.float32) * WORD_SCALE + WORD_HALF


def neg2_log(u: torch.Tensor) -> torch.Tensor:
    """-2 ln u for float32 u in (0, 1], from u's bits: u = 2^e m, m in [sqrt(1/2), sqrt(2)), f = m - 1,
    ln u = e ln 2 + f + f^2 (-1/2 + f P(f)) (Horner; each operation one float32 rounding)."""
    bits = u.view(torch.int32) - SQRT_HALF_BITS
    e = (bits >> 23).to(torch.float32)  # arithmetic shift: floor(log2(u / sqrt(1/2)))
    f = ((bits & MANTISSA_MASK) + SQRT_HALF_BITS).view(torch.float32) - 1.0
    p = LOG1P_P[-1] * f + LOG1P_P[-2]
    for c in LOG1P_P[-3::-1]:
        p = p * f + c
    log1p = f + (f * f) * (p * f - 0.5)
    return -2.0 * (e * LN2 + log1p)


def cos_sin(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos t, sin t) in float32 for t = 2 pi w / 2^32, w a uint32 word (int64 tensor): quadrant k = the
    nearest multiple of pi/2 (the top bits of w + 2^29), a = t - k pi/2 = int32(w << 2) (pi/2) 2^-32."""
    k = ((w + 2**29) >> 30) & 3
    s = (w << 2) & MASK32
    a = torch.where(s >= 2**31, s - 2**32, s).to(torch.float32) * ANGLE_SCALE
    x = a * a
    sin_a = a + (a * x) * ((SIN_S[2] * x + SIN_S[1]) * x + SIN_S[0])
    cos_a = ((COS_C[2] * x + COS_C[1]) * x + COS_C[0]) * x - 0.5
    cos_a = cos_a * x + 1.0
    odd = (k & 1) == 1  # k pi/2 + a: cos, sin = (cos a, sin a), (-sin a, cos a), (-cos a, -sin a), (sin a, -cos a)
    c, s = torch.where(odd, sin_a, cos_a), torch.where(odd, cos_a, sin_a)
    return torch.where(((k + 1) & 2) != 0, -c, c), torch.where((k & 2) != 0, -s, s)


def box_muller4(w0, w1, w2, w3) -> torch.Tensor:
    """One Philox call's four words -> its four standard normals [..., 4]: two Box-Muller pairs,
    (r_a cos t_a, r_a sin t_a, r_b cos t_b, r_b sin t_b), r = sqrt(-2 ln u(w0 | w2)), t = 2 pi w1 | w3 / 2^32."""
    out = []
    for w_r, w_t in ((w0, w1), (w2, w3)):
        r = torch.sqrt(neg2_log(open_uniform(w_r)))
        c, s = cos_sin(w_t)
        out += [r * c, r * s]
    return torch.stack(out, dim=-1)


def _int64(v, device) -> torch.Tensor:
    """An int (filled on the device: no host-to-device copy, so capturable), a list or a tensor -> int64."""
    if isinstance(v, int):
        return torch.full((1,), v, dtype=torch.int64, device=device)
    return torch.as_tensor(v, dtype=torch.int64, device=device)


def _quad_words(seed: int, chain_ids, step, n: int, stream: int, device):
    """The four Philox words of quads 0 .. ceil(n/4)-1 of every row: 4 int64 tensors [B, ceil(n/4)]."""
    chain_ids = _int64(chain_ids, device).reshape(-1, 1)
    step = _int64(step, device).reshape(-1, 1)
    quad = torch.arange(-(-n // 4), dtype=torch.int64, device=device).reshape(1, -1)
    k0, k1 = _seed_words(seed)
    return philox4x32(quad, chain_ids, step, torch.full_like(quad, stream), k0, k1)


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
    z = box_muller4(*_quad_words(seed, chain_ids, step, n, stream, device))  # [B, ceil(n/4), 4]
    return z.reshape(z.shape[0], -1)[:, :n].reshape(-1, *shape).to(dtype)


def chain_rand(seed: int, chain_ids, step, shape, stream: int = 0, device=None) -> torch.Tensor:
    """Uniforms in [0, 1) of shape `[B, *shape]` from the same per-chain streams: element 4q + j is word j of
    quad q's call."""
    device = device if device is not None else (chain_ids.device if torch.is_tensor(chain_ids) else "cpu")
    n = math.prod(shape)
    u = uint32_to_uniform(torch.stack(_quad_words(seed, chain_ids, step, n, stream, device), dim=-1))
    return u.reshape(u.shape[0], -1)[:, :n].reshape(-1, *shape)


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
