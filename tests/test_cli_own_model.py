"""Your own model on the command line (`--model`, `dmcmc_fast.models.resolve`): a folder saved by diffusers (a
pipeline, or a UNet with `--scheduler`), `module:callable` (a denoiser, an nn.Module declaring its
parametrisation, a pipeline), the errors that name what was expected, and DLG with a classifier trained by
`train classifier --model`. Tiny randomly initialised UNets, saved under tmp_path; nothing is downloaded."""
import json
import textwrap

import numpy as np
import pytest
import torch

import dmcmc_fast
from dmcmc_fast import api
from dmcmc_fast.cli import main
from dmcmc_fast.models.resolve import as_denoiser, resolve_model

diffusers = pytest.importorskip("diffusers", reason="diffusers is a dev dependency")


def tiny_pipeline():
    """The pipeline `mymodule:make_pipeline` builds (`MODULE` below): the saved one has the same weights."""
    namespace: dict = {}
    exec(textwrap.dedent(MODULE), namespace)
    return namespace["make_pipeline"]()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A pipeline folder, and its UNet and scheduler saved apart."""
    root = tmp_path_factory.mktemp("saved")
    pipe = tiny_pipeline()
    pipe.save_pretrained(root / "pipe")
    pipe.unet.save_pretrained(root / "unet")
    pipe.scheduler.save_pretrained(root / "sched")
    return root, pipe


def run_sample(out, model, *extra, sampler="heun", nfe="10"):
    return main(["sample", "--model", str(model), *extra, "--sampler", sampler, "--nfe", nfe, "--num", "4",
                 "--out", str(out), "--no-progress"])


def load(out):
    with np.load(out / "samples.npz") as z:
        return z["samples"], z["nfe"], json.loads(str(z["config"]))


def test_a_saved_pipeline_folder_samples_as_the_python_bridge_does(saved, tmp_path):
    root, pipe = saved
    assert run_sample(tmp_path / "a", root / "pipe") == 0
    x, nfe, cfg = load(tmp_path / "a")
    assert x.shape == (4, 1, 8, 8) and np.isfinite(x).all() and nfe.tolist() == [9] * 4  # heun: 5 levels, 2*5-1
    assert cfg["model"] == str(root / "pipe") and (tmp_path / "a" / "grid.png").exists()
    ref = api.sample(dmcmc_fast.from_diffusers(pipe), "heun", num=4, nfe=10, progress=False)
    np.testing.assert_allclose(x, ref.samples.clamp(-1, 1).numpy(), atol=1e-5, rtol=1e-5)
    # a UNet folder with --scheduler (a scheduler folder, or a pipeline folder) is the same model
    assert run_sample(tmp_path / "b", root / "unet", "--scheduler", str(root / "sched")) == 0
    assert run_sample(tmp_path / "c", root / "unet", "--scheduler", str(root / "pipe")) == 0
    np.testing.assert_array_equal(load(tmp_path / "b")[0], x)
    np.testing.assert_array_equal(load(tmp_path / "c")[0], x)


def test_folders_load_from_the_folder_only(saved, monkeypatch):
    """`from_pretrained(..., local_files_only=True)`: with the hub unreachable by configuration it still loads."""
    root, _ = saved
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    d = resolve_model(str(root / "pipe"))
    assert isinstance(d, dmcmc_fast.models.DiffusersUNetAdapter) and d.shape == (1, 8, 8)
    assert type(d.scheduler).__name__ == "DDPMScheduler" and d.sigma_max == pytest.approx(157.4, rel=1e-3)


MODULE = '''
import torch
from torch import nn


class Shrink(nn.Module):
    """D(x, sigma) = x / (1 + sigma^2): the exact denoiser of N(0, I) data, as a module with a parametrisation."""
    parametrisation, shape, sigma_min, sigma_max = "denoiser", (1, 4, 4), 0.01, 20.0

    def forward(self, x, sigma):
        return x / (1 + sigma.reshape(-1, 1, 1, 1) ** 2)


class Score(nn.Module):
    """The score of N(0, I) data, s = -x / (1 + sigma^2)."""
    parametrisation, shape, sigma_min, sigma_max = "score", (1, 4, 4), 0.01, 20.0

    def forward(self, x, sigma):
        return -x / (1 + sigma.reshape(-1, 1, 1, 1) ** 2)


def make_model():
    return Shrink()


def make_pipeline():
    torch.manual_seed(0)
    import diffusers
    unet = diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                                 block_out_channels=(8, 16), norm_num_groups=4,
                                 down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D")).eval()
    return diffusers.DDPMPipeline(unet=unet, scheduler=diffusers.DDPMScheduler(num_train_timesteps=1000))


def make_unet():
    return make_pipeline().unet


def make_nothing():
    return 42
'''


@pytest.fixture()
def mymodule(tmp_path, monkeypatch):
    (tmp_path / "mymodule.py").write_text(textwrap.dedent(MODULE))
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    import sys
    sys.modules.pop("mymodule", None)


def test_module_callable_gives_a_denoiser_a_module_or_a_pipeline(mymodule, saved):
    out = mymodule / "runs"
    assert run_sample(out / "d", "mymodule:make_model") == 0
    x, nfe, _ = load(out / "d")
    assert x.shape == (4, 1, 4, 4) and nfe.tolist() == [9] * 4
    # the ODE of N(0, I) data from sigma_max 20: samples of N(0, (1 + 0.01^2) I) at sigma_min, then Tweedie;
    # the same run through Python on the same module gives the same samples
    import mymodule as m
    ref = api.sample(m.Shrink(), "heun", num=4, nfe=10, progress=False).samples
    np.testing.assert_allclose(x, ref.clamp(-1, 1).numpy(), atol=1e-6)
    score = as_denoiser(m.Score())
    xs = torch.randn(3, 1, 4, 4)
    torch.testing.assert_close(score(xs, torch.full((3,), 2.0)), m.Shrink()(xs, torch.full((3,), 2.0)))
    assert run_sample(out / "e", "mymodule:Score") == 0  # a class is called with no arguments
    np.testing.assert_allclose(load(out / "e")[0], x, atol=1e-5)
    assert run_sample(out / "f", "mymodule:make_pipeline") == 0
    root, pipe = saved  # the same weights as the saved pipeline's
    ref = api.sample(dmcmc_fast.from_diffusers(pipe), "heun", num=4, nfe=10, progress=False).samples
    np.testing.assert_allclose(load(out / "f")[0], ref.clamp(-1, 1).numpy(), atol=1e-5)
    # a UNet from Python with the scheduler's folder
    assert run_sample(out / "g", "mymodule:make_unet", "--scheduler", str(root / "sched")) == 0
    np.testing.assert_allclose(load(out / "g")[0], load(out / "f")[0], atol=1e-6)
    assert run_sample(out / "h", str(mymodule / "mymodule.py") + ":make_model") == 0  # a path to the file


@pytest.mark.parametrize("model,extra,says", [
    ("no-such-model", [], "expected a built-in name (gmm-digits"),
    ("nosuchmodule:make", [], "no module named 'nosuchmodule'"),
    ("mymodule:missing", [], "has no attribute 'missing'"),
    ("mymodule:make_nothing", [], "gave a int; expected a denoiser D(x, sigma) with .shape"),
    ("mymodule:make_unet", [], "without its scheduler: pass --scheduler FOLDER"),
    ("UNET", [], "is a UNet folder; pass --scheduler FOLDER"),
    ("SCHED", [], "is a scheduler folder; pass it as --scheduler"),
    ("UNET", ["--scheduler", "UNET"], "expected a folder saved by a diffusers scheduler's save_pretrained"),
])
def test_errors_name_what_was_expected(mymodule, saved, capsys, model, extra, says):
    root, _ = saved
    fill = {"UNET": str(root / "unet"), "SCHED": str(root / "sched")}
    model, extra = fill.get(model, model), [fill.get(e, e) for e in extra]
    assert run_sample(mymodule / "err", model, *extra) == 2
    err = capsys.readouterr().err
    assert says in err and err.startswith("dmcmc-fast sample: error: "), err


def test_dlg_from_the_cli_with_a_classifier_trained_on_the_folder_model(saved, tmp_path, capsys):
    root, pipe = saved
    images = torch.randint(0, 256, (12, 1, 8, 8), dtype=torch.uint8)
    torch.save(images, tmp_path / "images.pt")
    clf = tmp_path / "clf.pt"
    capsys.readouterr()
    assert main(["train", "classifier", "--model", str(root / "pipe"), "--data", str(tmp_path / "images.pt"),
                 "--out", str(clf), "--steps", "2", "--batch-size", "8", "--n-levels", "30", "--no-progress"]) == 0
    out, err = capsys.readouterr()
    summary, card = json.loads(out), (tmp_path / "clf.md").read_text()
    # 2 steps miss the targets: a warning says so, and the summary's verdict is the card's
    assert summary["target"]["met"] is False and "warning: the classifier misses its card's targets" in err
    assert f"mean |error| {summary['target']['max_mean_abs']:.1f} levels" in card and "are not met" in card
    ck = torch.load(clf, weights_only=True)
    d = dmcmc_fast.from_diffusers(pipe)
    assert ck["shape"] == [1, 8, 8]  # the model's range is the classifier's levels
    assert ck["levels"]["sigma_min"] == pytest.approx(d.sigma_min) and ck["levels"]["sigma_max"] == pytest.approx(
        d.sigma_max)
    run = tmp_path / "dlg"
    args = ["sample", "--model", str(root / "pipe"), "--sampler", "dlg", "--classifier", str(clf), "--nfe", "2",
            "--num", "3", "--chains", "2", "--n-skip", "1", "--init-nfe", "2", "--n-init", "1", "--integrator", "euler",
            "--out", str(run), "--no-progress"]
    assert main(args) == 2  # DLG refuses a classifier that misses its card's targets, in one line, nothing written
    assert "misses its targets" in capsys.readouterr().err and not run.exists()
    assert main(args + ["--allow-weak-classifier", "1"]) == 0
    with np.load(run / "samples.npz") as z:
        assert z["samples"].shape == (3, 1, 8, 8) and np.isfinite(z["samples"]).all()
        assert z["chain"].tolist() == [0, 1, 0] and (z["classifier_evals"] > 0).all()


def test_api_sample_out_dir_writes_what_the_cli_writes(tmp_path):
    from dmcmc_fast.models.builtin import load_model

    digits = load_model("gmm-digits", modes=10)
    out = api.sample(digits, "heun", num=5, nfe=5, batch_size=2, out_dir=str(tmp_path / "py"), progress=False)
    assert main(["sample", "--model", "gmm-digits", "--modes", "10", "--sampler", "heun", "--nfe", "5", "--num", "5",
                 "--batch-size", "2", "--out", str(tmp_path / "cli"), "--no-progress"]) == 0
    for d in ("py", "cli"):
        assert (tmp_path / d / "grid.png").exists() and (tmp_path / d / "parts").is_dir()
    x, nfe, _ = load(tmp_path / "py")
    np.testing.assert_array_equal(x, out.samples.clamp(-1, 1).numpy())
    np.testing.assert_array_equal(x, load(tmp_path / "cli")[0])
    assert nfe.tolist() == out.nfe.tolist() == [5] * 5


def test_facade_stream_takes_a_batch_size():
    from dmcmc_fast.models.builtin import load_model

    heun = dmcmc_fast.Heun(load_model("gmm-digits", modes=10), nfe=5, batch_size=4)
    sizes = [(b.start, b.stop) for b in heun.stream(5, batch_size=2)]
    assert sizes == [(0, 2), (2, 4), (4, 5)]
    assert [(b.start, b.stop) for b in heun.stream(5)] == [(0, 4), (4, 5)]  # the object's own, unchanged
    joined = torch.cat([b.samples for b in heun.stream(5, batch_size=2)])
    # sample i is chain i, whatever the batch (up to the mixture's GEMM rounding, which depends on the row count)
    torch.testing.assert_close(joined, heun.sample(5).samples, rtol=0, atol=1e-4)


def test_eval_against_your_data_in_pixels_and_classifier_features(saved, tmp_path, capsys):
    """`eval --model FOLDER --data PATH --classifier FILE`: the pixel-space and classifier-feature Fréchet
    distances, each checked against the formula on the same arrays; samples of the data itself score ~0."""
    from dmcmc_fast.eval.frechet import frechet_distance, gaussian_stats
    from dmcmc_fast.mcmc.classifier import load_classifier

    root, _ = saved
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 1, 8, 8), dtype=torch.uint8, generator=gen)
    torch.save(images, tmp_path / "images.pt")
    clf = tmp_path / "clf.pt"
    assert main(["train", "classifier", "--model", str(root / "pipe"), "--data", str(tmp_path / "images.pt"),
                 "--out", str(clf), "--steps", "2", "--batch-size", "8", "--n-levels", "30", "--no-progress"]) == 0
    assert run_sample(tmp_path / "s", root / "pipe", sampler="euler", nfe="4") == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "s" / "samples.npz"), "--model", str(root / "pipe"), "--data",
                 str(tmp_path / "images.pt"), "--classifier", str(clf)]) == 0
    report = json.loads(capsys.readouterr().out)
    x = torch.from_numpy(load(tmp_path / "s")[0])
    data = images.float() / 127.5 - 1
    assert report["data"]["num"] == 40 and report["fd_pixels"] == pytest.approx(
        frechet_distance(*gaussian_stats(x), *gaussian_stats(data)), rel=1e-6)
    net = load_classifier(str(clf)).net
    with torch.no_grad():
        want = frechet_distance(*gaussian_stats(net.embed(x)), *gaussian_stats(net.embed(data)))
    assert report["fd_classifier_features"] == pytest.approx(want, rel=1e-4)
    # the data against themselves: 0 in both spaces
    np.savez(tmp_path / "self.npz", samples=data.numpy(), nfe=np.zeros(40, np.int64))
    assert main(["eval", str(tmp_path / "self.npz"), "--data", str(tmp_path / "images.pt"), "--classifier",
                 str(clf)]) == 0
    same = json.loads(capsys.readouterr().out)
    assert abs(same["fd_pixels"]) < 1e-6 and abs(same["fd_classifier_features"]) < 1e-6
    assert report["fd_pixels"] > 1.0  # an untrained UNet's samples are not the data
    assert main(["eval", str(tmp_path / "self.npz"), "--classifier", str(clf)]) == 2
    assert "pass --data PATH" in capsys.readouterr().err


def test_a_vp_module_declares_its_parametrisation_and_table(saved):
    """parametrisation "eps" | "x0" | "v": a VP network net(x_vp, t) on its alphas_cumprod (or the --scheduler's):
    D = x - sigma eps(x / sqrt(1 + sigma^2), t(sigma)), here with eps = x_vp / 2 (independent of t)."""
    from dmcmc_fast.models.adapters import VPAdapter
    from dmcmc_fast.models.resolve import load_scheduler

    class Half(torch.nn.Module):
        parametrisation, shape = "eps", (1, 2, 2)

        def forward(self, x_vp, t):
            return x_vp / 2

    root, _ = saved
    sched = load_scheduler(str(root / "sched"))
    with pytest.raises(ValueError, match="give it an alphas_cumprod attribute"):
        as_denoiser(Half())
    d = as_denoiser(Half(), sched)
    assert isinstance(d, VPAdapter) and d.prediction_type == "eps" and d.sigma_max == pytest.approx(157.4, rel=1e-3)
    x, sigma = torch.randn(3, 1, 2, 2), torch.tensor([0.5, 2.0, 30.0])
    s = sigma.reshape(-1, 1, 1, 1)
    torch.testing.assert_close(d(x, sigma), x - s * (x / torch.sqrt(1 + s * s)) / 2)
    own = Half()
    own.alphas_cumprod = sched.alphas_cumprod[:500]  # its own table wins over the scheduler's
    assert as_denoiser(own, sched).sigma_max < d.sigma_max
    with pytest.raises(ValueError, match="parametrisation must be one of denoiser, score, eps, x0, v"):
        bad = Half()
        bad.parametrisation = "epsilon"
        as_denoiser(bad)
