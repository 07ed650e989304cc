"""bench/kernels.py runs without a GPU (--cpu-smoke, Triton interpreter) and writes well-formed rows."""
import json

import pytest
import torch

from conftest import requires_cuda

from bench import kernels as bench_kernels  # noqa: E402


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the real run (test_gpu_bench_small) is tested")
def test_cpu_smoke_writes_rows(tmp_path, capsys):
    out = tmp_path / "k.jsonl"
    rows = bench_kernels.main(["--cpu-smoke", "--kernels", "euler_step", "deis_combine_J3", "--out", str(out)])
    assert [r["kernel"] for r in rows] == ["euler_step", "deis_combine_J3"]
    assert rows[0]["bytes"] == 4 * 2 * 300 * 4 and rows[1]["bytes"] == 5 * 2 * 300 * 4  # (reads + writes) x B x N x 4
    for r in rows:
        assert r["fused_ms"][0] > 0 and r["torch_ms"][0] > 0 and r["copy_gbs"] > 0
    saved = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(saved) == 2 and saved[0]["interpreted"] and "cpu" in saved[0]["device"] and saved[0]["triton"]
    assert "interpreter" in capsys.readouterr().out


@requires_cuda
def test_gpu_bench_small():
    rows = bench_kernels.main(["--batch", "8", "--dim", "4096", "--reps", "10", "--out", ""])
    assert len(rows) == 12 and all(r["fused_gbs"] > 0 for r in rows)
