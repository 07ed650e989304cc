"""Every bad input of issue 32, one by one: one line on stderr naming the file or argument and what is wrong,
exit status != 0, nothing half-written; checked before any work (eval of a NaN file answers at once instead
of hanging in scipy's sqrtm)."""
import os
import time
import types

import numpy as np
import pytest
import torch

from dmcmc_fast import api, sizes
from dmcmc_fast.cli import main
from dmcmc_fast.eval import frechet_distance
from dmcmc_fast.mcmc.classifier import check_classifier, load_classifier
from dmcmc_fast.models.builtin import load_model

HEUN = ["sample", "--model", "gmm-digits", "--modes", "10", "--sampler", "heun", "--nfe", "5", "--num", "6",
        "--no-progress"]


def _one_line_error(capsys, *words) -> str:
    """The run's stderr: one line, no traceback, holding every one of `words`."""
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    for w in words:
        assert w in err, (w, err)
    return err


@pytest.fixture(scope="module")
def samples_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main([*HEUN, "--out", str(out)]) == 0
    return out / "samples.npz"


def _with(samples_file, path, **changes):
    z = dict(np.load(samples_file))
    z.update(changes)
    np.savez(path, **{k: v for k, v in z.items() if v is not None})
    return str(path)


# ---- eval ----

def test_eval_of_nan_samples_answers_at_once_with_how_many_and_where(samples_file, tmp_path, capsys):
    x = np.load(samples_file)["samples"].copy()
    x[2], x[4, 0, 1, 1] = np.nan, np.inf
    some = _with(samples_file, tmp_path / "nan.npz", samples=x)
    t0 = time.perf_counter()
    assert main(["eval", some, "--ref", "gmm-digits"]) == 2
    assert time.perf_counter() - t0 < 30  # was: hung in sqrtm (stopped after 60 s; all-NaN: 8 minutes)
    _one_line_error(capsys, "nan.npz", "2 of 6 samples are not finite", "indices 2, 4")
    every = _with(samples_file, tmp_path / "all.npz", samples=np.full_like(x, np.nan))
    assert main(["eval", every]) == 2
    _one_line_error(capsys, "all.npz", "6 of 6 samples", "indices 0, 1, 2, 3, 4, ...")


def test_the_frechet_distance_refuses_non_finite_statistics():
    with pytest.raises(ValueError, match=r"cov1 is not finite \(1 of 4 values"):
        frechet_distance(np.zeros(2), np.array([[1.0, np.nan], [0.0, 1.0]]), np.zeros(2), np.eye(2))


@pytest.mark.parametrize("make,words", [
    (lambda f, p: _with(f, p, nfe=None), ["has no 'nfe'", "(it has 'samples', 'config')"]),
    (lambda f, p: _with(f, p, samples=None), ["has no 'samples'"]),
    (lambda f, p: (p.write_bytes(f.read_bytes()[:300]), str(p))[1], ["not a readable .npz archive"]),
    (lambda f, p: (p.write_bytes(b""), str(p))[1], ["the file is empty"]),
    (lambda f, p: (np.savez(p, samples=np.array([{}], dtype=object), nfe=np.zeros(1)), str(p))[1],
     ["Python objects (pickles), which are never loaded"]),
    (lambda f, p: _with(f, p, nfe=np.zeros(3)), ["'nfe' must be numbers, one per sample ([6])"]),
    (lambda f, p: _with(f, p, samples=np.array(["a"] * 6)), ["'samples' must be a numeric array"]),
    (lambda f, p: _with(f, p, config=np.array("{not json")), ["its 'config' is not JSON"]),
    (lambda f, p: _with(f, p, chain=np.zeros(6, np.int64)), ["has DLG books chain but not block, sigma"]),
    (lambda f, p: (np.save(str(p) + ".npy", np.zeros(3)), os.replace(str(p) + ".npy", p), str(p))[2],
     ["a single .npy array, not an .npz archive"]),
    (lambda f, p: str(p.parent / "nowhere.npz"), ["no such file"]),
    (lambda f, p: str(p.parent), ["is a folder, not a file"]),
])
def test_eval_of_a_broken_npz_names_the_file_and_the_fault(samples_file, tmp_path, capsys, make, words):
    path = make(samples_file, tmp_path / "broken.npz")
    assert main(["eval", path, "--no-features"]) == 2
    _one_line_error(capsys, "dmcmc-fast eval: error: samples " + path, *words)


# ---- sample: checks before any work ----

def test_out_under_an_existing_file_is_one_line_and_makes_nothing(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert main([*HEUN, "--out", str(a_file / "sub" / "run")]) == 2
    _one_line_error(capsys, f"{a_file} is a file, so no folder can be made under it")
    assert main([*HEUN, "--out", str(a_file)]) == 2
    _one_line_error(capsys, "is a file, not a folder")
    assert sorted(os.listdir(tmp_path)) == ["file"] and a_file.read_text() == "x"
    with pytest.raises(ValueError, match="out_dir .* is a file, so no folder"):  # the API the same
        api.sample(load_model("gmm-digits", modes=10), "heun", 2, 5, out_dir=str(a_file / "x"), progress=False)


def test_a_huge_num_is_refused_with_the_figures_before_any_work(tmp_path, capsys):
    out = tmp_path / "big"
    t0 = time.perf_counter()
    assert main([*HEUN[:-3], "--num", "100000000000", "--no-progress", "--out", str(out)]) == 2
    assert time.perf_counter() - t0 < 30  # was: ran 4 minutes to 16 GB with nothing written
    err = _one_line_error(capsys, "--num 100000000000: the run needs about 96.0 TB of memory", "--no-size-check",
                          "at most --num")
    assert not out.exists(), err
    # the largest --num it names does fit
    most = int(err.split("at most --num ")[1].split()[0])
    sizes.check_fits(most, (1, 8, 8), str(tmp_path))
    with pytest.raises(ValueError, match="--num"):
        sizes.check_fits(most + 1, (1, 8, 8), str(tmp_path), memory=sizes.available_memory())


def test_the_size_check_counts_memory_and_disk():
    each = sizes.sample_bytes((1, 28, 28))
    assert each == 4 * 784 + sizes.BOOK_BYTES
    sizes.check_fits(1000, (1, 28, 28), ".", memory=3 * 1000 * each, disk=2 * 1000 * each)  # exactly fits
    with pytest.raises(ValueError, match=r"needs about 9\.6 MB of memory .* but 9\.6 MB is available; at most "
                                         r"--num 999 fits"):
        sizes.check_fits(1000, (1, 28, 28), ".", memory=3 * 1000 * each - 1, disk=10 ** 12)
    with pytest.raises(ValueError, match=r"of disk .* free under .*; at most --num 500 fits"):
        sizes.check_fits(1000, (1, 28, 28), ".", memory=10 ** 12, disk=1000 * each)
    assert sizes.human(512) == "512 B" and sizes.human(2.56e13) == "25.6 TB"


def test_no_size_check_lets_a_run_start(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sizes, "available_memory", lambda: 10)  # a machine with 10 bytes free
    assert main([*HEUN, "--out", str(tmp_path / "a")]) == 2
    _one_line_error(capsys, "but 10 B is available")
    assert main([*HEUN, "--out", str(tmp_path / "b"), "--no-size-check"]) == 0


# ---- checkpoints ----

def _dlg(path, out):
    return ["sample", "--model", "gmm-digits", "--modes", "10", "--sampler", "dlg", "--nfe", "8", "--n-skip", "2",
            "--n-levels", "50", "--init-nfe", "4", "--n-init", "1", "--num", "4", "--chains", "2",
            "--classifier", str(path), "--no-progress", "--out", str(out)]


@pytest.mark.parametrize("write,words", [
    (lambda p: p.write_bytes(b"garbage" * 10), ["not a readable torch checkpoint (not a zip archive"]),
    (lambda p: p.write_bytes(open(load_classifier("digits").source, "rb").read()[:2000]),
     ["not a readable torch checkpoint"]),
    (lambda p: torch.save({"foo": torch.zeros(2)}, p), ["not a noise-level classifier checkpoint (it has no "
                                                        "'levels', 'shape', 'state_dict'; it has 'foo')"]),
    (lambda p: torch.save([1, 2], p), ["it holds a list, not a dict"]),
    (lambda p: torch.save({"levels": "x", "shape": [1, 8, 8], "state_dict": {}}, p),
     ["its levels or shape do not describe a classifier"]),
    (lambda p: torch.save({**torch.load(load_classifier("digits").source, weights_only=True), "state_dict": {}}, p),
     ["its weights do not fit the network it describes (RuntimeError: Error(s) in loading state_dict"]),
])
def test_a_broken_classifier_is_one_line_naming_it(tmp_path, capsys, write, words):
    path = tmp_path / "clf.pt"
    write(path)
    assert main(_dlg(path, tmp_path / "run")) == 2
    _one_line_error(capsys, f"noise-level classifier {path}: ", *words)
    assert not (tmp_path / "run").exists()


def test_a_broken_resume_state_or_shard_names_the_file(tmp_path, capsys):
    out = tmp_path / "run"
    clf = load_classifier("digits").source
    assert main(_dlg(clf, out)) == 0
    state = sorted((out / "parts").glob("dlg_chains_*.pt"))[0]
    state.write_bytes(b"\0" * 100)
    assert main(_dlg(clf, out) + ["--resume"]) == 2
    _one_line_error(capsys, f"DLG resume state {state}: not a readable torch checkpoint")
    heun = tmp_path / "heun"
    assert main([*HEUN, "--batch-size", "3", "--out", str(heun)]) == 0
    shard = sorted((heun / "parts").glob("part_*.npz"))[0]
    shard.write_bytes(b"PK\x03\x04 truncated")
    assert main([*HEUN, "--batch-size", "3", "--out", str(heun), "--resume"]) == 2
    _one_line_error(capsys, f"shard {shard}: not a readable .npz archive")


# ---- models and ranges ----

class Counting:
    """A Python model without `shape` (the issue's CountingDenoiser case)."""

    def __call__(self, x, sigma):
        return x


def test_a_python_model_without_shape_is_a_clear_error():
    with pytest.raises(ValueError, match=r"^model Counting must have `shape`, the shape of one sample as a tuple of "
                                         r"ints >= 1 \(e\.g\. model\.shape = \(1, 28, 28\)\); it has no attribute "
                                         r"shape$"):
        api.sample(Counting(), "heun", 2, 5, progress=False)
    bad = Counting()
    bad.shape = (1, 0, 3)
    with pytest.raises(ValueError, match=r"it has shape=\(1, 0, 3\)"):
        api.sample(bad, "heun", 2, 5, progress=False)
    with pytest.raises(ValueError, match="model must be a callable denoiser D"):
        api.sample("gmm-digits", "heun", 2, 5, progress=False)


class _DDPMRangeNet(torch.nn.Module):
    """A network with a DDPM's converted noise range (sigma = sqrt((1 - abar) / abar) at its ends)."""
    shape, sigma_min, sigma_max, data_range = (1, 8, 8), 0.0100013, 157.4, (-1.0, 1.0)

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, sigma):
        return x * self.w


def _levels(lo, hi):
    return types.SimpleNamespace(source="clf.pt", levels=torch.logspace(np.log10(hi), np.log10(lo), 50),
                                 shape=(1, 8, 8), data_range=(-1.0, 1.0))


def test_a_ddpm_range_takes_levels_from_0_01_and_a_refusal_shows_the_difference():
    net = _DDPMRangeNet()
    check_classifier(_levels(0.01, 157.0), net)  # 0.01 vs 0.0100013: a conversion's rounding, not a real excess
    assert api.resolve_options(net, "heun", {"sigma_min": 0.01})["sigma_min"] == 0.01
    with pytest.raises(ValueError, match=r"levels in \[0\.0098, 157\], outside the model's noise range "
                                         r"\[0\.01, 157\.4\]"):
        check_classifier(_levels(0.0098, 157.0), net)
    with pytest.raises(ValueError, match=r"levels in \[0\.01, 158\], outside the model's noise range "
                                         r"\[0\.01, 157\.4\]"):
        check_classifier(_levels(0.01, 158.0), net)
    with pytest.raises(ValueError, match=r"sigma_min=0\.00999 \(given\) is below the model's noise range "
                                         r"\[0\.01, 157\.4\]"):  # 4 digits would print both as 0.01
        api.resolve_options(net, "heun", {"sigma_min": 0.00999})


def test_ctrl_c_during_eval_is_one_line_and_status_130(samples_file, monkeypatch, capsys):
    import dmcmc_fast.eval

    def interrupted(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr(dmcmc_fast.eval, "frechet_distance", interrupted)
    assert main(["eval", str(samples_file), "--ref", "gmm-digits"]) == 130
    assert capsys.readouterr().err == "dmcmc-fast eval: interrupted\n"
