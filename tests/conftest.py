"""Test-wide setup: Triton kernels run under the interpreter on CPU tensors when there is no GPU.

TRITON_INTERPRET must be set before triton is first imported, so it is set here, at collection.
`device` fixture: "cuda" when available, else "cpu".
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

# The tests run many tiny tensor ops: one intra-op thread is faster and steadier on a 2-core machine.
torch.set_num_threads(1)


@pytest.fixture
def device():
    return "cuda" if torch.cuda.is_available() else "cpu"


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")
