"""GraphedDenoiser / GraphedStep (engine/graph.py).

On CPU: bucket choice, padding to the bucket and slicing back, chunking above the largest bucket,
static-buffer reuse, the eager fallback when capture fails (with its logged reason, warm-up done and
undone), and a Langevin loop whose step counter lives in a device buffer. On CUDA: replay equals eager
for a small conv denoiser and for a whole captured step; a model that syncs with the host falls back.
"""
import logging

import pytest
import torch

from dmcmc_fast.engine.graph import GraphedDenoiser, GraphedStep
from dmcmc_fast.kernels.langevin import langevin_step
from dmcmc_fast.models.gaussian_mixture import GaussianMixture

SHAPE = (2, 3, 3)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")




class Recorder:
    """A row-wise denoiser that records the batch sizes it is called with."""

    shape = SHAPE

    def __init__(self):
        self.batches = []

    def __call__(self, x, sigma):
        self.batches.append(x.shape[0])
        return x / (1 + sigma.reshape(-1, 1, 1, 1) ** 2)  # exact D for N(0, I) data


def _inputs(b, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, *SHAPE, generator=g), torch.rand(b, generator=g) + 0.1


def test_bucket_for():
    d = GraphedDenoiser(Recorder(), buckets=(16, 1, 4), mode="static", device="cpu")
    assert d.buckets == [1, 4, 16]
    assert [d.bucket_for(b) for b in (1, 2, 4, 5, 16, 17, 100)] == [1, 4, 4, 16, 16, 16, 16]
    with pytest.raises(ValueError, match="batch"):
        d.bucket_for(0)


def test_static_path_pads_to_bucket_and_slices_back():
    m = Recorder()
    d = GraphedDenoiser(m, buckets=(4, 16), mode="static", device="cpu")
    for b in (3, 4, 13, 37):  # 37 = 16 + 16 + 5: chunks of the largest bucket, the rest padded
        x, s = _inputs(b, seed=b)
        assert torch.equal(d(x, s), m(x, s))
    assert m.batches == [4, 3, 4, 4, 16, 13, 16, 16, 16, 37]  # (bucket call, eager check) pairs
    assert sorted(d._buckets) == [4, 16]  # one set of static buffers per bucket, reused
    assert d.captured == []  # nothing is a CUDA graph on CPU
    bk = d._buckets[16]
    x37, s37 = _inputs(37, seed=37)
    assert torch.equal(bk.x[:5], x37[32:]) and torch.equal(bk.sigma[:5], s37[32:])  # last chunk in the buffer
    assert torch.equal(bk.x[5:], x37[21:32])  # padding rows: the previous chunk's (finite) inputs
    x64, s64 = (t.double() for t in _inputs(3))  # buffers take the dtype of the first input
    d64 = GraphedDenoiser(m, buckets=(4,), mode="static", device="cpu")
    assert d64(x64, s64).dtype == torch.float64 and torch.equal(d64(x64, s64), m(x64, s64))


def test_copy_out_false_returns_the_static_output():
    d = GraphedDenoiser(Recorder(), buckets=(4,), mode="static", device="cpu", copy_out=False)
    x, s = _inputs(3)
    y = d(x, s)
    d(2 * x, s)
    assert torch.allclose(y, 2 * x / (1 + s.reshape(-1, 1, 1, 1) ** 2))  # overwritten by the next call


def test_auto_is_plain_eager_on_cpu():
    m = Recorder()
    d = GraphedDenoiser(m, mode="auto", device="cpu")
    x, s = _inputs(5)
    assert torch.equal(d(x, s), m(x, s)) and m.batches == [5, 5]


def test_graph_mode_falls_back_to_eager_with_a_logged_reason(caplog):
    m = Recorder()
    d = GraphedDenoiser(m, buckets=(8,), mode="graph", device="cpu", warmup=2)
    x, s = _inputs(5)
    with caplog.at_level(logging.WARNING, logger="dmcmc_fast.engine"):
        y = d(x, s)
    assert torch.equal(y, m(x, s))
    assert d.mode == "eager" and "CUDA" in d.fallback_reason and "running eagerly" in caplog.text
    assert m.batches == [8, 8, 5, 5]  # two warm-up passes on the bucket, then eager calls
    d(x, s)
    assert m.batches[-1] == 5


def test_bad_arguments():
    with pytest.raises(ValueError, match="mode"):
        GraphedDenoiser(Recorder(), mode="fast", device="cpu")
    with pytest.raises(ValueError, match="buckets"):
        GraphedDenoiser(Recorder(), buckets=(0, 4), device="cpu")
    with pytest.raises(ValueError, match="shape"):
        GraphedDenoiser(lambda x, s: x, device="cpu")
    d = GraphedDenoiser(Recorder(), buckets=(4,), mode="static", device="cpu")
    with pytest.raises(ValueError, match="sigma"):
        d(torch.zeros(2, *SHAPE), torch.ones(3))
    with pytest.raises(ValueError, match="buffers"):
        GraphedStep(lambda b: None, {})


def _langevin_buffers(device, B=6):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, *SHAPE, generator=g).to(device)
    return {"x": x, "sigma": torch.linspace(0.5, 2.0, B, device=device), "eta": torch.full((B,), 0.05, device=device),
            "ids": torch.arange(10, 10 + B, device=device), "step": torch.zeros(B, dtype=torch.int64, device=device)}


def _langevin_step_fn(model, seed):
    def step(b):  # the whole step reads and writes device buffers only: no host value, no sync
        d = model(b["x"], b["sigma"])
        b["x"].copy_(langevin_step(b["x"], d, b["sigma"], b["eta"], seed, b["ids"], b["step"]))
        b["step"].add_(1)
    return step


def _plain_langevin(model, buf, seed, n):
    x = buf["x"].clone()
    for k in range(n):
        x = langevin_step(x, model(x, buf["sigma"]), buf["sigma"], 0.05, seed, buf["ids"], k)
    return x


def test_step_state_in_device_buffers_cpu_fallback():
    gmm = GaussianMixture(torch.randn(3, *SHAPE, generator=torch.Generator().manual_seed(2)), std=0.2)
    buf = _langevin_buffers("cpu")
    start = {k: v.clone() for k, v in buf.items()}
    step = GraphedStep(_langevin_step_fn(gmm, 7), buf, mode="graph", warmup=2)
    assert step.graph is None and "CUDA" in step.fallback_reason
    for k in buf:  # the warm-up ran and was undone: capturing does not advance the chains
        assert torch.equal(buf[k], start[k]), k
    for _ in range(4):
        step()
    assert buf["step"].tolist() == [4] * 6
    assert torch.equal(buf["x"], _plain_langevin(gmm, start, 7, 4))
    # the noise is the chains' own streams: other chain ids give other trajectories
    assert not torch.allclose(buf["x"], _plain_langevin(gmm, {**start, "ids": start["ids"] + 1}, 7, 4))


class TinyConvDenoiser(torch.nn.Module):
    shape = SHAPE

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.SiLU(),
                                       torch.nn.Conv2d(16, 2, 3, padding=1))

    def forward(self, x, sigma):
        c = torch.log(sigma).reshape(-1, 1, 1, 1).expand(-1, 1, *x.shape[2:])
        return x + self.net(torch.cat([x, c], 1))


@pytest.mark.gpu
@cuda
def test_cuda_replay_equals_eager(monkeypatch):
    # padded buckets (5 rows run as 16) may get another cuDNN algorithm than the eager call; with TF32 (cuDNN's
    # default on Ampere and later) two algorithms differ by ~1e-3, in float32 by ~1e-6: compare in float32
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    torch.manual_seed(0)
    model = TinyConvDenoiser().cuda().eval()
    d = GraphedDenoiser(model, buckets=(1, 16, 64), mode="graph")
    for b in (1, 5, 16, 40, 100):
        x, s = (t.cuda() for t in _inputs(b, seed=b))
        with torch.no_grad():
            torch.testing.assert_close(d(x, s), model(x, s), rtol=1e-5, atol=1e-5)
    assert d.fallback_reason is None and d.captured == [1, 16, 64]


@pytest.mark.gpu
@cuda
def test_cuda_captured_step_equals_eager_loop():
    torch.manual_seed(0)
    model = TinyConvDenoiser().cuda().eval()
    buf = _langevin_buffers("cuda")
    start = {k: v.clone() for k, v in buf.items()}
    step = GraphedStep(_langevin_step_fn(model, 3), buf, mode="graph")
    assert step.graph is not None, step.fallback_reason
    for _ in range(5):
        step()
    with torch.no_grad():
        torch.testing.assert_close(buf["x"], _plain_langevin(model, start, 3, 5), rtol=1e-4, atol=1e-5)


class HostSyncDenoiser(TinyConvDenoiser):
    """Reads a value back to the host in its forward: cannot be captured."""

    def forward(self, x, sigma):
        return super().forward(x, sigma) * (1.0 + 0.0 * float(sigma.max().item()))


@pytest.mark.gpu
@cuda
def test_cuda_capture_failure_falls_back_to_eager(caplog):
    torch.manual_seed(0)
    model = HostSyncDenoiser().cuda().eval()
    d = GraphedDenoiser(model, buckets=(8,), mode="graph")
    x, s = (t.cuda() for t in _inputs(5))
    with caplog.at_level(logging.WARNING, logger="dmcmc_fast.engine"), torch.no_grad():
        y = d(x, s)
        torch.testing.assert_close(y, model(x, s))
    assert d.mode == "eager" and d.fallback_reason and "running eagerly" in caplog.text
    with torch.no_grad():  # the device is usable afterwards
        torch.testing.assert_close(d(x, s), model(x, s))
