"""bench.rk45_batching: both solvers run on the same inputs and the report says how they compare."""
from bench import rk45_batching


def test_rk45_batching_bench_compares_both_solvers(tmp_path):
    out = str(tmp_path / "rk")
    rk45_batching.main(["--model", "gmm-digits", "--num", "3", "--tol", "0.3", "--threads", "1", "--out", out])
    r = __import__("json").load(open(out + ".json"))
    ref, ours = r["rows"]
    assert ref["nfe"] == ours["nfe"] and r["same_nfe"] == 3  # same per-sample step decisions
    assert r["max_abs_diff_same_nfe"] < 1e-3 and r["speedup"] > 0
    assert (tmp_path / "rk.png").exists() and "Speed-up" in (tmp_path / "rk.md").read_text()
