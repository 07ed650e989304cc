"""PTX instructions per element of every Triton kernel, from the ahead-of-time compile (no GPU needed).

    python -m bench.ptx_counts                       # compiles every variant for sm_80 and sm_90 (a few minutes)
    python -m bench.ptx_counts --ptx-json PATH       # or reads what `python -m dmcmc_fast.kernels.aot --ptx-json` wrote

The proxy of a kernel's arithmetic this CPU can measure: `kernels.aot.ptx_instructions` counts the
instruction statements of the kernel's PTX (one thread's program, written out; static, so a loop counts once),
and the launch at n = 784 (BLOCK 1024, 4 warps) gives each thread 8 elements: per element = count / 8. Each
row beside the count of commit 61fdea4 (the stream before issue 34: one normal per Philox call, library
log/cos), measured by the same counter from `bench/results/ptx_counts_61fdea4.json`.
Output: the table, bench/results/ptx_counts.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BEFORE = os.path.join(HERE, "results", "ptx_counts_61fdea4.json")
CASE = "n784"  # the launch whose BLOCK (1024) spreads 8 elements over each of 128 threads
GIBBS_CASE = "n2"  # gibbs' M = 1000 levels (BLOCK 1024); at n784 its M is 16


def compile_all(path: str) -> None:
    """Run the AOT compile of every variant (sm_80, sm_90) into `path`, TRITON_INTERPRET unset."""
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "TRITON_ALLOW_NON_CONSTEXPR_GLOBALS")}
    subprocess.run([sys.executable, "-m", "dmcmc_fast.kernels.aot", "--arch", "80,90", "--ptx-json", path],
                   env=env, check=True, stdout=subprocess.DEVNULL)


def table_rows(rows: list[dict]) -> list[dict]:
    """The n784 rows (every kernel, dtype, switch, arch; gibbs' selection kernel at M = 1000), compact."""
    keep = ("variant", "kernel", "dtype", "case", "arch", "ptx_instructions", "elements_per_thread", "per_element")
    return [{k: r[k] for k in keep} for r in rows
            if r["case"] == (GIBBS_CASE if r["kernel"] == "gibbs._gibbs_kernel" else CASE)]


def _label(variant: str) -> str:
    """'k[fp32,n784,a,b]' -> 'k[a,b]' (gibbs' selection: 'k[M=1000,a,b]')."""
    kernel, inner = variant[:-1].split("[")
    _, case, *switches = inner.split(",")
    if case == GIBBS_CASE:
        switches = ["M=1000", *switches]
    return f"{kernel}[{','.join(switches)}]" if switches else kernel


def markdown(rows: list[dict], before: dict, meta: dict) -> str:
    by = {(r["variant"], r["arch"]): r for r in rows}
    out = [f"## PTX instructions per element (`bench/ptx_counts.py`)\n",
           f"Device: none (AOT compile on the CPU, Triton {meta['triton']}'s ptxas), {meta['date']} (command: "
           f"`python -m bench.ptx_counts`); data: `bench/results/ptx_counts.json`. PTX instruction statements per "
           f"thread of each kernel at n = 784 (BLOCK 1024, 4 warps: 8 elements per thread), divided by 8; before = "
           f"commit 61fdea4 (one normal per Philox call, library log and cos), same counter (issue 34 quoted 1,672 "
           f"and Euler's 88: a count one statement higher). A static count: gibbs' selection kernel, which loops "
           f"over the M levels, is shown at M = 1000 (BLOCK 1024: one pass, 8 levels per thread). CI checks "
           f"ceilings on these counts (`tests/test_kernels_aot.py`). The four normals of a Philox call are put in "
           f"element order in registers (the sm_90 fp32 PTX of the noise and Langevin kernels has no shared memory, "
           f"barrier or shuffle, and its loads and stores stay 16 bytes wide, `v4.b32`).\n",
           "| kernel | sm_90 fp32 per thread, before -> after | sm_90 fp32 per element, before -> after "
           "| sm_90 bf16 per element | sm_80 fp32 per element |",
           "|---|---|---|---|---|"]
    names = sorted({r["variant"] for r in rows if r["dtype"] == "fp32"}, key=lambda v: (v.split("[")[0], v))
    for name in names:
        new, old = by[(name, 90)], before.get((name, 90))
        bf16 = by.get((name.replace("[fp32", "[bf16"), 90))
        sm80 = by.get((name, 80))

        def per(r):
            return f"{r['per_element']:.1f}" if r and r["per_element"] is not None else "-"

        count = f"{old['ptx_instructions']} -> {new['ptx_instructions']}" if old else f"{new['ptx_instructions']}"
        ratio = (f" ({new['ptx_instructions'] / old['ptx_instructions']:.2f}x)"
                 if old and old["ptx_instructions"] != new["ptx_instructions"] else "")
        element = f"{per(old)} -> {per(new)}" if old else per(new)
        out.append(f"| `{_label(name)}` | {count}{ratio} "
                   f"| {element} | {per(bf16)} | {per(sm80)} |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ptx_counts", description=__doc__.split("\n\n")[0])
    p.add_argument("--ptx-json", help="the rows `python -m dmcmc_fast.kernels.aot --ptx-json` wrote (default: "
                   "compile now)")
    p.add_argument("--out", default=os.path.join(HERE, "results", "ptx_counts"), help="output path without suffix")
    a = p.parse_args(argv)
    if a.ptx_json:
        path = a.ptx_json
    else:
        path = os.path.join(tempfile.mkdtemp(), "ptx.json")
        compile_all(path)
    with open(path) as f:
        rows = table_rows(json.load(f))
    with open(BEFORE) as f:
        before = {(r["variant"], r["arch"]): r for r in json.load(f)}
    import triton

    meta = {"triton": triton.__version__, "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    text = markdown(rows, before, meta)
    with open(a.out + ".json", "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    with open(a.out + ".md", "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
