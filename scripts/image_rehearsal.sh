#!/usr/bin/env bash
# The GPU run rehearsed on the GPU image's software stack, here on the CPU, before a GPU is lent.
#
# CI runs gpu_check.sh --sim with our own stack (the venv's Python 3.11, torch 2.14, Triton 3.8). The lent
# GPU has Python 3.12, torch 2.11 (cu130), Triton 3.6 and NumPy 2.5, and gets our missing packages as
# wheels in a --target folder. This builds that stack in a throwaway venv (Python 3.12 from pyenv or the
# PATH; ~4 GB from the registry, ~1.5 min) with the image's packages that our stages import
# (.library/device/KINDS.md lists the image), then runs on a copy of this working tree:
#   1. gpu_check.sh --only wheels,build,aot   the real stages: the carried .whl/ into a --target site,
#                                             `pip install -e .` building dmcmc_fast._C against torch 2.11,
#                                             every kernel variant compiled with Triton 3.6 for sm_90;
#   2. gpu_check.sh --sim                     every stage's own command on the simulated CUDA device
#                                             (tests/sim_cuda.py), importing the carried wheels from that site;
#   3. the test suite on that stack            (README's test command; skip with TESTS=0): a user on Python
#                                             3.12 gets this SciPy too (1.18 broke pytorch-fid's FD, found here).
# Not for CI (the download). Results: $OUT (default /tmp/image_rehearsal/results): real/, sim/, tests.log.
#
#   bash scripts/image_rehearsal.sh            # ~15 min on 2 cores: venv, both runs, the tests
#   KEEP_VENV=1 TESTS=0 bash scripts/image_rehearsal.sh   # reuse the venv of an earlier rehearsal; no tests
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BASE=${IMAGE_REHEARSAL_DIR:-/tmp/image_rehearsal}
OUT=${OUT:-$BASE/results}
VENV=$BASE/venv
SITE=$BASE/site
TREE=$BASE/tree

# The image's packages that our stages and the carried wheels import (the image has many more; what we carry
# is in scripts/fetch_wheels.sh), at the image's versions where they are known (shared/DESIGN.md, the device
# tool's KINDS.md: its pip list of 2026-11).
IMAGE_PKGS=("torch==2.11.0" "torchvision==0.26.0" "triton==3.6.0" "numpy==2.5.2" "huggingface-hub==1.33.0"
            "safetensors==0.8.0" "torchdiffeq==0.2.5" scipy scikit-learn scikit-image matplotlib tqdm pytest
            pytest-xdist hypothesis einops regex requests filelock pillow ninja pybind11 "setuptools<82" wheel)

py312() {
    local p
    for p in "${PYTHON312:-}" "$(command -v python3.12 2>/dev/null)" "$HOME"/.pyenv/versions/3.12*/bin/python3.12; do
        [ -n "$p" ] && [ -x "$p" ] && "$p" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null \
            && { echo "$p"; return; }
    done
    echo "image_rehearsal.sh: no Python 3.12 (the image's); set PYTHON312=/path/to/python3.12" >&2
    return 1
}

if [ "${KEEP_VENV:-0}" != 1 ] || [ ! -x "$VENV/bin/python" ]; then
    PY312=$(py312)
    rm -rf "$VENV"
    "$PY312" -m venv "$VENV"
    echo "== venv $VENV ($("$VENV/bin/python" --version)): ${IMAGE_PKGS[*]}"
    "$VENV/bin/python" -m pip install -q "${IMAGE_PKGS[@]}"
fi
"$VENV/bin/python" -c "import sys, torch, triton, numpy
print('stack: python', sys.version.split()[0], 'torch', torch.__version__, 'triton', triton.__version__,
      'numpy', numpy.__version__)"

[ -e .whl ] || bash scripts/fetch_wheels.sh

# A copy of the working tree (tracked and untracked, not ignored, files) and .whl/: the editable install
# and the in-place build must not touch this checkout's .venv or its dmcmc_fast/_C.
rm -rf "$TREE" "$SITE" "$OUT/real" "$OUT/sim" "$OUT/tests.log"  # only what this script writes: $OUT may be yours
mkdir -p "$TREE" "$OUT"
git ls-files -co --exclude-standard -z | tar --null -T - -cf - | tar -xf - -C "$TREE"
cp -r .whl "$TREE/"

cd "$TREE"
rc=0
echo "== 1. the real wheels, build and aot stages"
PYTHON=$VENV/bin/python GPU_CHECK_SITE=$SITE OUT=$OUT/real bash scripts/gpu_check.sh --only wheels,build,aot || rc=1
echo "== 2. every stage on the simulated CUDA device, the carried wheels imported from $SITE"
PYTHONPATH=$SITE PYTHON=$VENV/bin/python OUT=$OUT/sim bash scripts/gpu_check.sh --sim || rc=1
if [ "${TESTS:-1}" = 1 ]; then
    # The two image-Triton tests of test_kernels_aot want setup.sh's venv layout; this venv's Triton is 3.6 itself.
    echo "== 3. the test suite on the image's stack (log: $OUT/tests.log)"
    OMP_NUM_THREADS=1 PYTHONPATH=$SITE "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests \
        --deselect tests/test_kernels_aot.py::test_every_variant_compiles_with_the_gpu_images_triton \
        --deselect tests/test_kernels_aot.py::test_kernel_tests_pass_under_the_gpu_images_triton_interpreter \
        >"$OUT/tests.log" 2>&1 || rc=1
    tail -1 "$OUT/tests.log"
fi
cd "$ROOT"
verdict=$( [ $rc = 0 ] && echo "every stage passed" || echo "a stage failed")
echo "image rehearsal: $verdict; $OUT/real/summary.md, $OUT/sim/summary.md"
exit $rc
