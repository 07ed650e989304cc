"""The per-chain noise kernel (kernels/noise.py) against its reference, `rng.chain_randn`, on fresh
chain ids and steps: odd row lengths and several blocks per row (MAX_BLOCK lowered to 64), a batch of
1, every output dtype, per-row steps and an int step; the output poisoned with NaN first. Under
TRITON_INTERPRET=1 here, on the GPU when there is one. The Philox words are equal on both sides; the
float32 Box-Muller may round differently by an ulp, hence the tolerance.
"""
import pytest
import torch

from dmcmc_fast import rng
from dmcmc_fast.kernels import _launch, noise

SEEDS = [0, 1, 0x7BADF00DDEADBEEF]


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    monkeypatch.setattr(_launch, "MAX_BLOCK", 64)


@pytest.mark.parametrize("b,shape", [(1, (7,)), (3, (5, 29)), (2, (3, 8, 8)), (4, (1,))])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("seed", SEEDS)
def test_noise_kernel_matches_reference(b, shape, dtype, seed, device, monkeypatch):
    g = torch.Generator().manual_seed(hash((b, shape, str(dtype), seed)) % 2**31)
    ids = (torch.randperm(1000, generator=g)[:b] + 2**31 - 500).to(device)  # across the int32 sign boundary
    step = torch.randint(0, 2**40, (b,), generator=g).to(device) if seed != 1 else 7
    empty = torch.empty
    monkeypatch.setattr(torch, "empty", lambda *a, **k: empty(*a, **k).fill_(float("nan")))
    got = noise.chain_randn(seed, ids, step, shape, stream=rng.STREAM_SDE, dtype=dtype, backend="triton")
    monkeypatch.setattr(torch, "empty", empty)
    ref = rng.chain_randn(seed, ids, step, shape, stream=rng.STREAM_SDE, device=device, dtype=dtype)
    assert got.shape == (b, *shape) and got.dtype == dtype and got.device == ref.device
    tol = {torch.float32: 1e-5, torch.float64: 1e-5}.get(dtype, 1e-2)
    torch.testing.assert_close(got.float(), ref.float(), rtol=tol, atol=tol)


def test_noise_entry_dispatches_by_device_and_defaults():
    ids = torch.arange(3)
    z = noise.chain_randn(5, ids, 2, (4,), stream=rng.STREAM_INIT)  # CPU tensors: the torch reference
    assert torch.equal(z, rng.chain_randn(5, ids, 2, (4,), stream=rng.STREAM_INIT))
    assert noise.chain_randn(5, [0, 1, 2], 2, (4,), stream=rng.STREAM_INIT).shape == (3, 4)
    with pytest.raises(ValueError, match="step must be an int or a tensor of shape \\[3\\]"):
        noise.chain_randn(5, ids, torch.zeros(2, dtype=torch.int64), (4,), backend="torch")


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("b,shape,stream", [(1, (1,), 0), (5, (3, 7), rng.STREAM_INIT),
                                           (64, (1, 8, 8), rng.STREAM_GIBBS), (17, (3, 9, 9), rng.STREAM_LANGEVIN)])
def test_cpu_draws_from_the_extension_are_bit_identical_to_the_reference(seed, b, shape, stream):
    assert noise._cpp() is not None, "dmcmc_fast._C is not built: run bash scripts/setup.sh"
    assert noise._ext("philox_normal") is not None, "dmcmc_fast._C predates philox_normal: run scripts/setup.sh"
    g = torch.Generator().manual_seed(seed % 2**31 + b)
    ids = torch.randperm(1000, generator=g)[:b] + 2**32 - 500  # ids past 2**32: the counter keeps 32 bits
    step = torch.randint(0, 2**40, (b,), generator=g)
    z = noise.chain_randn(seed, ids, step, shape, stream=stream, dtype=torch.float64)
    assert torch.equal(z, rng.chain_randn(seed, ids, step, shape, stream=stream, dtype=torch.float64))
    u = noise.chain_rand(seed, ids, 3, shape, stream=stream)
    assert torch.equal(u, rng.chain_rand(seed, ids, 3, shape, stream=stream))
    assert torch.equal(noise.chain_randn(seed, ids, step, shape, stream=stream, backend="torch"),
                       rng.chain_randn(seed, ids, step, shape, stream=stream))


@pytest.mark.parametrize("n", [1, 3, 4, 1023, 1025, 2501])
def test_cpu_draws_across_the_extensions_chunks_are_bit_identical(n):
    """The C++ draw makes its words 256 calls (1024 elements) at a time: rows shorter, equal and longer than that,
    with a partial last call (n % 4 != 0), normals and uniforms, bit for bit the reference's; several chains."""
    ids = torch.tensor([0, 7, 2**32 + 1])
    steps = torch.tensor([3, 2**35, 11])
    normal = noise._ext("philox_normal")
    assert normal is not None, "dmcmc_fast._C predates the four-word stream: run bash scripts/setup.sh"
    assert torch.equal(normal(SEEDS[2], ids, steps, n, rng.STREAM_SDE),
                       rng.chain_randn(SEEDS[2], ids, steps, (n,), stream=rng.STREAM_SDE))
    assert torch.equal(noise._cpp()(SEEDS[2], ids, steps, n, rng.STREAM_GIBBS),
                       rng.chain_rand(SEEDS[2], ids, steps, (n,), stream=rng.STREAM_GIBBS))


def test_an_extension_of_another_stream_is_not_used(monkeypatch):
    """A build from before the stream changed (no philox_stream, or another version) draws other numbers: the
    entry points fall back to the reference rather than use it."""
    from dmcmc_fast import _C
    assert _C.philox_stream() == rng.STREAM_VERSION == 2
    noise._ext.cache_clear()
    monkeypatch.setattr(_C, "philox_stream", lambda: 1)
    try:
        assert noise._cpp() is None and noise._ext("philox_normal") is None
        ids = torch.arange(3)
        assert torch.equal(noise.chain_randn(4, ids, 1, (5,)), rng.chain_randn(4, ids, 1, (5,)))
    finally:
        noise._ext.cache_clear()


def test_cpu_draws_fall_back_to_the_reference_without_the_extension(monkeypatch):
    ids = torch.arange(3)
    monkeypatch.setattr(noise, "_cpp", lambda: None)
    assert torch.equal(noise.chain_randn(4, ids, 1, (5,)), rng.chain_randn(4, ids, 1, (5,)))
    with pytest.raises(ValueError, match="seed"):
        noise.chain_rand(-1, ids, 1, (5,))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("b,n_steps,shape", [(1, 5, (1, 8, 8)), (3, 1, (7,)), (6, 4, (3, 5)), (2, 3, (9,))])
def test_several_steps_in_one_draw_are_each_steps_own(seed, b, n_steps, shape):
    """chain_randn_steps (on the CPU one extension call builds every row) gives, in slice k, each chain's draw at
    its step0 + k: bit-identical to one chain_randn per step and to the torch reference, whatever the batch."""
    assert noise._ext("philox_normal_steps") is not None, "the extension predates philox_normal_steps: rebuild"
    g = torch.Generator().manual_seed(seed % 2**31 + 7 * b + n_steps)
    ids = torch.randperm(1000, generator=g)[:b] + 2**32 - 500
    step0 = torch.randint(0, 2**40, (b,), generator=g)
    z = noise.chain_randn_steps(seed, ids, step0, n_steps, shape, stream=rng.STREAM_LANGEVIN)
    assert z.shape == (n_steps, b, *shape)
    for k in range(n_steps):
        assert torch.equal(z[k], noise.chain_randn(seed, ids, step0 + k, shape, stream=rng.STREAM_LANGEVIN))
        assert torch.equal(z[k], rng.chain_randn(seed, ids, step0 + k, shape, stream=rng.STREAM_LANGEVIN))
    last = noise.chain_randn_steps(seed, ids[-1:], step0[-1:], n_steps, shape, stream=rng.STREAM_LANGEVIN)
    assert torch.equal(last[:, 0], z[:, -1])  # a chain's rows do not depend on the others in the call
    first = int(step0[0])  # an int first step for every chain (a DLG block's): one call without a step tensor
    assert noise._ext("philox_normal_runs") is not None, "the extension predates philox_normal_runs: rebuild"
    z_int = noise.chain_randn_steps(seed, ids, first, n_steps, shape, stream=rng.STREAM_LANGEVIN)
    for k in range(n_steps):
        assert torch.equal(z_int[k], rng.chain_randn(seed, ids, first + k, shape, stream=rng.STREAM_LANGEVIN))


@pytest.mark.parametrize("n_runs,run,stride", [(1, 1, 1), (3, 5, 11), (4, 2, 2), (2, 3, 7)])
def test_runs_of_steps_in_one_draw_are_each_steps_own(n_runs, run, stride):
    """chain_randn_runs (a DLG call's Langevin noise, block after block) gives in slice [q, j] each chain's draw at
    step0 + q * stride + j: bit-identical to the torch reference, on the extension's path and without it."""
    assert noise._ext("philox_normal_runs") is not None, "the extension predates philox_normal_runs: rebuild"
    ids, shape, step0 = torch.tensor([0, 5, 2**32 + 3]), (2, 3), 2**33 + 17
    z = noise.chain_randn_runs(11, ids, step0, n_runs, run, stride, shape, stream=rng.STREAM_LANGEVIN)
    assert z.shape == (n_runs, run, 3, *shape)
    for q in range(n_runs):
        for j in range(run):
            ref = rng.chain_randn(11, ids, step0 + q * stride + j, shape, stream=rng.STREAM_LANGEVIN)
            assert torch.equal(z[q, j], ref)
    with pytest.MonkeyPatch.context() as mp:  # without the extension: the per-run draws
        mp.setattr(noise, "_cpp", lambda: None)
        assert torch.equal(noise.chain_randn_runs(11, ids, step0, n_runs, run, stride, shape,
                                                  stream=rng.STREAM_LANGEVIN), z)


@pytest.mark.parametrize("scale", [None, 80.0, 0.37, 1.0])
@pytest.mark.parametrize("b,shape,step", [(1, (1, 8, 8), 0), (5, (3, 7), 11), (3, (9,), 2**35 + 3)])
def test_one_step_draw_with_its_scale_is_the_reference_times_the_scale(scale, b, shape, step):
    """An int step on the CPU is one extension call (`_C.philox_normal_at`, no step tensor), the scale (a prior's
    sigma_max) multiplied in there: bit-identical to `scale * rng.chain_randn(...)`, as the other paths give it."""
    assert noise._ext("philox_normal_at") is not None, "the extension predates philox_normal_at: rebuild"
    ids = torch.arange(b) + 2**32 - 2
    ref = rng.chain_randn(7, ids, step, shape, stream=rng.STREAM_INIT)
    ref = ref if scale is None else scale * ref
    got = noise.chain_randn(7, ids, step, shape, stream=rng.STREAM_INIT, scale=scale)
    assert got.shape == (b, *shape) and got.dtype == torch.float32 and torch.equal(got, ref)
    other = noise.chain_randn(7, ids, torch.full((b,), step), shape, stream=rng.STREAM_INIT, scale=scale)
    assert torch.equal(other, ref)  # a step tensor takes the general path: the same numbers
