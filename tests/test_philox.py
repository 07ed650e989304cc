"""Per-chain Philox noise: the torch generator (dmcmc_fast.rng) against the Random123 known answers,
the Triton generator (kernels/_philox.py, run under TRITON_INTERPRET=1 here) against the torch one
word for word, and the statistics of the noise (moments, normality, independence across chains,
steps, streams and elements; slot/batch independence; Gumbel-max frequencies = softmax).
"""
import math

import numpy as np
import pytest
import scipy.stats
import torch
import triton
import triton.language as tl

from dmcmc_fast import rng
from dmcmc_fast.kernels import _launch, gibbs
from dmcmc_fast.kernels._philox import chain_rand, chain_randn, philox4x32_10

# Random123 kat_vectors, philox4x32_10: (counter, key, expected words)
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]
SEED = 0x7BADF00DDEADBEEF  # both key words non-trivial, the low one >= 2**31


@triton.jit
def _words_kernel(c_ptr, out_ptr, k0, k1, n, BLOCK: tl.constexpr):
    """Philox words of n counters given as a [4, n] int64 array -> [4, n] int64."""
    i = tl.arange(0, BLOCK)
    m = i < n
    c0 = tl.load(c_ptr + i, mask=m).to(tl.uint32)
    c1 = tl.load(c_ptr + n + i, mask=m).to(tl.uint32)
    c2 = tl.load(c_ptr + 2 * n + i, mask=m).to(tl.uint32)
    c3 = tl.load(c_ptr + 3 * n + i, mask=m).to(tl.uint32)
    w0, w1, w2, w3 = philox4x32_10(c0, c1, c2, c3, tl.cast(k0, tl.uint32), tl.cast(k1, tl.uint32))
    tl.store(out_ptr + i, w0.to(tl.int64), mask=m)
    tl.store(out_ptr + n + i, w1.to(tl.int64), mask=m)
    tl.store(out_ptr + 2 * n + i, w2.to(tl.int64), mask=m)
    tl.store(out_ptr + 3 * n + i, w3.to(tl.int64), mask=m)


@triton.jit
def _noise_kernel(out_ptr, chain_ptr, step_ptr, n, seed_lo, seed_hi, stream, UNIFORM: tl.constexpr,
                  BLOCK: tl.constexpr):
    row = tl.program_id(0)
    start = tl.program_id(1) * BLOCK
    cols = start + tl.arange(0, BLOCK)
    chain, step = tl.load(chain_ptr + row), tl.load(step_ptr + row)
    if UNIFORM:
        r = chain_rand(seed_lo, seed_hi, start, chain, step, stream, BLOCK)
    else:
        r = chain_randn(seed_lo, seed_hi, start, chain, step, stream, BLOCK)
    tl.store(out_ptr + row * n + cols, r, mask=cols < n)


def _triton_noise(seed, chain_ids, step, n, stream, uniform, device):
    chain_ids = torch.as_tensor(chain_ids, dtype=torch.int64, device=device)
    step = torch.as_tensor(step, dtype=torch.int64, device=device).expand(len(chain_ids)).contiguous()
    out = torch.full((len(chain_ids), n), float("nan"), device=device)
    (grid, block), (lo, hi) = _launch.grid_for(len(chain_ids), n), _launch.seed_words(seed)
    _noise_kernel[grid](out, chain_ids, step, n, lo, hi, stream, UNIFORM=uniform, BLOCK=block)
    return out


@pytest.mark.parametrize("counter,key,expected", KAT)
def test_torch_philox_known_answers(counter, key, expected):
    words = rng.philox4x32(*(torch.tensor([c], dtype=torch.int64) for c in counter), *key)
    assert [int(w) for w in words] == list(expected)


@pytest.mark.parametrize("counter,key,expected", KAT)
def test_triton_philox_known_answers(counter, key, expected, device):
    out = torch.empty(4, 1, dtype=torch.int64, device=device)
    _words_kernel[(1,)](torch.tensor(counter, dtype=torch.int64, device=device).reshape(4, 1), out, key[0], key[1],
                        1, BLOCK=16)
    assert out[:, 0].tolist() == list(expected)


@pytest.mark.parametrize("key", [(0, 0), (1, 0), (0xDEADBEEF, 0x7BADF00D), (0xFFFFFFFF, 0xFFFFFFFF)])
def test_triton_philox_words_match_torch(key, device):
    g = torch.Generator().manual_seed(key[0] ^ key[1])
    counters = torch.randint(0, 2**32, (4, 37), generator=g, dtype=torch.int64)
    out = torch.full((4, 37), -1, dtype=torch.int64, device=device)
    _words_kernel[(1,)](counters.to(device), out, key[0], key[1], 37, BLOCK=64)
    expected = torch.stack(rng.philox4x32(*counters, *key))
    assert torch.equal(out.cpu(), expected)


@pytest.mark.parametrize("uniform", [False, True])
@pytest.mark.parametrize("seed,stream", [(0, rng.STREAM_LANGEVIN), (1, rng.STREAM_GIBBS), (SEED, rng.STREAM_MOMENTUM + 8)])
def test_triton_noise_matches_torch(seed, stream, uniform, device, monkeypatch):
    """Element by element for odd row lengths, several blocks per row, chain ids/steps past 2**31."""
    monkeypatch.setattr(_launch, "MAX_BLOCK", 64)
    chain_ids = [0, 2**31 + 5, 17, 2**32 - 1, 3]
    step = torch.tensor([0, 1, 2**31 + 1, 7, 2**33 + 4])  # reduced mod 2**32 by both generators
    n = 131
    out = _triton_noise(seed, chain_ids, step, n, stream, uniform, device)
    draw = rng.chain_rand if uniform else rng.chain_randn
    expected = draw(seed, torch.tensor(chain_ids), step, (n,), stream=stream)
    torch.testing.assert_close(out.cpu(), expected, atol=2e-6, rtol=1e-6)


def test_noise_independent_of_slot_and_batch():
    ids = torch.tensor([9, 4, 123456, 0])
    batch = rng.chain_randn(SEED, ids, 11, (3, 5))
    for row, c in enumerate(ids.tolist()):
        alone = rng.chain_randn(SEED, torch.tensor([c]), 11, (3, 5))
        assert torch.equal(batch[row], alone[0])
    perm = torch.tensor([2, 0, 3, 1])
    assert torch.equal(rng.chain_randn(SEED, ids[perm], 11, (3, 5)), batch[perm])


def test_uniform_range_and_int_mapping():
    """word -> uniform: the int32 reading of the word, folded to [0, 2**31), times 2**-31 (rounded)."""
    words = torch.tensor([0, 1, 2**31 - 1, 2**31, 2**32 - 1], dtype=torch.int64)
    u = rng.uint32_to_uniform(words)
    assert u.tolist() == pytest.approx([0.0, 4.6566e-10, 1.0, 1.0, 0.0], abs=1e-6)
    assert float(u.max()) < 1.0
    big = rng.chain_rand(3, torch.arange(64), 0, (1024,))
    assert float(big.min()) >= 0.0 and float(big.max()) < 1.0


# ---------------- statistics (torch generator; the Triton one equals it element by element) ----------------
def _normal_draws(chains=64, steps=2, n=1024, stream=rng.STREAM_LANGEVIN):
    ids = torch.arange(chains)
    return torch.stack([rng.chain_randn(SEED, ids, k, (n,), stream=stream, dtype=torch.float64)
                        for k in range(steps)])  # [steps, chains, n]


def _check_uncorrelated(a, b):
    """Rows of a and b ([R, n]) pairwise: r ~ N(0, 1/n) under independence."""
    a = (a - a.mean(1, keepdim=True)) / a.std(1, keepdim=True)
    b = (b - b.mean(1, keepdim=True)) / b.std(1, keepdim=True)
    r = (a * b).mean(1)
    n = a.shape[1]
    assert float(r.abs().max()) < 5.0 / math.sqrt(n)
    assert 0.7 < float((r * r).mean()) * n < 1.3  # mean of chi2_1 over R rows


def test_normal_moments_and_shape():
    z = _normal_draws().flatten()
    n = z.numel()
    assert abs(float(z.mean())) < 5 / math.sqrt(n)
    assert abs(float(z.var()) - 1.0) < 5 * math.sqrt(2 / n)
    assert abs(float(scipy.stats.skew(z.numpy()))) < 5 * math.sqrt(6 / n)
    assert abs(float(scipy.stats.kurtosis(z.numpy()))) < 5 * math.sqrt(24 / n)
    assert scipy.stats.kstest(z.numpy(), "norm").pvalue > 1e-3


def test_independence_across_chains_steps_streams_elements():
    z = _normal_draws()
    _check_uncorrelated(z[0, :-1], z[0, 1:])  # neighbouring chain ids, same step
    _check_uncorrelated(z[0], z[1])  # same chain, consecutive steps
    _check_uncorrelated(z[0, 1:], z[1, :-1])  # (chain c+1, step k) vs (chain c, step k+1)
    _check_uncorrelated(z[0], _normal_draws(steps=1, stream=rng.STREAM_MOMENTUM)[0])  # streams
    _check_uncorrelated(z[0, :, :-1], z[0, :, 1:])  # neighbouring elements of one draw
    flat = z.reshape(-1, z.shape[-1])  # all 128 rows at once: the sample correlation matrix ~ identity
    c = np.corrcoef(flat.numpy())
    off = c[~np.eye(len(c), dtype=bool)]
    assert abs(off.mean()) < 5 / math.sqrt(len(off) * flat.shape[1])


def test_four_normals_per_call_each_normal_and_uncorrelated():
    """Elements 4q .. 4q+3 come from one Philox call (r_a cos t_a, r_a sin t_a, r_b cos t_b, r_b sin t_b): each
    position is N(0, 1) on its own (KS), and the four of a call are uncorrelated (Box-Muller's pairs are
    independent normals; the two pairs use disjoint words)."""
    quads = _normal_draws().reshape(-1, 4).numpy()  # 32768 calls
    for j in range(4):
        assert scipy.stats.kstest(quads[:, j], "norm").pvalue > 1e-3, j
    corr = np.corrcoef(quads.T)[~np.eye(4, dtype=bool)]
    assert np.abs(corr).max() < 5 / math.sqrt(len(quads))
    r2 = quads[:, 0] ** 2 + quads[:, 1] ** 2  # a pair's squared radius -2 ln u: Exp(1/2), i.e. chi2 with 2 dof
    assert scipy.stats.kstest(r2, "chi2", args=(2,)).pvalue > 1e-3


def test_box_muller_arithmetic_error_against_float64():
    """rng.box_muller4 (float32 polynomials, no library log/cos/sin) against float64 evaluation of the same
    Box-Muller formula from the same words: random words and the edges (0, 2^32 - 1, quadrant boundaries).
    bench/philox_accuracy.py measures it on 2^22 calls (6.6e-7 absolute, 2.0e-7 of the radius)."""
    g = torch.Generator().manual_seed(3)
    w = torch.randint(0, 2**32, (4, 1 << 16), generator=g, dtype=torch.int64)
    edges = torch.tensor([0, 1, 2**29 - 1, 2**29, 2**30, 2**31 - 1, 2**31, 3 * 2**30, 2**32 - 1])
    w = torch.cat([w, torch.stack([edges, edges.flip(0), edges.flip(0), edges])], dim=1)
    z = rng.box_muller4(*w).double()
    for pair in range(2):
        u = rng.open_uniform(w[2 * pair])
        assert float(u.min()) > 0.0 and float(u.max()) <= 1.0  # no log of 0, no clamp
        r = torch.sqrt(-2.0 * torch.log(u.double()))
        t = 2.0 * math.pi * w[2 * pair + 1].double() / 2.0**32
        for j, exact in enumerate((r * torch.cos(t), r * torch.sin(t))):
            err = (z[:, 2 * pair + j] - exact).abs()
            assert float(err.max()) < 1.0e-6
            assert float((err / r.clamp_min(1e-30)).max()) < 3.0e-7  # about 3 float32 ulps of the radius
    assert float(z.abs().max()) < 6.8  # the largest radius: u = 2^-33, sqrt(66 ln 2) = 6.76


def test_uniform_moments():
    u = rng.chain_rand(SEED, torch.arange(64), 5, (2048,), stream=rng.STREAM_GIBBS).double().flatten()
    n = u.numel()
    assert abs(float(u.mean()) - 0.5) < 5 * math.sqrt(1 / 12 / n)
    assert abs(float(u.var()) - 1 / 12) < 5 * math.sqrt(1 / 180 / n)
    assert scipy.stats.kstest(u.numpy(), "uniform").pvalue > 1e-3


def test_gumbel_max_frequencies_are_softmax():
    """gibbs_select(sample=True): P(idx = m) = softmax(logits + log_prior)[m] (chi-square over 3000 draws)."""
    logits = torch.tensor([[0.5, -1.0, 1.5, 0.0, -0.3]]).expand(300, 5)
    log_prior = torch.log(torch.tensor([0.1, 0.3, 0.2, 0.25, 0.15]))
    levels = torch.linspace(10.0, 1.0, 5)
    counts = torch.zeros(5)
    for k in range(10):
        idx, sig = gibbs.gibbs_select(logits, levels, log_prior, sample=True, seed=SEED, step=k, backend="torch")
        assert torch.equal(sig, levels[idx])
        counts += torch.bincount(idx, minlength=5)
    p = torch.softmax(logits[0] + log_prior, 0)
    chi2 = float(((counts - 3000 * p) ** 2 / (3000 * p)).sum())
    assert scipy.stats.chi2.sf(chi2, df=4) > 1e-3
