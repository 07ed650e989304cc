"""bench/dlg_mixing.py runs end to end on a small grid and reports well-formed rows: the integrator alone
first, then each DLG variant with its amortised NFE, an FD interval that contains the FD, and mixing."""
import json

from bench import dlg_mixing


def test_small_grid(tmp_path):
    out, md = tmp_path / "m.json", tmp_path / "m.md"
    rows = dlg_mixing.main(["--model", "gmm-digits", "--num", "24", "--chains", "4", "--nfe", "8", "--n-skip", "2",
                            "--variants", "eta2,sigma2_eta1", "--boot", "4", "--out", str(out), "--md", str(md)])
    assert [r["variant"] for r in rows] == ["heun alone", "eta2", "sigma2_eta1"]
    assert rows[0]["nfe_per_sample"] <= 8 and "mode_switch_rate" not in rows[0]
    for r in rows[1:]:
        assert 8 < r["nfe_per_sample"] < 8 + 30  # the block, plus a sixth of the chain's initialisation
        lo, hi = r["fd_ci90"]
        assert lo <= hi and 0 <= r["mode_switch_rate"] <= 1 and r["options"]["chains"] == 4
    assert json.loads(out.read_text())["meta"]["iid_coverage"] > 0
    assert "| sigma2_eta1 | eta_scaling=sigma2, eta=1.0 |" in md.read_text()
