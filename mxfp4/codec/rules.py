"""The named choices of MXFP4 quantization: how a block's scale is chosen and how elements round.

Peers disagree on both, so every claim of bit-exactness must name the rule it matches.

Scale rules. ``amax`` is the largest magnitude in a block of 32, ``X`` the shared exponent (scale 2**X,
stored as the byte X + 127, clamped to the finite range 0..254; an all-zero block stores byte 0).
Writing amax = m * 2**e with m in [1, 2):

``floor`` (default; OCP MX v1.0 section 6.3, ggml/llama.cpp, torchao FLOOR, microxcaling)
    X = floor(log2(amax)) - 2 = e - 2. amax / 2**X lies in [4, 8), so elements above 6 * 2**X saturate
    to +-6. Computed exactly from the float's bits; see ``ggml`` below for llama.cpp's float32 log2f.
``round_up`` (triton_kernels and so OpenAI's and transformers' quantizers; NVIDIA ModelOpt)
    X = ceil(log2(amax / 6)) = e - 2 + (m > 1.5). Nothing saturates; the largest element lands in (3, 6].
``even`` (torchao EVEN, compressed-tensors)
    Round amax's mantissa to one bit, half up, then floor: X = e - 2 + (m >= 1.75).
``mlx`` (mlx's ``mx.quantize(w, group_size=32, bits=4, mode="mxfp4")`` on the CPU, checked against mlx)
    s = amax / 6 rounded to float32, X = ceil(log2(s)): ``round_up``'s X, except that a block whose s is 0 (all
    zeros, or amax under 3 * 2**-150) stores byte 127 (X = 0) where round_up stores 0. Its natural rounding is
    ``ggml`` (mlx rounds ties toward zero and never writes -0), the default when this rule is chosen. Equal to
    mlx byte for byte for every finite block with amax >= 6 * 2**-127 and for zero blocks. Below that mlx wraps
    X + 127 to a byte (2e-38 stores 255; mlx's own dequantize then gives inf); this rule clamps to byte 0 as
    round_up does. Non-finite blocks follow ``nonfinite`` (mlx writes byte 128 and zero codes: zeros).
``mse``
    Per block, the X among {floor - 1, floor, floor + 1} whose dequantized block has the smallest sum of
    squared errors (float64, summed in element order); ties keep ``floor``, then floor + 1. Since
    ``floor`` is a candidate, no block is ever worse than under ``floor``.

Element roundings (of r = x / 2**X onto the E2M1 magnitudes 0, .5, 1, 1.5, 2, 3, 4, 6):

``rne`` (default; OCP intent, triton_kernels, torchao, ml_dtypes ``float4_e2m1fn``)
    Round to nearest, ties to the even code: 0.25->0, 0.75->1, 1.25->1, 1.75->2, 2.5->2, 3.5->4, 5->4.
    Magnitudes above 6 saturate to 6. The sign is kept, so -0.0 and negatives that round to 0 give -0
    (code 0b1000).
``ggml`` (the gguf package's and ggml's MXFP4 quantizers)
    Round to nearest by absolute error, ties toward zero: 0.25->0, 0.75->0.5, 1.25->1, 1.75->1.5,
    2.5->2, 3.5->3, 5->4. Saturates at 6. A result of 0 is always +0 (code 0).

Non-finite input (``nonfinite``): ``error`` (default) raises NonFiniteError naming the first position;
``nan_scale`` gives each block holding NaN or +-Inf the spec's NaN scale byte 0xFF (all its elements
decode to NaN) and codes 0.
"""

from __future__ import annotations

import numpy as np

from ..choices import NONFINITE_MODES, ROUNDINGS, SCALE_RULES, NonFinite, Rounding, ScaleRule
from ..errors import OptionError

__all__ = [
    "KERNEL_RULES",
    "NONFINITE_MODES",
    "ROUNDINGS",
    "SCALE_RULES",
    "NonFinite",
    "Rounding",
    "ScaleRule",
    "check_choice",
    "check_options",
    "default_rounding",
    "resolve_rounding",
]

# Rules that only the numpy reference and the torch twin implement; the C and Triton kernels do not
KERNEL_RULES: tuple[str, ...] = ("floor", "round_up", "even", "mse")

# float32 mantissa fields (m - 1) * 2**23 above which the rule moves X one step up from floor.
# round_up bumps when m > 1.5, even when m >= 1.75; encoded as "bump when mantissa >= threshold".
MANTISSA_BUMP_AT = {"floor": None, "round_up": 0x400001, "even": 0x600000}
MLX_ZERO_SCALE_BYTE = 127  # mlx stores X = 0 for a block whose amax / 6 is 0

# For midpoint i (between magnitude codes i and i + 1): does an exact tie round up to code i + 1?
# rne: up when code i + 1 is even (its mantissa bit is 0). ggml: never (ties toward zero).
TIE_ROUNDS_UP = {
    "rne": np.array([(i + 1) % 2 == 0 for i in range(7)]),
    "ggml": np.zeros(7, dtype=bool),
}

RULE_IDS = {name: i for i, name in enumerate(SCALE_RULES)}
ROUNDING_IDS = {name: i for i, name in enumerate(ROUNDINGS)}


def check_choice(kind: str, value: object, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise OptionError(f"{kind}={value!r} is not one of {', '.join(map(repr, choices))}", parameter=kind)
    return value  # type: ignore[return-value]


def default_rounding(scale_rule: str) -> str:
    """The rounding a scale rule is used with when none is named: ggml for mlx (what mlx does), else rne."""
    return "ggml" if scale_rule == "mlx" else "rne"


def resolve_rounding(scale_rule: str, rounding: str | None) -> str:
    return default_rounding(scale_rule) if rounding is None else rounding


def check_options(scale_rule: str, rounding: str, nonfinite: str = "error") -> None:
    check_choice("scale_rule", scale_rule, SCALE_RULES)
    check_choice("rounding", rounding, ROUNDINGS)
    check_choice("nonfinite", nonfinite, NONFINITE_MODES)
