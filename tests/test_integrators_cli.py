"""`dmcmc-fast sample --sampler X` for every integrator on a built-in model: runs, spends the NFE its
mapping promises (counted at the call site), and rejects out-of-range paper options by name."""
import json

import numpy as np
import pytest

from dmcmc_fast.cli import main

# (sampler, extra flags, --nfe, NFE every sample must have spent)
CASES = [
    ("heun", [], 9, 9), ("karras_sde", ["--s-churn", "20", "--s-noise", "1.0"], 10, 9),
    ("euler", [], 7, 7), ("reverse_diffusion", [], 7, 7), ("euler_maruyama", ["--final-tweedie", "0"], 7, 7),
    ("deis", ["--order", "2", "--ab-time", "vp"], 7, 7),
    ("deis", ["--order", "3", "--warm-start", "runge_kutta"], 12, 12),
    ("rk45", ["--rtol", "1e-3", "--atol", "1e-3"], 400, None),
    ("dpm_adaptive", ["--order", "2", "--rtol", "1e-2"], 400, None),
]




@pytest.mark.parametrize("sampler,flags,nfe,spent", CASES, ids=lambda v: str(v))
def test_cli_sample_every_integrator(tmp_path, capsys, sampler, flags, nfe, spent):
    out = tmp_path / "run"
    assert main(["sample", "--model", "gmm-digits", "--modes", "20", "--sampler", sampler, "--nfe", str(nfe),
                 "--num", "3", "--out", str(out), "--no-progress", *flags]) == 0
    rep = json.loads(capsys.readouterr().out)
    with np.load(out / "samples.npz") as z:
        assert z["samples"].shape == (3, 1, 8, 8) and np.isfinite(z["samples"]).all()
        if spent is not None:
            assert (z["nfe"] == spent).all()
        else:  # adaptive: what the solver spent (+1 Tweedie), within the budget
            assert (z["nfe"] > 7).all() and (z["nfe"] <= nfe).all() and rep["nfe_max"] == z["nfe"].max()


@pytest.mark.parametrize("flags,match", [
    (["--sampler", "deis", "--order", "4"], "order must be in"),
    (["--sampler", "karras_sde", "--s-churn", "-1"], "s_churn must be in"),
    (["--sampler", "rk45", "--rtol", "1e-9", "--atol", "1e-9"], "raise the NFE budget or loosen rtol/atol"),
    (["--sampler", "heun", "--s-churn", "5"], "does not take option"),
])
def test_cli_rejects_bad_options(tmp_path, capsys, flags, match):
    code = main(["sample", "--model", "gmm-digits", "--modes", "20", "--nfe", "10", "--num", "2",
                 "--out", str(tmp_path / "r"), "--no-progress", *flags])
    assert code == 2 and match in capsys.readouterr().err
