"""bench/dlg_vs_alone.py runs end to end on a tiny grid: Heun alone and DLG with its defaults over two seeds, NFE
per sample as budgeted (DLG: the block plus the initialisation's share), FD per seed with a bootstrap interval,
the mean over seeds with its interval, DLG's difference to Heun alone; and its rows for an n_skip sweep."""
import argparse
import json

import numpy as np
import pytest

from bench import dlg_vs_alone
from dmcmc_fast.mcmc.dlg import n_skip_for_budget


def test_tiny_grid_over_two_seeds(tmp_path):
    md = tmp_path / "d.md"
    rows = dlg_vs_alone.main(["--num", "8", "--chains", "2", "--seeds", "0,1", "--boot", "20",
                              "--out", str(tmp_path / "d.json"), "--md", str(md)])
    assert [r["sampler"] for r in rows] == ["heun", "dlg"]
    alone, dlg = rows
    assert alone["options"] == {"sigma_min": 0.02} and all(s["nfe"] == 11 for s in alone["seeds"])
    assert "n_skip" not in dlg["options"]  # the library's default for the budget
    for s in dlg["seeds"]:
        assert 10 < s["nfe"] <= 10 + 30 / 4  # block + init share (4 blocks per chain)
        assert 0.0 <= s["class_switch_rate"] <= 1.0 and s["block_sigma_median"] > 0
    for r in rows:
        fds = [s["fd"] for s in r["seeds"]]
        assert [s["seed"] for s in r["seeds"]] == [0, 1] and len(set(fds)) == 2
        assert r["fd_mean"] == pytest.approx(np.mean(fds))
        for s in r["seeds"]:
            lo, hi = s["fd_ci90"]
            assert lo <= s["fd"] <= hi and len(s["draws"]) == 20
        # the mean's replicate b is the mean of the seeds' replicates b
        want = np.quantile(np.mean([s["draws"] for s in r["seeds"]], axis=0), [0.05, 0.95])
        assert r["fd_mean_ci90"] == pytest.approx(list(want))
    assert dlg["vs_alone"] == pytest.approx(dlg["fd_mean"] - alone["fd_mean"])
    assert dlg["seeds_better"] == sum(a["fd"] > d["fd"] for a, d in zip(alone["seeds"], dlg["seeds"]))
    text = md.read_text()
    assert f"| DLG(heun), n_skip {n_skip_for_budget(10)} (the default) |" in text and "| heun alone | 11.00 |" in text
    assert json.loads((tmp_path / "d.json").read_text())["meta"]["seeds"] == "0,1"
    md.unlink()  # the table again from the JSON alone
    dlg_vs_alone.main(["--render", "--out", str(tmp_path / "d.json"), "--md", str(md)])
    assert md.read_text() == text


def test_an_n_skip_sweep_marks_the_default_and_does_not_run_it_twice():
    k = n_skip_for_budget(10)
    a = argparse.Namespace(nfe=[10], n_skips=[k, k + 1], integrators=[], integrator_options="", chains=5)
    rows = dlg_vs_alone.rows_for(a)
    assert [(r[1], r[2], r[3].get("n_skip")) for r in rows] == [("heun", 11, None), ("dlg", 10, k), ("dlg", 10, k + 1)]
    a.n_skips = [k + 1]
    assert [r[3].get("n_skip") for r in dlg_vs_alone.rows_for(a)] == [None, k + 1, None]  # + the defaults' row
    assert dlg_vs_alone.label({"row": "DLG(heun), n_skip 9", "sampler": "dlg", "nfe_budget": 10,
                               "options": {"n_skip": k}}) == f"DLG(heun), n_skip {k} (the default)"


def test_summaries_compare_each_dlg_row_with_alone_and_with_the_default_n_skip():
    k = n_skip_for_budget(10)

    def row(sampler, fds, **opts):
        return {"row": "r", "sampler": sampler, "nfe_budget": 10, "options": opts,
                "seeds": [{"seed": i, "fd": f, "draws": [f - 1.0, f, f + 1.0]} for i, f in enumerate(fds)]}

    rows = [row("heun", [10.0, 20.0]), row("dlg", [12.0, 14.0], integrator="heun"),
            row("dlg", [30.0, 10.0], integrator="heun", n_skip=k + 1)]
    dlg_vs_alone.summarise(rows)
    alone, default, other = rows
    assert default["vs_alone"] == pytest.approx(-2.0) and default["seeds_better"] == 1 and "vs_default" not in default
    assert other["vs_alone"] == pytest.approx(5.0) and other["seeds_better"] == 1
    assert other["vs_default"] == pytest.approx(7.0)
    assert other["vs_default_ci90"] == pytest.approx(list(np.quantile([7.0, 7.0, 7.0], [0.05, 0.95])))
