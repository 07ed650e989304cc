"""scripts/gpu_check.sh, the one command a lent GPU runs first, cannot rot: its --dry-run runs every stage
on the CPU at tiny sizes and each must pass; and every test that skips without CUDA carries the `gpu`
marker that the script's CUDA-test stage selects (`pytest -m gpu`)."""
import json
import os
import re
import subprocess
import sys
import tarfile
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


def _gpu_limits() -> dict:
    """{stage: its time limit on the GPU} as scripts/gpu_check.sh declares them."""
    text = (ROOT / "scripts" / "gpu_check.sh").read_text()
    decl = re.search(r"^STAGES=\((.*?)\)", text, re.S | re.M).group(1)
    return {name: int(limit) for name, limit in (item.split(":") for item in decl.split())}


def _scale(mode: str) -> int:
    """The multiple of the GPU limits that gpu_check.sh gives a CPU rehearsal (`SCALE=`)."""
    text = (ROOT / "scripts" / "gpu_check.sh").read_text()
    line = re.search(r"^SCALE=.*$", text, re.M).group(0)
    sim, dry = re.search(r'"\$SIM" = 1 \] && echo (\d+)', line), re.search(r'"\$DRY" = 1 \] && echo (\d+)', line)
    return int({"--sim": sim, "--dry-run": dry}[mode].group(1))


def _timeout(mode: str) -> int:
    """The test's own limit on a rehearsal: every stage's (scaled) limit, plus a minute."""
    return sum(_gpu_limits().values()) * _scale(mode) + 60


def _every_stage_passes(mode: str, out, timeout: int):
    """Run `gpu_check.sh <mode>` into `out`; every stage ran and passed. -> (summary, {stage: its row})."""
    proc = subprocess.run(["bash", "scripts/gpu_check.sh", mode], cwd=ROOT, env=_env(OUT=str(out)),
                          capture_output=True, text=True, timeout=timeout)
    summary = json.loads((out / "summary.json").read_text())
    got = {s["stage"]: s for s in summary["stages"]}
    assert list(got) == STAGES
    failed = {k: f"{s['status']}: {s['note']}" for k, s in got.items() if s["status"] != "pass"}
    assert not failed, f"{failed}\n{proc.stdout[-4000:]}"
    assert proc.returncode == 0
    return summary, got


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU machine runs the real thing: bash scripts/gpu_check.sh")
def test_dry_run_passes_every_stage(tmp_path):
    summary, got = _every_stage_passes("--dry-run", tmp_path, timeout=_timeout("--dry-run"))
    assert summary["dry_run"] is True
    assert all(0 <= s["seconds"] <= s["limit_s"] for s in got.values())
    gpu = _gpu_limits()
    assert list(gpu) == STAGES and sum(gpu.values()) == 480  # the GPU run fits 8 minutes
    # the rehearsal's limits are a generous multiple of the GPU's (a loaded CPU is no reason to fail)
    assert {k: int(s["limit_s"]) for k, s in got.items()} == {k: v * _scale("--dry-run") for k, v in gpu.items()}
    # what the device tool brings back: at most 8 files, flat
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu_check.log", "results.md", "results.tar.gz",
                                                          "summary.json", "summary.md"]
    with tarfile.open(tmp_path / "results.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"results/kernels.jsonl", "results/kernels.md", "results/engine.jsonl", "results/engine.md",
            "results/cuda-tests.xml", "summary.md"} <= names
    assert any(n.startswith("results/throughput/throughput-cpu-") and n.endswith(".json") for n in names)
    results = (tmp_path / "results.md").read_text()
    assert "## Kernel bandwidth" in results and "## Engine overhead" in results and "## Throughput" in results
    assert "| bench-throughput | pass |" in (tmp_path / "summary.md").read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU machine runs the real thing: bash scripts/gpu_check.sh")
def test_sim_run_passes_every_stage_on_the_simulated_device(tmp_path):
    """The GPU run's own commands (the CUDA branches of the tests and benchmarks, not their CPU smoke twins) on
    the simulated CUDA device of tests/sim_cuda.py: what would break at first contact breaks here."""
    summary, got = _every_stage_passes("--sim", tmp_path, timeout=_timeout("--sim"))
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
    unmarked = []
    for item in items:
        for m in item.iter_markers("skipif"):
            cond = m.args[0] if m.args else m.kwargs.get("condition")
            reason = m.kwargs.get("reason", "")
            if cond is True and ("CUDA" in reason or "GPU" in reason) and item.get_closest_marker("gpu") is None:
                unmarked.append(item.nodeid)
    print("UNMARKED " + json.dumps(unmarked))
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


def test_image_rehearsal_parses_and_pins_the_image_triton_that_setup_compiles_with():
    """scripts/image_rehearsal.sh (not run here: it downloads the image's stack) parses, and its Triton pin is the
    one scripts/setup.sh installs for the AOT compile test: the two stand-ins for the GPU image cannot drift apart."""
    script = ROOT / "scripts" / "image_rehearsal.sh"
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    compiled_with = re.search(r"^GPU_IMAGE_TRITON=(\S+)$", (ROOT / "scripts" / "setup.sh").read_text(), re.M).group(1)
    pinned = re.findall(r'"triton==([^"]+)"', script.read_text())
    assert pinned == [compiled_with], (pinned, compiled_with)
