"""bench/engine.py runs without a GPU (--cpu-smoke) and reports well-formed rows: it times
`api.sample(..., graph=...)`, the path users run, for heun and DLG, against the bare forward, says which
path each call took, and the variants agree on the samples (same seed)."""
import json

import pytest
import torch

from bench import engine as bench_engine  # noqa: E402


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the script runs the real UNet (gpu_check.sh)")
def test_cpu_smoke_writes_rows(tmp_path, capsys):
    out, md = tmp_path / "e.jsonl", tmp_path / "e.md"
    rows = bench_engine.main(["--cpu-smoke", "--out", str(out), "--md", str(md)])
    assert [(r["sampler"], r["batch"]) for r in rows] == [("heun", 1), ("heun", 4), ("dlg", 1), ("dlg", 4)]
    for r in rows:
        assert set(r["variants"]) == {"api", "eager"}
        assert r["batches_per_call"] == 2 and r["variants"]["api"]["first_batch_ms"] > 0
        assert r["steady_ratio"] > 0 and r["variants"]["api"]["path"]["mode"] == "eager"  # graph="auto" on the CPU
        assert r["variants"]["api"]["keywords"] == {"graph": "auto"}
        assert r["variants"]["eager"]["keywords"] == {"graph": "off"}
        assert r["bare_ms"][0] > 0 and r["per_nfe_ms"] > 0 and r["ratio"] > 0
        assert r["bare_forward"].startswith("eager")  # no CUDA graph on the CPU
        assert isinstance(r["path"], dict) and r["path"]
        for v in r["variants"].values():
            assert v["max_abs_diff_vs_api"] <= 1e-5
    heun, dlg = rows[1], rows[3]
    assert heun["variants"]["api"]["nfe"] == 5  # exactly the budget: 3 Heun steps, 2N - 1
    # a block (15 NFE budget) plus half of the chain's 4-NFE initialisation (2 blocks per chain)
    assert dlg["nfe_budget"] == 15 and 15 + 2 >= dlg["variants"]["api"]["nfe"] > 2 + 5
    saved = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(saved) == 4 and "cpu" in saved[0]["device"] and saved[0]["bench"] == "engine"
    assert "classifier" not in saved[2]["options"]  # a temporary path, not data
    assert "## Engine overhead" in md.read_text() and "| dlg | 4 |" in md.read_text()
    text = capsys.readouterr().out
    assert "say nothing about GPU" in text and "# summary: 4 rows" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU smoke run")
def test_max_seconds_lists_rows_not_run(tmp_path, capsys):
    rows = bench_engine.main(["--cpu-smoke", "--samplers", "heun", "--max-seconds", "0", "--out", "",
                              "--md", str(tmp_path / "e.md")])
    assert rows == []
    assert "not run: heun B=1" in (tmp_path / "e.md").read_text()
    assert "# not run: heun B=4" in capsys.readouterr().out
