"""gpt-oss checkpoint -> GGUF for llama.cpp, streamed piece by piece.

Names, storage types and metadata follow llama.cpp's own converter. MXFP4 experts move as bytes into
GGUF's 17-byte blocks (mxfp4.layout.hf_to_gguf), never requantized; dense experts (a bf16 fine-tune)
are quantized with the chosen scale rule.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from gguf import GGUFValueType, Keys
from gguf.quants import quant_shape_from_byte_shape

from ....codec import layout
from ....codec.constants import PACKED_BYTES_PER_BLOCK
from ....codec.layout_reference import packed_nbytes
from ....dtypes import raw_bytes
from ....gpt_oss.tensors import canonical_tensors, gguf_names, keeps_float32
from ....progress import progress_bar
from ....storage.atomic import atomic_output
from ....storage.gguf_header import aligned, pack_header
from ....storage.output_file import OutputFile
from ....storage.pread import copy_pieces
from ....storage.space import check_free_space
from ...result import ConvertResult
from ...row_chunks import row_ranges
from ...stream import Dense, Expert, Source
from ...transform import packed_expert
from .config import ARCH
from .keys import Metadata, add_config
from .vocab import add_tokenizer


@dataclass
class Piece:
    """Part of the tensor data: produce() -> arrays, written at these byte offsets of these tensors."""

    targets: list[tuple[str, int]]  # (GGUF tensor name, byte offset within that tensor)
    produce: Callable[[], list]
    nbytes: int
    copy: tuple | None = None  # (file, offset, bytes) copied as they are into the one target (produce gives [])


WIDEN = ("BF16", "F16", "F32")


def float32_of(read: Dense) -> np.ndarray:
    """A dense tensor's values as float32 numpy, read from its extent (no torch): bf16 widened by a shift, f16 by
    numpy's cast, both exact."""
    source, offset, count = read.extent
    raw = source.read(offset, count, what="a dense tensor")
    if read.dtype == "BF16":
        values = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    elif read.dtype == "F16":
        values = raw.view(np.float16).astype(np.float32)
    else:
        values = raw.view(np.float32)
    return values.reshape(read.shape)


def _bytes(array) -> np.ndarray:
    return array.view(np.uint8).reshape(-1) if isinstance(array, np.ndarray) else raw_bytes(array)


def _dense_pieces(name: str, read: Dense):
    """(byte shape, GGML type, pieces) of a dense tensor, keeping llama.cpp's F32 choices."""
    import gguf

    as_f32 = keeps_float32(name, len(read.shape)) or read.dtype == "F32"
    qtype = (
        gguf.GGMLQuantizationType.F32
        if as_f32
        else {"BF16": gguf.GGMLQuantizationType.BF16, "F16": gguf.GGMLQuantizationType.F16}[read.dtype]
    )
    itemsize = 4 if as_f32 else 2
    shape = tuple(read.shape[:-1]) + (read.shape[-1] * itemsize,)
    total = int(np.prod(shape))

    def convert(part):
        return part.float() if as_f32 else part

    if read.extent is not None and as_f32 and read.dtype in WIDEN:  # small tensors: widened in numpy, exactly
        return shape, qtype, [Piece([(name, 0)], lambda: [float32_of(read)], total)]
    if read.extent is not None and not as_f32:  # the bytes as they are, read straight into the output in 64 MiB pieces
        source, offset, count = read.extent
        pieces = [Piece([(name, done)], list, size, (source, offset + done, size)) for done, size in copy_pieces(count)]
        return shape, qtype, pieces
    rows = row_ranges(read, itemsize)
    if rows is None:
        return shape, qtype, [Piece([(name, 0)], lambda: [convert(read.load())], total)]
    row_bytes = total // read.shape[0]
    return (
        shape,
        qtype,
        [
            Piece([(name, a * row_bytes)], lambda a=a, b=b: [convert(read.rows(a, b))], (b - a) * row_bytes)
            for a, b in rows
        ],
    )


def _bias_pieces(names: tuple[str, str], read: Dense):
    """gate (columns 0::2) and up (1::2) of an interleaved gate_up bias, as F32."""
    shape = tuple(read.shape[:-1]) + (read.shape[-1] // 2 * 4,)

    def produce():
        values = float32_of(read) if read.extent is not None and read.dtype in WIDEN else read.load().float()
        return [np.ascontiguousarray(values[..., 0::2]), np.ascontiguousarray(values[..., 1::2])]

    return shape, [Piece([(names[0], 0), (names[1], 0)], produce, 2 * int(np.prod(shape)))]


def _expert_pieces(names: tuple[str, ...], read: Expert, *, scale_rule: str, rounding: str, label: str):
    """(byte shape per GGUF tensor, pieces): one piece per expert, writing its rows of every tensor
    (gate and up are the even and odd rows of gpt-oss's gate_up_proj, repacked in one pass)."""
    experts, out_rows, cols = read.shape if read.packed else (read.shape[0], read.shape[2], read.shape[1])
    shape = (experts, out_rows // len(names), packed_nbytes(cols))
    per_expert = int(np.prod(shape[1:]))

    def produce(e: int) -> list:
        blocks, scales = packed_expert(read, e, scale_rule=scale_rule, rounding=rounding, name=label)
        blocks, scales = blocks.reshape(out_rows, -1, PACKED_BYTES_PER_BLOCK), scales.reshape(out_rows, -1)
        if len(names) == 1:
            return [layout.hf_to_gguf(blocks, scales)]
        return list(layout.hf_to_gguf_split_rows(blocks, scales))

    return shape, [
        Piece([(n, e * per_expert) for n in names], lambda e=e: produce(e), len(names) * per_expert)
        for e in range(experts)
    ]


def write_gguf(
    source: Source,
    dst,
    *,
    force: bool = False,
    progress: bool = False,
    scale_rule: str = "round_up",
    rounding: str = "rne",
):
    """Write ``source`` as a GGUF file. The header fixes every tensor's place; each piece is then read (or
    repacked) and written there in turn (see _write_pieces)."""
    import gguf

    config = source.config
    dst = Path(dst)
    infos: list[tuple[str, tuple[int, ...], object]] = []  # (GGUF name, byte shape, GGML type), in file order
    groups: list[tuple[list[str], list[Piece]]] = []  # each source tensor's GGUF names and pieces, in file order
    for tensor in canonical_tensors(config):
        read = source.read(tensor)
        names = gguf_names(tensor)
        if isinstance(read, Expert):
            shape, parts = _expert_pieces(
                names, read, scale_rule=scale_rule, rounding=rounding, label=f"{source.path}: {tensor.name}"
            )
            infos += [(n, shape, gguf.GGMLQuantizationType.MXFP4) for n in names]
        elif len(names) == 2:
            shape, parts = _bias_pieces(names, read)
            infos += [(n, shape, gguf.GGMLQuantizationType.F32) for n in names]
        else:
            shape, qtype, parts = _dense_pieces(names[0], read)
            infos.append((names[0], shape, qtype))
        groups.append((names, parts))
    total = sum(int(np.prod(shape)) for _, shape, _ in infos)
    check_free_space(dst.resolve().parent, total)
    metadata = Metadata()
    add_metadata(metadata, source)
    tensors = [
        (name, quant_shape_from_byte_shape(shape, qtype), qtype, int(np.prod(shape))) for name, shape, qtype in infos
    ]
    align = gguf.GGUF_DEFAULT_ALIGNMENT
    header = pack_header(metadata.values, tensors, align)
    with atomic_output(dst, force=force) as temporary, progress_bar(total, progress, "convert -> gguf") as bar:
        offset = len(header)  # the data section starts here, aligned
        places = {}
        for name, shape, _ in infos:
            places[name] = offset
            offset += aligned(int(np.prod(shape)), align)  # each tensor is padded to the alignment
        sizes = {name: int(np.prod(shape)) for name, shape, _ in infos}
        pieces = []
        for names, parts in groups:  # each tensor's padding right after it: the output's windows fill in order
            pieces += parts + [_padding(names, sizes, align)]
        with OutputFile(temporary, offset) as out:
            out.write(0, header)
            _write_pieces(out, pieces, places, bar)
    return ConvertResult(dst, source.kind, "gguf", source.source_bytes(), dst.stat().st_size, [dst])


def _padding(names, sizes: dict[str, int], align: int) -> Piece:
    """The zeros after each of these tensors up to the alignment."""
    pads = [aligned(sizes[n], align) - sizes[n] for n in names]
    return Piece([(n, sizes[n]) for n in names], lambda: [np.zeros(pad, np.uint8) for pad in pads], 0)


def _write_pieces(out: OutputFile, pieces: list[Piece], places: dict[str, int], bar) -> None:
    """Every piece at its place, produced (read, repacked) and handed to the output in turn by this thread;
    the output's own thread writes them to disk (mxfp4.storage.output_file). No producer thread: see
    mxfp4.convert.row_chunks."""

    for piece in pieces:
        arrays = piece.produce()
        if piece.copy is not None:
            (name, within), (source, offset, count) = piece.targets[0], piece.copy
            out.read_from(source, offset, count, places[name] + within, what=name)
        for (name, within), array in zip(piece.targets, arrays):
            out.write(places[name] + within, _bytes(array))
        bar.update(piece.nbytes)


def add_metadata(metadata: Metadata, source: Source) -> None:
    """The general.* and gpt-oss.* keys llama.cpp's converter writes (mxfp4.convert.formats.gguf.keys), then the
    tokenizer."""
    c = source.config
    metadata.add(Keys.General.ARCHITECTURE, ARCH, GGUFValueType.STRING)
    metadata.add(Keys.General.TYPE, "model", GGUFValueType.STRING)
    name = source.path.name.replace("-", " ").title() if source.path.name else "gpt-oss"
    metadata.add(Keys.General.NAME, name, GGUFValueType.STRING)
    add_config(metadata, c, ARCH)
    directory = source.tokenizer_dir()
    generated = source.generated_files()
    if (directory / "tokenizer.json").is_file() or "tokenizer.json" not in generated:
        add_tokenizer(metadata, directory, c.vocab_size)
        return
    with tempfile.TemporaryDirectory() as scratch:  # a GGUF source: its vocabulary, through tokenizer.json
        for name, text in generated.items():
            (Path(scratch) / name).write_text(text)
        add_tokenizer(metadata, Path(scratch), c.vocab_size)
