// Per-chain Philox-4x32-10 draws on the CPU: the numbers of dmcmc_fast/rng.py (the torch reference) and of the
// Triton kernels (kernels/_philox.py), in one tight loop instead of hundreds of int64 tensor ops.
//
// Elements 4q .. 4q+3 of chain c's draw at step k of stream s come from one call, philox(key = (seed lo, seed hi),
// counter = (q, c, k, s)) -> four uint32 words (rng._quad_words). Uniforms (`philox_uniform`): word j -> element
// 4q + j, mapped as rng.uint32_to_uniform (int32 reinterpretation, negative s mapped to -s - 1, times
// 4.6566127342e-10f). Normals (`philox_normal*`): rng.box_muller4, two Box-Muller pairs per call, with rng's float32
// polynomials for -2 ln u and cos/sin. Every float step below is the reference's operation in the reference's order,
// one IEEE float32 rounding each (built with -ffp-contract=off: no fused multiply-adds), and the sqrt is ATen's own
// kernel, as the reference's: bit-identical to the reference (tests/test_kernels_noise.py, tests/test_philox.py).
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <cmath>
#include <cstdint>

namespace {

constexpr int64_t kStreamVersion = 2;  // rng.STREAM_VERSION: the draw this file makes (2: four words per call)
constexpr uint32_t kRoundA = 0xD2511F53u, kRoundB = 0xCD9E8D57u, kKeyA = 0x9E3779B9u, kKeyB = 0xBB67AE85u;
constexpr float kUniformScale = 4.6566127342e-10f;
// rng's Box-Muller constants (float32 values, as the reference's Python floats round to float32)
constexpr float kWordScale = 0x1p-32f, kWordHalf = 0x1p-33f, kLn2 = float(0.6931471824645996);
constexpr int32_t kSqrtHalfBits = 0x3F3504F3, kMantissaMask = 0x007FFFFF;
constexpr float kP[7] = {float(0.33333972096443176), float(-0.250009685754776),  float(0.19960597157478333),
                         float(-0.165879487991333),  float(0.14950978755950928), float(-0.14197471737861633),
                         float(0.08506953716278076)};
constexpr float kS[3] = {float(-0.16666650772094727), float(0.008331958204507828), float(-0.0001949349680216983)};
constexpr float kC[3] = {float(0.04166664555668831), float(-0.0013887342065572739), float(2.4435852537862957e-05)};
constexpr float kAngleScale = float(3.65729529994141e-10);
constexpr int64_t kChunk = 256;    // quads whose words are made at once (4 KiB on the stack)
constexpr int64_t kGrain = 1 << 14;  // elements per parallel task

template <typename To, typename From>
inline To bits_as(From v) {  // std::bit_cast, which C++17 (torch < 2.12's -std) lacks
  To out;
  std::memcpy(&out, &v, sizeof(To));
  return out;
}

inline float to_uniform(uint32_t w) {
  const int32_t s = int32_t(w);
  return float(s < 0 ? ~s : s) * kUniformScale;  // ~s == -s - 1
}

// rng.neg2_log(rng.open_uniform(w)): -2 ln u, u = float(w) 2^-32 + 2^-33
inline float neg2_log(uint32_t w) {
  const float u = float(w) * kWordScale + kWordHalf;
  const int32_t bits = bits_as<int32_t>(u) - kSqrtHalfBits;
  const float e = float(bits >> 23);
  const float f = bits_as<float>((bits & kMantissaMask) + kSqrtHalfBits) - 1.0f;
  float p = kP[6] * f + kP[5];
  for (int i = 4; i >= 0; --i) p = p * f + kP[i];
  const float log1p = f + (f * f) * (p * f - 0.5f);
  return -2.0f * (e * kLn2 + log1p);
}

// rng.cos_sin(w): (cos t, sin t), t = 2 pi w / 2^32 = k pi/2 + a
inline void cos_sin(uint32_t w, float& cos_t, float& sin_t) {
  const uint32_t k = ((w + 0x20000000u) >> 30) & 3u;
  const float a = float(int32_t(w << 2)) * kAngleScale;
  const float x = a * a;
  const float sin_a = a + (a * x) * ((kS[2] * x + kS[1]) * x + kS[0]);
  const float cos_a = (((kC[2] * x + kC[1]) * x + kC[0]) * x - 0.5f) * x + 1.0f;
  const float c = (k & 1u) ? sin_a : cos_a, s = (k & 1u) ? cos_a : sin_a;
  cos_t = ((k + 1u) & 2u) ? -c : c;
  sin_t = (k & 2u) ? -s : s;
}

// The words of quads first .. first+nq-1 of one row (chain, step, stream): w[j * kChunk + i]. Ten rounds, the keys
// bumped after each (rng.philox4x32).
inline void philox_quads(uint32_t* w, int64_t nq, uint32_t first, uint32_t chain, uint32_t step, uint32_t s,
                         uint32_t k0, uint32_t k1) {
  for (int64_t i = 0; i < nq; ++i) {
    uint32_t c0 = first + uint32_t(i), c1 = chain, c2 = step, c3 = s, key0 = k0, key1 = k1;
#pragma GCC unroll 10
    for (int round = 0; round < 10; ++round) {
      const uint64_t pb = uint64_t(kRoundB) * c2, pa = uint64_t(kRoundA) * c0;
      const uint32_t n0 = uint32_t(pb >> 32) ^ c1 ^ key0, n2 = uint32_t(pa >> 32) ^ c3 ^ key1;
      c0 = n0, c1 = uint32_t(pb), c2 = n2, c3 = uint32_t(pa);
      key0 += kKeyA, key1 += kKeyB;
    }
    w[i] = c0, w[kChunk + i] = c1, w[2 * kChunk + i] = c2, w[3 * kChunk + i] = c3;
  }
}

// High and low halves of the eight 32x32->64 products a * c (AVX2 has them as two 4-lane vpmuludq).
__attribute__((target("avx2"))) inline void mul_hilo(__m256i a, __m256i c, __m256i& hi, __m256i& lo) {
  const __m256i even = _mm256_mul_epu32(a, c), odd = _mm256_mul_epu32(a, _mm256_srli_epi64(c, 32));
  lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
}

// philox_quads for AVX2: eight quads per iteration (the same rounds on 8 lanes), the rest by philox_quads.
__attribute__((target("avx2"))) void philox_quads_avx2(uint32_t* w, int64_t nq, uint32_t first, uint32_t chain,
                                                       uint32_t step, uint32_t s, uint32_t k0, uint32_t k1) {
  const __m256i ra = _mm256_set1_epi32(int(kRoundA)), rb = _mm256_set1_epi32(int(kRoundB));
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  int64_t i = 0;
  for (; i + 8 <= nq; i += 8) {
    __m256i c0 = _mm256_add_epi32(_mm256_set1_epi32(int(first + uint32_t(i))), lane);
    __m256i c1 = _mm256_set1_epi32(int(chain)), c2 = _mm256_set1_epi32(int(step)), c3 = _mm256_set1_epi32(int(s));
    uint32_t key0 = k0, key1 = k1;
    for (int round = 0; round < 10; ++round) {
      __m256i hb, lb, ha, la;
      mul_hilo(rb, c2, hb, lb);
      mul_hilo(ra, c0, ha, la);
      c0 = _mm256_xor_si256(_mm256_xor_si256(hb, c1), _mm256_set1_epi32(int(key0)));
      c2 = _mm256_xor_si256(_mm256_xor_si256(ha, c3), _mm256_set1_epi32(int(key1)));
      c1 = lb, c3 = la;
      key0 += kKeyA, key1 += kKeyB;
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(w + i), c0);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(w + kChunk + i), c1);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(w + 2 * kChunk + i), c2);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(w + 3 * kChunk + i), c3);
  }
  if (i < nq) philox_quads(w + i, nq - i, first + uint32_t(i), chain, step, s, k0, k1);  // the tail
}

using QuadsFn = void (*)(uint32_t*, int64_t, uint32_t, uint32_t, uint32_t, uint32_t, uint32_t, uint32_t);

QuadsFn quads_fn() {
  static const bool avx2 = __builtin_cpu_supports("avx2");
  return avx2 ? &philox_quads_avx2 : &philox_quads;
}

// One row's calls (chain, step, stream): nq quads. Uniforms (NORMAL false): o[4q + j] = word j of quad q, up to n.
// Normals (NORMAL true): the halves of rng.box_muller4 before its sqrt, t[2q] = -2 ln u_a, t[2q + 1] = -2 ln u_b,
// and cs[4q ..] = (cos t_a, sin t_a, cos t_b, sin t_b).
template <bool NORMAL>
void draw_row(float* o, float* t, float* cs, int64_t n, uint32_t chain, uint32_t step, uint32_t s, uint32_t k0,
              uint32_t k1, QuadsFn quads) {
  alignas(32) uint32_t w[4 * kChunk];
  const int64_t nq = (n + 3) / 4;
  for (int64_t q0 = 0; q0 < nq; q0 += kChunk) {
    const int64_t m = std::min(kChunk, nq - q0);
    quads(w, m, uint32_t(q0), chain, step, s, k0, k1);
    for (int64_t i = 0; i < m; ++i) {
      const int64_t q = q0 + i;
      if (NORMAL) {
        t[2 * q] = neg2_log(w[i]), t[2 * q + 1] = neg2_log(w[2 * kChunk + i]);
        cos_sin(w[kChunk + i], cs[4 * q], cs[4 * q + 1]);
        cos_sin(w[3 * kChunk + i], cs[4 * q + 2], cs[4 * q + 3]);
      } else {
        for (int j = 0; j < 4 && 4 * q + j < n; ++j) o[4 * q + j] = to_uniform(w[j * kChunk + i]);
      }
    }
  }
}

// [R, n] float32 with R = n_steps * B: row r = k * B + b draws chain_ids[b]'s at step steps[b] + k.
// `steps` undefined: every row at step `step` (an int step without a tensor of it). With `run` > 0 the k-th
// step is not k but (k / run) * stride + k % run: runs of `run` consecutive steps, `stride` apart (DLG's blocks).
// Normals: three passes, the words and everything but the sqrt, then ATen's own float sqrt in place (the reference's
// torch.sqrt: not the correctly rounded one on every CPU, but elementwise the same whatever the layout), then the
// products r cos t, r sin t (times `scale` unless it is 1).
template <bool NORMAL>
torch::Tensor draw_rows(int64_t seed, const torch::Tensor& chain_ids, const torch::Tensor& steps, int64_t n_steps,
                        int64_t n, int64_t stream, int64_t step = 0, int64_t run = 0, int64_t stride = 0,
                        double scale = 1.0) {
  TORCH_CHECK(chain_ids.device().is_cpu() && (!steps.defined() || steps.device().is_cpu()),
              "philox draws run on CPU tensors");
  TORCH_CHECK(chain_ids.scalar_type() == torch::kInt64 && (!steps.defined() || steps.scalar_type() == torch::kInt64),
              "chain_ids and steps must be int64");
  TORCH_CHECK(chain_ids.dim() == 1 && (!steps.defined() || steps.sizes() == chain_ids.sizes()),
              "chain_ids and steps must be [B]");
  TORCH_CHECK(n >= 0 && n_steps >= 0, "n and n_steps must be >= 0");
  // the new buffers never need autograd's or in-place view bookkeeping: their ops go straight to the CPU kernels
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const auto ids = chain_ids.contiguous();
  const auto ks = steps.defined() ? steps.contiguous() : steps;
  const int64_t B = ids.size(0), R = n_steps * B, nq = (n + 3) / 4;
  auto out = at::empty({R, n}, at::kFloat);
  auto t = NORMAL ? at::empty({R, 2 * nq}, at::kFloat) : at::Tensor();
  auto cs = NORMAL ? at::empty({R, 4 * nq}, at::kFloat) : at::Tensor();
  const int64_t* id = ids.data_ptr<int64_t>();
  const int64_t* k = ks.defined() ? ks.data_ptr<int64_t>() : nullptr;
  float* o = out.data_ptr<float>();
  float* tp = NORMAL ? t.data_ptr<float>() : nullptr;
  float* cp = NORMAL ? cs.data_ptr<float>() : nullptr;
  const uint32_t k0 = uint32_t(uint64_t(seed)), k1 = uint32_t(uint64_t(seed) >> 32), s = uint32_t(stream);
  const QuadsFn quads = quads_fn();
  const int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(n, 1));
  at::parallel_for(0, R, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r % B;
      const int64_t kth = r / B, offset = run > 0 ? (kth / run) * stride + kth % run : kth;
      draw_row<NORMAL>(o + r * n, NORMAL ? tp + r * 2 * nq : nullptr, NORMAL ? cp + r * 4 * nq : nullptr, n,
                       uint32_t(id[b]), uint32_t((k ? k[b] : step) + offset), s, k0, k1, quads);
    }
  });
  if (!NORMAL) return out;
  t.sqrt_();
  const float f = float(scale);
  at::parallel_for(0, R, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* radius = tp + r * 2 * nq;
      const float* c = cp + r * 4 * nq;
      float* z = o + r * n;
      if (f == 1.0f) {
        for (int64_t i = 0; i < n; ++i) z[i] = radius[i / 2] * c[i];
      } else {  // scale * z as the reference computes it: the normal first, then one float product
        for (int64_t i = 0; i < n; ++i) z[i] = f * (radius[i / 2] * c[i]);
      }
    }
  });
  return out;
}

}  // namespace

// The stream these functions draw (rng.STREAM_VERSION); a build that predates this function draws another one.
int64_t philox_stream() { return kStreamVersion; }

// [B, n] float32: the uniforms of rows chain_ids / steps ([B] int64), element 4q + j = word j of quad q's call.
torch::Tensor philox_uniform(int64_t seed, torch::Tensor chain_ids, torch::Tensor steps, int64_t n, int64_t stream) {
  return draw_rows<false>(seed, chain_ids, steps, 1, n, stream);
}

// [n_steps * B, n] float32 standard normals, row k * B + b = chain_ids[b]'s at step steps[b] + k (several steps of
// a loop in one call: noise.chain_randn_steps), bit for bit rng.chain_randn.
torch::Tensor philox_normal_steps(int64_t seed, torch::Tensor chain_ids, torch::Tensor steps, int64_t n_steps,
                                  int64_t n, int64_t stream) {
  return draw_rows<true>(seed, chain_ids, steps, n_steps, n, stream);
}

// [n_runs * run * B, n]: the normals of runs of `run` consecutive steps from step0, step0 + stride, ... (every
// chain's): row (q * run + j) * B + b is chain_ids[b]'s at step step0 + q * stride + j. A call's DLG blocks at once;
// one run (n_runs 1) is a loop's steps from an int first step (noise.chain_randn_steps, no step tensor).
torch::Tensor philox_normal_runs(int64_t seed, torch::Tensor chain_ids, int64_t step0, int64_t n_runs, int64_t run,
                                 int64_t stride, int64_t n, int64_t stream) {
  TORCH_CHECK(run >= 1 && stride >= run, "run must be >= 1 and stride >= run");
  return draw_rows<true>(seed, chain_ids, torch::Tensor(), n_runs * run, n, stream, step0, run, stride);
}

// [B, n]: scale * the normals of every row at the one step `step` (the prior sigma_max z of a run: no step tensor,
// no separate product).
torch::Tensor philox_normal_at(int64_t seed, torch::Tensor chain_ids, int64_t step, int64_t n, int64_t stream,
                               double scale) {
  return draw_rows<true>(seed, chain_ids, torch::Tensor(), 1, n, stream, step, 0, 0, scale);
}

// [B, n]: philox_normal_steps of one step.
torch::Tensor philox_normal(int64_t seed, torch::Tensor chain_ids, torch::Tensor steps, int64_t n, int64_t stream) {
  return philox_normal_steps(seed, chain_ids, steps, 1, n, stream);
}
