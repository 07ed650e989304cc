"""scripts/gpu_check.sh, the one command a lent GPU runs first, cannot rot: its --dry-run runs every stage
on the CPU at tiny sizes and each must pass; and every test that skips without CUDA carries the `gpu`
marker that the script's CUDA-test stage selects (`pytest -m gpu`)."""
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
STAGES = ["env", "wheels", "build", "aot", "cuda-tests", "kernel-tests", "bench-kernels-fp32", "bench-kernels-bf16",
          "bench-engine", "bench-throughput"]


def _env(**extra):
    env = dict(os.environ, **extra)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")  # this venv's python3 first
    env.pop("PYTHON", None)
    env.pop("TRITON_INTERPRET", None)  # as on a fresh shell: each stage sets what it needs
    return env


QUICK_STAGES = ["env", "wheels", "build", "bench-kernels-fp32", "bench-engine", "bench-throughput"]
OUT_FILES = ["gpu_check.log", "results.md", "results.tar.gz", "summary.json", "summary.md"]


def _gpu_limits(name: str) -> dict:
    """{stage: its time limit on the GPU} as scripts/gpu_check.sh declares them (`STAGES` or `QUICK_STAGES`)."""
    text = (ROOT / "scripts" / "gpu_check.sh").read_text()
    decl = re.search(rf"^{name}=\((.*?)\)", text, re.S | re.M).group(1)
    return {stage: int(limit) for stage, limit in (item.split(":") for item in decl.split())}


def _scale(mode: str) -> int:
    """The multiple of the GPU limits that gpu_check.sh gives a CPU rehearsal (`SCALE=`)."""
    line = re.search(r"^SCALE=.*$", (ROOT / "scripts" / "gpu_check.sh").read_text(), re.M).group(0)
    sim, dry = re.search(r'"\$SIM" = 1 \] && echo (\d+)', line), re.search(r'"\$DRY" = 1 \] && echo (\d+)', line)
    return int({"--sim": sim, "--dry-run": dry}[mode].group(1))


def _timeout(stages, mode: str) -> int:
    """The test's own limit on a rehearsal: its stages' (scaled) limits, plus a minute."""
    name = "QUICK_STAGES" if stages == QUICK_STAGES else "STAGES"
    return sum(_gpu_limits(name).values()) * _scale(mode) + 60


def _every_stage_passes(mode: str, out, timeout: int, stages=STAGES, **env):
    """Run `gpu_check.sh <mode...>` into `out`; every stage ran and passed with at least 2x headroom on its time
    limit (CI's load must not bring a stage near its limit). -> (summary, {stage: its row})."""
    proc = subprocess.run(["bash", "scripts/gpu_check.sh", *mode.split()], cwd=ROOT, env=_env(OUT=str(out), **env),
                          capture_output=True, text=True, timeout=timeout)
    summary = json.loads((out / "summary.json").read_text())
    got = {s["stage"]: s for s in summary["stages"]}
    assert list(got) == stages
    failed = {k: f"{s['status']}: {s['note']}" for k, s in got.items() if s["status"] != "pass"}
    assert not failed, f"{failed}\n{proc.stdout[-4000:]}"
    assert proc.returncode == 0
    tight = {k: (s["seconds"], s["limit_s"]) for k, s in got.items() if not 0 <= 2 * s["seconds"] <= s["limit_s"]}
    assert not tight, f"stages with less than 2x headroom (seconds, limit): {tight}"
    assert sorted(p.name for p in out.iterdir()) == OUT_FILES  # no half-written file left beside them
    return summary, got


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU machine runs the real thing: bash scripts/gpu_check.sh")
def test_dry_run_passes_every_stage(tmp_path):
    summary, got = _every_stage_passes("--dry-run", tmp_path, timeout=_timeout(STAGES, "--dry-run"))
    assert summary["dry_run"] is True and summary["quick"] is False
    gpu = _gpu_limits("STAGES")
    assert list(gpu) == STAGES and sum(gpu.values()) <= 480  # the GPU run fits 8 minutes
    # the rehearsal's limits are a generous multiple of the GPU's (a loaded CPU is no reason to fail)
    assert {k: int(s["limit_s"]) for k, s in got.items()} == {k: v * _scale("--dry-run") for k, v in gpu.items()}
    # what the device tool brings back: at most 8 files, flat (checked in _every_stage_passes)
    with tarfile.open(tmp_path / "results.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"results/kernels.jsonl", "results/kernels.md", "results/engine.jsonl", "results/engine.md",
            "results/cuda-tests.xml", "summary.md"} <= names
    assert any(n.startswith("results/throughput/throughput-cpu-") and n.endswith(".json") for n in names)
    results = (tmp_path / "results.md").read_text()
    assert "## Kernel bandwidth" in results and "## Engine overhead" in results and "## Throughput" in results
    assert "| bench-throughput | pass |" in (tmp_path / "summary.md").read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU machine runs the real thing: bash scripts/gpu_check.sh")
def test_quick_dry_run_gives_the_headline_stages_in_three_minutes(tmp_path):
    """--quick: only the stages the three headline figures need (kernel GB/s, time per NFE, samples/s against the
    baselines), their limits adding up to at most 3 minutes; each writes its section."""
    summary, got = _every_stage_passes("--quick --dry-run", tmp_path, timeout=_timeout(QUICK_STAGES, "--dry-run"),
                                       stages=QUICK_STAGES)
    assert summary["quick"] is True and summary["dry_run"] is True
    quick = _gpu_limits("QUICK_STAGES")
    assert list(quick) == QUICK_STAGES and sum(quick.values()) <= 180  # on the GPU: at most 3 minutes
    assert summary["limit_s"] == sum(quick.values()) * _scale("--dry-run")
    results = (tmp_path / "results.md").read_text()
    assert "## Kernel bandwidth" in results and "## Engine overhead" in results and "## Throughput" in results
    assert "(quick) (dry run, CPU)" in (tmp_path / "summary.md").read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU machine runs the real thing: bash scripts/gpu_check.sh")
def test_only_runs_the_chosen_stages_and_refuses_unknown_ones(tmp_path):
    proc = subprocess.run(["bash", "scripts/gpu_check.sh", "--dry-run", "--only", "env,bench-kernels-fp32"], cwd=ROOT,
                          env=_env(OUT=str(tmp_path)), capture_output=True, text=True, timeout=200)
    assert proc.returncode == 0, proc.stdout[-3000:]
    got = {s["stage"]: s for s in json.loads((tmp_path / "summary.json").read_text())["stages"]}
    assert list(got) == STAGES
    assert {k for k, s in got.items() if s["status"] == "pass"} == {"env", "bench-kernels-fp32"}
    assert all(s["status"] == "skip" and s["note"] == "not in --only" for k, s in got.items()
               if k not in ("env", "bench-kernels-fp32"))
    assert "## Kernel bandwidth" in (tmp_path / "results.md").read_text()
    bad = subprocess.run(["bash", "scripts/gpu_check.sh", "--quick", "--dry-run", "--only", "env,aot"], cwd=ROOT,
                         env=_env(OUT=str(tmp_path / "bad")), capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--only: no stage 'aot' in this run" in bad.stderr  # aot is not in --quick


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU machine runs the real thing: bash scripts/gpu_check.sh")
def test_results_are_written_while_a_stage_runs(tmp_path):
    """A stage cut off, or the whole call cut off, still brings back what was done: while a stage runs, the
    summary (its row 'running') and results are rewritten every GPU_CHECK_FLUSH_S seconds."""
    proc = subprocess.Popen(["bash", "scripts/gpu_check.sh", "--dry-run", "--only", "bench-throughput"], cwd=ROOT,
                            env=_env(OUT=str(tmp_path), GPU_CHECK_FLUSH_S="1"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    seen = []
    try:
        while proc.poll() is None:
            try:
                stages = json.loads((tmp_path / "summary.json").read_text())["stages"]
            except (FileNotFoundError, json.JSONDecodeError):  # a half-written file would fail here
                stages = []
            seen += [s for s in stages if s["status"] == "running"]
            time.sleep(0.2)
    finally:
        proc.wait(timeout=200)
    assert proc.returncode == 0
    assert seen and all(s["stage"] == "bench-throughput" and s["seconds"] >= 1 for s in seen)
    final = {s["stage"]: s["status"] for s in json.loads((tmp_path / "summary.json").read_text())["stages"]}
    assert final["bench-throughput"] == "pass"
    assert sorted(p.name for p in tmp_path.iterdir()) == OUT_FILES


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU machine runs the real thing: bash scripts/gpu_check.sh")
def test_sim_run_passes_every_stage_on_the_simulated_device(tmp_path):
    """The GPU run's own commands (the CUDA branches of the tests and benchmarks, not their CPU smoke twins) on
    the simulated CUDA device of tests/sim_cuda.py: what would break at first contact breaks here."""
    summary, got = _every_stage_passes("--sim", tmp_path, timeout=_timeout(STAGES, "--sim"))
    assert summary["sim"] is True and summary["dry_run"] is False
    assert summary["device"].startswith("SimCuda")
    assert "passed" in got["cuda-tests"]["note"] and "passed" in got["kernel-tests"]["note"]  # run, not skipped
    assert "mode=graph" in got["bench-engine"]["note"]  # the engine bench timed the captured path
    assert "cifar-unet" in got["bench-throughput"]["note"] and "gmm-mnist" in got["bench-throughput"]["note"]
    results = (tmp_path / "results.md").read_text()
    assert "## Kernel bandwidth" in results and "## Engine overhead" in results and "## Throughput" in results


PROBE = '''
import json

def pytest_collection_modifyitems(session, config, items):
    unmarked, gpu_files = [], set()
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            gpu_files.add(item.nodeid.split("::")[0])
        for m in item.iter_markers("skipif"):
            cond = m.args[0] if m.args else m.kwargs.get("condition")
            reason = m.kwargs.get("reason", "")
            if cond is True and ("CUDA" in reason or "GPU" in reason) and item.get_closest_marker("gpu") is None:
                unmarked.append(item.nodeid)
    print("UNMARKED " + json.dumps(unmarked))
    print("GPU_FILES " + json.dumps(sorted(gpu_files)))
'''


@pytest.mark.skipif(torch.cuda.is_available(), reason="the skip conditions are only true without CUDA")
def test_every_cuda_only_test_is_marked_gpu(tmp_path):
    (tmp_path / "gpu_marker_probe.py").write_text(PROBE)
    env = _env(PYTHONPATH=str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "gpu_marker_probe",
                           "-p", "no:cacheprovider", "tests"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("UNMARKED ")]
    assert line, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert json.loads(line[0][len("UNMARKED "):]) == [], "add @pytest.mark.gpu to these CUDA-only tests"
    # gpu_check.sh's cuda-tests stage collects only the files its grep finds: every file with a gpu test among them
    files = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("GPU_FILES ")][0][len("GPU_FILES "):])
    grep = subprocess.run("grep -lE 'mark\\.gpu|requires_cuda' tests/test_*.py", shell=True, cwd=ROOT,
                          capture_output=True, text=True).stdout.split()
    assert files and set(files) <= set(grep), (files, grep)


def test_image_rehearsal_parses_and_pins_the_image_triton_that_setup_compiles_with():
    """scripts/image_rehearsal.sh (not run here: it downloads the image's stack) parses, and its Triton pin is the
    one scripts/setup.sh installs for the AOT compile test: the two stand-ins for the GPU image cannot drift apart."""
    script = ROOT / "scripts" / "image_rehearsal.sh"
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    compiled_with = re.search(r"^GPU_IMAGE_TRITON=(\S+)$", (ROOT / "scripts" / "setup.sh").read_text(), re.M).group(1)
    pinned = re.findall(r'"triton==([^"]+)"', script.read_text())
    assert pinned == [compiled_with], (pinned, compiled_with)
