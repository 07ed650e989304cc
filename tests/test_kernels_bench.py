"""bench/kernels.py runs without a GPU (--cpu-smoke, Triton interpreter) and writes well-formed rows;
every timed launch does the work its bytes count; an empty --out / --md writes nothing."""
import json
from pathlib import Path

import pytest
import torch

from conftest import requires_cuda

from bench import kernels as bench_kernels  # noqa: E402


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the real run (test_gpu_bench_small) is tested")
def test_cpu_smoke_writes_rows(tmp_path, capsys):
    out, md = tmp_path / "k.jsonl", tmp_path / "k.md"
    rows = bench_kernels.main(["--cpu-smoke", "--kernels", "euler_step", "deis_combine_J3", "block_min_update",
                               "--out", str(out), "--md", str(md)])
    assert [r["kernel"] for r in rows] == ["euler_step", "deis_combine_J3", "block_min_update"]
    # (reads + writes) x B x N x 4
    assert [r["bytes"] for r in rows] == [4 * 2 * 300 * 4, 5 * 2 * 300 * 4, 2 * 2 * 300 * 4]
    for r in rows:
        assert r["fused_ms"][0] > 0 and r["torch_ms"][0] > 0 and r["copy_gbs"] > 0
    saved = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(saved) == 3 and saved[0]["interpreted"] and "cpu" in saved[0]["device"] and saved[0]["triton"]
    text = md.read_text()
    assert "## Kernel bandwidth" in text and "| block_min_update | 0.00 |" in text and "interpreter" in text
    assert "interpreter" in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU smoke run")
def test_empty_out_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    written = []
    monkeypatch.setattr(bench_kernels, "append_jsonl", lambda path, meta, rows: written.append(path))
    bench_kernels.main(["--cpu-smoke", "--kernels", "euler_step", "--out", "", "--md", ""])
    assert written == [""] and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_block_min_copies_in_every_timed_launch(backend, device):
    """The case's setup (untimed, before every launch) resets best_sigma, so each launch copies every row."""
    fn, args, k, setup = bench_kernels._cases(3, 70, torch.float32, device)["block_min_update"]
    x, sigma, best_x, best_sigma = args
    assert k == 2 and bool((sigma < best_sigma).all())
    launches = []

    def launch():
        best_x.fill_(float("nan"))  # poison: only a real copy makes best_x equal x again
        fn(*args, backend=backend)
        launches.append(torch.equal(best_x, x))

    bench_kernels._time_ms(launch, 3, device, setup)
    assert launches == [True] * len(launches) and len(launches) >= 4  # warm-up(s) + 3 timed


def test_time_ms_runs_setup_before_every_call():
    calls = []
    med, lo, hi = bench_kernels._time_ms(lambda: calls.append("fn"), 4, "cpu", lambda: calls.append("setup"))
    assert calls == ["setup", "fn"] * 5 and lo <= med <= hi


@pytest.mark.gpu
@requires_cuda
def test_gpu_bench_small():
    results = Path(bench_kernels.__file__).parent / "results"
    before = {p: p.stat().st_mtime_ns for p in results.glob("kernels.*")}
    # small: on the simulated device (gpu_check --sim) every launch runs in the Triton interpreter
    rows = bench_kernels.main(["--batch", "2", "--dim", "1024", "--reps", "3", "--out", "", "--md", ""])
    assert len(rows) == 12 and all(r["fused_gbs"] > 0 for r in rows)
    assert {p: p.stat().st_mtime_ns for p in results.glob("kernels.*")} == before  # committed results untouched


def test_a_section_is_rewritten_in_place_and_keeps_what_came_before(tmp_path):
    """bench.Section: the benchmarks rewrite their markdown section after every row (a run cut off at a stage limit
    keeps its rows); an earlier section of the same file (the fp32 run before the bf16 one) stays as it was."""
    from bench import Section
    md = tmp_path / "k.md"
    md.write_text("## fp32\nrow 1\n")
    section = Section(str(md))
    section.write("## bf16\nrow 1\nrow 2\n")
    section.write("## bf16\nrow 1\n")  # shorter: the old tail goes
    assert md.read_text() == "## fp32\nrow 1\n## bf16\nrow 1\n"
    Section("").write("nothing")  # no path: writes nothing, raises nothing
