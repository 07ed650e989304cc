"""Per-chain Philox-4x32-10 inside Triton kernels, word for word the generator of `dmcmc_fast.rng`.

counter = (element index within the chain's row, chain id, step, stream), key = (seed lo, seed hi);
`chain_randn` turns words 0 and 1 into one standard normal (Box-Muller, cosine branch) and
`chain_rand` word 0 into a uniform in [0, 1), with the same int32 -> float mapping as the torch side.
"""
import math

import triton
import triton.language as tl

from dmcmc_fast import rng

# Globals a kernel reads must be constexpr *instances*: the compiler refuses `NAME: tl.constexpr = v`
# (the interpreter accepts it). Write them right of a tensor (`u * TWO_PI`): under the interpreter
# `constexpr * tensor` wraps the product in a constexpr, which tl.cos & co. then refuse.
# The constants are declared once, in dmcmc_fast.rng (the torch reference).
PHILOX_ROUND_A = tl.constexpr(rng.PHILOX_ROUND_A)
PHILOX_ROUND_B = tl.constexpr(rng.PHILOX_ROUND_B)
PHILOX_KEY_A = tl.constexpr(rng.PHILOX_KEY_A)
PHILOX_KEY_B = tl.constexpr(rng.PHILOX_KEY_B)
UNIFORM_SCALE = tl.constexpr(rng.UNIFORM_SCALE)
TWO_PI = tl.constexpr(2.0 * math.pi)


@triton.jit
def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Ten Philox rounds on uint32 counters (blocks) and uint32 key words (scalars)."""
    for _ in tl.static_range(10):
        hi_b = tl.umulhi(c2, PHILOX_ROUND_B)
        hi_a = tl.umulhi(c0, PHILOX_ROUND_A)
        lo_b = c2 * PHILOX_ROUND_B
        lo_a = c0 * PHILOX_ROUND_A
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0 = k0 + PHILOX_KEY_A
        k1 = k1 + PHILOX_KEY_B
    return c0, c1, c2, c3


@triton.jit
def chain_words(seed_lo, seed_hi, elem, chain, step, stream):
    """Philox words for counters (elem [BLOCK], chain, step, stream); chain/step/stream scalars of any int type."""
    c0 = elem.to(tl.uint32)
    zero = tl.zeros_like(c0)
    c1 = zero + chain.to(tl.uint32)
    c2 = zero + step.to(tl.uint32)
    # tl.cast makes a tensor of an int that Triton specialised to a constexpr (== 1), so the key schedule
    # wraps in uint32; it exists in every Triton we run (tl.to_tensor does not in 3.6, the GPU image's).
    c3 = zero + tl.cast(stream, tl.uint32)
    k0 = tl.cast(seed_lo, tl.uint32)
    k1 = tl.cast(seed_hi, tl.uint32)
    return philox4x32_10(c0, c1, c2, c3, k0, k1)


@triton.jit
def uint32_to_uniform(w):
    """uint32 word -> float32 in [0, 1) (as rng.uint32_to_uniform / Triton's uint_to_uniform_float)."""
    s = w.to(tl.int32, bitcast=True)
    s = tl.where(s < 0, -s - 1, s)
    return s.to(tl.float32) * UNIFORM_SCALE


@triton.jit
def chain_randn(seed_lo, seed_hi, elem, chain, step, stream):
    """Standard normals = rng.chain_randn at these counters."""
    w0, w1, _, _ = chain_words(seed_lo, seed_hi, elem, chain, step, stream)
    u1 = tl.maximum(uint32_to_uniform(w0), 1.0e-7)
    u2 = uint32_to_uniform(w1)
    return tl.sqrt(-2.0 * tl.log(u1)) * tl.cos(u2 * TWO_PI)


@triton.jit
def chain_rand(seed_lo, seed_hi, elem, chain, step, stream):
    """Uniforms = rng.chain_rand at these counters."""
    w0, _, _, _ = chain_words(seed_lo, seed_hi, elem, chain, step, stream)
    return uint32_to_uniform(w0)
