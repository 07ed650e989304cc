"""The graph path on the doors users use (api.sample / stream, the façade, the CLI).

On CUDA the network runs through `GraphedDenoiser` (captured once per batch size); on the CPU the same
code runs with `graph="on"` as the static-buffer twin of replay (bucketing, padding, copies in and out),
so its samples can be compared with the plain eager path here. The CUDA comparison runs on a GPU.
"""
import json
import logging

import pytest
import torch

import dmcmc_fast
from dmcmc_fast import api, cli
from dmcmc_fast.engine.graph import GraphedDenoiser, graph_mode
from dmcmc_fast.models.builtin import load_model

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")
DLG = dict(n_levels=50, init_nfe=5, n_init=2, n_skip=2, n_den=5)


@pytest.fixture(scope="module")
def digits():
    return load_model("gmm-digits")


def test_graph_mode_per_device():
    assert graph_mode("auto", "cpu") == ("eager", None)
    assert graph_mode("off", "cuda") == ("eager", None)
    assert graph_mode("auto", "cuda") == ("graph", None)
    assert graph_mode("on", "cuda") == ("graph", None)
    assert graph_mode("network", "cuda") == ("graph", None)  # the network's graphs; whole batches left out by api
    assert graph_mode("network", "cpu") == ("eager", None)
    mode, reason = graph_mode("on", "cpu")
    assert mode == "static" and "CUDA graphs need a CUDA device" in reason
    with pytest.raises(ValueError, match="graph must be one of auto, on, network, off"):
        graph_mode("yes", "cpu")


@pytest.mark.parametrize("sampler,nfe,options", [
    ("heun", 9, {}),
    ("karras_sde", 9, {}),
    ("deis", 8, {}),
    ("obabo", 12, {}),
    ("rk45", 200, dict(rtol=1e-2, atol=1e-2)),  # shrinking subsets: padded to smaller buckets
    ("dpm_adaptive", 200, dict(rtol=1e-2, atol=1e-2)),  # likewise
    ("dlg", 60, dict(DLG, classifier="exact")),
    ("dlg", 60, dict(DLG, classifier="trained")),
])
def test_graph_path_gives_the_eager_samples(digits, sampler, nfe, options, caplog):
    eager = api.sample(digits, sampler, num=7, nfe=nfe, batch_size=5, progress=False, graph="off", **options)
    with caplog.at_level(logging.WARNING, logger="dmcmc_fast.engine"):
        graphed = api.sample(digits, sampler, num=7, nfe=nfe, batch_size=5, progress=False, graph="on", **options)
    torch.testing.assert_close(graphed.samples, eager.samples, rtol=1e-5, atol=1e-5)
    assert torch.equal(graphed.nfe, eager.nfe)
    assert eager.graph["mode"] == "eager"
    assert graphed.graph["mode"] == "static" and "CUDA graphs need a CUDA device" in graphed.graph["fallback_reason"]
    assert "CUDA graphs need a CUDA device" in caplog.text  # the reason is said, not silent


def test_auto_on_cpu_is_plain_eager(digits):
    out = api.sample(digits, "heun", num=3, nfe=5, progress=False)
    assert out.graph == {"mode": "eager", "captured": [], "fallback_reason": None}


def test_facade_and_cli_take_graph(digits, tmp_path, capsys):
    out = dmcmc_fast.Heun(digits, nfe=5, graph="on").sample(3)
    assert out.graph["mode"] == "static"
    with pytest.raises(ValueError, match="graph must be one of"):
        dmcmc_fast.Heun(digits, nfe=5, graph="maybe")
    with pytest.raises(ValueError, match="graph must be one of"):
        api.sample(digits, "heun", num=3, nfe=5, graph="maybe")
    assert cli.main(["sample", "--model", "gmm-digits", "--sampler", "heun", "--nfe", "5", "--num", "4",
                     "--out", str(tmp_path / "run"), "--graph", "on", "--no-progress", "--device", "cpu"]) == 0
    rep = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rep["graph"]["mode"] == "static"  # on the CPU (a GPU machine's default device is cuda: graphs)


def test_graphed_denoiser_of_a_module_finds_its_device():
    net = torch.nn.Conv2d(1, 1, 3, padding=1)
    model = lambda x, s: net(x)  # noqa: E731
    d = GraphedDenoiser(net, shape=(1, 4, 4), mode="static")  # a module: its parameters tell the device
    assert d.device.type == "cpu"
    x = torch.randn(3, 1, 4, 4)
    torch.testing.assert_close(GraphedDenoiser(model, shape=(1, 4, 4), mode="static", device="cpu")(x, torch.ones(3)),
                               net(x))


@cuda
@pytest.mark.gpu
@pytest.mark.parametrize("sampler,nfe,options", [("heun", 9, {}), ("dlg", 60, dict(DLG, classifier="exact")),
                                                 ("obabo", 12, {})])
def test_cuda_graph_path_equals_eager(sampler, nfe, options):
    model = load_model("unet-mnist").to("cuda") if sampler == "heun" else load_model("gmm-digits")
    eager = api.sample(model, sampler, num=6, nfe=nfe, batch_size=4, device="cuda", graph="off", progress=False,
                       **options)
    graphed = api.sample(model, sampler, num=6, nfe=nfe, batch_size=4, device="cuda", graph="auto", progress=False,
                         **options)
    assert graphed.graph["mode"] == "graph", graphed.graph  # captured, no fallback
    assert graphed.graph["captured"], graphed.graph
    torch.testing.assert_close(graphed.samples, eager.samples, rtol=1e-4, atol=1e-4)


def test_a_later_run_reuses_the_captured_denoiser_until_the_weights_move():
    from dmcmc_fast.engine.graph import graphed_for_sampling

    class Net(torch.nn.Module):
        shape = (1, 4, 4)

        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)

        def forward(self, x, sigma):
            return self.conv(x)

    net = Net()
    first, _ = graphed_for_sampling(net, "on", "cpu", 8)
    again, _ = graphed_for_sampling(net, "on", "cpu", 8)
    assert again is first  # same model, device, buckets, weights where they were: reused
    assert graphed_for_sampling(net, "on", "cpu", 4)[0] is not first  # other buckets
    net.conv.weight.data = net.conv.weight.data.clone()  # the weights move: a graph would read stale memory
    moved, _ = graphed_for_sampling(net, "on", "cpu", 8)
    assert moved is not first and graphed_for_sampling(net, "on", "cpu", 8)[0] is moved
    plain = lambda x, s: x  # noqa: E731
    assert graphed_for_sampling(plain, "off", "cpu", 8) == (plain, None)  # off: the model itself, no wrapper


def test_sampling_moves_nothing_behind_the_callers_back():
    from dmcmc_fast.models import VPAdapter
    from dmcmc_fast.models.base import model_device

    net = load_model("unet-mnist")  # an nn.Module, on the CPU
    assert model_device(net) == torch.device("cpu") and model_device(load_model("gmm-digits")) is None
    adapter = VPAdapter(torch.nn.Conv2d(1, 1, 1), torch.linspace(0.999, 0.01, 50), shape=(1, 4, 4))
    assert model_device(adapter) == torch.device("cpu")  # the network an adapter holds
    assert api.sampling_device(net, None) == torch.device("cpu")  # default: where the weights are
    with pytest.raises(ValueError, match=r"device='cuda', but the model's weights are on 'cpu'"):
        api.sample(net, "heun", num=2, nfe=3, device="cuda", progress=False)
    with pytest.raises(ValueError, match="model.to"):
        dmcmc_fast.Heun(net, nfe=3, device="cuda")
    if torch.cuda.is_available():  # an analytic model samples anywhere
        assert api.sampling_device(load_model("gmm-digits"), "cuda") == torch.device("cuda")
    else:  # ... that exists
        with pytest.raises(ValueError, match="no CUDA device is available"):
            api.sampling_device(load_model("gmm-digits"), "cuda")
