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
    (["--model", "gmm-digits", "--sampler", "heun", "--nfe", "5", "--std", "-1"],
     r"std must be a number in \[0.0, 1000.0\], got -1"),
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


def _help(argv, capsys, monkeypatch) -> str:
    """`dmcmc-fast ARGV` (a --help): its output on one line (wide columns: argparse wraps nothing)."""
    monkeypatch.setenv("COLUMNS", "1000")
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 0
    return capsys.readouterr().out


def _flag_help(text: str, flag: str) -> str:
    """The help of `flag` in a --help text: its line and the lines under it, up to the next flag."""
    lines = text.splitlines()
    i = next(i for i, ln in enumerate(lines) if ln.strip().startswith(flag + " "))
    j = next((j for j in range(i + 1, len(lines)) if not lines[j].startswith(" " * 8)), len(lines))
    return " ".join(ln.strip() for ln in lines[i:j])


@pytest.mark.parametrize("sampler", sorted(__import__("dmcmc_fast.samplers").samplers.all_samplers()))
def test_sampler_help_shows_its_own_options_defaults_and_ranges(sampler, capsys, monkeypatch):
    from dmcmc_fast.samplers import all_samplers

    spec = all_samplers()[sampler]
    text = _help(["sample", "--sampler", sampler, "--help"], capsys, monkeypatch)
    own = {o.name for o in spec.options}
    for o in spec.options:
        line = _flag_help(text, "--" + o.name.replace("_", "-"))
        default = repr(o.default) if o.type is str else str(o.default)
        assert f"default {default}" in line or f", else {default}" in line, line
        if o.choices is None and o.type in (int, float):
            assert f"range {o.range_text()}" in line, line
        assert o.help.split(";")[0][:30] in line
    others = {o.name for sp in all_samplers().values() for o in sp.options} - own
    for name in others:  # another sampler's flag is not offered
        assert f"--{name.replace('_', '-')} " not in text


def test_shared_flags_have_each_samplers_own_default(capsys, monkeypatch):
    def line(sampler, flag):
        return _flag_help(_help(["sample", "--sampler", sampler, "--help"], capsys, monkeypatch), flag)

    assert "default 2.0" in line("dlg", "--eta") and "default 0.001" in line("langevin", "--eta")
    assert "range [0.0, 0.999]; default 0.9" in line("mild", "--gamma")
    assert "range [1e-06, 1000000.0]; default 2.0" in line("obabo", "--friction")
    assert "default 0.01" in line("ald", "--sigma-min") and "else 0.002" in line("heun", "--sigma-min")


def test_plain_sample_help_lists_the_samplers_and_how_to_see_their_options(capsys, monkeypatch):
    from dmcmc_fast.samplers import all_samplers

    text = _help(["sample", "--help"], capsys, monkeypatch)
    assert "dmcmc-fast sample --sampler NAME --help" in text
    for name, spec in all_samplers().items():
        assert f"  {name} " in text and spec.help[:40] in text
    assert "--eta" not in text and "--final-tweedie" not in text  # no sampler's options without --sampler


def test_a_flag_the_sampler_does_not_take_names_what_it_takes(tmp_path, capsys):
    assert main(["sample", "--model", "gmm-digits", "--sampler", "obabo", "--nfe", "12", "--gamma", "2",
                 "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "obabo does not take option(s) --gamma" in err and "--friction" in err
    assert not (tmp_path / "o").exists()


def test_there_is_no_bench_command(capsys):
    assert main(["bench"]) == 2
    assert "python -m bench.throughput" in capsys.readouterr().err


def test_a_diverging_run_leaves_nothing_behind(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["sample", "--model", "gmm-digits", "--modes", "20", "--sampler", "langevin", "--eta", "1e6",
                 "--nfe", "20", "--num", "4", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "langevin" in err and "eta" in err
    assert not out.exists()
    out.mkdir()  # a folder the user made stays, empty
    assert main(["sample", "--model", "gmm-digits", "--modes", "20", "--sampler", "ald", "--nfe", "5",
                 "--num", "4", "--out", str(out), "--no-progress"]) == 2
    assert "ald: nfe must be at least 6" in capsys.readouterr().err
    assert out.is_dir() and not list(out.iterdir())


def test_a_failing_resume_keeps_the_earlier_runs_files(tmp_path):
    m = load_model("gmm-digits", modes=20)
    d = tmp_path / "r"
    api.sample(m, "heun", 4, 7, batch_size=2, out_dir=str(d), progress=False)
    for shard in (d / "parts").iterdir():  # as if the earlier run was stopped before its first shard
        shard.unlink()
    cfg = (d / "config.json").read_text()

    class Broken:
        shape, sigma_min, sigma_max, data_range = m.shape, m.sigma_min, m.sigma_max, m.data_range

        def __call__(self, x, sigma):
            raise RuntimeError("broken network")

    with pytest.raises(RuntimeError, match="broken network"):
        api.sample(Broken(), "heun", 4, 7, batch_size=2, out_dir=str(d), resume=True, progress=False)
    assert (d / "config.json").read_text() == cfg and (d / "parts").is_dir()
