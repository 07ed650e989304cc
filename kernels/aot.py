"""Ahead-of-time compilation of every Triton kernel of `dmcmc_fast.kernels` for real GPU targets, on the CPU.

The tests run the kernels under TRITON_INTERPRET=1, which accepts code the compiler refuses. This compiles
each launched `_..._kernel` with `triton.compile` for `GPUTarget("cuda", arch, 32)` down to a cubin
(Triton ships ptxas; no GPU is needed), in every variant its launcher can produce, so that compile errors
show up in CI and not in the first GPU minutes:

    python -m dmcmc_fast.kernels.aot [--arch 80,90] [--kernel NAME] [--dtype fp32] [--jobs N] [--ptx-json PATH]

One line per (kernel, variant, arch) with OK/FAIL and seconds, then `compiled K of K`; exit status 1, and
the compiler's error for each failure, when any fails. `--ptx-json` also writes, per compiled variant, its PTX
instruction count per thread and per element (`ptx_instructions`; bench/ptx_counts.py makes the table of
bench/RESULTS.md from it, tests/test_kernels_aot.py checks ceilings on it).

Where the signatures come from: a variant calls the kernel's own launcher (`..._triton`) on small CPU
tensors with the kernel swapped for a recorder, so the arguments are exactly what the launcher computes
(rows view, BLOCK, seed words, [B] parameter vectors, chain ids, steps, ...) and cannot drift from it.
Triton's own binder, as `JITFunction.run` uses it, turns them into the signature, constexprs and
attributes for the target: an int argument is i32 or i64 by value, a constexpr when == 1 and marked
divisible when % 16 == 0; pointers are 16-byte aligned, as the CUDA caching allocator gives them.
(`JITFunction.warmup` would do the same but asks the CUDA driver for the target: no GPU, no driver.)

The variants (`VARIANTS`): every kernel x the 4 state dtypes x the 3 launch `CASES`, crossed with the
kernel's own constexpr switches (gibbs: HAS_PRIOR x SAMPLE x BLOCK_MIN; obabo: FIRST_HALF; deis: J).
The cases are realistic launches that between them give every int argument the launcher takes from
its caller the value 1, a multiple of 16 and another value (the low seed word also one >= 2**31, an
i64), and every BLOCK both ends of `_launch.block_for` (16 and 1024). The int classes are zipped into
three cases, not crossed with one another (the kernels only convert those ints, `.to(tl.uint32)` or
into offsets, so they do not interact); each case is crossed with every dtype and switch.

TRITON_INTERPRET: under it `@triton.jit` builds interpreter functions, which the compiler cannot take
(and `triton.compile` itself changes: constexpr functions stop returning constexprs). The command
therefore drops it (and TRITON_ALLOW_NON_CONSTEXPR_GLOBALS, which hides a bug class), saying so, and
compiles in fresh worker processes started without it.
"""
from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import os
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import torch

DTYPES = {"fp32": torch.float32, "fp64": torch.float64, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Case:
    """The integer side of one launch: x's shape (row length n, hence BLOCK), seed, stream, gibbs' M."""
    shape: tuple[int, ...]
    seed: int
    stream: int
    levels: int  # M of gibbs (BLOCK = block_for(M))
    prior_per_row: bool  # gibbs' log_prior [B, M] (row stride M) rather than [M] (stride 0)


CASES = {
    # n = 784 (MNIST): BLOCK 1024; n, seed words (0, 0), stream 0, M = 16 (BLOCK 16), prior stride 0: multiples
    # of 16. (The launchers' default streams, 0, 1 and 3, fall in the three classes the cases cover.)
    "n784": Case((3, 1, 28, 28), seed=0, stream=0, levels=16, prior_per_row=False),
    # n = 2 (2-D toy data): BLOCK 16; seed words (0xDEADBEEF: i64, 0x7BADF00D); stream 5; M = 1000: BLOCK 1024
    "n2": Case((3, 2), seed=0x7BADF00DDEADBEEF, stream=5, levels=1000, prior_per_row=True),
    # one chain of 1-D data: n, seed words, stream, M, prior stride, DEIS' history stride B * n all 1,
    # which Triton turns into constexprs
    "n1": Case((1, 1), seed=2**32 + 1, stream=1, levels=1, prior_per_row=True),
}


# ---------------- one launch per kernel: (x of the state dtype, case, constexpr switches) ----------------
def _langevin(x, c):
    from . import langevin
    langevin.langevin_step_triton(x, x, 0.5, 0.1, c.seed, None, 7, stream=c.stream)


def _mild(x, c):
    from . import langevin
    langevin.mild_step_triton(x, x, x, 0.5, 0.1, 0.9, c.seed, None, 7, stream=c.stream)


def _baoab_limit(x, c):
    from . import underdamped
    underdamped.baoab_limit_step_triton(x, x, 0.5, 0.1, x, c.seed, None, 7, stream=c.stream)


def _obabo(x, c, first_half):
    from . import underdamped  # fixed streams (STREAM_MOMENTUM, + 8): no stream argument
    step = underdamped.obabo_oba_triton if first_half else underdamped.obabo_bo_triton
    step(x, x, x, 0.5, 0.1, 2.0, c.seed, None, 7)


def _euler(x, c):
    from . import karras_step
    karras_step.euler_step_triton(x, x, 0.5, 0.4)


def _heun(x, c):
    from . import karras_step
    karras_step.heun_correct_triton(x, x, x, x, 0.5, 0.4)


def _churn(x, c):
    from . import karras_step
    karras_step.churn_triton(x, 0.5, 0.1, 1.0, c.seed, None, 7, stream=c.stream)


def _deis(x, c, J):
    from . import deis
    deis.deis_combine_triton(x, torch.zeros((J, *x.shape), dtype=x.dtype), 0.9, [0.1] * J)


def _gibbs(x, c, prior, sample, block_min):
    """logits, x, best_x in the state dtype; level sigmas, log_prior, best_sigma in the compute dtype."""
    from . import gibbs
    from ._args import compute_dtype
    b, m, cd = x.shape[0], c.levels, compute_dtype(x)
    log_prior = torch.zeros((b, m) if c.prior_per_row else (m,), dtype=cd) if prior else None
    best = dict(x=x, best_x=torch.zeros_like(x), best_sigma=torch.zeros(b, dtype=cd)) if block_min else {}
    gibbs.gibbs_select_triton(torch.zeros(b, m, dtype=x.dtype), torch.ones(m, dtype=cd), log_prior, sample,
                              c.seed, None, 7, stream=c.stream, **best)


def _block_min(x, c):
    from . import gibbs  # sigma and best_sigma in the state dtype, as DLG passes them
    sigma = torch.zeros(x.shape[0], dtype=x.dtype)
    gibbs.block_min_update_triton(x, sigma, torch.zeros_like(x), sigma.clone())


def _noise(x, c):
    from . import noise  # a draw of x's shape and dtype: [B] chain ids, one step for all (an int)
    noise.chain_randn_triton(c.seed, torch.arange(x.shape[0]), 7, x.shape[1:], c.stream, dtype=x.dtype)


ON_OFF = (False, True)
# kernel ("module.function") -> (launch, the kernel's own constexpr switches); each variant is
# kernel x dtype (DTYPES) x case (CASES) x one value per switch.
VARIANTS = {
    "langevin._langevin_kernel": (_langevin, {}),
    "langevin._mild_kernel": (_mild, {}),
    "underdamped._baoab_limit_kernel": (_baoab_limit, {}),
    "underdamped._obabo_kernel": (_obabo, {"first_half": ON_OFF}),
    "karras_step._euler_kernel": (_euler, {}),
    "karras_step._heun_kernel": (_heun, {}),
    "karras_step._churn_kernel": (_churn, {}),
    "deis._deis_kernel": (_deis, {"J": (1, 2, 3, 4)}),  # J history terms: DEIS order J - 1; DPM-Solver++ 1-3
    "gibbs._gibbs_kernel": (_gibbs, {"prior": ON_OFF, "sample": ON_OFF, "block_min": ON_OFF}),
    "gibbs._block_min_kernel": (_block_min, {}),
    "noise._randn_kernel": (_noise, {}),
}


@dataclass(frozen=True)
class Variant:
    kernel: str
    dtype: str
    case: str
    switches: tuple[tuple[str, object], ...] = ()

    @property
    def name(self) -> str:
        on = [k if v is True else f"{k}={v}" for k, v in self.switches if v is not False]
        return f"{self.kernel}[{','.join([self.dtype, self.case, *on])}]"


def variants(kernels=None, dtypes=None) -> list[Variant]:
    """Every variant of VARIANTS, in table order; `kernels`: substrings of "module.function" to keep; `dtypes`:
    the state dtypes to keep (names of DTYPES)."""
    out = []
    for kernel, (_, switches) in VARIANTS.items():
        if kernels and not any(k in kernel for k in kernels):
            continue
        for dtype, case, values in itertools.product(DTYPES, CASES, itertools.product(*switches.values())):
            if not dtypes or dtype in dtypes:
                out.append(Variant(kernel, dtype, case, tuple(zip(switches, values))))
    return out


class _Recorder:
    """Stands in for a kernel inside its module: `kernel[grid](*args, **kwargs)` records the call."""

    def __init__(self):
        self.calls = []

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.calls.append((args, kwargs))


def launch_args(v: Variant):
    """(kernel, args, kwargs) of the launch its launcher makes for this variant (on CPU tensors)."""
    import importlib

    module_name, fn_name = v.kernel.split(".")
    module = importlib.import_module(f"{__package__}.{module_name}")
    kernel, recorder = getattr(module, fn_name), _Recorder()
    launch, _ = VARIANTS[v.kernel]
    setattr(module, fn_name, recorder)
    try:
        case = CASES[v.case]
        launch(torch.zeros(case.shape, dtype=DTYPES[v.dtype]), case, **dict(v.switches))
    finally:
        setattr(module, fn_name, kernel)
    if len(recorder.calls) != 1:
        raise RuntimeError(f"{v.name}: the launcher made {len(recorder.calls)} launches of {fn_name}, expected 1")
    return (kernel, *recorder.calls[0])


def compile_variant(v: Variant, arch: int):
    """Compile one variant for sm_<arch> as `JITFunction.run` would on that GPU; returns the CompiledKernel."""
    import triton
    from triton import knobs
    from triton._utils import find_paths_if, get_iterable_path
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import JITFunction, create_function_from_signature

    fn, args, kwargs = launch_args(v)
    if not isinstance(fn, JITFunction):
        raise RuntimeError(f"{v.kernel} is a {type(fn).__name__}, not a JITFunction: TRITON_INTERPRET was set "
                           "when the kernels were imported")
    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    kwargs = dict(kwargs, debug=kwargs.get("debug", fn.debug) or knobs.runtime.debug)  # as JITFunction.run
    bound, spec, _ = create_function_from_signature(fn.signature, fn.params, backend)(*args, **kwargs)
    sigvals = [s[0] for s in spec]
    signature = {p.name: s for p, s in zip(fn.params, sigvals)}
    constexprs = {path: get_iterable_path(list(bound.values()), path)
                  for path in find_paths_if(sigvals, lambda _, s: s == "constexpr")}
    attrvals = ["" if s[0] == "constexpr" else s[1] for s in spec]
    attrs = {path: backend.parse_attr(get_iterable_path(attrvals, path))
             for path in find_paths_if(attrvals, lambda _, a: isinstance(a, str))}
    options = backend.parse_options(kwargs)
    compiled = triton.compile(ASTSource(fn, signature, constexprs, attrs), target=target, options=options.__dict__)
    if not compiled.asm.get("cubin"):
        raise RuntimeError(f"{v.name}: no cubin came out for sm_{arch}")
    return compiled


def ptx_instructions(ptx: str) -> int:
    """Instructions in a kernel's PTX text, as one thread executes them written out: every statement line
    (ending in ';', predicated ones included) that is no directive (`.reg`, `.loc`, ...), label or comment.
    A static count: a loop body counts once (only gibbs' kernels loop)."""
    count = 0
    for line in ptx.splitlines():
        line = line.split("//")[0].strip()
        if line.endswith(";") and not line.startswith("."):
            count += 1
    return count


def ptx_row(v: Variant, arch: int, compiled) -> dict:
    """One variant's PTX count: instructions per thread, and per element where the kernel's BLOCK elements
    are spread over its threads (BLOCK / (32 num_warps) elements each; None for BLOCK below a warp group)."""
    _, _, kwargs = launch_args(v)
    threads = 32 * compiled.metadata.num_warps
    block = kwargs.get("BLOCK")
    per_thread = ptx_instructions(compiled.asm["ptx"])
    elements = block / threads if block and block >= threads else None
    return {"variant": v.name, "kernel": v.kernel, "dtype": v.dtype, "case": v.case, "arch": arch,
            "ptx_instructions": per_thread, "block": block, "threads": threads, "elements_per_thread": elements,
            "per_element": per_thread / elements if elements else None}


def _job(job):
    """Worker: (variant, arch) -> (ok, seconds, error text, ptx row or None)."""
    v, arch = job
    t0 = time.perf_counter()
    try:
        compiled = compile_variant(v, arch)
        return True, time.perf_counter() - t0, "", ptx_row(v, arch, compiled)
    except Exception as e:
        return False, time.perf_counter() - t0, _error_text(e), None


def _error_text(e: BaseException) -> str:
    """The compiler's error: each CompilationError level (kernel line -> helper line -> ...) and its root
    cause; any other error with its traceback."""
    from triton.compiler.errors import CompilationError

    if not isinstance(e, CompilationError):
        return "".join(traceback.format_exception(e))
    parts = []
    while isinstance(e, CompilationError):
        parts.append("".join(traceback.format_exception_only(e)).rstrip())
        e = e.__cause__ or e.__context__
    if e is not None and str(e) not in parts[-1]:
        parts.append("".join(traceback.format_exception_only(e)).rstrip())
    return "\n".join(parts)


def triton_version() -> str:
    import triton

    return triton.__version__


# Environment switches that make Triton accept what a plain GPU run refuses: dropped, with a note.
MASKING_ENV = {
    "TRITON_INTERPRET": "the interpreter is not the compiler",
    "TRITON_ALLOW_NON_CONSTEXPR_GLOBALS": "it hides non-constexpr globals that a default run refuses",
}


def drop_masking_env() -> list[str]:
    """Remove MASKING_ENV from the environment (the workers start without them); notes for those set."""
    notes = [f"aot: {k}={os.environ[k]} is set; ignored here: {why} (the compile workers start without it)"
             for k, why in MASKING_ENV.items() if os.environ.get(k, "0").lower() not in ("", "0", "false", "off")]
    for k in MASKING_ENV:
        os.environ.pop(k, None)
    return notes


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m dmcmc_fast.kernels.aot", description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="80,90", help="compute capabilities, comma-separated (default 80,90)")
    p.add_argument("--kernel", action="append", help="only kernels whose 'module.function' contains NAME "
                   "(repeatable)", metavar="NAME")
    p.add_argument("--dtype", action="append", choices=list(DTYPES), help="only these state dtypes (repeatable)")
    p.add_argument("--jobs", type=int, default=min(os.cpu_count() or 1, 8),
                   help="compile processes (default: the CPU count, at most 8)")
    p.add_argument("--ptx-json", metavar="PATH", help="write each compiled variant's PTX instruction counts "
                   "(a JSON list of rows, see ptx_row)")
    a = p.parse_args(argv)
    archs = [int(s) for s in a.arch.split(",") if s.strip()]
    jobs = [(v, arch) for v in variants(a.kernel, a.dtype) for arch in archs]
    if not jobs:
        p.error(f"no kernel matches {a.kernel}; kernels: {', '.join(VARIANTS)}")
    for note in drop_masking_env():
        print(note, file=sys.stderr)
    t0, failures, rows = time.perf_counter(), [], []
    with ProcessPoolExecutor(max(1, a.jobs), mp_context=multiprocessing.get_context("spawn")) as pool:
        for (v, arch), (ok, secs, err, row) in zip(jobs, pool.map(_job, jobs)):
            print(f"{'OK  ' if ok else 'FAIL'} {secs:6.2f}s  sm_{arch}  {v.name}", flush=True)
            if not ok:
                failures.append((v, arch, err))
            else:
                rows.append(row)
    if a.ptx_json:
        with open(a.ptx_json, "w") as f:
            json.dump(rows, f, indent=1)
    for v, arch, err in failures:
        print(f"\n--- FAIL sm_{arch} {v.name}\n{err.rstrip()}")
    print(f"{time.perf_counter() - t0:.1f}s wall, {a.jobs} processes, triton {triton_version()}")
    print(f"compiled {len(jobs) - len(failures)} of {len(jobs)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
