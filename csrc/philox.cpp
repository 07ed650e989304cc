// Per-chain Philox-4x32-10 uniforms on the CPU: the words of dmcmc_fast/rng.py (the torch reference) and of
// the Triton kernels (kernels/_philox.py), in one tight loop instead of hundreds of int64 tensor ops.
//
// Element i of chain c's draw at step k of stream s is philox(key = (seed lo, seed hi), counter =
// (i, c, k, s)) -> four uint32 words; word w -> a uniform in [0, 1) exactly as rng.uint32_to_uniform
// computes it (int32 reinterpretation, negative s mapped to -s - 1, times 4.6566127342e-10f in float32).
// Normals (`philox_normal`) are rng.box_muller of words 0 and 1 with the very ATen ops the reference calls,
// from C++ (no Python dispatch per op), so a CPU draw is bit-identical to the reference (tests/test_philox.py).
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

namespace {

constexpr uint32_t kRoundA = 0xD2511F53u, kRoundB = 0xCD9E8D57u, kKeyA = 0x9E3779B9u, kKeyB = 0xBB67AE85u;
constexpr float kUniformScale = 4.6566127342e-10f;
constexpr int64_t kGrain = 1 << 14;  // elements per parallel task

inline void philox(uint32_t c[4], uint32_t k0, uint32_t k1) {
  for (int round = 0; round < 10; ++round) {
    const uint64_t pb = uint64_t(kRoundB) * c[2], pa = uint64_t(kRoundA) * c[0];
    const uint32_t c0 = uint32_t(pb >> 32) ^ c[1] ^ k0, c2 = uint32_t(pa >> 32) ^ c[3] ^ k1;
    c[0] = c0, c[1] = uint32_t(pb), c[2] = c2, c[3] = uint32_t(pa);
    k0 += kKeyA, k1 += kKeyB;
  }
}

inline float to_uniform(uint32_t w) {
  const int32_t s = int32_t(w);
  return float(s < 0 ? ~s : s) * kUniformScale;  // ~s == -s - 1
}

}  // namespace

// [words, B, n] float32: the uniforms of words 0 .. words-1 (1 to 4), rows from chain_ids / steps ([B] int64).
torch::Tensor philox_uniform(int64_t seed, torch::Tensor chain_ids, torch::Tensor steps, int64_t n, int64_t stream,
                             int64_t words) {
  TORCH_CHECK(chain_ids.device().is_cpu() && steps.device().is_cpu(), "philox draws run on CPU tensors");
  TORCH_CHECK(chain_ids.scalar_type() == torch::kInt64 && steps.scalar_type() == torch::kInt64,
              "chain_ids and steps must be int64");
  TORCH_CHECK(chain_ids.dim() == 1 && steps.sizes() == chain_ids.sizes(), "chain_ids and steps must be [B]");
  TORCH_CHECK(n >= 0 && words >= 1 && words <= 4, "n must be >= 0 and words in 1..4");
  const auto ids = chain_ids.contiguous(), ks = steps.contiguous();
  const int64_t B = ids.size(0), total = B * n;
  auto out = torch::empty({words, B, n}, torch::kFloat32);
  const int64_t* id = ids.data_ptr<int64_t>();
  const int64_t* k = ks.data_ptr<int64_t>();
  float* o = out.data_ptr<float>();
  const uint32_t k0 = uint32_t(uint64_t(seed)), k1 = uint32_t(uint64_t(seed) >> 32), s = uint32_t(stream);
  at::parallel_for(0, B, std::max<int64_t>(1, kGrain / std::max<int64_t>(n, 1)), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const uint32_t chain = uint32_t(id[b]), step = uint32_t(k[b]);
      for (int64_t i = 0; i < n; ++i) {
        uint32_t c[4] = {uint32_t(i), chain, step, s};
        philox(c, k0, k1);
        for (int64_t w = 0; w < words; ++w) o[w * total + b * n + i] = to_uniform(c[w]);
      }
    }
  });
  return out;
}

// [B, n] float32 standard normals: rng.box_muller(u0, u1) of words 0 and 1, op for op as the torch reference
// writes it (clamp, log, * -2, sqrt; * 2 pi, cos; product): the same kernels, the same bits.
torch::Tensor philox_normal(int64_t seed, torch::Tensor chain_ids, torch::Tensor steps, int64_t n, int64_t stream) {
  const auto u = philox_uniform(seed, chain_ids, steps, n, stream, 2);
  const auto r = at::sqrt(at::mul(at::log(at::clamp(u[0], 1.0e-7, c10::nullopt)), -2.0));
  return at::mul(r, at::cos(at::mul(u[1], 2.0 * 3.141592653589793)));
}

