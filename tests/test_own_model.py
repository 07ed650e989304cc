"""Your own model through `api.sample` / `stream` / the façade: conditioning (`model_kwargs`), classifier-free
guidance, a network in bf16, the model's own noise range, callbacks, your own grid and start, the
diffusers bridge. Tiny randomly initialised diffusers UNets (nothing is downloaded) and an analytic
class-conditional Gaussian whose denoiser is exact.
"""
import math
import types

import pytest
import torch

import dmcmc_fast
from dmcmc_fast import api, rng
from dmcmc_fast.engine.audit import HostSyncAudit
from dmcmc_fast.engine.graph import GraphedDenoiser
from dmcmc_fast.models import kwargs as kw
from dmcmc_fast.models.adapters import Guided
from dmcmc_fast.models.base import InNetworkDtype, in_network_dtype
from dmcmc_fast.models.builtin import load_model
from dmcmc_fast.schedules import karras
from rowwise import rowwise_mixture

diffusers = pytest.importorskip("diffusers", reason="diffusers is a dev dependency")


class LabelGaussian:
    """Class y is N(mu_y, s^2 I): D(x, sigma, class_labels) = mu_y + s^2 / (s^2 + sigma^2) (x - mu_y), exact.
    `extra={"shift": [B, *shape]}` (a nested per-sample input) moves the mean; `scale` (a plain value) scales it."""

    shape, sigma_min, sigma_max, data_range = (2, 3), 0.002, 80.0, (-1.0, 1.0)

    def __init__(self, classes=4, s=0.3):
        self.mu = torch.randn(classes, *self.shape, generator=torch.Generator().manual_seed(0))
        self.s2 = s * s
        self.batches = []

    def __call__(self, x, sigma, class_labels, extra=None, scale=1.0):
        self.batches.append(x.shape[0])
        mu = self.mu[class_labels] * scale + (extra["shift"] if extra is not None else 0.0)
        w = (self.s2 / (self.s2 + sigma.double() ** 2)).to(x.dtype).reshape(-1, 1, 1)
        return mu + w * (x - mu)


def tiny_unet(classes=None, dtype=torch.float32):
    torch.manual_seed(0)
    return diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                                 block_out_channels=(8, 16), norm_num_groups=4, num_class_embeds=classes,
                                 down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D")).eval().to(dtype)


@pytest.fixture(scope="module")
def sched():
    return diffusers.DDPMScheduler(num_train_timesteps=100)


@pytest.fixture(scope="module")
def cond_unet(sched):
    return dmcmc_fast.from_diffusers(tiny_unet(classes=5), sched)


# ---- model_kwargs: sample i sees row i ----

def test_class_labels_reach_their_own_samples_for_any_batch_size(cond_unet):
    y = torch.tensor([0, 3, 1, 3, 2])
    runs = [api.sample(cond_unet, "heun", num=5, nfe=5, batch_size=b, progress=False, model_kwargs={"class_labels": y})
            for b in (1, 2, 5)]
    for other in runs[1:]:
        torch.testing.assert_close(other.samples, runs[0].samples, atol=1e-5, rtol=1e-5)
    for i in range(5):  # sample i is what a run that gives every sample the label y_i makes of chain i
        alone = api.sample(cond_unet, "heun", num=5, nfe=5, batch_size=5, progress=False,
                           model_kwargs={"class_labels": torch.full((5,), int(y[i]))})
        torch.testing.assert_close(runs[0].samples[i], alone.samples[i], atol=1e-5, rtol=1e-5)
        assert (alone.samples[(i + 1) % 5] - runs[0].samples[(i + 1) % 5]).abs().max() > 1e-2 or \
            y[(i + 1) % 5] == y[i]  # and the label matters
    assert runs[0].nfe.tolist() == [5] * 5


@pytest.mark.parametrize("sampler,nfe,options", [("dpm_adaptive", 300, dict(rtol=1e-3, atol=1e-3)),
                                                 ("rk45", 300, dict(rtol=1e-3, atol=1e-3)),
                                                 ("obabo", 12, {})])
def test_kwargs_follow_the_rows_an_integrator_evaluates(sampler, nfe, options):
    """The adaptive solvers call the model on their still-running rows (`idx`); the labels follow them."""
    model = LabelGaussian()
    y = torch.tensor([0, 1, 2, 3, 0, 2])
    shift = torch.randn(6, 2, 3) * 0.1
    mk = {"class_labels": y, "extra": {"shift": shift}, "scale": 1.5}
    both = api.sample(model, sampler, num=6, nfe=nfe, batch_size=6, progress=False, model_kwargs=mk, **options)
    single = api.sample(model, sampler, num=6, nfe=nfe, batch_size=1, progress=False, model_kwargs=mk, **options)
    torch.testing.assert_close(both.samples, single.samples, atol=1e-5, rtol=1e-5)
    assert torch.equal(both.nfe, single.nfe)
    if sampler != "obabo":  # a deterministic ODE solve ends at its own class's mode (the denoiser is exact)
        mean = model.mu[y] * 1.5 + shift
        assert ((both.samples - mean).abs().amax((1, 2)) < 1.5).all()


def test_kwargs_through_the_graph_path_and_its_buckets():
    model = LabelGaussian()
    mk = {"class_labels": torch.tensor([1, 0, 3, 2, 1, 0, 2]), "extra": {"shift": torch.randn(7, 2, 3)}}
    for sampler, nfe, opts in [("heun", 7, {}), ("dpm_adaptive", 200, dict(rtol=1e-2, atol=1e-2))]:
        eager = api.sample(model, sampler, num=7, nfe=nfe, batch_size=5, progress=False, graph="off",
                           model_kwargs=mk, **opts)
        static = api.sample(model, sampler, num=7, nfe=nfe, batch_size=5, progress=False, graph="on",
                            model_kwargs=mk, **opts)
        torch.testing.assert_close(static.samples, eager.samples, rtol=1e-5, atol=1e-5)
        assert static.graph["mode"] == "static"
    g = GraphedDenoiser(model, buckets=(4, 8), mode="static", device="cpu")
    x, s = torch.randn(3, 2, 3), torch.rand(3) + 0.1
    for scale in (1.0, 2.0):  # a plain value is part of the key: its own buffers
        args = dict(class_labels=torch.tensor([2, 1, 0]), scale=scale)
        torch.testing.assert_close(g(x, s, **args), model(x, s, **args))
    assert len(g._buckets) == 2 and {k[0] for k in g._buckets} == {4}
    big = dict(class_labels=torch.arange(11) % 4, extra={"shift": torch.randn(11, 2, 3)})  # chunks of 8
    x = torch.randn(11, 2, 3)
    torch.testing.assert_close(g(x, torch.ones(11), **big), model(x, torch.ones(11), **big))


def test_kwargs_add_no_host_read_per_step():
    model = LabelGaussian()
    mk = {"class_labels": torch.tensor([0, 1, 2]), "extra": {"shift": torch.zeros(3, 2, 3)}}
    for sampler, runs in [("heun", (5, 9)), ("obabo", (12, 24))]:
        counts = []
        for nfe in runs:
            with HostSyncAudit() as audit:
                api.sample(model, sampler, num=3, nfe=nfe, progress=False, model_kwargs=mk)
            counts.append(audit.counts())
        assert not counts[1] - counts[0], f"{sampler}: {counts[1] - counts[0]}"


def test_torchrun_ranks_and_resume_keep_the_rows(tmp_path):
    model = LabelGaussian()
    mk = {"class_labels": torch.tensor([3, 2, 1, 0, 3, 2, 1])}
    whole = api.sample(model, "karras_sde", num=7, nfe=7, batch_size=2, progress=False, model_kwargs=mk)
    ranks = [api.sample(model, "karras_sde", num=7, nfe=7, batch_size=2, progress=False, model_kwargs=mk,
                        rank=r, world_size=2) for r in (0, 1)]
    got = torch.zeros_like(whole.samples)
    got[[0, 1, 4, 5]], got[[2, 3, 6]] = ranks[0].samples, ranks[1].samples  # batches j % 2 == rank
    torch.testing.assert_close(got, whole.samples)
    out = tmp_path / "run"
    first = api.sample(model, "heun", num=4, nfe=5, batch_size=2, progress=False, out_dir=str(out),
                       model_kwargs={"class_labels": mk["class_labels"][:4]})
    again = api.sample(model, "heun", num=4, nfe=5, batch_size=2, progress=False, out_dir=str(out), resume=True,
                       model_kwargs={"class_labels": mk["class_labels"][:4]})
    torch.testing.assert_close(again.samples, first.samples)
    with pytest.raises(ValueError, match=r"inputs\.model_kwargs"):
        api.sample(model, "heun", num=4, nfe=5, batch_size=2, progress=False, out_dir=str(out), resume=True,
                   model_kwargs={"class_labels": torch.zeros(4, dtype=torch.int64)})


def test_bad_inputs_are_named_before_any_work():
    model = LabelGaussian()
    with pytest.raises(ValueError, match=r"model_kwargs\['class_labels'\] must have a leading dimension of num=4"):
        api.sample(model, "heun", num=4, nfe=5, model_kwargs={"class_labels": torch.zeros(3, dtype=torch.int64)})
    with pytest.raises(ValueError, match=r"model_kwargs\['extra.shift'\]"):
        api.sample(model, "heun", num=4, nfe=5, model_kwargs={"class_labels": torch.zeros(4, dtype=torch.int64),
                                                             "extra": {"shift": torch.zeros(2, 2, 3)}})
    digits = load_model("gmm-digits", modes=10)
    for name, value in [("callback", print), ("x_T", torch.zeros(2, 1, 8, 8)),  # DLG's model_kwargs (per chain):
                        ("sigmas", torch.tensor([1.0, 0.1]))]:                # tests/test_own_classifier.py
        with pytest.raises(ValueError, match=rf"^{name} is not supported for dlg yet$"):
            api.stream(digits, "dlg", num=2, nfe=40, **{name: value})
    with pytest.raises(ValueError, match="obabo does not take x_T; the samplers that do: .*heun"):
        api.sample(digits, "obabo", num=2, nfe=12, x_T=torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match="rk45 does not take sigmas"):
        api.sample(digits, "rk45", num=2, nfe=100, sigmas=torch.tensor([1.0, 0.1]))
    with pytest.raises(ValueError, match=r"x_T must be a floating tensor of shape \[2, 1, 8, 8\]"):
        api.sample(digits, "heun", num=2, nfe=5, x_T=torch.zeros(3, 1, 8, 8))


# ---- classifier-free guidance ----

def test_classifier_free_guidance_is_one_doubled_call_per_nfe(sched):
    unet = tiny_unet(classes=5)  # class 4: the null class
    plain = dmcmc_fast.from_diffusers(unet, sched)
    null = {"class_labels": torch.tensor([4])}
    guided = dmcmc_fast.from_diffusers(unet, sched, guidance_scale=3.0, uncond_kwargs=null)
    x, sigma, y = torch.randn(3, 1, 8, 8), torch.tensor([0.5, 1.0, 0.05]), torch.tensor([0, 2, 1])
    with torch.no_grad():
        d_c, d_u = plain(x, sigma, class_labels=y), plain(x, sigma, class_labels=torch.full((3,), 4))
        torch.testing.assert_close(guided(x, sigma, class_labels=y), d_u + 3.0 * (d_c - d_u), atol=1e-5, rtol=1e-5)
    seen = []
    hook = unet.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[0]))
    try:
        out = api.sample(guided, "euler", num=3, nfe=4, progress=False, model_kwargs={"class_labels": y})
    finally:
        hook.remove()
    assert out.nfe.tolist() == [4, 4, 4] and seen == [6] * 4  # NFE per denoiser call; 2 rows of the UNet per NFE
    model = LabelGaussian()  # the same option around any denoiser that takes kwargs (EDM-style class_labels)
    g = Guided(model, 2.0, {"class_labels": torch.tensor(0)})
    want = model(x[:, 0, :2, :3], sigma, torch.zeros(3, dtype=torch.int64))
    want = want + 2.0 * (model(x[:, 0, :2, :3], sigma, y) - want)
    torch.testing.assert_close(g(x[:, 0, :2, :3], sigma, class_labels=y), want)
    assert g.shape == model.shape and g.sigma_max == model.sigma_max
    with pytest.raises(ValueError, match="guidance_scale needs uncond_kwargs"):
        dmcmc_fast.from_diffusers(unet, sched, guidance_scale=2.0)


# ---- precision ----

def test_a_bf16_network_samples_from_a_float32_state(sched):
    fp32 = load_model("unet-mnist")
    bf16 = load_model("unet-mnist").to(torch.bfloat16)
    a = api.sample(fp32, "heun", num=2, nfe=5, progress=False)
    b = api.sample(bf16, "heun", num=2, nfe=5, progress=False)
    assert b.samples.dtype == torch.float32 and torch.isfinite(b.samples).all()
    assert (a.samples - b.samples).abs().mean() < 0.15  # bf16 rounding, not another model
    y = torch.tensor([1, 0, 2])
    half = api.sample(dmcmc_fast.from_diffusers(tiny_unet(5, torch.bfloat16), sched), "dpmpp_2m", num=3, nfe=4,
                      progress=False, model_kwargs={"class_labels": y})
    full = api.sample(dmcmc_fast.from_diffusers(tiny_unet(5), sched), "dpmpp_2m", num=3, nfe=4, progress=False,
                      model_kwargs={"class_labels": y})
    assert half.samples.dtype == torch.float32 and (half.samples - full.samples).abs().max() < 0.1


def test_a_plain_half_precision_module_is_called_in_its_dtype():
    class Net(torch.nn.Module):  # a user's denoiser, no dtype handling of its own
        shape, sigma_min, sigma_max, data_range = (4,), 0.002, 80.0, (-1.0, 1.0)

        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 4)
            self.seen = set()

        def forward(self, x, sigma, bias=None):
            self.seen.add((x.dtype, sigma.dtype) + ((bias.dtype,) if bias is not None else ()))
            return self.lin(x) + (bias if bias is not None else 0)

    net = Net().to(torch.bfloat16)
    wrapped = in_network_dtype(net)
    assert isinstance(wrapped, InNetworkDtype) and in_network_dtype(load_model("unet-mnist")).__class__.__name__ \
        == "EDMDenoiser" and in_network_dtype(wrapped) is wrapped
    out = api.sample(net, "euler", num=3, nfe=3, progress=False, model_kwargs={"bias": torch.zeros(3, 4)})
    assert out.samples.dtype == torch.float32 and net.seen == {(torch.bfloat16,) * 3}


# ---- the model's own noise range ----

def test_the_models_noise_range_is_the_default_and_a_networks_bound(cond_unet):
    y = {"class_labels": torch.tensor([0, 1])}
    out = api.sample(cond_unet, "heun", num=2, nfe=3, progress=False, model_kwargs=y)
    own = cond_unet.own_sigmas(2)  # the default grid is the scheduler's own (dmcmc_fast.own_grid)
    assert out.config["options"]["sigma_max"] == pytest.approx(float(own[0]))
    assert out.config["options"]["sigma_min"] == pytest.approx(float(own[1]))
    out = api.sample(cond_unet, "heun", num=2, nfe=3, progress=False, model_kwargs=y, rho=7.0)  # Karras asked for
    assert out.config["options"]["sigma_min"] == pytest.approx(cond_unet.sigma_min)
    assert out.config["options"]["sigma_max"] == pytest.approx(cond_unet.sigma_max)
    with pytest.raises(ValueError, match=r"heun: sigma_max=80 \(given\) is above the model's noise range "
                                         r"\[0\.01.*, 1\.32.*\]"):
        api.sample(cond_unet, "heun", num=2, nfe=3, sigma_max=80.0, model_kwargs=y)
    with pytest.raises(ValueError, match=r"sigma_min=0.001 \(given\) is below the model's noise range"):
        dmcmc_fast.Heun(cond_unet, nfe=3, sigma_min=0.001)
    with pytest.raises(ValueError, match=r"^heun: sigma_min must be < sigma_max, got sigma_min=10.0, sigma_max=1.0$"):
        api.sample(cond_unet, "heun", num=2, nfe=3, sigma_min=10.0, sigma_max=1.0)
    with pytest.raises(ValueError, match=r"sigma_min must be < sigma_max, got sigma_min=5.0, sigma_max=1.32.* "
                                         r"\(sigma_min: given, sigma_max: the model's sigma_max\)"):
        api.sample(cond_unet, "heun", num=2, nfe=3, sigma_min=5.0)
    sub = api.sample(cond_unet, "heun", num=2, nfe=3, progress=False, sigma_max=1.0, model_kwargs=y)
    assert sub.config["options"]["sigma_max"] == 1.0  # inside the range: fine
    digits = load_model("gmm-digits", modes=10)  # analytic: exact at every sigma, its range a default only
    assert api.sample(digits, "heun", num=2, nfe=3, progress=False, sigma_max=200.0).config["options"]["sigma_max"] \
        == 200.0


# ---- callback, own grid, own start, progress ----

def test_callback_is_called_per_step_with_the_sample_ids():
    digits = load_model("gmm-digits", modes=10)
    seen = []
    api.sample(digits, "heun", num=5, nfe=9, batch_size=2, progress=False,
               callback=lambda info: seen.append((info["i"], info["ids"].tolist(), tuple(info["x"].shape))))
    assert [s[0] for s in seen] == [0, 1, 2, 3, 4] * 3  # 5 Heun steps per batch
    assert [s[1] for s in seen[::5]] == [[0, 1], [2, 3], [4]] and seen[-1][2] == (1, 1, 8, 8)
    mcmc = []
    dmcmc_fast.OBABO(digits, nfe=12, batch_size=3).sample(3, callback=lambda info: mcmc.append(info["ids"].tolist()))
    assert mcmc and all(ids == [0, 1, 2] for ids in mcmc)


@pytest.mark.parametrize("sampler", ["heun", "deis", "dpmpp_2m_sde", "unipc", "euler_maruyama"])
def test_your_own_grid_one_for_all_or_one_per_sample(sampler):
    digits = load_model("gmm-digits", modes=10)
    nfe = 9
    n = {"heun": 5}.get(sampler, 9)
    grid = karras(n, 0.002, 80.0, append_zero_=False)
    default = api.sample(digits, sampler, num=3, nfe=nfe, progress=False)
    if sampler != "euler_maruyama":  # the Karras grid given = the grid built
        own = api.sample(digits, sampler, num=3, nfe=nfe, progress=False, sigmas=torch.cat([grid, torch.zeros(1)]))
        torch.testing.assert_close(own.samples, default.samples, atol=1e-5, rtol=1e-5)
    rows = torch.stack([karras(n, 0.002, s, append_zero_=False) for s in (80.0, 10.0, 1.0)])
    per = api.sample(digits, sampler, num=3, nfe=nfe, batch_size=2, progress=False, sigmas=rows)
    for i in range(3):  # row i of the [num, N] grid is sample i's grid
        alone = api.sample(digits, sampler, num=3, nfe=nfe, progress=False, sigmas=rows[i])
        torch.testing.assert_close(per.samples[i], alone.samples[i], atol=1e-5, rtol=1e-5)
    assert per.config["options"]["sigma_max"] == 80.0 and "sigmas" in per.config["inputs"]


def test_grid_errors():
    digits = load_model("gmm-digits", modes=10)
    with pytest.raises(ValueError, match=r"heun: sigmas has 6 noise levels, which cost more than nfe=9; at most 5"):
        api.sample(digits, "heun", num=2, nfe=9, sigmas=karras(6, 0.002, 80.0, append_zero_=False))
    with pytest.raises(ValueError, match="strictly decreasing"):
        api.sample(digits, "heun", num=2, nfe=9, sigmas=torch.tensor([1.0, 2.0, 0.1]))
    with pytest.raises(ValueError, match=r"one per sample \[num=2, N\]"):
        api.sample(digits, "heun", num=2, nfe=9, sigmas=torch.ones(3, 4))
    with pytest.raises(ValueError, match="sigmas sets the noise levels; do not also pass rho, sigma_max"):
        api.sample(digits, "heun", num=2, nfe=9, sigmas=torch.tensor([1.0, 0.1]), sigma_max=1.0, rho=3.0)


def test_your_own_start():
    digits = load_model("gmm-digits", modes=10)
    z = rng.chain_randn(0, torch.arange(4), 0, (1, 8, 8), stream=rng.STREAM_INIT)
    default = api.sample(digits, "karras_sde", num=4, nfe=7, progress=False)
    own = api.sample(digits, "karras_sde", num=4, nfe=7, progress=False, x_T=80.0 * z)
    torch.testing.assert_close(own.samples, default.samples, atol=1e-5, rtol=1e-5)
    other = 80.0 * torch.randn(4, 1, 8, 8)
    one_row = rowwise_mixture(digits)  # sample i gets row i of x_T in any batch: bit for bit on any CPU
    a = api.sample(one_row, "dpm_adaptive", num=4, nfe=300, batch_size=3, progress=False, x_T=other)
    b = api.sample(one_row, "dpm_adaptive", num=4, nfe=300, batch_size=1, progress=False, x_T=other)
    assert torch.equal(a.samples, b.samples)
    assert (a.samples - default.samples).abs().max() > 0.1


def test_progress_moves_with_every_model_call(monkeypatch):
    bars = []

    class Bar:
        def __init__(self, total, **kw):
            self.total, self.n, self.updates, self.unit = total, 0, [], kw.get("unit")
            bars.append(self)

        def update(self, k):
            self.n += k
            self.updates.append(k)

        def set_postfix(self, **kw):
            pass

        def close(self):
            pass

    monkeypatch.setattr(api, "tqdm", Bar)
    api.sample(load_model("gmm-digits", modes=10), "heun", num=5, nfe=8, batch_size=3, progress=True)
    (bar,) = bars
    assert bar.unit == "NFE" and bar.total == 40 and bar.n == 40
    assert bar.updates[:7] == [3] * 7 and bar.updates[7] == 3  # 7 calls of 3 rows, then the unspent budget


# ---- the diffusers bridge ----

def test_from_diffusers_pipeline_to_images(sched):
    pipe = diffusers.DDPMPipeline(unet=tiny_unet(), scheduler=sched)
    d = dmcmc_fast.from_diffusers(pipe)
    assert d.shape == (1, 8, 8) and d.sigma_max == pytest.approx(math.sqrt(1 / sched.alphas_cumprod[-1].item() - 1))
    out = dmcmc_fast.DPMSolverPP2M(d, nfe=4).sample(3)
    pt = dmcmc_fast.to_images(out.samples, pipe)
    assert pt.shape == (3, 1, 8, 8) and 0 <= pt.min() and pt.max() <= 1
    torch.testing.assert_close(pt, ((out.samples + 1) / 2).clamp(0, 1))
    assert dmcmc_fast.to_images(out.samples, output_type="np").shape == (3, 8, 8, 1)
    assert dmcmc_fast.to_images(out.samples, output_type="pil")[0].size == (8, 8)

    class Vae(torch.nn.Module):  # a latent pipeline's decoder: 4 latent channels -> 3 image channels
        config = types.SimpleNamespace(scaling_factor=0.5)

        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(4, 3, 1)

        def decode(self, z):
            return types.SimpleNamespace(sample=torch.tanh(self.conv(z)))

    vae, z = Vae(), torch.randn(2, 4, 8, 8)
    latent_pipe = types.SimpleNamespace(vae=vae)
    torch.testing.assert_close(dmcmc_fast.to_images(z, latent_pipe), (torch.tanh(vae.conv(z / 0.5)) + 1) / 2)
    with pytest.raises(ValueError, match="needs scheduler="):
        dmcmc_fast.from_diffusers(tiny_unet())


def test_a_text_conditional_unet_takes_encoder_hidden_states(sched):
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        norm_num_groups=4, cross_attention_dim=8, attention_head_dim=2,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")).eval()
    d = dmcmc_fast.from_diffusers(unet, sched)
    emb = torch.randn(4, 3, 8)
    a = dmcmc_fast.Euler(d, nfe=3, batch_size=4).sample(4, model_kwargs={"encoder_hidden_states": emb})
    b = dmcmc_fast.Euler(d, nfe=3, batch_size=3).sample(4, model_kwargs={"encoder_hidden_states": emb})
    torch.testing.assert_close(a.samples, b.samples, atol=1e-5, rtol=1e-5)
    swapped = dmcmc_fast.Euler(d, nfe=3).sample(4, model_kwargs={"encoder_hidden_states": emb.flip(0)})
    assert (swapped.samples - a.samples).abs().max() > 1e-3  # the embedding reaches the network


def test_kwargs_helpers():
    tree = {"a": torch.arange(6), "b": {"c": torch.ones(6, 2)}, "d": 3, "e": [torch.zeros(6)]}
    part = kw.rows(tree, 2, 5)
    assert part["a"].tolist() == [2, 3, 4] and part["b"]["c"].shape == (3, 2) and part["d"] == 3
    assert kw.take(tree, torch.tensor([5, 0]))["a"].tolist() == [5, 0]
    both = kw.concat({"y": torch.tensor([1, 2]), "t": torch.ones(2, 3)}, {"y": torch.tensor(9)}, 2)
    assert both["y"].tolist() == [1, 2, 9, 9] and both["t"].shape == (4, 3)
    with pytest.raises(ValueError, match="lacks"):
        kw.concat({"y": torch.tensor([1])}, {"z": torch.tensor([1])}, 1)
