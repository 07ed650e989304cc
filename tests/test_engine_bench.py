"""bench/engine.py runs without a GPU (--cpu-smoke) and reports well-formed rows: at batch 16 the
pipelined run packs 5 chains x (1 + 2 job rows) <= 16 rows per network call and needs n_skip + (calls per
job) calls for its one block."""
import json

import pytest
import torch

from bench import engine as bench_engine  # noqa: E402


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the script runs the real UNet (a later session)")
def test_cpu_smoke_writes_rows(tmp_path, capsys):
    out = tmp_path / "e.jsonl"
    rows = bench_engine.main(["--cpu-smoke", "--out", str(out)])
    assert [r["batch"] for r in rows] == [1, 16]
    r16 = rows[1]
    assert r16["calls_per_job"] == 9  # heun in n_den = 10: N = 5 steps, 2N - 1 calls
    assert r16["chains"] == 5 and r16["engine_calls"] == 5 + 9
    for r in rows:
        assert r["bare_ms"][0] > 0 and r["per_call_ms"] > 0 and r["engine_samples_s"] > 0 and r["plain_samples_s"] > 0
        assert r["graph"] == "eager"
    saved = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(saved) == 2 and "cpu" in saved[0]["device"] and saved[0]["bench"] == "engine"
    assert "say nothing about GPU" in capsys.readouterr().out
