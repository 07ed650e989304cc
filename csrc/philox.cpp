// Per-chain Philox-4x32-10 uniforms on the CPU: the words of dmcmc_fast/rng.py (the torch reference) and of
// the Triton kernels (kernels/_philox.py), in one tight loop instead of hundreds of int64 tensor ops.
//
// Element i of chain c's draw at step k of stream s is philox(key = (seed lo, seed hi), counter =
// (i, c, k, s)) -> four uint32 words; word w -> a uniform in [0, 1) exactly as rng.uint32_to_uniform
// computes it (int32 reinterpretation, negative s mapped to -s - 1, times 4.6566127342e-10f in float32).
// Normals (`philox_normal`) are rng.box_muller of words 0 and 1, bit-identical to the reference: its log and cos
// are the very ATen kernels it calls, in place on the words' buffer, and its other steps exact float operations
// (tests/test_philox.py, tests/test_kernels_noise.py).
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <immintrin.h>

#include <algorithm>
#include <cstdint>

namespace {

constexpr uint32_t kRoundA = 0xD2511F53u, kRoundB = 0xCD9E8D57u, kKeyA = 0x9E3779B9u, kKeyB = 0xBB67AE85u;
constexpr float kUniformScale = 4.6566127342e-10f;
constexpr int64_t kGrain = 1 << 14;  // elements per parallel task

inline float to_uniform(uint32_t w) {
  const int32_t s = int32_t(w);
  return float(s < 0 ? ~s : s) * kUniformScale;  // ~s == -s - 1
}

// Words 0 .. W-1 of elements first .. first+n-1 of one row (chain, step): o[w * stride + i]. Ten rounds, the keys
// bumped after each (rng.philox_4x32).
template <int W>
inline void philox_row(float* o, int64_t stride, int64_t n, uint32_t chain, uint32_t step, uint32_t s, uint32_t k0,
                       uint32_t k1, uint32_t first = 0) {
  for (int64_t i = 0; i < n; ++i) {
    uint32_t c0 = first + uint32_t(i), c1 = chain, c2 = step, c3 = s, key0 = k0, key1 = k1;
#pragma GCC unroll 10
    for (int round = 0; round < 10; ++round) {
      const uint64_t pb = uint64_t(kRoundB) * c2, pa = uint64_t(kRoundA) * c0;
      const uint32_t n0 = uint32_t(pb >> 32) ^ c1 ^ key0, n2 = uint32_t(pa >> 32) ^ c3 ^ key1;
      c0 = n0, c1 = uint32_t(pb), c2 = n2, c3 = uint32_t(pa);
      key0 += kKeyA, key1 += kKeyB;
    }
    o[i] = to_uniform(c0);
    if (W > 1) o[stride + i] = to_uniform(c1);
    if (W > 2) o[2 * stride + i] = to_uniform(c2);
    if (W > 3) o[3 * stride + i] = to_uniform(c3);
  }
}

// High and low halves of the eight 32x32->64 products a * c (AVX2 has them as two 4-lane vpmuludq).
__attribute__((target("avx2"))) inline void mul_hilo(__m256i a, __m256i c, __m256i& hi, __m256i& lo) {
  const __m256i even = _mm256_mul_epu32(a, c), odd = _mm256_mul_epu32(a, _mm256_srli_epi64(c, 32));
  lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
}

__attribute__((target("avx2"))) inline __m256 to_uniform8(__m256i w) {
  const __m256i neg = _mm256_srai_epi32(w, 31);  // all ones where the int32 is negative
  return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_xor_si256(w, neg)), _mm256_set1_ps(kUniformScale));  // ~s
}

// philox_row for AVX2: eight elements per iteration (the same rounds on 8 lanes), the rest by philox_row.
template <int W>
__attribute__((target("avx2"))) void philox_row_avx2(float* o, int64_t stride, int64_t n, uint32_t chain, uint32_t step,
                                                     uint32_t s, uint32_t k0, uint32_t k1) {
  const __m256i ra = _mm256_set1_epi32(int(kRoundA)), rb = _mm256_set1_epi32(int(kRoundB));
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256i c0 = _mm256_add_epi32(_mm256_set1_epi32(int(uint32_t(i))), lane), c1 = _mm256_set1_epi32(int(chain));
    __m256i c2 = _mm256_set1_epi32(int(step)), c3 = _mm256_set1_epi32(int(s));
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
    _mm256_storeu_ps(o + i, to_uniform8(c0));
    if (W > 1) _mm256_storeu_ps(o + stride + i, to_uniform8(c1));
    if (W > 2) _mm256_storeu_ps(o + 2 * stride + i, to_uniform8(c2));
    if (W > 3) _mm256_storeu_ps(o + 3 * stride + i, to_uniform8(c3));
  }
  // the tail: elements i .. n-1, their counters starting at i
  for (; i < n; ++i) philox_row<W>(o + i, stride, 1, chain, step, s, k0, k1, uint32_t(i));
}

template <int W>
void philox_row_base(float* o, int64_t stride, int64_t n, uint32_t chain, uint32_t step, uint32_t s, uint32_t k0,
                     uint32_t k1) {
  philox_row<W>(o, stride, n, chain, step, s, k0, k1);
}

using RowFn = void (*)(float*, int64_t, int64_t, uint32_t, uint32_t, uint32_t, uint32_t, uint32_t);

template <int W>
RowFn row_fn() {
  static const bool avx2 = __builtin_cpu_supports("avx2");
  return avx2 ? &philox_row_avx2<W> : &philox_row_base<W>;
}

RowFn row_fn(int64_t words) {
  switch (words) {
    case 1: return row_fn<1>();
    case 2: return row_fn<2>();
    case 3: return row_fn<3>();
    default: return row_fn<4>();
  }
}

}  // namespace

namespace {

// [words, R, n] float32 with R = n_steps * B: row r = k * B + b draws chain_ids[b]'s words at step steps[b] + k.
// `steps` undefined: every row at step `step` (an int step without a tensor of it). With `run` > 0 the k-th
// step is not k but (k / run) * stride + k % run: runs of `run` consecutive steps, `stride` apart (DLG's blocks).
torch::Tensor uniform_rows(int64_t seed, const torch::Tensor& chain_ids, const torch::Tensor& steps, int64_t n_steps,
                           int64_t n, int64_t stream, int64_t words, int64_t step = 0, int64_t run = 0,
                           int64_t stride = 0) {
  TORCH_CHECK(chain_ids.device().is_cpu() && (!steps.defined() || steps.device().is_cpu()),
              "philox draws run on CPU tensors");
  TORCH_CHECK(chain_ids.scalar_type() == torch::kInt64 && (!steps.defined() || steps.scalar_type() == torch::kInt64),
              "chain_ids and steps must be int64");
  TORCH_CHECK(chain_ids.dim() == 1 && (!steps.defined() || steps.sizes() == chain_ids.sizes()),
              "chain_ids and steps must be [B]");
  TORCH_CHECK(n >= 0 && n_steps >= 0 && words >= 1 && words <= 4, "n and n_steps must be >= 0 and words in 1..4");
  const auto ids = chain_ids.contiguous();
  const auto ks = steps.defined() ? steps.contiguous() : steps;
  const int64_t B = ids.size(0), R = n_steps * B, total = R * n;
  auto out = at::empty({words, R, n}, at::kFloat);  // a plain buffer: no autograd wrapper
  const int64_t* id = ids.data_ptr<int64_t>();
  const int64_t* k = ks.defined() ? ks.data_ptr<int64_t>() : nullptr;
  float* o = out.data_ptr<float>();
  const uint32_t k0 = uint32_t(uint64_t(seed)), k1 = uint32_t(uint64_t(seed) >> 32), s = uint32_t(stream);
  const RowFn row = row_fn(words);
  at::parallel_for(0, R, std::max<int64_t>(1, kGrain / std::max<int64_t>(n, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r % B;
      const int64_t kth = r / B, offset = run > 0 ? (kth / run) * stride + kth % run : kth;
      row(o + r * n, total, n, uint32_t(id[b]), uint32_t((k ? k[b] : step) + offset), s, k0, k1);
    }
  });
  return out;
}

// rng.box_muller(u0, u1) in place on [2, R, n] words, times `scale` unless it is 1; returns row 0. Bit for bit the
// reference: clamp(u0, 1e-7), log, * -2, sqrt; u1 * 2 pi, cos; the product (and scale * it). log, cos and sqrt are
// ATen's own kernels (in place on the words' buffer: the same vectorised code on the same layout; none is
// guaranteed correctly rounded); the rest are single IEEE float operations (a clamp, multiplies by float
// constants, products), done in plain loops with the same float results: three ATen ops instead of seven.
torch::Tensor box_muller_(const torch::Tensor& u, double scale) {
  // `u` was just made here and never needs autograd's or in-place view bookkeeping: its ops go straight to
  // the CPU kernels (a third of the cost of a tiny draw, the prior of one chain)
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  auto r = u.select(0, 0), phase = u.select(0, 1);
  const int64_t total = r.numel();
  float* a = r.data_ptr<float>();
  float* p = phase.data_ptr<float>();
  const float lo = float(1.0e-7), two_pi = float(2.0 * 3.141592653589793);  // the Scalars as ATen casts them
  for (int64_t i = 0; i < total; ++i) {
    a[i] = a[i] < lo ? lo : a[i];
    p[i] = p[i] * two_pi;
  }
  r.log_();
  phase.cos_();
  for (int64_t i = 0; i < total; ++i) a[i] = a[i] * -2.0f;
  r.sqrt_();  // ATen's float sqrt is not always the correctly rounded one: its own kernel, as the reference's
  if (scale == 1.0) {
    for (int64_t i = 0; i < total; ++i) a[i] = a[i] * p[i];
  } else {  // scale * z as the reference computes it: the normal first, then one float product
    const float f = float(scale);
    for (int64_t i = 0; i < total; ++i) a[i] = f * (a[i] * p[i]);
  }
  return r;
}

}  // namespace

// [words, B, n] float32: the uniforms of words 0 .. words-1 (1 to 4), rows from chain_ids / steps ([B] int64).
torch::Tensor philox_uniform(int64_t seed, torch::Tensor chain_ids, torch::Tensor steps, int64_t n, int64_t stream,
                             int64_t words) {
  return uniform_rows(seed, chain_ids, steps, 1, n, stream, words);
}

// [n_steps * B, n] float32 standard normals, row k * B + b = chain_ids[b]'s at step steps[b] + k (several steps of
// a loop in one call: noise.chain_randn_steps), bit for bit rng.box_muller of words 0 and 1 (box_muller_).
torch::Tensor philox_normal_steps(int64_t seed, torch::Tensor chain_ids, torch::Tensor steps, int64_t n_steps,
                                  int64_t n, int64_t stream) {
  return box_muller_(uniform_rows(seed, chain_ids, steps, n_steps, n, stream, 2), 1.0);
}

// [n_runs * run * B, n]: the normals of runs of `run` consecutive steps from step0, step0 + stride, ... (every
// chain's): row (q * run + j) * B + b is chain_ids[b]'s at step step0 + q * stride + j. A call's DLG blocks at once;
// one run (n_runs 1) is a loop's steps from an int first step (noise.chain_randn_steps, no step tensor).
torch::Tensor philox_normal_runs(int64_t seed, torch::Tensor chain_ids, int64_t step0, int64_t n_runs, int64_t run,
                                 int64_t stride, int64_t n, int64_t stream) {
  TORCH_CHECK(run >= 1 && stride >= run, "run must be >= 1 and stride >= run");
  return box_muller_(uniform_rows(seed, chain_ids, torch::Tensor(), n_runs * run, n, stream, 2, step0, run, stride),
                     1.0);
}

// [B, n]: scale * the normals of every row at the one step `step` (the prior sigma_max z of a run: no step tensor,
// no separate product).
torch::Tensor philox_normal_at(int64_t seed, torch::Tensor chain_ids, int64_t step, int64_t n, int64_t stream,
                               double scale) {
  return box_muller_(uniform_rows(seed, chain_ids, torch::Tensor(), 1, n, stream, 2, step), scale);
}

// [B, n]: philox_normal_steps of one step.
torch::Tensor philox_normal(int64_t seed, torch::Tensor chain_ids, torch::Tensor steps, int64_t n, int64_t stream) {
  return philox_normal_steps(seed, chain_ids, steps, 1, n, stream);
}
