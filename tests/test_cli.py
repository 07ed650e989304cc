"""End to end: `dmcmc-fast sample` then `eval` on built-in models; per-chain determinism across batch
sizes; clear errors for bad input."""
import json

import numpy as np
import pytest
import torch

from dmcmc_fast import api
from dmcmc_fast.cli import main
from dmcmc_fast.models.builtin import load_model


def test_sample_then_eval_gmm_digits(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["sample", "--model", "gmm-digits", "--sampler", "heun", "--nfe", "35", "--num", "300",
                 "--seed", "0", "--out", str(out), "--batch-size", "128", "--no-progress"]) == 0
    with np.load(out / "samples.npz") as z:
        assert z["samples"].shape == (300, 1, 8, 8)
        assert (z["nfe"] == 35).all()
        cfg = json.loads(str(z["config"]))
        assert cfg["sampler"] == "heun" and cfg["options"]["rho"] == 7.0
        assert z["samples"].min() >= -1 and z["samples"].max() <= 1
    assert (out / "grid.png").stat().st_size > 1000
    capsys.readouterr()
    assert main(["eval", str(out / "samples.npz"), "--ref", "gmm-digits"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["num"] == 300 and rep["nfe_mean"] == 35.0
    # Heun with 35 NFE on an exact model: samples land on the modes with the right class balance.
    assert rep["frechet_exact"] < 5.0
    assert rep["class_share_tv"] < 0.12
    assert rep["modes_covered"] > 200


def test_samples_do_not_depend_on_batch_size():
    m = load_model("gmm-digits", modes=50)
    a = api.sample(m, "heun", 10, 9, seed=3, batch_size=10, progress=False)
    b = api.sample(m, "heun", 10, 9, seed=3, batch_size=3, progress=False)
    torch.testing.assert_close(a.samples, b.samples)
    c = api.sample(m, "heun", 10, 9, seed=4, batch_size=10, progress=False)
    assert not torch.allclose(a.samples, c.samples)


def test_nfe_budget_is_respected():
    m = load_model("gmm-digits", modes=20)
    out = api.sample(m, "heun", 4, 36, progress=False)
    assert out.nfe.tolist() == [35] * 4  # Heun spends 2N-1 <= budget


def test_resume_reuses_finished_shards(tmp_path):
    m = load_model("gmm-digits", modes=20)
    d = str(tmp_path / "r")
    full = api.sample(m, "heun", 9, 7, batch_size=4, out_dir=d, progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        api.sample(m, "heun", 9, 7, batch_size=4, out_dir=d, progress=False)
    # poison a finished shard: resume must read it, not recompute it
    shard = sorted((tmp_path / "r" / "parts").iterdir())[0]
    with np.load(shard) as z:
        s, n = z["samples"], z["nfe"]
    np.savez(shard, samples=s + 100.0, nfe=n)
    again = api.sample(m, "heun", 9, 7, batch_size=4, out_dir=d, resume=True, progress=False)
    torch.testing.assert_close(again.samples[:4], full.samples[:4] + 100.0)
    torch.testing.assert_close(again.samples[4:], full.samples[4:])
    with pytest.raises(ValueError, match="different run configuration"):
        api.sample(m, "heun", 9, 8, batch_size=4, out_dir=d, resume=True, progress=False)


@pytest.mark.parametrize("argv,match", [
    (["--model", "nope", "--sampler", "heun", "--nfe", "5"], "unknown model 'nope'"),
    (["--model", "gmm-digits", "--sampler", "nope", "--nfe", "5"], "unknown sampler 'nope'"),
    (["--model", "gmm-digits", "--sampler", "heun", "--nfe", "0"], r"nfe must be an integer in \[1, 100000\]"),
    (["--model", "gmm-digits", "--sampler", "heun", "--nfe", "5", "--num", "0"], r"num must be an integer in \[1"),
    (["--model", "gmm-digits", "--sampler", "heun", "--nfe", "5", "--rho", "-1"], r"option rho must be in \[0.1, 100.0\]"),
    (["--model", "gmm-digits", "--sampler", "heun", "--nfe", "5", "--std", "-1"], "std must be >= 0"),
])
def test_bad_input_is_a_clear_error(tmp_path, capsys, argv, match):
    assert main(["sample", *argv, "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    import re
    assert re.search(match, capsys.readouterr().err)


def test_option_of_another_sampler_is_rejected():
    from dmcmc_fast.samplers import SamplerSpec, Option
    spec = SamplerSpec("x", "m:f", (Option("rho", float, 7.0),))
    with pytest.raises(ValueError, match="does not take option"):
        spec.validate({"eta": 0.1})


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda_is_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["sample", "--model", "gmm-digits", "--sampler", "heun", "--nfe", "5", "--num", "2", "--device",
                 "cuda", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--device cuda" in err and "\n" not in err and not out.exists()
