"""Every sampler's samples equal the stored references bit for bit (`tests/reference/make_reference.py`):
a change to the engine, the integrators or the kernels' torch paths that moves any sample by one ulp fails
here. Run in a subprocess with the CPU kernel path fixed (ATen's scalar kernels, MKL's reproducible mode,
one thread), so the bits do not depend on the CPU this runs on."""
import os
import subprocess
import sys

import numpy as np

from tests.reference import make_reference as ref


def test_every_sampler_matches_its_stored_reference_samples(tmp_path):
    out = tmp_path / "samples.npz"
    env = {**os.environ, **ref.ENVIRONMENT}
    subprocess.run([sys.executable, os.path.join(ref.HERE, "make_reference.py"), str(out)], check=True, env=env,
                   timeout=600)
    new, old = np.load(out), np.load(ref.PATH)
    assert sorted(new.files) == sorted(old.files)
    differ = [k for k in old.files if old[k].shape != new[k].shape or not np.array_equal(old[k], new[k])]
    assert not differ, f"{len(differ)} of {len(old.files)} arrays changed, e.g. {differ[:5]}"
    samplers = {k.split("/")[0] for k in old.files}
    assert len(samplers) >= 20 and {"heun", "dlg", "dpmpp_2m", "mild", "obabo"} <= samplers
