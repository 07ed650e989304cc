"""A killed `dmcmc-fast sample --out DIR` run resumes with `--resume`: same samples and NFE as an
uninterrupted run, no sample lost or duplicated, and the shard written before the kill is neither
recomputed nor rewritten."""
import os
import subprocess
import sys

import numpy as np

from dmcmc_fast import api
from dmcmc_fast.cli import main

ARGS = ["sample", "--model", "gmm-digits", "--modes", "10", "--sampler", "heun", "--nfe", "5", "--num", "12",
        "--batch-size", "4", "--no-progress"]

# Runs the CLI, but after the first shard is on disk it says so and blocks until the test kills it.
STOP_AFTER_FIRST_SHARD = """
import sys, time
import dmcmc_fast.api as api
save = api._save_npz_atomic
def save_then_block(path, **arrays):
    save(path, **arrays)
    print("SHARD", path, flush=True)
    time.sleep(120)
api._save_npz_atomic = save_then_block
from dmcmc_fast.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_killed_run_resumes_without_recomputing(tmp_path, monkeypatch):
    killed, full = str(tmp_path / "killed"), str(tmp_path / "full")
    proc = subprocess.Popen([sys.executable, "-c", STOP_AFTER_FIRST_SHARD, *ARGS, "--out", killed],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert line.startswith("SHARD") and proc.returncode != 0  # killed mid-run, not finished
    parts = os.path.join(killed, "parts")
    assert sorted(os.listdir(parts)) == ["part_000000000_000000004.npz"]
    first = os.path.join(parts, "part_000000000_000000004.npz")
    before = os.stat(first).st_mtime_ns

    # without --resume the directory is refused
    assert main(ARGS + ["--out", killed]) == 2

    written = []
    save = api._save_npz_atomic
    monkeypatch.setattr(api, "_save_npz_atomic", lambda path, **a: (written.append(os.path.basename(path)),
                                                                      save(path, **a)))
    assert main(ARGS + ["--out", killed, "--resume"]) == 0
    assert [w for w in written if w.startswith("part_")] == ["part_000000004_000000008.npz",
                                                             "part_000000008_000000012.npz"]
    assert os.stat(first).st_mtime_ns == before

    assert main(ARGS + ["--out", full]) == 0
    a, b = np.load(os.path.join(killed, "samples.npz")), np.load(os.path.join(full, "samples.npz"))
    assert a["samples"].shape == (12, 1, 8, 8)
    np.testing.assert_array_equal(a["samples"], b["samples"])
    np.testing.assert_array_equal(a["nfe"], b["nfe"])
    assert len(np.unique(a["samples"].reshape(12, -1), axis=0)) == 12  # no duplicated sample
