"""The GPU path on a simulated CUDA device (tests/sim_cuda.py), here, before any GPU: every sampler through
`api.sample(..., device="cuda")` takes its CUDA branches (Triton kernels on device tensors, the network as
captured and replayed graphs) and gives the CPU's samples; the doors (façade, stream, CLI) run a real
network moved with `.to("cuda")`. First, the simulator itself: each rule it enforces can fail.
"""
from __future__ import annotations

import json
import os

import pytest
import torch

import dmcmc_fast
import test_sync_audit as sync_audit
from dmcmc_fast import api, cli
from dmcmc_fast.kernels import langevin, noise
from dmcmc_fast.models.builtin import load_model
from dmcmc_fast.samplers import all_samplers
from sim_cuda import COUNTS, DeviceError, SimCuda, simulated_cuda

pytestmark = pytest.mark.skipif(torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") != "1",
                                reason="the simulation is for machines without CUDA (conftest sets TRITON_INTERPRET)")

# samplers whose default budget needs more than a few NFE on the mixture
OPTIONS = {"rk45": dict(nfe=200, rtol=1e-2, atol=1e-2), "dpm_adaptive": dict(nfe=200, rtol=1e-2, atol=1e-2)}
# float32 Triton vs the torch references: ~1e-6 per step; adaptive step control (tolerance 1e-2) carries it further
ATOL = {"rk45": 5e-3, "dpm_adaptive": 5e-3}


@pytest.fixture(scope="module")
def digits():
    return load_model("gmm-digits")


# ---------------------------------------------------------------------------------------------- the simulator
def test_device_rules():
    with simulated_cuda():
        x = torch.randn(3, 4, device="cuda")
        assert isinstance(x, SimCuda) and x.is_cuda and x.device == torch.device("cuda", 0)
        assert isinstance(torch.ones(2).to("cuda"), SimCuda)  # a device without an index works
        assert isinstance(torch.tensor([1.0, 2.0], device="cuda"), SimCuda)
        assert isinstance(x * torch.tensor(2.0), SimCuda)  # a 0-d host tensor goes by value
        assert isinstance(x[torch.tensor([0, 2])], SimCuda)  # host index tensors are fine
        with pytest.raises(DeviceError, match="same device"):
            x + torch.ones(3, 4)
        with pytest.raises(DeviceError, match="same device"):
            torch.cat([x, torch.ones(1, 4)])
        with pytest.raises(DeviceError, match="same device"):
            torch.stack([x[0, 0], torch.tensor(2.0)])  # 0-d host tensors go by value to pointwise ops only
        with pytest.raises(TypeError, match="numpy"):
            x.numpy()
        host = x.cpu()
        assert type(host) is torch.Tensor and host.device.type == "cpu"
        torch.testing.assert_close(host, x.elem)
        assert torch.cuda.is_available() and torch.cuda.get_device_name() == "SimCuda (CPU)"
    assert not torch.cuda.is_available()  # all undone on leaving


def test_graph_replays_ops_on_the_captured_tensors():
    with simulated_cuda():
        x, acc = torch.ones(4, device="cuda"), torch.zeros(4, device="cuda")
        scale = 2.0
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            y = x * scale + 1  # a fresh output: it lives in the graph's memory
            acc.add_(y)  # in place on a tensor from outside the capture
        captured = y
        torch.testing.assert_close(acc.cpu(), torch.full((4,), 3.0))
        x.copy_(torch.arange(4.0))  # a static input changed in place: replay reads it
        scale = 10.0  # a Python value: baked in at capture, replay never sees it
        g.replay()
        assert y is captured
        torch.testing.assert_close(y.cpu(), torch.arange(4.0) * 2 + 1)
        torch.testing.assert_close(acc.cpu(), 3.0 + torch.arange(4.0) * 2 + 1)
        assert scale == 10.0 and COUNTS["graph replays"] >= 1


@pytest.mark.parametrize("host_read", [
    lambda x: x.sum().item(),
    lambda x: bool((x > 0).all()),
    lambda x: x.tolist(),
    lambda x: x.cpu(),
    lambda x: x[x > 0],
    lambda x: x + torch.ones(4).to(x.device),  # a pageable host-to-device copy
    lambda x: torch.cuda.synchronize(),
])
def test_host_reads_fail_under_capture(host_read):
    with simulated_cuda():
        x = torch.randn(4, device="cuda")
        host_read(x)  # fine outside a capture
        with pytest.raises(DeviceError, match="stream is capturing"):
            with torch.cuda.graph(torch.cuda.CUDAGraph()):
                host_read(x)


def test_triton_runs_on_device_tensors_and_refuses_host_ones():
    ids = torch.arange(3)
    with simulated_cuda():
        before = COUNTS["triton launches"]
        z = noise.chain_randn(7, ids.to("cuda"), 5, (4,))  # CUDA tensors: the Triton kernel
        assert isinstance(z, SimCuda) and COUNTS["triton launches"] == before + 1
        torch.testing.assert_close(z.cpu(), noise.chain_randn(7, ids, 5, (4,), backend="torch"))
        with pytest.raises(DeviceError, match="Pointer argument"):
            noise.chain_randn_triton(7, ids, 5, (4,))  # host chain ids: what a GPU refuses


def test_a_captured_kernel_replays_on_new_inputs():
    x0, d0 = torch.randn(3, 5), torch.randn(3, 5)
    with simulated_cuda():
        x, d = x0.to("cuda"), d0.to("cuda")
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            out = langevin.langevin_step(x, d, 0.5, 0.01, 3, None, 7)
        x.copy_(2 * x0.to("cuda"))
        g.replay()
        got = out.cpu()
    want = langevin.langevin_step_reference(2 * x0, d0, 0.5, 0.01, 3, None, 7)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------ the GPU path
@pytest.mark.parametrize("sampler", sorted(all_samplers()))
def test_every_sampler_on_the_cuda_path_gives_the_cpu_samples(digits, sampler):
    kw = dict(num=3, nfe=12, progress=False, seed=4)
    kw.update(OPTIONS.get(sampler, {}))
    cpu = api.sample(digits, sampler, graph="off", **kw)
    with simulated_cuda():
        launches, replays = COUNTS["triton launches"], COUNTS["graph replays"]
        out = api.sample(digits, sampler, device="cuda", **kw)  # graph="auto": CUDA graphs on CUDA
        launched, replayed = COUNTS["triton launches"] - launches, COUNTS["graph replays"] - replays
    assert out.graph["mode"] == "graph" and out.graph["captured"] and out.graph["fallback_reason"] is None
    assert replayed > 0 and launched > 0  # the network ran as graph replays, the updates as Triton kernels
    assert type(out.samples) is torch.Tensor and out.samples.device.type == "cpu"
    torch.testing.assert_close(out.samples, cpu.samples, rtol=1e-4, atol=ATOL.get(sampler, 2e-4))
    if sampler in ATOL:  # a step accepted on one side and rejected on the other: a step more or less
        assert (out.nfe - cpu.nfe).abs().max() <= 6
    else:
        assert torch.equal(out.nfe, cpu.nfe)


@pytest.fixture(scope="module")
def unet_cpu_samples():
    return dmcmc_fast.Heun(load_model("unet-mnist"), nfe=5, graph="off").sample(2).samples


def test_doors_with_a_network_moved_to_cuda(unet_cpu_samples, tmp_path, capsys):
    net = load_model("unet-mnist")
    with simulated_cuda():
        net.to("cuda")
        assert all(isinstance(p, SimCuda) for p in net.parameters())
        heun = dmcmc_fast.Heun(net, nfe=5)
        first, again = heun.sample(2), heun.sample(2)  # the façade keeps its run and its graphs
        streamed = list(api.stream(net, "heun", num=3, nfe=5, batch_size=2, device="cuda"))
        dlg = api.sample(net, "dlg", num=2, nfe=12, classifier="trained", n_skip=2, device="cuda", progress=False)
        code = cli.main(["sample", "--model", "unet-mnist", "--sampler", "heun", "--nfe", "5", "--num", "2",
                         "--out", str(tmp_path / "run"), "--device", "cuda", "--no-progress"])
    for out in (first, again):
        assert out.graph["mode"] == "graph" and out.graph["captured"] == [2]
        torch.testing.assert_close(out.samples, unet_cpu_samples, rtol=1e-3, atol=1e-3)
    assert [b.samples.shape[0] for b in streamed] == [2, 1]
    assert dlg.samples.shape == (2, 1, 28, 28) and torch.isfinite(dlg.samples).all()
    assert dlg.graph["mode"] == "graph"
    assert code == 0
    rep = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rep["graph"]["mode"] == "graph"
    assert (tmp_path / "run" / "samples.npz").exists()


def test_a_cpu_only_extension_call_with_device_tensors_fails_clearly():
    """The C++ Philox draws are CPU functions: the dispatch must never hand them device tensors (on a GPU
    that would be an error or worse); the simulation makes the extension see what a GPU gives it."""
    from dmcmc_fast import _C

    with simulated_cuda():
        with pytest.raises(RuntimeError, match="CPU|cpu"):
            _C.philox_normal_at(1, torch.arange(3, device="cuda"), 0, 4, 0, 1.0)


def test_your_own_model_on_the_device():
    """A diffusers UNet through the bridge, moved by `.to("cuda")`: per-sample class labels, classifier-free
    guidance, your own start and grid (all given on the host) and a bf16 network, as on the CPU."""
    diffusers = pytest.importorskip("diffusers", reason="diffusers is a dev dependency")
    from test_own_model import tiny_unet

    def bridged(dtype=torch.float32, **guidance):
        return dmcmc_fast.from_diffusers(tiny_unet(classes=5, dtype=dtype),
                                         diffusers.DDPMScheduler(num_train_timesteps=100), **guidance)

    y = torch.tensor([0, 3, 1])
    runs = {  # name -> (model maker, api.sample keywords)
        "labels": (bridged, dict(model_kwargs={"class_labels": y})),
        "guided": (lambda: bridged(guidance_scale=2.0, uncond_kwargs={"class_labels": torch.tensor([4])}),
                   dict(model_kwargs={"class_labels": y})),
        "x_T and sigmas": (bridged, dict(model_kwargs={"class_labels": y}, x_T=torch.randn(3, 1, 8, 8),
                                         sigmas=torch.tensor([1.2, 0.4, 0.05]))),
        "bf16": (lambda: bridged(torch.bfloat16), dict(model_kwargs={"class_labels": y})),
    }
    for name, (make, kw) in runs.items():
        cpu = api.sample(make(), "heun", num=3, nfe=5, progress=False, **kw)
        with simulated_cuda():
            dev = api.sample(make().to("cuda"), "heun", num=3, nfe=5, progress=False, **kw)
        assert dev.graph["mode"] == "graph", (name, dev.graph)
        tol = 5e-2 if name == "bf16" else 1e-3  # bf16: one rounding step of the network's output apart
        torch.testing.assert_close(dev.samples, cpu.samples, rtol=tol, atol=tol, msg=name)


def test_the_k_diffusion_layer_on_the_device(digits):
    """`dmcmc_fast.k`, the drop-in for k-diffusion's samplers: device tensors in, the CPU's numbers out."""
    from dmcmc_fast import k

    x = 80 * torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    for name in ("sample_euler", "sample_heun", "sample_euler_ancestral", "sample_dpmpp_2m", "sample_dpmpp_2m_sde",
                 "sample_dpmpp_3m_sde", "sample_dpmpp_2s_ancestral", "sample_dpmpp_sde"):
        run = getattr(k, name)
        torch.manual_seed(0)  # the ancestral samplers draw from the global generator, as k-diffusion's do
        cpu = run(digits, x.clone(), k.get_sigmas_karras(8, 0.002, 80.0), disable=True)
        with simulated_cuda():
            torch.manual_seed(0)  # (the simulated device draws from the host generator: the same numbers)
            dev = run(digits, x.to("cuda"), k.get_sigmas_karras(8, 0.002, 80.0, device="cuda"), disable=True)
            assert isinstance(dev, SimCuda), name
            dev = dev.cpu()
        torch.testing.assert_close(dev, cpu, rtol=1e-4, atol=1e-4, msg=name)
    cpu = k.sample_dpm_adaptive(digits, x.clone(), 0.002, 80.0, disable=True)
    with simulated_cuda():
        dev = k.sample_dpm_adaptive(digits, x.to("cuda"), 0.002, 80.0, disable=True).cpu()
    torch.testing.assert_close(dev, cpu, rtol=1e-3, atol=1e-3)


# ------------------------------------------------------------------------------ no host sync on the CUDA branch
@pytest.mark.parametrize("case", sorted(sync_audit.CASES))
def test_no_host_sync_per_step_on_the_cuda_branch(case, digits):
    """tests/test_sync_audit.py's audit, on the branches a GPU takes (Triton launchers, device-side noise,
    graph replays of the network): zero host syncs per extra step."""
    with simulated_cuda():
        sync_audit.assert_no_sync_per_step(case, digits, device="cuda")
