"""torchrun with 2 CPU processes (gloo): the union of the ranks' shards equals the one-process run
for the same seed, and the all-reduced Fréchet statistics equal the one-process ones."""
import json
import subprocess
import sys

import numpy as np
import torch

from dmcmc_fast.cli import main
from dmcmc_fast.distributed import reduced_gaussian_stats, sufficient_stats
from dmcmc_fast.eval import gaussian_stats
from rowwise import same_threads_env

ARGS = ["sample", "--model", "gmm-digits", "--modes", "40", "--sampler", "heun", "--nfe", "7", "--num", "22",
        "--batch-size", "4", "--seed", "5", "--device", "cpu", "--no-progress"]


def _run(cmd, cwd):
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300, env=same_threads_env())
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def _torchrun(*args):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "-m", "dmcmc_fast.cli", "--", *args]  # "--": torchrun would read --num as its --numa-binding


def test_two_ranks_equal_one_process(tmp_path, capsys):
    assert main([*ARGS, "--out", str(tmp_path / "one")]) == 0
    _run(_torchrun(*ARGS, "--out", str(tmp_path / "two")), tmp_path)
    with np.load(tmp_path / "one" / "samples.npz") as a, np.load(tmp_path / "two" / "samples.npz") as b:
        np.testing.assert_array_equal(a["samples"], b["samples"])
        np.testing.assert_array_equal(a["nfe"], b["nfe"])
    # both ranks wrote shards: 6 batches of 4 split 3/3
    assert len(list((tmp_path / "two" / "parts").iterdir())) == 6

    capsys.readouterr()
    assert main(["eval", str(tmp_path / "one" / "samples.npz"), "--ref", "gmm-digits"]) == 0
    one = json.loads(capsys.readouterr().out)
    two = json.loads(_run(_torchrun("eval", str(tmp_path / "one" / "samples.npz"), "--ref", "gmm-digits"), tmp_path))
    assert one["num"] == two["num"] == 22
    assert one["modes_covered"] == two["modes_covered"] and one["class_share"] == two["class_share"]
    assert abs(one["frechet_exact"] - two["frechet_exact"]) < 1e-6 * max(1.0, one["frechet_exact"])


def test_sufficient_statistics_match_direct_moments():
    x = torch.randn(50, 3, 2, dtype=torch.float64) * 3 + 1
    mu, cov = gaussian_stats(x)
    mu2, cov2, n = reduced_gaussian_stats(x)  # no process group: reduction is the identity
    assert n == 50
    np.testing.assert_allclose(mu2, mu, rtol=1e-12)
    np.testing.assert_allclose(cov2, cov, rtol=1e-10, atol=1e-12)
    # stats of two halves add up to the whole
    a, b = sufficient_stats(x[:20]), sufficient_stats(x[20:])
    whole = sufficient_stats(x)
    for u, v, w in zip(a, b, whole):
        torch.testing.assert_close(u + v, w)


def test_one_batch_is_split_so_every_rank_gets_work(tmp_path):
    """6 samples at the default batch size (one batch) under 2 ranks: each rank draws 3 (was: rank 1 had
    none and the run failed), and the merged result equals one process."""
    args = ["sample", "--model", "gmm-digits", "--modes", "10", "--sampler", "heun", "--nfe", "5", "--num", "6",
            "--seed", "1", "--device", "cpu", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    _run(_torchrun(*args, "--out", str(tmp_path / "two")), tmp_path)
    with np.load(tmp_path / "one" / "samples.npz") as a, np.load(tmp_path / "two" / "samples.npz") as b:
        # batches of 3 instead of 6: the mixture's matmuls round differently (1e-6 a call), the chains are the same
        np.testing.assert_allclose(a["samples"], b["samples"], rtol=1e-4, atol=1e-4)
    assert sorted(p.name for p in (tmp_path / "two" / "parts").iterdir()) == [
        "part_000000000_000000003.npz", "part_000000003_000000006.npz"]
