import os

import numpy as np
import pytest
import torch

from mxfp4.codec import native

# Without a GPU the Triton kernels run under Triton's interpreter (numpy on the CPU). It is chosen when a
# kernel is defined, so it must be set before anything imports triton.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

CPU_BACKENDS = ["numpy", "torch"] + (["native"] if native.available() else [])


def block(*values: float, fill: float = 0.0) -> np.ndarray:
    """One block of 32 float32: the given leading values, the rest ``fill``."""
    out = np.full((1, 32), fill, dtype=np.float32)
    out[0, : len(values)] = values
    return out


@pytest.fixture(params=CPU_BACKENDS)
def backend(request) -> str:
    return request.param


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
