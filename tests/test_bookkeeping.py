"""Chain bookkeeping: the C++ extension and the torch twin agree on random schedules, a hand-traced
schedule, and the invariants every schedule must keep (each (chain, block) denoised once, NFE ledger =
n_blocks * (n_skip + n_den) per chain, batches never over-full)."""
import random

import pytest
import torch

from dmcmc_fast.engine import bookkeeping as bk

# setup.py builds dmcmc_fast._C whenever csrc/*.cpp exists: backend="cpp" failing here is a broken install
BACKENDS = ["torch", "cpp"]


def _state(b: bk.ChainBooks):
    return [b.chain_step, b.chain_wait, b.nfe, b.job_chain, b.job_block, b.job_done, b.job_seq, b.next_seq]


def _check_groups_whole(b: bk.ChainBooks, kind, src):
    """Every job group in the batch is there with all its unfinished jobs, in adjacent rows."""
    rows = src[kind == bk.KIND_JOB]
    seqs = b.job_seq[rows]
    for q in seqs.unique().tolist():
        members = ((b.job_seq == q) & (b.job_chain >= 0) & (b.job_done < b.n_den)).sum()
        where = torch.nonzero(seqs == q).flatten()
        assert where.numel() == members and where[-1] - where[0] + 1 == members


def _run(books: bk.ChainBooks, max_ticks=10_000):
    trace = []
    for _ in range(max_ticks):
        if books.done:
            return trace
        new, kind, src = books.plan()
        _check_groups_whole(books, kind, src)
        fin = books.commit(kind, src)
        trace.append((new.clone(), kind.clone(), src.clone(), fin.clone(), [t.clone() for t in _state(books)]))
    raise AssertionError("schedule did not finish")


@pytest.mark.parametrize("backend", BACKENDS)
def test_hand_traced_schedule(backend):
    # 2 chains, 1 block of 2 steps, 1 job slot, 1 denoising NFE, batches of 2 (traced by hand)
    trace = _run(bk.ChainBooks(2, n_blocks=1, n_skip=2, n_den=1, n_jobs=1, batch_size=2, backend=backend))
    assert len(trace) == 4
    kinds = [t[1].tolist() for t in trace]
    srcs = [t[2].tolist() for t in trace]
    assert kinds == [[1, 1], [1, 1], [2, 0], [2, 0]]
    assert srcs == [[0, 1], [0, 1], [0, -1], [0, -1]]
    assert [t[0].tolist() for t in trace] == [[], [], [[0, 0]], [[0, 1]]]
    assert [t[3].tolist() for t in trace] == [[], [], [[0, 0, 0]], [[0, 1, 0]]]
    assert trace[-1][4][2].tolist() == [3, 3]  # NFE: 2 steps + 1 denoising evaluation each


@pytest.mark.parametrize("backend", BACKENDS)
def test_hand_traced_groups(backend):
    # 3 chains, 1 block of 1 step, 3 job slots, 1 NFE, batches of 2: chains 0, 1 end together and are
    # denoised as one group; chain 2 steps only when the batch has room, and forms a group of its own
    trace = _run(bk.ChainBooks(3, n_blocks=1, n_skip=1, n_den=1, n_jobs=3, batch_size=2, backend=backend))
    assert [t[1].tolist() for t in trace] == [[1, 1], [2, 2], [1, 0], [2, 0]]
    assert [t[2].tolist() for t in trace] == [[0, 1], [0, 1], [2, -1], [0, -1]]
    assert [t[3].tolist() for t in trace] == [[], [[0, 0, 0], [1, 1, 0]], [], [[0, 2, 0]]]
    assert trace[-1][4][6].tolist() == [1, 0, 0] and trace[-1][4][7].tolist() == [2]  # job_seq, next_seq


@pytest.mark.parametrize("case", range(12))
def test_cpp_matches_torch_on_random_schedules(case):
    r = random.Random(case)
    C, J, n_skip, n_den, n_blocks = r.randint(1, 9), r.randint(1, 5), r.randint(1, 4), r.randint(1, 5), r.randint(1, 4)
    batch = r.randint(1, C + J + 2)
    a = bk.ChainBooks(C, n_blocks, n_skip, n_den, J, batch, backend="cpp")
    b = bk.ChainBooks(C, n_blocks, n_skip, n_den, J, batch, backend="torch")
    ta, tb = _run(a), _run(b)
    assert len(ta) == len(tb)
    for sa, sb in zip(ta, tb):
        for x, y in zip(sa[:4], sb[:4]):
            assert torch.equal(x.reshape(-1), y.reshape(-1))
        for x, y in zip(sa[4], sb[4]):
            assert torch.equal(x, y)
    # invariants of the schedule itself
    finished = torch.cat([t[3] for t in ta]).reshape(-1, 3)
    pairs = sorted(map(tuple, finished[:, 1:].tolist()))
    assert pairs == [(c, k) for c in range(C) for k in range(n_blocks)]
    assert a.nfe.tolist() == [n_blocks * (n_skip + n_den)] * C
    for _, kind, src, _, _ in ta:
        work = kind != bk.KIND_PAD
        assert work.sum() <= batch and (src[~work] == -1).all()
        assert torch.equal(work, work.sort(descending=True, stable=True).values)  # work rows come first
        assert torch.equal(kind[work], kind[work].sort(descending=True, stable=True).values)  # jobs, then chains


@pytest.mark.parametrize("backend", BACKENDS)
def test_ready_prefix_against_brute_force(backend):
    g = torch.Generator().manual_seed(0)
    ready = torch.zeros(17, dtype=torch.int64)
    order = torch.randperm(17, generator=g)
    start, seen = 0, set()
    for chunk in order.split(4):
        start = bk.ready_prefix(ready, chunk.contiguous(), start, backend=backend)
        seen |= set(chunk.tolist())
        want = 0
        while want in seen:
            want += 1
        assert start == want
    assert start == 17 and ready.tolist() == [1] * 17


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="n_skip"):
        bk.ChainBooks(2, 1, 0, 1, 1, 2)
    with pytest.raises(ValueError, match="chain_wait"):
        bk.pack_batch(torch.zeros(3, dtype=torch.int64), torch.zeros(2, dtype=torch.int64),
                      torch.zeros(1, dtype=torch.int64), torch.zeros(1, dtype=torch.int64),
                      torch.zeros(1, dtype=torch.int64), 2, 1, 4)
    with pytest.raises(ValueError, match="at most once"):
        b = bk.ChainBooks(2, 1, 2, 1, 1, 2)
        b.commit(torch.tensor([1, 1]), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="backend"):
        bk.ready_prefix(torch.zeros(2, dtype=torch.int64), torch.zeros(1, dtype=torch.int64), 0, backend="cuda")


@pytest.mark.parametrize("backend", ["cpp", "torch"])
def test_route_samples_hand_case(backend):
    owed = torch.tensor([3, 0, 2], dtype=torch.int64)
    first = bk.route_samples(owed, 4, backend=backend)
    assert first.tolist() == [0, 0, 0, 2] and owed.tolist() == [0, 0, 1]
    rest = bk.route_samples(owed, 3, backend=backend)
    assert rest.tolist() == [2, -1, -1] and owed.tolist() == [0, 0, 0]


def test_route_samples_cpp_equals_torch_on_random_cases():
    r = random.Random(7)
    for _ in range(50):
        owed = torch.tensor([r.randint(0, 5) for _ in range(r.randint(1, 6))], dtype=torch.int64)
        n = r.randint(0, 25)
        a, b = owed.clone(), owed.clone()
        assert torch.equal(bk.route_samples(a, n, backend="cpp"), bk.route_samples(b, n, backend="torch"))
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="owed must be >= 0"):
        bk.route_samples(torch.tensor([1, -1]), 1)
