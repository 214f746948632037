"""The C kernels in mxfp4/codec/_native.c, run over chunks on every core.

ctypes releases the GIL during each foreign call, so a thread pool gives real parallelism. Decoding goes
through (scale byte, code byte) tables built here from the numpy reference, so the C loop only moves
bits. Where the extension was not built (no compiler at install time), ``available()`` is False and the
package uses the numpy reference instead.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import lru_cache
from typing import Callable

import numpy as np

from ..dtypes import numpy_dtype
from ..errors import BackendUnavailableError
from .constants import BLOCK_SIZE, PACKED_BYTES_PER_BLOCK
from .reference import decode_blocks
from .rules import ROUNDING_IDS, RULE_IDS

INPUT_KINDS = {"float32": 0, "float16": 1, "bfloat16": 2}
CHUNK_BLOCKS = 1 << 15  # 1 Mi elements a task: small enough to share among threads, large enough to amortise

_P = ctypes.c_void_p
_I64 = ctypes.c_int64
_INT = ctypes.c_int


@lru_cache(maxsize=1)
def _library() -> ctypes.CDLL | None:
    if sys.byteorder != "little":  # the decode tables pack element pairs little-endian
        return None
    try:
        from . import _native
    except ImportError:
        return None
    return configured(ctypes.CDLL(_native.__file__))


def configured(lib: ctypes.CDLL) -> ctypes.CDLL:
    """The kernels' signatures declared on a loaded _native library (the installed one, or a test's own build)."""
    lib.mx_encode.argtypes = [_P, _INT, _I64, _INT, _INT, _P, _P, _P]
    lib.mx_decode16.argtypes = [_P, _P, _I64, _P, _P]
    lib.mx_decode32.argtypes = [_P, _P, _I64, _P, _P]
    lib.mx_decode16_transposed.argtypes = [_P, _P, _I64, _I64, _I64, _I64, _P, _P]
    lib.mx_decode32_transposed.argtypes = lib.mx_decode16_transposed.argtypes
    lib.mx_hf_to_gguf.argtypes = [_P, _P, _I64, _P]
    lib.mx_gguf_to_hf.argtypes = [_P, _I64, _P, _P]
    lib.mx_hf_to_gguf_split_rows.argtypes = [_P, _P, _I64, _I64, _I64, _P, _P]
    lib.mx_column_squared_error.argtypes = [_P, _P, _P, _I64, _I64, _I64, _P]
    lib.mx_gptq_block.argtypes = [_P, _I64, _P, _I64, _I64, _I64, _INT, _INT, _P, _I64, _P, _P, _P]
    lib.mx_gptq_block_fixed.argtypes = [_P, _I64, _P, _I64, _I64, _I64, _INT, _P, _I64, _P, _P, _I64, _P, _P]
    for fn in (
        lib.mx_encode,
        lib.mx_decode16,
        lib.mx_decode32,
        lib.mx_decode16_transposed,
        lib.mx_decode32_transposed,
        lib.mx_hf_to_gguf,
        lib.mx_gguf_to_hf,
        lib.mx_hf_to_gguf_split_rows,
        lib.mx_column_squared_error,
        lib.mx_gptq_block,
        lib.mx_gptq_block_fixed,
    ):
        fn.restype = None
    return lib


def available() -> bool:
    return _library() is not None


def require() -> ctypes.CDLL:
    lib = _library()
    if lib is None:
        raise BackendUnavailableError(
            "the native MXFP4 kernels are not built in this install (no C compiler when it was installed); "
            "reinstall with a C compiler present, or use backend='numpy'"
        )
    return lib


def thread_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=thread_count(), thread_name_prefix="mxfp4")


_inline = threading.local()


@contextmanager
def in_calling_thread():
    """Within it, this thread's C calls run their chunks one after the other in the calling thread (chunked as
    usual, so that sums split by chunk come out the same): for callers that run several such calls side by side
    in their own threads, where handing chunks to the shared pool would only add waits."""
    before = getattr(_inline, "on", False)
    _inline.on = True
    try:
        yield
    finally:
        _inline.on = before


def _run_chunked(n: int, task: Callable[[int, int], None], step: int = CHUNK_BLOCKS) -> None:
    """Call task(start, stop) over [0, n) in chunks of `step`, in parallel where it pays."""
    starts = range(0, n, step)
    if len(starts) <= 1 or thread_count() == 1 or getattr(_inline, "on", False):
        for start in starts:
            task(start, min(start + step, n))
        return
    for future in [_pool().submit(task, s, min(s + step, n)) for s in starts]:
        future.result()


def _address(array: np.ndarray, offset_bytes: int = 0) -> int:
    return array.ctypes.data + offset_bytes


@lru_cache(maxsize=1)
def _f16_to_f32_bits() -> np.ndarray:
    return np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32).view(np.uint32)


def encode(x_raw: np.ndarray, kind: str, scale_rule: str, rounding: str) -> tuple[np.ndarray, np.ndarray]:
    """Contiguous [N, 32] input of ``kind`` (raw 16-bit words for float16 / bfloat16) -> (blocks, scales)."""
    lib = require()
    n_blocks = x_raw.shape[0]
    blocks = np.empty((n_blocks, PACKED_BYTES_PER_BLOCK), dtype=np.uint8)
    scales = np.empty(n_blocks, dtype=np.uint8)
    table = _f16_to_f32_bits() if kind == "float16" else None
    table_address = None if table is None else _address(table)
    element_bytes = x_raw.itemsize
    kind_id, rule_id, rounding_id = INPUT_KINDS[kind], RULE_IDS[scale_rule], ROUNDING_IDS[rounding]

    def task(start: int, stop: int) -> None:
        lib.mx_encode(
            _address(x_raw, start * BLOCK_SIZE * element_bytes),
            kind_id,
            stop - start,
            rule_id,
            rounding_id,
            table_address,
            _address(blocks, start * PACKED_BYTES_PER_BLOCK),
            _address(scales, start),
        )

    _run_chunked(n_blocks, task)
    return blocks, scales


@lru_cache(maxsize=None)
def decode_table(dtype_name: str) -> np.ndarray:
    """[256 scales * 256 code bytes] -> both decoded elements of that byte, as one machine word.

    Element 2j (low nibble) sits in the low half of the word, matching little-endian memory order.
    """
    dtype = numpy_dtype(dtype_name)
    code_bytes = np.tile(np.arange(256, dtype=np.uint8).reshape(16, 16), (256, 1))  # 16 blocks per scale
    scales = np.repeat(np.arange(256, dtype=np.uint8), 16)
    with np.errstate(over="ignore"):
        values = decode_blocks(code_bytes, scales, dtype)  # [4096, 32]
    word = np.uint32 if dtype.itemsize == 2 else np.uint64
    return np.ascontiguousarray(values).view(word).reshape(256 * 256)


def decode_into(blocks: np.ndarray, scales: np.ndarray, dtype_name: str, out: np.ndarray) -> None:
    """Contiguous blocks [N, 16], scales [N] -> out, a contiguous buffer of N * 32 elements of dtype_name."""
    lib = require()
    table = decode_table(dtype_name)
    word_bytes = table.itemsize
    kernel = lib.mx_decode16 if word_bytes == 4 else lib.mx_decode32

    def task(start: int, stop: int) -> None:
        kernel(
            _address(blocks, start * PACKED_BYTES_PER_BLOCK),
            _address(scales, start),
            stop - start,
            _address(table),
            _address(out, start * PACKED_BYTES_PER_BLOCK * word_bytes),
        )

    _run_chunked(blocks.shape[0], task)


TILE_ROWS = 32  # _native.c's TILE_ROWS: thread chunks start at its multiples (64-byte runs of bf16 output)


def decode_transposed_into(blocks: np.ndarray, scales: np.ndarray, dtype_name: str, out: np.ndarray) -> None:
    """Contiguous blocks [R, n, 16], scales [R, n] of a matrix [R, 32 n] -> out, a contiguous [32 n, R] buffer
    of dtype_name: the decoded matrix transposed, in one pass."""
    lib = require()
    rows, per_row = blocks.shape[0], blocks.shape[1]
    table = decode_table(dtype_name)
    kernel = lib.mx_decode16_transposed if table.itemsize == 4 else lib.mx_decode32_transposed
    step = max(TILE_ROWS, (CHUNK_BLOCKS // max(per_row, 1)) // TILE_ROWS * TILE_ROWS)

    def task(start: int, stop: int) -> None:
        kernel(_address(blocks), _address(scales), rows, per_row, start, stop, _address(table), _address(out))

    _run_chunked(rows, task, step)


def hf_to_gguf(blocks: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Contiguous blocks [N, 16], scales [N] -> GGUF bytes [N, 17]."""
    lib = require()
    raw = np.empty((blocks.shape[0], PACKED_BYTES_PER_BLOCK + 1), dtype=np.uint8)

    def task(start: int, stop: int) -> None:
        lib.mx_hf_to_gguf(
            _address(blocks, start * 16), _address(scales, start), stop - start, _address(raw, start * 17)
        )

    _run_chunked(blocks.shape[0], task)
    return raw


def hf_to_gguf_split_rows(blocks: np.ndarray, scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Contiguous blocks [R, n, 16], scales [R, n] (R even) -> GGUF bytes of the even rows [R/2, n, 17] and
    of the odd rows [R/2, n, 17], in one threaded pass."""
    lib = require()
    rows, per_row = blocks.shape[0], blocks.shape[1]
    even = np.empty((rows // 2, per_row, 17), dtype=np.uint8)
    odd = np.empty((rows // 2, per_row, 17), dtype=np.uint8)
    step = max(2, (CHUNK_BLOCKS // max(per_row, 1)) // 2 * 2)  # whole row pairs per task

    def task(start: int, stop: int) -> None:
        lib.mx_hf_to_gguf_split_rows(
            _address(blocks), _address(scales), start, stop, per_row, _address(even), _address(odd)
        )

    _run_chunked(rows, task, step)
    return even, odd


def gguf_to_hf(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Contiguous GGUF bytes [N, 17] -> (blocks [N, 16], scales [N])."""
    lib = require()
    n_blocks = raw.shape[0]
    blocks = np.empty((n_blocks, PACKED_BYTES_PER_BLOCK), dtype=np.uint8)
    scales = np.empty(n_blocks, dtype=np.uint8)

    def task(start: int, stop: int) -> None:
        lib.mx_gguf_to_hf(
            _address(raw, start * 17), stop - start, _address(blocks, start * 16), _address(scales, start)
        )

    _run_chunked(n_blocks, task)
    return blocks, scales


GPTQ_RULES = ("floor", "round_up", "even", "mse")  # the rules _native.c's choose_scale implements


def gptq_block(
    weights: np.ndarray,
    factor: np.ndarray,
    scale_rule: str,
    rounding: str,
    fixed: tuple[np.ndarray, np.ndarray] | None = None,
    codes: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, float]:
    """GPTQ's column loop over one block of columns (mx_gptq_block in _native.c), rows split over threads.
    weights: float32 [rows, width] (width a multiple of 32; rows may be strided, as a block of a wider matrix's
    columns is), updated in place; factor: float32 [width, width], the block's rows and columns of GPTQ's inverse
    Cholesky factor. fixed: None to choose each row's scale by the rule when a group of 32 columns starts, or
    (scales uint8 [rows, groups], column_groups int32 [width]): column j's scale byte is scales[:, column_groups[j]]
    (act-order). codes: where the codes go (uint8 [rows, width], rows may be strided), or None for a new array.
    -> codes uint8 [rows, width], scales uint8 [rows, width / 32] (None with fixed), errors float32 [rows, width]
    (each column's error divided by the factor's diagonal), and the sum of the errors' squares (float64)."""
    lib = require()
    rows, width = weights.shape
    assert weights.dtype == np.float32 and weights.strides[1] == 4 and width % BLOCK_SIZE == 0
    assert factor.dtype == np.float32 and factor.flags.c_contiguous and factor.shape == (width, width)
    codes = np.empty((rows, width), dtype=np.uint8) if codes is None else codes
    assert codes.dtype == np.uint8 and codes.shape == (rows, width) and codes.strides[1] == 1
    if fixed is not None:
        given, column_groups = fixed
        assert given.dtype == np.uint8 and given.flags.c_contiguous and given.shape[0] == rows
        assert column_groups.dtype == np.int32 and column_groups.shape == (width,)
        assert 0 <= column_groups.min() and column_groups.max() < given.shape[1]
        column_groups = np.ascontiguousarray(column_groups)
    scales = np.empty((rows, width // BLOCK_SIZE), dtype=np.uint8) if fixed is None else None
    errors = np.empty((rows, width), dtype=np.float32)
    losses = np.empty(rows, dtype=np.float64)
    rule_id, rounding_id = RULE_IDS[scale_rule], ROUNDING_IDS[rounding]
    stride, codes_stride = weights.strides[0] // 4, codes.strides[0]
    step = max(16, -(-rows // (8 * thread_count())) * 8)  # whole tiles of 8 rows (_native.c's LANES) a thread

    def task(start: int, stop: int) -> None:
        if fixed is not None:
            lib.mx_gptq_block_fixed(
                _address(weights), stride, _address(factor), width, start, stop, rounding_id, _address(given),
                given.shape[1], _address(column_groups), _address(codes), codes_stride, _address(errors),
                _address(losses),
            )  # fmt: skip
            return
        lib.mx_gptq_block(
            _address(weights), stride, _address(factor), width, start, stop, rule_id, rounding_id,
            _address(codes), codes_stride, _address(scales), _address(errors), _address(losses),
        )  # fmt: skip

    _run_chunked(rows, task, step)
    return codes, scales, errors, float(losses.sum())


def column_squared_error(weights: np.ndarray, blocks: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """float32 weights [rows, cols] and their MXFP4 (blocks [rows, cols / 32, 16], scales [rows, cols / 32]) ->
    each column's sum of squared differences, float64 [cols] (exact squares; rows over threads, each thread's sums
    added in row order, so the result does not depend on the thread count's timing)."""
    lib = require()
    rows, cols = weights.shape
    assert weights.dtype == np.float32 and weights.flags.c_contiguous and cols % BLOCK_SIZE == 0
    assert blocks.shape == (rows, cols // BLOCK_SIZE, PACKED_BYTES_PER_BLOCK) and blocks.flags.c_contiguous
    assert scales.shape == (rows, cols // BLOCK_SIZE) and scales.flags.c_contiguous
    step = max(64, -(-rows // thread_count()))
    starts = list(range(0, rows, step))
    partial = np.zeros((len(starts), cols), dtype=np.float64)

    def task(start: int, stop: int) -> None:
        lib.mx_column_squared_error(
            _address(weights), _address(blocks), _address(scales), cols, start, stop, _address(partial[start // step])
        )

    _run_chunked(rows, task, step)
    total = partial[0].copy()
    for more in partial[1:]:
        total += more
    return total
