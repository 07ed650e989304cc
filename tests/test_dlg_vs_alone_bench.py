"""bench/dlg_vs_alone.py runs end to end on a tiny grid: four rows (Heun alone twice, DLG twice), NFE per
sample as budgeted (DLG: the block plus the initialisation's share), one FD per seed."""
from bench import dlg_vs_alone


def test_tiny_grid(tmp_path):
    rows = dlg_vs_alone.main(["--num", "8", "--chains", "2", "--seeds", "0", "--out", str(tmp_path / "d.json"),
                              "--md", str(tmp_path / "d.md")])
    assert [r["sampler"] for r in rows] == ["heun", "heun", "dlg", "dlg"]
    assert rows[0]["seeds"][0]["nfe"] == 11 and rows[1]["options"] == {"sigma_min": 0.02}
    for r in rows[2:]:
        assert 10 < r["seeds"][0]["nfe"] <= 10 + 30 / 4  # block + init share (4 blocks per chain)
    assert all(r["fd_mean"] > 0 for r in rows)
    assert "| DLG(heun), eta 4 |" in (tmp_path / "d.md").read_text()
