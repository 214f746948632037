"""mxfp4: exact, fast MXFP4 (OCP microscaling FP4: E2M1 elements, one E8M0 scale per 32) for numpy
and torch, in the gpt-oss / Hugging Face and GGUF layouts.

    >>> import numpy as np, mxfp4
    >>> q = mxfp4.quantize(np.linspace(-6, 6, 64, dtype=np.float32).reshape(2, 32))
    >>> q.blocks.shape, q.scales.shape, q.bits_per_param
    ((2, 1, 16), (2, 1), 4.25)
"""

from . import layout, rules
from .codec.constants import BITS_PER_PARAM, BLOCK_SIZE
from .codec.decode import dequantize
from .codec.encode import quantize
from .codec.tensor import MXFP4Tensor
from .errors import (
    AdapterError,
    BackendUnavailableError,
    CheckpointError,
    ConfigError,
    DTypeError,
    MissingDependencyError,
    MXFP4Error,
    NonFiniteError,
    OptionError,
    ShapeError,
)

__version__ = "0.1.0"

__all__ = [
    "AdapterError",
    "BITS_PER_PARAM",
    "BLOCK_SIZE",
    "BackendUnavailableError",
    "CheckpointError",
    "ConfigError",
    "DTypeError",
    "MXFP4Error",
    "MXFP4Tensor",
    "MissingDependencyError",
    "NonFiniteError",
    "OptionError",
    "ShapeError",
    "dequantize",
    "layout",
    "quantize",
    "rules",
]
