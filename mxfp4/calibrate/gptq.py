"""GPTQ into MXFP4: one weight matrix quantized column by column with error feedback, its 32-element groups'
scales chosen by a scale rule from the weights as updated when GPTQ reaches each group.

For W [out, in] (MXFP4 blocks run along in) and the Hessian H = X^T X of the inputs X [tokens, in] that this
matrix sees, GPTQ (Frantar et al., 2022) minimises tr((W - Q) H (W - Q)^T) greedily: columns are rounded in
order, and each column's rounding error e_j, divided by the j-th diagonal of U (the upper Cholesky factor of
the damped inverse H^-1), is fed into the columns not yet rounded: W[:, j+1:] -= e_j / U_jj * U[j, j+1:].
When group g = columns 32g .. 32g+31 is reached, each row's scale byte for it is chosen by the rule
(mxfp4.codec.rules) from those 32 current values; every column of the group is then rounded at that scale.
Damping adds ``damp`` times the mean diagonal to H (1% by default); inputs that never occurred (a zero
diagonal) get a unit diagonal so that their columns round plainly. With H = I nothing is fed back and the
result is the rule's plain rounding, byte for byte (a test checks it).

Everything is float32 except the damped Hessian and its Cholesky factor (float64), on the CPU or a GPU; the column
loop runs in blocks of 128 so the feedback to later columns is one matrix product per block. Within a block, on the
CPU, the loop runs in C (mx_gptq_block in mxfp4/codec/_native.c, rows over threads): the same float operations
in the same order as the torch loop below, so the same bytes (a property test compares them). Deterministic:
the same W, H and options give the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from ..choices import GPTQ_ORDERS, GptqOrder
from ..codec import decode, encode, native, torch_codec
from ..codec.constants import BLOCK_SIZE, E2M1_VALUES
from ..codec.reference import POW2_F32
from ..codec.rules import check_choice

COLUMN_BLOCK = 128  # a multiple of BLOCK_SIZE


@lru_cache(maxsize=None)
def _tables(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(E2M1_VALUES).to(device), torch.from_numpy(POW2_F32).to(device)


def _dequantized(codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """codes [out] at scale bytes [out] -> values [out] float32 (exact)."""
    values, pow2 = _tables(codes.device)
    return values[codes.long()] * pow2[scales.long()]


def damped(hessian: torch.Tensor, damp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(H + diag(added), added) in float64: every diagonal gets ``damp`` times the mean diagonal, and a dead input
    (a zero diagonal: it never occurred) 1 more, so that its column rounds plainly."""
    h = hessian.double().clone() if hessian.dtype == torch.float64 else hessian.double()
    diagonal = torch.diagonal(h)
    added = (diagonal <= 0).double()
    diagonal += added
    extra = damp * float(diagonal.mean())
    diagonal += extra
    return h, added + extra


TRIANGLE_LEAF = 256  # below this size a triangular inverse is one solve against the identity


def lower_inverse(m: torch.Tensor) -> torch.Tensor:
    """The inverse of a lower-triangular m, by halves: [[A, 0], [B, C]]^-1 = [[A^-1, 0], [-C^-1 B A^-1, C^-1]].
    Matrix products do the work (2n^3/3 multiply-adds), where a solve against the identity does n^3 in a kernel
    that runs below matrix-product speed."""
    n = m.shape[0]
    if n <= TRIANGLE_LEAF:
        return torch.linalg.solve_triangular(m, torch.eye(n, dtype=m.dtype, device=m.device), upper=False)
    half = n // 2
    inverse = torch.zeros_like(m)
    a, c = lower_inverse(m[:half, :half]), lower_inverse(m[half:, half:])
    inverse[:half, :half], inverse[half:, half:] = a, c
    inverse[half:, :half] = -(c @ (m[half:, :half] @ a))
    return inverse


def inverse_factor(reversed_factor: torch.Tensor) -> torch.Tensor:
    """U, upper triangular with U^T U = H_d^-1 (float32), from M, the lower Cholesky factor of the damped Hessian in
    reversed order: J H_d J = M M^T (J the order reversal), computed in float64 (a float32 Cholesky of an
    ill-conditioned Hessian can fail) and given in float32.

    H_d^-1 = (J M^-1 J)^T (J M^-1 J), and J M^-1 J is upper triangular: U. M^-1 is computed in float32, the precision
    GPTQ's loop uses U in: its relative error is about cond(M) * 2^-24 = sqrt(cond(H_d)) * 2^-24, which the error
    report's test bounds."""
    return lower_inverse(reversed_factor).flip(0, 1)


def _native_loop(w: torch.Tensor, scale_rule: str) -> bool:
    """Whether the column loop runs in C: on the CPU, for the rules the C codec implements, on finite weights
    (the torch loop remains for GPUs, the mlx rule, and the reference the C loop is tested against)."""
    return (
        w.device.type == "cpu"
        and native.available()
        and scale_rule in native.GPTQ_RULES
        # one pass: a NaN or infinity makes the sum non-finite (so may an overflowing sum: then the torch loop)
        and bool(torch.isfinite(w.sum()))
    )


def _column_squared_error(weight: torch.Tensor, blocks: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Each column's sum of (W - Q)^2 in float64 [in] (the squares of tiny weights underflow in float32): in one C
    pass on the CPU, else from the dequantized values."""
    if blocks.device.type == "cpu" and native.available():
        w = weight.float().contiguous().numpy()
        return torch.from_numpy(native.column_squared_error(w, blocks.numpy(), scales.numpy()))
    difference = weight.float() - decode.dequantize(blocks, scales, torch.float32)
    return difference.double().square().sum(dim=0)


@dataclass(frozen=True)
class Gptq:
    blocks: torch.Tensor  # [out, in/32, 16] uint8
    scales: torch.Tensor  # [out, in/32] uint8
    error: float  # tr((W - Q) H (W - Q)^T) for the undamped H


def gptq_quantize(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    *,
    scale_rule: str,
    rounding: str = "rne",
    damp: float = 0.01,
    column_loop: str = "auto",
    order: GptqOrder = "act",
    rounded_scales: torch.Tensor | None = None,
) -> Gptq:
    """weight [out, in] (in a multiple of 32), hessian [in, in] -> MXFP4 (blocks [out, in/32, 16] uint8,
    scales [out, in/32] uint8) chosen by GPTQ under (scale_rule, rounding), and the error they leave. order: 'act'
    rounds the columns by decreasing Hessian diagonal (the inputs that matter most first, while the most columns
    remain to absorb their error), each group's scale fixed beforehand by the rule from the weights as given
    ("static groups": the bytes stay plain MXFP4); 'sequential' rounds them in order, each group's scale chosen
    when GPTQ reaches it. column_loop: 'auto' (C where it can run), 'c' or 'torch' (the same bytes; the tests
    compare them). rounded_scales: the rule's plain scale bytes of ``weight`` [out, in/32], when the caller has
    rounded it already (act-order fixes them; computed here otherwise).

    The error costs no extra product: GPTQ's loop rounds column j with error e_j = (w_j - q_j) / U_jj, and the
    sum of |e_j|^2 over the loop is exactly tr(D H_d D^T) for D = W - Q and the damped H_d (the OBS identity GPTQ
    rests on); the damping's share, sum_j added_j |D_j|^2, is taken off elementwise."""
    out, inp = weight.shape
    w = weight.float()
    fixed = None  # act-order: each (permuted) column's group, whose scale byte is fixed [in]
    if order == "act":
        # the rule's plain scale bytes (the codec's fastest backend: C on the CPU), uint8 [out, in/32]
        static = rounded_scales
        if static is None:
            static = encode.quantize(w, scale_rule=scale_rule, rounding=rounding, nonfinite="nan_scale").scales
        permutation = torch.argsort(torch.diagonal(hessian), descending=True, stable=True).to(w.device)
        fixed = permutation // BLOCK_SIZE
    else:
        check_choice("order", order, GPTQ_ORDERS)
        permutation = torch.arange(inp, device=w.device)
    # The factor first, then the weights' working copy: the float64 matrices and the copy never coexist. The Hessian
    # in the loop's column order reversed, as inverse_factor's factor is taken (two row gathers: cheaper than one
    # 2-d gather and a flip).
    reverse = permutation.flip(0).to(hessian.device)
    h, added = damped(hessian.index_select(0, reverse).index_select(1, reverse), damp)
    added = added.flip(0)  # in the loop's column order, as the codes are until the end
    factor = torch.linalg.cholesky(h).float()
    del h  # float64 [in, in]: freed before the inverse's temporaries exist
    u = inverse_factor(factor)
    del factor
    if fixed is not None:  # a new tensor, rows contiguous (for the C loop); gather beats index_select along rows
        w = torch.gather(w, 1, permutation.expand(out, inp))
    else:
        w = w.clone(memory_format=torch.contiguous_format)  # rows contiguous, for the C loop
    loss = 0.0  # the sum of the loop's squared errors, float64
    codes = torch.zeros((out, inp), dtype=torch.uint8, device=w.device)
    scales = torch.zeros((out, inp // BLOCK_SIZE), dtype=torch.int32, device=w.device)
    in_c = _native_loop(w, scale_rule) if column_loop == "auto" else column_loop == "c"
    if in_c and fixed is not None:
        static_c, groups_c = static.contiguous().numpy(), fixed.to(torch.int32).numpy()
    for start in range(0, inp, COLUMN_BLOCK):
        stop = min(start + COLUMN_BLOCK, inp)
        if in_c:  # the same loop, its float operations one for one, without a Python step per column
            factor = u[start:stop, start:stop].contiguous()
            given = None if fixed is None else (static_c, groups_c[start:stop])
            # w's and codes' columns in place (row-strided views)
            found = native.gptq_block(
                w[:, start:stop].numpy(), factor.numpy(), scale_rule, rounding, given, codes[:, start:stop].numpy()
            )
            if given is None:
                scales[:, start // BLOCK_SIZE : stop // BLOCK_SIZE] = torch.from_numpy(found[1]).to(torch.int32)
            errors = torch.from_numpy(found[2])
            loss += found[3]
            w[:, stop:].addmm_(errors, u[start:stop, stop:], alpha=-1)  # in place: no [out, in] temporary
            continue
        block = w[:, start:stop].clone(memory_format=torch.contiguous_format)
        errors = torch.zeros_like(block)
        for j in range(stop - start):
            column = start + j
            if fixed is not None:
                scale = static[:, fixed[column]].to(torch.int32)
            else:
                if column % BLOCK_SIZE == 0:  # a new group: the rule picks each row's scale from current values
                    group = block[:, j : j + BLOCK_SIZE].contiguous()
                    scales[:, column // BLOCK_SIZE] = torch_codec.choose_scales(group, scale_rule, rounding)
                scale = scales[:, column // BLOCK_SIZE]
            code = torch_codec.encode_at_scales(block[:, j : j + 1].contiguous(), scale, rounding)[:, 0]
            codes[:, column] = code
            error = (block[:, j] - _dequantized(code, scale)) / u[column, column]
            block[:, j + 1 :] -= error[:, None] * u[column, column + 1 : stop][None, :]
            errors[:, j] = error
        loss += float(errors.double().square().sum())  # squared in float64, as the C loop does
        w[:, stop:].addmm_(errors, u[start:stop, stop:], alpha=-1)
    if fixed is not None:
        restore = torch.argsort(permutation).to(codes.device)
        codes, scales, added = codes[:, restore], static.to(torch.int32), added[restore.to(added.device)]
    codes = codes.reshape(out, inp // BLOCK_SIZE, BLOCK_SIZE)
    blocks, scales = torch_codec.pack_codes(codes), scales.to(torch.uint8)
    damping = float((_column_squared_error(weight, blocks, scales) * added.to(blocks.device)).sum())
    return Gptq(blocks, scales, max(loss - damping, 0.0))


GRAM_PARTS = 4  # column blocks of a Gram matrix: 10 products of 16 cover it (measured best on 2880 columns)


def gram(x: torch.Tensor) -> torch.Tensor:
    """X^T X [in, in] for inputs X [n, in]: the blocks on and above the diagonal as products, the rest their
    transposes (3/8 fewer multiply-adds than one product of the whole; torch has no symmetric rank-k update)."""
    columns = x.shape[1]
    out = torch.empty((columns, columns), dtype=x.dtype, device=x.device)
    edges = [columns * k // GRAM_PARTS for k in range(GRAM_PARTS + 1)]
    for start, stop in zip(edges, edges[1:]):
        upper = x[:, start:stop].T @ x[:, start:]  # rows start:stop, columns start:
        out[start:stop, start:] = upper
        out[stop:, start:stop] = upper[:, stop - start :].T
    return out


def weighted_error(weight: torch.Tensor, quantized: torch.Tensor, hessian: torch.Tensor) -> float:
    """tr((W - Q) H (W - Q)^T): the squared output error over the calibration inputs whose Hessian is H.
    float32 products, summed in float64: a report, where the float32 rounding of a sum of squares is noise."""
    d = weight.float() - quantized.float()
    return float(((d @ hessian.float()) * d).sum(dtype=torch.float64))


ERROR_ROWS = 1024  # rows of W - Q at a time: its [rows, in] and the [n, rows] product stay small


def output_error(weight: torch.Tensor, quantized: torch.Tensor, inputs: torch.Tensor) -> float:
    """The same quantity from the inputs X [n, in] themselves, |X (W - Q)^T|^2: cheaper when n < in. W's rows
    in slices of ERROR_ROWS, each slice's sum in float64, added in order."""
    x, total = inputs.float(), 0.0
    for start in range(0, weight.shape[0], ERROR_ROWS):
        d = weight[start : start + ERROR_ROWS].float() - quantized[start : start + ERROR_ROWS].float()
        total += float((x @ d.T).square().sum(dtype=torch.float64))
    return total
