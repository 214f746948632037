"""Inputs that cover a small space completely, for tests and kernel checks."""

import numpy as np


def all_bytes_at_every_scale():
    """blocks [256 * 16, 16] holding every code byte in every position, for each of the 256 scales."""
    position = np.arange(16)
    one_scale = ((np.arange(16)[:, None] * 16 + position[None, :] * 17) % 256).astype(np.uint8)  # [16, 16]
    blocks = np.tile(one_scale, (256, 1))
    scales = np.repeat(np.arange(256, dtype=np.uint8), 16)
    return blocks, scales
