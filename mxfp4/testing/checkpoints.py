"""Shared helpers for the converter tests: tiny gpt-oss checkpoints and tensor comparisons."""

import hashlib
from pathlib import Path

from safetensors import safe_open

from . import synthetic


def make_checkpoint(root: Path, name="hf", *, shard=None, dense=False, **config):
    return synthetic.write_checkpoint(
        root / name, synthetic.hf_config(**config), max_shard_size=shard, dense_experts=dense
    )


def make_harmony_checkpoint(root: Path, name="harmony", **config):
    """A tiny gpt-oss checkpoint carrying gpt-oss's real tokenizer (o200k_harmony, vocabulary 201,088), built
    from the bpe-openai wheel's o200k_base ranks."""
    from ..gpt_oss.harmony_tokenizer import VOCAB_SIZE, write_tokenizer

    directory = make_checkpoint(root, name, vocab_size=VOCAB_SIZE, **config)
    write_tokenizer(directory)
    return directory


def all_tensors(directory: Path) -> dict:
    out = {}
    for path in sorted(Path(directory).glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():
                out[name] = f.get_tensor(name)
    return out


def tree_digest(directory: Path) -> dict:
    return {
        p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(directory).rglob("*"))
        if p.is_file()
    }


def same_tensors(a: dict, b: dict) -> bool:
    import torch

    return set(a) == set(b) and all(
        a[k].dtype == b[k].dtype and torch.equal(a[k].view(-1).view(torch.uint8), b[k].view(-1).view(torch.uint8))
        for k in a
    )


def edit_header(file: Path, change) -> None:
    """Rewrite a safetensors file's JSON header in place through change(header) (a dict, __metadata__ included);
    the data bytes stay as they are, so the header may now lie about them (hostile-input tests)."""
    import json
    import struct

    data = Path(file).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    change(header)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    Path(file).write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n :])
