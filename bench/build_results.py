"""Rebuild bench/RESULTS.md from the sections the benchmark scripts write into bench/results/*.md.

    python -m bench.build_results
"""
import os

HERE = os.path.dirname(os.path.abspath(__file__))
SECTIONS = ["integrator_error.md", "mixing_fig2.md", "fig3_sweep.md", "quality_map.md",
            "quality_map_adaptive_default.md", "quality_map_adaptive.md", "dlg_new_classifier.md", "dlg_vs_alone.md",
            "dlg_vs_alone_seeds_0_1.md",
            "dlg_mixing.md", "dlg_map_gmm.md", "classifier_bias.md", "host_overhead.md", "op_counts.md",
            "throughput.md", "rk45_batching.md", "launches.md", "launches_unet-mnist_b1.md", "launches_gmm-digits_b1.md",
            "launches_gmm-digits_b256.md", "ptx_counts.md", "philox_accuracy.md", "serve.md"]
HEADER = """# Benchmark results

Every number names its device and the command that made it; the raw data sit beside each section's
source in `bench/results/`. Rebuild this page with `python -m bench.build_results`.

GPU tables (kernel bandwidth `bench/kernels.py`, engine overhead `bench/engine.py`, GPU throughput
`bench/throughput.py`) are not here yet: no session so far has had a GPU, and none is faked. The
prepared command that makes them on a lent GPU is `bash scripts/gpu_check.sh` (README, "On a GPU").
Its GPU commands run in CI on a simulated CUDA device (`gpu_check.sh --sim`, `tests/sim_cuda.py`);
that proves they run, not how fast: the simulated device's timings are not results and are not here.

The random stream changed once, in issue 34 (four normals or uniforms per Philox call instead of one; README,
"The random stream"). The sections above the PTX and Philox ones were measured with the earlier stream: their
figures are statistics of the samplers, which the change leaves in distribution, but a rerun with the same
seeds draws other numbers and gives figures that differ within their Monte-Carlo error.
"""



def main():
    parts = [HEADER]
    for name in SECTIONS:
        path = os.path.join(HERE, "results", name)
        if os.path.exists(path):
            with open(path) as f:
                parts.append(f.read().strip() + "\n")
    with open(os.path.join(HERE, "RESULTS.md"), "w") as f:
        f.write("\n".join(parts))


if __name__ == "__main__":
    main()
