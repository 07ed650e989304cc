"""DLG says when it fails (issue 32): a classifier whose card says it misses its targets is refused with one
line unless `--allow-weak-classifier 1`; a run whose chains did not mix (block sigma pinned at the top level,
or no mode switch) ends with a one-line warning naming the figures and what to try; a healthy run gives
none. And DLG's n_skip default comes from the budget. Tiny budgets: a 1-step classifier on 8x8 digits."""
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from dmcmc_fast import api
from dmcmc_fast.cli import main
from dmcmc_fast.mcmc.classifier import check_targets, load_classifier
from dmcmc_fast.mcmc.dlg import n_skip_for_budget
from dmcmc_fast.mcmc.dlg_watch import LABEL_CHAINS, MIN_PAIRS, MIN_SAMPLES, DLGMixingWarning, MixingWatch
from dmcmc_fast.models.builtin import load_model

TINY_DLG = ["--nfe", "4", "--num", "44", "--chains", "2", "--n-skip", "1", "--init-nfe", "2", "--n-init", "1",
            "--integrator", "euler", "--no-progress"]  # 22 blocks per chain: 42 consecutive pairs


@pytest.fixture(scope="module")
def weak(tmp_path_factory):
    """The issue's example: `dmcmc-fast train classifier --steps 1` (here on the 8x8 digits)."""
    out = tmp_path_factory.mktemp("weak") / "weak.pt"
    assert main(["train", "classifier", "--data", "digits", "--steps", "1", "--out", str(out), "--no-progress"]) == 0
    return str(out)


def test_a_classifier_whose_card_says_targets_missed_is_refused_in_one_line(weak, tmp_path, capsys):
    assert load_classifier(weak).meta["level_error_by_band"]["target"]["met"] is False
    capsys.readouterr()
    rc = main(["sample", "--model", "gmm-digits", "--sampler", "dlg", "--classifier", weak, *TINY_DLG,
               "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "weak.pt: its card says it misses its targets over sigma [0.1, 20]" in err
    assert "--allow-weak-classifier 1" in err and "--steps" in err
    assert not (tmp_path / "run").exists()  # refused before any file
    with pytest.raises(ValueError, match="misses its targets"):
        api.sample(load_model("gmm-digits"), "dlg", 4, 4, progress=False, classifier=weak, chains=2, n_skip=1,
                   init_nfe=2, n_init=1)


def test_the_override_runs_and_warns_in_one_line_that_the_chains_did_not_mix(weak, tmp_path):
    # as users run it (pytest would record the warning instead of printing it)
    cli = subprocess.run([sys.executable, "-m", "dmcmc_fast.cli", "sample", "--model", "gmm-digits", "--sampler",
                          "dlg", "--classifier", weak, "--allow-weak-classifier", "1", *TINY_DLG,
                          "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=600)
    assert cli.returncode == 0, cli.stderr
    err = [line for line in cli.stderr.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("dmcmc-fast: warning: dlg: the chains did not mix: "), err
    # the 1-step classifier sends every chain to its top level, sigma 80, and keeps it there
    assert ("100% of the 22 samples of blocks 11-21 denoised from the top level sigma 80 (median block sigma 80)"
            in err[0])
    assert " mode switches in 42 consecutive pairs of 2 chains; try a noise-level classifier that meets its" in err[0]
    with np.load(tmp_path / "run" / "samples.npz") as z:
        assert (z["sigma"][z["block"] >= 11] == np.float32(80.0)).all()  # what the warning read
    with pytest.warns(DLGMixingWarning, match="the chains did not mix"):
        api.sample(load_model("gmm-digits"), "dlg", 44, 4, progress=False, classifier=weak, allow_weak_classifier=1,
                   chains=2, n_skip=1, init_nfe=2, n_init=1, integrator="euler")


def test_a_healthy_run_gives_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error", DLGMixingWarning)
        out = api.sample(load_model("gmm-digits", modes=30), "dlg", 66, 6, seed=3, progress=False, chains=3,
                         n_levels=100)  # the paper's initialisation (a 4-NFE one leaves the chains at the top)
    # the books the watch read: chains below the top level that change mode
    labels = load_model("gmm-digits", modes=30).nearest_mode(out.samples).numpy()
    chain = out.meta["chain"]
    switches = sum(int((labels[chain == c][1:] != labels[chain == c][:-1]).sum()) for c in range(3))
    assert switches > 0 and float(np.median(out.meta["sigma"])) < 80.0


def test_committed_classifiers_pass_the_card_check():
    check_targets(load_classifier("mnist"))  # its card: the targets are met
    digits = load_classifier("digits")
    assert "level_error_by_band" not in digits.meta  # an older card without a verdict passes
    check_targets(digits)


# ---- the watch on hand-made books ----

def _books(chains: int, blocks: int, sigma):
    """Samples in sample order (block b of chain c is row b * chains + c) with their chain, block and sigma."""
    chain, block = np.tile(np.arange(chains), blocks), np.repeat(np.arange(blocks), chains)
    return torch.zeros(chains * blocks, 1), chain, block, np.full(chain.shape, float(sigma))


def test_the_watch_flags_a_block_sigma_pinned_at_the_top_after_the_first_half():
    x, chain, block, sigma = _books(4, 10, 80.0)  # the later half: blocks 5-9, 20 samples
    sigma[block < 5] = 1.0  # the first half does not count (a chain may start low)
    sigma[-1] = 1.0  # 19 of 20 at the top: 95% >= 90%
    w = MixingWatch(80.0, init_nfe=20)
    w.add(x[:20], chain[:20], block[:20], sigma[:20])  # two batches
    w.add(x[20:], chain[20:], block[20:], sigma[20:])
    assert w.warning() == ("dlg: the chains did not mix: 95% of the 20 samples of blocks 5-9 denoised from the top "
                           "level sigma 80 (median block sigma 80); try a noise-level classifier that meets its "
                           "targets (a trained one's card says; dmcmc-fast train classifier with larger --steps and "
                           "--max-minutes) or a longer initialisation, --init-nfe (now 20)")
    sigma[-3:] = 1.0  # 17 of 20: 85%, not pinned
    w = MixingWatch(80.0)
    w.add(x, chain, block, sigma)
    assert w.warning() is None
    x, chain, block, sigma = _books(MIN_SAMPLES, 1, 80.0)  # one block of MIN_SAMPLES chains: no pair to count
    w = MixingWatch(80.0, lambda rows: np.zeros(len(rows), int), "class")
    w.add(x, chain, block, sigma)
    assert w.warning().startswith(f"dlg: the chains did not mix: 100% of the {MIN_SAMPLES} samples of block 0 "
                                  "denoised from the top level sigma 80 (median block sigma 80); try ")
    w = MixingWatch(80.0)
    w.add(x[1:], chain[1:], block[1:], sigma[1:])  # too few samples to judge
    assert w.warning() is None


def test_the_watch_counts_switches_within_each_chain_in_block_order():
    chains, blocks = 3, 8  # 3 * 7 = 21 pairs >= MIN_PAIRS
    x, chain, block, sigma = _books(chains, blocks, 2.0)
    same = chain.copy()  # each chain keeps one label (its id)
    w = MixingWatch(80.0, lambda rows: same[: len(rows)], "class", eta=2.0)
    w.add(x, chain, block, sigma)
    assert (w.pairs, w.switches) == (21, 0)
    assert w.warning() == ("dlg: the chains did not mix: 0% of the 12 samples of blocks 4-7 denoised from the top "
                           "level sigma 80 (median block sigma 2); 0 class switches in 21 consecutive pairs of 3 "
                           "chains; try a larger --eta (now 2), --eta-scaling sigma2, or --restart-every 10")
    moving = same.copy()
    moving[-1] = 7  # one switch: chain 2's last block
    w = MixingWatch(80.0, lambda rows: moving[: len(rows)], "class")
    w.add(x, chain, block, sigma)
    assert (w.pairs, w.switches) == (21, 1) and w.warning() is None
    w = MixingWatch(80.0, lambda rows: same[: len(rows)], "class")  # too few pairs to judge
    w.add(x[: 3 * 7], chain[: 3 * 7], block[: 3 * 7], sigma[: 3 * 7])
    assert w.pairs == 18 < MIN_PAIRS and w.warning() is None


def test_the_watch_labels_only_the_first_chains():
    seen = []
    w = MixingWatch(80.0, lambda rows: seen.append(len(rows)) or np.zeros(len(rows), int), "class")
    chain = np.arange(LABEL_CHAINS + 10)
    w.add(torch.zeros(len(chain), 1), chain, np.zeros(len(chain), int), np.ones(len(chain)))
    assert seen == [LABEL_CHAINS] and len(w.last) == LABEL_CHAINS


# ---- n_skip from the budget ----

def test_n_skip_default_comes_from_the_budget_and_leaves_room_to_denoise():
    for nfe in range(2, 200):
        k = n_skip_for_budget(nfe)
        assert 1 <= k < nfe and n_skip_for_budget(nfe + 1) >= k
    digits = load_model("gmm-digits", modes=30)
    out = api.sample(digits, "dlg", 4, 10, progress=False, chains=2, n_levels=50, init_nfe=4, n_init=1)
    k = n_skip_for_budget(10)
    assert out.config["options"]["n_skip"] == k and out.config["options"]["n_den"] == 10 - k
    assert float(out.meta["classifier_evals"].min()) >= k  # k Gibbs steps per block
    given = api.sample(digits, "dlg", 4, 10, progress=False, chains=2, n_levels=50, init_nfe=4, n_init=1,
                       n_skip=k + 1)
    assert given.config["options"]["n_skip"] == k + 1 and given.config["options"]["n_den"] == 9 - k
    with pytest.raises(ValueError, match="nfe"):
        n_skip_for_budget(0)
