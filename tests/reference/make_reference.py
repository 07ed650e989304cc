"""Reference samples of every sampler, stored so that a refactor of the engine can be checked bit for bit
(`tests/test_reference_samples.py`): `python tests/reference/make_reference.py` rewrites
`tests/reference/samples.npz`. Run it only when the samples are meant to change (a new random stream, a
fixed bug), and say so in the commit.

The model is a 20-mode isotropic Gaussian mixture at real scikit-learn digits (64 dimensions); each
sampler draws 6 samples at 2 seeds and 2 batch sizes (6: one batch; 4: a batch of 4 and one of 2),
on the CPU, in float32. Its matrix products go through BLAS, so the samples are reproducible bit for bit
only with the CPU kernel path fixed: both this script and the test run in a subprocess with
`ENVIRONMENT` (ATen's scalar kernels, MKL's conditional-numerical-reproducibility mode, one thread).
"""
from __future__ import annotations

import os
import sys

NUM, SEEDS, BATCH_SIZES = 6, (0, 1), (6, 4)
# the CPU kernel path fixed (set before torch is imported): the same bits on any x86-64 CPU
ENVIRONMENT = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", "OMP_NUM_THREADS": "1",
               "MKL_NUM_THREADS": "1"}
HERE = os.path.dirname(os.path.abspath(__file__))
PATH = os.path.join(HERE, "samples.npz")
# NFE per sample for each sampler (enough for every sampler's smallest schedule: annealing levels, DLG's block)
NFE = {"dlg": 8, "ald": 12, "mild": 12, "baoab_limit": 12, "obabo": 12, "rk45": 400, "dpm_adaptive": 60}
DEFAULT_NFE = 9
OPTIONS = {"dlg": dict(chains=3, n_skip=3, init_nfe=5, n_init=2), "rk45": dict(rtol=1e-2, atol=1e-2),
           "dpm_adaptive": dict(rtol=0.05)}


def model():
    from dmcmc_fast.models.builtin import load_model

    return load_model("gmm-digits", modes=20)


def draw_all() -> dict:
    """{"<sampler>/seed<s>/bs<b>/samples" | ".../nfe": array} for every registered sampler."""
    import torch

    from dmcmc_fast import api
    from dmcmc_fast.samplers import all_samplers

    torch.set_num_threads(1)
    m, out = model(), {}
    for name in sorted(all_samplers()):
        for seed in SEEDS:
            for bs in BATCH_SIZES:
                res = api.sample(m, name, NUM, NFE.get(name, DEFAULT_NFE), seed=seed, batch_size=bs, progress=False,
                                 **OPTIONS.get(name, {}))
                key = f"{name}/seed{seed}/bs{bs}"
                out[key + "/samples"] = res.samples.numpy()
                out[key + "/nfe"] = res.nfe.numpy()
    return out


def in_fixed_environment(script: str, *args: str) -> list[str]:
    """The command that runs `script` with `ENVIRONMENT` (a fresh interpreter: the variables act at import)."""
    return [sys.executable, script, *args]


if __name__ == "__main__":
    missing = {k: v for k, v in ENVIRONMENT.items() if os.environ.get(k) != v}
    if missing:  # re-exec with the fixed kernel path
        os.execvpe(sys.executable, [sys.executable, *sys.argv], {**os.environ, **ENVIRONMENT})
    import numpy as np

    target = sys.argv[1] if len(sys.argv) > 1 else PATH
    arrays = draw_all()
    np.savez_compressed(target, **arrays)
    print(f"{target}: {len(arrays) // 2} runs")
