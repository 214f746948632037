"""PEFT's delta definitions (mxfp4.finetune.lora_math) against the formulas written out element by element,
for every expert layout: no peft needed."""

import pytest
import torch

from mxfp4.finetune.lora_math import expert_delta, linear_delta

E, R, IN, OUT, SCALE = 3, 2, 5, 4, 0.75


def test_linear_delta_is_scale_b_a():
    generator = torch.Generator().manual_seed(1)
    a, b = torch.randn(R, IN, generator=generator), torch.randn(OUT, R, generator=generator)
    expected = torch.zeros(OUT, IN)
    for o in range(OUT):
        for i in range(IN):
            expected[o, i] = SCALE * sum(b[o, r] * a[r, i] for r in range(R))
    assert linear_delta(a.bfloat16(), b.bfloat16(), SCALE).dtype == torch.float32  # bf16 factors, float32 product
    torch.testing.assert_close(linear_delta(a, b, SCALE), expected, rtol=1e-6, atol=1e-6)


def element(layout: str, a: torch.Tensor, b: torch.Tensor, e: int, i: int, o: int) -> float:
    """delta_e[i, o] by the definitions in lora_math's docstring, one term at a time."""
    total = 0.0
    for r in range(R):
        if layout == "peft":  # A rows expert-major (e * R + r); B columns stride-E (r * E + e)
            total += float(b[o, r * E + e] * a[e * R + r, i])
        elif layout == "unsloth":  # B columns contiguous per expert (e * R + r)
            total += float(b[o, e * R + r] * a[e * R + r, i])
        else:  # swapped: A [E*R, out], B [in, E*R]
            total += float(b[i, r * E + e] * a[e * R + r, o])
    return SCALE * total


@pytest.mark.parametrize("layout", ["peft", "unsloth", "swapped"])
def test_expert_delta_follows_each_layouts_definition(layout):
    generator = torch.Generator().manual_seed(2)
    if layout == "swapped":
        a, b = torch.randn(E * R, OUT, generator=generator), torch.randn(IN, E * R, generator=generator)
    else:
        a, b = torch.randn(E * R, IN, generator=generator), torch.randn(OUT, E * R, generator=generator)
    for e in range(E):
        delta = expert_delta(a, b, SCALE, e, E, layout)
        assert tuple(delta.shape) == (IN, OUT)
        expected = torch.tensor([[element(layout, a, b, e, i, o) for o in range(OUT)] for i in range(IN)])
        torch.testing.assert_close(delta, expected, rtol=1e-5, atol=1e-6)


def test_the_layouts_differ_where_they_should():
    generator = torch.Generator().manual_seed(3)
    a, b = torch.randn(E * R, IN, generator=generator), torch.randn(OUT, E * R, generator=generator)
    assert not torch.allclose(expert_delta(a, b, SCALE, 1, E, "peft"), expert_delta(a, b, SCALE, 1, E, "unsloth"))
