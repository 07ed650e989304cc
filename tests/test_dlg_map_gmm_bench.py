"""bench/dlg_map_gmm.py runs end to end on a small grid: per width and target, each integrator alone and as DLG's
denoiser, DLG's block budget chosen so its amortised NFE (restarts included) stays within target + 1."""
import json

import pytest

from bench import dlg_map_gmm


def test_block_budget_keeps_the_amortised_nfe_within_the_target():
    opts = {"chains": 50, "n_skip": 3}
    assert dlg_map_gmm.block_budget(20, opts, 2000, 50) == 20  # 30 NFE of init over 40 blocks: 0.75 per sample
    assert dlg_map_gmm.block_budget(20, dict(opts, restart_every=10), 2000, 50) == 18  # 4 inits: 3 per sample
    assert dlg_map_gmm.block_budget(20, dict(opts, restart_every=4), 2000, 50) == 13  # 10 inits: 7.5
    with pytest.raises(ValueError, match="no denoising budget"):
        dlg_map_gmm.block_budget(10, dict(opts, restart_every=2), 2000, 50)


def test_small_map(tmp_path):
    out, md = tmp_path / "m.json", tmp_path / "m.md"
    rows = dlg_map_gmm.main(["--model", "gmm-digits", "--std", "0.1", "--integrators", "heun,euler", "--nfe", "12",
                             "--variants", "eta2,restart4,restart2", "--num", "80", "--chains", "4", "--boot", "4",
                             "--out", str(out), "--md", str(md)])
    assert [r["variant"] for r in rows] == ["heun alone, sigma_min 0.002", "heun alone", "DLG(heun), eta2",
                                            "DLG(heun), restart4", "euler alone", "DLG(euler), eta2",
                                            "DLG(euler), restart4"]
    for r in rows:
        assert r["nfe_per_sample"] <= 13 + 1e-9, r  # within target + 1, the initialisations' share included
    assert rows[3]["nfe_budget"] < rows[2]["nfe_budget"]  # restarts leave less for the block
    meta = json.loads(out.read_text())["meta"]
    assert meta["variants"] == ["eta2", "restart4", "restart2"]
    assert len(meta["skipped"]) == 2 and "restart2" in meta["skipped"][0]  # 10 inits: no room for a block
    text = md.read_text()
    assert "### std 0.1" in text and "| 12 | DLG(euler), restart4 |" in text
    assert "- not run: std 0.1, DLG(heun), restart2" in text
