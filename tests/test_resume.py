"""A killed `dmcmc-fast sample --out DIR` run resumes with `--resume`: same samples and NFE as an
uninterrupted run, no sample lost or duplicated, and the shards finished before the kill are neither
recomputed nor rewritten. For DLG the chains continue from their saved state (x, sigma, RNG counter,
NFE books), so a chain's later blocks are the ones the uninterrupted run gives."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from dmcmc_fast import shards
from dmcmc_fast.cli import main

COMMON = ["sample", "--model", "gmm-digits", "--modes", "10", "--num", "12", "--no-progress"]
RUNS = {  # sampler -> (its flags, shards written before the kill, shards the resumed run must write)
    "heun": (["--sampler", "heun", "--nfe", "5", "--batch-size", "4"], 1,
             ["part_000000004_000000008.npz", "part_000000008_000000012.npz"]),
    # 4 chains in groups of 2, 3 blocks each: shards 0-2, 2-4 (block 0), 4-6, 6-8 (block 1), 8-10, 10-12.
    # Killed while the 3rd is saved: group 0's state says 1 block done, so its block 1 runs again.
    "dlg": (["--sampler", "dlg", "--nfe", "6", "--n-skip", "2", "--chains", "4", "--batch-size", "2",
             "--n-levels", "50", "--init-nfe", "4", "--n-init", "1"], 3,
            ["part_000000004_000000006.npz", "part_000000006_000000008.npz", "part_000000008_000000010.npz",
             "part_000000010_000000012.npz"]),
}

# Runs the CLI, but after the N-th shard is on disk it says so and blocks until the test kills it. It computes
# with the test process's thread count (argv[2]): the shards it writes are compared bit for bit with the test's
# own, and a GEMM may round differently with another number of threads.
STOP_AFTER_SHARDS = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C as in a terminal, even where the test runs
import torch                                               # in the background (which ignores SIGINT)
torch.set_num_threads(int(sys.argv[2]))
import dmcmc_fast.shards as shards
save, n = shards.save_npz_atomic, int(sys.argv[1])
def save_then_block(path, **arrays):
    global n
    save(path, **arrays)
    n -= "part_" in path
    if n == 0:
        print("SHARD", path, flush=True)
        time.sleep(120)
shards.save_npz_atomic = save_then_block
from dmcmc_fast.cli import main
sys.exit(main(sys.argv[3:]))
"""


@pytest.mark.parametrize("sampler", sorted(RUNS))
def test_killed_run_resumes_without_recomputing(sampler, tmp_path, monkeypatch):
    flags, before_kill, after = RUNS[sampler]
    args = COMMON + flags
    killed, full = str(tmp_path / "killed"), str(tmp_path / "full")
    proc = subprocess.Popen([sys.executable, "-c", STOP_AFTER_SHARDS, str(before_kill), str(torch.get_num_threads()),
                             *args, "--out", killed],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert line.startswith("SHARD") and proc.returncode != 0  # killed mid-run, not finished
    parts = os.path.join(killed, "parts")
    written = sorted(n for n in os.listdir(parts) if n.startswith("part_"))
    assert len(written) == before_kill
    kept = [n for n in written if n not in after]  # finished before the kill and never redone
    mtimes = {n: os.stat(os.path.join(parts, n)).st_mtime_ns for n in kept}

    # without --resume the directory is refused
    assert main(args + ["--out", killed]) == 2

    saved = []
    save = shards.save_npz_atomic
    monkeypatch.setattr(shards, "save_npz_atomic", lambda path, **a: (saved.append(os.path.basename(path)),
                                                                      save(path, **a)))
    assert main(args + ["--out", killed, "--resume"]) == 0
    assert [w for w in saved if w.startswith("part_")] == after
    assert {n: os.stat(os.path.join(parts, n)).st_mtime_ns for n in kept} == mtimes

    assert main(args + ["--out", full]) == 0
    a, b = np.load(os.path.join(killed, "samples.npz")), np.load(os.path.join(full, "samples.npz"))
    assert a["samples"].shape == (12, 1, 8, 8)
    assert sorted(a.files) == sorted(b.files)
    for k in a.files:  # samples, NFE and (DLG) every per-sample book
        np.testing.assert_array_equal(a[k], b[k])
    assert len(np.unique(a["samples"].reshape(12, -1), axis=0)) == 12  # no duplicated sample
    if sampler == "dlg":
        assert a["chain"].tolist() == [0, 1, 2, 3] * 3 and a["block"].tolist() == [0] * 4 + [1] * 4 + [2] * 4


def test_resume_names_the_fields_that_differ(tmp_path):
    args = COMMON + RUNS["heun"][0] + ["--out", str(tmp_path)]
    assert main(args) == 0
    with pytest.raises(ValueError, match=r"nfe: 5 -> 7.*seed: 0 -> 3"):
        from dmcmc_fast import api
        from dmcmc_fast.models.builtin import load_model

        api.sample(load_model("gmm-digits", modes=10), "heun", 12, 7, seed=3, batch_size=4, out_dir=str(tmp_path),
                   resume=True, progress=False, config={"model": "gmm-digits", "model_options": {"modes": 10,
                                                                                                 "std": None}})


def test_ctrl_c_leaves_one_line_and_a_resumable_run(tmp_path):
    """SIGINT (Ctrl-C) after the first shard: one line, exit 130, the shard kept; --resume finishes the run."""
    import signal

    flags, _, _ = RUNS["heun"]
    args = COMMON + flags + ["--out", str(tmp_path / "run")]
    proc = subprocess.Popen([sys.executable, "-c", STOP_AFTER_SHARDS, "1", str(torch.get_num_threads()), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("SHARD")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert err.strip() == (f"dmcmc-fast sample: interrupted after 4 of 12 samples; continue with --resume (the same "
                           f"command, --out {tmp_path / 'run'})"), err
    assert sorted(os.listdir(tmp_path / "run" / "parts")) == ["part_000000000_000000004.npz"]
    assert main(args + ["--resume"]) == 0
    assert np.load(tmp_path / "run" / "samples.npz")["samples"].shape == (12, 1, 8, 8)


@pytest.mark.parametrize("sampler,interrupt_at,kept", [("heun", 1, 0), ("dlg", 3, 4)])
def test_ctrl_c_in_process_keeps_the_finished_shards(sampler, interrupt_at, kept, tmp_path, monkeypatch, capsys):
    """Ctrl-C while shard `interrupt_at` is saved: the shards before it are kept (DLG: chains 0-1's block 0 and
    chains 2-3's), or, with none finished, nothing is left behind."""
    flags, _, _ = RUNS[sampler]
    out = tmp_path / "run"
    save, n = shards.save_npz_atomic, [0]

    def save_or_interrupt(path, **arrays):
        n[0] += "part_" in path
        if n[0] == interrupt_at:
            raise KeyboardInterrupt
        save(path, **arrays)

    monkeypatch.setattr(shards, "save_npz_atomic", save_or_interrupt)
    assert main(COMMON + flags + ["--out", str(out)]) == 130
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    if kept == 0:
        assert err == "dmcmc-fast sample: interrupted after 0 of 12 samples; nothing was written"
        assert not out.exists()
    else:
        assert err.startswith(f"dmcmc-fast sample: interrupted after {kept} of 12 samples; continue with --resume")
        assert len(list((out / "parts").glob("part_*.npz"))) == interrupt_at - 1
