"""Every fused Triton kernel against its plain-torch reference on fresh random inputs (under
TRITON_INTERPRET=1 on CPU here; on the GPU when there is one): odd row lengths and several blocks
per row (MAX_BLOCK lowered to 64), a batch of 1, float64/float32 and bfloat16/float16 state, outputs
poisoned (NaN / -1) before the kernel runs so an unwritten element fails the comparison.

Tolerances: float32 1e-5 and float64 1e-6 (the noise words are equal, the float32 Box-Muller may
round differently); bfloat16/float16 follow flash-attention's rule, err(kernel) <= 2 err(torch) +
1e-6 against the float32 reference, where "torch" is the reference run on the same
low-precision tensors computing in that dtype (the plain unfused torch sequence); and per element the
kernel is within one rounding of the float32 reference.
"""
import contextlib
import os

import pytest
import torch

from dmcmc_fast import rng
from dmcmc_fast.kernels import _args, _launch, deis, gibbs, karras_step, langevin, noise, underdamped

gibbs_mod = gibbs  # the module, where a test's parameter `gibbs` names the Gibbs mode

INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"
SEEDS = [0, 1, 0x7BADF00DDEADBEEF]
# (shape, state dtype, seed): rows of 7 and 145 elements are not multiples of the block (64), 192 is 3 full
# blocks; a batch of 1; seeds 0, 1 (a Triton-specialised constant) and one with both key words large
CONFIGS = [((1, 7), torch.float32, 0), ((3, 5, 29), torch.float32, SEEDS[2]), ((1, 7), torch.float64, 1),
           ((2, 3, 8, 8), torch.bfloat16, 1), ((3, 5, 29), torch.bfloat16, SEEDS[2]), ((1, 7), torch.float16, SEEDS[2]),
           ((2, 3, 8, 8), torch.float16, 0)]


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    monkeypatch.setattr(_launch, "MAX_BLOCK", 64)


@pytest.fixture
def poisoned(monkeypatch):
    """Within the block: every tensor torch.empty/empty_like returns is filled with NaN (floats) or -1."""
    empty, empty_like = torch.empty, torch.empty_like

    def fill(t):
        return t.fill_(float("nan") if t.is_floating_point() else -1)

    class Poison:
        def __enter__(self):
            monkeypatch.setattr(torch, "empty", lambda *a, **k: fill(empty(*a, **k)))
            monkeypatch.setattr(torch, "empty_like", lambda *a, **k: fill(empty_like(*a, **k)))

        def __exit__(self, *exc):
            monkeypatch.setattr(torch, "empty", empty)
            monkeypatch.setattr(torch, "empty_like", empty_like)

    return Poison()


@contextlib.contextmanager
def torch_in_dtype():
    """The references computing in the state's own dtype: the plain unfused torch sequence in bf16/fp16."""
    with pytest.MonkeyPatch.context() as mp:
        for mod in (_args, deis, gibbs, karras_step, langevin, underdamped):
            mp.setattr(mod, "compute_dtype", lambda x: x.dtype)
        yield


def _inputs(case, shape, dtype, seed, device):
    """Fresh random arguments of kernel `case` (state in `dtype`, per-sample parameters mixed float/[B])."""
    g = torch.Generator().manual_seed(hash((case, shape, str(dtype), seed)) % 2**31)
    b = shape[0]

    def state(scale=1.0):
        return (scale * torch.randn(shape, generator=g)).to(device=device, dtype=dtype)

    def pos(lo, hi):  # [B] in [lo, hi)
        return (lo + (hi - lo) * torch.rand(b, generator=g)).to(device)

    ids = (torch.randperm(1000, generator=g)[:b] + 2**31 - 500).to(device)  # ids across the int32 sign boundary
    step = torch.randint(0, 2**40, (b,), generator=g).to(device)
    if case == "langevin_step":
        return (state(), state(), pos(0.5, 2.0), pos(0.01, 0.5), seed, ids, step)
    if case == "langevin_step_scalars":
        return (state(), state(), 1.3, 0.1, seed, None, 5, rng.STREAM_INIT)
    if case == "mild_step":
        return (state(), state(0.3), state(), pos(0.5, 2.0), pos(0.01, 0.2), 0.9, seed, ids, step)
    if case == "baoab_limit_step":
        return (state(), state(), pos(0.5, 2.0), pos(0.01, 0.5), state(), seed, ids, step)
    if case == "obabo_oba":
        return (state(), state(), state(), pos(0.5, 2.0), pos(0.01, 0.5), pos(0.5, 4.0), seed, ids, step)
    if case == "obabo_bo":
        return (state(), state(), state(), pos(0.5, 2.0), 0.2, 2.0, seed, ids, 3)
    if case == "euler_step":
        s = pos(0.5, 80.0)
        return (state(), state(), s, s * pos(0.3, 0.9))
    if case == "heun_correct":
        s = pos(0.5, 80.0)
        return (state(), state(), state(), state(), s, s * pos(0.3, 0.9))
    if case == "churn":
        return (state(), pos(0.05, 50.0).double(), pos(0.0, 0.42), 1.003, seed, ids, step)
    if case == "deis_combine_1":
        return (state(), state().unsqueeze(0), 1.0, torch.randn(b, 1, generator=g).to(device))
    if case == "deis_combine_3":
        hist = torch.stack([state() for _ in range(3)])
        return (state(), hist, pos(0.5, 1.0), torch.randn(b, 3, generator=g).to(device))
    raise KeyError(case)


ENTRY = {
    "langevin_step": langevin.langevin_step, "langevin_step_scalars": langevin.langevin_step,
    "mild_step": langevin.mild_step, "baoab_limit_step": underdamped.baoab_limit_step,
    "obabo_oba": underdamped.obabo_oba, "obabo_bo": underdamped.obabo_bo, "euler_step": karras_step.euler_step,
    "heun_correct": karras_step.heun_correct, "churn": karras_step.churn,
    "deis_combine_1": deis.deis_combine, "deis_combine_3": deis.deis_combine,
}


def _tuple(out):
    return out if isinstance(out, tuple) else (out,)


def _upcast(args, dtype):
    return tuple(a.to(dtype) if torch.is_tensor(a) and a.ndim >= 2 and a.is_floating_point() else a for a in args)


@pytest.mark.parametrize("shape,dtype,seed", CONFIGS)
@pytest.mark.parametrize("case", list(ENTRY))
def test_kernel_matches_reference(case, shape, dtype, seed, device, poisoned):
    fn, args = ENTRY[case], _inputs(case, shape, dtype, seed, device)
    with poisoned:
        got = _tuple(fn(*args, backend="triton"))
    ref_lp = _tuple(fn(*args, backend="torch"))
    assert [t.dtype for t in got] == [t.dtype for t in ref_lp] and [t.shape for t in got] == [t.shape for t in ref_lp]
    if dtype in (torch.float32, torch.float64):
        tol = 1e-5 if dtype == torch.float32 else 1e-6
        for a, b in zip(got, ref_lp):
            torch.testing.assert_close(a, b, atol=tol, rtol=tol)
        return
    ref_hi = _tuple(fn(*_upcast(args, torch.float32), backend="torch"))
    with torch_in_dtype():
        plain = _tuple(fn(*args, backend="torch"))
    for a, b, p, r in zip(got, ref_lp, plain, ref_hi):
        a, b, p, r = a.double(), b.double(), p.double(), r.double()
        ulp = torch.finfo(dtype).eps * torch.exp2(torch.floor(torch.log2(r.abs().clamp_min(1e-30))))
        # the interpreter's float32 -> bfloat16 cast truncates (ignores round-to-nearest): half an ulp more there
        slack = 0.5 * float(ulp.max()) if INTERPRETED and dtype == torch.bfloat16 else 0.0
        err_kernel = float((a - r).abs().max())
        assert err_kernel <= 2 * float((p - r).abs().max()) + slack + 1e-6  # flash-attention's rule
        # and per element: one rounding of the float32 result (to nearest on GPU, truncation in the interpreter)
        assert bool(((a - r).abs() <= 1.01 * ulp + 1e-6).all())
        torch.testing.assert_close(a, b, atol=1e-6, rtol=2 * torch.finfo(dtype).eps)


def test_noise_of_kernel_is_chain_randn(device):
    """x = D = 0, eta = 1: langevin_step returns exactly the chain's normals (same words, float32 Box-Muller)."""
    x = torch.zeros(4, 3, 37, device=device)
    ids, step = torch.tensor([5, 0, 2**32 - 1, 77], device=device), torch.tensor([0, 9, 3, 2**31], device=device)
    z = langevin.langevin_step(x, x, 1.0, 1.0, 42, ids, step, stream=rng.STREAM_SDE, backend="triton")
    torch.testing.assert_close(z, rng.chain_randn(42, ids, step, (3, 37), stream=rng.STREAM_SDE, device=device),
                               atol=2e-6, rtol=1e-6)
    alone = langevin.langevin_step(x[2:3], x[2:3], 1.0, 1.0, 42, ids[2:3], step[2:3], stream=rng.STREAM_SDE,
                                   backend="triton")
    assert torch.equal(alone[0], z[2])  # a chain's noise does not depend on its slot or the batch size


def test_non_contiguous_input(device):
    x = torch.randn(29, 3, device=device).t()  # [3, 29], strided
    d = torch.randn(3, 29, device=device)
    got = langevin.langevin_step(x, d, 0.7, 0.05, 3, None, 1, backend="triton")
    torch.testing.assert_close(got, langevin.langevin_step(x, d, 0.7, 0.05, 3, None, 1, backend="torch"),
                               atol=1e-5, rtol=1e-5)


# ---------------- Gibbs argmax and block-minimum bookkeeping ----------------
def _gibbs_scores(logits, log_prior, sample, seed, chain_ids, step) -> torch.Tensor:
    """What gibbs_select maximises, in float64: logits (+ log prior) (+ Gumbel noise of the chain's uniforms)."""
    s = logits.double()
    if log_prior is not None:
        s = s + log_prior.double()
    if sample:
        u = noise.chain_rand(seed, _args.chain_vec(chain_ids, logits), _args.step_vec(step, logits),
                             (logits.shape[1],), stream=rng.STREAM_GIBBS, device=logits.device, backend="torch")
        s = s - torch.log(-torch.log(u.double()))
    return s


def _assert_same_argmax(idx, ref_idx, scores, exact: bool):
    """`idx` (the kernel's) and `ref_idx` (torch's) maximise the same `scores`. With `exact` (no transcendental on
    the way: sums of float32 / bfloat16 values round alike everywhere) they are equal, ties resolved to the first
    index. With Gumbel noise, -log(-log u) of the kernel's math library and of torch's differ by an ulp, which
    can flip a near-tie on some device: a row may differ only where both picks are within 1e-5 (relative) of the
    row's maximum, never a real disagreement."""
    if exact:
        assert torch.equal(idx, ref_idx)
        return
    top = scores.max(1).values
    tol = 1e-5 * top.abs().clamp_min(1.0)
    for pick in (idx, ref_idx):
        assert (top - scores.gather(1, pick[:, None].to(scores.device))[:, 0] <= tol).all()


@pytest.mark.parametrize("sample", [False, True])
@pytest.mark.parametrize("prior", [None, "levels", "rows"])
@pytest.mark.parametrize("b,m,dtype", [(1, 5, torch.float32), (3, 150, torch.float32), (4, 70, torch.bfloat16),
                                       (2, 33, torch.float64)])
def test_gibbs_select_matches_reference(b, m, dtype, prior, sample, device, poisoned):
    """M = 150 > MAX_BLOCK: the running argmax crosses blocks; ties resolve to the first index as in torch."""
    g = torch.Generator().manual_seed(b * 1000 + m)
    logits = torch.randn(b, m, generator=g).to(device=device, dtype=dtype)
    logits[:, m // 2] = logits.max(1).values  # a tie with an earlier maximum in every row
    levels = torch.logspace(2, -3, m, dtype=torch.float64).to(device)
    log_prior = {None: None, "levels": torch.randn(m, generator=g),
                 "rows": torch.randn(b, m, generator=g)}[prior]
    log_prior = None if log_prior is None else log_prior.to(device=device, dtype=dtype)
    kw = dict(sample=sample, seed=SEEDS[-1], chain_ids=torch.arange(b, device=device) * 7 + 1,
              step=torch.arange(b, device=device) + 2**31)
    with poisoned:
        idx, sig = gibbs.gibbs_select(logits, levels, log_prior, backend="triton", **kw)
    ref_idx, ref_sig = gibbs.gibbs_select(logits, levels, log_prior, backend="torch", **kw)
    assert idx.dtype == torch.int64 and sig.dtype == torch.float64
    _assert_same_argmax(idx, ref_idx, _gibbs_scores(logits, log_prior, sample, kw["seed"], kw["chain_ids"],
                                                    kw["step"]), exact=not sample)
    assert torch.equal(sig, levels[idx]) and torch.equal(ref_sig, levels[ref_idx])


@pytest.mark.parametrize("shape,dtype", [((1, 7), torch.float32), ((5, 3, 29), torch.float32),
                                         ((4, 130), torch.bfloat16)])
def test_block_min_update_matches_reference(shape, dtype, device):
    g = torch.Generator().manual_seed(shape[0])
    x = torch.randn(shape, generator=g).to(device=device, dtype=dtype)
    sigma = torch.rand(shape[0], generator=g).to(device)
    best_x = torch.randn(shape, generator=g).to(device=device, dtype=dtype)
    best_sigma = torch.rand(shape[0], generator=g).to(device)
    best_sigma[0] = sigma[0]  # equal sigma: keep the old state
    a = gibbs.block_min_update(x, sigma, best_x.clone(), best_sigma.clone(), backend="triton")
    r = gibbs.block_min_update(x, sigma, best_x.clone(), best_sigma.clone(), backend="torch")
    assert torch.equal(a[0], r[0]) and torch.equal(a[1], r[1])
    lower = sigma < best_sigma
    assert torch.equal(a[0][lower], x[lower]) and torch.equal(a[0][~lower], best_x[~lower])


@pytest.mark.parametrize("b,m,shape,dtype,sample", [(1, 5, (7,), torch.float32, True),
                                                   (5, 150, (3, 29), torch.float32, False),
                                                   (4, 70, (130,), torch.bfloat16, True)])
def test_gibbs_select_block_min_matches_reference(b, m, shape, dtype, sample, device, poisoned):
    """Fused Gibbs draw + block-minimum update = gibbs_select then block_min_update (x rows over several blocks).
    The draw agrees with torch's up to near-ties (`_assert_same_argmax`); the update is checked exactly against
    the kernel's own draw."""
    g = torch.Generator().manual_seed(b + m)
    logits = torch.randn(b, m, generator=g).to(device)
    levels = torch.logspace(2, -3, m).to(device)
    x = torch.randn(b, *shape, generator=g).to(device=device, dtype=dtype)
    best_x = torch.randn(b, *shape, generator=g).to(device=device, dtype=dtype)
    best_sigma = levels[torch.randint(0, m, (b,), generator=g).to(device)]
    kw = dict(sample=sample, seed=SEEDS[-1], chain_ids=torch.arange(b, device=device) + 100, step=4)
    bx_t, bs_t = best_x.clone(), best_sigma.clone()
    with poisoned:
        idx, sig = gibbs.gibbs_select_block_min(logits, levels, x, bx_t, bs_t, backend="triton", **kw)
    bx_r, bs_r = best_x.clone(), best_sigma.clone()
    ref_idx, ref_sig = gibbs.gibbs_select_block_min(logits, levels, x, bx_r, bs_r, backend="torch", **kw)
    _assert_same_argmax(idx, ref_idx, _gibbs_scores(logits, None, sample, kw["seed"], kw["chain_ids"], kw["step"]),
                        exact=not sample)
    for drawn, bx, bs in ((sig, bx_t, bs_t), (ref_sig, bx_r, bs_r)):  # each path's update follows its own draw
        lower = drawn < best_sigma
        assert torch.equal(bs, torch.where(lower, drawn, best_sigma))
        assert torch.equal(bx[lower], x[lower]) and torch.equal(bx[~lower], best_x[~lower])
    assert torch.equal(sig, levels[idx])


@pytest.mark.parametrize("kind,options", [("heun", {}), ("euler", {}), ("deis", {}),
                                          ("karras_sde", dict(s_churn=10.0, s_tmin=0.0, s_tmax=100.0))])
def test_sampler_loops_on_the_triton_path_match_the_torch_path(kind, options, device, monkeypatch):
    """The loops set up once per run (EDM's step rows and churn, DEIS's coefficients; `common.derived`) take the
    Triton launchers on a GPU: the whole sampler on that path (the interpreter here) gives the torch path's
    samples, on a shared grid (cached set-up, run twice) and on per-sample starts."""
    from dmcmc_fast.integrators import INTEGRATORS
    from dmcmc_fast.models.builtin import load_model

    model = load_model("gmm-digits", modes=20)
    fn, steps_for_nfe = INTEGRATORS[kind]
    x = 20.0 * torch.randn(3, *model.shape, generator=torch.Generator().manual_seed(5)).to(device)
    starts = (20.0, torch.tensor([20.0, 5.0, 1.0], device=device))
    runs = {}
    for backend in ("torch", "triton", "triton"):
        monkeypatch.setenv("DMCMC_KERNELS", backend)
        runs.setdefault(backend, []).append([fn(model, x, s, steps_for_nfe(7), sigma_min=0.01, seed=3, **options).x
                                             for s in starts])
    for triton_run in runs["triton"]:
        for ref, got in zip(runs["torch"][0], triton_run):
            torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    for first, again in zip(*runs["triton"]):
        assert torch.equal(first, again)


@pytest.mark.parametrize("gibbs", ["argmax", "sample"])
def test_dlg_on_the_triton_path_matches_the_torch_path(gibbs, device, monkeypatch):
    """DLG's step kernels are chosen once per run (`mcmc.dlg.step_kernels`): on the Triton path (the interpreter
    here, the GPU's path) a run gives the torch path's samples. Its Gibbs steps must pick the same levels, so the
    run is first shown to hold no near-tie: every step's best level beats the second by more than 1e-3, while
    the two paths' scores differ by ~1e-5 (the fused Langevin step rounds x differently), so no rounding of
    any device can flip a pick."""
    from dmcmc_fast import api
    from dmcmc_fast.models.builtin import load_model

    margins = []
    reference = gibbs_mod.gibbs_select_reference

    def recording(logits, levels, log_prior=None, sample=False, seed=0, chain_ids=None, step=0, stream=None):
        top = _gibbs_scores(logits, log_prior, sample, seed, chain_ids, step).topk(2, dim=1).values
        margins.append(float((top[:, 0] - top[:, 1]).min()))
        return reference(logits, levels, log_prior, sample, seed, chain_ids, step, stream)

    model = load_model("gmm-digits", modes=20)
    opts = dict(chains=2, n_skip=2, n_levels=50, init_nfe=5, n_init=2, classifier="exact", gibbs=gibbs)
    out = {}
    for backend in ("torch", "triton"):
        monkeypatch.setenv("DMCMC_KERNELS", backend)
        with monkeypatch.context() as m:
            if backend == "torch":
                m.setattr(gibbs_mod, "gibbs_select_reference", recording)
            out[backend] = api.sample(model, "dlg", 4, 8, seed=1, progress=False, device=device, **opts)
    assert len(margins) >= 5 and min(margins) > 1e-3, margins  # the picks are far from ties
    torch.testing.assert_close(out["triton"].samples, out["torch"].samples, rtol=1e-4, atol=1e-4)
    assert torch.equal(torch.as_tensor(out["triton"].meta["sigma"]), torch.as_tensor(out["torch"].meta["sigma"]))
