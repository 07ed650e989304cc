"""Build script: the Python package, `kernels/` installed as `dmcmc_fast.kernels`, and the C++
chain-bookkeeping extension `dmcmc_fast._C` (a CppExtension over csrc/*.cpp).

Install with `pip install --no-build-isolation -e .` after torch (scripts/setup.sh does both), so the
extension compiles against the torch that will import it.
"""
import glob
import os

from setuptools import find_packages, setup

packages = find_packages(include=["dmcmc_fast", "dmcmc_fast.*"])
if "dmcmc_fast.kernels" not in packages:  # found already where a link dmcmc_fast/kernels -> ../kernels exists
    packages.append("dmcmc_fast.kernels")
package_dir = {"dmcmc_fast.kernels": "kernels"}

ext_modules = []
cmdclass = {}
sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
if sources and os.environ.get("DMCMC_NO_EXT", "0") != "1":
    from torch.utils.cpp_extension import BuildExtension, CppExtension

    ext_modules.append(
        CppExtension(
            name="dmcmc_fast._C",
            sources=sources,
            # -std comes from torch (C++20 for torch 2.14); no fused multiply-adds: csrc/philox.cpp's float steps are
            # the torch reference's, one rounding each
            extra_compile_args=["-O3", "-ffp-contract=off"],
        )
    )
    cmdclass["build_ext"] = BuildExtension.with_options(use_ninja=True)

setup(
    packages=packages,
    package_dir=package_dir,
    package_data={"dmcmc_fast": ["checkpoints/*", "checkpoints/**/*"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
