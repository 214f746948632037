"""The C products of _cpu_gemv.c for CPU torch tensors: MXFP4 (blocks decoded in registers, optionally fused
with the clamped SwiGLU) and bf16 weights times a few activation rows, float32 accumulation, rows split over
every core. ``available()`` is False where the extension was not built; callers then keep the torch path.

Arithmetic and its bound against the torch twin: see _cpu_gemv.c (tests/model/test_cpu_gemv.py holds it).
"""

from __future__ import annotations

from functools import lru_cache

import torch

from ...codec.native import thread_count
from ...errors import ShapeError
from .cpu_library import library as _library


def available() -> bool:
    return _library() is not None


ISA_NAMES = ("portable C", "AVX2+FMA", "AVX-512", "AVX512-BF16")


@lru_cache(maxsize=1)
def _isa_level() -> int:
    # fixed for the process (the C side reads cpuid and MXFP4_CPU_ISA once): asked on every linear, so asked once
    return _library().mxg_isa()


def isa() -> str:
    """The instruction set the C kernels run with on this CPU (chosen at run time from cpuid; the environment
    variable MXFP4_CPU_ISA=avx512, =avx2 or =portable caps it): 'AVX512-BF16', 'AVX-512' (F and BW), 'AVX2+FMA'
    or 'portable C'."""
    return ISA_NAMES[_isa_level()]


def native_bf16() -> bool:
    """Whether the C kernels (and torch's bf16 matmul) have AVX512-BF16 on this CPU."""
    return _isa_level() == 3


def stream_sum(x: torch.Tensor) -> float:
    """The sum of a contiguous float32 tensor, read once with every core: the C kernels' view of the machine's
    memory read bandwidth (benchmarks time it)."""
    x = x.contiguous()
    if x.dtype != torch.float32:
        raise TypeError(f"stream_sum reads float32, got {x.dtype}")
    return float(_library().mxg_stream_sum(_ptr(x), x.numel(), thread_count()))


def fma_chains(steps: int) -> float:
    """Runs steps x 12 independent FMAs on every core at the widest level the products use (256-bit at AVX2,
    512-bit at AVX-512); returns the floating-point operations done (0 without AVX2): benchmarks time it for
    the machine's FMA rate, the ceiling of the panel GEMM."""
    return float(_library().mxg_fma_chains(steps, thread_count()))


@lru_cache(maxsize=1)
def max_tokens() -> int:
    """The most activation rows one call takes (a decoded block is reused across them)."""
    return _library().mxg_max_tokens()


def gemm_token_block(cols: int) -> int:
    """The tokens one pass of the panel GEMM takes for rows of `cols` elements on this CPU: 128 where the AVX-512
    kernels run and 128 tokens' float32 tiles fill at most 3/4 of one core's L2, else 64 (_cpu_gemv.c says why); 0
    where the panel GEMM does not run (no AVX2). The results do not depend on it."""
    return int(_library().mxg_gemm_token_block(cols))


def _ptr(t: torch.Tensor | None):
    return None if t is None else t.data_ptr()


def _rows_of(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float32).contiguous()


def _in_chunks(x: torch.Tensor, run) -> torch.Tensor:
    """run(x_chunk) over chunks of at most max_tokens() rows, concatenated."""
    limit = max_tokens()
    if x.shape[0] <= limit:
        return run(x)
    return torch.cat([run(x[i : i + limit]) for i in range(0, x.shape[0], limit)])


def _mxfp4(x, blocks, scales, bias, swiglu: bool, limit: float = 0.0, alpha: float = 0.0) -> torch.Tensor:
    rows, cols = blocks.shape[0], blocks.shape[1] * 32
    lib = _library()
    blocks, scales = blocks.contiguous(), scales.contiguous()
    bias = None if bias is None else bias.to(torch.float32).contiguous()

    def run(chunk: torch.Tensor) -> torch.Tensor:
        y = torch.empty((chunk.shape[0], rows), dtype=torch.float32)
        out = torch.empty((chunk.shape[0], rows // 2), dtype=torch.float32) if swiglu else None
        common = (_ptr(bias), _ptr(y))
        tail = (int(swiglu), limit, alpha, _ptr(out), thread_count())
        done = False
        if chunk.dtype == torch.bfloat16 and native_bf16():  # AVX512-BF16 takes bf16 activations as they are
            chunk = chunk.contiguous()
            scratch = torch.empty_like(chunk)
            head = (_ptr(blocks), _ptr(scales), rows, cols, _ptr(chunk), chunk.shape[0])
            done = bool(lib.mxg_mxfp4_bf16x(*head, *common, _ptr(scratch), *tail))
        if not done:
            chunk = _rows_of(chunk)
            scratch = torch.empty_like(chunk)
            head = (_ptr(blocks), _ptr(scales), rows, cols, _ptr(chunk), chunk.shape[0])
            lib.mxg_mxfp4(*head, *common, _ptr(scratch), *tail)
        return out if swiglu else y

    return _in_chunks(x, run)


def mxfp4_linear(x: torch.Tensor, blocks: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None = None):
    """x [T, K] @ W.T (+ bias) for MXFP4 W = (blocks [N, K/32, 16], scales [N, K/32]) -> float32 [T, N]. bf16 x
    is taken as it is on CPUs with AVX512-BF16, else widened to float32 (the same products either way)."""
    return _mxfp4(x, blocks, scales, bias, swiglu=False)


def mxfp4_swiglu(
    x: torch.Tensor, blocks: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor, limit: float, alpha: float
) -> torch.Tensor:
    """clamped_swiglu(x @ W.T + bias) for gpt-oss's interleaved gate_up W, in one pass -> float32 [T, N/2]."""
    return _mxfp4(x, blocks, scales, bias, swiglu=True, limit=limit, alpha=alpha)


def dense_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x [T, K] @ W.T (+ bias) for bf16 or float32 W [N, K] -> float32 [T, N]. bf16 x on bf16 W is taken as it is
    (vdpbf16ps) for two or more rows on CPUs with AVX512-BF16, else widened to float32 (the same products either
    way; one row, decoding, reads the weights faster widened: _cpu_gemv.c, mxg_bf16_bf16x, widens it there)."""
    rows, cols = weight.shape
    lib = _library()
    kernel = {torch.bfloat16: lib.mxg_bf16, torch.float32: lib.mxg_f32}[weight.dtype]
    weight = weight.contiguous()
    bias = None if bias is None else bias.to(torch.float32).contiguous()

    def run(chunk: torch.Tensor) -> torch.Tensor:
        y = torch.empty((chunk.shape[0], rows), dtype=torch.float32)
        tail = (chunk.shape[0], _ptr(bias), _ptr(y), thread_count())
        if weight.dtype == chunk.dtype == torch.bfloat16 and native_bf16():
            chunk = chunk.contiguous()
            if lib.mxg_bf16_bf16x(_ptr(weight), rows, cols, _ptr(chunk), *tail):
                return y
        chunk = _rows_of(chunk)
        kernel(_ptr(weight), rows, cols, _ptr(chunk), *tail)
        return y

    return _in_chunks(x, run)


def moe_token(
    x, experts, weights, gate_up, gate_up_bias, down, down_bias, limit: float, alpha: float, int8: bool = False
):
    """One token's MoE in one C call (_cpu_moe.c): x [H] (bf16 or float32), its k expert ids and routing weights,
    gate_up and down as (blocks, scales) of every expert, their biases [E, 2I] and [E, H] -> float32 [H]; None
    where the activations are of another dtype or scratch memory was not to be had. int8: each product's
    activations quantized to int8 first (quantize_int8; approximate, opt-in)."""
    if x.dtype not in (torch.bfloat16, torch.float32):
        return None
    (up_blocks, up_scales), (down_blocks, down_scales) = gate_up, down
    hidden, inter = x.shape[-1], down_blocks.shape[2] * 32
    parts = [t.contiguous() for t in (x, up_blocks, up_scales, down_blocks, down_scales)]
    biases = [b.to(x.dtype).contiguous() for b in (gate_up_bias, down_bias)]
    experts = experts.to(torch.int64).contiguous()
    weights = weights.to(torch.float32).contiguous()
    out = torch.empty(hidden, dtype=torch.float32)
    done = _library().mxm_token(
        _ptr(parts[0]), int(x.dtype == torch.bfloat16), hidden, inter, experts.numel(), _ptr(experts),
        _ptr(weights), _ptr(parts[1]), _ptr(parts[2]), _ptr(biases[0]), _ptr(parts[3]), _ptr(parts[4]),
        _ptr(biases[1]), limit, alpha, int(int8), _ptr(out), thread_count(),
    )  # fmt: skip
    return out if done else None


def quantize_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One token's activations x [K] (K a multiple of 32) as the int8 MoE products take them: (codes int8 [K],
    block scales float32 [K / 32]) with x ~ codes * scale: scale = max |x| / 127 over each block of 32, codes =
    x / scale rounded to the nearest integer (ties to even), so each element is within scale / 2; a block with a
    NaN or an infinity gets a NaN scale. Codes in x's order."""
    x = _rows_of(x).reshape(-1)
    if x.numel() % 32:
        raise ShapeError(f"int8 activations come in blocks of 32: {x.numel()} elements")
    codes = torch.empty(x.numel(), dtype=torch.int8)
    scales = torch.empty(x.numel() // 32, dtype=torch.float32)
    _library().mxg_quantize_int8(_ptr(x), x.numel(), _ptr(codes), _ptr(scales))
    return codes[_int8_positions(x.numel())], scales


@lru_cache(maxsize=8)
def _int8_positions(cols: int) -> torch.Tensor:
    """Where the C side keeps element j of the int8 activations (q8_position in _cpu_gemv.c): blocks in pairs as
    [block b's 16 even elements | b + 1's even | b's odd | b + 1's odd], an odd last block as [even | odd]."""
    blocks = cols // 32
    j = torch.arange(cols)
    b, half, i = j // 32, j % 2, (j % 32) // 2
    paired = b // 2 * 2 + 1 < blocks
    return torch.where(paired, b // 2 * 64 + half * 32 + b % 2 * 16 + i, b * 32 + half * 16 + i)


def mxfp4_linear_int8(x: torch.Tensor, blocks: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None = None):
    """One token's x [K] (or [1, K]) @ W.T (+ bias) for MXFP4 W, x quantized to int8 first (quantize_int8): the
    products of moe_token(int8=True) -> float32 [1, N]. Each block's products are exact integers, scaled once."""
    return _mxfp4_int8(x, blocks, scales, bias, swiglu=False)


def mxfp4_swiglu_int8(x, blocks, scales, bias, limit: float, alpha: float) -> torch.Tensor:
    """mxfp4_swiglu on one token with x quantized to int8 first: the gate_up step of moe_token(int8=True), bit for
    bit -> float32 [1, N/2]."""
    return _mxfp4_int8(x, blocks, scales, bias, swiglu=True, limit=limit, alpha=alpha)


def _mxfp4_int8(x, blocks, scales, bias, swiglu: bool, limit: float = 0.0, alpha: float = 0.0) -> torch.Tensor:
    rows, cols = blocks.shape[0], blocks.shape[1] * 32
    x = _rows_of(x).reshape(-1)
    if x.numel() != cols:
        raise ShapeError(f"one token of {cols} activations for MXFP4 rows of {cols}; got {x.numel()} elements")
    blocks, scales = blocks.contiguous(), scales.contiguous()
    bias = None if bias is None else bias.to(torch.float32).contiguous()
    y = torch.empty((1, rows), dtype=torch.float32)
    out = torch.empty((1, rows // 2), dtype=torch.float32) if swiglu else None
    scratch = torch.empty(cols, dtype=torch.float32)
    _library().mxg_mxfp4_int8(
        _ptr(blocks), _ptr(scales), rows, cols, _ptr(x), _ptr(bias), _ptr(y), _ptr(scratch), int(swiglu), limit,
        alpha, _ptr(out), thread_count(),
    )  # fmt: skip
    return out if swiglu else y


_GEMM_KINDS = {torch.bfloat16: 1, torch.float32: 2}


def _gemm(
    kind: int,
    x,
    blocks,
    scales,
    dense,
    rows: int,
    cols: int,
    bias,
    swiglu: bool,
    limit: float,
    alpha: float,
    y=None,
    int8: bool = False,
):
    """The panel GEMM of _cpu_gemv.c on x's rows (kind 0 MXFP4, 1 bf16, 2 float32; int8: MXFP4 against int8
    activations, mxg_gemm_int8) into y (given or new) -> float32, or None where it cannot run."""
    x = _rows_of(x)
    bias = None if bias is None else bias.to(torch.float32).contiguous()
    if y is None:
        y = torch.empty((x.shape[0], rows), dtype=torch.float32)
    out = torch.empty((x.shape[0], rows // 2), dtype=torch.float32) if swiglu else None
    outputs = (_ptr(x), x.shape[0], _ptr(bias), _ptr(y), int(swiglu), limit, alpha, _ptr(out), thread_count())
    if int8:
        done = _library().mxg_gemm_int8(_ptr(blocks), _ptr(scales), rows, cols, *outputs)
    else:
        done = _library().mxg_gemm(kind, _ptr(blocks), _ptr(scales), _ptr(dense), rows, cols, *outputs)
    if not done:
        return None
    return out if swiglu else y


def mxfp4_gemm(x, blocks, scales, bias=None, *, swiglu: bool = False, limit: float = 0.0, alpha: float = 0.0):
    """mxfp4_linear (or, with swiglu, mxfp4_swiglu) for any number of rows through the panel GEMM of _cpu_gemv.c
    (the rows of W decoded a few at a time, tiles of 16 activation rows) -> float32; None where it cannot run
    (no AVX2, no memory): the caller takes another path."""
    blocks, scales = blocks.contiguous(), scales.contiguous()
    rows, cols = blocks.shape[0], blocks.shape[1] * 32
    return _gemm(0, x, blocks, scales, None, rows, cols, bias, swiglu, limit, alpha)


def mxfp4_gemm_int8(x, blocks, scales, bias=None, *, swiglu: bool = False, limit: float = 0.0, alpha: float = 0.0):
    """mxfp4_gemm with each row of x quantized to int8 a block of 32 first (quantize_int8's arithmetic): the prompt
    products of backend native-int8 -> float32 [T, N] (with swiglu [T, N / 2]); None where the panel GEMM cannot
    run (no AVX2, no memory). Each block's products are exact integers, scaled once in float32."""
    blocks, scales = blocks.contiguous(), scales.contiguous()
    rows, cols = blocks.shape[0], blocks.shape[1] * 32
    return _gemm(0, x, blocks, scales, None, rows, cols, bias, swiglu, limit, alpha, int8=True)


def dense_gemm(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, out: torch.Tensor | None = None
):
    """dense_linear for any number of rows through the panel GEMM (bf16 rows widened a few at a time) -> float32
    [T, N], written into `out` where given (float32, contiguous, [T, N]); None where it cannot run."""
    weight = weight.contiguous()
    if out is not None and (
        out.dtype != torch.float32 or not out.is_contiguous() or out.shape != (x.shape[0], weight.shape[0])
    ):
        raise ShapeError(
            f"dense_gemm: out is {out.dtype} {tuple(out.shape)}, not a contiguous float32 [{x.shape[0]}, "
            f"{weight.shape[0]}] tensor"
        )
    return _gemm(_GEMM_KINDS[weight.dtype], x, None, None, weight, *weight.shape, bias, False, 0.0, 0.0, out)
