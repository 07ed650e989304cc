"""DLG through the doors users run (api.sample / stream, the façade, the CLI, torchrun): `num` samples
from `chains` chains, sample i = block i // C of chain i % C, NFE amortised per sample."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import dmcmc_fast
from dmcmc_fast import api
from dmcmc_fast.cli import main
from dmcmc_fast.models.builtin import load_model
from rowwise import rowwise_dlg, same_threads_env

SMALL = dict(n_skip=2, n_levels=50, init_nfe=8, n_init=1)


@pytest.fixture(scope="module")
def digits():
    return load_model("gmm-digits", modes=30)


def _chain_runs(model, configs, **options):
    """{(chains, batch_size): api.sample of 3 * chains samples}; the first configuration is the reference."""
    return {(C, bs): api.sample(model, "dlg", 3 * C, 8, seed=4, progress=False, chains=C, batch_size=bs,
                                **SMALL, **options) for C, bs in configs}


def _chain_differences(runs: dict, n_blocks: int = 3) -> dict:
    """{(chains, batch_size): the largest difference of chains 0-2's first blocks from the reference run}."""
    (C0, _), first = next(iter(runs.items()))
    ref = first.samples
    return {(C, bs): max(float((out.samples[c::C][:n_blocks] - ref[c::C0]).abs().max()) for c in range(3))
            for (C, bs), out in list(runs.items())[1:]}


CHAIN_CONFIGS = [(3, 256), (5, 2), (4, 3), (4, 1)]


def test_a_chains_samples_do_not_depend_on_chains_or_batch_size(digits, monkeypatch):
    """Our code, checked through a row-wise model and classifier (tests/rowwise.py): chain c's block b (sample
    b * C + c) is the same, bit for bit, for any number of chains and any batch size, on any CPU."""
    runs = _chain_runs(rowwise_dlg(monkeypatch, digits), CHAIN_CONFIGS)
    assert _chain_differences(runs) == {(5, 2): 0.0, (4, 3): 0.0, (4, 1): 0.0}
    assert len(np.unique(runs[(5, 2)].samples.reshape(15, -1).numpy(), axis=0)) == 15


def test_a_chains_samples_through_the_batched_mixture_agree_to_rounding(digits):
    """The batched mixture itself: its matmuls round differently with the row count on some CPUs' BLAS paths
    (1e-7 a call; 1e-4 after this run on an AVX-512 machine, 1.4e-6 for one row on this AMD one), so the chains
    agree to a stated tolerance, 2e-3: 20x the largest seen; a chain whose path differed would be off by ~1."""
    diffs = _chain_differences(_chain_runs(digits, CHAIN_CONFIGS))
    assert max(diffs.values()) < 2e-3, diffs


def test_nfe_per_sample_is_block_plus_init_share(digits):
    out = api.sample(digits, "dlg", 7, 9, seed=1, progress=False, chains=3, **SMALL)
    m = out.meta
    assert m["chain"].tolist() == [0, 1, 2, 0, 1, 2, 0] and m["block"].tolist() == [0, 0, 0, 1, 1, 1, 2]
    assert out.config["options"]["n_den"] == 7 and out.config["options"]["chains"] == 3  # n_den = nfe - n_skip
    np.testing.assert_allclose(out.nfe.numpy(), m["nfe_block"] + m["nfe_init_share"])
    assert (m["nfe_block"] <= 9).all() and (m["nfe_block"] > 2).all()
    for c in range(3):  # each chain's shares add up to its initialisation cost, at most init_nfe + n_init
        total = m["nfe_init_share"][m["chain"] == c].sum()
        assert 1 < total <= 9 and np.allclose(m["nfe_init_share"][m["chain"] == c], total / (3 - (c > 0)))
    assert (m["classifier_evals"] > 2).all()  # n_skip Gibbs steps per block, plus the init's share
    assert ((m["sigma"] >= 0.02) & (m["sigma"] < 100.0)).all()  # inside the levels, not stuck at the top


@pytest.mark.parametrize("opts,match", [(dict(chains=9), "chains must be in"),
                                        (dict(n_den=8), "exceeds nfe"),
                                        (dict(n_skip=9), "at least n_skip")])
def test_budget_errors_name_the_option(digits, opts, match):
    with pytest.raises(ValueError, match=match):
        api.sample(digits, "dlg", 8, 9, progress=False, **{**SMALL, **opts})


def test_stream_gives_one_block_of_every_chain_at_a_time(digits):
    dlg = dmcmc_fast.DLG(digits, nfe=8, chains=4, batch_size=2, **SMALL)
    got = [(b.start, b.stop, b.meta["block"].tolist()) for b in dlg.stream(10)]
    assert got == [(0, 2, [0, 0]), (2, 4, [0, 0]), (4, 6, [1, 1]), (6, 8, [1, 1]), (8, 10, [2, 2])]
    it = iter(dlg.stream(10))
    first = next(it)
    it.close()  # a pipeline may stop early
    assert torch.equal(first.samples, dlg.sample(10).samples[:2])


def test_cli_writes_per_sample_books(tmp_path, capsys):
    args = ["sample", "--model", "gmm-digits", "--modes", "30", "--sampler", "dlg", "--nfe", "8", "--n-skip", "2",
            "--chains", "3", "--num", "7", "--n-levels", "50", "--init-nfe", "8", "--n-init", "1", "--no-progress",
            "--out", str(tmp_path)]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    z = np.load(tmp_path / "samples.npz")
    assert {"nfe", "nfe_block", "nfe_init_share", "classifier_evals", "chain", "block", "sigma"} <= set(z.files)
    assert summary["chains"] == 3 and summary["nfe_mean"] == pytest.approx(float(z["nfe"].mean()))
    assert summary["nfe_mean"] == pytest.approx(summary["nfe_block_mean"] + summary["nfe_init_share_mean"])
    assert main(["eval", str(tmp_path / "samples.npz"), "--ref", "gmm-digits", "--modes", "30"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["nfe_mean"] == pytest.approx(summary["nfe_mean"])
    mixing = report["mixing"]  # DLG runs are evaluated for mixing too
    assert mixing["chains"] == 3 and 0 <= mixing["mode_switch_rate"] <= 1 and 0 < mixing["ess"] <= 7 * 1.5


def test_two_ranks_split_the_chains_and_equal_one_process(tmp_path):
    args = ["sample", "--model", "gmm-digits", "--modes", "30", "--sampler", "dlg", "--nfe", "6", "--n-skip", "2",
            "--chains", "4", "--num", "10", "--batch-size", "2", "--n-levels", "50", "--init-nfe", "3",
            "--n-init", "1", "--device", "cpu", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        "-m", "dmcmc_fast.cli", "--", *args, "--out", str(tmp_path / "two")],
                       capture_output=True, text=True, timeout=300, env=same_threads_env())
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = np.load(tmp_path / "one" / "samples.npz"), np.load(tmp_path / "two" / "samples.npz")
    for k in ("samples", "nfe", "chain", "block", "sigma", "nfe_init_share"):
        np.testing.assert_array_equal(a[k], b[k])
    # rank 0 ran chains 0-1, rank 1 chains 2-3: each saved its own groups' states
    assert sorted(p.name for p in (tmp_path / "two" / "parts").glob("dlg_chains_*")) == [
        "dlg_chains_000000000_000000002.pt", "dlg_chains_000000002_000000004.pt"]



def test_no_sample_is_denoised_twice(digits):
    """A block's minimum is over its own steps, not its start state (the previous block's last iterate):
    with one step per block, the official code's rule gave 16% duplicate consecutive samples."""
    out = api.sample(digits, "dlg", 60, 8, seed=0, progress=False, chains=2, **dict(SMALL, n_skip=1))
    for c in range(2):
        x = out.samples[c::2].reshape(30, -1)
        assert not (x[1:] == x[:-1]).all(dim=1).any(), f"chain {c} repeats a sample"


def test_the_default_classifier_fits_the_model(digits):
    """classifier="auto" (the default): the exact posterior for a mixture, the committed checkpoint for a
    network, and for a network no committed checkpoint fits, an error that names the training command."""
    kw = dict(num=2, nfe=8, seed=3, progress=False, chains=2, **SMALL)
    assert torch.equal(api.sample(digits, "dlg", **kw).samples,
                       api.sample(digits, "dlg", classifier="exact", **kw).samples)
    unet = load_model("unet-mnist")
    default = api.sample(unet, "dlg", **kw)
    assert default.config["options"]["classifier"] == "auto"
    assert torch.equal(default.samples, api.sample(unet, "dlg", classifier="trained", **kw).samples)

    class Net(torch.nn.Module):  # a network on 1x4x4 data: no committed classifier
        shape, sigma_min, sigma_max, data_range = (1, 4, 4), 0.002, 80.0, (-1.0, 1.0)

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x, sigma):
            return x * self.w

    with pytest.raises(ValueError, match="no committed noise-level classifier.*dmcmc-fast train classifier"):
        api.sample(Net(), "dlg", **kw)
