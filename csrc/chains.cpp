// dmcmc_fast._C — the books of many parallel MCMC chains (CPU int64 tensors, updated in place).
//
// Each chain takes MCMC steps in blocks of n_skip; the end of a block starts a denoising job (n_den
// network evaluations) in one of J job slots; network batches of a fixed size are packed with the
// next evaluation of the running job groups (oldest first, each whole) and the next step of the
// ready chains (fewest steps first, then lowest id). Only integers live here, so scheduling never
// reads device data.
// The Python layer (dmcmc_fast/engine/bookkeeping.py) checks arguments and documents every function;
// it holds a pure-torch twin of each one, compared against these in tests/test_bookkeeping.py.
#include <torch/extension.h>

#include <algorithm>
#include <vector>

namespace {

using I64 = int64_t;

I64* ptr(torch::Tensor& t) { return t.data_ptr<I64>(); }
const I64* cptr(const torch::Tensor& t) { return t.data_ptr<I64>(); }

// Waiting chains (in id order) take the free job slots (in slot order). Jobs taken in one call form
// groups of consecutive jobs of the same block, at most max_group each; a group shares one sequence
// number and is always packed whole. Returns [k, 2] (slot, chain).
torch::Tensor assign_jobs(torch::Tensor chain_step, torch::Tensor chain_wait, torch::Tensor job_chain,
                          torch::Tensor job_block, torch::Tensor job_done, torch::Tensor job_seq,
                          torch::Tensor next_seq, I64 n_skip, I64 max_group) {
  const I64 C = chain_step.size(0), J = job_chain.size(0);
  I64 *wait = ptr(chain_wait), *jc = ptr(job_chain), *jb = ptr(job_block), *jd = ptr(job_done),
      *js = ptr(job_seq), *seq = ptr(next_seq);
  const I64* step = cptr(chain_step);
  std::vector<I64> out;
  I64 slot = 0, size = 0, last_block = -1;
  for (I64 c = 0; c < C; ++c) {
    if (!wait[c]) continue;
    while (slot < J && jc[slot] >= 0) ++slot;
    if (slot == J) break;
    const I64 block = step[c] / n_skip - 1;
    if (size > 0 && (block != last_block || size == max_group)) ++(*seq), size = 0;
    jc[slot] = c;
    jb[slot] = block;
    jd[slot] = 0;
    js[slot] = *seq;
    wait[c] = 0;
    ++size;
    last_block = block;
    out.push_back(slot);
    out.push_back(c);
  }
  if (size > 0) ++(*seq);
  return torch::tensor(out, torch::kInt64).reshape({-1, 2});
}

// One network batch: kind[b] (0 pad, 1 chain step, 2 job evaluation) and src[b] (chain or slot).
// Job groups first, oldest first, each whole or not at all (packing stops at the first that does not
// fit); then chains, fewest steps first, then lowest id.
std::vector<torch::Tensor> pack_batch(torch::Tensor chain_step, torch::Tensor chain_wait, torch::Tensor job_chain,
                                      torch::Tensor job_done, torch::Tensor job_seq, I64 total_steps, I64 n_den,
                                      I64 batch_size) {
  const I64 C = chain_step.size(0), J = job_chain.size(0);
  const I64 *step = cptr(chain_step), *wait = cptr(chain_wait), *jc = cptr(job_chain), *jd = cptr(job_done),
            *js = cptr(job_seq);
  std::vector<I64> jobs, chains;
  for (I64 j = 0; j < J; ++j)
    if (jc[j] >= 0 && jd[j] < n_den) jobs.push_back(j);
  std::stable_sort(jobs.begin(), jobs.end(), [&](I64 a, I64 b) { return js[a] < js[b]; });
  for (I64 c = 0; c < C; ++c)
    if (!wait[c] && step[c] < total_steps) chains.push_back(c);
  std::stable_sort(chains.begin(), chains.end(), [&](I64 a, I64 b) { return step[a] < step[b]; });
  auto kind = torch::zeros({batch_size}, torch::kInt64);
  auto src = torch::full({batch_size}, -1, torch::kInt64);
  I64 *k = ptr(kind), *s = ptr(src), b = 0;
  for (size_t i = 0; i < jobs.size();) {
    size_t e = i;
    while (e < jobs.size() && js[jobs[e]] == js[jobs[i]]) ++e;
    if (b + static_cast<I64>(e - i) > batch_size) break;
    for (; i < e; ++i, ++b) k[b] = 2, s[b] = jobs[i];
  }
  for (size_t i = 0; i < chains.size() && b < batch_size; ++i, ++b) k[b] = 1, s[b] = chains[i];
  return {kind, src};
}

// After a batch ran: advance chain steps and job progress, charge NFE, free finished jobs.
// A chain whose step count reaches a multiple of n_skip waits for a job slot. Returns [k, 3]
// (slot, chain, block) of the jobs that finished, in batch order.
torch::Tensor commit_batch(torch::Tensor kind, torch::Tensor src, torch::Tensor chain_step, torch::Tensor chain_wait,
                           torch::Tensor job_chain, torch::Tensor job_block, torch::Tensor job_done,
                           torch::Tensor nfe, I64 n_skip, I64 n_den) {
  const I64 B = kind.size(0);
  const I64 *k = cptr(kind), *s = cptr(src), *jb = cptr(job_block);
  I64 *step = ptr(chain_step), *wait = ptr(chain_wait), *jc = ptr(job_chain), *jd = ptr(job_done), *n = ptr(nfe);
  std::vector<I64> out;
  for (I64 b = 0; b < B; ++b) {
    if (k[b] == 1) {
      const I64 c = s[b];
      n[c] += 1;
      if (++step[c] % n_skip == 0) wait[c] = 1;
    } else if (k[b] == 2) {
      const I64 j = s[b], c = jc[j];
      n[c] += 1;
      if (++jd[j] == n_den) {
        out.push_back(j);
        out.push_back(c);
        out.push_back(jb[j]);
        jc[j] = -1;
      }
    }
  }
  return torch::tensor(out, torch::kInt64).reshape({-1, 3});
}

// Mark `sample_ids` ready and return the new end of the ready prefix (streaming in id order).
I64 ready_prefix(torch::Tensor ready, torch::Tensor sample_ids, I64 start) {
  I64* r = ptr(ready);
  const I64 *id = cptr(sample_ids), N = sample_ids.size(0), S = ready.size(0);
  for (I64 i = 0; i < N; ++i) r[id[i]] = 1;
  while (start < S && r[start]) ++start;
  return start;
}

// Route `n` finished samples (in stream order) to requests, first come first served: each goes to
// the oldest request with samples still owed (`owed` is decremented in place). Returns [n] request
// indices, -1 for a sample no request is waiting for.
torch::Tensor route_samples(torch::Tensor owed, I64 n) {
  I64* o = ptr(owed);
  const I64 R = owed.size(0);
  auto out = torch::full({n}, -1, torch::kInt64);
  I64* r = out.data_ptr<I64>();
  I64 q = 0;
  for (I64 i = 0; i < n; ++i) {
    while (q < R && o[q] == 0) ++q;
    if (q == R) break;
    r[i] = q;
    --o[q];
  }
  return out;
}

}  // namespace

// csrc/philox.cpp: per-chain Philox draws on the CPU (see dmcmc_fast/kernels/noise.py)
int64_t philox_stream();
torch::Tensor philox_uniform(int64_t seed, torch::Tensor chain_ids, torch::Tensor steps, int64_t n, int64_t stream);
torch::Tensor philox_normal(int64_t seed, torch::Tensor chain_ids, torch::Tensor steps, int64_t n, int64_t stream);
torch::Tensor philox_normal_steps(int64_t seed, torch::Tensor chain_ids, torch::Tensor steps, int64_t n_steps,
                                  int64_t n, int64_t stream);
torch::Tensor philox_normal_at(int64_t seed, torch::Tensor chain_ids, int64_t step, int64_t n, int64_t stream,
                               double scale);
torch::Tensor philox_normal_runs(int64_t seed, torch::Tensor chain_ids, int64_t step0, int64_t n_runs, int64_t run,
                                 int64_t stride, int64_t n, int64_t stream);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "dmcmc_fast._C: chain bookkeeping (see dmcmc_fast/engine/bookkeeping.py) and CPU Philox draws";
  m.def("assign_jobs", &assign_jobs);
  m.def("pack_batch", &pack_batch);
  m.def("commit_batch", &commit_batch);
  m.def("ready_prefix", &ready_prefix);
  m.def("route_samples", &route_samples);
  m.def("philox_stream", &philox_stream);
  m.def("philox_uniform", &philox_uniform);
  m.def("philox_normal", &philox_normal);
  m.def("philox_normal_steps", &philox_normal_steps);
  m.def("philox_normal_at", &philox_normal_at);
  m.def("philox_normal_runs", &philox_normal_runs);
}
