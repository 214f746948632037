"""A gpt-oss checkpoint in any format seen as one stream of canonical tensors.

Each canonical tensor (mxfp4.gpt_oss.tensors) is read as a Dense (any non-expert tensor, expert biases)
or an Expert weight, which is either packed MXFP4 ([E, out, in] as blocks/scales) or dense ([E, in, out],
transformers' layout). Experts are read one expert at a time, so no more than one expert's slice of a
weight is ever in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..codec import decode
from ..gpt_oss.config import GptOssConfig
from ..gpt_oss.tensors import Canonical

EXTRA_FILE_SKIP = {"config.json", "model.safetensors.index.json", "dtypes.json"}


@dataclass(frozen=True)
class Dense:
    dtype: str  # safetensors dtype string
    shape: tuple[int, ...]
    load: Callable[[], object]  # -> torch tensor
    rows: Callable[[int, int], object] | None = None  # (start, stop) -> tensor[start:stop], for large tensors
    # (format, bytes) in the file when not dtype's (GGUF keeps small tensors in F32)
    stored: tuple[str, int] | None = None
    # (file, offset, bytes) where the file holds exactly these bytes (dtype, row-major): copied without a read
    extent: tuple | None = None


@dataclass(frozen=True)
class Expert:
    packed: bool
    shape: tuple[int, int, int]  # packed: [E, out, in]; dense: [E, in, out]
    dtype: str  # "MXFP4" when packed
    load_expert: Callable[[int], object]  # packed -> (blocks [out, in/32, 16], scales [out, in/32]); dense -> [in, out]
    # packed sources storing HF's block layout: e -> ((file, offset, bytes) of expert e's blocks, its scales),
    # so a target of the same layout copies the blocks without reading them
    copy_blocks: Callable[[int], tuple] | None = None
    # packed: e -> (blocks, scales) as uint8 numpy, read without torch (byte moves need none)
    load_bytes: Callable[[int], tuple] | None = None

    def load_out_in(self, e: int):
        """Dense expert e as [out, in], the orientation of the MXFP4 blocks (transformers keeps [in, out])."""
        assert not self.packed, "packed experts are [out, in] already: decode their blocks"
        return self.load_expert(e).transpose(0, 1)

    def values_out_in(self, e: int, dtype):
        """Expert e's values as a dense torch tensor [out, in] of dtype, whatever its form (MXFP4 decoded)."""
        if self.packed:
            blocks, scales = self.load_expert(e)
            return decode.dequantize(blocks, scales, dtype)
        return self.load_out_in(e).to(dtype)


class Source:
    kind: str
    path: Path
    config: GptOssConfig
    layout: str = ""  # how the experts are stored, in words (inspect shows it)
    anomalies: list = []  # mxfp4.convert.anomalies.Anomaly: what a known broken save got wrong (set per source)
    undecided: tuple[str, ...] = ()  # square dense experts nothing showed the orientation of (served as stored)

    def read(self, tensor: Canonical) -> Dense | Expert:
        raise NotImplementedError

    def extra_files(self) -> list[Path]:
        """Files to carry along (tokenizer, generation config, chat template)."""
        return carried_files(self.path) if self.path.is_dir() else []

    def source_bytes(self) -> int:
        raise NotImplementedError

    def generated_files(self) -> dict[str, str]:
        """Files the target needs that this source holds only implicitly (GGUF's tokenizer)."""
        return {}

    def tokenizer_dir(self) -> Path:
        """The directory whose tokenizer.json / tokenizer_config.json describe this model."""
        if self.path.name == "original" and (self.path.parent / "tokenizer.json").is_file():
            return self.path.parent  # an original/ folder inside an HF repo
        return self.path


def stored_dense(store, name: str) -> Dense:
    """Tensor ``name`` of a storage.store.TensorStore as it is stored: whole, by rows, or as its bytes' extent."""
    entry = store.entries[name]
    return Dense(
        entry.dtype,
        tuple(entry.shape),
        lambda: store.get(name),
        lambda a, b: store.get_rows(name, a, b),
        extent=store.extent(name),
    )


def carried_files(directory: Path) -> list[Path]:
    """A checkpoint directory's non-weight files (tokenizer, generation config, chat template)."""
    return sorted(
        p for p in directory.iterdir() if p.is_file() and p.name not in EXTRA_FILE_SKIP and p.suffix != ".safetensors"
    )
