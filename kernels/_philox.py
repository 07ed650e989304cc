"""Per-chain Philox-4x32-10 inside Triton kernels, word for word the generator of `dmcmc_fast.rng`.

counter = (quad q, chain id, step, stream), key = (seed lo, seed hi): one call gives the four words of elements
4q .. 4q+3. `chain_randn` turns them into four standard normals (two Box-Muller pairs: r_a cos t_a,
r_a sin t_a, r_b cos t_b, r_b sin t_b) with rng's float32 polynomials for -2 ln u and cos/sin (no library
calls), and `chain_rand` into four uniforms in [0, 1) with the same int32 -> float mapping as the torch side.
Both take a block of BLOCK consecutive elements from `start` (a multiple of 4; BLOCK a power of two >= 4),
make BLOCK / 4 calls, and interleave their outputs into element order (tl.join + tl.reshape).
"""
import triton
import triton.language as tl

from dmcmc_fast import rng

# Globals a kernel reads must be constexpr *instances*: the compiler refuses `NAME: tl.constexpr = v`
# (the interpreter accepts it). Write them right of a tensor (`u * SCALE`): under the interpreter
# `constexpr * tensor` wraps the product in a constexpr, which tl.cos & co. then refuse.
# The constants are declared once, in dmcmc_fast.rng (the torch reference).
PHILOX_ROUND_A = tl.constexpr(rng.PHILOX_ROUND_A)
PHILOX_ROUND_B = tl.constexpr(rng.PHILOX_ROUND_B)
PHILOX_KEY_A = tl.constexpr(rng.PHILOX_KEY_A)
PHILOX_KEY_B = tl.constexpr(rng.PHILOX_KEY_B)
UNIFORM_SCALE = tl.constexpr(rng.UNIFORM_SCALE)
WORD_SCALE = tl.constexpr(rng.WORD_SCALE)
WORD_HALF = tl.constexpr(rng.WORD_HALF)
SQRT_HALF_BITS = tl.constexpr(rng.SQRT_HALF_BITS)
MANTISSA_MASK = tl.constexpr(rng.MANTISSA_MASK)
LN2 = tl.constexpr(rng.LN2)
P0, P1, P2, P3, P4, P5, P6 = (tl.constexpr(c) for c in rng.LOG1P_P)
S0, S1, S2 = (tl.constexpr(c) for c in rng.SIN_S)
C0, C1, C2 = (tl.constexpr(c) for c in rng.COS_C)
ANGLE_SCALE = tl.constexpr(rng.ANGLE_SCALE)


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
def chain_words(seed_lo, seed_hi, quad, chain, step, stream):
    """Philox words for counters (quad [BLOCK / 4], chain, step, stream); chain/step/stream scalars of any int type."""
    c0 = quad.to(tl.uint32)
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
def _block_words(seed_lo, seed_hi, start, chain, step, stream, BLOCK: tl.constexpr):
    """The four words of the calls that cover elements start .. start + BLOCK - 1."""
    quad = start // 4 + tl.arange(0, BLOCK // 4)
    return chain_words(seed_lo, seed_hi, quad, chain, step, stream)


@triton.jit
def _interleave4(a, b, c, d):
    """[N] x 4 -> [4N] in element order a0 b0 c0 d0 a1 ..."""
    return tl.reshape(tl.join(tl.join(a, c), tl.join(b, d)), (4 * a.shape[0],))


@triton.jit
def uint32_to_uniform(w):
    """uint32 word -> float32 in [0, 1) (as rng.uint32_to_uniform / Triton's uint_to_uniform_float)."""
    s = w.to(tl.int32, bitcast=True)
    s = tl.where(s < 0, -s - 1, s)
    return s.to(tl.float32) * UNIFORM_SCALE


@triton.jit
def radius(w):
    """sqrt(-2 ln u), u = rng.open_uniform(w), ln by rng.neg2_log's polynomial."""
    u = w.to(tl.float32) * WORD_SCALE + WORD_HALF
    bits = u.to(tl.int32, bitcast=True) - SQRT_HALF_BITS
    e = (bits >> 23).to(tl.float32)
    f = ((bits & MANTISSA_MASK) + SQRT_HALF_BITS).to(tl.float32, bitcast=True) - 1.0
    p = ((((((f * P6 + P5) * f + P4) * f + P3) * f + P2) * f + P1) * f + P0)
    log1p = f + (f * f) * (p * f - 0.5)
    return tl.sqrt((e * LN2 + log1p) * -2.0)


@triton.jit
def cos_sin(w):
    """(cos t, sin t), t = 2 pi w / 2^32 (rng.cos_sin)."""
    k = (w + 0x20000000) >> 30
    a = (w << 2).to(tl.int32, bitcast=True).to(tl.float32) * ANGLE_SCALE
    x = a * a
    sin_a = a + (a * x) * ((x * S2 + S1) * x + S0)
    cos_a = (((x * C2 + C1) * x + C0) * x - 0.5) * x + 1.0
    odd = (k & 1) != 0
    c = tl.where(odd, sin_a, cos_a)
    s = tl.where(odd, cos_a, sin_a)
    return tl.where(((k + 1) & 2) != 0, -c, c), tl.where((k & 2) != 0, -s, s)


@triton.jit
def chain_randn(seed_lo, seed_hi, start, chain, step, stream, BLOCK: tl.constexpr):
    """Standard normals of elements start .. start + BLOCK - 1 = rng.chain_randn at these counters."""
    w0, w1, w2, w3 = _block_words(seed_lo, seed_hi, start, chain, step, stream, BLOCK)
    r_a, r_b = radius(w0), radius(w2)
    cos_a, sin_a = cos_sin(w1)
    cos_b, sin_b = cos_sin(w3)
    return _interleave4(r_a * cos_a, r_a * sin_a, r_b * cos_b, r_b * sin_b)


@triton.jit
def chain_rand(seed_lo, seed_hi, start, chain, step, stream, BLOCK: tl.constexpr):
    """Uniforms of elements start .. start + BLOCK - 1 = rng.chain_rand at these counters."""
    w0, w1, w2, w3 = _block_words(seed_lo, seed_hi, start, chain, step, stream, BLOCK)
    return _interleave4(uint32_to_uniform(w0), uint32_to_uniform(w1), uint32_to_uniform(w2), uint32_to_uniform(w3))
