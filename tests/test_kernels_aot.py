"""Ahead-of-time compilation of the Triton kernels (`dmcmc_fast.kernels.aot`) for sm_80 and sm_90, on the CPU.

The other kernel tests run under TRITON_INTERPRET=1, which accepts code the compiler refuses. Here: the
variant table covers every `_..._kernel` of the package (a new kernel without variants fails), its
launches reach what the table claims (dtypes, both BLOCK ends, the int specialisation classes), and
every variant compiles to a cubin for both targets (a subprocess started without TRITON_INTERPRET).
"""
import importlib
import json
import os
import pkgutil
import subprocess
import sys
from collections import defaultdict

import dmcmc_fast.kernels as kernels_pkg
from dmcmc_fast.kernels import aot

ARCHS = (80, 90)


def _jit_kernels() -> set[str]:
    """'module.function' of every @triton.jit function named *_kernel defined in a dmcmc_fast.kernels module
    (JITFunction, or InterpretedFunction under TRITON_INTERPRET=1: both keep the Python function in .fn)."""
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    found = set()
    for info in pkgutil.iter_modules(kernels_pkg.__path__):
        mod = importlib.import_module(f"{kernels_pkg.__name__}.{info.name}")
        for name, obj in vars(mod).items():
            if (isinstance(obj, (JITFunction, InterpretedFunction)) and name.endswith("_kernel")
                    and obj.fn.__module__ == mod.__name__):
                found.add(f"{info.name}.{name}")
    return found


def test_variant_table_covers_every_kernel():
    found = _jit_kernels()
    assert len(found) >= 10, found
    assert set(aot.VARIANTS) == found, (f"kernels without AOT variants: {sorted(found - set(aot.VARIANTS))}; "
                                        f"table entries that are no kernel: {sorted(set(aot.VARIANTS) - found)}")


def _int_class(v: int) -> str:
    """Triton's specialisation of an int argument: == 1 -> constexpr, % 16 == 0 -> divisible, else plain."""
    return "one" if v == 1 else "div16" if v % 16 == 0 else "other"


def test_launches_reach_the_claimed_variants():
    """Recorded launches (no compile): per kernel every state dtype, BLOCK 16 and 1024, and for each int
    argument the classes 1 / multiple of 16 / other; the low seed word also >= 2**31 (an i64)."""
    for kernel in aot.VARIANTS:
        ptr_dtypes, blocks, ints = set(), defaultdict(set), defaultdict(set)
        for v in aot.variants([kernel]):
            fn, args, kwargs = aot.launch_args(v)
            ptr_dtypes.add(args[0].dtype)
            for k in ("BLOCK", "BLOCK_N"):
                if k in kwargs:
                    blocks[k].add(kwargs[k])
            for name, a in zip(fn.arg_names, args):
                if isinstance(a, int) and not isinstance(a, bool):
                    ints[name].add(_int_class(a))
                    if a >= 2**31:
                        ints[name].add("i64")
        assert ptr_dtypes == set(aot.DTYPES.values()), (kernel, ptr_dtypes)
        assert blocks and all({16, 1024} <= b for b in blocks.values()), (kernel, dict(blocks))
        for name, classes in ints.items():
            if (kernel, name) == ("underdamped._obabo_kernel", "stream"):
                continue  # fixed by the launcher (STREAM_MOMENTUM, + 8), not taken from the caller
            assert {"one", "div16", "other"} <= classes, (kernel, name, classes)
        if "seed_lo" in ints:
            assert "i64" in ints["seed_lo"], kernel


# PTX instructions per thread (kernels.aot.ptx_instructions) at the n = 784 launch (BLOCK 1024, 8 elements per
# thread; gibbs' selection at M = 1000), the most over every dtype, switch and arch: about 10% over what
# bench/ptx_counts.py measured (bench/RESULTS.md), so a change that adds real work to a kernel fails here.
PTX_CEILINGS = {
    "langevin._langevin_kernel": 570, "langevin._mild_kernel": 630, "underdamped._baoab_limit_kernel": 610,
    "underdamped._obabo_kernel": 690, "karras_step._euler_kernel": 120, "karras_step._heun_kernel": 160,
    "karras_step._churn_kernel": 540, "deis._deis_kernel": 200, "gibbs._gibbs_kernel": 1260,
    "gibbs._block_min_kernel": 70, "noise._randn_kernel": 500,
}
RANDN_BEFORE = 1671  # noise._randn_kernel, sm_90 fp32 n = 784, at commit 61fdea4 (one normal per Philox call)


def test_every_variant_compiles_for_sm80_and_sm90(tmp_path):
    """The real compiler (ptxas included) on every variant, as CI runs it; TRITON_INTERPRET unset. Its PTX
    stays under the ceilings, and the Philox normal kernel at most a third of its count before issue 34."""
    env = {k: v for k, v in os.environ.items() if k not in aot.MASKING_ENV}
    ptx_json = tmp_path / "ptx.json"
    proc = subprocess.run([sys.executable, "-m", "dmcmc_fast.kernels.aot", "--arch", ",".join(map(str, ARCHS)),
                           "--ptx-json", str(ptx_json)], env=env, capture_output=True, text=True, timeout=900)
    k = len(aot.variants()) * len(ARCHS)
    lines = proc.stdout.strip().splitlines()
    tail = "\n".join(lines[-60:]) + "\n" + proc.stderr[-3000:]
    assert proc.returncode == 0, tail
    assert lines[-1] == f"compiled {k} of {k}", tail
    assert sum(line.startswith("OK") for line in lines) == k, tail
    rows = json.loads(ptx_json.read_text())
    assert len(rows) == k
    measured = {}
    for r in rows:
        if r["case"] == ("n2" if r["kernel"] == "gibbs._gibbs_kernel" else "n784"):
            assert r["elements_per_thread"] == 8, r
            measured[r["kernel"]] = max(measured.get(r["kernel"], 0), r["ptx_instructions"])
    assert set(measured) == set(PTX_CEILINGS) == set(aot.VARIANTS)
    over = {name: (n, PTX_CEILINGS[name]) for name, n in measured.items() if n > PTX_CEILINGS[name]}
    assert not over, f"PTX instructions per thread over the ceiling (measured, ceiling): {over}"
    randn = next(r for r in rows if r["variant"] == "noise._randn_kernel[fp32,n784]" and r["arch"] == 90)
    assert randn["ptx_instructions"] * 3 <= RANDN_BEFORE, randn


def test_ptx_instruction_count_reads_statements_only():
    """Directives, labels, comments and braces are no instructions; predicated statements are."""
    ptx = """.version 8.7
.visible .entry k(
	.param .u64 k_param_0
)
{
	.reg .pred 	%p<3>;
	// begin inline asm
	mov.u32 	%r1, %tid.x;  // a comment
$L__BB0_1:
	@%p1 st.global.b32 	[%rd1], { %r1 };
	mul.hi.u32 	%r2, %r1, -766435501;
	.loc	1 10 5
	ret;
}"""
    assert aot.ptx_instructions(ptx) == 4


GPU_IMAGE_TRITON = os.path.join(os.path.dirname(sys.executable), "..", "triton-gpu-image")


def _with_image_triton(env: dict) -> dict:
    """`env` with the GPU image's Triton (scripts/setup.sh installs it beside the venv's) first on PYTHONPATH."""
    assert os.path.isdir(GPU_IMAGE_TRITON), f"{GPU_IMAGE_TRITON} is missing: run bash scripts/setup.sh"
    return dict(env, PYTHONPATH=os.pathsep.join([os.path.abspath(GPU_IMAGE_TRITON), env.get("PYTHONPATH", "")]))


def test_every_variant_compiles_with_the_gpu_images_triton():
    """The lent GPU runs Triton 3.6, not ours: compile every variant for sm_90 with it too (scripts/setup.sh
    installs it beside the venv's). 3.6 has no tl.to_tensor, which the interpreter of a newer Triton accepts."""
    env = _with_image_triton({k: v for k, v in os.environ.items() if k not in aot.MASKING_ENV})
    proc = subprocess.run([sys.executable, "-m", "dmcmc_fast.kernels.aot", "--arch", "90"],
                          env=env, capture_output=True, text=True, timeout=900)
    k = len(aot.variants())
    lines = proc.stdout.strip().splitlines()
    tail = "\n".join(lines[-60:]) + "\n" + proc.stderr[-3000:]
    assert proc.returncode == 0, tail
    assert "triton 3.6" in proc.stdout, tail  # it really ran with the image's Triton
    assert lines[-1] == f"compiled {k} of {k}", tail


def test_kernel_tests_pass_under_the_gpu_images_triton_interpreter():
    """A user on torch 2.11 gets Triton 3.6 (the GPU image's), whose interpreter reads a runtime loop bound
    (gibbs' `range(0, m, BLOCK)`) with `int(array)`, which NumPy >= 2.4 refuses: the kernel tests failed
    there (29 of them) until `_launch` gave it Triton 3.7's `.squeeze()`. Run them with that Triton."""
    env = _with_image_triton(dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1"))
    version = subprocess.run([sys.executable, "-c", "import triton; print(triton.__version__)"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert version.stdout.startswith("3.6"), version.stdout + version.stderr  # really the image's Triton
    tests = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"] +
                          [os.path.join(tests, f) for f in ("test_kernels_fused.py", "test_kernels_noise.py",
                                                            "test_kernels_reference.py")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout, proc.stdout[-2000:]


def test_interpreter_env_is_dropped_with_a_note():
    """TRITON_INTERPRET=1 (as conftest sets it) must not leak into the compile: the command says so and compiles."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, "-m", "dmcmc_fast.kernels.aot", "--arch", "90", "--kernel", "_euler_kernel"],
                          env=env, capture_output=True, text=True, timeout=300)
    k = len(aot.variants(["_euler_kernel"]))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "TRITON_INTERPRET=1 is set; ignored here" in proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == f"compiled {k} of {k}"
