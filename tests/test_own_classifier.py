"""DLG on your own model: `dmcmc-fast train classifier --data PATH` from a `.pt` tensor, a folder of PNGs and
an `.npz`, the Python `train_classifier`, the checkpoint's levels and card, the checks of a classifier
against the model at load time (shape, data range, levels) and their messages, and DLG with per-chain
`model_kwargs` on a conditional analytic model. Tiny budgets: the point is the plumbing, not accuracy."""
import os

import numpy as np
import pytest
import torch

from dmcmc_fast import api
from dmcmc_fast.cli import main
from dmcmc_fast.mcmc.classifier import (TRAIN_COMMAND, NoiseLevelNet, level_sigmas, levels_from_spec,
                                        load_classifier, save_classifier)
from dmcmc_fast.mcmc.entry import make_classifier
from dmcmc_fast.models.builtin import load_model
from dmcmc_fast.models.gaussian_mixture import GaussianMixture
from dmcmc_fast.training.classifier import load_data, train_classifier

TINY = ["--steps", "3", "--batch-size", "8", "--n-levels", "50", "--no-progress"]
DLG_TINY = dict(n_skip=1, init_nfe=2, n_init=1, integrator="euler")


@pytest.fixture(scope="module")
def unet():
    return load_model("unet-mnist")


def _fake_classifier(path, shape, sigma_min=0.002, sigma_max=80.0, data_range=(-1.0, 1.0), n_levels=20):
    net = NoiseLevelNet(shape, n_levels)
    save_classifier(str(path), net, {"n_levels": n_levels, "sigma_min": sigma_min, "sigma_max": sigma_max}, "card",
                    data_range=data_range)
    return str(path)


# ---- train from your data, then DLG from the CLI ----

def test_train_from_a_pt_tensor_then_dlg_on_unet_mnist(tmp_path):
    images = torch.randint(0, 256, (12, 1, 28, 28), dtype=torch.uint8)
    torch.save(images, tmp_path / "images.pt")
    out = tmp_path / "clf.pt"
    assert main(["train", "classifier", "--data", str(tmp_path / "images.pt"), "--out", str(out), *TINY]) == 0
    ck = torch.load(out, weights_only=True)
    assert ck["shape"] == [1, 28, 28] and ck["data_range"] == [-1.0, 1.0]
    lv = ck["levels"]
    assert lv["n_levels"] == 50 and lv["spacing"] == "geometric" and len(lv["sigmas"]) == 50
    torch.testing.assert_close(levels_from_spec(lv), level_sigmas(50, 0.002, 80.0))
    clf = load_classifier(str(out))
    assert clf.shape == (1, 28, 28) and clf.meta["steps"] == 3 and clf.meta["n_test"] == 1
    err = clf.meta["level_error"]
    assert {"median_abs", "mean_abs", "bias", "bands", "within"} <= set(err) and len(err["bands"]) == 5
    card = (tmp_path / "clf.md").read_text()
    assert card == clf.card and "uint8 pixels 0..255 mapped to [-1, 1]" in card
    assert "| true sigma | n | median abs error | mean abs error | bias |" in card and "| [10, 80] |" in card
    assert "dmcmc-fast train classifier --data" in card

    run = tmp_path / "run"  # a 3-step classifier misses its targets (its card says): run it anyway
    assert main(["sample", "--model", "unet-mnist", "--sampler", "dlg", "--classifier", str(out), "--nfe", "2",
                 "--allow-weak-classifier", "1",
                 "--num", "3", "--chains", "2", "--n-skip", "1", "--init-nfe", "2", "--n-init", "1",
                 "--integrator", "euler", "--out", str(run), "--no-progress"]) == 0
    with np.load(run / "samples.npz") as z:
        assert z["samples"].shape == (3, 1, 28, 28) and np.isfinite(z["samples"]).all()
        assert z["chain"].tolist() == [0, 1, 0] and (z["classifier_evals"] > 0).all()


def _png(path, array, mode):
    from PIL import Image

    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)


def test_train_from_a_folder_of_pngs(tmp_path):
    pytest.importorskip("PIL")
    rng = np.random.default_rng(0)
    for i in range(5):  # subfolders are read too
        _png(str(tmp_path / "imgs" / f"class{i % 2}" / f"{i}.png"), rng.integers(0, 256, (8, 8), dtype=np.uint8), "L")
    _png(str(tmp_path / "imgs" / "black.png"), np.zeros((8, 8), np.uint8), "L")
    x, desc = load_data(str(tmp_path / "imgs"))
    assert x.shape == (6, 1, 8, 8) and "6 images, grayscale" in desc
    assert float(x[0].min()) == -1.0 and float(x[0].max()) == -1.0  # black.png first (path order): 0 -> -1
    out = tmp_path / "clf.pt"
    assert main(["train", "classifier", "--data", str(tmp_path / "imgs"), "--out", str(out), *TINY]) == 0
    clf = make_classifier(load_model("gmm-digits", modes=10), str(out), 1000, 0.02, 100.0, "cpu", allow_weak=True)
    assert clf.shape == (1, 8, 8) and clf.levels.shape == (50,)
    assert clf(torch.randn(3, 1, 8, 8)).shape == (3, 50)


def test_folder_channels_sizes_and_array_files(tmp_path):
    pytest.importorskip("PIL")
    _png(str(tmp_path / "rgb" / "a.png"), np.full((4, 6, 3), 255, np.uint8), "RGB")
    _png(str(tmp_path / "rgb" / "b.png"), np.zeros((4, 6), np.uint8), "L")
    x, desc = load_data(str(tmp_path / "rgb"), data_range=(0.0, 1.0))
    assert x.shape == (2, 3, 4, 6) and "RGB" in desc and float(x[0].min()) == 1.0 and float(x[1].max()) == 0.0
    _png(str(tmp_path / "mixed" / "a.png"), np.zeros((4, 4), np.uint8), "L")
    _png(str(tmp_path / "mixed" / "b.png"), np.zeros((5, 4), np.uint8), "L")
    with pytest.raises(ValueError, match=r"differ in size .*--size H,W"):
        load_data(str(tmp_path / "mixed"))
    assert load_data(str(tmp_path / "mixed"), size=(3, 3))[0].shape == (2, 1, 3, 3)
    os.makedirs(tmp_path / "empty")
    with pytest.raises(ValueError, match="no images"):
        load_data(str(tmp_path / "empty"))

    np.savez(tmp_path / "d.npz", labels=np.arange(3), images=np.random.default_rng(0).uniform(-1, 1, (3, 5, 5, 1)))
    with pytest.raises(ValueError, match=r"must be images \[N, C, H, W\]"):
        load_data(str(tmp_path / "d.npz"))  # the first array (labels) is not images
    x, desc = load_data(str(tmp_path / "d.npz"), key="images")
    assert x.shape == (3, 1, 5, 5) and "channels-last" in desc and "taken as they are" in desc
    torch.save({"x": torch.full((2, 1, 4, 4), 3.0)}, tmp_path / "far.pt")
    with pytest.raises(ValueError, match=r"span \[3, 3\], outside the data range \[-1, 1\]"):
        load_data(str(tmp_path / "far.pt"))
    with pytest.warns(UserWarning, match=r"every value is >= 0"):  # images in [0, 1] for a [-1, 1] model?
        train_classifier(torch.rand(4, 1, 4, 4), levels=10, steps=1, batch_size=2, progress=False)
    with pytest.raises(FileNotFoundError, match=r"not a built-in data set \(digits, faces, mnist\)"):
        load_data(str(tmp_path / "nothing_here"))
    assert main(["train", "classifier", "--data", str(tmp_path / "d.npz"), "--out", str(tmp_path / "c.pt"),
                 "--steps", "0"]) == 2


def test_train_classifier_api_with_given_levels_round_trips(tmp_path):
    levels = torch.tensor([40.0, 5.0, 1.0, 0.3, 0.05])  # not geometric: stored as given
    clf = train_classifier(torch.rand(6, 1, 4, 4) * 2 - 1, levels=levels, steps=2, batch_size=4, progress=False)
    assert clf.levels_spec()["spacing"] == "given" and "a tensor given to train_classifier" in clf.card
    assert clf.meta["level_error"]["n"] == 2048
    clf.save(str(tmp_path / "c.pt"))
    back = load_classifier(str(tmp_path / "c.pt"))
    torch.testing.assert_close(back.levels, levels)
    x = torch.randn(3, 1, 4, 4)
    torch.testing.assert_close(back(x), clf(x), rtol=1e-2, atol=1e-2)  # float16 weights
    model = GaussianMixture(torch.zeros(1, 1, 4, 4), std=0.1, sigma_min=0.01, sigma_max=10.0)
    c2 = train_classifier(torch.rand(6, 1, 4, 4) * 2 - 1, levels=8, model=model, steps=1, batch_size=2,
                          progress=False)
    assert float(c2.levels[0]) == pytest.approx(10.0) and float(c2.levels[-1]) == pytest.approx(0.01)


# ---- the classifier checked against the model at load time ----

def test_shape_data_range_and_levels_are_checked_against_the_model(tmp_path, unet):
    small = _fake_classifier(tmp_path / "small.pt", (1, 8, 8))
    with pytest.raises(ValueError, match=r"shape \(1, 8, 8\), but the model's shape is \(1, 28, 28\); train one on "
                                         r"your model's data with: dmcmc-fast train classifier --data PATH --out FILE"):
        make_classifier(unet, small, 1000, 0.02, 100.0, "cpu")
    wide = _fake_classifier(tmp_path / "wide.pt", (1, 28, 28), sigma_max=200.0)
    with pytest.raises(ValueError, match=r"levels in \[0.002, 200\], outside the model's noise range \[0.002, 80\].*"
                                         r"--sigma-min 0.002 --sigma-max 80"):
        load_classifier(wide, model=unet)
    with pytest.raises(ValueError, match="levels in"):  # through the sampling API, before any work
        api.stream(unet, "dlg", num=2, nfe=3, classifier=wide, **DLG_TINY)
    other_range = _fake_classifier(tmp_path / "r.pt", (1, 28, 28), data_range=(0.0, 1.0))
    with pytest.raises(ValueError, match=r"data in \[0.0, 1.0\], but the model's data_range is \[-1.0, 1.0\].*"
                                         r"--data-range=-1,1"):
        load_classifier(other_range, model=unet)
    assert load_classifier(_fake_classifier(tmp_path / "ok.pt", (1, 28, 28)), model=unet).shape == (1, 28, 28)

    gmm = load_model("gmm-digits", modes=10)  # analytic: exact at every sigma, so levels outside are a warning
    with pytest.warns(UserWarning, match=r"outside the model's noise range.*analytic"):
        load_classifier(_fake_classifier(tmp_path / "g.pt", (1, 8, 8), sigma_min=0.001), model=gmm)

    class NoRange:
        shape = (1, 8, 8)

    with pytest.warns(UserWarning, match="declares no sigma_min/sigma_max"):
        load_classifier(small, model=NoRange())


def test_exact_and_trained_errors_point_at_the_train_command(unet):
    with pytest.raises(ValueError, match="classifier 'exact' needs an analytic mixture") as e:
        api.stream(unet, "dlg", num=2, nfe=3, classifier="exact", **DLG_TINY)
    assert TRAIN_COMMAND in str(e.value) and "--classifier trained" not in str(e.value)
    faces = load_model("gmm-faces")
    with pytest.raises(ValueError, match=r"no committed noise-level classifier for data shape \(1, 25, 25\)") as e:
        api.stream(faces, "dlg", num=2, nfe=3, classifier="trained", **DLG_TINY)
    assert TRAIN_COMMAND in str(e.value) and "exact" not in str(e.value)
    with pytest.raises(ValueError, match=rf"no classifier checkpoint .*{TRAIN_COMMAND}"):
        api.stream(faces, "dlg", num=2, nfe=3, classifier="no/such/file.pt", **DLG_TINY)


# ---- DLG with per-chain model_kwargs ----

class LabelledModes(GaussianMixture):
    """Two modes at -0.8 and +0.8 (std 0.05); `label` y restricts the data to mode y, so D(x, sigma, label) is
    the exact denoiser of N(mu_y, s^2 I). As a mixture it is unconditional: the exact level classifier sees x."""

    def __init__(self):
        super().__init__(torch.tensor([-0.8, 0.8]).reshape(2, 1, 1, 1).expand(2, 1, 2, 2), std=0.05)

    def __call__(self, x, sigma, label):
        mu = self.means.to(x.device, x.dtype)[label].reshape(x.shape)
        w = (self.std ** 2 / (self.std ** 2 + sigma.double() ** 2)).to(x.dtype).reshape(-1, 1, 1, 1)
        return mu + w * (x - mu)


def test_dlg_chain_c_is_conditioned_on_its_own_row():
    model, labels = LabelledModes(), torch.tensor([0, 1, 1, 1])  # chain 3 (its own group) differs from row 0
    opts = dict(chains=4, classifier="exact", **DLG_TINY)
    out = api.sample(model, "dlg", num=10, nfe=4, batch_size=3, progress=False, model_kwargs={"label": labels},
                     **opts)  # chain groups [0, 3) and [3, 4): rows sliced by chain id
    chain = torch.from_numpy(out.meta["chain"])
    assert chain.tolist() == [i % 4 for i in range(10)]
    means = out.samples.flatten(1).mean(1)
    expect = torch.where(labels[chain] == 1, 0.8, -0.8)
    assert (means - expect).abs().max() < 0.2, (means, expect)
    again = api.sample(model, "dlg", num=10, nfe=4, batch_size=4, progress=False, model_kwargs={"label": labels},
                       **opts)
    torch.testing.assert_close(again.samples, out.samples)  # a chain's samples do not depend on its group
    flipped = api.sample(model, "dlg", num=10, nfe=4, batch_size=3, progress=False,
                         model_kwargs={"label": 1 - labels}, **opts)
    assert ((flipped.samples.flatten(1).mean(1) + expect).abs() < 0.2).all()


def test_dlg_model_kwargs_need_one_row_per_chain():
    model = LabelledModes()
    with pytest.raises(ValueError, match=r"dlg: model_kwargs\['label'\] must have a leading dimension of chains=2.*"
                                         r"one row per sample \(\[num=6\]\) needs chains=6"):
        api.stream(model, "dlg", num=6, nfe=4, chains=2, classifier="exact", model_kwargs={"label": torch.zeros(6)},
                   **DLG_TINY)
    with pytest.raises(ValueError, match="^callback is not supported for dlg yet$"):
        api.stream(model, "dlg", num=2, nfe=4, classifier="exact", callback=print, **DLG_TINY)


def test_classifier_can_be_an_object(tmp_path):
    """`classifier=` takes the object `train_classifier` / `load_classifier` return (or any callable with
    decreasing `.levels`): the same samples as its checkpoint path; bad objects are named."""
    model = load_model("gmm-digits", modes=10)
    images = torch.randint(0, 256, (12, 1, 8, 8), dtype=torch.uint8)
    clf = train_classifier(images, 30, model=model, steps=2, batch_size=8, progress=False)
    clf.save(str(tmp_path / "clf.pt"))
    weak = dict(DLG_TINY, allow_weak_classifier=1)  # 2 steps miss the card's targets: refused by either route
    for given in (str(tmp_path / "clf.pt"), load_classifier(str(tmp_path / "clf.pt"))):
        with pytest.raises(ValueError, match="misses its targets"):
            api.sample(model, "dlg", num=4, nfe=3, chains=2, classifier=given, progress=False, **DLG_TINY)
    by_path = api.sample(model, "dlg", num=4, nfe=3, chains=2, classifier=str(tmp_path / "clf.pt"), progress=False,
                         **weak)
    by_object = api.sample(model, "dlg", num=4, nfe=3, chains=2, classifier=load_classifier(str(tmp_path / "clf.pt")),
                           out_dir=str(tmp_path / "run"), progress=False, **weak)
    torch.testing.assert_close(by_object.samples, by_path.samples)
    with np.load(tmp_path / "run" / "samples.npz") as z:  # the configuration names the object's type
        assert "TrainedLevelClassifier object" in str(z["config"])
    exact = make_classifier(model, "exact", 50, 0.02, 80.0, "cpu")  # the exact posterior, as an object, via the façade
    import dmcmc_fast
    out = dmcmc_fast.DLG(model, nfe=3, chains=2, classifier=exact, **DLG_TINY).sample(4)
    assert out.samples.shape == (4, 1, 8, 8) and (out.meta["classifier_evals"] > 0).all()
    for bad, says in [(42, "option classifier"), (lambda x: x, "with .levels"),
                      (types_with_levels(torch.tensor([1.0, 2.0])), "strictly decreasing")]:
        with pytest.raises(ValueError, match=says):
            api.sample(model, "dlg", num=2, nfe=3, classifier=bad, progress=False, **DLG_TINY)


def types_with_levels(levels):
    class Bad:
        def __call__(self, x):
            return torch.zeros(x.shape[0], len(levels))
    bad = Bad()
    bad.levels = levels
    return bad
